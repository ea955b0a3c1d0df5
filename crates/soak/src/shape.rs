//! The reference pipeline's shape as a configuration names it: which topics feed which raw
//! tables, and the join and merge outputs the soak checks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use pipeline_config::{PipelineConfig, TableConfig};

use crate::SoakError;

/// A table the soak reads back.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// Its name in the configuration.
    pub name: String,
    /// Its location.
    pub location: String,
}

impl From<&TableConfig> for Table {
    fn from(t: &TableConfig) -> Self {
        Self { name: t.name.clone(), location: t.location.clone() }
    }
}

/// The topics and tables of a reference pipeline.
#[derive(Debug, Clone)]
pub(crate) struct Shape {
    pub brokers: String,
    pub orders_topic: String,
    pub members_topic: String,
    /// The raw orders (the join's left input).
    pub orders: Table,
    /// The raw membership changes (the join's right input).
    pub members: Table,
    /// The join's output.
    pub curated: Table,
    /// The merge's target.
    pub processed: Table,
    /// Object-store options of the lake.
    pub storage: BTreeMap<String, String>,
    /// The join's bounds: an order matches membership changes `lower..=upper` seconds older.
    pub join_bounds_seconds: (i64, i64),
}

/// One maintenance command and how often it runs.
#[derive(Debug, Clone)]
pub(crate) struct Scheduled {
    pub every: Duration,
    pub args: Vec<String>,
}

impl Shape {
    /// Reads the configuration; it must have raw-append, stream-join and merge-upsert sections
    /// wired as the reference pipeline (topics → raw tables → join → merge).
    pub fn load(path: &Path) -> Result<Self, SoakError> {
        let config = PipelineConfig::load(path)?;
        let shape_error = |message: &str| SoakError::Shape { config: path.display().to_string(), message: message.to_string() };
        let raw = config.raw_append.as_ref().ok_or_else(|| shape_error("no [raw_append] section"))?;
        let join = config.stream_join.as_ref().ok_or_else(|| shape_error("no [stream_join] section"))?;
        let merge = config.merge_upsert.as_ref().ok_or_else(|| shape_error("no [merge_upsert] section"))?;
        let topic_of = |table: &TableConfig| raw.sources.iter().find(|s| s.table.name == table.name).map(|s| s.name.clone());
        let orders_topic = topic_of(&join.left.table).ok_or_else(|| shape_error("no raw_append source feeds the join's left table"))?;
        let members_topic = topic_of(&join.right.table).ok_or_else(|| shape_error("no raw_append source feeds the join's right table"))?;
        if merge.source.name != join.output.name {
            return Err(shape_error("merge_upsert.source is not the join's output"));
        }
        Ok(Self {
            brokers: config.kafka.brokers.clone(),
            orders_topic,
            members_topic,
            orders: (&join.left.table).into(),
            members: (&join.right.table).into(),
            curated: (&join.output).into(),
            processed: (&merge.target).into(),
            storage: config.lake.storage_options.clone(),
            join_bounds_seconds: (join.lower.micros / 1_000_000, join.upper.micros / 1_000_000),
        })
    }

    /// Creates the two topics (existing ones are kept).
    pub fn create_topics(&self, partitions: i32) -> Result<(), SoakError> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| SoakError::Options(e.to_string()))?;
        let topics = [self.orders_topic.as_str(), self.members_topic.as_str()];
        Ok(runtime.block_on(reference_data::create_topics(&self.brokers, &topics, partitions))?)
    }

    /// Maintenance as an operator schedules it: compaction of the raw, join and merge tables,
    /// their manifests, and a vacuum at the default retention.
    pub fn maintenance_schedule(&self) -> Vec<Scheduled> {
        let every =
            |secs, args: &[&str]| Scheduled { every: Duration::from_secs(secs), args: args.iter().map(|s| s.to_string()).collect() };
        let mut schedule = BTreeMap::new();
        for table in [&self.orders, &self.curated, &self.processed] {
            schedule.insert(format!("compact {}", table.name), every(12, &["compact", &table.name, "--min-commit-interval", "0s"]));
        }
        for table in [&self.curated, &self.processed] {
            schedule.insert(format!("manifest {}", table.name), every(9, &["manifest", &table.name]));
        }
        schedule.insert("vacuum".into(), every(30, &["vacuum", &self.orders.name]));
        schedule.into_values().collect()
    }
}
