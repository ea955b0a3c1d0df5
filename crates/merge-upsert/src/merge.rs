//! The MERGE of a batch's changes into the target, copy-on-write by file:
//! 1. candidate files: those whose statistics of the first key column can hold a changed key
//!    (files without statistics are always candidates);
//! 2. the candidates are read on the key and sequence columns only, and every target row of a
//!    changed key is found;
//! 3. each change is decided: matched and `source.seq >= target.seq` → update or delete;
//!    matched and older → dropped (stale); not matched → insert unless a newer tombstone exists;
//! 4. only files holding a row to replace or delete are rewritten without those rows; updated
//!    and inserted rows are written as new files in their partitions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{OwnedRow, Row, RowConverter, Rows, SortField};
use delta_io::{DeltaIoError, DeltaTable};
use deltalake::kernel::{Add, Remove};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::changes::{ChangeColumns, Changes, Encoders};
use crate::spec::{MergeSpec, TargetLayout};
use crate::tombstones::Tombstones;

/// Files read at once.
const FETCH_CONCURRENCY: usize = 8;
/// Delta truncates string statistics to this many characters: a longer maximum is a prefix.
const STRING_STATS_PREFIX: usize = 32;

/// What a merge did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct MergeMetrics {
    /// Active files of the target before the merge.
    pub target_files: u64,
    /// Files read on their key and sequence columns (statistics could not rule them out).
    pub files_scanned: u64,
    /// Files rewritten without replaced or deleted rows.
    pub files_rewritten: u64,
    /// Rows of rewritten files carried over unchanged.
    pub rows_copied: u64,
    /// Keys inserted.
    pub rows_inserted: u64,
    /// Keys whose row was replaced by a newer one.
    pub rows_updated: u64,
    /// Keys deleted.
    pub rows_deleted: u64,
    /// Changes older than the target's row or than a tombstone (dropped).
    pub rows_stale: u64,
}

impl MergeMetrics {
    /// Adds a batch's figures to a run's (the target's file count is the latest).
    pub fn add(&mut self, m: &MergeMetrics) {
        self.target_files = m.target_files;
        self.files_scanned += m.files_scanned;
        self.files_rewritten += m.files_rewritten;
        self.rows_copied += m.rows_copied;
        self.rows_inserted += m.rows_inserted;
        self.rows_updated += m.rows_updated;
        self.rows_deleted += m.rows_deleted;
        self.rows_stale += m.rows_stale;
    }
}

/// The actions a merge commits.
pub struct MergeActions {
    /// Files replaced.
    pub removes: Vec<Remove>,
    /// Files written.
    pub adds: Vec<Add>,
    /// Counts.
    pub metrics: MergeMetrics,
}

/// What happens to one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Insert,
    Update,
    Delete,
    Stale,
    /// A delete of a key the target does not hold (only its tombstone remains).
    Nothing,
}

/// A candidate target file.
struct Candidate {
    path: String,
    partition_values: HashMap<String, Option<String>>,
    remove: Remove,
}

