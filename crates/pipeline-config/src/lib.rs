//! Pipeline configuration: the TOML file in `schemas/`, the schema files it names, environment
//! and command-line overrides for deployment values, and validation at start with errors that
//! name the key. Each section owns its file form, defaults and checks, and resolves into the
//! validated type the jobs use (schemas loaded, table names resolved to tables).

mod checks;
mod dms;
mod error;
mod incremental;
mod kafka;
mod kinesis;
mod lake;
mod merge_upsert;
mod pipeline;
mod raw_append;
mod routing;
mod schema;
mod size;
mod stream_join;
mod tables;
mod values;

#[cfg(test)]
mod tests;

pub use dms::{SourceFormat, DMS_OPERATION_COLUMN, DMS_TIMESTAMP_COLUMN};
pub use error::ConfigError;
pub use incremental::IncrementalOptions;
pub use kafka::{KafkaConfig, SaslMechanism, SecurityProtocol};
pub use kinesis::{KinesisConfig, ShardAssignment, StartingPosition};
pub use lake::{LakeConfig, StoreConfig};
pub use merge_upsert::{MergeUpsertConfig, SchemaEvolution};
pub use pipeline::{ConfigOverrides, PipelineConfig, ENV_OVERRIDES};
pub use raw_append::{
    Flatten, MetadataColumn, NestedAs, OnMissingOffsets, RawAppendConfig, RawAppendSource, SourceKind, UnknownFields, RESCUED_DATA_COLUMN,
};
pub use routing::{table_name_problem, InferredTables, NameTemplate, Routing, TemplatePart, DMS_TABLE_TEMPLATE, MAX_TABLE_NAME};
pub use schema::{ColumnSpec, ColumnType, EpochUnit, TableSchema, TimestampSpec};
pub use size::ByteSize;
pub use stream_join::{JoinColumn, JoinInput, JoinSide, JoinType, StreamJoinConfig, WatermarkPolicy};
pub use tables::{AddedColumns, PartitionSource, PartitionSpec, TableConfig};
pub use values::{DurationStr, SignedDuration, Trigger};
