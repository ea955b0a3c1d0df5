//! Chunked arrow-json decoding with per-message rejection.

use std::sync::{Arc, Mutex};

use arrow::array::{make_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow::buffer::NullBuffer;
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_json::reader::{Decoder, ReaderBuilder};
use pipeline_config::{ColumnType, TableSchema};

use crate::numbers::{convert_numbers, NumberKind};
use crate::TimestampParser;

/// Failure of the decoder itself (not of a message: bad messages become [`Reject`]s).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Arrow rejected a schema or batch we built: a bug or an unsupported schema.
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
}

/// A message that could not become a row, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Index of the message in the decoded input.
    pub index: usize,
    /// Why, in words an operator can act on.
    pub reason: String,
}

/// The outcome of decoding a run of messages.
#[derive(Debug)]
pub struct Decoded {
    /// One row per accepted message, in input order, with the table schema's columns.
    pub batch: RecordBatch,
    /// For each row of `batch`, the index of its message in the input.
    pub rows: Vec<u32>,
    /// Messages that were not accepted, in input order.
    pub rejects: Vec<Reject>,
}

#[derive(Debug)]
enum Conversion {
    None,
    Timestamp(TimestampParser),
    /// Decoded as the number's text, converted exactly (see [`crate::numbers`]).
    Number(NumberKind),
    /// Not decoded: the value's JSON text, copied from the message.
    Json,
    /// An array or struct: decoded with numbers and timestamps as text, converted per value
    /// (see [`crate::nested`]).
    Nested(ColumnType),
}

/// Decodes JSON messages into record batches of a table schema.
#[derive(Debug)]
pub struct MessageDecoder {
    /// What arrow-json decodes into: JSON keys, timestamps as strings or epoch numbers.
    wire_schema: SchemaRef,
    /// What the table stores: column names, UTC microsecond timestamps.
    table_schema: SchemaRef,
    /// Where each table column sits in the wire schema (field names from the top).
    paths: Vec<Vec<String>>,
    conversions: Vec<Conversion>,
    required: Vec<bool>,
    max_message_bytes: usize,
    /// The one-pass reader of flat messages, when every column can take it (see [`flat`]).
    flat: Option<flat::FlatSchema>,
    /// Decoders of finished runs, kept for the next ones: a fresh decoder's buffers grow by
    /// reallocation through its first records, page faults included.
    spare: Mutex<Vec<Decoder>>,
}

/// Spare decoders kept per [`MessageDecoder`] (one per concurrent run is enough).
const SPARE_DECODERS: usize = 4;

/// The wire schema as a tree: leaves are decoded values, inner nodes JSON objects.
#[derive(Debug, Default)]
struct WireTree {
    children: Vec<(String, WireNode)>,
}

#[derive(Debug)]
enum WireNode {
    Leaf(DataType),
    Object(WireTree),
}

impl WireTree {
    fn insert(&mut self, path: &[String], leaf: DataType) {
        let Some((first, rest)) = path.split_first() else { return };
        let position = self.children.iter().position(|(n, _)| n == first);
        if rest.is_empty() {
            match position {
                Some(_) => {} // validated unique; a leaf and an object of one name cannot both exist
                None => self.children.push((first.clone(), WireNode::Leaf(leaf))),
            }
            return;
        }
        let index = match position {
            Some(i) => i,
            None => {
                self.children.push((first.clone(), WireNode::Object(WireTree::default())));
                self.children.len() - 1
            }
        };
        if let WireNode::Object(tree) = &mut self.children[index].1 {
            tree.insert(rest, leaf);
        }
    }

    fn fields(&self) -> Vec<Field> {
        self.children
            .iter()
            .map(|(name, node)| match node {
                WireNode::Leaf(t) => Field::new(name, t.clone(), true),
                WireNode::Object(tree) => Field::new(name, DataType::Struct(tree.fields().into()), true),
            })
            .collect()
    }
}

