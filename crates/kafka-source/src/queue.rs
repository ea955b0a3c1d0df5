//! Taking messages from librdkafka: batched queue reads, single polls that serve rebalances,
//! and the errors messages carry.

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;

use crate::chunk::*;
use crate::{is_fatal, KafkaError, LakeContext};

///
/// `rust-rdkafka`'s `poll` returns one message per call and reads the clock several times
/// for it (so does librdkafka's single-message path); `rd_kafka_consume_batch_queue` pays that
/// once per batch. It serves non-message events through callbacks, which is safe for a
/// manually assigned consumer (no rebalances) unless the client refreshes OAUTHBEARER tokens:
/// rust-rdkafka handles those as events, not callbacks, so such clients poll one by one.
pub(crate) struct BatchQueue(NonNull<rdsys::rd_kafka_queue_t>);

// librdkafka queues are thread safe; the handle is only used by the reader's thread.
unsafe impl Send for BatchQueue {}

impl BatchQueue {
    pub(crate) fn of(consumer: &BaseConsumer<LakeContext>) -> Option<Self> {
        // SAFETY: the client pointer is valid for the consumer's lifetime; the returned queue
        // holds its own reference and is destroyed (before the consumer) in Drop.
        NonNull::new(unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) }).map(Self)
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: obtained from rd_kafka_queue_get_consumer and destroyed once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Messages taken per batched read.
pub(crate) const READ_BATCH: usize = 1024;

/// Poll timeout once every consumer of a multi-topic reader came back empty.
pub(crate) const MULTI_TOPIC_POLL: Duration = Duration::from_millis(10);

/// The error a consumed message carries, when retrying cannot fix it.
pub(crate) fn message_failure(code: rdkafka::error::RDKafkaErrorCode, topic: &str, partition: i32, offset: i64) -> Option<KafkaError> {
    use rdkafka::error::RDKafkaErrorCode as C;
    match code {
        C::AutoOffsetReset | C::OffsetOutOfRange => Some(KafkaError::OffsetOutOfRange(match partition {
            p if p >= 0 => format!("{topic}[{p}] at offset {offset}"),
            _ => topic.to_string(),
        })),
        code if is_fatal(code) => Some(KafkaError::Fatal(format!("{topic}[{partition}]: {code}"))),
        _ => None,
    }
}

/// One message (or event) through rust-rdkafka's poll, which also serves rebalances.
#[allow(clippy::too_many_arguments)] // the reader's loop state, borrowed piecewise
pub(crate) fn poll_one(
    consumer: &BaseConsumer<LakeContext>,
    context: &LakeContext,
    revocations_seen: &mut u64,
    topics: &mut HashMap<String, Arc<str>>,
    timeout: Duration,
    batch: &mut RawBatch,
    eofs: &mut Vec<i32>,
    new_chunk: ChunkSize,
) -> Polled {
    let polled = consumer.poll(timeout);
    // A rebalance runs inside poll: what was read before it may belong to partitions that are
    // no longer ours (a message this poll returned is already from the new assignment, so
    // drop before adding it).
    drop_revoked(context, batch, revocations_seen);
    match polled {
        None => Polled::Idle,
        Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
            eofs.push(partition);
            Polled::Eof
        }
        Some(Err(e)) => {
            if let Some(code) = e.rdkafka_error_code() {
                if let Some(failure) = message_failure(code, "a subscribed topic", -1, -1) {
                    return Polled::Failed(failure);
                }
            }
            tracing::warn!(error = %e, stage = "kafka_poll", "kafka poll error; librdkafka retries");
            Polled::Idle
        }
        Some(Ok(msg)) => {
            let topic = match topics.get(msg.topic()) {
                Some(t) => t.clone(),
                None => topics.entry(msg.topic().to_string()).or_insert_with(|| msg.topic().into()).clone(),
            };
            let key = PartitionKey { topic, partition: msg.partition() };
            let payload = msg.payload().unwrap_or_default();
            batch.messages += 1;
            batch.bytes += payload.len();
            batch.opened_at.get_or_insert_with(Instant::now);
            batch.chunks.entry(key).or_insert_with(|| new_chunk.chunk()).push(
                msg.offset(),
                msg.timestamp().to_millis(),
                msg.key(),
                payload,
            );
            Polled::Messages(1)
        }
    }
}

