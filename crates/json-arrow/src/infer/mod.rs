//! Schema inference from sample messages: the columns a schema file (`schemas/*.schema.toml`)
//! would list for them, for a person to review.
//!
//! Each field's type comes from every value seen: booleans, integers (long; beyond a long,
//! decimal(20,0)), numbers with a fraction (double, integers included), strings that all parse
//! as dates (`YYYY-MM-DD`) or timestamps (`YYYY-MM-DD HH:MM:SS[.ffffff]` or RFC 3339, as the
//! decoder reads them), other strings. Nested objects are flattened into `<parent><sep><child>`
//! columns read through dotted `json_name` paths, down to a depth; arrays and deeper objects
//! become `json` columns (their text as sent) or, with [`NestedAs::Typed`], `array` and
//! `struct` columns of the types their values show; what cannot be a column (keys with dots,
//! conflicting types, only nulls) is listed as a comment with the reason rather than guessed.
//! A field is `required` when every sampled message held a non-null value for it.

use std::collections::{BTreeSet, HashMap};

use pipeline_config::{Flatten, NestedAs, TimestampSpec};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::timestamps::TimestampParser;
use shape::Shape;

mod shape;

/// What one value looked like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Bool,
    Long,
    BigInteger,
    Double,
    Date,
    Timestamp,
    Text,
    Array,
    DeepObject,
}

/// A field seen in the samples.
#[derive(Debug, Default)]
struct Field {
    /// JSON keys from the top.
    path: Vec<String>,
    /// Messages with a non-null value.
    present: usize,
    kinds: BTreeSet<Kind>,
    /// With [`NestedAs::Typed`]: the merged shape of its arrays and deep objects.
    shape: Shape,
}

/// One column of an inferred schema, or a field that could not become one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InferredColumn {
    /// Column name.
    pub name: String,
    /// Dotted JSON path when it differs from the name (nested fields).
    pub json_name: Option<String>,
    /// Delta type name, or the reason the field is not a column.
    pub type_name: Result<String, String>,
    /// Every sample held a non-null value.
    pub required: bool,
}

/// Accumulates sample messages and infers their schema.
#[derive(Debug)]
pub struct SchemaInference {
    separator: String,
    max_depth: usize,
    fields: Vec<Field>,
    by_path: HashMap<Vec<String>, usize>,
    samples: usize,
    not_objects: usize,
    timestamps: TimestampParser,
    nested: NestedAs,
}

impl SchemaInference {
    /// Flattens nested objects `max_depth` levels deep (1: top-level fields only), naming
    /// columns with `separator` between the keys.
    pub fn new(separator: &str, max_depth: usize) -> Self {
        Self {
            separator: separator.to_string(),
            max_depth: max_depth.max(1),
            fields: Vec::new(),
            by_path: HashMap::new(),
            samples: 0,
            not_objects: 0,
            timestamps: TimestampParser::from_spec(&TimestampSpec::default()),
            nested: NestedAs::Json,
        }
    }

    /// Inference as a source's `flatten` settings say (separator, depth, nested values).
    pub fn for_flatten(flatten: &Flatten) -> Self {
        Self::new(&flatten.separator, flatten.max_depth).nested_as(flatten.nested)
    }

    /// What arrays and objects deeper than the depth become (`json` columns by default).
    pub fn nested_as(mut self, nested: NestedAs) -> Self {
        self.nested = nested;
        self
    }

    /// Takes one message into account (messages that are not JSON objects are counted apart).
    pub fn observe(&mut self, message: &[u8]) {
        match serde_json::from_slice::<Value>(message) {
            Ok(Value::Object(fields)) => {
                self.samples += 1;
                let mut path = Vec::new();
                self.observe_object(&fields, &mut path);
            }
            _ => self.not_objects += 1,
        }
    }

