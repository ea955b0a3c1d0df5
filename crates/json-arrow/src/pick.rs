//! A few fields of a message, picked in one pass before it is decoded: routing fields, a DMS
//! record's kind. Each object on the way to a wanted field is walked once, member by member,
//! instead of being skipped and then searched again for each field.

use crate::scan::{same_key, skip_value, skip_ws, Members};

/// Paths (keys of nested objects, compared as sent) whose raw JSON values are picked from a
/// message in one pass; see [`FieldPicker::pick`].
#[derive(Debug, Clone, Default)]
pub struct FieldPicker {
    root: Wanted,
    paths: usize,
    /// Members of all levels that are wanted (each is taken at its first occurrence only).
    members: usize,
}

/// The members wanted of one object.
#[derive(Debug, Clone, Default)]
struct Wanted {
    members: Vec<WantedMember>,
}

#[derive(Debug, Clone)]
struct WantedMember {
    key: Box<[u8]>,
    /// Index among all wanted members (for "seen").
    id: usize,
    /// The paths that end here: their indexes.
    paths: Vec<usize>,
    /// What is wanted inside, when the value is an object.
    inner: Wanted,
}

/// What [`FieldPicker::pick`] found in one message; reused across messages.
#[derive(Debug, Default)]
pub struct Picked<'a> {
    values: Vec<Option<&'a [u8]>>,
    seen: Vec<bool>,
    malformed: bool,
}

impl<'a> Picked<'a> {
    /// The raw JSON value of each path, in the picker's order (`None`: missing or `null`).
    pub fn values(&self) -> &[Option<&'a [u8]>] {
        &self.values
    }

    /// Whether the message was found not to be a well-formed JSON object before every wanted
    /// member was seen (values inside the object that broke are `None`; the decoder will
    /// reject the message with the reason).
    pub fn malformed(&self) -> bool {
        self.malformed
    }
}

impl FieldPicker {
    /// A picker of `paths`, each a list of keys from the message's top level down.
    pub fn new<P: AsRef<[String]>>(paths: impl IntoIterator<Item = P>) -> Self {
        let mut picker = Self::default();
        for (index, path) in paths.into_iter().enumerate() {
            let mut node = &mut picker.root;
            let keys = path.as_ref();
            for (depth, key) in keys.iter().enumerate() {
                let at = match node.members.iter().position(|m| *m.key == *key.as_bytes()) {
                    Some(at) => at,
                    None => {
                        let id = picker.members;
                        picker.members += 1;
                        node.members.push(WantedMember { key: key.as_bytes().into(), id, paths: Vec::new(), inner: Wanted::default() });
                        node.members.len() - 1
                    }
                };
                let member = &mut node.members[at];
                if depth + 1 == keys.len() {
                    member.paths.push(index);
                }
                node = &mut member.inner;
            }
            picker.paths = index + 1;
        }
        picker
    }

    /// Picks the values of the paths from `message` into `out`. The first occurrence of a key
    /// counts; the scan of the top-level object stops once every wanted member was seen,
    /// while an object holding wanted members is always read to its end (a value is only
    /// taken from an object that is whole).
    pub fn pick<'a>(&self, message: &'a [u8], out: &mut Picked<'a>) {
        out.values.clear();
        out.values.resize(self.paths, None);
        out.seen.clear();
        out.seen.resize(self.members, false);
        out.malformed = walk(message, skip_ws(message, 0), &self.root, true, out).is_none();
    }
}

/// Walks the object starting at `start`, taking the wanted members' values: the index after
/// the object (at the top level: after the last member read), None when it is malformed.
fn walk<'a>(bytes: &'a [u8], start: usize, wanted: &Wanted, top: bool, out: &mut Picked<'a>) -> Option<usize> {
    let mut members = Members::of(bytes, start)?;
    let mut missing = wanted.members.len();
    while let Some((key, value)) = members.next_key() {
        let key = &bytes[key.start + 1..key.end - 1];
        let end = match wanted.members.iter().find(|m| same_key(&m.key, key) && !out.seen[m.id]) {
            Some(member) => {
                out.seen[member.id] = true;
                missing -= 1;
                take(bytes, value, member, out)?
            }
            None => skip_value(bytes, value)?,
        };
        if top && missing == 0 {
            return Some(end);
        }
        members.past_value(end);
    }
    members.end()
}

