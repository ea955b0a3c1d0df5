//! The join resolved from the configuration: inputs, interval, output table and projection.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use delta_io::TableSpec;
use pipeline_config::{
    ColumnType, JoinColumn, JoinInput, JoinSide, JoinType, PartitionSource, PartitionSpec, PipelineConfig, StreamJoinConfig,
    WatermarkPolicy,
};

/// One input.
#[derive(Debug, Clone)]
pub struct InputSpec {
    /// Table name in the configuration.
    pub name: String,
    /// Table location.
    pub location: String,
    /// Key columns.
    pub key: Vec<String>,
    /// Event-time column.
    pub time: String,
    /// Watermark delay in microseconds.
    pub delay: i64,
    /// Columns the job keeps from this side (keys, time, projected), in table order.
    pub columns: Vec<String>,
}

impl InputSpec {
    fn resolve(input: &JoinInput, side: JoinSide, projection: &[JoinColumn]) -> Self {
        let projected = projection.iter().filter_map(|c| c.source()).filter(|(s, _)| *s == side).map(|(_, c)| c);
        let mut columns: Vec<String> = Vec::new();
        for c in input.key.iter().map(String::as_str).chain(std::iter::once(input.time.as_str())).chain(projected) {
            if !columns.iter().any(|x| x == c) {
                columns.push(c.to_string());
            }
        }
        Self {
            name: input.table.name.clone(),
            location: input.table.location.clone(),
            key: input.key.clone(),
            time: input.time.clone(),
            delay: i64::try_from(input.delay.0.as_micros()).unwrap_or(i64::MAX),
            columns,
        }
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    /// The job id (sink txn app id).
    pub job_id: String,
    /// Left input.
    pub left: InputSpec,
    /// Right input.
    pub right: InputSpec,
    /// Interval bounds in microseconds: `left.t BETWEEN right.t + lower AND right.t + upper`.
    pub lower: i64,
    /// See `lower`.
    pub upper: i64,
    /// Join type.
    pub join_type: JoinType,
    /// Watermark policy.
    pub policy: WatermarkPolicy,
    /// Output columns: name and source.
    pub projection: Vec<(String, JoinSide, String)>,
    /// Output partitions derived from output timestamp columns.
    pub partitions: Vec<PartitionSpec>,
    /// The output table.
    pub output: TableSpec,
    /// The late-rows table, when configured.
    pub late: Option<TableSpec>,
    /// Checkpoint folder location.
    pub checkpoint: String,
    /// Object-store options.
    pub storage: std::collections::BTreeMap<String, String>,
}

impl JoinSpec {
    /// Resolves a validated configuration.
    pub fn resolve(config: &PipelineConfig, job: &StreamJoinConfig) -> Self {
        let storage = &config.lake.storage_options;
        let late = job.late_table.as_ref().map(|path| TableSpec {
            location: config.table_location(path),
            name: format!("{}_late", job.output.name),
            schema: late_schema(),
            partition_columns: Vec::new(),
            properties: Default::default(),
            storage: storage.clone(),
        });
        Self {
            job_id: job.incremental.job_id.clone(),
            left: InputSpec::resolve(&job.left, JoinSide::Left, &job.columns),
            right: InputSpec::resolve(&job.right, JoinSide::Right, &job.columns),
            lower: job.lower.micros,
            upper: job.upper.micros,
            join_type: job.join_type,
            policy: job.watermark_policy,
            projection: job.columns.iter().filter_map(|c| c.source().map(|(side, col)| (c.name.clone(), side, col.to_string()))).collect(),
            partitions: job.output.partitions.clone(),
            output: TableSpec::configured(&job.output, storage),
            late,
            checkpoint: config.table_location(&job.incremental.checkpoint),
            storage: storage.clone(),
        }
    }

    /// The input of `side`.
    pub fn input(&self, side: JoinSide) -> &InputSpec {
        match side {
            JoinSide::Left => &self.left,
            JoinSide::Right => &self.right,
        }
    }

    /// The output schema without derived partition columns (what the join produces).
    pub fn joined_schema(&self) -> SchemaRef {
        let derived: Vec<&str> =
            self.partitions.iter().filter(|p| p.source != PartitionSource::Column).map(|p| p.column.as_str()).collect();
        Arc::new(Schema::new(
            self.output
                .schema
                .fields()
                .iter()
                .filter(|f| !derived.contains(&f.name().as_str()))
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>(),
        ))
    }
}

/// Late rows: which side, the row as JSON, its event time, the watermark it missed, the batch.
pub fn late_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("side", DataType::Utf8, false),
        Field::new("row", DataType::Utf8, false),
        Field::new("event_time", ColumnType::Timestamp.arrow_type(), true),
        Field::new("watermark", ColumnType::Timestamp.arrow_type(), true),
        Field::new("batch", DataType::Int64, false),
    ]))
}
