//! Fields that messages hold and a table's schema does not read yet, gathered for schema
//! evolution (`unknown_fields = "add_columns"`): their values' kinds become new columns.

use crate::infer::SchemaInference;
use crate::rescue::{raw_value, unknown_fields, KnownFields};

/// The part of a message a schema reads, and where in the message its fields live.
#[derive(Debug, Clone)]
pub struct NewFields {
    known: KnownFields,
    /// Keys from the top to the object holding the fields (empty: the message itself; `data`
    /// for AWS DMS records).
    root: Vec<String>,
    /// Dotted paths (under the root) of array and struct columns: their types are fixed.
    nested: Vec<String>,
}

impl NewFields {
    /// Fields under `root` (dotted; None: the top level) minus the dotted `paths` read there.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>, root: Option<&str>) -> Self {
        let root = root.map(|r| r.split('.').map(str::to_string).collect()).unwrap_or_default();
        Self { known: KnownFields::from_paths(paths), root, nested: Vec::new() }
    }

    /// Declares the dotted paths of array and struct columns (see [`NewFields::inside_nested`]).
    pub fn with_nested(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.nested = paths.into_iter().collect();
        self
    }

    /// The array or struct column a found field sits in (its own path or a parent's): such a
    /// field is one the column's type does not name, and evolution does not change nested types.
    pub fn inside_nested(&self, path: &str) -> Option<&str> {
        self.nested.iter().map(String::as_str).find(|n| path == *n || path.starts_with(&format!("{n}.")))
    }

    /// Takes the unread members of `message` into account in `inference` (nothing when every
    /// member is read or the message has no object at the root).
    pub fn observe(&self, message: &[u8], inference: &mut SchemaInference) {
        let scope = match self.root.is_empty() {
            true => Some(message),
            false => raw_value(message, &self.root),
        };
        if let Some(unknown) = scope.and_then(|s| unknown_fields(s, &self.known)) {
            inference.observe(unknown.as_bytes());
        }
    }

    /// The dotted path of a field found under the root, from the top of the message.
    pub fn message_path(&self, path: &str) -> String {
        match self.root.is_empty() {
            true => path.to_string(),
            false => format!("{}.{path}", self.root.join(".")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(fields: &NewFields, messages: &[&str]) -> Vec<(String, Option<String>, Result<String, String>)> {
        let mut inference = SchemaInference::new("_", 2);
        for m in messages {
            fields.observe(m.as_bytes(), &mut inference);
        }
        inference.evolution_columns().into_iter().map(|c| (c.name, c.json_name, c.type_name)).collect()
    }

    #[test]
    fn only_unread_members_are_observed_and_mixed_scalars_become_strings() {
        let fields = NewFields::new(["id", "address.city"], None);
        let got = found(
            &fields,
            &[
                r#"{"id": 1, "address": {"city": "Oslo", "zip": "0150"}, "price": 10}"#,
                r#"{"id": 2, "price": 10.5, "code": 7, "gone": null}"#,
                r#"{"id": 3, "code": "x7", "tags": [1, 2]}"#,
                r#"{"id": 4}"#,
            ],
        );
        assert_eq!(
            got,
            vec![
                ("address_zip".into(), Some("address.zip".into()), Ok("string".into())),
                ("price".into(), None, Ok("double".into())),
                ("code".into(), None, Ok("string".into()),),
                ("gone".into(), None, Err("only nulls seen: no type to infer".into())),
                ("tags".into(), None, Ok("json".into())),
            ]
        );
    }

    #[test]
    fn dms_records_are_read_under_data_and_their_metadata_is_not_a_field() {
        let fields = NewFields::new(["id"], Some("data"));
        let got = found(&fields, &[r#"{"data": {"id": 1, "email": "a@b"}, "metadata": {"operation": "insert", "x": 1}}"#]);
        assert_eq!(got, vec![("email".into(), None, Ok("string".into()))]);
        assert_eq!(fields.message_path("email"), "data.email");
        assert!(found(&fields, &[r#"{"metadata": {"record-type": "control"}}"#]).is_empty());
    }
}
