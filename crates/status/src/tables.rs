//! A table's figures from its log alone: the active files' sizes, row counts (statistics) and
//! partitions, and its last commit.

use std::collections::{BTreeMap, HashMap};

use delta_io::open_if_exists;
use deltalake::DeltaTable;
use futures::TryStreamExt;
use pipeline_config::TableConfig;
use serde::Serialize;

use crate::StatusError;

/// Files smaller than compaction's default target size are candidates for it.
pub const SMALL_FILE_BYTES: i64 = 128 << 20;

/// One table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStatus {
    /// Its name in the configuration.
    pub name: String,
    /// Where it is.
    pub location: String,
    /// False before its first commit.
    pub exists: bool,
    /// Its version.
    pub version: Option<u64>,
    /// Active data files.
    pub files: u64,
    /// Rows, from the files' statistics (None when a file has none).
    pub rows: Option<u64>,
    /// Bytes of the active files.
    pub bytes: u64,
    /// Distinct partitions.
    pub partitions: u64,
    /// Files compaction would merge: small files in partitions holding two or more of them.
    pub small_files: u64,
    /// `small_files / files`.
    pub small_file_share: f64,
    /// When the last commit was made (RFC 3339) and what it was.
    pub last_commit: Option<(String, String)>,
}

/// The status of the table `name`.
pub(crate) async fn status(name: &str, table: &TableConfig, storage: &BTreeMap<String, String>) -> Result<TableStatus, StatusError> {
    let mut status = TableStatus { name: name.to_string(), location: table.location.clone(), ..Default::default() };
    let Some(loaded) = open_if_exists(&table.location, storage).await? else { return Ok(status) };
    status.exists = true;
    status.version = loaded.version();
    let files = file_figures(&loaded, &table.partition_columns())?;
    status.files = files.len() as u64;
    status.bytes = files.iter().map(|f| f.size.max(0) as u64).sum();
    status.rows = rows_of(&files);
    let mut small: HashMap<&Vec<Option<String>>, u64> = HashMap::new();
    for f in files.iter().filter(|f| f.size < SMALL_FILE_BYTES) {
        *small.entry(&f.partition).or_default() += 1;
    }
    status.partitions = files.iter().map(|f| &f.partition).collect::<std::collections::BTreeSet<_>>().len() as u64;
    status.small_files = small.values().filter(|n| **n >= 2).sum();
    status.small_file_share = if status.files == 0 { 0.0 } else { status.small_files as f64 / status.files as f64 };
    status.last_commit = last_commit(&loaded).await?;
    Ok(status)
}

/// Rows of a table, from its files' statistics (None when a file has none).
pub(crate) fn rows(table: &DeltaTable, partition_columns: &[String]) -> Result<Option<u64>, StatusError> {
    Ok(rows_of(&file_figures(table, partition_columns)?))
}

fn rows_of(files: &[FileFigures]) -> Option<u64> {
    files.iter().map(|f| f.rows).sum()
}

/// How a table's bytes lie: each active file's size, and each partition's bytes.
pub(crate) struct Layout {
    /// Active file sizes.
    pub sizes: Vec<i64>,
    /// Bytes per partition (`col=value/...`), largest first.
    pub partitions: Vec<(String, u64)>,
}

/// The table's [`Layout`].
pub(crate) fn layout(table: &DeltaTable, columns: &[String]) -> Result<Layout, StatusError> {
    let files = file_figures(table, columns)?;
    let mut partitions: BTreeMap<String, u64> = BTreeMap::new();
    for f in &files {
        let name: Vec<String> = columns.iter().zip(&f.partition).map(|(c, v)| format!("{c}={}", v.as_deref().unwrap_or("null"))).collect();
        *partitions.entry(name.join("/")).or_default() += f.size.max(0) as u64;
    }
    let mut partitions: Vec<(String, u64)> = partitions.into_iter().collect();
    partitions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(Layout { sizes: files.iter().map(|f| f.size).collect(), partitions })
}

/// What the log says of one active file.
struct FileFigures {
    size: i64,
    rows: Option<u64>,
    partition: Vec<Option<String>>,
}

fn file_figures(table: &DeltaTable, columns: &[String]) -> Result<Vec<FileFigures>, StatusError> {
    let location = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(delta_io::DeltaIoError::delta(&location))?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| {
            let values = f.partition_values_map();
            FileFigures {
                size: f.size(),
                rows: f.num_records().map(|n| n as u64),
                partition: columns.iter().map(|c| values.get(c.as_str()).cloned().flatten()).collect(),
            }
        })
        .collect())
}

async fn last_commit(table: &DeltaTable) -> Result<Option<(String, String)>, StatusError> {
    let location = table.table_url().to_string();
    let mut history = table.history(Some(1));
    let Some(commit) = history.try_next().await.map_err(delta_io::DeltaIoError::delta(&location))? else { return Ok(None) };
    let time = commit.timestamp.and_then(chrono::DateTime::from_timestamp_millis).map(|t| t.to_rfc3339()).unwrap_or_default();
    Ok(Some((time, commit.operation.unwrap_or_default())))
}
