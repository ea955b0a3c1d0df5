//! Fields a message holds that its schema does not read, kept as JSON (the `rescue` mode of a
//! table: a new field in production is kept in `_rescued_data` rather than lost).
//!
//! The values are copied byte for byte from the message (a scan of its JSON structure, no
//! re-serialisation), so numbers of any size and escapes stay exactly as sent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

/// The JSON paths a schema reads, as a tree of keys.
#[derive(Debug, Default, Clone)]
pub struct KnownFields {
    children: HashMap<String, KnownFields>,
    /// The whole value at this path is read by a column.
    whole: bool,
    /// For an array of objects (a path segment `key[]`): what is read of each element.
    elements: Option<Box<KnownFields>>,
}

impl KnownFields {
    /// The tree of dotted `paths` (`order_id`, `data.id`; `items[].sku` reads the `sku` of each
    /// object in the array `items`).
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut root = Self::default();
        for path in paths {
            let mut node = &mut root;
            for key in path.split('.') {
                let name = key.trim_end_matches("[]");
                node = node.children.entry(name.to_string()).or_default();
                for _ in 0..(key.len() - name.len()) / 2 {
                    node = node.elements.get_or_insert_with(Box::default);
                }
            }
            node.whole = true;
        }
        root
    }
}

/// The members of the message's object that `known` does not read (nested ones under their
/// parents' keys), as a JSON object; None when there are none or the message is not an object.
pub fn unknown_fields(message: &[u8], known: &KnownFields) -> Option<String> {
    let (inner, _) = unknown_in_object(message, skip_ws(message, 0), known)?;
    inner
}

/// Scans the object starting at `start`: its unknown members as a JSON object (None when all
/// are known) and the index after the object.
fn unknown_in_object(bytes: &[u8], start: usize, known: &KnownFields) -> Option<(Option<String>, usize)> {
    let mut kept: Vec<String> = Vec::new();
    let mut members = Members::of(bytes, start)?;
    for Member { key: key_range, value } in members.by_ref() {
        let key_raw = &bytes[key_range];
        let key = key_text(key_raw)?;
        let raw = |value: &[u8]| format!("{}:{}", String::from_utf8_lossy(key_raw), String::from_utf8_lossy(value));
        match known.children.get(key.as_ref()) {
            None => kept.push(raw(&bytes[value])),
            Some(node) if !node.whole && bytes[value.start] == b'{' => {
                if let (Some(inner), _) = unknown_in_object(bytes, value.start, node)? {
                    kept.push(raw(inner.as_bytes()));
                }
            }
            Some(KnownFields { elements: Some(elements), .. }) if bytes[value.start] == b'[' => {
                if let Some(inner) = unknown_in_array(bytes, value.start, elements)? {
                    kept.push(raw(inner.as_bytes()));
                }
            }
            Some(_) => {}
        }
    }
    Some(((!kept.is_empty()).then(|| format!("{{{}}}", kept.join(","))), members.end()?))
}

/// The unknown members of each object in the array starting at `start`, as an array aligned
/// with it (`null` for elements with none); None inside when no element has any.
fn unknown_in_array(bytes: &[u8], start: usize, known: &KnownFields) -> Option<Option<String>> {
    let mut kept: Vec<Option<String>> = Vec::new();
    let mut at = skip_ws(bytes, start + 1);
    if bytes.get(at) == Some(&b']') {
        return Some(None);
    }
    loop {
        let unknown = match bytes.get(at)? {
            b'{' => unknown_in_object(bytes, at, known)?.0,
            b'[' if known.elements.is_some() => unknown_in_array(bytes, at, known.elements.as_deref()?)?,
            _ => None,
        };
        kept.push(unknown);
        let after = skip_ws(bytes, skip_value(bytes, at)?);
        match bytes.get(after)? {
            b',' => at = skip_ws(bytes, after + 1),
            b']' => break,
            _ => return None,
        }
    }
    let texts: Vec<&str> = kept.iter().map(|k| k.as_deref().unwrap_or("null")).collect();
    Some(kept.iter().any(Option::is_some).then(|| format!("[{}]", texts.join(","))))
}

/// A member's key as text: borrowed from the message unless it holds escapes (most keys do
/// not; this runs for every member of every message).
fn key_text(key_raw: &[u8]) -> Option<Cow<'_, str>> {
    match key_raw {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => std::str::from_utf8(inner).ok().map(Cow::Borrowed),
        _ => serde_json::from_slice::<String>(key_raw).ok().map(Cow::Owned),
    }
}

