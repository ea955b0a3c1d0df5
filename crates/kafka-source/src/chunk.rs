//! What the reader hands over: per-partition chunks of contiguous payload bytes in a batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl PartitionKey {
    /// A key for `topic`/`partition`.
    pub fn new(topic: &str, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }

    /// `<job-id>:<topic>:<partition>`: the `txn` app id under which a job records how far it
    /// read this partition (the last offset committed).
    pub fn txn_app_id(&self, job_id: &str) -> String {
        format!("{job_id}:{}:{}", self.topic, self.partition)
    }
}

/// Where a manually assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The first available offset.
    Beginning,
    /// This offset.
    Offset(i64),
}

/// The messages of one partition in a batch, payloads stored back to back.
#[derive(Debug, Default)]
pub struct PartitionChunk {
    data: Vec<u8>,
    ends: Vec<u32>,
    /// Kafka offset of each message.
    pub offsets: Vec<i64>,
    /// Kafka timestamp of each message in epoch milliseconds (None when absent).
    pub timestamps: Vec<Option<i64>>,
    key_data: Vec<u8>,
    key_ends: Vec<u32>,
    key_null: Vec<bool>,
    /// Kinesis sources: each record's sequence number and sub-sequence number (the offsets
    /// are then per-shard record counters).
    sequences: Vec<(String, u64)>,
}

impl PartitionChunk {
    /// An empty chunk with room for about `messages` messages of `bytes` payload bytes in all,
    /// so filling it does not copy its buffers again as they grow.
    pub fn with_capacity(messages: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(messages),
            offsets: Vec::with_capacity(messages),
            timestamps: Vec::with_capacity(messages),
            key_data: Vec::new(),
            key_ends: Vec::with_capacity(messages),
            key_null: Vec::with_capacity(messages),
            sequences: Vec::new(),
        }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload of message `i` (empty for a null payload).
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// All payloads in order.
    pub fn payloads(&self) -> Vec<&[u8]> {
        (0..self.len()).map(|i| self.payload(i)).collect()
    }

    /// Key of message `i` (None for a null key).
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        if self.key_null[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] as usize };
        Some(&self.key_data[start..self.key_ends[i] as usize])
    }

    /// Kinesis sequence and sub-sequence number of message `i` (None for Kafka messages).
    pub fn sequence(&self, i: usize) -> Option<(&str, u64)> {
        self.sequences.get(i).map(|(s, sub)| (s.as_str(), *sub))
    }

    /// Offset of the last message.
    pub fn last_offset(&self) -> Option<i64> {
        self.offsets.last().copied()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Appends a message.
    pub fn push(&mut self, offset: i64, timestamp: Option<i64>, key: Option<&[u8]>, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len() as u32);
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
        self.key_data.extend_from_slice(key.unwrap_or_default());
        self.key_ends.push(self.key_data.len() as u32);
        self.key_null.push(key.is_none());
    }

    /// Appends a Kinesis user record: `counter` is its number in the shard (the offset),
    /// `arrival_ms` its approximate arrival time, `partition_key` the key.
    pub fn push_sequenced(&mut self, counter: i64, arrival_ms: Option<i64>, partition_key: &str, sequence: (&str, u64), payload: &[u8]) {
        self.push(counter, arrival_ms, Some(partition_key.as_bytes()), payload);
        self.sequences.push((sequence.0.to_string(), sequence.1));
    }
}

/// Messages read since the last commit, by partition.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Per-partition messages.
    pub chunks: BTreeMap<PartitionKey, PartitionChunk>,
    /// Total payload bytes.
    pub bytes: usize,
    /// Total messages.
    pub messages: usize,
    /// When the first message arrived.
    pub opened_at: Option<Instant>,
    /// High watermarks fetched while this batch was read (for consumer-lag figures).
    pub high_watermarks: Vec<(PartitionKey, i64)>,
}

impl RawBatch {
    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Drops the messages of `partitions` (revoked by a rebalance).
    pub fn drop_partitions(&mut self, partitions: &BTreeSet<(String, i32)>) {
        self.retain_partitions(|k| !partitions.contains(&(k.topic.to_string(), k.partition)));
    }

    /// Keeps the messages of the partitions `keep` accepts.
    pub fn retain_partitions(&mut self, keep: impl Fn(&PartitionKey) -> bool) {
        self.chunks.retain(|k, chunk| {
            let kept = keep(k);
            if !kept {
                self.bytes -= chunk.bytes();
                self.messages -= chunk.len();
            }
            kept
        });
    }
}

/// The room a partition's new chunk starts with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkSize {
    pub(crate) messages: usize,
    pub(crate) bytes: usize,
}

impl ChunkSize {
    /// Each of `partitions` partitions' share of a slice of `messages` and `bytes`, with an
    /// eighth more for uneven partitions: a chunk that outgrows its room copies its buffers.
    pub(crate) fn share(messages: usize, bytes: usize, partitions: usize) -> Self {
        let share = |total: usize| {
            let even = total / partitions.max(1);
            even + even / 8
        };
        Self { messages: share(messages), bytes: share(bytes) }
    }

    pub(crate) fn chunk(self) -> PartitionChunk {
        PartitionChunk::with_capacity(self.messages, self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_starts_with_its_partitions_share_of_the_slice_and_an_eighth_more() {
        let size = ChunkSize::share(131_072, 16 << 20, 4);
        assert_eq!((size.messages, size.bytes), (36_864, 4_718_592));
        let alone = ChunkSize::share(1_000, 8_000, 0);
        assert_eq!((alone.messages, alone.bytes), (1_125, 9_000));
    }
}
