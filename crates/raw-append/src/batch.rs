//! One raw-append batch: slices of messages are decoded and streamed into Parquet writers as
//! they arrive; at the batch boundary the dead letters are committed, then each table with the
//! `txn` progress of its partitions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use chrono::{DateTime, Utc};
use delta_io::{write_files, Add, CommitError, GuardedTxn, TableWriter};
use job_runtime::{crash_point, RunSummary};
use json_arrow::SchemaInference;
use kafka_source::{messages_behind, PartitionChunk, PartitionKey, RawBatch};
use kinesis_source::ShardPosition;
use pipeline_config::SourceFormat;

use crate::dead_letter::{self, DeadLetters};
use crate::dms;
use crate::events::{BatchCommitted, BatchDropped, DeadLettered, DmsRecordsSkipped, OffsetsSkipped, SchemaEvolved};
use crate::evolution;
use crate::handover::SkippedRange;
use crate::router::Router;
use crate::routes::Route;
use crate::sinks::Sinks;
use crate::table_rows::{self, ChunkRows};
use crate::RawAppendError;

/// Name under which the dead-letter table appears in summaries.
pub const DEAD_LETTER: &str = "dead_letter";

/// A batch being assembled.
pub struct Batch {
    number: i64,
    /// When the batch's first slice arrived: the value of ingestion-time partitions.
    ingested_at: Option<DateTime<Utc>>,
    writers: Vec<Option<TableWriter>>,
    /// Files of writers closed before the commit (their table's schema evolved mid-batch).
    early_adds: Vec<Vec<Add>>,
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
    /// Routed tables: per partition, the table's progress its rows were filtered by (what the
    /// table's commit expects to replace).
    floors: BTreeMap<usize, BTreeMap<PartitionKey, Option<i64>>>,
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
            early_adds: vec![Vec::new(); routes],
            rows: vec![0; routes],
            last_offsets: BTreeMap::new(),
            start: BTreeMap::new(),
            skips: Vec::new(),
            dead: DeadLetters::default(),
            dead_partitions: BTreeMap::new(),
            floors: BTreeMap::new(),
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
    pub async fn add(&mut self, sinks: &mut Sinks, slice: RawBatch, summary: &mut RunSummary) -> Result<(), RawAppendError> {
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
            self.write_decoded(sinks, previous, summary).await?;
        }
        Ok(())
    }

    /// Writes the slice still being decoded, if any (before the batch commits).
    async fn drain(&mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<(), RawAppendError> {
        match self.decoding.take() {
            Some(decoding) => self.write_decoded(sinks, decoding, summary).await,
            None => Ok(()),
        }
    }

    /// Streams a decoded slice's rows into the tables' writers and keeps its rejects. New
    /// fields evolve their tables first, and the slice is decoded again with the new columns
    /// (as is a slice decoded with routes an evolution replaced meanwhile).
    async fn write_decoded(&mut self, sinks: &mut Sinks, decoding: Decoding, summary: &mut RunSummary) -> Result<(), RawAppendError> {
        let mut decoded = joined(decoding).await?;
        loop {
            self.decode_ms += decoded.took.as_millis() as u64;
            for (source, name) in std::mem::take(&mut decoded.new_tables) {
                sinks.add_inferred_table(&source, &name)?;
            }
            self.grow(sinks.routes.len());
            let stale = !Arc::ptr_eq(&decoded.routes, &sinks.routes);
            if !stale && !self.evolve(sinks, std::mem::take(&mut decoded.discovered), summary).await? {
                break;
            }
            let ingested_at = self.ingested_at.unwrap_or_else(Utc::now);
            decoded = joined(spawn_decode(sinks, decoded.slice, ingested_at)).await?;
        }
        let DecodedSlice { slice, rows: decoded, skipped, .. } = decoded;
        crash_point!("raw_append::after_decode");
        let started = Instant::now();
        for (((key, chunk), parts), skips) in slice.chunks.iter().zip(decoded).zip(skipped) {
            self.skipped[sinks.by_topic[key.topic.as_ref()]].add(skips);
            for (idx, rows) in parts {
                self.write_rows(sinks, idx, key, chunk, rows).await?;
            }
        }
        self.write_ms += started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Streams one chunk's rows for route `idx` into its table's writer and keeps its rejects.
    async fn write_rows(
        &mut self,
        sinks: &mut Sinks,
        idx: usize,
        key: &PartitionKey,
        chunk: &PartitionChunk,
        rows: ChunkRows,
    ) -> Result<(), RawAppendError> {
        let ChunkRows { mut batch, constant_partition, mut rejects, messages } = rows;
        if sinks.routes[idx].routed && batch.num_rows() > 0 {
            batch = self.above_floor(sinks, idx, key, chunk, batch, &messages).await?;
        }
        if batch.num_columns() == 0 && batch.num_rows() > 0 {
            // An inferred table none of whose fields could be a column: nothing to store.
            let reason = format!("no field of the message can be a column of table {}", sinks.routes[idx].table_name);
            rejects.extend(messages.iter().map(|&m| json_arrow::Reject { index: m as usize, reason: reason.clone() }));
            batch = RecordBatch::new_empty(batch.schema());
        }
        if batch.num_rows() > 0 {
            let (routes, target) = (sinks.routes.clone(), sinks.job.target_file_size.0);
            let route = &routes[idx];
            let table = sinks.table(idx).await?;
            let writer = self.writers[idx]
                .get_or_insert_with(|| TableWriter::new(table.table(), route.schema().clone(), &route.spec.partition_columns, target));
            match &constant_partition {
                Some(values) => writer.write_partition(&batch, values).await?,
                None => writer.write(&batch).await?,
            }
            self.rows[idx] += batch.num_rows() as u64;
        }
        if rejects.is_empty() {
            return Ok(());
        }
        // The dead-letter table may already hold rejects of a batch whose main commit did not
        // land before a crash: skip what its own progress covers (checked again against the
        // snapshot the dead letters commit on).
        let floor = sinks.dead_letter.progress(&sinks.app_id(key)).await?;
        for reject in rejects {
            if floor.is_none_or(|f| chunk.offsets[reject.index] > f) {
                self.dead.push(key, chunk, reject.index, &reject.reason, &sinks.routes[idx].table_name);
                self.dead_partitions.insert(key.clone(), ());
            }
        }
        Ok(())
    }

    /// Evolves the tables whose new fields a slice showed: plans their columns against the
    /// table's current schema, commits the missing ones (metadata only, before any row that
    /// carries them), and replaces the routes. True when a route changed (the slice must be
    /// decoded again); the files written so far with the old schema stay in the batch.
    async fn evolve(
        &mut self,
        sinks: &mut Sinks,
        discovered: Vec<(usize, SchemaInference)>,
        summary: &mut RunSummary,
    ) -> Result<bool, RawAppendError> {
        const ATTEMPTS: usize = 5;
        let mut changed = false;
        for (idx, inference) in discovered {
            let route = sinks.routes[idx].clone();
            let Some(fields) = &route.evolution else { continue };
            let mut attempt = 0;
            let (plan, version) = loop {
                let existing = sinks.existing_table(idx).await?;
                let current = match &existing {
                    Some(table) => table.arrow_schema()?,
                    None => route.schema().clone(),
                };
                let plan = evolution::plan(inference.evolution_columns(), fields, route.schema(), &current);
                // A table seen for the first time is created with its new columns at once.
                let outcome = match existing {
                    Some(table) => table.add_columns(&plan.new_in_table).await.map_err(RawAppendError::from),
                    None => sinks.create_table(idx, &route.evolved(&plan.columns).spec).await,
                };
                match outcome {
                    Ok(version) => break (plan, version),
                    // Another task evolved or created the table first: plan again on its schema.
                    Err(e) if attempt + 1 < ATTEMPTS => {
                        tracing::info!(stage = "evolve", table = %route.table_name, error = %e, "schema change not committed: planning again on the newest table");
                        sinks.refresh_table(idx).await?;
                    }
                    Err(e) => return Err(e),
                }
                attempt += 1;
            };
            if version.is_some() {
                crash_point!("raw_append::after_schema_commit");
            }
            let refused: Vec<(String, String)> =
                plan.refused.into_iter().filter(|(field, _)| sinks.refused.insert((idx, field.clone()))).collect();
            let columns: Vec<String> = plan.columns.iter().map(|c| c.name.clone()).collect();
            let added = plan.new_in_table.len();
            SchemaEvolved { table: &route.table_name, version, columns: &columns, added, refused: &refused }.emit(summary);
            if plan.columns.is_empty() {
                continue;
            }
            if let Some(writer) = self.writers[idx].take() {
                self.early_adds[idx].extend(writer.close().await?);
            }
            sinks.replace_route(idx, route.evolved(&plan.columns));
            changed = true;
        }
        Ok(changed)
    }

    /// Makes room for routes added since the batch began (inferred tables).
    fn grow(&mut self, routes: usize) {
        self.writers.resize_with(routes, || None);
        self.early_adds.resize_with(routes, Vec::new);
        self.rows.resize(routes, 0);
        self.skipped.resize(routes, dms::Skipped::default());
    }

    /// A routed table's rows minus those its own progress of the partition covers (written
    /// by a batch whose source progress did not land before a crash, or by another task).
    async fn above_floor(
        &mut self,
        sinks: &mut Sinks,
        idx: usize,
        key: &PartitionKey,
        chunk: &PartitionChunk,
        batch: RecordBatch,
        messages: &[u32],
    ) -> Result<RecordBatch, RawAppendError> {
        let floor = match self.floors.get(&idx).and_then(|f| f.get(key)) {
            Some(floor) => *floor,
            None => {
                let app = sinks.app_id(key);
                let floor = sinks.table(idx).await?.progress(&app).await?;
                self.floors.entry(idx).or_default().insert(key.clone(), floor);
                floor
            }
        };
        let Some(floor) = floor else { return Ok(batch) };
        let keep: BooleanArray = messages.iter().map(|&m| Some(chunk.offsets[m as usize] > floor)).collect();
        if keep.true_count() == keep.len() {
            return Ok(batch);
        }
        Ok(filter_record_batch(&batch, &keep)?)
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
    /// A routed source's partition whose offsets restarted (a recreated topic) fails: its
    /// routed tables' floors would hide the new offsets.
    pub fn mark_skipped(&mut self, sinks: &Sinks, range: SkippedRange) -> Result<(), RawAppendError> {
        if range.resume_at <= range.next && sinks.routers.contains_key(range.key.topic.as_ref()) {
            return Err(RawAppendError::RoutedSourceRestarted {
                topic: range.key.topic.to_string(),
                partition: range.key.partition,
                reason: range.reason,
            });
        }
        let key = range.key.clone();
        self.start.entry(key.clone()).or_insert(range.progress);
        self.last_offsets.entry(key.clone()).or_insert(range.resume_at - 1);
        let table = &sinks.routes[sinks.by_topic[key.topic.as_ref()]].table_name;
        self.dead.push_marker(&key, range.next, &range.reason, table);
        self.dead_partitions.insert(key, ());
        self.skips.push(range);
        Ok(())
    }

    /// Commits the batch: dead letters first, then routed tables, then each source's table
    /// with its partitions' progress. A crash between any two steps leaves every table
    /// consistent with its own progress. Returns the partitions whose progress another task
    /// moved since the batch started (their part of the batch was dropped, or for a routed
    /// source stopped short of its progress; they must be re-read from the table).
    pub async fn commit(mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<Vec<PartitionKey>, RawAppendError> {
        self.drain(sinks, summary).await?;
        self.commit_dead_letters(sinks, summary).await?;
        let mut routed_lost = BTreeMap::new();
        for idx in self.floors.keys().copied().collect::<Vec<_>>() {
            routed_lost.extend(self.commit_routed(idx, sinks, summary).await?.into_iter().map(|k| (k, ())));
        }
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

    /// Commits the rows of routed table `idx` with, per partition they came from, the batch's
    /// last offset as the table's floor (compare-and-set on the floor they were filtered by);
    /// returns the partitions when another task moved one (nothing of this table's part landed).
    async fn commit_routed(
        &mut self,
        idx: usize,
        sinks: &mut Sinks,
        summary: &mut RunSummary,
    ) -> Result<Vec<PartitionKey>, RawAppendError> {
        let floors = self.floors.remove(&idx).unwrap_or_default();
        if self.writers[idx].is_none() && self.early_adds[idx].is_empty() {
            return Ok(Vec::new()); // every row was below the floor: nothing to record
        }
        let keys: Vec<PartitionKey> = floors.keys().cloned().collect();
        let txns = floors
            .iter()
            .map(|(k, floor)| {
                let last = self.last_offsets[k];
                GuardedTxn { app_id: sinks.app_id(k), expected: *floor, version: floor.map_or(last, |f| f.max(last)) }
            })
            .collect();
        let landed = self.commit_rows(idx, &keys, txns, sinks, summary).await?;
        crash_point!("raw_append::after_routed_commit");
        Ok(if landed { Vec::new() } else { keys })
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
        let files = adds.len();
        // Partition values of the new files (repeats collapse in the manifest writer).
        let touched: Vec<HashMap<String, Option<String>>> =
            adds.iter().map(|a| a.partition_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).collect();
        let started = Instant::now();
        let routes = sinks.routes.clone();
        let (job_id, table_name) = (sinks.job.job_id.clone(), &routes[idx].table_name);
        let table = sinks.table(idx).await?;
        let done = match table.commit_append(adds, txns, &job_id, self.number, commit_info(self.number)).await {
            Ok(done) => done,
            Err(CommitError::ProgressMoved { moved }) => {
                BatchDropped { table: table_name, rows: self.rows[idx], moved: &moved }.emit(summary);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        BatchCommitted {
            table: table_name,
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
        maintenance::update_touched_manifests(table.table(), table_name, &touched).await;
        Ok(true)
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

/// Waits for a slice's decoding.
async fn joined(decoding: Decoding) -> Result<DecodedSlice, RawAppendError> {
    decoding.await.map_err(|e| RawAppendError::Internal(format!("decode worker: {e}")))?
}

/// A slice and its table rows.
struct DecodedSlice {
    slice: RawBatch,
    /// The routes it was decoded with.
    routes: Arc<Vec<Arc<Route>>>,
    /// Per route with schema evolution: the fields its rows hold that it does not read yet.
    discovered: Vec<(usize, SchemaInference)>,
    /// (source, table) of inferred tables without a route yet: their messages wait for it.
    new_tables: BTreeSet<(String, String)>,
    /// One per chunk of the slice, in its order: the rows of each route the chunk feeds.
    rows: Vec<Vec<(usize, ChunkRows)>>,
    /// DMS records skipped, one per chunk.
    skipped: Vec<dms::Skipped>,
    /// Time spent decoding.
    took: Duration,
}

/// Decodes a slice's chunks into table rows on a blocking worker (CPU work, kept off the
/// async workers).
fn spawn_decode(sinks: &Sinks, slice: RawBatch, ingested_at: DateTime<Utc>) -> Decoding {
    let (routes, by_topic, routers) = (sinks.routes.clone(), sinks.by_topic.clone(), sinks.routers.clone());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut rows = Vec::with_capacity(slice.chunks.len());
        let mut skipped = Vec::with_capacity(slice.chunks.len());
        let mut discovered: BTreeMap<usize, SchemaInference> = BTreeMap::new();
        let mut new_tables = BTreeSet::new();
        for (key, chunk) in &slice.chunks {
            let home = by_topic[key.topic.as_ref()];
            let payloads = chunk.payloads();
            let (groups, skips, new) = select((home, &routes[home]), routers.get(key.topic.as_ref()), &payloads);
            new_tables.extend(new.into_iter().map(|name| (key.topic.to_string(), name)));
            let mut parts = Vec::with_capacity(groups.len());
            for (idx, group) in groups {
                let route = &routes[idx];
                let decoded = match group {
                    Group::All => route.decoder.decode(&payloads)?,
                    Group::Some(kept) => {
                        let messages: Vec<&[u8]> = kept.iter().map(|&i| payloads[i as usize]).collect();
                        dms::restore(route.decoder.decode(&messages)?, &kept)
                    }
                    Group::Unrouted(rejects) => json_arrow::Decoded {
                        batch: RecordBatch::new_empty(route.decoder.table_schema().clone()),
                        rows: Vec::new(),
                        rejects,
                    },
                };
                let built = table_rows::build(route, key, chunk, decoded, ingested_at)?;
                if let Some(fields) = &route.evolution {
                    let flatten = route.flatten();
                    let inference = discovered.entry(idx).or_insert_with(|| SchemaInference::new(&flatten.separator, flatten.max_depth));
                    built.messages.iter().for_each(|&m| fields.observe(payloads[m as usize], inference));
                }
                parts.push((idx, built));
            }
            rows.push(parts);
            skipped.push(skips);
        }
        let discovered = discovered.into_iter().filter(|(_, found)| !found.is_empty()).collect();
        Ok(DecodedSlice { slice, routes, discovered, new_tables, rows, skipped, took: started.elapsed() })
    })
}

/// Messages of a chunk bound for one route.
enum Group {
    /// Every message (a plain source: no copy of the payload list).
    All,
    /// These (chunk indexes).
    Some(Vec<u32>),
    /// None: the messages a router could not place, rejected with their reasons.
    Unrouted(Vec<json_arrow::Reject>),
}

/// Which messages of a chunk go to which route: DMS control records are skipped, a routed
/// source's messages are split by table.
fn select((home_idx, home): (usize, &Route), router: Option<&Router>, payloads: &[&[u8]]) -> Selection {
    let (kept, skipped) = match home.format {
        SourceFormat::Json if router.is_none() => return (vec![(home_idx, Group::All)], dms::Skipped::default(), BTreeSet::new()),
        SourceFormat::Json => ((0..payloads.len() as u32).collect(), dms::Skipped::default()),
        SourceFormat::Dms => {
            let selection = dms::select(payloads);
            (selection.kept, selection.skipped)
        }
    };
    let Some(router) = router else { return (vec![(home_idx, Group::Some(kept))], skipped, BTreeSet::new()) };
    let split = router.split(payloads, &kept);
    let mut groups: Vec<(usize, Group)> = split.groups.into_iter().map(|(idx, kept)| (idx, Group::Some(kept))).collect();
    if !split.unrouted.is_empty() {
        groups.push((home_idx, Group::Unrouted(split.unrouted)));
    }
    (groups, skipped, split.new_tables)
}

/// A chunk's messages by route, the DMS records skipped, and the inferred tables its
/// messages need that have no route yet.
type Selection = (Vec<(usize, Group)>, dms::Skipped, BTreeSet<String>);

fn commit_info(batch_no: i64) -> HashMap<String, serde_json::Value> {
    HashMap::from([("lakehouse.job".to_string(), serde_json::json!({ "name": "raw-append", "batch": batch_no }))])
}
