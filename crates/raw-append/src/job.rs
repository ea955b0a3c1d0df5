//! The raw-append run: resume from the tables, read Kafka, commit batches exactly once.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use chrono::Utc;
use delta_io::{commit_append, open_or_create, read_progress, write_files, CommitError, DeltaIoError, DeltaTable, Transaction};
use job_runtime::{crash_point, Progress, RunSummary, Shutdown};
use kafka_source::{
    client_config, fetch_watermarks, FillOutcome, KafkaError, KafkaReader, LakeContext, MskTokenProvider, PartitionKey, ProgressLookup, RawBatch,
    ReaderLimits, StartPosition,
};
use pipeline_config::{PipelineConfig, RawAppendConfig, SaslMechanism, Trigger};

use crate::dead_letter::{self, DeadLetters};
use crate::events::{BatchCommitted, BatchRead, DeadLettered};
use crate::routes::{self, Route};
use crate::table_rows;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RawAppendError {
    /// The configuration has no `[raw_append]` section.
    #[error("raw_append: section missing from the configuration; add [raw_append] with at least one source")]
    NotConfigured,
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Delta access failed.
    #[error(transparent)]
    Delta(#[from] DeltaIoError),
    /// A commit did not land.
    #[error("commit: {0}. Another writer committed the same partitions; with several tasks use a consumer group (raw_append.group_id). Restarting resumes correctly from the table")]
    Commit(#[from] CommitError),
    /// Building rows failed (a bug, not bad input: bad input goes to the dead-letter table).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Decoder failure (a bug, not bad input).
    #[error(transparent)]
    Decode(#[from] json_arrow::DecodeError),
    /// The reader thread or a worker stopped unexpectedly.
    #[error("internal: {0}")]
    Internal(String),
}

const DEAD_LETTER: &str = "dead_letter";

/// A raw-append run over a validated configuration: build it, then `.await` it.
pub struct RawAppend {
    config: PipelineConfig,
    job: RawAppendConfig,
    trigger: Trigger,
    shutdown: Shutdown,
}

impl RawAppend {
    /// A run of the configuration's `[raw_append]` job.
    pub fn new(config: PipelineConfig) -> Result<Self, RawAppendError> {
        let job = config.raw_append.clone().ok_or(RawAppendError::NotConfigured)?;
        Ok(Self { trigger: job.trigger, config, job, shutdown: Shutdown::default() })
    }

    /// Overrides the configured trigger.
    pub fn with_trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    /// Stops when this flag is raised (SIGTERM/SIGINT in the binary).
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    async fn execute(self) -> Result<RunSummary, RawAppendError> {
        let started = Instant::now();
        let trigger_name = match self.trigger {
            Trigger::Once => "once",
            Trigger::Continuous => "continuous",
        };
        let mut summary = RunSummary::new("raw-append", trigger_name);
        let routes = Arc::new(Route::all(&self.config, &self.job));
        let by_topic: HashMap<String, usize> = routes::by_topic(&routes).into_iter().map(|(t, i)| (t.to_string(), i)).collect();

        let mut tables = Vec::with_capacity(routes.len());
        for route in routes.iter() {
            tables.push(open_or_create(&route.spec).await?);
        }
        let dlq_spec = dead_letter::table_spec(self.config.table_location(&self.job.dead_letter_table), self.config.lake.storage_options.clone());
        let mut dlq_table = open_or_create(&dlq_spec).await?;

        let msk = match self.config.kafka.sasl_mechanism {
            Some(SaslMechanism::AwsMskIam) => Some(Arc::new(MskTokenProvider::start(self.config.kafka.aws_region.clone()).await?)),
            _ => None,
        };
        let kafka = client_config(&self.config.kafka);
        let topics: Vec<&str> = routes.iter().map(|r| r.topic.as_str()).collect();
        let job_id = self.job.job_id.clone();
        let app_id = move |k: &PartitionKey| format!("{}:{}:{}", job_id, k.topic, k.partition);

        let limits = ReaderLimits {
            max_messages: self.job.max_batch_rows as usize,
            max_bytes: self.job.max_batch_bytes.0 as usize,
            max_latency: match self.trigger {
                // Trigger-once batches are bounded by size only.
                Trigger::Once => Duration::MAX,
                Trigger::Continuous => self.job.interval.0,
            },
        };

        let mut expected_total: Option<u64> = None;
        let reader = match (&self.job.group_id, self.trigger) {
            (Some(group), Trigger::Continuous) => {
                let handle = tokio::runtime::Handle::current();
                let locations: HashMap<String, (String, BTreeMap<String, String>)> =
                    routes.iter().map(|r| (r.topic.clone(), (r.spec.location.clone(), r.spec.storage.clone()))).collect();
                let job_id = self.job.job_id.clone();
                let lookup: ProgressLookup = Arc::new(move |topic: &str, partition: i32| {
                    let (location, storage) = locations.get(topic).ok_or_else(|| format!("no route for topic {topic}"))?;
                    let app = format!("{job_id}:{topic}:{partition}");
                    handle.block_on(async {
                        let table = delta_io::open_table(location, storage).await.map_err(|e| e.to_string())?;
                        let v = read_progress(&table, &app).await.map_err(|e| e.to_string())?;
                        Ok(v.map(|last| last + 1))
                    })
                });
                let context = LakeContext::new(msk.clone()).with_progress(lookup);
                KafkaReader::group(kafka.clone(), context, &topics, group)?
            }
            _ => {
                let context = LakeContext::new(msk.clone());
                let watermarks = fetch_watermarks(&kafka, context.clone(), &topics)?;
                let mut starts = Vec::new();
                let mut pending = 0u64;
                for (key, (low, high)) in &watermarks {
                    let table = &tables[by_topic[key.topic.as_ref()]];
                    let next = read_progress(table, &app_id(key)).await?.map(|v| v + 1);
                    let from = next.unwrap_or(*low).max(*low);
                    if next.is_some_and(|n| n < *low) {
                        tracing::warn!(topic = %key.topic, partition = key.partition, next = next, low = low, "retention removed messages this job never read; continuing from the earliest available");
                    }
                    pending += (high - from).max(0) as u64;
                    starts.push((key.clone(), StartPosition::Offset(from)));
                }
                starts.sort_by(|a, b| a.0.cmp(&b.0));
                if self.trigger == Trigger::Once {
                    if pending == 0 {
                        summary.status = "no_new_data".into();
                        tracing::info!(stage = "start", "no new data in any partition");
                        return Ok(finish(summary, started));
                    }
                    expected_total = Some(pending);
                    let ends = watermarks.iter().map(|(k, (_, high))| (k.clone(), *high)).collect();
                    tracing::info!(stage = "start", partitions = starts.len(), pending, "reading to the high watermarks captured at start");
                    KafkaReader::manual(kafka.clone(), context, &starts, Some(ends))?
                } else {
                    KafkaReader::manual(kafka.clone(), context, &starts, None)?
                }
            }
        };

        // The reader runs on its own thread and hands over one batch while filling the next.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(RawBatch, FillOutcome, Vec<(String, i32)>), KafkaError>>(1);
        let stop = self.shutdown.flag();
        let reader_thread = std::thread::Builder::new()
            .name("kafka-reader".into())
            .spawn(move || {
                let mut reader = reader;
                loop {
                    let mut batch = RawBatch::default();
                    let result = reader.fill(&mut batch, &limits, &stop);
                    let revoked: Vec<(String, i32)> = reader.take_revoked().into_iter().collect();
                    if !revoked.is_empty() {
                        batch.drop_partitions(&revoked.iter().cloned().collect());
                    }
                    let last = !matches!(result, Ok(FillOutcome::Full | FillOutcome::LatencyReached));
                    if tx.blocking_send(result.map(|o| (batch, o, revoked))).is_err() || last {
                        break;
                    }
                }
            })
            .map_err(|e| RawAppendError::Internal(format!("cannot start the reader thread: {e}")))?;

        let progress = expected_total.and_then(|total| Progress::for_terminal(total, "messages"));

        let mut dlq_progress: HashMap<PartitionKey, Option<i64>> = HashMap::new();
        let mut batch_no: i64 = 0;
        let mut shutdown_deadline: Option<Duration> = None;
        while let Some(received) = rx.recv().await {
            let (batch, outcome, revoked) = received?;
            for (topic, partition) in revoked {
                dlq_progress.remove(&PartitionKey::new(&topic, partition));
            }
            if outcome == FillOutcome::Stopped {
                shutdown_deadline = Some(self.job.shutdown_timeout.0);
            }
            if !batch.is_empty() {
                batch_no += 1;
                BatchRead { messages: batch.messages as u64, bytes: batch.bytes as u64 }.emit(&mut summary);
                let work = commit_batch(
                    &routes, &by_topic, &mut tables, &mut dlq_table, &mut dlq_progress, &app_id, &self.job, batch, batch_no, &mut summary,
                );
                match shutdown_deadline {
                    Some(limit) => match tokio::time::timeout(limit, work).await {
                        Ok(result) => result?,
                        Err(_) => {
                            tracing::warn!(stage = "shutdown", "stop timeout reached: batch abandoned uncommitted; the next run re-reads it");
                            summary.status = "stopped".into();
                        }
                    },
                    None => work.await?,
                }
                if let Some(bar) = &progress {
                    bar.set(summary.rows_in);
                }
            }
            match outcome {
                FillOutcome::CaughtUp => break,
                FillOutcome::Stopped => {
                    if summary.status == "ok" {
                        summary.status = "stopped".into();
                    }
                    break;
                }
                FillOutcome::Full | FillOutcome::LatencyReached => {}
            }
        }
        if let Some(bar) = progress {
            bar.finish();
        }
        reader_thread.join().map_err(|_| RawAppendError::Internal("the reader thread panicked".into()))?;
        if summary.rows_in == 0 && summary.status == "ok" {
            summary.status = "no_new_data".into();
        }
        Ok(finish(summary, started))
    }
}

fn finish(mut summary: RunSummary, started: Instant) -> RunSummary {
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary
}

/// Decodes one batch, then commits: dead letters first, then each target table with its
/// partitions' progress. A crash between any two steps leaves every table consistent.
#[allow(clippy::too_many_arguments)]
async fn commit_batch(
    routes: &Arc<Vec<Route>>,
    by_topic: &HashMap<String, usize>,
    tables: &mut [DeltaTable],
    dlq_table: &mut DeltaTable,
    dlq_progress: &mut HashMap<PartitionKey, Option<i64>>,
    app_id: &(impl Fn(&PartitionKey) -> String + Sync),
    job: &RawAppendConfig,
    batch: RawBatch,
    batch_no: i64,
    summary: &mut RunSummary,
) -> Result<(), RawAppendError> {
    let ingested_at = Utc::now();
    // Decoding is CPU work: keep it off the async workers.
    let decode_routes = routes.clone();
    let decode_index = by_topic.clone();
    let (batch, decoded) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(batch.chunks.len());
        for (key, chunk) in &batch.chunks {
            let route = &decode_routes[decode_index[key.topic.as_ref()]];
            let decoded = route.decoder.decode(&chunk.payloads()).map_err(RawAppendError::from)?;
            out.push(table_rows::build(route, key, chunk, decoded, ingested_at).map_err(RawAppendError::from)?);
        }
        Ok::<_, RawAppendError>((batch, out))
    })
    .await
    .map_err(|e| RawAppendError::Internal(format!("decode worker: {e}")))??;
    crash_point!("raw_append::after_decode");

    let mut rows_by_route: Vec<Vec<RecordBatch>> = vec![Vec::new(); routes.len()];
    let mut txns_by_route: Vec<Vec<Transaction>> = vec![Vec::new(); routes.len()];
    let mut dead = DeadLetters::default();
    let mut dlq_txns = Vec::new();
    for ((key, chunk), rows) in batch.chunks.iter().zip(decoded) {
        let idx = by_topic[key.topic.as_ref()];
        let Some(last) = chunk.last_offset() else { continue };
        txns_by_route[idx].push(Transaction::new(app_id(key), last));
        if rows.batch.num_rows() > 0 {
            rows_by_route[idx].push(rows.batch);
        }
        if rows.rejects.is_empty() {
            continue;
        }
        let floor = match dlq_progress.get(key) {
            Some(v) => *v,
            None => {
                let v = read_progress(dlq_table, &app_id(key)).await?;
                dlq_progress.insert(key.clone(), v);
                v
            }
        };
        let mut any = false;
        for reject in rows.rejects {
            if floor.is_none_or(|f| chunk.offsets[reject.index] > f) {
                dead.push(key, chunk, reject.index, reject.reason, &routes[idx].table_name);
                any = true;
            }
        }
        if any {
            dlq_txns.push((key.clone(), Transaction::new(app_id(key), last)));
        }
    }

    if dead.len() > 0 {
        let rows = dead.to_batch(&job.job_id, Utc::now())?;
        let example = rows.column(7).as_any().downcast_ref::<arrow::array::StringArray>().map(|a| a.value(0).to_string()).unwrap_or_default();
        let adds = write_files(dlq_table, dead_letter::schema(), &["failed_date".to_string()], &[rows], job.target_file_size.0).await?;
        crash_point!("raw_append::after_dead_letter_upload");
        let txns = dlq_txns.iter().map(|(_, t)| t.clone()).collect();
        let done = commit_append(dlq_table, adds, txns, &job.job_id, batch_no, commit_info(batch_no)).await?;
        for (key, t) in &dlq_txns {
            dlq_progress.insert(key.clone(), Some(t.version));
        }
        DeadLettered { table: DEAD_LETTER, version: done.version, count: dead.len() as u64, example: &example }.emit(summary);
        crash_point!("raw_append::after_dead_letter_commit");
    }

    for (idx, route) in routes.iter().enumerate() {
        let txns = std::mem::take(&mut txns_by_route[idx]);
        if txns.is_empty() {
            continue;
        }
        let rows = std::mem::take(&mut rows_by_route[idx]);
        let row_count: usize = rows.iter().map(RecordBatch::num_rows).sum();
        let adds = write_files(&tables[idx], route.schema().clone(), &route.spec.partition_columns, &rows, job.target_file_size.0).await?;
        drop(rows);
        crash_point!("raw_append::after_upload");
        let files = adds.len();
        let partitions = txns.len();
        let done = commit_append(&mut tables[idx], adds, txns, &job.job_id, batch_no, commit_info(batch_no)).await?;
        BatchCommitted { table: &route.table_name, version: done.version, rows: row_count as u64, files, partitions }.emit(summary);
        crash_point!("raw_append::after_commit");
    }
    Ok(())
}

fn commit_info(batch_no: i64) -> HashMap<String, serde_json::Value> {
    HashMap::from([("lakehouse.job".to_string(), serde_json::json!({ "name": "raw-append", "batch": batch_no }))])
}

impl IntoFuture for RawAppend {
    type Output = Result<RunSummary, RawAppendError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
