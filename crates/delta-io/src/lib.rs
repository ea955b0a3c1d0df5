//! Delta Lake access for the jobs: table locations (local or `s3://`), open-or-create with a
//! schema check, Parquet file writing, and append commits that carry `txn` progress.

mod commit;
mod error;
mod files;
mod guarded;
mod location;
mod overlap;
mod partitions;
mod path_limits;
mod rewrite;
mod sidecar;
mod table;
mod writer;

pub use commit::{read_progress, AppendCommit, CommitError, CommitOutcome, CommitParts, MovedProgress, WithCommitParts};
pub use error::DeltaIoError;
pub use files::{decode_data_file, read_data_file};
pub use guarded::{GuardedTxn, ProgressTable};
pub use location::{object_store_at, storage_options, table_url};
pub use overlap::{overlap, Overlap, ReadSet, Reads};
pub use partitions::{format_timestamps, with_derived_partitions, write_derived_partition_runs, write_partition_runs};
pub use path_limits::{partition_path_problem, segment_bytes, MAX_KEY_BYTES, MAX_SEGMENT_BYTES};
pub use rewrite::{commit_rewrite, MergeCommit};
pub use sidecar::{Sidecar, SIDECAR_FOLDER};
pub use table::{add_nullable_columns, open_existing, open_if_exists, open_or_create, open_table, table_handle, TableSpec};
pub use writer::{write_files, writer_properties, TableWriter, STATS_COLUMNS};

pub use deltalake::kernel::{Add, Transaction};
pub use deltalake::DeltaTable;
