//! Why the status could not be gathered.

/// Why the status could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// `--table` names no configured table.
    #[error("no table '{0}' in the configuration's [tables]")]
    UnknownTable(String),
    /// A table could not be read.
    #[error(transparent)]
    Delta(#[from] delta_io::DeltaIoError),
    /// A checkpoint folder could not be read.
    #[error(transparent)]
    Checkpoint(#[from] delta_source::ProgressError),
    /// The brokers could not be asked.
    #[error("kafka: {0}")]
    Kafka(#[from] kafka_source::KafkaError),
}
