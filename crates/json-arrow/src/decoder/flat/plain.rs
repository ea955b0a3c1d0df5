//! The plain reader: a hand-written walk of messages in the plainest JSON, what producers
//! mostly send: one object whose keys hold no escapes and whose values are strings without
//! escapes, integers, booleans or nulls. It costs under half of what serde_json's visitors
//! cost for a reference order, and reads exactly what they read. Anything else (an escape,
//! a fraction or exponent, a nested value, a duplicate key, anything malformed) is not
//! judged here: the serde reader takes the message from its start.
//!
//! The reader works on bytes and checks UTF-8 only in strings that hold a byte beyond ASCII,
//! not over the whole message first: outside strings it reads ASCII tokens only, and
//! checking a whole message cost as much as reading its strings.

use std::borrow::Cow;

use super::{FlatColumn, FlatSchema, Slot};
use crate::scan::{must_escape, same_key};

/// A plain value.
#[derive(Debug, PartialEq)]
enum Token<'m> {
    Str(&'m str),
    /// An integer literal's value and text.
    Int(i64, &'m str),
    Bool(bool),
    Null,
}

/// Reads `bytes` into `slots` (all `Missing` on entry). None: not a plain message (invalid
/// UTF-8 included); the slots then hold what was read before the walk stopped.
pub(super) fn read<'m>(schema: &FlatSchema, bytes: &'m [u8], slots: &mut [Slot<'m>]) -> Option<()> {
    let mut i = skip_ws(bytes, 0);
    if bytes.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(bytes, i + 1);
    if bytes.get(i) == Some(&b'}') {
        return (skip_ws(bytes, i + 1) == bytes.len()).then_some(());
    }
    let mut hint = 0;
    loop {
        let (column, after) = match expected_key(schema, bytes, i, hint) {
            Some(after) => (Some(hint), after),
            None => string(bytes, i).map(|(key, after)| (schema.column_of(key, hint), after))?,
        };
        i = skip_ws(bytes, after);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let (value, after) = token(bytes, skip_ws(bytes, i + 1))?;
        // A field the table does not read needs nothing more: a plain token is valid JSON.
        if let Some(c) = column {
            if !matches!(slots[c], Slot::Missing) {
                return None;
            }
            slots[c] = slot(&schema.columns[c], value)?;
            hint = c + 1;
        }
        i = skip_ws(bytes, after);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return (skip_ws(bytes, i + 1) == bytes.len()).then_some(()),
            _ => return None,
        }
    }
}

/// The index after the key at `i` when it is the key of column `hint` (producers mostly
/// write keys in one order), compared as bytes without scanning the key first.
fn expected_key(schema: &FlatSchema, bytes: &[u8], i: usize, hint: usize) -> Option<usize> {
    let column = schema.columns.get(hint).filter(|c| c.plain_key)?;
    let key = column.key.as_bytes();
    let end = i + 1 + key.len();
    let same = bytes.get(i + 1..end).is_some_and(|text| same_key(text, key));
    (bytes.get(i) == Some(&b'"') && same && bytes.get(end) == Some(&b'"')).then_some(end + 1)
}

/// What `column` makes of a plain value (as the serde reader's visitor does).
#[inline(always)]
fn slot<'m>(column: &FlatColumn, value: Token<'m>) -> Option<Slot<'m>> {
    match value {
        Token::Str(s) => column.string_slot(Cow::Borrowed(s)),
        Token::Int(v, text) => column.integer_slot(v, || Cow::Borrowed(text)),
        Token::Bool(v) => column.bool_slot(v),
        Token::Null => Some(Slot::Null),
    }
}

/// JSON's whitespace (not form feed or vertical tab, unlike `u8::is_ascii_whitespace`).
fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The plain value starting at `i` and the index after it.
#[inline(always)]
fn token(bytes: &[u8], i: usize) -> Option<(Token<'_>, usize)> {
    let literal = |word: &[u8], value| bytes[i..].starts_with(word).then_some((value, i + word.len()));
    match *bytes.get(i)? {
        b'"' => string(bytes, i).map(|(s, end)| (Token::Str(s), end)),
        b't' => literal(b"true", Token::Bool(true)),
        b'f' => literal(b"false", Token::Bool(false)),
        b'n' => literal(b"null", Token::Null),
        b'-' | b'0'..=b'9' => integer(bytes, i),
        _ => None,
    }
}

/// The text of the string whose opening quote is at `i`, and the index after its closing
/// quote. None when it holds an escape, a control character or invalid UTF-8 (serde's to
/// judge), or does not end.
fn string(bytes: &[u8], i: usize) -> Option<(&str, usize)> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let stop = start + special_byte::<true>(&bytes[start..])?;
    if bytes[stop] == b'"' {
        return Some((ascii(&bytes[start..stop]), stop + 1));
    }
    if bytes[stop].is_ascii() {
        return None;
    }
    let end = stop + special_byte::<false>(&bytes[stop..])?;
    let text = std::str::from_utf8(&bytes[start..end]).ok()?;
    (bytes[end] == b'"').then_some((text, end + 1))
}

/// `bytes` as text: the caller found every byte ASCII.
#[inline(always)]
fn ascii(bytes: &[u8]) -> &str {
    debug_assert!(bytes.is_ascii());
    // SAFETY: ASCII is valid UTF-8 (every caller scanned these bytes for one beyond ASCII).
    unsafe { std::str::from_utf8_unchecked(bytes) }
}

