//! Chunked arrow-json decoding with per-message rejection.

use std::sync::Arc;

use arrow::array::{make_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, StructArray};
use arrow::buffer::NullBuffer;
use arrow::compute::{concat_batches, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow_json::reader::{Decoder, ReaderBuilder};
use pipeline_config::{ColumnType, TableSchema};

use crate::numbers::{convert_numbers, NumberKind};
use crate::TimestampParser;

/// Messages are decoded this many at a time (one flush per chunk unless a value has the wrong type).
const CHUNK: usize = 4096;
/// Records a probe decoder checks before it is replaced (small: it is replaced after every
/// malformed message).
const PROBE: usize = 64;

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
}

/// The exact-number conversion of a numeric column type.
fn number_kind(column: ColumnType) -> Option<NumberKind> {
    Some(match column {
        ColumnType::Long => NumberKind::Long,
        ColumnType::Integer => NumberKind::Integer,
        ColumnType::Short => NumberKind::Short,
        ColumnType::Double => NumberKind::Double,
        ColumnType::Float => NumberKind::Float,
        ColumnType::Decimal(p, s) => NumberKind::Decimal(p, s),
        _ => return None,
    })
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
}

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
                other => match number_kind(other) {
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
        }
    }

    /// The schema of decoded batches.
    pub fn table_schema(&self) -> &SchemaRef {
        &self.table_schema
    }

    fn new_decoder(&self) -> Result<Decoder, ArrowError> {
        self.decoder_of(CHUNK + 1)
    }

    /// A decoder with room for `rows` records (its buffers are sized for them up front).
    fn decoder_of(&self, rows: usize) -> Result<Decoder, ArrowError> {
        // Numbers reach numeric columns as their text (converted exactly afterwards); string
        // columns likewise keep a number's or boolean's JSON text.
        ReaderBuilder::new(self.wire_schema.clone()).with_batch_size(rows).with_coerce_primitive(true).build_decoder()
    }

    /// Decodes `messages`; each becomes exactly one row or one [`Reject`].
    pub fn decode(&self, messages: &[&[u8]]) -> Result<Decoded, DecodeError> {
        let mut rejects = Vec::new();
        let mut wire_batches = Vec::new();
        let mut rows: Vec<u32> = Vec::with_capacity(messages.len());
        let mut decoder = self.new_decoder()?;

        for (chunk_no, chunk) in messages.chunks(CHUNK).enumerate() {
            let mut run = ChunkRun { chunk, base: chunk_no * CHUNK, pending: Vec::with_capacity(chunk.len()) };
            // A malformed message may leave part of itself in the decoder, which must then be
            // replaced. After the first one, the rest of the chunk is checked with a small
            // probe decoder (cheap to replace), and the good messages are fed to a fresh
            // decoder once at the end: rejects cost about what accepted messages cost.
            let mut probe: Option<Decoder> = None;
            for (i, msg) in chunk.iter().enumerate() {
                if let Some(reason) = self.precheck(msg) {
                    rejects.push(Reject { index: run.base + i, reason });
                    continue;
                }
                if let Some(reason) = not_an_object(msg) {
                    // Caught before the decoder saw a byte of it: nothing to replace.
                    rejects.push(Reject { index: run.base + i, reason: reason.into() });
                    continue;
                }
                let target = probe.as_mut().unwrap_or(&mut decoder);
                match feed_one(target, msg) {
                    Ok(()) => run.pending.push(i),
                    Err(reason) => {
                        rejects.push(Reject { index: run.base + i, reason });
                        probe = Some(self.decoder_of(PROBE)?);
                    }
                }
                if probe.as_ref().is_some_and(|p| p.len() >= PROBE) {
                    probe = Some(self.decoder_of(PROBE)?);
                }
            }
            if probe.is_some() {
                decoder = self.new_decoder()?;
                for &j in &run.pending {
                    decoder.decode(chunk[j])?;
                }
            }
            self.flush_run(&mut decoder, &mut run, &mut wire_batches, &mut rows, &mut rejects)?;
        }

        let wire = concat_batches(&self.wire_schema, &wire_batches)?;
        let (batch, rows) = self.to_table_rows(messages, wire, rows, &mut rejects)?;
        rejects.sort_by_key(|r| r.index);
        Ok(Decoded { batch, rows, rejects })
    }

    /// Flushes the messages fed since the last flush; when a value of the wrong type fails the
    /// flush, finds the culprits by halving.
    fn flush_run(
        &self,
        decoder: &mut Decoder,
        run: &mut ChunkRun<'_>,
        wire_batches: &mut Vec<RecordBatch>,
        rows: &mut Vec<u32>,
        rejects: &mut Vec<Reject>,
    ) -> Result<(), DecodeError> {
        let pending = std::mem::take(&mut run.pending);
        let flushed = decoder.flush();
        match flushed {
            Ok(Some(batch)) => {
                wire_batches.push(batch);
                rows.extend(pending.iter().map(|&i| (run.base + i) as u32));
            }
            Ok(None) => {}
            Err(_) => {
                let mut out = Flushed { wire_batches, rows, rejects };
                self.flush_halves(decoder, run, &pending, &mut out)?;
            }
        }
        Ok(())
    }

    /// Decodes and flushes `items` of the chunk; a failing set is split in two until the
    /// messages with a wrong-typed value are found (O(bad · log n) flushes, not one per message).
    fn flush_halves(&self, decoder: &mut Decoder, run: &ChunkRun<'_>, items: &[usize], out: &mut Flushed<'_>) -> Result<(), DecodeError> {
        *decoder = self.new_decoder()?;
        for &i in items {
            decoder.decode(run.chunk[i])?;
        }
        match decoder.flush() {
            Ok(Some(batch)) => {
                out.wire_batches.push(batch);
                out.rows.extend(items.iter().map(|&i| (run.base + i) as u32));
            }
            Ok(None) => {}
            Err(e) if items.len() == 1 => {
                out.rejects.push(Reject { index: run.base + items[0], reason: describe_arrow_error(&e) });
                *decoder = self.new_decoder()?;
            }
            Err(_) => {
                let (first, second) = items.split_at(items.len() / 2);
                self.flush_halves(decoder, run, first, out)?;
                self.flush_halves(decoder, run, second, out)?;
            }
        }
        Ok(())
    }

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
                Conversion::Json => json_texts(messages, &rows, path),
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
            };
            if self.required[idx] && col.null_count() > 0 {
                let nulls = col.logical_nulls().expect("null_count > 0 implies a null buffer");
                bad.extend(
                    nulls
                        .iter()
                        .enumerate()
                        .filter(|(_, valid)| !valid)
                        .map(|(row, _)| (row, format!("required field '{}' is missing or null", path.join(".")))),
                );
            }
            columns.push(converted);
        }
        let batch = RecordBatch::try_new(self.table_schema.clone(), columns)?;
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