/// Up to `room` messages of `topic` from a [`BatchQueue`]; partitions whose end-of-partition
/// event was among them go to `eofs`.
#[allow(clippy::too_many_arguments)] // the reader's loop state, borrowed piecewise
pub(crate) fn read_batch(
    queue: &BatchQueue,
    topic: &Arc<str>,
    timeout: Duration,
    room: usize,
    buffer: &mut Vec<*mut rdsys::rd_kafka_message_t>,
    batch: &mut RawBatch,
    eofs: &mut Vec<i32>,
    new_chunk: ChunkSize,
) -> Polled {
    buffer.clear();
    let room = room.clamp(1, buffer.capacity());
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the buffer has room for `room` pointers; librdkafka writes at most that many.
    let read = unsafe { rdsys::rd_kafka_consume_batch_queue(queue.0.as_ptr(), timeout_ms, buffer.as_mut_ptr(), room) };
    let Ok(read) = usize::try_from(read) else {
        tracing::warn!(stage = "kafka_poll", "batched read failed; retrying");
        return Polled::Idle;
    };
    // SAFETY: librdkafka initialised the first `read` entries.
    unsafe { buffer.set_len(read) };
    let mut taken = 0usize;
    let mut failure = None;
    let mut current: Option<(i32, &mut PartitionChunk)> = None;
    for &ptr in buffer.iter() {
        // SAFETY: each pointer is a live message owned by us until destroyed below.
        let message = unsafe { &*ptr };
        if message.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            if message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                eofs.push(message.partition);
            } else {
                let error = rdkafka::error::RDKafkaErrorCode::from(message.err);
                if failure.is_none() {
                    failure = message_failure(error, topic, message.partition, message.offset);
                }
                tracing::warn!(error = %error, stage = "kafka_poll", "kafka poll error");
            }
        } else {
            // SAFETY: payload/key point to len/key_len bytes (or are null) while the message lives.
            let payload = unsafe { bytes(message.payload.cast(), message.len) }.unwrap_or_default();
            let key = unsafe { bytes(message.key.cast(), message.key_len) };
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a live message.
            let millis = unsafe { rdsys::rd_kafka_message_timestamp(ptr, &mut kind) };
            let timestamp = (kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && millis != -1).then_some(millis);
            // Consecutive messages mostly share a partition: look the chunk up only on a change.
            let chunk = match current.take() {
                Some((partition, chunk)) if partition == message.partition => chunk,
                _ => batch
                    .chunks
                    .entry(PartitionKey { topic: topic.clone(), partition: message.partition })
                    .or_insert_with(|| new_chunk.chunk()),
            };
            chunk.push(message.offset, timestamp, key, payload);
            current = Some((message.partition, chunk));
            batch.bytes += payload.len();
            taken += 1;
        }
        // SAFETY: each message is destroyed exactly once, after its last use.
        unsafe { rdsys::rd_kafka_message_destroy(ptr) };
    }
    buffer.clear();
    if taken > 0 {
        batch.messages += taken;
        batch.opened_at.get_or_insert_with(Instant::now);
    }
    if let Some(failure) = failure {
        return Polled::Failed(failure);
    }
    match (eofs.is_empty(), taken) {
        (false, _) => Polled::Eof,
        (true, 0) => Polled::Idle,
        (true, n) => Polled::Messages(n),
    }
}

/// `len` bytes at `ptr`, or None for a null pointer.
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes that outlive the returned slice.
pub(crate) unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// Drops from `batch` the messages of partitions revoked since the last check.
pub(crate) fn drop_revoked(context: &LakeContext, batch: &mut RawBatch, seen: &mut u64) {
    let now = context.revocations.load(Ordering::SeqCst);
    if now == *seen {
        return;
    }
    *seen = now;
    let revoked = context.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
    batch.drop_partitions(&revoked);
}

/// What one poll produced (the messages themselves are already in the batch, the partitions
/// that reported their end in the caller's list).
pub(crate) enum Polled {
    Idle,
    Eof,
    Messages(usize),
    /// An error retrying cannot fix (the run fails with it).
    Failed(KafkaError),
}