/// The column at `path` of a wire batch; a null object makes its fields null.
fn wire_column(wire: &RecordBatch, path: &[String]) -> Result<ArrayRef, ArrowError> {
    let (first, rest) = path.split_first().ok_or_else(|| ArrowError::SchemaError("empty JSON path".into()))?;
    let mut column = wire.column(wire.schema().index_of(first)?).clone();
    for name in rest {
        let object = column
            .as_any()
            .downcast_ref::<StructArray>()
            .ok_or_else(|| ArrowError::SchemaError(format!("{name}: parent is not an object")))?;
        let child = object.column_by_name(name).ok_or_else(|| ArrowError::SchemaError(format!("no field {name}")))?.clone();
        let nulls = NullBuffer::union(object.nulls(), child.nulls());
        column = make_array(child.to_data().into_builder().nulls(nulls).build()?);
    }
    Ok(column)
}

impl MessageDecoder {
    /// A decoder for `schema`; messages larger than `max_message_bytes` are rejected.
    pub fn new(schema: &TableSchema, max_message_bytes: usize) -> Self {
        let mut tree = WireTree::default();
        let mut conversions = Vec::new();
        let mut paths = Vec::new();
        for col in &schema.columns {
            let (wire_type, conv) = match col.kind() {
                ColumnType::Timestamp => {
                    let parser = TimestampParser::from_spec(&col.timestamp);
                    let ty = if parser.is_epoch() { DataType::Int64 } else { DataType::Utf8 };
                    (ty, Conversion::Timestamp(parser))
                }
                ColumnType::Json => (DataType::Null, Conversion::Json),
                nested if nested.is_nested() => (crate::nested::wire_type(&nested), Conversion::Nested(nested)),
                other => match NumberKind::of(&other) {
                    Some(kind) => (DataType::Utf8, Conversion::Number(kind)),
                    None => (other.arrow_type(), Conversion::None),
                },
            };
            // A dotted JSON name reads a nested field (e.g. AWS DMS `data.order_id`).
            let path: Vec<String> = col.json_key().split('.').map(str::to_string).collect();
            if !matches!(conv, Conversion::Json) {
                tree.insert(&path, wire_type);
            }
            paths.push(path);
            conversions.push(conv);
        }
        Self {
            wire_schema: Arc::new(Schema::new(tree.fields())),
            table_schema: schema.arrow_schema(),
            paths,
            conversions,
            required: schema.columns.iter().map(|c| c.required).collect(),
            max_message_bytes,
            flat: flat::FlatSchema::of(schema),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// The schema of decoded batches.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    /// A decoder with room for `rows` records (its buffers are sized for them up front).
    fn decoder_of(&self, rows: usize) -> Result<Decoder, ArrowError> {
        // Numbers reach numeric columns as their text (converted exactly afterwards); string
        // columns likewise keep a number's or boolean's JSON text.
        ReaderBuilder::new(self.wire_schema.clone()).with_batch_size(rows).with_coerce_primitive(true).build_decoder()
    }

    /// A decoder with room for a chunk of records: a spare one when there is one.
    fn chunk_decoder(&self, rows: usize) -> Result<Decoder, ArrowError> {
        match self.spare.lock().ok().and_then(|mut spare| spare.pop()) {
            Some(decoder) => Ok(decoder),
            None => self.decoder_of(rows),
        }
    }

    /// Keeps a flushed (empty) chunk decoder for the next run.
    fn keep_spare(&self, decoder: Decoder) {
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < SPARE_DECODERS {
                spare.push(decoder);
            }
        }
    }

    /// Decodes `messages`; each becomes exactly one row or one [`Reject`].
    pub fn decode(&self, messages: &[&[u8]]) -> Result<Decoded, DecodeError> {
        let mut run = self.run()?;
        for (i, msg) in messages.iter().enumerate() {
            run.push(i as u32, msg)?;
        }
        run.finish(messages)
    }

    /// A decoding fed one message at a time (e.g. the messages of one routed table while a
    /// chunk is read in order, each decoded while its bytes are still in cache).
    pub fn run(&self) -> Result<DecodeRun<'_, '_>, DecodeError> {
        DecodeRun::new(self)
    }

    /// Why a message is rejected before any decoder sees it (too large or blank).
    fn precheck(&self, msg: &[u8]) -> Option<String> {
        if msg.len() > self.max_message_bytes {
            return Some(format!("message of {} bytes exceeds max_message_bytes ({})", msg.len(), self.max_message_bytes));
        }
        if msg.iter().all(u8::is_ascii_whitespace) {
            return Some("empty message (no JSON value)".into());
        }
        None
    }

    /// Converts wire columns to table columns and drops rows that fail a per-row check.
    fn to_table_rows(
        &self,
        messages: &[&[u8]],
        wire: RecordBatch,
        rows: Vec<u32>,
        rejects: &mut Vec<Reject>,
    ) -> Result<(RecordBatch, Vec<u32>), DecodeError> {
        let mut bad: Vec<(usize, String)> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.paths.len());
        for (idx, (path, conv)) in self.paths.iter().zip(&self.conversions).enumerate() {
            let col = &match conv {
                Conversion::Json => json_texts(messages, &rows, path, &mut bad),
                _ => wire_column(&wire, path)?,
            };
            let name = self.table_schema.field(idx).name();
            let converted: ArrayRef = match conv {
                Conversion::None | Conversion::Json => col.clone(),
                Conversion::Timestamp(parser) if parser.is_epoch() => {
                    let values = col.as_any().downcast_ref::<Int64Array>().expect("wire type is Int64");
                    Arc::new(parser.convert_epoch(name, values, &mut bad))
                }
                Conversion::Timestamp(parser) => {
                    let values = col.as_any().downcast_ref::<StringArray>().expect("wire type is Utf8");
                    Arc::new(parser.convert_strings(name, values, &mut bad))
                }
                Conversion::Number(kind) => {
                    let values = col.as_any().downcast_ref::<StringArray>().expect("wire type is Utf8");
                    convert_numbers(&path.join("."), *kind, values, &mut bad)?
                }
                Conversion::Nested(ty) => crate::nested::convert(&path.join("."), ty, col, &mut bad)?,
            };
            if self.required[idx] && col.null_count() > 0 {
                let nulls = col.logical_nulls().expect("null_count > 0 implies a null buffer");
                bad.extend(nulls.iter().enumerate().filter(|(_, valid)| !valid).map(|(row, _)| (row, required_reason(&path.join(".")))));
            }
            columns.push(converted);
        }
        // A schema without columns (a table still to be inferred) keeps its row count.
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let batch = RecordBatch::try_new_with_options(self.table_schema.clone(), columns, &options)?;
        if bad.is_empty() {
            return Ok((batch, rows));
        }
        bad.sort_by_key(|(row, _)| *row);
        bad.dedup_by_key(|(row, _)| *row);
        let mut keep = vec![true; batch.num_rows()];
        for (row, reason) in bad {
            keep[row] = false;
            rejects.push(Reject { index: rows[row] as usize, reason });
        }
        let kept_rows = rows.iter().zip(&keep).filter(|(_, k)| **k).map(|(r, _)| *r).collect();
        let batch = filter_record_batch(&batch, &BooleanArray::from(keep))?;
        Ok((batch, kept_rows))
    }
}

/// Why a message without a value for required field `path` is rejected.
fn required_reason(path: &str) -> String {
    format!("required field '{path}' is missing or null")
}

/// The JSON text at `path` of each decoded message (null when missing or `null`); text that
/// is not UTF-8 rejects its row rather than being altered.
fn json_texts(messages: &[&[u8]], rows: &[u32], path: &[String], bad: &mut Vec<(usize, String)>) -> ArrayRef {
    let texts = rows.iter().enumerate().map(|(row, &r)| {
        let value = crate::rescue::raw_value(messages[r as usize], path)?;
        std::str::from_utf8(value).inspect_err(|_| bad.push((row, format!("json field '{}' is not valid UTF-8", path.join("."))))).ok()
    });
    Arc::new(StringArray::from_iter(texts))
}

fn strip_prefix(e: &ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").map(str::to_string).unwrap_or(s)
}

fn describe_arrow_error(e: &ArrowError) -> String {
    format!("invalid value: {}", strip_prefix(e))
}

mod flat;
mod run;
#[cfg(test)]
mod tests;

pub use run::DecodeRun;