/// The JSON text at `path` of each decoded message (null when missing or `null`).
fn json_texts(messages: &[&[u8]], rows: &[u32], path: &[String]) -> ArrayRef {
    Arc::new(StringArray::from_iter(
        rows.iter().map(|&r| crate::rescue::raw_value(messages[r as usize], path).map(|v| String::from_utf8_lossy(v).into_owned())),
    ))
}

/// The messages of one chunk being decoded.
struct ChunkRun<'a> {
    chunk: &'a [&'a [u8]],
    /// Index of the chunk's first message in the input.
    base: usize,
    /// Messages fed to the decoder since its last flush.
    pending: Vec<usize>,
}

/// Where a chunk's flushes go.
struct Flushed<'a> {
    wire_batches: &'a mut Vec<RecordBatch>,
    rows: &'a mut Vec<u32>,
    rejects: &'a mut Vec<Reject>,
}

/// Why a message that does not start like a JSON object is rejected (None when it does).
fn not_an_object(msg: &[u8]) -> Option<&'static str> {
    match msg.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => None,
        Some(_) => Some("malformed JSON: the message is not a JSON object"),
    }
}

/// Feeds one message that starts like an object; it must add exactly one complete record
/// (anything else would fail the whole chunk's flush).
fn feed_one(decoder: &mut Decoder, msg: &[u8]) -> Result<(), String> {
    let expected_before = decoder.len();
    let consumed = decoder.decode(msg).map_err(|e| format!("malformed JSON: {}", strip_prefix(&e)))?;
    if consumed != msg.len() {
        // Only happens when the decoder's batch is full, which CHUNK rules out.
        return Err("message holds more JSON values than the decoder accepts at once".into());
    }
    if decoder.has_partial_record() {
        return Err("malformed JSON: truncated value".into());
    }
    match decoder.len() - expected_before {
        1 => Ok(()),
        0 => Err("empty message (no JSON value)".into()),
        n => Err(format!("message holds {n} JSON values; expected one object")),
    }
}