/// Takes the value of a wanted member starting at `start`: the index after it, None when it
/// is malformed (then nothing inside it is taken).
fn take<'a>(bytes: &'a [u8], start: usize, member: &WantedMember, out: &mut Picked<'a>) -> Option<usize> {
    let end = match bytes.get(start) {
        Some(b'{') if !member.inner.members.is_empty() => match walk(bytes, start, &member.inner, false, out) {
            Some(end) => end,
            None => {
                clear(&member.inner, out);
                return None;
            }
        },
        _ => skip_value(bytes, start)?,
    };
    let raw = &bytes[start..end];
    if raw != b"null" {
        member.paths.iter().for_each(|&p| out.values[p] = Some(raw));
    }
    Some(end)
}

/// Forgets the values taken inside an object that turned out malformed.
fn clear(wanted: &Wanted, out: &mut Picked<'_>) {
    for member in &wanted.members {
        member.paths.iter().for_each(|&p| out.values[p] = None);
        clear(&member.inner, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw_value;

    fn paths(dotted: &[&str]) -> Vec<Vec<String>> {
        dotted.iter().map(|p| p.split('.').map(str::to_string).collect()).collect()
    }

    /// The picked values of `dotted` in `message`, and whether it was malformed.
    fn picked<'a>(dotted: &[&str], message: &'a [u8]) -> (Vec<Option<&'a [u8]>>, bool) {
        let mut out = Picked::default();
        FieldPicker::new(paths(dotted)).pick(message, &mut out);
        (out.values().to_vec(), out.malformed())
    }

    #[test]
    fn values_are_those_raw_value_finds_for_each_path() {
        let wanted = ["data", "metadata.record-type", "metadata.table-name", "metadata", "gone", "data.id", "metadata.missing", "data"];
        let messages: [&[u8]; 5] = [
            br#"{"data": {"id": 1}, "gone": null, "metadata": {"record-type": "data", "table-name": "t\"1"}, "data": 2}"#,
            br#" { "metadata" : { "table-name" : 7 , "record-type": null } , "data": [1, {"id": 2}] } "#,
            br#"{"metadata": {"record-type": "a"}, "metadata": {"record-type": "b"}, "data": {"id": {"deep": true}}}"#,
            br#"{}"#,
            br#"{"data": "{\"id\": 3}"}"#,
        ];
        for message in messages {
            let expected: Vec<_> = paths(&wanted).iter().map(|p| raw_value(message, p)).collect();
            assert_eq!(picked(&wanted, message), (expected, false), "{}", String::from_utf8_lossy(message));
        }
    }

    #[test]
    fn nothing_is_taken_from_an_object_that_breaks_and_the_break_is_told() {
        let wanted = ["data", "metadata.record-type", "metadata.table-name"];
        let truncated = br#"{"data": {"id": 1}, "metadata": {"record-type": "control", "table-name": "t""#;
        assert_eq!(picked(&wanted, truncated), (vec![Some(&br#"{"id": 1}"#[..]), None, None], true));
        let no_colon = br#"{"metadata": {"record-type": "control" "table-name": "t"}, "data": 1}"#;
        assert_eq!(picked(&wanted, no_colon), (vec![None, None, None], true));
        assert_eq!(picked(&wanted, b"[1, 2]"), (vec![None, None, None], true));
        assert_eq!(picked(&wanted, b"not json"), (vec![None, None, None], true));
    }

    #[test]
    fn the_top_level_scan_stops_once_every_wanted_member_was_seen() {
        let wanted = ["data", "metadata.record-type"];
        let message = br#"{"metadata": {"record-type": "data"}, "data": {"id": 1}, "rest": [1, "#;
        assert_eq!(picked(&wanted, message), (vec![Some(&br#"{"id": 1}"#[..]), Some(&br#""data""#[..])], false));
        let (values, malformed) = picked(&["data", "absent"], message);
        assert_eq!((values[0], values[1], malformed), (Some(&br#"{"id": 1}"#[..]), None, true), "read on for the absent member");
    }
}
