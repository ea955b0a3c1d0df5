//! Incremental reading of a Delta table, as Spark's Delta streaming source does: the commits
//! after a recorded position, only `add` actions with `dataChange=true` (compaction output,
//! `dataChange=false`, is skipped), in batches bounded by files and bytes: whole commits while
//! they fit, and a commit larger than a batch's limits in slices of its files (so memory follows
//! the limits, not the largest commit). Shared by stream-join and merge-upsert.

mod driver;
mod error;
mod identity;
mod progress;

use std::collections::HashMap;

pub use driver::{drive, run_to_end, IncrementalJob, Schedule};
pub use error::TableJobError;
pub use identity::Changed;
pub use progress::{BatchRecord, BatchTaken, CheckpointBehind, CreateError, ProgressError, ProgressLog, Resume, ResumeError, SourceRange};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// delta-rs or the store failed.
    #[error("source {table}: {message}")]
    Io {
        /// Source table location.
        table: String,
        /// What failed.
        message: String,
    },
    /// A commit deletes or rewrites rows: an append-only reader would miss the change.
    #[error(
        "source {table}: version {version} removes data ({path}, dataChange=true): this job reads append-only sources. \
         Rebuild the output, or set ignore_deletes = true to skip such commits"
    )]
    DeleteInSource {
        /// Source table location.
        table: String,
        /// The commit.
        version: u64,
        /// A removed file.
        path: String,
    },
    /// A commit the job still has to read is gone.
    #[error(
        "source {table}: version {version} is no longer in the log (log cleanup removed it; delta.logRetentionDuration): \
         rows committed there cannot be read. Raise the source's log retention and rebuild the output from scratch"
    )]
    LogCleaned {
        /// Source table location.
        table: String,
        /// The missing version.
        version: u64,
    },
    /// A data file the job still has to read is gone.
    #[error(
        "source {table}: data file {path} of version {version} is gone (vacuum removed it before this job read it: the job \
         fell behind the source's delta.deletedFileRetentionDuration). Its rows cannot be read: rebuild the output from \
         scratch, and keep the source's retention longer than the job's longest pause"
    )]
    FileGone {
        /// Source table location.
        table: String,
        /// The commit that added it.
        version: u64,
        /// The file.
        path: String,
    },
    /// The source is not the table the job read.
    #[error(
        "source {table} is not the table this job read: {change} (it was deleted and created again, or restored from an \
         older copy). What it holds now cannot be matched with what the job read: rebuild the output from scratch (delete \
         the output tables and the checkpoint folder), or point the job back at the table it read"
    )]
    Recreated {
        /// Source table location.
        table: String,
        /// How it differs.
        change: Changed,
    },
}

impl SourceError {
    /// Source data the job has not read is gone or replaced (log cleanup, vacuum, a recreated
    /// table): running on would skip rows, so the job stops (exit 4), never "no new data".
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::LogCleaned { .. } | Self::FileGone { .. } | Self::Recreated { .. })
    }
}

/// A data file a batch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Version that added it.
    pub version: u64,
    /// Path relative to the table root (decoded).
    pub path: String,
    /// Size in bytes.
    pub size: i64,
    /// Partition values.
    pub partition_values: HashMap<String, Option<String>>,
}

/// The commits a batch reads: from the position after `after` to `to` (see [`SourceRange`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcePlan {
    /// Last version read before (None: the table's first version is read).
    pub after: Option<u64>,
    /// Of version `after`, the data files read before when only its first ones were.
    pub after_files: Option<usize>,
    /// Last version this batch reads (equal to `after` when there is nothing new).
    pub to: Option<u64>,
    /// Of version `to`, how many data files this batch reads through when not all.
    pub to_files: Option<usize>,
    /// The source's table id (None before its first commit).
    pub table_id: Option<String>,
    /// Files added with dataChange=true, in commit order.
    pub files: Vec<SourceFile>,
}

impl SourcePlan {
    /// The range to record for this batch.
    pub fn range(&self) -> SourceRange {
        SourceRange {
            after: self.after,
            to: self.to,
            table_id: self.table_id.clone(),
            after_files: self.after_files,
            to_files: self.to_files,
        }
    }

