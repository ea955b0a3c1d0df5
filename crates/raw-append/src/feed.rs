//! What the readers (Kafka's thread, Kinesis's task) hand the run loop, and the batch limits
//! they read to.

use std::time::Duration;

use kafka_source::{FillOutcome, PartitionKey, RawBatch};
use kinesis_source::ShardPosition;

use crate::RawAppendError;

/// A message from a reader to the run loop.
pub enum ReaderMsg {
    /// Messages read; `end_of_batch` closes the batch they belong to. `generation` is the
    /// re-read generation the reader was at when it started the slice.
    Slice { slice: RawBatch, outcome: FillOutcome, end_of_batch: bool, generation: u64, notes: SourceNotes },
    /// Nothing arrived for a while: the reader is alive and waiting (with the high watermarks
    /// it refreshed meanwhile, for the lag figures).
    Idle(Vec<(PartitionKey, i64)>),
    /// Partitions are being revoked: commit the batch in progress, then acknowledge.
    Flush(std::sync::mpsc::Sender<()>),
    /// Reading failed.
    Failed(RawAppendError),
}

/// What a Kinesis slice carries besides its records.
#[derive(Debug, Default)]
pub struct SourceNotes {
    /// The position of each shard's last record in the slice, and of shards found finished
    /// (read to the end of a closed shard, with or without new records).
    pub positions: Vec<(PartitionKey, ShardPosition)>,
    /// Reads throttled since the previous slice.
    pub throttles: u64,
    /// MillisBehindLatest of each shard read.
    pub millis_behind: Vec<(PartitionKey, i64)>,
}

/// Batch boundaries (a batch is one commit per table).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many messages...
    pub messages: usize,
    /// ...or payload bytes.
    pub bytes: usize,
    /// Continuous mode: commit at the latest this long after a batch's first message.
    pub interval: Option<Duration>,
}