/// Merges `changes` into `target` (see the module docs); returns what to commit.
pub async fn merge(
    target: &DeltaTable,
    spec: &MergeSpec,
    layout: &TargetLayout,
    changes: &Changes,
    columns: &ChangeColumns,
    encoders: &Encoders,
    tombstones: &Tombstones,
) -> Result<MergeActions, DeltaIoError> {
    let arrow = DeltaIoError::arrow("merge");
    let mut metrics = MergeMetrics::default();
    let keys = encoders.keys(&changes.rows, columns).map_err(arrow)?;
    let sequences = encoders.sequences(&changes.rows, &columns.sequence).map_err(arrow)?;

    // 1. Candidates by the first key column's statistics.
    let candidates = candidates(target, spec, layout, changes, &mut metrics).map_err(arrow)?;
    metrics.files_scanned = candidates.len() as u64;
    // 2. Target rows of changed keys.
    let probe = TargetProbe { target, layout, columns, encoders };
    let (hits, target_sequence) = probe.changed_rows(&candidates, &keys).await?;
    // 3. Each change's fate.
    let fates: Vec<Fate> = (0..changes.len())
        .map(|i| {
            let target = target_sequence[i].as_ref().map(|t| sequences.row(i) >= t.row());
            let blocked = || tombstones.blocks(keys.row(i), sequences.row(i));
            fate(target, changes.deletes[i], blocked)
        })
        .collect();
    fates.iter().for_each(|f| metrics.count(f));
    // 4. Rewrite the files holding replaced or deleted rows; write the new rows.
    let mut dropped: HashMap<usize, HashSet<usize>> = HashMap::new();
    for (file, row, change) in hits {
        if matches!(fates[change], Fate::Update | Fate::Delete) {
            dropped.entry(file).or_default().insert(row);
        }
    }
    let mut writer = delta_io::TableWriter::new(target, layout.write.clone(), &layout.partition_columns, 128 << 20);
    let removes = match probe.rewrite(&candidates, dropped.into_iter().collect(), &mut writer, &mut metrics).await {
        Ok(removes) => removes,
        Err(e) => {
            writer.abort().await;
            return Err(e);
        }
    };
    metrics.files_rewritten = removes.len() as u64;
    let mut adds = writer.close().await?;
    adds.extend(write_changed_rows(target, spec, layout, changes, &fates).await?);
    Ok(MergeActions { removes, adds, metrics })
}

/// What a change does to the target, from whether the target holds its key (and if so whether
/// the change's sequence is newer or equal), whether it is a delete, and whether a tombstone
/// blocks it (asked only for an insert).
fn fate(target_newer_or_equal: Option<bool>, delete: bool, blocked: impl FnOnce() -> bool) -> Fate {
    match (target_newer_or_equal, delete) {
        (Some(true), true) => Fate::Delete,
        (Some(true), false) => Fate::Update,
        (Some(false), _) => Fate::Stale,
        (None, true) => Fate::Nothing,
        (None, false) if blocked() => Fate::Stale,
        (None, false) => Fate::Insert,
    }
}

impl MergeMetrics {
    fn count(&mut self, fate: &Fate) {
        match fate {
            Fate::Insert => self.rows_inserted += 1,
            Fate::Update => self.rows_updated += 1,
            Fate::Delete => self.rows_deleted += 1,
            Fate::Stale => self.rows_stale += 1,
            Fate::Nothing => {}
        }
    }
}

/// A target row holding a changed key: (candidate file, row in the file, change).
type Hit = (usize, usize, usize);

/// Reads candidate target files for a merge.
struct TargetProbe<'a> {
    target: &'a DeltaTable,
    layout: &'a TargetLayout,
    columns: &'a ChangeColumns,
    encoders: &'a Encoders,
}

