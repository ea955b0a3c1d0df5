//! The flat path: for a table whose columns are all top-level strings, integers, booleans or
//! formatted timestamps, each message is read in one pass straight into the table's columns,
//! without arrow-json's tape, its per-column passes and our conversions: by the plain reader
//! (see `plain`) when the message is plain JSON, by serde_json otherwise.
//!
//! It decides only what it decides exactly as the general path would: a row, or a reject for
//! a value its column cannot hold or a required field missing, with the general path's reason.
//! A message with anything else (malformed JSON, a duplicate key, a value of a JSON type the
//! column does not take, a number in a notation it cannot see the text of) is left whole to
//! the general path. Differential tests in `decoder::tests` hold the plain reader to the serde
//! reader's outcomes, and the flat path to the general path's rows and reasons.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Int16Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use pipeline_config::{ColumnType, TableSchema};
use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

use super::required_reason;
use crate::numbers::{integer_of, reject_reason, NumberKind};
use crate::scan::must_escape;
use crate::TimestampParser;

mod plain;

/// The columns of a table the flat path can fill.
#[derive(Debug)]
pub(super) struct FlatSchema {
    columns: Vec<FlatColumn>,
    /// JSON key → column.
    by_key: HashMap<Box<str>, usize, foldhash::fast::RandomState>,
}

#[derive(Debug)]
struct FlatColumn {
    /// The JSON key (reasons about values name it, as the general path does).
    key: Box<str>,
    /// The key's JSON text is the key itself (no character a producer must escape), so a
    /// message's key can be matched by its bytes.
    plain_key: bool,
    /// The table column (reasons about timestamps name it).
    name: Box<str>,
    kind: FlatKind,
    required: bool,
}

/// What a column accepts on the flat path.
#[derive(Debug)]
enum FlatKind {
    Utf8,
    /// `long`, `integer` or `short`.
    Integer(NumberKind),
    Boolean,
    Timestamp(TimestampParser),
}

impl FlatSchema {
    /// The flat path of `schema`, when every column can take it: a top-level key (no dotted
    /// path) of type string, long, integer, short, boolean, or timestamp read from strings.
    pub(super) fn of(schema: &TableSchema) -> Option<Self> {
        let mut columns = Vec::with_capacity(schema.columns.len());
        for col in &schema.columns {
            let key = col.json_key();
            let kind = match col.kind() {
                _ if key.contains('.') => return None,
                ColumnType::String => FlatKind::Utf8,
                ColumnType::Long => FlatKind::Integer(NumberKind::Long),
                ColumnType::Integer => FlatKind::Integer(NumberKind::Integer),
                ColumnType::Short => FlatKind::Integer(NumberKind::Short),
                ColumnType::Boolean => FlatKind::Boolean,
                ColumnType::Timestamp => match TimestampParser::from_spec(&col.timestamp) {
                    parser if parser.is_epoch() => return None,
                    parser => FlatKind::Timestamp(parser),
                },
                _ => return None,
            };
            let plain_key = !key.bytes().any(must_escape);
            columns.push(FlatColumn { key: key.into(), plain_key, name: col.name.as_str().into(), kind, required: col.required });
        }
        let by_key: HashMap<_, _, _> = columns.iter().enumerate().map(|(i, c)| (c.key.clone(), i)).collect();
        // Two columns of one key would need both filled from one value: leave that to arrow-json.
        (!columns.is_empty() && by_key.len() == columns.len()).then_some(Self { columns, by_key })
    }

    fn column_of(&self, key: &str, hint: usize) -> Option<usize> {
        // Producers mostly write keys in one order: try the column after the last one first.
        match self.columns.get(hint) {
            Some(c) if *c.key == *key => Some(hint),
            _ => self.by_key.get(key).copied(),
        }
    }
}

