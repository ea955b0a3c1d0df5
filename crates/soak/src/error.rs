//! Why a soak could not run (a failed check is a report, not an error).

/// Why a soak could not run.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// Bad options.
    #[error("{0}")]
    Options(String),
    /// The configuration is not the reference pipeline's shape.
    #[error("{config}: {message}")]
    Shape {
        /// The configuration file.
        config: String,
        /// What is missing.
        message: String,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] pipeline_config::ConfigError),
    /// Kafka could not be reached.
    #[error("kafka: {0}")]
    Kafka(#[from] reference_data::ProduceError),
    /// A job could not be started.
    #[error("starting {job}: {source}")]
    Spawn {
        /// The job.
        job: String,
        /// Why.
        source: std::io::Error,
    },
    /// The pipeline's first runs failed (before any kill).
    #[error("first runs: {0}")]
    Start(String),
    /// The pipeline could not be drained after the kills.
    #[error("drain: {0}")]
    Drain(String),
    /// A table could not be read.
    #[error("reading {table}: {message}")]
    Read {
        /// The table.
        table: String,
        /// What failed.
        message: String,
    },
}
