//! Fields a message holds that its schema does not read, kept as JSON (the `rescue` mode of a
//! table: a new field in production is kept in `_rescued_data` rather than lost).
//!
//! The values are copied byte for byte from the message (a scan of its JSON structure, no
//! re-serialisation), so numbers of any size and escapes stay exactly as sent.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::scan::{skip_value, skip_ws, Member, Members};

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