// The value decisions are inlined into the plain reader: a slot returned through the stack
// cost a store-forwarding stall per value there.
impl FlatColumn {
    /// A string value as the general path reads it (arrow-json keeps a number's or boolean's
    /// text for string columns; integers and timestamps are converted from their text). None:
    /// a value the flat path cannot judge the same way (the general path takes the message).
    #[inline(always)]
    fn string_slot<'m>(&self, text: Cow<'m, str>) -> Option<Slot<'m>> {
        match &self.kind {
            FlatKind::Utf8 => Some(Slot::Str(text)),
            FlatKind::Integer(kind) => Some(match integer_of(*kind, &text)? {
                Ok(v) => Slot::Int(v),
                Err(reason) => Slot::Bad(reject_reason(&self.key, *kind, &reason)),
            }),
            FlatKind::Timestamp(parser) => Some(match parser.parse_str(&text) {
                Some(micros) => Slot::Int(micros),
                None => Slot::Bad(parser.reject_reason(&self.name, &text)),
            }),
            FlatKind::Boolean => None,
        }
    }

    /// An integer literal's value; `text` gives its text (the literal itself) when needed.
    #[inline(always)]
    fn integer_slot<'m>(&self, v: i64, text: impl FnOnce() -> Cow<'m, str>) -> Option<Slot<'m>> {
        match self.kind {
            FlatKind::Integer(NumberKind::Long) => Some(Slot::Int(v)),
            FlatKind::Integer(NumberKind::Integer) if i32::try_from(v).is_ok() => Some(Slot::Int(v)),
            FlatKind::Integer(NumberKind::Short) if i16::try_from(v).is_ok() => Some(Slot::Int(v)),
            _ => self.string_slot(text()),
        }
    }

    /// A boolean literal's value.
    #[inline(always)]
    fn bool_slot<'m>(&self, v: bool) -> Option<Slot<'m>> {
        match self.kind {
            FlatKind::Boolean => Some(Slot::Bool(v)),
            _ => self.string_slot(Cow::Borrowed(if v { "true" } else { "false" })),
        }
    }
}

/// One message's value of a column, before the message is known to read whole.
#[derive(Debug, Default)]
enum Slot<'m> {
    #[default]
    Missing,
    Null,
    Str(Cow<'m, str>),
    Int(i64),
    Bool(bool),
    /// A value its column cannot hold: the message is rejected for this reason.
    Bad(String),
}

/// What the flat path made of a message.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FlatOutcome {
    /// A row was added.
    Row,
    /// Rejected, with the general path's reason.
    Reject(String),
    /// Left to the general path (nothing was kept).
    General,
}

/// A column being built.
enum Builder {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Int16(Int16Builder),
    Boolean(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
}

impl Builder {
    fn of(kind: &FlatKind) -> Self {
        match kind {
            FlatKind::Utf8 => Self::Utf8(StringBuilder::new()),
            FlatKind::Integer(NumberKind::Integer) => Self::Int32(Int32Builder::new()),
            FlatKind::Integer(NumberKind::Short) => Self::Int16(Int16Builder::new()),
            FlatKind::Integer(_) => Self::Int64(Int64Builder::new()),
            FlatKind::Boolean => Self::Boolean(BooleanBuilder::new()),
            FlatKind::Timestamp(_) => Self::Timestamp(TimestampMicrosecondBuilder::new()),
        }
    }

    /// Appends a slot the visitor filled for this column's kind (so the casts are in range).
    fn append(&mut self, slot: &Slot<'_>) {
        match (self, slot) {
            (Self::Utf8(b), Slot::Str(s)) => b.append_value(s),
            (Self::Int64(b), Slot::Int(v)) => b.append_value(*v),
            (Self::Timestamp(b), Slot::Int(v)) => b.append_value(*v),
            (Self::Int32(b), Slot::Int(v)) => b.append_value(*v as i32),
            (Self::Int16(b), Slot::Int(v)) => b.append_value(*v as i16),
            (Self::Boolean(b), Slot::Bool(v)) => b.append_value(*v),
            (Self::Utf8(b), _) => b.append_null(),
            (Self::Int64(b), _) => b.append_null(),
            (Self::Timestamp(b), _) => b.append_null(),
            (Self::Int32(b), _) => b.append_null(),
            (Self::Int16(b), _) => b.append_null(),
            (Self::Boolean(b), _) => b.append_null(),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Self::Utf8(mut b) => Arc::new(b.finish()),
            Self::Int64(mut b) => Arc::new(b.finish()),
            Self::Int32(mut b) => Arc::new(b.finish()),
            Self::Int16(mut b) => Arc::new(b.finish()),
            Self::Boolean(mut b) => Arc::new(b.finish()),
            Self::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
        }
    }
}

/// Rows read by the flat path.
pub(super) struct FlatRows<'d, 'm> {
    schema: &'d FlatSchema,
    slots: Vec<Slot<'m>>,
    builders: Vec<Builder>,
    /// The input index of each row.
    rows: Vec<u32>,
    /// Whether plain messages are read by the plain reader (off: the serde reader reads all,
    /// the plain reader's oracle in tests).
    plain: bool,
}

impl<'d, 'm> FlatRows<'d, 'm> {
    pub(super) fn new(schema: &'d FlatSchema) -> Self {
        Self {
            schema,
            slots: schema.columns.iter().map(|_| Slot::Missing).collect(),
            builders: schema.columns.iter().map(|c| Builder::of(&c.kind)).collect(),
            rows: Vec::new(),
            plain: true,
        }
    }

