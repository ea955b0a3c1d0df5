//! Why a maintenance operation failed.

use deltalake::DeltaTableError;

/// Failures of maintenance operations.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    /// delta-rs failed.
    #[error("delta table {table}: {source}")]
    Delta {
        /// Table location.
        table: String,
        /// delta-rs error.
        source: DeltaTableError,
    },
    /// Object store access failed.
    #[error("object store, {table}: {source}")]
    Store {
        /// Table location.
        table: String,
        /// Store error.
        source: deltalake::ObjectStoreError,
    },
    /// The request cannot be honoured as given (the message says what to change).
    #[error("{0}")]
    Refused(String),
    /// Reading, writing or committing data files failed (not the request's fault).
    #[error("{0}")]
    Failed(String),
}

impl MaintenanceError {
    pub(crate) fn delta(table: &str) -> impl FnOnce(DeltaTableError) -> Self + '_ {
        move |source| Self::Delta { table: table.to_string(), source }
    }

    pub(crate) fn store(table: &str) -> impl FnOnce(deltalake::ObjectStoreError) -> Self + '_ {
        move |source| Self::Store { table: table.to_string(), source }
    }
}