    fn observe_object(&mut self, fields: &[(String, Value)], path: &mut Vec<String>) {
        for (key, value) in fields {
            path.push(key.clone());
            match value {
                Value::Null => {
                    self.field(path);
                }
                Value::Object(inner) if path.len() < self.max_depth => self.observe_object(inner, path),
                _ => {
                    let kind = self.kind(value);
                    let typed = self.nested == NestedAs::Typed && matches!(kind, Kind::Array | Kind::DeepObject);
                    let shape = typed.then(|| Shape::of(value, &|v| self.kind(v)));
                    let field = self.field(path);
                    field.present += 1;
                    field.kinds.insert(kind);
                    if let Some(shape) = shape {
                        field.shape = std::mem::take(&mut field.shape).merged(shape);
                    }
                }
            }
            path.pop();
        }
    }

    fn field(&mut self, path: &[String]) -> &mut Field {
        let next = self.fields.len();
        let idx = *self.by_path.entry(path.to_vec()).or_insert(next);
        if idx == next {
            self.fields.push(Field { path: path.to_vec(), ..Field::default() });
        }
        &mut self.fields[idx]
    }

    fn kind(&self, value: &Value) -> Kind {
        match value {
            Value::Bool => Kind::Bool,
            Value::Long => Kind::Long,
            Value::BigInteger => Kind::BigInteger,
            Value::Double => Kind::Double,
            Value::String(s) if is_date(s) => Kind::Date,
            Value::String(s) if self.timestamps.parses(s) => Kind::Timestamp,
            Value::String(_) => Kind::Text,
            Value::Array(_) => Kind::Array,
            Value::Object(_) | Value::Null => Kind::DeepObject,
        }
    }

    /// Messages taken into account, and those that were not JSON objects.
    pub fn counts(&self) -> (usize, usize) {
        (self.samples, self.not_objects)
    }

    /// The inferred columns, in the order their fields were first seen.
    pub fn columns(&self) -> Vec<InferredColumn> {
        self.columns_by(|f| self.field_type(f))
    }

    /// The columns for schema evolution: like [`Self::columns`], but scalars of different
    /// kinds make a `string` column (their JSON text, nothing lost) instead of a question
    /// for a reviewer.
    pub fn evolution_columns(&self) -> Vec<InferredColumn> {
        self.columns_by(|f| {
            let scalars = !f.kinds.is_empty() && !f.kinds.contains(&Kind::Array) && !f.kinds.contains(&Kind::DeepObject);
            self.field_type(f).or_else(|reason| if scalars { Ok("string".into()) } else { Err(reason) })
        })
    }

    /// The type of a field: nested values typed by their shape when so configured (JSON text
    /// when their shapes disagree or scalars are among them), the rest by their kinds.
    fn field_type(&self, field: &Field) -> Result<String, String> {
        let nested_only = field.kinds.iter().all(|k| matches!(k, Kind::Array | Kind::DeepObject));
        if self.nested == NestedAs::Typed && !field.kinds.is_empty() && nested_only {
            return field.shape.column_type().map(|named| named.unwrap_or_else(|| "json".into()));
        }
        scalar_type(&field.kinds)
    }