/// The JSON text of the value at `path` (keys of nested objects) in the message's object,
/// byte for byte; None when a key is missing, the value is `null`, or the message is not an
/// object. Keys are compared as sent (a key written with escapes does not match).
pub fn raw_value<'a>(message: &'a [u8], path: &[String]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let found = Members::of(message, skip_ws(message, 0))?.find(|m| &message[m.key.start + 1..m.key.end - 1] == first.as_bytes())?;
    let value = &message[found.value];
    match rest.is_empty() {
        true => (value != b"null").then_some(value),
        false => raw_value(value, rest),
    }
}

/// [`raw_value`] of several top-level `keys` in one pass over the message's members (a
/// message is scanned once, not once per key).
pub fn raw_members<'a, const N: usize>(message: &'a [u8], keys: [&str; N]) -> [Option<&'a [u8]>; N] {
    let mut found = [None; N];
    raw_members_into(message, &keys, &mut found);
    found
}

/// [`raw_members`] for keys known at run time: `found[i]` becomes the value of `keys[i]`
/// (`None` when missing or `null`).
pub fn raw_members_into<'a, K: AsRef<str>>(message: &'a [u8], keys: &[K], found: &mut [Option<&'a [u8]>]) {
    found.fill(None);
    let mut missing = keys.len();
    let Some(members) = Members::of(message, skip_ws(message, 0)) else { return };
    // A few keys (the usual case) are tracked without allocating.
    let (mut few, mut many) = ([false; 16], Vec::new());
    let seen: &mut [bool] = match keys.len() {
        n if n <= few.len() => &mut few[..n],
        n => {
            many.resize(n, false);
            &mut many
        }
    };
    for member in members {
        let key = &message[member.key.start + 1..member.key.end - 1];
        let Some(i) = keys.iter().position(|k| k.as_ref().as_bytes() == key) else { continue };
        if !seen[i] {
            seen[i] = true;
            found[i] = Some(&message[member.value]).filter(|v| *v != b"null");
            missing -= 1;
        }
        if missing == 0 {
            break;
        }
    }
}

/// One member of an object: its key as written (quotes included) and its value, as byte ranges.
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

/// The members of a JSON object, scanned in place.
struct Members<'a> {
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
    fn of(bytes: &'a [u8], start: usize) -> Option<Self> {
        if bytes.get(start) != Some(&b'{') {
            return None;
        }
        let at = skip_ws(bytes, start + 1);
        let state = if bytes.get(at) == Some(&b'}') { Scan::End(at + 1) } else { Scan::Open };
        Some(Self { bytes, at, state })
    }

    /// The index after the object once every member was read; None when it is malformed.
    fn end(&self) -> Option<usize> {
        match self.state {
            Scan::End(end) => Some(end),
            _ => None,
        }
    }

    fn member(&self) -> Option<Member> {
        let key_end = skip_string(self.bytes, self.at)?;
        let colon = skip_ws(self.bytes, key_end);
        if self.bytes.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip_ws(self.bytes, colon + 1);
        Some(Member { key: self.at..key_end, value: start..skip_value(self.bytes, start)? })
    }
}

