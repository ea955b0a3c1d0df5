//! One decoding fed a message at a time: the flat path (see `flat`) reads or rejects what it
//! can judge exactly; arrow-json decodes the rest, up to [`CHUNK`] accepted messages per
//! flush, and malformed ones are rejected on the way without costing their neighbours.

use arrow::compute::{concat_batches, interleave_record_batch};
use arrow::record_batch::RecordBatch;
use arrow_json::reader::Decoder;

use super::flat::{FlatOutcome, FlatRows};
use super::{describe_arrow_error, strip_prefix, DecodeError, Decoded, MessageDecoder, Reject};

/// Messages are decoded this many at a time (one flush per chunk unless a value has the wrong type).
const CHUNK: usize = 4096;
/// Records a probe decoder checks before it is replaced (small: it is replaced after every
/// malformed message).
const PROBE: usize = 64;
/// A decoder that held more message bytes than this at once is not kept as a spare (its
/// buffers stay that large).
const SPARE_MAX_BYTES: usize = 32 << 20;
/// Why a message that ends inside a value is rejected.
pub(super) const TRUNCATED: &str = "malformed JSON: truncated value";

/// Messages being decoded into rows of one table schema, each given with its index in the
/// caller's input (rows and rejects refer to those indexes).
pub struct DecodeRun<'d, 'm> {
    schema: &'d MessageDecoder,
    /// Rows of the messages the flat path read (the others go to arrow-json).
    flat: Option<FlatRows<'d, 'm>>,
    decoder: Decoder,
    /// After a malformed message, a small decoder that checks the rest of the chunk (cheap to
    /// replace); the good messages are then fed to a fresh `decoder` once, at the flush.
    probe: Option<Decoder>,
    /// Once a message has failed the decoder, later ones the flat path leaves to arrow-json
    /// are first checked for ending inside a value (a cheap scan): truncated messages, the
    /// usual kind of a dirty producer, then cost no fresh decoder and no second decode of
    /// their chunk.
    prescan: bool,
    /// Messages fed since the last flush: index and bytes.
    pending: Vec<(u32, &'m [u8])>,
    /// The most message bytes any flush held.
    peak_bytes: usize,
    wire_batches: Vec<RecordBatch>,
    rows: Vec<u32>,
    rejects: Vec<Reject>,
}

impl<'d, 'm> DecodeRun<'d, 'm> {
    pub(super) fn new(schema: &'d MessageDecoder) -> Result<Self, DecodeError> {
        Ok(Self {
            schema,
            flat: schema.flat.as_ref().map(FlatRows::new),
            decoder: schema.chunk_decoder(CHUNK + 1)?,
            probe: None,
            prescan: false,
            pending: Vec::new(),
            peak_bytes: 0,
            wire_batches: Vec::new(),
            rows: Vec::new(),
            rejects: Vec::new(),
        })
    }

