//! Bin-packing of small files, written for the streaming shape (thousands of tiny files per
//! partition): each bin's files are fetched concurrently, decoded straight from their bytes
//! and re-encoded as one file, bins run on all cores, and finished bins are committed in steps.
//!
//! delta-rs's `optimize` plans a DataFusion scan per bin, which costs far more per file than a
//! ten-row file holds; it still does z-order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::{Add, Remove};
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt as _};
use deltalake::{DeltaTable, Path};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::MaintenanceError;

/// A small file that may be packed: its modification time, size, path and removal.
type Candidate = (i64, i64, Path, Remove);

/// A bin rewritten: the files it replaces and the file it wrote.
type RewrittenBin = (Vec<Remove>, Vec<Add>);

/// What a compaction did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CompactMetrics {
    /// Table version before.
    pub version_before: u64,
    /// Table version after (several commits when a minimum commit interval is set).
    pub version_after: u64,
    /// Small files replaced.
    pub files_removed: u64,
    /// Files written.
    pub files_added: u64,
    /// Bytes of the files replaced.
    pub bytes_removed: u64,
    /// Bytes of the files written.
    pub bytes_added: u64,
    /// Partitions with at least one rewrite.
    pub partitions_optimized: u64,
    /// Files looked at.
    pub files_considered: u64,
    /// Files left as they were (already large enough, or alone in their bin).
    pub files_skipped: u64,
    /// Bins not committed because a concurrent commit rewrote one of their files (a merge):
    /// the next run packs those partitions again.
    pub bins_dropped: u64,
}

impl CompactMetrics {
    /// Counts committed bins.
    fn count(&mut self, bins: &[RewrittenBin]) {
        for (removes, adds) in bins {
            self.files_removed += removes.len() as u64;
            self.bytes_removed += removes.iter().filter_map(|r| r.size).sum::<i64>().max(0) as u64;
            self.files_added += adds.len() as u64;
            self.bytes_added += adds.iter().map(|a| a.size).sum::<i64>().max(0) as u64;
        }
    }
}
/// Files fetched at once per bin.
const FETCH_CONCURRENCY: usize = 16;

/// Rows gathered before they go to the writer.
const WRITE_ROWS: usize = 65_536;

/// Writes the gathered rows as one batch.
async fn flush(
    writer: &mut delta_io::TableWriter,
    schema: &SchemaRef,
    pending: &mut Vec<deltalake::arrow::array::RecordBatch>,
    partition: &[(String, Option<String>)],
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    let batch = deltalake::arrow::compute::concat_batches(schema, pending.iter()).map_err(|e| e.to_string())?;
    pending.clear();
    writer.write_partition(&batch, partition).await.map_err(|e| e.to_string())
}

/// One output file's worth of small input files of one partition.
struct Bin {
    partition: Vec<(String, Option<String>)>,
    files: Vec<(Path, Remove)>,
}

/// Options of a bin-packing run.
pub(crate) struct BinPack {
    pub target_size: u64,
    pub partitions: Vec<(String, String)>,
    pub min_commit_interval: Option<Duration>,
}

/// What a run rewrites: bins of small files, and the figures of the selection.
struct BinPlan {
    bins: Vec<Bin>,
    considered: u64,
    skipped: u64,
    partitions_optimized: u64,
}

impl BinPack {
    pub(crate) async fn run(self, table: DeltaTable) -> Result<(DeltaTable, CompactMetrics), MaintenanceError> {
        let location = table.table_url().to_string();
        let snapshot = table.snapshot().map_err(MaintenanceError::delta(&location))?;
        let version_before = snapshot.version();
        let schema = snapshot.snapshot().arrow_schema();
        let plan = self.plan(snapshot);
        let metrics = CompactMetrics {
            version_before,
            version_after: version_before,
            files_considered: plan.considered,
            files_skipped: plan.skipped,
            partitions_optimized: plan.partitions_optimized,
            ..Default::default()
        };
        self.execute(table, schema, plan.bins, metrics).await
    }

