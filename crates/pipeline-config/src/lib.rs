//! Pipeline configuration: the TOML file in `schemas/`, the schema files it names, environment
//! overrides for deployment values, and validation at start with errors that name the key.

mod error;
mod model;
mod schema;
mod size;

pub use error::ConfigError;
pub use model::{
    DurationStr, KafkaConfig, LakeConfig, MetadataColumn, OnMissingOffsets, PartitionSource, PartitionSpec,
    PipelineConfig, RawAppendConfig, RawAppendSource, SaslMechanism, SecurityProtocol,
    TableConfig, Trigger, StreamJoinConfig, JoinInput, JoinType, WatermarkPolicy, JoinColumn, JoinSide, SignedDuration, MergeUpsertConfig, SchemaEvolution,
};
pub use schema::{ColumnSpec, ColumnType, EpochUnit, TableSchema, TimestampSpec};
pub use size::ByteSize;
