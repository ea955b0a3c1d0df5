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
    /// A Glue Data Catalog call failed (the message holds the service's error code, such as
    /// `AccessDeniedException` when the role lacks `glue:<operation>`).
    #[error("glue {operation}: {}", aws_sdk_glue::error::DisplayErrorContext(source.as_ref()))]
    Catalog {
        /// The Glue operation (as named in IAM).
        operation: &'static str,
        /// The SDK's error, or the batch entry's error detail.
        source: Box<dyn std::error::Error + Send + Sync>,
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

    pub(crate) fn catalog<E: std::error::Error + Send + Sync + 'static>(operation: &'static str) -> impl FnOnce(E) -> Self {
        move |source| Self::Catalog { operation, source: Box::new(source) }
    }

    pub(crate) fn store(table: &str) -> impl FnOnce(deltalake::ObjectStoreError) -> Self + '_ {
        move |source| Self::Store { table: table.to_string(), source }
    }
}