    /// True when no field was seen.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    fn columns_by(&self, column_type: impl Fn(&Field) -> Result<String, String>) -> Vec<InferredColumn> {
        let mut names = BTreeSet::new();
        self.fields
            .iter()
            .map(|f| {
                let name = f.path.join(&self.separator);
                let json_name = (f.path.len() > 1).then(|| f.path.join("."));
                let type_name = if f.path.iter().any(|k| k.contains('.')) {
                    Err("a key with a dot cannot be addressed by a json_name path".to_string())
                } else if !names.insert(name.clone()) {
                    Err(format!("its flattened name {name} is taken by an earlier field; choose another --separator"))
                } else {
                    column_type(f)
                };
                InferredColumn { name, json_name, type_name, required: self.samples > 0 && f.present == self.samples }
            })
            .collect()
    }

    /// The schema file for the columns, with `origin` (where the samples came from) in its
    /// header; fields that cannot be columns are listed as comments with the reason.
    pub fn render(&self, origin: &str) -> String {
        let (samples, not_objects) = self.counts();
        let mut out = format!(
            "# Inferred by `lakectl infer-schema` from {samples} messages of {origin}{}.\n\
             # Review before use: types come from the values seen; `required` marks fields that held a\n\
             # non-null value in every sampled message.\n",
            if not_objects > 0 { format!(" ({not_objects} more were not JSON objects)") } else { String::new() }
        );
        for column in self.columns() {
            let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
            match &column.type_name {
                Ok(type_name) => {
                    if type_name == "json" {
                        let why = match self.nested {
                            NestedAs::Json => format!("an array or an object deeper than --max-depth {}", self.max_depth),
                            NestedAs::Typed => "arrays or objects whose shapes disagree".to_string(),
                        };
                        out.push_str(&format!("\n# {why}: its JSON text as sent"));
                    }
                    out.push_str(&format!("\n[[columns]]\nname = {}\n", quoted(&column.name)));
                    if let Some(path) = &column.json_name {
                        out.push_str(&format!("json_name = {}\n", quoted(path)));
                    }
                    out.push_str(&format!("type = \"{type_name}\"\n"));
                    if column.required {
                        out.push_str("required = true\n");
                    }
                }
                Err(reason) => {
                    out.push_str(&format!("\n# not a column: {} ({reason})\n", column.json_name.as_ref().unwrap_or(&column.name)))
                }
            }
        }
        out
    }
}

/// The Delta type of a field from the kinds of its values (arrays and deep objects: `json`),
/// or why it has none.
fn scalar_type(kinds: &BTreeSet<Kind>) -> Result<String, String> {
    use Kind::*;
    let only = |allowed: &[Kind]| kinds.iter().all(|k| allowed.contains(k));
    let named = match () {
        _ if kinds.is_empty() => return Err("only nulls seen: no type to infer".into()),
        // Kept whole: the value's JSON text as sent.
        _ if kinds.contains(&Array) || kinds.contains(&DeepObject) => "json",
        _ if only(&[Bool]) => "boolean",
        _ if only(&[Long]) => "long",
        _ if only(&[Long, BigInteger]) => "decimal(20,0)",
        _ if only(&[Long, BigInteger, Double]) => "double",
        _ if only(&[Date]) => "date",
        _ if only(&[Timestamp]) => "timestamp",
        _ if only(&[Date, Timestamp, Text]) => "string",
        _ => return Err(format!("values of different kinds: {kinds:?}")),
    };
    Ok(named.to_string())
}

/// A JSON value as inference needs it: object fields in message order (serde_json's own map
/// sorts them), strings and array elements kept, numbers only by kind.
#[derive(Debug)]
pub(crate) enum Value {
    Null,
    Bool,
    Long,
    BigInteger,
    Double,
    String(String),
    Array(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Bool)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Long)
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(if i64::try_from(v).is_ok() { Value::Long } else { Value::BigInteger })
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Double)
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Value>()? {
            fields.push((key, value));
        }
        Ok(Value::Object(fields))
    }
}

