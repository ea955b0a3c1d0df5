//! merge-upsert: reads a Delta table's new commits and keeps a target at exactly one row per
//! key, the latest by a sequence column, with CDC deletes and tombstones (DESIGN §4).
//!
//! Per batch: rows with a null key or sequence go to the dead-letter table; the rest are
//! reduced to the last change per key ([`changes`]); the target files that can hold those keys
//! are found from partition-free key statistics and read on two columns ([`merge`]); only files
//! with a row to replace or delete are rewritten; deletes leave tombstones ([`tombstones`]).

pub mod changes;
pub mod dead_letter;
mod error;
mod events;
mod job;
pub mod merge;
mod run;
pub mod spec;
pub mod tombstones;

pub use error::MergeUpsertError;
pub use job::MergeUpsert;
