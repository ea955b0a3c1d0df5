//! stream-join: reads two Delta tables incrementally and appends their watermarked interval
//! join to a third, exactly once (DESIGN §4).
//!
//! Per batch `b`: plan each input's new commits, read their rows, drop rows at or below the
//! job watermark as late, join new rows against the other side's state and each other, advance
//! the watermarks, evict state no future row can match (emitting unmatched left rows for a
//! left-outer join), persist state and progress as pending, commit the output with
//! `txn(job_id, b)`, mark the batch done.

mod checkpoint;
mod error;
mod events;
mod interval;
mod job;
mod operator;
mod run;
mod spec;
mod watermark;

pub use error::StreamJoinError;
pub use job::StreamJoin;