    /// The same reading without the plain reader (its oracle).
    #[cfg(test)]
    pub(super) fn serde_only(self) -> Self {
        Self { plain: false, ..self }
    }

    /// Reads message `index`: a row, a reject, or (nothing kept) the general path's to judge.
    pub(super) fn push(&mut self, index: u32, msg: &'m [u8]) -> FlatOutcome {
        self.slots.iter_mut().for_each(|s| *s = Slot::Missing);
        if !self.plain || plain::read(self.schema, msg, &mut self.slots).is_none() {
            self.slots.iter_mut().for_each(|s| *s = Slot::Missing);
            // One UTF-8 check of the whole message (invalid UTF-8 is arrow-json's to reject)
            // instead of one per string.
            let Ok(text) = std::str::from_utf8(msg) else { return FlatOutcome::General };
            let mut reader = serde_json::Deserializer::from_str(text);
            let read =
                (&mut reader).deserialize_map(ObjectVisitor { schema: self.schema, slots: &mut self.slots }).and_then(|()| reader.end());
            if read.is_err() {
                return FlatOutcome::General;
            }
        }
        // The general path's reason: the first column, in schema order, with a value it cannot
        // hold or without a required value.
        for (slot, col) in self.slots.iter_mut().zip(&self.schema.columns) {
            match slot {
                Slot::Bad(reason) => return FlatOutcome::Reject(std::mem::take(reason)),
                Slot::Missing | Slot::Null if col.required => return FlatOutcome::Reject(required_reason(&col.key)),
                _ => {}
            }
        }
        for (builder, slot) in self.builders.iter_mut().zip(&self.slots) {
            builder.append(slot);
        }
        self.rows.push(index);
        FlatOutcome::Row
    }

    /// The rows read, in `table_schema`, with their input indexes.
    pub(super) fn finish(self, table_schema: &SchemaRef) -> Result<(RecordBatch, Vec<u32>), ArrowError> {
        let columns: Vec<ArrayRef> = self.builders.into_iter().map(Builder::finish).collect();
        Ok((RecordBatch::try_new(table_schema.clone(), columns)?, self.rows))
    }
}

/// Whether the plain reader reads `msg` (tests count how much of their input it took).
#[cfg(test)]
pub(super) fn is_plain(schema: &FlatSchema, msg: &[u8]) -> bool {
    let mut slots: Vec<Slot<'_>> = schema.columns.iter().map(|_| Slot::Missing).collect();
    plain::read(schema, msg, &mut slots).is_some()
}

/// Reads one JSON object into the slots of the columns its keys name.
struct ObjectVisitor<'a, 'm> {
    schema: &'a FlatSchema,
    slots: &'a mut [Slot<'m>],
}

impl<'m> Visitor<'m> for ObjectVisitor<'_, 'm> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'m>>(self, mut map: A) -> Result<(), A::Error> {
        let mut hint = 0;
        while let Some(column) = map.next_key_seed(KeySeed { schema: self.schema, hint })? {
            let Some(i) = column else {
                map.next_value::<Checked>()?;
                continue;
            };
            if !matches!(self.slots[i], Slot::Missing) {
                return Err(de::Error::custom("duplicate key"));
            }
            self.slots[i] = map.next_value_seed(ValueSeed(&self.schema.columns[i]))?;
            hint = i + 1;
        }
        Ok(())
    }
}

/// A value of a field the table does not read, checked as arrow-json checks it (UTF-8,
/// escapes) rather than skipped unread.
struct Checked;

impl<'de> de::Deserialize<'de> for Checked {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

/// A key, looked up as a column (None: a field the table does not read).
struct KeySeed<'a> {
    schema: &'a FlatSchema,
    hint: usize,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.schema.column_of(key, self.hint))
    }
}

