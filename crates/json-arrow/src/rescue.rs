//! Fields a message holds that its schema does not read, kept as JSON (the `rescue` mode of a
//! table: a new field in production is kept in `_rescued_data` rather than lost).
//!
//! The values are copied byte for byte from the message (a scan of its JSON structure, no
//! re-serialisation), so numbers of any size and escapes stay exactly as sent.

use std::collections::HashMap;

/// The JSON paths a schema reads, as a tree of keys.
#[derive(Debug, Default, Clone)]
pub struct KnownFields {
    children: HashMap<String, KnownFields>,
    /// The whole value at this path is read by a column.
    whole: bool,
}

impl KnownFields {
    /// The tree of dotted `paths` (`order_id`, `data.id`).
    pub fn from_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut root = Self::default();
        for path in paths {
            let mut node = &mut root;
            for key in path.split('.') {
                node = node.children.entry(key.to_string()).or_default();
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
    if bytes.get(start) != Some(&b'{') {
        return None;
    }
    let mut kept: Vec<String> = Vec::new();
    let mut i = skip_ws(bytes, start + 1);
    if bytes.get(i) == Some(&b'}') {
        return Some((None, i + 1));
    }
    loop {
        let key_end = skip_string(bytes, i)?;
        let key_raw = &bytes[i..key_end];
        let key: String = serde_json::from_slice(key_raw).ok()?;
        i = skip_ws(bytes, key_end);
        if bytes.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(bytes, i + 1);
        let value_end = skip_value(bytes, value_start)?;
        let raw = |value: &[u8]| format!("{}:{}", String::from_utf8_lossy(key_raw), String::from_utf8_lossy(value));
        match known.children.get(&key) {
            None => kept.push(raw(&bytes[value_start..value_end])),
            Some(node) if !node.whole && bytes[value_start] == b'{' => {
                if let (Some(inner), _) = unknown_in_object(bytes, value_start, node)? {
                    kept.push(raw(inner.as_bytes()));
                }
            }
            Some(_) => {}
        }
        i = skip_ws(bytes, value_end);
        match bytes.get(i) {
            Some(b',') => i = skip_ws(bytes, i + 1),
            Some(b'}') => return Some(((!kept.is_empty()).then(|| format!("{{{}}}", kept.join(","))), i + 1)),
            _ => return None,
        }
    }
}

/// The JSON text of the value at `path` (keys of nested objects) in the message's object,
/// byte for byte; None when a key is missing, the value is `null`, or the message is not an
/// object. Keys are compared as sent (a key written with escapes does not match).
pub fn raw_value<'a>(message: &'a [u8], path: &[String]) -> Option<&'a [u8]> {
    let (first, rest) = path.split_first()?;
    let mut i = skip_ws(message, 0);
    if message.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(message, i + 1);
    while message.get(i) == Some(&b'"') {
        let key_end = skip_string(message, i)?;
        let colon = skip_ws(message, key_end);
        if message.get(colon) != Some(&b':') {
            return None;
        }
        let start = skip_ws(message, colon + 1);
        let end = skip_value(message, start)?;
        if &message[i + 1..key_end - 1] == first.as_bytes() {
            let value = &message[start..end];
            return match rest.is_empty() {
                true => (value != b"null").then_some(value),
                false => raw_value(value, rest),
            };
        }
        i = skip_ws(message, end);
        if message.get(i) == Some(&b',') {
            i = skip_ws(message, i + 1);
        }
    }
    None
}

fn skip_ws(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// The index after the string starting at `i` (its opening quote).
fn skip_string(bytes: &[u8], i: usize) -> Option<usize> {
    if bytes.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    loop {
        match bytes.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// The index after the JSON value starting at `i`.
fn skip_value(bytes: &[u8], i: usize) -> Option<usize> {
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
