//! The failures every table-to-table job shares (Delta access, commits, reading its sources,
//! its checkpoint, building rows); each job's error wraps them beside its own.

use delta_io::{CommitError, DeltaIoError};

use crate::{ProgressError, SourceError};

/// A failure of the parts every table-to-table job shares.
#[derive(Debug, thiserror::Error)]
pub enum TableJobError {
    /// Delta access failed.
    #[error(transparent)]
    Delta(#[from] DeltaIoError),
    /// A commit did not land.
    #[error("commit: {0}")]
    Commit(#[from] CommitError),
    /// Reading a source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The checkpoint folder could not be used.
    #[error(transparent)]
    Checkpoint(#[from] ProgressError),
    /// Building rows failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
}

impl TableJobError {
    /// The source's data is gone or was replaced (exit 4 rather than 1).
    pub fn is_source_gone(&self) -> bool {
        matches!(self, Self::Source(e) if e.is_gone())
    }
}

/// Lets `?` turn each of [`TableJobError`]'s sources into `$error`, which must have a
/// `Table(TableJobError)` variant.
#[macro_export]
macro_rules! table_job_error_from {
    ($error:ty) => {
        $crate::table_job_error_from!(@one $error, delta_io::DeltaIoError);
        $crate::table_job_error_from!(@one $error, delta_io::CommitError);
        $crate::table_job_error_from!(@one $error, $crate::SourceError);
        $crate::table_job_error_from!(@one $error, $crate::ProgressError);
        $crate::table_job_error_from!(@one $error, arrow::error::ArrowError);
    };
    (@one $error:ty, $source:ty) => {
        impl From<$source> for $error {
            fn from(e: $source) -> Self {
                Self::Table($crate::TableJobError::from(e))
            }
        }
    };
}