impl TargetProbe<'_> {
    /// The target rows whose key changed, and each change's target sequence (the newest, when
    /// several files hold the key), read on the key and sequence columns only.
    async fn changed_rows(&self, candidates: &[Candidate], keys: &Rows) -> Result<(Vec<Hit>, Vec<Option<OwnedRow>>), DeltaIoError> {
        let arrow = DeltaIoError::arrow("merge");
        let by_key: HashMap<Row<'_>, usize> = (0..keys.num_rows()).map(|i| (keys.row(i), i)).collect();
        let probe = probe_schema(self.layout, self.columns).map_err(arrow)?;
        let location = self.target.table_url().to_string();
        let files = candidates.iter().map(|c| (c.path.clone(), c.partition_values.clone())).collect();
        let mut reads = read_files(&self.target.object_store(), &location, &probe, files);
        let mut target_sequence: Vec<Option<OwnedRow>> = vec![None; keys.num_rows()];
        let mut hits = Vec::new();
        let mut file = 0;
        while let Some(batches) = reads.try_next().await? {
            let mut offset = 0;
            for batch in batches {
                let target_keys = self.encoders.keys(&batch, self.columns).map_err(arrow)?;
                let target_seqs = self.encoders.sequences(&batch, &self.columns.sequence).map_err(arrow)?;
                for row in 0..batch.num_rows() {
                    let Some(&change) = by_key.get(&target_keys.row(row)) else { continue };
                    hits.push((file, offset + row, change));
                    let seq = target_seqs.row(row);
                    if target_sequence[change].as_ref().is_none_or(|s| s.row() < seq) {
                        target_sequence[change] = Some(seq.owned());
                    }
                }
                offset += batch.num_rows();
            }
            file += 1;
        }
        Ok((hits, target_sequence))
    }

    /// Rewrites each file of `rewrites` without its dropped rows; returns the files' removes.
    async fn rewrite(
        &self,
        candidates: &[Candidate],
        rewrites: Vec<(usize, HashSet<usize>)>,
        writer: &mut delta_io::TableWriter,
        metrics: &mut MergeMetrics,
    ) -> Result<Vec<Remove>, DeltaIoError> {
        let layout = self.layout;
        let location = self.target.table_url().to_string();
        let files = rewrites.iter().map(|(file, _)| (candidates[*file].path.clone(), candidates[*file].partition_values.clone())).collect();
        let mut reads = read_files(&self.target.object_store(), &location, &layout.write, files);
        let mut removes = Vec::new();
        for (file, rows) in &rewrites {
            let Some(batches) = reads.try_next().await? else { break };
            let candidate = &candidates[*file];
            let partition: Vec<(String, Option<String>)> =
                layout.partition_columns.iter().map(|c| (c.clone(), candidate.partition_values.get(c).cloned().flatten())).collect();
            let mut offset = 0;
            for batch in batches {
                let keep: BooleanArray = (0..batch.num_rows()).map(|r| Some(!rows.contains(&(offset + r)))).collect();
                offset += batch.num_rows();
                let kept = filter_record_batch(&batch, &keep).map_err(DeltaIoError::arrow("merge"))?;
                metrics.rows_copied += kept.num_rows() as u64;
                writer.write_partition(&kept, &partition).await?;
            }
            removes.push(candidate.remove.clone());
        }
        Ok(removes)
    }
}

/// Writes the inserted and updated changes; the writer groups them by partition (sorting a
/// mixed batch) and derives each partition's values once per run.
async fn write_changed_rows(
    target: &DeltaTable,
    spec: &MergeSpec,
    layout: &TargetLayout,
    changes: &Changes,
    fates: &[Fate],
) -> Result<Vec<Add>, DeltaIoError> {
    let arrow = DeltaIoError::arrow("merge");
    let written: Vec<u32> =
        fates.iter().enumerate().filter(|(_, f)| matches!(f, Fate::Insert | Fate::Update)).map(|(i, _)| i as u32).collect();
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let rows = take_record_batch(&changes.rows, &UInt32Array::from(written)).map_err(arrow)?;
    let data: Vec<ArrayRef> = layout
        .data
        .fields()
        .iter()
        .map(|f| Ok(rows.column(rows.schema().index_of(f.name())?).clone()))
        .collect::<Result<_, ArrowError>>()
        .map_err(arrow)?;
    let data = RecordBatch::try_new(layout.data.clone(), data).map_err(arrow)?;
    delta_io::write_derived_partition_runs(target, layout.write.clone(), &layout.partition_columns, &spec.partitions, &[data], 128 << 20)
        .await
}

/// The rows of `files` (path, partition values) in `schema`, in order, several fetched at once.
/// Owned inputs per future: the stream must be Send for any caller's runtime.
fn read_files(
    store: &Arc<dyn deltalake::logstore::object_store::ObjectStore>,
    location: &str,
    schema: &SchemaRef,
    files: Vec<(String, HashMap<String, Option<String>>)>,
) -> impl futures::Stream<Item = Result<Vec<RecordBatch>, DeltaIoError>> + Send + Unpin {
    let (store, location, schema) = (store.clone(), location.to_string(), schema.clone());
    futures::stream::iter(files.into_iter().map(move |(path, values)| {
        let (store, location, schema) = (store.clone(), location.clone(), schema.clone());
        async move { delta_io::read_data_file(&store, &location, &path, &schema, &values).await }
    }))
    .buffered(FETCH_CONCURRENCY)
}

