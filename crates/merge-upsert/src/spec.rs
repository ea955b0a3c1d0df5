//! The job resolved from the configuration: source, target layout, side tables.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use delta_io::TableSpec;
use pipeline_config::{MergeUpsertConfig, PartitionSource, PartitionSpec, PipelineConfig, SchemaEvolution};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct MergeSpec {
    /// Job id: the `txn` app id on the target and side tables.
    pub job_id: String,
    /// Source table name in the configuration.
    pub source_name: String,
    /// Source location.
    pub source_location: String,
    /// Target table as configured (created on the first run).
    pub target: TableSpec,
    /// Target partitions (derived ones are computed from the row).
    pub partitions: Vec<PartitionSpec>,
    /// Key columns.
    pub key: Vec<String>,
    /// Sequence column.
    pub sequence: String,
    /// Operation column and the values that delete.
    pub operation: Option<(String, Vec<String>)>,
    /// Dead-letter table.
    pub dead_letter: TableSpec,
    /// Tombstone table path under the lake root (its name in summaries).
    pub tombstone_table: String,
    /// Tombstone table location.
    pub tombstone_location: String,
    /// Tombstone retention.
    pub tombstone_retention: Duration,
    /// What to do with new source columns.
    pub evolution: SchemaEvolution,
    /// Source columns the target never takes.
    pub ignore_columns: Vec<String>,
    /// Checkpoint folder location.
    pub checkpoint: String,
    /// Object-store options.
    pub storage: BTreeMap<String, String>,
}

impl MergeSpec {
    /// Resolves a validated configuration.
    pub fn resolve(config: &PipelineConfig, job: &MergeUpsertConfig) -> Self {
        let storage = &config.lake.storage_options;
        Self {
            job_id: job.incremental.job_id.clone(),
            source_name: job.source.name.clone(),
            source_location: job.source.location.clone(),
            target: TableSpec::configured(&job.target, storage),
            partitions: job.target.partitions.clone(),
            key: job.key.clone(),
            sequence: job.sequence.clone(),
            operation: job.operation.clone().map(|c| (c, job.delete_values.clone())),
            dead_letter: crate::dead_letter::table_spec(config.table_location(&job.dead_letter_table), storage.clone()),
            tombstone_table: job.tombstone_table.clone(),
            tombstone_location: config.table_location(&job.tombstone_table),
            tombstone_retention: job.tombstone_retention.0,
            evolution: job.schema_evolution,
            ignore_columns: job.ignore_columns.clone(),
            checkpoint: config.table_location(&job.incremental.checkpoint),
            storage: storage.clone(),
        }
    }

    /// Names of the target's derived partition columns (computed, never read from the source).
    pub fn derived_partitions(&self) -> Vec<&str> {
        self.partitions.iter().filter(|p| p.source != PartitionSource::Column).map(|p| p.column.as_str()).collect()
    }
}

/// How the target's rows are laid out now (its schema may have grown since creation).
#[derive(Debug, Clone)]
pub struct TargetLayout {
    /// Columns taken from the source, in target order (no derived partition columns).
    pub data: SchemaRef,
    /// `data` followed by the derived partition columns: the schema files are written in.
    pub write: SchemaRef,
    /// What the source is read as: `data` plus the operation column when the target lacks it.
    pub input: SchemaRef,
    /// Partition columns in directory order.
    pub partition_columns: Vec<String>,
}

impl TargetLayout {
    /// The layout of a target table whose current schema is `table_schema`.
    pub fn new(spec: &MergeSpec, table_schema: &Schema, source_schema: &Schema) -> Self {
        let derived = spec.derived_partitions();
        let data: Vec<Field> =
            table_schema.fields().iter().filter(|f| !derived.contains(&f.name().as_str())).map(|f| f.as_ref().clone()).collect();
        let mut write = data.clone();
        write.extend(derived.iter().filter_map(|d| table_schema.field_with_name(d).ok().cloned()));
        let mut input = data.clone();
        if let Some((op, _)) = &spec.operation {
            if !input.iter().any(|f| f.name() == op) {
                let op_type = source_schema.field_with_name(op).map(|f| f.data_type().clone()).unwrap_or(DataType::Utf8);
                input.push(Field::new(op, op_type, true));
            }
        }
        Self {
            data: Arc::new(Schema::new(data)),
            write: Arc::new(Schema::new(write)),
            input: Arc::new(Schema::new(input)),
            partition_columns: spec.target.partition_columns.clone(),
        }
    }
}