impl Iterator for Members<'_> {
    type Item = Member;

    fn next(&mut self) -> Option<Member> {
        if !matches!(self.state, Scan::Open) {
            return None;
        }
        let Some(member) = self.member() else {
            self.state = Scan::Malformed;
            return None;
        };
        let after = skip_ws(self.bytes, member.value.end);
        match self.bytes.get(after) {
            Some(b',') => self.at = skip_ws(self.bytes, after + 1),
            Some(b'}') => self.state = Scan::End(after + 1),
            _ => self.state = Scan::Malformed,
        }
        Some(member)
    }
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The index after the string starting at `i` (its opening quote). Jumps from quote or
/// backslash to the next with `memchr` (routing and rescue scan every message's strings).
fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
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

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn raw_values_are_the_text_as_sent_at_any_depth() {
        let m = br#" { "id": 7, "items": [ {"sku": "a\"b", "n": 1e400}, [] ] , "meta": {"tags": {"x": null}, "n": null}, "s": "x" }"#;
        assert_eq!(raw_value(m, &path("items")), Some(&br#"[ {"sku": "a\"b", "n": 1e400}, [] ]"#[..]));
        assert_eq!(raw_value(m, &path("meta.tags")), Some(&br#"{"x": null}"#[..]));
        assert_eq!(raw_value(m, &path("id")), Some(&b"7"[..]));
        assert_eq!(raw_value(m, &path("s")), Some(&br#""x""#[..]));
        assert_eq!(raw_value(m, &path("meta.n")), None, "null is no value");
        assert_eq!(raw_value(m, &path("meta.tags.y")), None);
        assert_eq!(raw_value(m, &path("missing")), None);
        assert_eq!(raw_value(m, &path("id.deeper")), None, "a scalar has no members");
        assert_eq!(raw_value(b"[1, 2]", &path("id")), None);
        assert_eq!(raw_value(br#"{"a": [1, "#, &path("a")), None, "truncated");
    }

    #[test]
    fn several_members_are_found_in_one_pass_like_raw_value_finds_each() {
        let m = br#"{"data": {"id": 1}, "gone": null, "metadata": {"record-type": "data"}, "data": 2}"#;
        let [data, gone, metadata, missing] = raw_members(m, ["data", "gone", "metadata", "missing"]);
        assert_eq!((data, gone, missing), (Some(&br#"{"id": 1}"#[..]), None, None));
        assert_eq!(metadata, raw_value(m, &path("metadata")));
        assert_eq!(raw_members(b"[1]", ["data"]), [None]);
        // Keys known at run time, more than are tracked without allocating, and stale output
        // overwritten.
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).chain(["metadata".to_string()]).collect();
        let mut found = vec![Some(&b"stale"[..]); keys.len()];
        raw_members_into(m, &keys, &mut found);
        assert_eq!(found[..20], [None; 20]);
        assert_eq!(found[20], metadata);
    }

    #[test]
    fn unknown_members_are_kept_byte_for_byte_nested_ones_under_their_parent() {
        let known = KnownFields::from_paths(["order_id", "data.id", "meta"]);
        let message = br#"{"order_id": 1, "coupon": {"code": "X\"1", "n": [1, {"a": 2}]}, "big": 123456789012345678901234567890.5,
            "data": {"id": 7, "new": "\u00e9"}, "meta": {"anything": true}}"#;
        assert_eq!(
            unknown_fields(message, &known).as_deref(),
            Some(r#"{"coupon":{"code": "X\"1", "n": [1, {"a": 2}]},"big":123456789012345678901234567890.5,"data":{"new":"\u00e9"}}"#)
        );
        let rescued: serde_json::Value = serde_json::from_str(&unknown_fields(message, &known).unwrap()).expect("valid JSON");
        assert_eq!(rescued["data"]["new"], "é");
    }

    #[test]
    fn unknown_members_of_array_elements_are_kept_aligned_with_their_elements() {
        let known = KnownFields::from_paths(["id", "items[].sku", "items[].qty", "grid[][].x"]);
        let message = br#"{"id": 1, "items": [{"sku": "a", "qty": 1}, {"sku": "b", "color": "red"}, null, 7],
            "grid": [[{"x": 1, "y": 2}], []]}"#;
        assert_eq!(
            unknown_fields(message, &known).as_deref(),
            Some(r#"{"items":[null,{"color":"red"},null,null],"grid":[[{"y":2}],null]}"#)
        );
        assert_eq!(unknown_fields(br#"{"id": 1, "items": [{"sku": "a"}, []]}"#, &known), None);
        assert_eq!(unknown_fields(br#"{"items": [{"sku": "a"}, "#, &known), None, "truncated");
    }

    #[test]
    fn nothing_unknown_or_not_an_object_is_none() {
        let known = KnownFields::from_paths(["a", "b.c"]);
        assert_eq!(unknown_fields(br#"{"a": null, "b": {"c": 1}}"#, &known), None);
        assert_eq!(unknown_fields(br#"{}"#, &known), None);
        assert_eq!(unknown_fields(br#"[1, 2]"#, &known), None);
        assert_eq!(unknown_fields(br#"{"a": 1, "x": "#, &known), None, "malformed (the decoder rejects it)");
        assert_eq!(
            unknown_fields(br#"{"b": 5, "z": false}"#, &known).as_deref(),
            Some(r#"{"z":false}"#),
            "b is not an object: not rescued"
        );
    }
}
