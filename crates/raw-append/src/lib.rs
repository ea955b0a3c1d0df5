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
//!
//! A routed source (`route = { ... }`) splits its messages into many tables ([`router`]): each
//! routed table commits its rows with the txn of the partitions they came from (a floor: a
//! re-read skips what it holds, compare-and-set against concurrent writers), and the source's
//! progress is committed last, to a table of its own, which is where a partition resumes from.

mod batch;
mod dead_letter;
mod dms;
mod error;
mod events;
mod evolution;
mod feed;
mod handover;
mod job;
mod kinesis_feed;
mod router;
mod routes;
pub mod shard_positions;
mod sinks;
mod table_rows;

pub use error::RawAppendError;
pub use job::RawAppend;
pub use routes::Route;
