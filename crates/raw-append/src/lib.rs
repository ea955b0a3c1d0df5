//! raw-append (DESIGN §4): Kafka JSON topics into Delta tables, exactly-once.
//!
//! Each batch commits, per target table, the Parquet files of its rows together with one `txn`
//! action per source partition (`<job-id>:<topic>:<partition>`, version = last offset included).
//! Rejected messages go to the dead-letter table first, under the same app ids, so that a
//! restart from the main table's progress re-reads them and the dead-letter table's own
//! progress filters what it already holds.

mod batch;
mod dead_letter;
mod error;
mod events;
mod handover;
mod job;
mod routes;
mod table_rows;

pub use error::RawAppendError;
pub use job::RawAppend;
pub use routes::Route;