/// A value of a column, read as the general path reads it (arrow-json keeps a number's or
/// boolean's text for string columns; integers and timestamps are converted from their text).
/// A value the flat path cannot judge the same way is an error: the general path takes it.
struct ValueSeed<'a>(&'a FlatColumn);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Slot<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value the flat path reads")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Slot::Null)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        self.0.string_slot(Cow::Borrowed(s)).ok_or_else(|| E::custom("a string"))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        self.0.string_slot(Cow::Owned(s.to_string())).ok_or_else(|| E::custom("a string"))
    }

    /// serde_json gives integers only for integer literals, whose text is the value's own.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.0.integer_slot(v, || Cow::Owned(v.to_string())).ok_or_else(|| E::custom("a number"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => self.visit_str(&v.to_string()),
        }
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.0.bool_slot(v).ok_or_else(|| E::custom("a boolean"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use pipeline_config::{ColumnSpec, TimestampSpec};

    fn col(name: &str, json: Option<&str>, ty: &str, timestamp: TimestampSpec) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            json_name: json.map(str::to_string),
            type_name: ty.into(),
            required: false,
            timestamp,
            column_type: ColumnType::parse(ty),
        }
    }

    #[test]
    fn only_top_level_scalars_of_the_kinds_it_reads_exactly_take_the_flat_path() {
        let plain = |name: &str, ty: &str| col(name, None, ty, TimestampSpec::default());
        let flat = |columns: Vec<ColumnSpec>| FlatSchema::of(&TableSchema { columns }).is_some();
        assert!(flat(vec![plain("a", "long"), plain("b", "string"), plain("c", "timestamp"), plain("d", "boolean")]));
        assert!(!flat(vec![plain("a", "long"), col("b", Some("data.b"), "long", TimestampSpec::default())]), "a dotted path");
        for ty in ["double", "float", "decimal(10,2)", "date", "json", "array<long>", "struct<a:long>"] {
            assert!(!flat(vec![plain("a", "long"), plain("b", ty)]), "{ty}");
        }
        let epoch = TimestampSpec { epoch_unit: Some(pipeline_config::EpochUnit::Millis), ..Default::default() };
        assert!(!flat(vec![col("t", None, "timestamp", epoch)]), "epoch numbers");
        assert!(!flat(vec![plain("a", "long"), col("b", Some("a"), "string", TimestampSpec::default())]), "one key, two columns");
        assert!(!flat(Vec::new()));
    }

    #[test]
    fn a_message_it_cannot_judge_as_the_general_path_would_leaves_no_trace() {
        let mut columns = vec![col("id", None, "long", TimestampSpec::default()), col("name", None, "string", TimestampSpec::default())];
        columns[0].required = true;
        let schema = FlatSchema::of(&TableSchema { columns: columns.clone() }).unwrap();
        let mut rows = FlatRows::new(&schema);
        assert_eq!(rows.push(0, br#"{"id": 1, "name": "a\u00e9", "other": {"x": [1]}}"#), FlatOutcome::Row);
        assert_eq!(rows.push(1, br#"{"id": 2, "name": 3}"#), FlatOutcome::Row, "a string column keeps a number's text");
        assert_eq!(rows.push(2, br#"{"id": 2.5, "name": "b"}"#), FlatOutcome::General, "no text of a fraction to judge");
        assert_eq!(rows.push(3, br#"{"id": 3, "id": 4}"#), FlatOutcome::General, "a duplicate key");
        assert_eq!(rows.push(4, br#"{"id": 5, "name": "c"} {}"#), FlatOutcome::General, "a second value");
        assert_eq!(rows.push(5, br#"{"id": "x", "name": [1]}"#), FlatOutcome::General, "an array for a string column");
        let reason = |r: &str| FlatOutcome::Reject(r.to_string());
        assert_eq!(rows.push(6, br#"{"id": "x"}"#), reason("field 'id': x is not a number (column type long)"));
        assert_eq!(rows.push(7, br#"{"name": "d"}"#), reason("required field 'id' is missing or null"));
        assert_eq!(rows.push(8, br#"{"id": "12", "name": null}"#), FlatOutcome::Row, "an integer's text in a string");
        let table = TableSchema { columns }.arrow_schema();
        let (batch, indexes) = rows.finish(&table).unwrap();
        assert_eq!(indexes, vec![0, 1, 8]);
        let ids = batch.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 12]);
        let names = batch.column(1).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        assert_eq!((names.value(0), names.value(1), names.is_null(2)), ("aé", "3", true));
    }
}
