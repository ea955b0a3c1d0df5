//! Why a raw-append run fails, and the exit code each failure maps to.

use delta_io::{CommitError, DeltaIoError};
use job_runtime::{ExitCode, ExitStatus};
use kafka_source::KafkaError;
use kinesis_source::KinesisError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RawAppendError {
    /// The configuration has no `[raw_append]` section.
    #[error("raw_append: section missing from the configuration; add [raw_append] with at least one source")]
    NotConfigured,
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Kinesis failed.
    #[error(transparent)]
    Kinesis(#[from] KinesisError),
    /// Shards this job started reading expired out of the stream's retention before it
    /// finished them.
    #[error(
        "kinesis stream {stream}: shards {shards:?} expired out of the stream's retention before this job read them to their end; \
         their unread records are gone. Set raw_append.on_missing_offsets = \"skip\" to go on without them (logged), or raise the stream's retention"
    )]
    ShardsExpired {
        /// The stream.
        stream: String,
        /// The shard ids.
        shards: Vec<String>,
    },
    /// A shard id without the number the progress is keyed by.
    #[error("kinesis stream {stream}: shard id {shard} does not end in a shard number below 2^31")]
    ShardId {
        /// The stream.
        stream: String,
        /// The shard id.
        shard: String,
    },
    /// The table's progress names a Kinesis position that cannot be read.
    #[error(
        "shard position {object} under the table's _lakehouse folder: {why}. The table's txn progress names it; \
         restore the _lakehouse folder from a backup (S3 versioning) of the table"
    )]
    PositionMissing {
        /// The object, relative to the table's `_lakehouse` folder.
        object: String,
        /// What is wrong with it.
        why: String,
    },
    /// A routed source's partition restarted its offsets (recreated topic) under `skip`.
    #[error(
        "topic {topic} partition {partition}: {reason}. The topic is routed: its routed tables keep the old offsets as \
         their progress and would hide the new ones. Write the recreated topic under a new raw_append.job_id (progress \
         starts afresh everywhere), or into new routed tables (route.path) and a new route.progress_path"
    )]
    RoutedSourceRestarted {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What the resume found.
        reason: String,
    },
    /// Delta access failed.
    #[error(transparent)]
    Delta(#[from] DeltaIoError),
    /// A commit did not land.
    #[error("commit: {0}")]
    Commit(#[from] CommitError),
    /// Building rows failed (a bug, not bad input: bad input goes to the dead-letter table).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Decoder failure (a bug, not bad input).
    #[error(transparent)]
    Decode(#[from] json_arrow::DecodeError),
    /// The reader thread or a worker stopped unexpectedly.
    #[error("internal: {0}")]
    Internal(String),
}

impl ExitStatus for RawAppendError {
    fn exit_code(&self) -> ExitCode {
        match self {
            Self::Kafka(KafkaError::OffsetsGone { .. } | KafkaError::OffsetOutOfRange(_))
            | Self::ShardsExpired { .. }
            | Self::RoutedSourceRestarted { .. } => ExitCode::SourceDataGone,
            Self::PositionMissing { .. } => ExitCode::CheckpointBehind,
            _ => ExitCode::Failure,
        }
    }
}
