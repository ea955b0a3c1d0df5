//! One raw-append batch: slices of messages are decoded and streamed into Parquet writers as
//! they arrive; at the batch boundary the dead letters are committed, then each table with the
//! `txn` progress of its partitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::compute::filter_record_batch;
use chrono::{DateTime, Utc};
use delta_io::{write_files, CommitError, GuardedTxn, ProgressTable, TableWriter};
use job_runtime::{crash_point, RunSummary};
use kafka_source::{messages_behind, PartitionKey, RawBatch};
use kinesis_source::ShardPosition;
use pipeline_config::{RawAppendConfig, SourceFormat};

use crate::dead_letter::{self, DeadLetters};
use crate::dms;
use crate::events::{BatchCommitted, BatchDropped, DeadLettered, DmsRecordsSkipped, OffsetsSkipped};
use crate::handover::{Resume, SkippedRange};
use crate::routes::Route;
use crate::shard_positions::ShardPositions;
use crate::table_rows::{self, ChunkRows};
use crate::RawAppendError;

/// Name under which the dead-letter table appears in summaries.
pub const DEAD_LETTER: &str = "dead_letter";

/// The tables a run writes and what it knows of their progress.
pub struct Sinks {
    /// Routes, shared with decode workers.
    pub routes: Arc<Vec<Route>>,
    /// Route index by topic.
    pub by_topic: Arc<HashMap<String, usize>>,
    /// One table per route.
    pub tables: Vec<ProgressTable>,
    /// The dead-letter table.
    pub dead_letter: ProgressTable,
    /// Where each partition resumed and what its next commit must find in its table.
    pub resume: Arc<Resume>,
    /// The job's settings.
    pub job: RawAppendConfig,
    /// Latest known high watermark per partition (consumer-lag figures).
    pub high_watermarks: HashMap<PartitionKey, i64>,
    /// Per route: where Kinesis shard positions are kept (None for Kafka routes).
    pub shard_positions: Vec<Option<ShardPositions>>,
}

impl Sinks {
    /// The txn app id of a source partition (see [`app_id`]).
    pub fn app_id(&self, key: &PartitionKey) -> String {
        key.txn_app_id(&self.job.job_id)
    }
}

/// A batch being assembled.
pub struct Batch {
    number: i64,
    /// When the batch's first slice arrived: the value of ingestion-time partitions.
    ingested_at: Option<DateTime<Utc>>,
    writers: Vec<Option<TableWriter>>,
    rows: Vec<u64>,
    /// Last offset read per partition (the txn versions to commit).
    last_offsets: BTreeMap<PartitionKey, i64>,
    /// The progress each partition's table must still hold when the batch commits.
    start: BTreeMap<PartitionKey, Option<i64>>,
    /// Offsets skipped by configuration, recorded by this batch.
    skips: Vec<SkippedRange>,
    dead: DeadLetters,
    /// Partitions that produced new dead letters in this batch.
    dead_partitions: BTreeMap<PartitionKey, ()>,
    /// Kinesis shards: the position of the last record (what the commit's counter stands for).
    positions: BTreeMap<PartitionKey, ShardPosition>,
    /// The last slice added, being decoded while the one before it is written.
    decoding: Option<Decoding>,
    /// DMS records skipped, per route.
    skipped: Vec<dms::Skipped>,
    decode_ms: u64,
    write_ms: u64,
    /// When the first slice arrived (batch duration).
    opened: Option<Instant>,
}

impl Batch {
    /// An empty batch numbered `number`.
    pub fn new(number: i64, routes: usize) -> Self {
        Self {
            number,
            ingested_at: None,
            writers: (0..routes).map(|_| None).collect(),
            rows: vec![0; routes],
            last_offsets: BTreeMap::new(),
            start: BTreeMap::new(),
            skips: Vec::new(),
            dead: DeadLetters::default(),
            dead_partitions: BTreeMap::new(),
            positions: BTreeMap::new(),
            decoding: None,
            skipped: vec![dms::Skipped::default(); routes],
            decode_ms: 0,
            write_ms: 0,
            opened: None,
        }
    }

    /// True when no message was added.
    pub fn is_empty(&self) -> bool {
        self.last_offsets.is_empty()
    }

    /// Adds a slice of messages: its decoding starts off the async workers, and the slice
    /// added before it (decoded meanwhile) is streamed into the tables' writers, so decoding
    /// one slice and encoding the previous one overlap.
    pub async fn add(&mut self, sinks: &mut Sinks, slice: RawBatch) -> Result<(), RawAppendError> {
        self.opened.get_or_insert_with(Instant::now);
        for (key, chunk) in &slice.chunks {
            let Some(last) = chunk.last_offset() else { continue };
            self.last_offsets.insert(key.clone(), last);
            self.start.entry(key.clone()).or_insert_with(|| sinks.resume.point(key));
        }
        // One ingestion time per batch, so a batch lands in one ingestion-time partition.
        let ingested_at = *self.ingested_at.get_or_insert_with(Utc::now);
        let next = spawn_decode(sinks, slice, ingested_at);
        if let Some(previous) = self.decoding.replace(next) {
            self.write_decoded(sinks, previous).await?;
        }
        Ok(())
    }

