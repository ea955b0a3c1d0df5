//! Why Delta table access failed; every variant names the table or file and keeps its source.

use arrow::error::ArrowError;
use deltalake::{DeltaTableError, ObjectStoreError};

/// Failures of Delta table access.
#[derive(Debug, thiserror::Error)]
pub enum DeltaIoError {
    /// A location is not a URL we can use.
    #[error("table location {location}: {source}")]
    BadUrl {
        /// The location as configured.
        location: String,
        /// The parser's error.
        source: url::ParseError,
    },
    /// A local table folder cannot be created or resolved.
    #[error("table folder {location}: {source}")]
    LocalFolder {
        /// The folder.
        location: String,
        /// The file system's error.
        source: std::io::Error,
    },
    /// delta-rs failed (log, snapshot, commit or store set-up).
    #[error("delta table {table}: {source}")]
    Delta {
        /// Table location.
        table: String,
        /// delta-rs error (boxed: it is large, and every job error carries this one).
        source: Box<DeltaTableError>,
    },
    /// Reading an object of the store failed.
    #[error("{table}: data file {path}: {source}")]
    Store {
        /// Table location.
        table: String,
        /// The file, relative to the table.
        path: String,
        /// The object store's error.
        source: Box<ObjectStoreError>,
    },
    /// A data file could not be decoded.
    #[error("{table}: data file {path}: {source}")]
    DataFile {
        /// Table location.
        table: String,
        /// The file, relative to the table.
        path: String,
        /// Arrow/Parquet's error.
        source: ArrowError,
    },
    /// Rows could not be grouped or converted (a step named by `step`).
    #[error("{step}: {source}")]
    Arrow {
        /// What was being done.
        step: &'static str,
        /// Arrow's error.
        source: ArrowError,
    },
    /// A file-writing task panicked or was cancelled.
    #[error("a file writer failed: {0}")]
    WriterTask(#[from] tokio::task::JoinError),
    /// The table neither existed nor could be created.
    #[error("{table}: table could not be created: {source}")]
    NotCreated {
        /// Table location.
        table: String,
        /// Why the create failed.
        source: Box<DeltaTableError>,
    },
    /// A commit in the table's log is not valid JSON.
    #[error("{table}: log entry of version {version}: {source}")]
    LogEntry {
        /// Table location.
        table: String,
        /// The commit.
        version: u64,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The existing table does not match the configured schema.
    #[error("table {table} exists with a different schema: {detail}. Migrate the table or fix the schema file")]
    SchemaMismatch {
        /// Table location.
        table: String,
        /// What differs.
        detail: String,
    },
}

impl DeltaIoError {
    /// Maps a delta-rs error on `table`.
    pub fn delta(table: &str) -> impl FnOnce(DeltaTableError) -> Self + '_ {
        move |source| Self::Delta { table: table.to_string(), source: Box::new(source) }
    }

    /// Maps an Arrow error of the step `step`.
    pub fn arrow(step: &'static str) -> impl Fn(ArrowError) -> Self + Copy {
        move |source| Self::Arrow { step, source }
    }
}
