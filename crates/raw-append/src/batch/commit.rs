//! The batch boundary: dead letters, routed tables, then each source's table with its partitions'
//! progress, every commit a compare-and-set on the progress the batch started from.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow::compute::filter_record_batch;
use chrono::Utc;
use delta_io::{write_files, Add, CommitError, CommitOutcome, GuardedTxn, ProgressTable};
use futures::future::{join_all, try_join_all};
use job_runtime::{crash_point, RunSummary};
use kafka_source::{messages_behind, PartitionKey};

use super::{Batch, DEAD_LETTER};
use crate::dead_letter;
use crate::events::{BatchCommitted, BatchDropped, DeadLettered, DmsRecordsSkipped, OffsetsSkipped};
use crate::sinks::Sinks;
use crate::RawAppendError;

impl Batch {
    /// Commits the batch: dead letters first, then routed tables, then each source's table
    /// with its partitions' progress. A crash between any two steps leaves every table
    /// consistent with its own progress. Returns the partitions whose progress another task
    /// moved since the batch started (their part of the batch was dropped, or for a routed
    /// source stopped short of its progress; they must be re-read from the table).
    pub async fn commit(mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<Vec<PartitionKey>, RawAppendError> {
        self.drain(sinks, summary).await?;
        self.commit_dead_letters(sinks, summary).await?;
        let routed_lost = self.commit_routed(sinks, summary).await?;
        let mut lost: Vec<PartitionKey> = routed_lost.keys().cloned().collect();
        let sources: Vec<usize> = (0..sinks.routes.len()).filter(|i| !sinks.routes[*i].routed).collect();
        for idx in sources {
            lost.extend(self.commit_table(idx, &routed_lost, sinks, summary).await?);
        }
        for range in std::mem::take(&mut self.skips) {
            OffsetsSkipped { range: &range }.emit(summary);
        }
        for (key, last) in &self.last_offsets {
            if let Some(high) = sinks.high_watermarks.get(key) {
                summary.consumer_lag(&key.topic, key.partition, messages_behind(last + 1, *high));
            }
        }
        summary.batch_done(self.opened.map_or(Duration::ZERO, |t| t.elapsed()));
        Ok(lost)
    }

    /// Commits the dead letters the table does not hold yet, compare-and-set on its progress
    /// of their partitions (another task may have committed the same rejects).
    async fn commit_dead_letters(&mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<(), RawAppendError> {
        const ATTEMPTS: usize = 10;
        if self.dead.len() == 0 {
            return Ok(());
        }
        let resets: BTreeMap<&PartitionKey, ()> = self.skips.iter().filter(|r| r.resume_at <= r.next).map(|r| (&r.key, ())).collect();
        let all = self.dead.take_batch(&sinks.job.job_id, Utc::now())?;
        for _ in 0..ATTEMPTS {
            let mut floors = BTreeMap::new();
            for key in self.dead_partitions.keys() {
                // A recreated topic starts its offsets again: its old floor filters nothing.
                let floor = sinks.dead_letter.progress(&sinks.app_id(key)).await?;
                floors.insert(key.clone(), floor);
            }
            let keep = self.dead.not_held(|key| if resets.contains_key(key) { None } else { floors.get(key).copied().flatten() });
            // Usually every row is new: no copy then.
            let rows = if keep.true_count() == keep.len() { all.clone() } else { filter_record_batch(&all, &keep)? };
            if rows.num_rows() == 0 {
                return Ok(());
            }
            let txns: Vec<GuardedTxn> = floors
                .iter()
                .map(|(k, floor)| {
                    let last = self.last_offsets[k];
                    let version = if resets.contains_key(k) { last } else { floor.map_or(last, |f| f.max(last)) };
                    GuardedTxn { app_id: sinks.app_id(k), expected: *floor, version }
                })
                .collect();
            let example = self.dead.first_reason().unwrap_or_default().to_string();
            let adds = write_files(
                sinks.dead_letter.table(),
                dead_letter::schema(),
                &dead_letter::partition_columns(),
                std::slice::from_ref(&rows),
                sinks.job.target_file_size.0,
            )
            .await?;
            crash_point!("raw_append::after_dead_letter_upload");
            match sinks.dead_letter.commit_append(adds, txns, &sinks.job.job_id, self.number, commit_info(self.number)).await {
                Ok(done) => {
                    let count = rows.num_rows() as u64;
                    DeadLettered { table: DEAD_LETTER, version: done.version, retries: done.retries, count, example: &example }
                        .emit(summary);
                    crash_point!("raw_append::after_dead_letter_commit");
                    return Ok(());
                }
                // Another task committed rejects of these partitions: filter again on the
                // newest snapshot (already loaded).
                Err(CommitError::ProgressMoved { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(RawAppendError::Internal("the dead-letter commit kept losing to concurrent commits of the same partitions".into()))
    }

    /// Commits the rows of source table `idx` with its partitions' progress (but for those a
    /// routed table `lost`); returns the partitions when another task moved their progress
    /// (nothing of this table's part landed).
    async fn commit_table(
        &mut self,
        idx: usize,
        lost: &BTreeMap<PartitionKey, ()>,
        sinks: &mut Sinks,
        summary: &mut RunSummary,
    ) -> Result<Vec<PartitionKey>, RawAppendError> {
        let mine = |k: &&PartitionKey| sinks.by_topic[k.topic.as_ref()] == idx && !lost.contains_key(*k);
        let keys: Vec<PartitionKey> = self.last_offsets.keys().filter(mine).cloned().collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let txns: Vec<GuardedTxn> = keys
            .iter()
            .map(|k| GuardedTxn { app_id: sinks.app_id(k), expected: self.start.get(k).copied().flatten(), version: self.last_offsets[k] })
            .collect();
        if !self.commit_rows(idx, &keys, txns, sinks, summary).await? {
            return Ok(keys);
        }
        DmsRecordsSkipped { table: &sinks.routes[idx].table_name, skipped: self.skipped[idx] }.emit(summary);
        for key in &keys {
            sinks.resume.committed(key, self.last_offsets[key]);
        }
        crash_point!("raw_append::after_commit");
        self.forget_superseded_positions(idx, &keys, sinks).await;
        Ok(Vec::new())
    }

    /// Commits the routed tables side by side (each its own compare-and-set, the commits of
    /// one batch do not depend on each other): the rows of each with, per partition they came
    /// from, the batch's last offset as the table's floor, expected to be still the floor they
    /// were filtered by. Returns the partitions of the tables whose floor another task moved
    /// (nothing of that table's part landed).
    async fn commit_routed(&mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<BTreeMap<PartitionKey, ()>, RawAppendError> {
        let mut commits = Vec::new();
        for (idx, floors) in std::mem::take(&mut self.floors) {
            if self.writers[idx].is_none() && self.early_adds[idx].is_empty() {
                continue; // every row was below the floor: nothing to record
            }
            let keys: Vec<PartitionKey> = floors.keys().cloned().collect();
            let txns = floors
                .iter()
                .map(|(k, floor)| {
                    let last = self.last_offsets[k];
                    GuardedTxn { app_id: sinks.app_id(k), expected: *floor, version: floor.map_or(last, |f| f.max(last)) }
                })
                .collect();
            commits.push(TableCommit { idx, keys, txns, adds: std::mem::take(&mut self.early_adds[idx]) });
        }
        let started = Instant::now();
        let writers: Vec<_> = commits.iter().map(|c| self.writers[c.idx].take()).collect();
        let closed = try_join_all(writers.into_iter().map(|w| async move {
            match w {
                Some(writer) => writer.close().await,
                None => Ok(Vec::new()),
            }
        }))
        .await?;
        commits.iter_mut().zip(closed).for_each(|(c, adds)| c.adds.extend(adds));
        self.write_ms += started.elapsed().as_millis() as u64;
        crash_point!("raw_append::after_upload");
        sinks.open_tables(commits.iter().map(|c| c.idx)).await?;
        let routes = sinks.routes.clone();
        let (job_id, number) = (sinks.job.job_id.clone(), self.number);
        // Both in ascending route order (`floors` is a BTreeMap).
        let tables = sinks.tables_mut(commits.iter().map(|c| c.idx))?;
        let outcomes = join_all(tables.into_iter().zip(commits).map(|((idx, table), commit)| {
            debug_assert_eq!(idx, commit.idx);
            commit.run(table, routes[idx].table_name.as_str(), &job_id, number)
        }))
        .await;
        let mut lost = BTreeMap::new();
        for (commit, files, outcome, took) in outcomes {
            if !self.report(&routes[commit.idx].table_name, &commit, files, outcome, took, summary)? {
                lost.extend(commit.keys.into_iter().map(|k| (k, ())));
            }
        }
        crash_point!("raw_append::after_routed_commit");
        Ok(lost)
    }

    /// Logs and counts a table's commit; false when another task moved the progress the
    /// commit expected (the batch's part for this table is dropped).
    fn report(
        &self,
        table: &str,
        commit: &TableCommit,
        files: usize,
        outcome: Result<CommitOutcome, CommitError>,
        took: Duration,
        summary: &mut RunSummary,
    ) -> Result<bool, RawAppendError> {
        let rows = self.rows[commit.idx];
        let done = match outcome {
            Ok(done) => done,
            Err(CommitError::ProgressMoved { moved }) => {
                BatchDropped { table, rows, moved: &moved }.emit(summary);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        BatchCommitted {
            table,
            version: done.version,
            retries: done.retries,
            rows,
            files,
            partitions: commit.keys.len(),
            decode_ms: self.decode_ms,
            write_ms: self.write_ms,
            commit_ms: took.as_millis() as u64,
        }
        .emit(summary);
        Ok(true)
    }

    /// Uploads table `idx`'s rows and commits them with `txns`; false when another task moved
    /// the progress of one of `keys` (the batch's part for this table is dropped).
    async fn commit_rows(
        &mut self,
        idx: usize,
        keys: &[PartitionKey],
        txns: Vec<GuardedTxn>,
        sinks: &mut Sinks,
        summary: &mut RunSummary,
    ) -> Result<bool, RawAppendError> {
        let started = Instant::now();
        let mut adds = std::mem::take(&mut self.early_adds[idx]);
        if let Some(writer) = self.writers[idx].take() {
            adds.extend(writer.close().await?);
        }
        self.write_ms += started.elapsed().as_millis() as u64;
        crash_point!("raw_append::after_upload");
        self.write_positions(idx, keys, sinks).await?;
        let commit = TableCommit { idx, keys: keys.to_vec(), txns, adds };
        let routes = sinks.routes.clone();
        let job_id = sinks.job.job_id.clone();
        let table = sinks.table(idx).await?;
        let (commit, files, outcome, took) = commit.run(table, &routes[idx].table_name, &job_id, self.number).await;
        self.report(&routes[idx].table_name, &commit, files, outcome, took, summary)
    }

    /// Writes the Kinesis positions of table `idx`'s shards beside it, before the commit that
    /// records their counters.
    async fn write_positions(&mut self, idx: usize, keys: &[PartitionKey], sinks: &Sinks) -> Result<(), RawAppendError> {
        let Some(store) = &sinks.shard_positions[idx] else { return Ok(()) };
        for key in keys {
            if let Some(position) = self.positions.get(key) {
                store.write(key, position).await?;
            }
        }
        crash_point!("raw_append::after_position_write");
        Ok(())
    }

    /// Deletes the positions the commit superseded (a failure only leaves an unused object).
    async fn forget_superseded_positions(&mut self, idx: usize, keys: &[PartitionKey], sinks: &Sinks) {
        let Some(store) = &sinks.shard_positions[idx] else { return };
        for key in keys {
            let (Some(previous), Some(now)) = (self.start.get(key).copied().flatten(), self.positions.get(key)) else { continue };
            if previous != now.counter {
                if let Err(e) = store.forget(key, previous).await {
                    tracing::warn!(stage = "commit", stream = %key.topic, shard = key.partition, error = %e, "superseded shard position not deleted");
                }
            }
        }
    }
}

/// One table's part of a batch, ready to commit.
struct TableCommit {
    idx: usize,
    /// The partitions whose progress the commit records.
    keys: Vec<PartitionKey>,
    txns: Vec<GuardedTxn>,
    adds: Vec<Add>,
}

impl TableCommit {
    /// Commits the files with the progress; on success updates the table's symlink manifests
    /// (when enabled). Returns itself (files moved out), the file count, the outcome and the time.
    async fn run(
        mut self,
        table: &mut ProgressTable,
        name: &str,
        job_id: &str,
        batch: i64,
    ) -> (Self, usize, Result<CommitOutcome, CommitError>, Duration) {
        let started = Instant::now();
        let adds = std::mem::take(&mut self.adds);
        let files = adds.len();
        // Partition values of the new files (repeats collapse in the manifest writer).
        let touched: Vec<HashMap<String, Option<String>>> =
            adds.iter().map(|a| a.partition_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).collect();
        let txns = std::mem::take(&mut self.txns);
        let outcome = table.commit_append(adds, txns, job_id, batch, commit_info(batch)).await;
        let took = started.elapsed();
        if outcome.is_ok() {
            maintenance::update_touched_manifests(table.table(), name, &touched).await;
        }
        (self, files, outcome, took)
    }
}

fn commit_info(batch_no: i64) -> HashMap<String, serde_json::Value> {
    HashMap::from([("lakehouse.job".to_string(), serde_json::json!({ "name": "raw-append", "batch": batch_no }))])
}