    /// Writes the slice still being decoded, if any (before the batch commits).
    async fn drain(&mut self, sinks: &mut Sinks) -> Result<(), RawAppendError> {
        match self.decoding.take() {
            Some(decoding) => self.write_decoded(sinks, decoding).await,
            None => Ok(()),
        }
    }

    /// Streams a decoded slice's rows into the tables' writers and keeps its rejects.
    async fn write_decoded(&mut self, sinks: &mut Sinks, decoding: Decoding) -> Result<(), RawAppendError> {
        let DecodedSlice { slice, rows: decoded, skipped, took } =
            decoding.await.map_err(|e| RawAppendError::Internal(format!("decode worker: {e}")))??;
        crash_point!("raw_append::after_decode");
        self.decode_ms += took.as_millis() as u64;
        let started = Instant::now();
        for (((key, chunk), rows), skips) in slice.chunks.iter().zip(decoded).zip(skipped) {
            let idx = sinks.by_topic[key.topic.as_ref()];
            self.skipped[idx].add(skips);
            if rows.batch.num_rows() > 0 {
                let route = &sinks.routes[idx];
                let writer = self.writers[idx].get_or_insert_with(|| {
                    TableWriter::new(
                        sinks.tables[idx].table(),
                        route.schema().clone(),
                        &route.spec.partition_columns,
                        sinks.job.target_file_size.0,
                    )
                });
                match &rows.constant_partition {
                    Some(values) => writer.write_partition(&rows.batch, values).await?,
                    None => writer.write(&rows.batch).await?,
                }
                self.rows[idx] += rows.batch.num_rows() as u64;
            }
            if rows.rejects.is_empty() {
                continue;
            }
            // The dead-letter table may already hold rejects of a batch whose main commit
            // did not land before a crash: skip what its own progress covers (checked again
            // against the snapshot the dead letters commit on).
            let floor = sinks.dead_letter.progress(&sinks.app_id(key)).await?;
            for reject in rows.rejects {
                if floor.is_none_or(|f| chunk.offsets[reject.index] > f) {
                    self.dead.push(key, chunk, reject.index, &reject.reason, &sinks.routes[idx].table_name);
                    self.dead_partitions.insert(key.clone(), ());
                }
            }
        }
        self.write_ms += started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Records Kinesis shard positions (after the slice holding their records was added): the
    /// commit records each position's counter, and writes the position beside the table first.
    /// A shard found finished without new records commits its last counter again, marked finished.
    pub fn record_positions(&mut self, sinks: &Sinks, positions: Vec<(PartitionKey, ShardPosition)>) {
        for (key, position) in positions {
            self.start.entry(key.clone()).or_insert_with(|| sinks.resume.point(&key));
            self.last_offsets.insert(key.clone(), position.counter);
            self.positions.insert(key, position);
        }
    }

    /// Records offsets skipped by configuration: the partition's progress moves past them in
    /// this batch's commit, and a marker row names them in the dead-letter table.
    pub fn mark_skipped(&mut self, sinks: &Sinks, range: SkippedRange) {
        let key = range.key.clone();
        self.start.entry(key.clone()).or_insert(range.progress);
        self.last_offsets.entry(key.clone()).or_insert(range.resume_at - 1);
        let table = &sinks.routes[sinks.by_topic[key.topic.as_ref()]].table_name;
        self.dead.push_marker(&key, range.next, &range.reason, table);
        self.dead_partitions.insert(key, ());
        self.skips.push(range);
    }

    /// Commits the batch: dead letters first, then each table with its partitions' progress.
    /// A crash between any two steps leaves every table consistent with its own progress.
    /// Returns the partitions of tables whose progress another task moved since the batch
    /// started (their part of the batch was dropped; they must be re-read from the table).
    pub async fn commit(mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<Vec<PartitionKey>, RawAppendError> {
        self.drain(sinks).await?;
        self.commit_dead_letters(sinks, summary).await?;
        let mut lost = Vec::new();
        for idx in 0..sinks.routes.len() {
            lost.extend(self.commit_table(idx, sinks, summary).await?);
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
        let all = self.dead.to_batch(&sinks.job.job_id, Utc::now())?;
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

    /// Commits table `idx`'s rows with its partitions' progress; returns the partitions when
    /// another task moved their progress (nothing of this table's part landed).
    async fn commit_table(&mut self, idx: usize, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<Vec<PartitionKey>, RawAppendError> {
        let keys: Vec<PartitionKey> = self.last_offsets.keys().filter(|k| sinks.by_topic[k.topic.as_ref()] == idx).cloned().collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let txns: Vec<GuardedTxn> = keys
            .iter()
            .map(|k| GuardedTxn { app_id: sinks.app_id(k), expected: self.start.get(k).copied().flatten(), version: self.last_offsets[k] })
            .collect();
        let started = Instant::now();
        let adds = match self.writers[idx].take() {
            Some(writer) => writer.close().await?,
            None => Vec::new(),
        };
        self.write_ms += started.elapsed().as_millis() as u64;
        crash_point!("raw_append::after_upload");
        self.write_positions(idx, &keys, sinks).await?;
        let files = adds.len();
        // Partition values of the new files (repeats collapse in the manifest writer).
        let touched: Vec<HashMap<String, Option<String>>> =
            adds.iter().map(|a| a.partition_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).collect();
        let started = Instant::now();
        let route = &sinks.routes[idx];
        let done = match sinks.tables[idx].commit_append(adds, txns, &sinks.job.job_id, self.number, commit_info(self.number)).await {
            Ok(done) => done,
            Err(CommitError::ProgressMoved { moved }) => {
                BatchDropped { table: &route.table_name, rows: self.rows[idx], moved: &moved }.emit(summary);
                return Ok(keys);
            }
            Err(e) => return Err(e.into()),
        };
        BatchCommitted {
            table: &route.table_name,
            version: done.version,
            retries: done.retries,
            rows: self.rows[idx],
            files,
            partitions: keys.len(),
            decode_ms: self.decode_ms,
            write_ms: self.write_ms,
            commit_ms: started.elapsed().as_millis() as u64,
        }
        .emit(summary);
        DmsRecordsSkipped { table: &route.table_name, skipped: self.skipped[idx] }.emit(summary);
        for key in &keys {
            sinks.resume.committed(key, self.last_offsets[key]);
        }
        crash_point!("raw_append::after_commit");
        self.forget_superseded_positions(idx, &keys, sinks).await;
        maintenance::update_touched_manifests(sinks.tables[idx].table(), &route.table_name, &touched).await;
        Ok(Vec::new())
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

    /// Drops the batch uncommitted (shutdown deadline): uploads are aborted.
    pub async fn abandon(&mut self) {
        if let Some(decoding) = self.decoding.take() {
            let _ = decoding.await;
        }
        for writer in self.writers.iter_mut().filter_map(Option::take) {
            writer.abort().await;
        }
    }
}

/// A slice's decoding, on a blocking worker.
type Decoding = tokio::task::JoinHandle<Result<DecodedSlice, RawAppendError>>;

/// A slice and its table rows.
struct DecodedSlice {
    slice: RawBatch,
    /// One per chunk of the slice, in its order.
    rows: Vec<ChunkRows>,
    /// DMS records skipped, one per chunk.
    skipped: Vec<dms::Skipped>,
    /// Time spent decoding.
    took: Duration,
}

/// Decodes a slice's chunks into table rows on a blocking worker (CPU work, kept off the
/// async workers).
fn spawn_decode(sinks: &Sinks, slice: RawBatch, ingested_at: DateTime<Utc>) -> Decoding {
    let routes = sinks.routes.clone();
    let by_topic = sinks.by_topic.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut rows: Vec<ChunkRows> = Vec::with_capacity(slice.chunks.len());
        let mut skipped = Vec::with_capacity(slice.chunks.len());
        for (key, chunk) in &slice.chunks {
            let route = &routes[by_topic[key.topic.as_ref()]];
            let (decoded, skips) = decode_chunk(route, &chunk.payloads())?;
            rows.push(table_rows::build(route, key, chunk, decoded, ingested_at)?);
            skipped.push(skips);
        }
        Ok(DecodedSlice { slice, rows, skipped, took: started.elapsed() })
    })
}

/// Decodes a chunk's messages by its route's format.
fn decode_chunk(route: &Route, payloads: &[&[u8]]) -> Result<(json_arrow::Decoded, dms::Skipped), json_arrow::DecodeError> {
    match route.format {
        SourceFormat::Json => Ok((route.decoder.decode(payloads)?, dms::Skipped::default())),
        SourceFormat::Dms => {
            let selection = dms::select(payloads);
            let kept: Vec<&[u8]> = selection.kept.iter().map(|&i| payloads[i as usize]).collect();
            let decoded = dms::restore(route.decoder.decode(&kept)?, &selection.kept);
            Ok((decoded, selection.skipped))
        }
    }
}

fn commit_info(batch_no: i64) -> HashMap<String, serde_json::Value> {
    HashMap::from([("lakehouse.job".to_string(), serde_json::json!({ "name": "raw-append", "batch": batch_no }))])
}
