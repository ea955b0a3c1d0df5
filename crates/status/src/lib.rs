//! `lakectl status`: the pipeline at a glance. Per table what its log says (version, files,
//! rows and bytes from the file statistics, partitions, the small files compaction would merge,
//! the last commit); per job how far behind it is (raw-append: messages between each partition's
//! committed offset and the broker's high watermark; stream-join and merge-upsert: source
//! versions not read yet, watermarks). No data file is read. Thresholds turn it into a gate.
//! `lakectl report` draws the same, and each table's history, into one HTML file.

mod error;
mod history;
mod jobs;
mod processes;
mod render;
mod report;
mod svg;
mod tables;
mod thresholds;

use serde::Serialize;

pub use error::StatusError;
pub use jobs::{IncrementalStatus, PartitionLag, RawAppendStatus, SourceLag};
pub use processes::ProcessStatus;
pub use render::render;
pub use report::html as report_html;
pub use tables::TableStatus;
pub use thresholds::{Breach, Thresholds};

use pipeline_config::PipelineConfig;

/// Everything `lakectl status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    /// Each configured table.
    pub tables: Vec<TableStatus>,
    /// raw-append, when configured.
    pub raw_append: Option<RawAppendStatus>,
    /// stream-join and merge-upsert, when configured.
    pub incremental: Vec<IncrementalStatus>,
    /// Running jobs, from the heartbeat files given.
    pub processes: Vec<ProcessStatus>,
    /// Thresholds crossed.
    pub breaches: Vec<Breach>,
}

/// Gathers the status of `config`'s tables (only `table` when given), jobs, and the processes
/// whose heartbeat files are given.
pub async fn gather(
    config: &PipelineConfig,
    table: Option<&str>,
    heartbeats: &[std::path::PathBuf],
    thresholds: &Thresholds,
) -> Result<PipelineStatus, StatusError> {
    if let Some(name) = table.filter(|n| !config.tables.contains_key(*n)) {
        return Err(StatusError::UnknownTable(name.to_string()));
    }
    let mut tables = Vec::new();
    for (name, t) in config.tables.iter().filter(|(n, _)| table.is_none_or(|only| only == n.as_str())) {
        tables.push(tables::status(name, t, &config.lake.storage_options).await?);
    }
    let raw_append = match &config.raw_append {
        Some(job) if table.is_none() => Some(jobs::raw_append(config, job).await?),
        _ => None,
    };
    let incremental = if table.is_none() { jobs::incremental(config).await? } else { Vec::new() };
    let processes = processes::read_all(heartbeats, job_runtime::now_ms());
    let mut status = PipelineStatus { tables, raw_append, incremental, processes, breaches: Vec::new() };
    status.breaches = thresholds.check(&status);
    Ok(status)
}