/// `YYYY-MM-DD` and a real date.
fn is_date(s: &str) -> bool {
    s.len() == 10 && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, json_name, type or reason, required)
    type Row = (String, Option<String>, Result<String, String>, bool);

    fn infer(messages: &[&str]) -> Vec<Row> {
        let mut inference = SchemaInference::new("_", 2);
        for m in messages {
            inference.observe(m.as_bytes());
        }
        inference.columns().into_iter().map(|c| (c.name, c.json_name, c.type_name, c.required)).collect()
    }

    fn ok(name: &str, type_name: &str, required: bool) -> Row {
        (name.into(), None, Ok(type_name.into()), required)
    }

    #[test]
    fn types_come_from_every_value_and_required_from_presence() {
        let columns = infer(&[
            r#"{"id": 1, "owner": "a", "value": 3, "at": "2022-04-04 11:30:00", "day": "2022-04-04", "ok": true}"#,
            r#"{"id": 2, "owner": null, "value": 4.5, "at": "2022-04-04T11:30:00Z", "day": "2022-04-05", "ok": false}"#,
            r#"{"id": 18446744073709551615, "value": 7, "at": "2022-04-04 11:30:00.123456", "day": "x", "ok": true}"#,
        ]);
        assert_eq!(
            columns,
            [
                ok("id", "decimal(20,0)", true),
                ok("owner", "string", false),
                ok("value", "double", true),
                ok("at", "timestamp", true),
                ok("day", "string", true),
                ok("ok", "boolean", true),
            ]
        );
    }

    #[test]
    fn nested_objects_flatten_to_a_depth_and_the_rest_is_named_with_a_reason() {
        let columns = infer(&[
            r#"{"data": {"id": 1, "deep": {"x": 1}}, "tags": ["a"], "a.b": 1, "n": null, "mixed": 1, "data_id": 3}"#,
            r#"{"data": {"id": 2, "deep": {"x": 2}}, "tags": [], "a.b": 2, "n": null, "mixed": "one", "data_id": 4}"#,
        ]);
        assert_eq!(columns[0], ("data_id".into(), Some("data.id".into()), Ok("long".into()), true));
        assert_eq!(columns[1], ("data_deep".into(), Some("data.deep".into()), Ok("json".into()), true), "deeper than --max-depth 2");
        assert_eq!(columns[2], ("tags".into(), None, Ok("json".into()), true), "an array");
        assert!(columns[3].2.as_ref().unwrap_err().contains("dot"));
        assert!(columns[4].2.as_ref().unwrap_err().contains("only nulls"));
        assert!(columns[5].2.as_ref().unwrap_err().contains("different kinds"));
        assert!(columns[6].2.as_ref().unwrap_err().contains("taken by an earlier field"));
    }

    #[test]
    fn typed_nesting_makes_array_and_struct_columns_and_json_where_shapes_disagree() {
        let mut inference = SchemaInference::new("_", 1).nested_as(NestedAs::Typed);
        inference.observe(br#"{"id": 1, "items": [{"sku": "a", "qty": 2}], "address": {"city": "Oslo"}, "odd": [1], "none": []}"#);
        inference.observe(br#"{"id": 2, "items": [], "address": {"city": "Bergen", "zip": "5003"}, "odd": {"a": 1}, "none": []}"#);
        let columns: Vec<(String, Result<String, String>)> = inference.columns().into_iter().map(|c| (c.name, c.type_name)).collect();
        assert_eq!(columns[1], ("items".into(), Ok("array<struct<sku:string,qty:long>>".into())));
        assert_eq!(columns[2], ("address".into(), Ok("struct<city:string,zip:string>".into())));
        assert_eq!(columns[3], ("odd".into(), Ok("json".into())));
        assert!(columns[4].1.as_ref().unwrap_err().contains("only nulls or empty arrays"));
        assert!(inference.evolution_columns()[4].type_name.is_err(), "no string column for an array yet untyped");
        let schema = toml_like(&inference.render("topic t"));
        assert_eq!(schema.columns[1].kind(), pipeline_config::ColumnType::parse("array<struct<sku:string,qty:long>>").unwrap());
    }

    #[test]
    fn the_rendered_file_is_a_schema_file_with_the_fields_left_out_as_comments() {
        let mut inference = SchemaInference::new("_", 2);
        inference.observe(br#"{"order_id": 7, "meta": {"op": "I"}, "tags": [1]}"#);
        inference.observe(b"not json");
        let text = inference.render("topic orders");
        assert!(text.starts_with("# Inferred by `lakectl infer-schema` from 1 messages of topic orders (1 more were not JSON objects)."));
        let schema: pipeline_config::TableSchema = toml_like(&text);
        assert_eq!(schema.columns.len(), 3);
        assert_eq!(schema.columns[1].json_name.as_deref(), Some("meta.op"));
        assert_eq!((schema.columns[2].name.as_str(), schema.columns[2].type_name.as_str()), ("tags", "json"), "{text}");
    }

    /// Parses the rendered text as the configuration loader would (a file per call: tests
    /// run in parallel).
    fn toml_like(text: &str) -> pipeline_config::TableSchema {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!("infer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t{}.schema.toml", CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::write(&path, text).unwrap();
        pipeline_config::TableSchema::load(&path, "tables.t.schema").unwrap()
    }
}
