//! The join resolved from the configuration: inputs, interval, output table and projection.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use delta_io::TableSpec;
use pipeline_config::{JoinSide, JoinType, PartitionSource, PartitionSpec, PipelineConfig, StreamJoinConfig, WatermarkPolicy};

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

/// The UTC microsecond timestamp type every timestamp column has.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl JoinSpec {
    /// Resolves a validated configuration.
    pub fn resolve(config: &PipelineConfig, job: &StreamJoinConfig) -> Self {
        let input = |i: &pipeline_config::JoinInput, side: JoinSide| {
            let table = config.table(&i.table).expect("validated");
            let mut wanted: Vec<String> = i.key.clone();
            wanted.push(i.time.clone());
            wanted.extend(job.columns.iter().filter_map(|c| c.source()).filter(|(s, _)| *s == side).map(|(_, c)| c.to_string()));
            let mut columns: Vec<String> = Vec::new();
            for c in wanted {
                if !columns.contains(&c) {
                    columns.push(c);
                }
            }
            InputSpec {
                name: i.table.clone(),
                location: config.table_location(&table.path),
                key: i.key.clone(),
                time: i.time.clone(),
                delay: i64::try_from(i.delay.0.as_micros()).unwrap_or(i64::MAX),
                columns,
            }
        };
        let out_table = config.table(&job.output).expect("validated");
        let output = TableSpec::configured(config, &job.output).expect("validated");
        let late = job.late_table.as_ref().map(|path| TableSpec {
            location: config.table_location(path),
            name: format!("{}_late", job.output),
            schema: late_schema(),
            partition_columns: Vec::new(),
            properties: Default::default(),
            storage: config.lake.storage_options.clone(),
        });
        Self {
            job_id: job.job_id.clone(),
            left: input(&job.left, JoinSide::Left),
            right: input(&job.right, JoinSide::Right),
            lower: job.lower.micros,
            upper: job.upper.micros,
            join_type: job.join_type,
            policy: job.watermark_policy,
            projection: job
                .columns
                .iter()
                .filter_map(|c| c.source().map(|(side, col)| (c.name.clone(), side, col.to_string())))
                .collect(),
            partitions: out_table.partitions.clone(),
            output,
            late,
            checkpoint: config.table_location(&job.checkpoint),
            storage: config.lake.storage_options.clone(),
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
        let derived: Vec<&str> = self.partitions.iter().filter(|p| p.source != PartitionSource::Column).map(|p| p.column.as_str()).collect();
        Arc::new(Schema::new(self.output.schema.fields().iter().filter(|f| !derived.contains(&f.name().as_str())).map(|f| f.as_ref().clone()).collect::<Vec<_>>()))
    }
}

/// Late rows: which side, the row as JSON, its event time, the watermark it missed, the batch.
pub fn late_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("side", DataType::Utf8, false),
        Field::new("row", DataType::Utf8, false),
        Field::new("event_time", timestamp_type(), true),
        Field::new("watermark", timestamp_type(), true),
        Field::new("batch", DataType::Int64, false),
    ]))
}