    /// True when the batch reads nothing new.
    pub fn is_empty(&self) -> bool {
        (self.to, self.to_files) == (self.after, self.after_files)
    }

    /// Bytes of the files the batch reads.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size.max(0) as u64).sum()
    }

    /// Commits of `table` (as loaded) after this batch's last version: the source lag.
    pub fn versions_behind(&self, table: &DeltaTable) -> u64 {
        match (table.version(), self.to) {
            (Some(latest), Some(to)) => latest.saturating_sub(to),
            (Some(latest), None) => latest + 1,
            (None, _) => 0,
        }
    }
}

/// Batch bounds.
#[derive(Debug, Clone, Copy)]
pub struct SourceLimits {
    /// At most this many files.
    pub max_files: usize,
    /// At most this many bytes (unless one file alone holds more).
    pub max_bytes: u64,
    /// Skip commits that remove data instead of failing.
    pub ignore_deletes: bool,
}

impl From<&pipeline_config::IncrementalOptions> for SourceLimits {
    /// A job's configured batch limits.
    fn from(options: &pipeline_config::IncrementalOptions) -> Self {
        Self { max_files: options.max_files_per_batch, max_bytes: options.max_bytes_per_batch.0, ignore_deletes: options.ignore_deletes }
    }
}

/// Plans the next batch of `table` after the `previous` batch's range, up to its loaded version.
pub async fn plan(table: &DeltaTable, previous: &SourceRange, limits: &SourceLimits) -> Result<SourcePlan, SourceError> {
    let table_id = check_identity(table, previous)?;
    plan_versions(table, (previous.to, previous.to_files), None, limits, table_id).await
}

/// Plans exactly the range a batch recorded before it was interrupted (for its re-run),
/// whatever the limits say.
pub async fn plan_recorded(table: &DeltaTable, range: &SourceRange, ignore_deletes: bool) -> Result<SourcePlan, SourceError> {
    let table_id = check_identity(table, range)?;
    let unlimited = SourceLimits { max_files: usize::MAX, max_bytes: u64::MAX, ignore_deletes };
    plan_versions(table, (range.after, range.after_files), Some((range.to, range.to_files)), &unlimited, table_id).await
}

/// The table's id, unless it is not the table `recorded` was read from.
fn check_identity(table: &DeltaTable, recorded: &SourceRange) -> Result<Option<String>, SourceError> {
    let id = identity::table_id(table);
    match identity::changed(recorded.table_id.as_deref(), recorded.to, id.as_deref(), table.version()) {
        Some(change) => Err(SourceError::Recreated { table: table.table_url().to_string(), change }),
        None => Ok(id),
    }
}

/// A position in a table: every version before `.0` read, and of version `.0` all data files
/// (`.1` None) or the first `.1`.
type Position = (Option<u64>, Option<usize>);

/// The batch after `start` up to the loaded version within the limits, or exactly up to
/// `until` (a recorded batch).
async fn plan_versions(
    table: &DeltaTable,
    start: Position,
    until: Option<Position>,
    limits: &SourceLimits,
    table_id: Option<String>,
) -> Result<SourcePlan, SourceError> {
    let location = table.table_url().to_string();
    let io = |message: String| SourceError::Io { table: location.clone(), message };
    let (after, after_files) = start;
    let mut plan = SourcePlan { after, after_files, to: after, to_files: after_files, table_id, files: Vec::new() };
    let Some(latest) = table.version() else { return Ok(plan) };
    if until.is_some_and(|u| u == start) {
        return Ok(plan);
    }
    let last = match until {
        Some((Some(u), _)) if u > latest => return Err(io(format!("version {u} was recorded as read but the table is at {latest}"))),
        Some((u, _)) => u.unwrap_or(0),
        None => latest,
    };
    // A batch that ended inside a version continues in it.
    let first = match start {
        (Some(v), Some(_)) => v,
        (v, _) => v.map_or(0, |v| v + 1),
    };
    let mut bytes = 0u64;
    for version in first..=last {
        let entry = table.log_store().read_commit_entry(version).await.map_err(|e| io(e.to_string()))?;
        let Some(entry) = entry else {
            return Err(SourceError::LogCleaned { table: location.clone(), version });
        };
        let all = parse_commit(&entry, version, &location, limits.ignore_deletes)?;
        let skip = if Some(version) == after { after_files.unwrap_or(0).min(all.len()) } else { 0 };
        let through = match until {
            Some((to, Some(n))) if to == Some(version) => n.clamp(skip, all.len()),
            _ => all.len(),
        };
        let remaining = &all[skip..through];
        let sizes: Vec<u64> = remaining.iter().map(|f| f.size.max(0) as u64).collect();
        let taken = match take(&sizes, plan.files.len(), bytes, limits) {
            Take::Nothing => break,
            Take::All => remaining.len(),
            Take::First(k) => k,
        };
        bytes += sizes[..taken].iter().sum::<u64>();
        plan.files.extend(remaining[..taken].iter().cloned());
        let end = skip + taken;
        (plan.to, plan.to_files) = (Some(version), (end < all.len()).then_some(end));
        if end < all.len() {
            break;
        }
    }
    Ok(plan)
}