/// The index of the first quote, backslash or control character of `bytes` (with `BEYOND`,
/// or byte beyond ASCII), eight bytes at a step (the usual value is a few words long).
fn special_byte<const BEYOND: bool>(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Flags the bytes of `v` that are zero. A borrow may also flag bytes above a true zero, so
    // only the lowest flag is exact: the one taken.
    let zeros = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut at = 0;
    while let Some(word) = bytes[at..].first_chunk::<8>() {
        let w = u64::from_le_bytes(*word);
        let controls = w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
        let beyond = if BEYOND { w & HIGHS } else { 0 };
        let found = zeros(w ^ (ONES * u64::from(b'"'))) | zeros(w ^ (ONES * u64::from(b'\\'))) | controls | beyond;
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| must_escape(b) || (BEYOND && !b.is_ascii())).map(|p| at + p)
}

/// An integer literal starting at `start` (a minus sign or a digit). None for what serde_json
/// reads otherwise or refuses: a fraction or exponent, `-0` (a float there), leading zeros,
/// a value beyond `i64`.
fn integer(bytes: &[u8], start: usize) -> Option<(Token<'_>, usize)> {
    let negative = bytes[start] == b'-';
    let first = start + usize::from(negative);
    let mut end = first;
    // Accumulated negative, so that i64::MIN is reachable.
    let mut value: i64 = 0;
    while let Some(&digit) = bytes.get(end).filter(|b| b.is_ascii_digit()) {
        value = value.checked_mul(10)?.checked_sub(i64::from(digit - b'0'))?;
        end += 1;
    }
    let digits = end - first;
    if digits == 0 || (bytes[first] == b'0' && (digits > 1 || negative)) || matches!(bytes.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    let value = if negative { value } else { value.checked_neg()? };
    Some((Token::Int(value, ascii(&bytes[start..end])), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_exact_to_i64_and_other_notations_are_not_judged() {
        fn int(s: &str) -> Option<(Token<'_>, &str)> {
            integer(s.as_bytes(), 0).map(|(t, end)| (t, &s[end..]))
        }
        assert_eq!(int("0,"), Some((Token::Int(0, "0"), ",")));
        assert_eq!(int("870}"), Some((Token::Int(870, "870"), "}")));
        assert_eq!(int("-7 "), Some((Token::Int(-7, "-7"), " ")));
        assert_eq!(int("9223372036854775807"), Some((Token::Int(i64::MAX, "9223372036854775807"), "")));
        assert_eq!(int("-9223372036854775808"), Some((Token::Int(i64::MIN, "-9223372036854775808"), "")));
        for other in ["9223372036854775808", "-9223372036854775809", "-0", "01", "-01", "-", "1.5", "1e3", "2E2", "99999999999999999999"] {
            assert_eq!(int(other), None, "{other}");
        }
    }

    #[test]
    fn strings_with_escapes_or_control_characters_are_not_judged() {
        assert_eq!(string(br#""alice", "#, 0), Some(("alice", 7)));
        assert_eq!(string(br#""""#, 0), Some(("", 2)));
        assert_eq!(string("\"café\"".as_bytes(), 0), Some(("café", 7)));
        let long = "\"a string longer than one word, with a \u{e9} and a quote at the end\"";
        assert_eq!(string(long.as_bytes(), 0), Some((&long[1..long.len() - 1], long.len())));
        for at in 0..20 {
            for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
                let text: String = std::iter::once('"').chain((0..at).map(|_| ' ')).chain([special, '"']).collect();
                let expected = (special == '"').then(|| (&text[1..at + 1], at + 2));
                assert_eq!(string(text.as_bytes(), 0), expected, "{text:?}");
            }
            let text: String = std::iter::once('"').chain((0..at).map(|_| '\u{7f}')).chain(['\u{80}', '"']).collect();
            assert_eq!(string(text.as_bytes(), 0).map(|(s, _)| s.len()), Some(at + 2), "DEL and non-ASCII bytes are plain: {text:?}");
        }
        for other in [r#""a\"b""#, r#""caf\u00e9""#, "\"a\nb\"", "\"a\tb\"", "\"open", "x\"\"", "\"café\\n\"", "\"café"] {
            assert_eq!(string(other.as_bytes(), 0), None, "{other}");
        }
        for invalid in [b"\"bad \xff byte\"".as_slice(), b"\"cut \xc3\"", b"\"\xe2\x82\"", b"\"overlong \xc0\xaf long enough\""] {
            assert_eq!(string(invalid, 0), None, "invalid UTF-8 is serde's to judge: {invalid:?}");
        }
    }

    #[test]
    fn literals_and_whitespace_are_json_s_own() {
        assert_eq!(token(b"true,", 0), Some((Token::Bool(true), 4)));
        assert_eq!(token(b"false}", 0), Some((Token::Bool(false), 5)));
        assert_eq!(token(b"null", 0), Some((Token::Null, 4)));
        for other in ["tru", "nul", "True", "{}", "[1]", "+1", ".5"] {
            assert_eq!(token(other.as_bytes(), 0), None, "{other}");
        }
        assert_eq!(skip_ws(b" \t\r\n}", 0), 4);
        assert_eq!(skip_ws(b"\x0c}", 0), 0, "form feed is not JSON whitespace");
    }
}