    /// The small files of the selected partitions, in greedy bins per partition.
    fn plan(&self, snapshot: &deltalake::table::state::DeltaTableState) -> BinPlan {
        let columns = snapshot.metadata().partition_columns().to_vec();
        let mut by_partition: BTreeMap<Vec<Option<String>>, Vec<Candidate>> = BTreeMap::new();
        let mut considered = 0u64;
        for file in snapshot.log_data() {
            let values = file.partition_values_map();
            if !self.partitions.iter().all(|(c, v)| values.get(c).is_some_and(|x| x.as_deref() == Some(v.as_str()))) {
                continue;
            }
            considered += 1;
            if file.deletion_vector_descriptor().is_some() || file.size() as u64 >= self.target_size {
                continue;
            }
            let key = columns.iter().map(|c| values.get(c).cloned().flatten()).collect();
            let candidate = (file.modification_time(), file.size(), file.object_store_path(), file.remove_action(false));
            by_partition.entry(key).or_default().push(candidate);
        }
        let mut bins: Vec<Bin> = by_partition
            .into_iter()
            .flat_map(|(key, files)| {
                let partition: Vec<(String, Option<String>)> = columns.iter().cloned().zip(key).collect();
                pack(files, self.target_size).into_iter().map(move |files| Bin { partition: partition.clone(), files })
            })
            .collect();
        let skipped: u64 = bins.iter().filter(|b| b.files.len() < 2).map(|b| b.files.len() as u64).sum();
        bins.retain(|b| b.files.len() >= 2);
        let partitions_optimized = bins.iter().map(|b| &b.partition).collect::<std::collections::BTreeSet<_>>().len() as u64;
        BinPlan { bins, considered, skipped, partitions_optimized }
    }

    /// Rewrites the bins on all cores and commits finished ones (every minimum commit
    /// interval, and at the end).
    async fn execute(
        self,
        mut table: DeltaTable,
        schema: SchemaRef,
        bins: Vec<Bin>,
        mut metrics: CompactMetrics,
    ) -> Result<(DeltaTable, CompactMetrics), MaintenanceError> {
        let predicate = (!self.partitions.is_empty())
            .then(|| self.partitions.iter().map(|(c, v)| format!("{c} = '{v}'")).collect::<Vec<_>>().join(" AND "));
        let store = table.object_store();
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let mut pending: Vec<RewrittenBin> = Vec::new();
        let mut last_commit = Instant::now();
        let source = table.clone();
        // Every bin was read from this snapshot: each commit checks the commits after it.
        let read_version = source.version();
        let mut done = futures::stream::iter(bins.into_iter().map(|bin| {
            let (table, store, schema) = (source.clone(), store.clone(), schema.clone());
            let target = self.target_size;
            tokio::spawn(async move { rewrite_bin(&table, store, schema, bin, target).await })
        }))
        .buffer_unordered(workers);
        while let Some(joined) = done.next().await {
            pending.push(joined.map_err(|e| MaintenanceError::Failed(format!("compaction task failed: {e}")))??);
            if self.min_commit_interval.is_some_and(|i| last_commit.elapsed() >= i) {
                self.commit(&mut table, read_version, std::mem::take(&mut pending), predicate.clone(), &mut metrics).await?;
                last_commit = Instant::now();
            }
        }
        drop(done);
        self.commit(&mut table, read_version, pending, predicate, &mut metrics).await?;
        Ok((table, metrics))
    }

    /// Commits rewritten bins and counts them. A bin whose files a commit after `read_version`
    /// removed (a merge rewrote them) is dropped and the rest committed: its new file stays
    /// unreferenced (vacuum removes it) and the next run packs the partition again.
    async fn commit(
        &self,
        table: &mut DeltaTable,
        read_version: Option<u64>,
        mut bins: Vec<RewrittenBin>,
        predicate: Option<String>,
        metrics: &mut CompactMetrics,
    ) -> Result<(), MaintenanceError> {
        job_runtime::crash_point!("maintenance::before_compaction_commit");
        while !bins.is_empty() {
            let removes = bins.iter().flat_map(|b| b.0.iter().cloned()).collect();
            let adds = bins.iter().flat_map(|b| b.1.iter().cloned()).collect();
            match delta_io::commit_rewrite(table, read_version, removes, adds, predicate.clone(), self.target_size).await {
                Ok(done) => {
                    metrics.count(&bins);
                    metrics.version_after = done.version;
                    return Ok(());
                }
                Err(delta_io::CommitError::Overlap { version, overlap: delta_io::Overlap::Rewritten(path) }) => {
                    let before = bins.len();
                    bins.retain(|(removes, _)| removes.iter().all(|r| r.path != path));
                    if bins.len() == before {
                        return Err(MaintenanceError::Failed(format!("version {version} removed {path}, which no bin replaces")));
                    }
                    metrics.bins_dropped += (before - bins.len()) as u64;
                    tracing::warn!(concurrent_version = version, file = path, "a concurrent commit rewrote a file of a bin: bin dropped");
                }
                Err(e) => return Err(MaintenanceError::Failed(e.to_string())),
            }
        }
        Ok(())
    }
}

