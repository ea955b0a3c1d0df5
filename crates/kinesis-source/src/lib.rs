//! Reading Amazon Kinesis Data Streams for raw-append: the shard graph read parents before
//! children ([`shards`]), per-shard progress a Delta `txn` can carry ([`position`]), KPL
//! aggregated records expanded ([`kpl`]), and a GetRecords reader within Kinesis's limits
//! ([`reader`]).

pub mod kpl;
pub mod position;
pub mod reader;
pub mod shards;

pub use position::{configured_start, ShardPosition, StartAt};
pub use reader::{KinesisError, KinesisReader, KinesisRecord, ReadStats, ShardCursor, MAX_RECORDS_PER_CALL};
pub use shards::{expired_unread, readable, shard_id, shard_number, ShardInfo, ShardState};
