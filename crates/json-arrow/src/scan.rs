//! Scanning JSON text in place: the extent of a value, the members of an object (byte ranges
//! into the message, no parsing into values). Used where only a few fields of a message matter
//! (routing, DMS records, rescued fields), and for the byte-level checks the flat path's plain
//! reader shares with them (key equality, bytes a string must escape).

use std::ops::Range;

/// One member of an object: its key as written (quotes included) and its value, as byte ranges.
pub(crate) struct Member {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// The members of a JSON object, scanned in place.
pub(crate) struct Members<'a> {
    bytes: &'a [u8],
    /// Where the next member starts.
    at: usize,
    state: Scan,
}

enum Scan {
    Open,
    /// Every member read; the index after the closing brace.
    End(usize),
    Malformed,
}

impl<'a> Members<'a> {
    /// The members of the object starting at `start`; None when no object starts there.
    pub(crate) fn of(bytes: &'a [u8], start: usize) -> Option<Self> {
        if bytes.get(start) != Some(&b'{') {
            return None;
        }
        let at = skip_ws(bytes, start + 1);
        let state = if bytes.get(at) == Some(&b'}') { Scan::End(at + 1) } else { Scan::Open };
        Some(Self { bytes, at, state })
    }

    /// The index after the object once every member was read; None when it is malformed.
    pub(crate) fn end(&self) -> Option<usize> {
        match self.state {
            Scan::End(end) => Some(end),
            _ => None,
        }
    }

    /// The next member's key (quotes included) and where its value starts; None once every
    /// member was read or the object is malformed (then [`Members::end`] is None). The caller
    /// reads the value, then calls [`Members::past_value`] with the index after it.
    pub(crate) fn next_key(&mut self) -> Option<(Range<usize>, usize)> {
        if !matches!(self.state, Scan::Open) {
            return None;
        }
        let key = skip_string(self.bytes, self.at).map(|end| self.at..end);
        let colon = key.as_ref().map(|k| skip_ws(self.bytes, k.end));
        match (key, colon) {
            (Some(key), Some(colon)) if self.bytes.get(colon) == Some(&b':') => Some((key, skip_ws(self.bytes, colon + 1))),
            _ => {
                self.state = Scan::Malformed;
                None
            }
        }
    }

    /// Moves past a value that ends at `end` (exclusive), to the next member or the object's end.
    pub(crate) fn past_value(&mut self, end: usize) {
        let after = skip_ws(self.bytes, end);
        match self.bytes.get(after) {
            Some(b',') => self.at = skip_ws(self.bytes, after + 1),
            Some(b'}') => self.state = Scan::End(after + 1),
            _ => self.state = Scan::Malformed,
        }
    }
}

impl Iterator for Members<'_> {
    type Item = Member;

    fn next(&mut self) -> Option<Member> {
        let (key, start) = self.next_key()?;
        let Some(end) = skip_value(self.bytes, start) else {
            self.state = Scan::Malformed;
            return None;
        };
        self.past_value(end);
        Some(Member { key, value: start..end })
    }
}

pub(crate) fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Whether two keys are equal. Keys are short and compared for every member walked, so most
/// are settled without a call to `memcmp`: on length, then for the usual key of 8 to 16 bytes
/// as two overlapping words, else on the first byte before the byte compare.
#[inline(always)]
pub(crate) fn same_key(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (a.first_chunk::<8>(), a.last_chunk::<8>(), b.first_chunk::<8>(), b.last_chunk::<8>()) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if a.len() <= 16 => a0 == b0 && a1 == b1,
        _ => a.first() == b.first() && a == b,
    }
}

/// A byte a JSON string cannot hold as itself: a quote, a backslash or a control character.
pub(crate) fn must_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || b < 0x20
}

/// The index after the string starting at `i` (its opening quote). Jumps from quote or
/// backslash to the next with `memchr` (routing and rescue scan every message's strings).
pub(crate) fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', bytes.get(j..)?)?;
        match bytes[j] {
            b'\\' => j += 2,
            _ => return Some(j + 1),
        }
    }
}

/// The index after the JSON value starting at `i` (None when the input ends inside it).
pub(crate) fn skip_value(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes.get(i)? {
        b'"' => skip_string(bytes, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match bytes.get(j)? {
                    b'"' => {
                        j = skip_string(bytes, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let end =
                bytes[i..].iter().position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace()).map_or(bytes.len(), |p| i + p);
            (end > i).then_some(end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_as_slices_do() {
        let keys: [&[u8]; 9] = [
            b"",
            b"id",
            b"order_id",
            b"order_ie",
            b"timestamp",
            b"order_owner",
            b"order_ownes",
            b"a_key_of_16_byte",
            b"a key longer than two words",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(same_key(a, b), a == b, "{a:?} {b:?}");
            }
            let mut changed = a.to_vec();
            for at in 0..changed.len() {
                changed[at] ^= 1;
                assert!(!same_key(a, &changed), "{a:?} with byte {at} changed");
                changed[at] ^= 1;
            }
        }
    }
}