/// Greedy bins of one partition's files in write order (so rows keep roughly their arrival
/// order): a bin closes before the file that would take it past `target` bytes.
fn pack(mut files: Vec<Candidate>, target: u64) -> Vec<Vec<(Path, Remove)>> {
    files.sort_by(|a, b| (a.0, &a.2).cmp(&(b.0, &b.2)));
    let mut bins = Vec::new();
    let mut current: Vec<(Path, Remove)> = Vec::new();
    let mut size = 0u64;
    for (_, bytes, path, remove) in files {
        if size + bytes as u64 > target && !current.is_empty() {
            bins.push(std::mem::take(&mut current));
            size = 0;
        }
        size += bytes as u64;
        current.push((path, remove));
    }
    bins.push(current);
    bins
}

/// Reads a bin's files and writes them back as one file; returns the actions to commit.
async fn rewrite_bin(
    table: &DeltaTable,
    store: Arc<dyn ObjectStore>,
    schema: SchemaRef,
    bin: Bin,
    target: u64,
) -> Result<(Vec<Remove>, Vec<Add>), MaintenanceError> {
    let location = table.table_url().to_string();
    let paths: Vec<Path> = bin.files.iter().map(|(p, _)| p.clone()).collect();
    let partition_columns: Vec<String> = bin.partition.iter().map(|(c, _)| c.clone()).collect();
    let partition_values: HashMap<String, Option<String>> = bin.partition.iter().cloned().collect();
    let mut writer = delta_io::TableWriter::new(table, schema.clone(), &partition_columns, target);
    let mut pending: Vec<deltalake::arrow::array::RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    // Fetches run ahead of decoding; only FETCH_CONCURRENCY files are held at once.
    let mut contents = futures::stream::iter(paths.into_iter().map(|path| {
        let store = store.clone();
        async move { store.get(&path).await?.bytes().await }
    }))
    .buffered(FETCH_CONCURRENCY);
    loop {
        let bytes = match contents.try_next().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => break,
            Err(e) => {
                writer.abort().await;
                return Err(MaintenanceError::store(&location)(e));
            }
        };
        let batches = delta_io::decode_data_file(bytes, &schema, &partition_values).map_err(|e| e.to_string());
        // Tiny files make tiny batches: gather them so the writer encodes large pages (each
        // flush creates compression contexts and page headers).
        let written = match batches {
            Ok(batches) => {
                pending_rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
                pending.extend(batches);
                if pending_rows >= WRITE_ROWS {
                    pending_rows = 0;
                    flush(&mut writer, &schema, &mut pending, &bin.partition).await
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(format!("unreadable data file: {e}")),
        };
        if let Err(e) = written {
            writer.abort().await;
            return Err(MaintenanceError::Failed(format!("{location}: {e}")));
        }
    }
    if let Err(e) = flush(&mut writer, &schema, &mut pending, &bin.partition).await {
        writer.abort().await;
        return Err(MaintenanceError::Failed(format!("{location}: {e}")));
    }
    let adds = writer.close().await.map_err(|e| MaintenanceError::Failed(e.to_string()))?;
    Ok((bin.files.into_iter().map(|(_, r)| r).collect(), adds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(time: i64, size: i64) -> Candidate {
        let path = Path::from(format!("f{time}.parquet"));
        (time, size, path.clone(), Remove { path: path.to_string(), data_change: false, ..Default::default() })
    }

    #[test]
    fn bins_close_before_the_file_that_would_overflow_them_in_write_order() {
        let bins = pack(vec![file(3, 40), file(1, 60), file(2, 50), file(4, 10)], 100);
        let names: Vec<Vec<String>> = bins.iter().map(|b| b.iter().map(|(p, _)| p.to_string()).collect()).collect();
        assert_eq!(names, [vec!["f1.parquet"], vec!["f2.parquet", "f3.parquet", "f4.parquet"]]);
    }
}
