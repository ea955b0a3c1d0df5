//! One raw-append batch: slices of messages are decoded and streamed into Parquet writers as
//! they arrive; at the batch boundary the dead letters are committed, then each table with the
//! `txn` progress of its partitions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use chrono::{DateTime, Utc};
use delta_io::{Add, TableWriter};
use job_runtime::{crash_point, RunSummary};
use json_arrow::SchemaInference;
use kafka_source::{PartitionChunk, PartitionKey, RawBatch};
use kinesis_source::ShardPosition;

use crate::dead_letter::DeadLetters;
use crate::dms;
use crate::events::SchemaEvolved;
use crate::evolution;
use crate::handover::SkippedRange;
use crate::sinks::Sinks;
use crate::table_rows::ChunkRows;
use crate::RawAppendError;

mod commit;
mod decode;

use decode::{joined, spawn_decode, DecodedSlice, Decoding};

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
        // Encoding happens on the thread running the batch (the run loop's).
        job_runtime::lower_cpu_work_priority();
        sinks.open_tables(decoded.iter().flatten().filter(|(_, rows)| rows.batch.num_rows() > 0).map(|(idx, _)| *idx)).await?;
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
            messages.iter().for_each(|&m| rejects.push(m, &reason));
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
        for (index, reason) in rejects.iter() {
            if floor.is_none_or(|f| chunk.offsets[index] > f) {
                self.dead.push(key, chunk, index, reason, &sinks.routes[idx].table_name);
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