/// Key and sequence columns, as the target stores them.
fn probe_schema(layout: &TargetLayout, columns: &ChangeColumns) -> Result<SchemaRef, ArrowError> {
    let mut fields: Vec<Field> = Vec::new();
    for name in columns.key.iter().chain(std::iter::once(&columns.sequence)) {
        fields.push(layout.write.field_with_name(name)?.clone());
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The target files whose first-key statistics admit a changed key.
fn candidates(
    target: &DeltaTable,
    spec: &MergeSpec,
    layout: &TargetLayout,
    changes: &Changes,
    metrics: &mut MergeMetrics,
) -> Result<Vec<Candidate>, ArrowError> {
    use deltalake::datafusion::common::pruning::PruningStatistics;
    let snapshot = target.snapshot().map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
    let log_data = snapshot.log_data();
    let files: Vec<_> = log_data.iter().collect();
    metrics.target_files = files.len() as u64;
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let to_candidate = |f: &deltalake::kernel::LogicalFileView| Candidate {
        path: f.path().to_string(),
        partition_values: f.partition_values_map(),
        remove: f.remove_action(true),
    };
    let key = &spec.key[0];
    let key_type = layout.write.field_with_name(key)?.data_type().clone();
    // Every file's min and max of the key, from the parsed statistics (partition values for a
    // partition column). Statistics we cannot use rule nothing out.
    let column = deltalake::datafusion::common::Column::from_name(key);
    let bounds = match (log_data.min_values(&column), log_data.max_values(&column)) {
        (Some(min), Some(max)) if min.len() == files.len() && max.len() == files.len() => {
            arrow::compute::cast(&min, &key_type).and_then(|min| Ok((min, arrow::compute::cast(&max, &key_type)?))).ok()
        }
        _ => None,
    };
    let Some((mins, maxs)) = bounds else {
        return Ok(files.iter().map(to_candidate).collect());
    };
    // Delta truncates long string statistics: such a maximum is only a prefix, so unbounded.
    let truncated: Vec<bool> = match maxs.as_any().downcast_ref::<arrow::array::StringArray>() {
        Some(s) => s.iter().map(|v| v.is_some_and(|v| v.chars().count() >= STRING_STATS_PREFIX)).collect(),
        None => vec![false; maxs.len()],
    };
    let converter = RowConverter::new(vec![SortField::new(key_type)])?;
    let changed = converter.convert_columns(&[changes.rows.column(changes.rows.schema().index_of(key)?).clone()])?;
    let mut changed: Vec<Row<'_>> = changed.iter().collect();
    changed.sort_unstable();
    let min_rows = converter.convert_columns(std::slice::from_ref(&mins))?;
    let max_rows = converter.convert_columns(std::slice::from_ref(&maxs))?;
    Ok(files
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let lower = if mins.is_null(*i) { 0 } else { changed.partition_point(|k| *k < min_rows.row(*i)) };
            lower < changed.len() && (maxs.is_null(*i) || truncated[*i] || changed[lower] <= max_rows.row(*i))
        })
        .map(|(_, f)| to_candidate(f))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_wins_when_its_sequence_is_newer_or_equal() {
        assert_eq!(fate(Some(true), false, || unreachable!()), Fate::Update);
        assert_eq!(fate(Some(true), true, || unreachable!()), Fate::Delete);
        assert_eq!(fate(Some(false), false, || unreachable!()), Fate::Stale);
        assert_eq!(fate(Some(false), true, || unreachable!()), Fate::Stale);
    }

    #[test]
    fn a_new_key_is_inserted_unless_a_tombstone_blocks_it() {
        assert_eq!(fate(None, false, || false), Fate::Insert);
        assert_eq!(fate(None, false, || true), Fate::Stale);
        assert_eq!(fate(None, true, || unreachable!()), Fate::Nothing);
    }
}
