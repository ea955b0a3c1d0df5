//! One raw-append batch: slices of messages are decoded and streamed into Parquet writers as
//! they arrive; at the batch boundary the dead letters are committed, then each table with the
//! `txn` progress of its partitions.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use delta_io::{commit_append, read_progress, write_files, DeltaTable, TableWriter, Transaction};
use job_runtime::{crash_point, RunSummary};
use kafka_source::{PartitionKey, RawBatch};
use pipeline_config::RawAppendConfig;

use crate::dead_letter::{self, DeadLetters};
use crate::events::{BatchCommitted, DeadLettered};
use crate::routes::Route;
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
    pub tables: Vec<DeltaTable>,
    /// The dead-letter table.
    pub dead_letter: DeltaTable,
    /// Dead-letter progress per partition (read lazily, dropped on revocation).
    pub dead_letter_progress: HashMap<PartitionKey, Option<i64>>,
    /// The job's settings.
    pub job: RawAppendConfig,
    /// Latest known high watermark per partition (consumer-lag figures).
    pub high_watermarks: HashMap<PartitionKey, i64>,
}

impl Sinks {
    /// `<job-id>:<topic>:<partition>`, the txn app id of a source partition.
    pub fn app_id(&self, key: &PartitionKey) -> String {
        format!("{}:{}:{}", self.job.job_id, key.topic, key.partition)
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
    dead: DeadLetters,
    /// Partitions that produced new dead letters in this batch.
    dead_partitions: BTreeMap<PartitionKey, ()>,
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
            dead: DeadLetters::default(),
            dead_partitions: BTreeMap::new(),
            decode_ms: 0,
            write_ms: 0,
            opened: None,
        }
    }

    /// True when no message was added.
    pub fn is_empty(&self) -> bool {
        self.last_offsets.is_empty()
    }

    /// Decodes a slice of messages and streams the rows into the tables' writers.
    pub async fn add(&mut self, sinks: &mut Sinks, slice: RawBatch) -> Result<(), RawAppendError> {
        let started = Instant::now();
        self.opened.get_or_insert(started);
        let routes = sinks.routes.clone();
        let by_topic = sinks.by_topic.clone();
        // One ingestion time per batch, so a batch lands in one ingestion-time partition.
        let ingested_at = *self.ingested_at.get_or_insert_with(Utc::now);
        // Decoding is CPU work: keep it off the async workers.
        let (slice, decoded) = tokio::task::spawn_blocking(move || {
            let mut out: Vec<ChunkRows> = Vec::with_capacity(slice.chunks.len());
            for (key, chunk) in &slice.chunks {
                let route = &routes[by_topic[key.topic.as_ref()]];
                let decoded = route.decoder.decode(&chunk.payloads())?;
                out.push(table_rows::build(route, key, chunk, decoded, ingested_at)?);
            }
            Ok::<_, RawAppendError>((slice, out))
        })
        .await
        .map_err(|e| RawAppendError::Internal(format!("decode worker: {e}")))??;
        crash_point!("raw_append::after_decode");
        self.decode_ms += started.elapsed().as_millis() as u64;

        let started = Instant::now();
        for ((key, chunk), rows) in slice.chunks.iter().zip(decoded) {
            let idx = sinks.by_topic[key.topic.as_ref()];
            let Some(last) = chunk.last_offset() else { continue };
            self.last_offsets.insert(key.clone(), last);
            if rows.batch.num_rows() > 0 {
                let route = &sinks.routes[idx];
                let writer = self.writers[idx].get_or_insert_with(|| {
                    TableWriter::new(&sinks.tables[idx], route.schema().clone(), &route.spec.partition_columns, sinks.job.target_file_size.0)
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
            // did not land before a crash: skip what its own progress covers.
            let floor = match sinks.dead_letter_progress.get(key) {
                Some(v) => *v,
                None => {
                    let v = read_progress(&sinks.dead_letter, &sinks.app_id(key)).await?;
                    sinks.dead_letter_progress.insert(key.clone(), v);
                    v
                }
            };
            for reject in rows.rejects {
                if floor.is_none_or(|f| chunk.offsets[reject.index] > f) {
                    self.dead.push(key, chunk, reject.index, reject.reason, &sinks.routes[idx].table_name);
                    self.dead_partitions.insert(key.clone(), ());
                }
            }
        }
        self.write_ms += started.elapsed().as_millis() as u64;
        Ok(())
    }

    /// Commits the batch: dead letters first, then each table with its partitions' progress.
    /// A crash between any two steps leaves every table consistent with its own progress.
    pub async fn commit(mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<(), RawAppendError> {
        if self.dead.len() > 0 {
            let rows = self.dead.to_batch(&sinks.job.job_id, Utc::now())?;
            let example = self.dead.first_reason().unwrap_or_default().to_string();
            let adds = write_files(&sinks.dead_letter, dead_letter::schema(), &dead_letter::partition_columns(), &[rows], sinks.job.target_file_size.0).await?;
            crash_point!("raw_append::after_dead_letter_upload");
            let txns: Vec<Transaction> =
                self.dead_partitions.keys().map(|k| Transaction::new(sinks.app_id(k), self.last_offsets[k])).collect();
            let done = commit_append(&mut sinks.dead_letter, adds, txns, &sinks.job.job_id, self.number, commit_info(self.number)).await?;
            for key in self.dead_partitions.keys() {
                sinks.dead_letter_progress.insert(key.clone(), Some(self.last_offsets[key]));
            }
            DeadLettered { table: DEAD_LETTER, version: done.version, retries: done.retries, count: self.dead.len() as u64, example: &example }.emit(summary);
            crash_point!("raw_append::after_dead_letter_commit");
        }

        let routes = sinks.routes.clone();
        for (idx, route) in routes.iter().enumerate() {
            let txns: Vec<Transaction> = self
                .last_offsets
                .iter()
                .filter(|(k, _)| sinks.by_topic[k.topic.as_ref()] == idx)
                .map(|(k, last)| Transaction::new(sinks.app_id(k), *last))
                .collect();
            if txns.is_empty() {
                continue;
            }
            let started = Instant::now();
            let adds = match self.writers[idx].take() {
                Some(writer) => writer.close().await?,
                None => Vec::new(),
            };
            self.write_ms += started.elapsed().as_millis() as u64;
            crash_point!("raw_append::after_upload");
            let files = adds.len();
            let partitions = txns.len();
            // Partition values of the new files (repeats collapse in the manifest writer).
            let touched: Vec<HashMap<String, Option<String>>> =
                adds.iter().map(|a| a.partition_values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).collect();
            let started = Instant::now();
            let done = commit_append(&mut sinks.tables[idx], adds, txns, &sinks.job.job_id, self.number, commit_info(self.number)).await?;
            BatchCommitted {
                table: &route.table_name,
                version: done.version,
                retries: done.retries,
                rows: self.rows[idx],
                files,
                partitions,
                decode_ms: self.decode_ms,
                write_ms: self.write_ms,
                commit_ms: started.elapsed().as_millis() as u64,
            }
            .emit(summary);
            crash_point!("raw_append::after_commit");
            maintenance::update_touched_manifests(&sinks.tables[idx], &route.table_name, &touched).await;
        }
        for (key, last) in &self.last_offsets {
            if let Some(high) = sinks.high_watermarks.get(key) {
                summary.consumer_lag(&key.topic, key.partition, (high - last - 1).max(0) as u64);
            }
        }
        summary.batch_done(self.opened.map_or(Duration::ZERO, |t| t.elapsed()));
        Ok(())
    }

    /// Drops the batch uncommitted (shutdown deadline): uploads are aborted.
    pub async fn abandon(mut self) {
        for writer in self.writers.iter_mut().filter_map(Option::take) {
            writer.abort().await;
        }
    }
}

fn commit_info(batch_no: i64) -> HashMap<String, serde_json::Value> {
    HashMap::from([("lakehouse.job".to_string(), serde_json::json!({ "name": "raw-append", "batch": batch_no }))])
}