fn strip_prefix(e: &ArrowError) -> String {
    let s = e.to_string();
    s.strip_prefix("Json error: ").map(str::to_string).unwrap_or(s)
}

fn describe_arrow_error(e: &ArrowError) -> String {
    format!("invalid value: {}", strip_prefix(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMicrosecondArray};
    use pipeline_config::ColumnSpec;

    /// A column read from `json` (its own name when None).
    fn column(name: &str, json: Option<&str>, ty: &str, required: bool) -> ColumnSpec {
        ColumnSpec {
            name: name.into(),
            json_name: json.map(str::to_string),
            type_name: ty.into(),
            required,
            timestamp: Default::default(),
            column_type: ColumnType::parse(ty),
        }
    }

    fn order_schema() -> TableSchema {
        let col = |name: &str, ty: &str, required: bool| column(name, None, ty, required);
        TableSchema {
            columns: vec![
                col("order_id", "long", true),
                col("order_owner", "string", false),
                col("order_value", "long", false),
                col("timestamp", "timestamp", true),
            ],
        }
    }

    #[test]
    fn json_columns_keep_arrays_and_nested_documents_as_sent() {
        let col = |name: &str, json: &str, ty: &str, required: bool| column(name, Some(json), ty, required);
        let schema = TableSchema {
            columns: vec![
                col("order_id", "order_id", "long", true),
                col("items", "items", "json", true),
                col("tags", "meta.tags", "json", false),
                col("source", "meta.source", "string", false),
            ],
        };
        let d = MessageDecoder::new(&schema, 1 << 20);
        let msgs: Vec<&[u8]> = vec![
            br#"{"order_id": 1, "items": [{"sku": "a", "qty": 2}, {"sku": "b", "price": 1.50}], "meta": {"tags": {"x": [1, 2]}, "source": "web"}}"#,
            br#"{"order_id": 2, "items": [], "meta": {"source": "app"}}"#,
            br#"{"order_id": 3, "meta": {"tags": "plain"}}"#,
            br#"{"order_id": 4, "items": 12345678901234567890123}"#,
        ];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.rows, vec![0, 1, 3]);
        assert_eq!(out.rejects.len(), 1);
        assert!(out.rejects[0].reason.contains("required field 'items'"), "{:?}", out.rejects);
        let text = |c: usize| -> Vec<Option<String>> {
            let a = out.batch.column(c).as_any().downcast_ref::<StringArray>().unwrap();
            a.iter().map(|v| v.map(str::to_string)).collect()
        };
        assert_eq!(
            text(1),
            vec![
                Some(r#"[{"sku": "a", "qty": 2}, {"sku": "b", "price": 1.50}]"#.to_string()),
                Some("[]".to_string()),
                Some("12345678901234567890123".to_string()),
            ],
            "byte for byte: spacing, 1.50 and a number beyond any integer type stay as sent"
        );
        assert_eq!(text(2), vec![Some(r#"{"x": [1, 2]}"#.to_string()), None, None]);
        assert_eq!(text(3), vec![Some("web".to_string()), Some("app".to_string()), None]);
        assert_eq!(out.batch.schema().field(1).data_type(), &DataType::Utf8);
    }

    #[test]
    fn dotted_json_names_read_nested_fields_like_aws_dms_records() {
        let col = |name: &str, json: &str, ty: &str, required: bool| column(name, Some(json), ty, required);
        let schema = TableSchema {
            columns: vec![
                col("order_id", "data.order_id", "long", true),
                col("order_value", "data.order_value", "long", false),
                col("op", "metadata.operation", "string", false),
                col("seq", "metadata.timestamp", "timestamp", true),
            ],
        };
        let d = MessageDecoder::new(&schema, 1 << 20);
        let msgs: Vec<&[u8]> = vec![
            br#"{"data": {"order_id": 1, "order_value": 5}, "metadata": {"operation": "load", "timestamp": "2022-04-04T12:00:00.5Z", "table-name": "orders"}}"#,
            br#"{"data": {"order_id": 1}, "metadata": {"operation": "delete", "timestamp": "2022-04-04 12:00:01"}}"#,
            br#"{"data": null, "metadata": {"operation": "insert", "timestamp": "2022-04-04 12:00:02"}}"#,
            br#"{"data": {"order_id": 2, "order_value": 7}}"#,
        ];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.rows, vec![0, 1]);
        let reasons: Vec<&str> = out.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["required field 'data.order_id' is missing or null", "required field 'metadata.timestamp' is missing or null"]
        );
        let b = &out.batch;
        assert_eq!(b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values(), &[1, 1]);
        assert!(b.column(1).is_valid(0) && b.column(1).is_null(1));
        let ops = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((ops.value(0), ops.value(1)), ("load", "delete"));
        let seq = b.column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(seq.value(1) - seq.value(0), 500_000);
    }

    #[test]
    fn good_and_bad_messages_are_separated() {
        let d = MessageDecoder::new(&order_schema(), 200);
        let big = format!("{{\"order_id\": 1, \"pad\": \"{}\"}}", "x".repeat(300));
        let msgs: Vec<&[u8]> = vec![
            br#"{"order_id": 1, "order_owner": "alice", "order_value": 870, "timestamp": "2022-04-04 12:00:01"}"#,
            br#"{"order_id": 2, "order_owner": "bob""#,
            br#"{"order_id": "abc", "timestamp": "2022-04-04 12:00:01"}"#,
            br#"{"order_owner": "carol", "timestamp": "2022-04-04 12:00:01"}"#,
            br#"{"order_id": 5, "timestamp": "not a time"}"#,
            big.as_bytes(),
            br#"{"order_id": 7, "timestamp": "2022-04-04T12:00:02Z"}{"order_id": 8}"#,
            b"   ",
            br#"[1, 2]"#,
            br#"{"order_id": 10, "order_owner": null, "timestamp": "2022-04-04T12:00:03Z", "extra": {"nested": [1]}}"#,
        ];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.rows, vec![0, 9]);
        let rejected: Vec<usize> = out.rejects.iter().map(|r| r.index).collect();
        assert_eq!(rejected, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(out.rejects[2].reason.contains("required field 'order_id'"), "{:?}", out.rejects[2]);
        assert!(out.rejects[3].reason.contains("timestamp"), "{:?}", out.rejects[3]);
        assert!(out.rejects[4].reason.contains("max_message_bytes"));
        let ids = out.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values(), &[1, 10]);
        let ts = out.batch.column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!(ts.value(0), 1_649_073_601_000_000);
        assert_eq!(out.batch.schema().field(3).data_type(), &ColumnType::Timestamp.arrow_type());
    }

    #[test]
    fn a_truncated_message_does_not_swallow_the_next() {
        let d = MessageDecoder::new(&order_schema(), 1 << 20);
        let msgs: Vec<&[u8]> = vec![br#"{"order_id": 1, "timestamp": "#, br#""2022-04-04 12:00:01"}"#];
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.batch.num_rows(), 0);
        assert_eq!(out.rejects.len(), 2);
    }

    #[test]
    fn many_chunks_keep_order() {
        let d = MessageDecoder::new(&order_schema(), 1 << 20);
        let owned: Vec<String> = (0..10_000)
            .map(|i| if i % 997 == 0 { "{bad".to_string() } else { format!(r#"{{"order_id": {i}, "timestamp": "2022-04-04 12:00:01"}}"#) })
            .collect();
        let msgs: Vec<&[u8]> = owned.iter().map(|s| s.as_bytes()).collect();
        let out = d.decode(&msgs).unwrap();
        assert_eq!(out.rejects.len(), 11);
        assert_eq!(out.batch.num_rows() + out.rejects.len(), 10_000);
        let ids = out.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert!(ids.values().iter().zip(&out.rows).all(|(id, row)| *id == *row as i64));
    }
}
