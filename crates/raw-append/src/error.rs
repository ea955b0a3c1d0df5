//! Why a raw-append run fails, and the exit code each failure maps to.

use delta_io::{CommitError, DeltaIoError};
use job_runtime::{ExitCode, ExitStatus};
use kafka_source::KafkaError;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RawAppendError {
    /// The configuration has no `[raw_append]` section.
    #[error("raw_append: section missing from the configuration; add [raw_append] with at least one source")]
    NotConfigured,
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
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
            Self::Kafka(KafkaError::OffsetsGone { .. } | KafkaError::OffsetOutOfRange(_)) => ExitCode::SourceDataGone,
            _ => ExitCode::Failure,
        }
    }
}
