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