    /// Feeds message `index`; it becomes exactly one row or one [`Reject`].
    pub fn push(&mut self, index: u32, msg: &'m [u8]) -> Result<(), DecodeError> {
        if let Some(reason) = self.scan(msg) {
            // Caught before the decoder saw a byte of it: nothing to replace.
            self.rejects.push(Reject { index: index as usize, reason });
            return Ok(());
        }
        match self.flat.as_mut().map(|flat| flat.push(index, msg)) {
            Some(FlatOutcome::Row) => return Ok(()),
            Some(FlatOutcome::Reject(reason)) => {
                self.rejects.push(Reject { index: index as usize, reason });
                return Ok(());
            }
            Some(FlatOutcome::General) | None => {}
        }
        // Only here: a message the flat path judged is whole, and the scan costs a walk.
        if self.prescan && ends_inside_a_value(msg) {
            self.rejects.push(Reject { index: index as usize, reason: TRUNCATED.into() });
            return Ok(());
        }
        let target = self.probe.as_mut().unwrap_or(&mut self.decoder);
        match feed_one(target, msg) {
            Ok(()) => self.pending.push((index, msg)),
            Err(reason) => {
                // A malformed message may leave part of itself in the decoder, which must then
                // be replaced: the rest of the chunk goes to a probe until the flush.
                self.rejects.push(Reject { index: index as usize, reason });
                self.probe = Some(self.schema.decoder_of(PROBE)?);
                self.prescan = true;
            }
        }
        if self.probe.as_ref().is_some_and(|p| p.len() >= PROBE) {
            self.probe = Some(self.schema.decoder_of(PROBE)?);
        }
        if self.pending.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// The rows and rejects of every message pushed; `messages[i]` is message `i` (for the
    /// columns copied as JSON text).
    pub fn finish(mut self, messages: &[&[u8]]) -> Result<Decoded, DecodeError> {
        self.flush()?;
        let DecodeRun { schema, flat, decoder, peak_bytes, wire_batches, rows, mut rejects, .. } = self;
        if peak_bytes <= SPARE_MAX_BYTES {
            // Flushed: empty, its buffers grown to a chunk's size.
            schema.keep_spare(decoder);
        }
        let wire = concat_batches(&schema.wire_schema, &wire_batches)?;
        let general = schema.to_table_rows(messages, wire, rows, &mut rejects)?;
        let (batch, rows) = match flat {
            Some(flat) => in_input_order(flat.finish(&schema.table_schema)?, general)?,
            None => general,
        };
        rejects.sort_by_key(|r| r.index);
        Ok(Decoded { batch, rows, rejects })
    }

    /// Why `msg` is rejected by a check before decoding, if it is.
    fn scan(&self, msg: &[u8]) -> Option<String> {
        if let Some(reason) = self.schema.precheck(msg) {
            return Some(reason);
        }
        not_an_object(msg).map(str::to_string)
    }

    /// Flushes the messages fed since the last flush; when a value of the wrong type fails the
    /// flush, finds the culprits by halving.
    fn flush(&mut self) -> Result<(), DecodeError> {
        let pending = std::mem::take(&mut self.pending);
        self.peak_bytes = self.peak_bytes.max(pending.iter().map(|(_, msg)| msg.len()).sum());
        if self.probe.take().is_some() {
            self.decoder = self.schema.decoder_of(CHUNK + 1)?;
            for (_, msg) in &pending {
                self.decoder.decode(msg)?;
            }
        }
        match self.decoder.flush() {
            Ok(Some(batch)) => {
                self.wire_batches.push(batch);
                self.rows.extend(pending.iter().map(|(i, _)| *i));
            }
            Ok(None) => {}
            Err(_) => self.flush_halves(&pending)?,
        }
        Ok(())
    }

    /// Decodes and flushes `items`; a failing set is split in two until the messages with a
    /// wrong-typed value are found (O(bad · log n) flushes, not one per message).
    fn flush_halves(&mut self, items: &[(u32, &'m [u8])]) -> Result<(), DecodeError> {
        self.decoder = self.schema.decoder_of(CHUNK + 1)?;
        for (_, msg) in items {
            self.decoder.decode(msg)?;
        }
        match self.decoder.flush() {
            Ok(Some(batch)) => {
                self.wire_batches.push(batch);
                self.rows.extend(items.iter().map(|(i, _)| *i));
            }
            Ok(None) => {}
            Err(e) if items.len() == 1 => {
                self.rejects.push(Reject { index: items[0].0 as usize, reason: describe_arrow_error(&e) });
                self.decoder = self.schema.decoder_of(CHUNK + 1)?;
            }
            Err(_) => {
                let (first, second) = items.split_at(items.len() / 2);
                self.flush_halves(first)?;
                self.flush_halves(second)?;
            }
        }
        Ok(())
    }
}

/// The rows of both paths as one batch in input order (each path's rows are in input order).
fn in_input_order(
    (flat, flat_rows): (RecordBatch, Vec<u32>),
    (general, general_rows): (RecordBatch, Vec<u32>),
) -> Result<(RecordBatch, Vec<u32>), DecodeError> {
    if general_rows.is_empty() {
        return Ok((flat, flat_rows));
    }
    if flat_rows.is_empty() {
        return Ok((general, general_rows));
    }
    let mut order = Vec::with_capacity(flat_rows.len() + general_rows.len());
    let mut rows = Vec::with_capacity(order.capacity());
    let (mut f, mut g) = (0, 0);
    while f < flat_rows.len() || g < general_rows.len() {
        if g == general_rows.len() || (f < flat_rows.len() && flat_rows[f] < general_rows[g]) {
            order.push((0, f));
            rows.push(flat_rows[f]);
            f += 1;
        } else {
            order.push((1, g));
            rows.push(general_rows[g]);
            g += 1;
        }
    }
    Ok((interleave_record_batch(&[&flat, &general], &order)?, rows))
}

/// Why a message that does not start like a JSON object is rejected (None when it does).
fn not_an_object(msg: &[u8]) -> Option<&'static str> {
    match msg.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') | None => None,
        Some(_) => Some("malformed JSON: the message is not a JSON object"),
    }
}

/// True when a message (starting like an object) ends before its value does: an unclosed
/// string, object or array.
fn ends_inside_a_value(msg: &[u8]) -> bool {
    let start = msg.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(0);
    crate::scan::skip_value(msg, start).is_none()
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
        return Err(TRUNCATED.into());
    }
    match decoder.len() - expected_before {
        1 => Ok(()),
        0 => Err("empty message (no JSON value)".into()),
        n => Err(format!("message holds {n} JSON values; expected one object")),
    }
}