/// How much of a commit's remaining data files a batch takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// All of them: they fit.
    All,
    /// The first ones (a batch that would otherwise be empty: a commit larger than the limits).
    First(usize),
    /// None: the batch is full.
    Nothing,
}

/// Whether files of `sizes` join a batch already holding `batch_files` files of `batch_bytes`.
fn take(sizes: &[u64], batch_files: usize, batch_bytes: u64, limits: &SourceLimits) -> Take {
    let total: u64 = sizes.iter().sum();
    if batch_files + sizes.len() <= limits.max_files && batch_bytes.saturating_add(total) <= limits.max_bytes {
        return Take::All;
    }
    if batch_files > 0 {
        return Take::Nothing;
    }
    // The longest prefix within both limits, at least one file.
    let (mut k, mut bytes) = (0, 0u64);
    while k < sizes.len() && k < limits.max_files && (k == 0 || bytes + sizes[k] <= limits.max_bytes) {
        bytes += sizes[k];
        k += 1;
    }
    Take::First(k.max(1))
}

/// The data-changing adds of one commit; a data-changing remove is an error unless ignored.
fn parse_commit(entry: &[u8], version: u64, location: &str, ignore_deletes: bool) -> Result<Vec<SourceFile>, SourceError> {
    let text = std::str::from_utf8(entry)
        .map_err(|e| SourceError::Io { table: location.to_string(), message: format!("version {version}: {e}") })?;
    let mut files = Vec::new();
    let mut removed = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let action: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| SourceError::Io { table: location.to_string(), message: format!("version {version}: {e}") })?;
        if let Some(add) = action.get("add") {
            if add["dataChange"].as_bool() != Some(true) {
                continue;
            }
            let raw = add["path"].as_str().unwrap_or_default();
            let partition_values = add["partitionValues"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string))).collect())
                .unwrap_or_default();
            files.push(SourceFile {
                version,
                path: percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned(),
                size: add["size"].as_i64().unwrap_or(0),
                partition_values,
            });
        } else if let Some(remove) = action.get("remove") {
            if remove["dataChange"].as_bool() == Some(true) {
                removed.get_or_insert_with(|| remove["path"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    match removed {
        None => Ok(files),
        Some(path) if !ignore_deletes => Err(SourceError::DeleteInSource { table: location.to_string(), version, path }),
        // An UPDATE or DELETE rewrites files: reading its adds would read the surviving rows twice.
        Some(_) => {
            tracing::warn!(
                table = location,
                version,
                skipped_files = files.len(),
                "source commit deletes rows: skipped whole (ignore_deletes)"
            );
            Ok(Vec::new())
        }
    }
}

/// Reads the rows of a plan's files in `schema` (the table's schema or a projection of it),
/// in plan order, fetching several files at once.
pub async fn read(table: &DeltaTable, plan: &SourcePlan, schema: &SchemaRef) -> Result<Vec<RecordBatch>, SourceError> {
    Ok(read_each(table, plan, schema).await?.into_iter().flatten().collect())
}

/// [`read`], the rows of each of the plan's files apart (aligned with `plan.files`).
pub async fn read_each(table: &DeltaTable, plan: &SourcePlan, schema: &SchemaRef) -> Result<Vec<Vec<RecordBatch>>, SourceError> {
    let location = table.table_url().to_string();
    let store = table.object_store();
    // Owned inputs per future: the stream must be Send for any caller's runtime.
    let jobs: Vec<SourceFile> = plan.files.clone();
    futures::stream::iter(jobs.into_iter().map(|file| {
        let (store, location, schema) = (store.clone(), location.clone(), schema.clone());
        async move {
            delta_io::read_data_file(&store, &location, &file.path, &schema, &file.partition_values)
                .await
                .map_err(|e| read_error(e, &location, &file))
        }
    }))
    .buffered(16)
    .try_collect()
    .await
}

/// A file vacuum removed is [`SourceError::FileGone`]; any other failure is I/O.
fn read_error(e: delta_io::DeltaIoError, location: &str, file: &SourceFile) -> SourceError {
    match e {
        delta_io::DeltaIoError::Store { source, .. } if matches!(*source, deltalake::ObjectStoreError::NotFound { .. }) => {
            SourceError::FileGone { table: location.to_string(), version: file.version, path: file.path.clone() }
        }
        e => SourceError::Io { table: location.to_string(), message: e.to_string() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_data_changing_adds_and_deletes_are_refused() {
        let commit = br#"{"commitInfo":{"operation":"WRITE"}}
{"add":{"path":"year=2022/part%201.parquet","size":10,"partitionValues":{"year":"2022"},"dataChange":true}}
{"add":{"path":"year=2022/compacted.parquet","size":99,"partitionValues":{"year":"2022"},"dataChange":false}}
{"remove":{"path":"year=2022/old.parquet","dataChange":false}}
{"txn":{"appId":"x","version":3}}
"#;
        let files = parse_commit(commit, 7, "t", false).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "year=2022/part 1.parquet");
        assert_eq!(files[0].version, 7);
        assert_eq!(files[0].partition_values.get("year"), Some(&Some("2022".to_string())));
        let delete = br#"{"remove":{"path":"a.parquet","dataChange":true}}"#;
        assert!(matches!(parse_commit(delete, 8, "t", false), Err(SourceError::DeleteInSource { version: 8, .. })));
        assert!(parse_commit(delete, 8, "t", true).unwrap().is_empty());
    }

    #[test]
    fn a_commit_larger_than_the_limits_is_taken_in_slices() {
        let limits = SourceLimits { max_files: 3, max_bytes: 100, ignore_deletes: false };
        assert_eq!(take(&[10, 10], 0, 0, &limits), Take::All);
        assert_eq!(take(&[10, 10], 1, 10, &limits), Take::All, "fits beside what the batch holds");
        assert_eq!(take(&[10, 10, 10], 1, 10, &limits), Take::Nothing, "the next batch takes it");
        assert_eq!(take(&[10; 7], 0, 0, &limits), Take::First(3), "an empty batch slices by files");
        assert_eq!(take(&[60, 30, 20], 0, 0, &limits), Take::First(2), "by bytes");
        assert_eq!(take(&[500, 1], 0, 0, &limits), Take::First(1), "one file larger than the limit still goes");
        assert_eq!(take(&[], 2, 50, &limits), Take::All, "a commit without data files");
    }

    #[test]
    fn ignore_deletes_skips_a_rewriting_commit_whole() {
        // An UPDATE: the old file removed, its surviving and changed rows added again.
        let update = br#"{"remove":{"path":"a.parquet","dataChange":true}}
{"add":{"path":"b.parquet","size":10,"partitionValues":{},"dataChange":true}}
"#;
        assert!(parse_commit(update, 9, "t", true).unwrap().is_empty(), "the surviving rows are not read twice");
        assert!(matches!(parse_commit(update, 9, "t", false), Err(SourceError::DeleteInSource { version: 9, .. })));
    }
}
