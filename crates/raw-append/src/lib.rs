//! raw-append (DESIGN §4): Kafka topics and Kinesis streams of JSON into Delta tables,
//! exactly-once.
//!
//! Each batch commits, per target table, the Parquet files of its rows together with one `txn`
//! action per source partition (`<job-id>:<topic>:<partition>`, version = last offset included;
//! for a Kinesis shard `<job-id>:<stream>:<shard number>`, version = the shard's record counter,
//! its Kinesis position kept beside the table, see [`shard_positions`]).
//! Rejected messages go to the dead-letter table first, under the same app ids, so that a
//! restart from the main table's progress re-reads them and the dead-letter table's own
//! progress filters what it already holds.

mod batch;
mod dead_letter;
mod dms;
mod error;
mod events;
mod feed;
mod handover;
mod job;
mod kinesis_feed;
mod routes;
pub mod shard_positions;
mod table_rows;

pub use error::RawAppendError;
pub use job::RawAppend;
pub use routes::Route;
