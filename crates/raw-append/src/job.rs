//! The raw-append run: resume from the tables, read Kafka, commit batches exactly once.

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use delta_io::{open_or_create, read_progress, CommitError, DeltaIoError};
use job_runtime::{Progress, RunSummary, Shutdown};
use kafka_source::{
    client_config, fetch_watermarks, FillOutcome, KafkaError, KafkaReader, LakeContext, MskTokenProvider, ProgressLookup, RawBatch, ReaderLimits,
    RevokeHook, StartPosition,
};
use pipeline_config::{PipelineConfig, RawAppendConfig, SaslMechanism, Trigger};

use crate::batch::{Batch, Sinks};
use crate::dead_letter;
use crate::events::BatchRead;
use crate::routes::{self, Route};

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
    #[error("commit: {0}")]
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
        let mut tables = Vec::with_capacity(routes.len());
        for route in routes.iter() {
            tables.push(open_or_create(&route.spec).await?);
        }
        let dlq_spec = dead_letter::table_spec(self.config.table_location(&self.job.dead_letter_table), self.config.lake.storage_options.clone());
        let mut sinks = Sinks {
            routes: routes.clone(),
            by_topic: Arc::new(routes::by_topic(&routes)),
            tables,
            dead_letter: open_or_create(&dlq_spec).await?,
            dead_letter_progress: HashMap::new(),
            high_watermarks: HashMap::new(),
            job: self.job.clone(),
        };

        let msk = match self.config.kafka.sasl_mechanism {
            Some(SaslMechanism::AwsMskIam) => Some(Arc::new(MskTokenProvider::start(self.config.kafka.aws_region.clone()).await?)),
            _ => None,
        };
        let kafka = client_config(&self.config.kafka);
        let topics: Vec<&str> = routes.iter().map(|r| r.topic.as_str()).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<ReaderMsg>(1);

        let mut expected_total: Option<u64> = None;
        let reader = match (&self.job.group_id, self.trigger) {
            (Some(group), Trigger::Continuous) => {
                let context = LakeContext::new(msk.clone()).with_progress(self.progress_lookup(&routes)).with_revoke_hook(flush_hook(tx.clone()));
                KafkaReader::group(kafka.clone(), context, &topics, group)?
            }
            _ => {
                let context = LakeContext::new(msk.clone());
                let watermarks = fetch_watermarks(&kafka, context.clone(), &topics)?;
                let mut starts = Vec::new();
                let mut pending = 0u64;
                for (key, (low, high)) in &watermarks {
                    let table = &sinks.tables[sinks.by_topic[key.topic.as_ref()]];
                    let next = read_progress(table, &sinks.app_id(key)).await?.map(|v| v + 1);
                    if next.is_some_and(|n| n < *low) {
                        tracing::warn!(topic = %key.topic, partition = key.partition, next, low, "retention removed messages this job never read; continuing from the earliest available");
                    }
                    let from = next.unwrap_or(*low).max(*low);
                    pending += (high - from).max(0) as u64;
                    starts.push((key.clone(), StartPosition::Offset(from)));
                }
                starts.sort_by(|a, b| a.0.cmp(&b.0));
                if self.trigger == Trigger::Once {
                    if pending == 0 {
                        tracing::info!(stage = "start", "no new data in any partition");
                        summary.status = "no_new_data".into();
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
        let limits = BatchLimits {
            messages: self.job.max_batch_rows as usize,
            bytes: self.job.max_batch_bytes.0 as usize,
            // Trigger-once batches are bounded by size only.
            interval: (self.trigger == Trigger::Continuous).then_some(self.job.interval.0),
        };
        let reader_thread = spawn_reader(reader, limits, self.shutdown.flag(), tx)?;

        let progress = expected_total.and_then(|total| Progress::for_terminal(total, "messages"));
        let mut batch_no: i64 = 0;
        let mut batch = Batch::new(batch_no + 1, routes.len());
        while let Some(msg) = rx.recv().await {
            job_runtime::heartbeat();
            let (mut slice, outcome, end_of_batch) = match msg {
                ReaderMsg::Slice { slice, outcome, end_of_batch } => (slice, outcome, end_of_batch),
                ReaderMsg::Flush(ack) => {
                    // Partitions are being revoked: commit what was read so far.
                    if !batch.is_empty() {
                        batch_no += 1;
                        std::mem::replace(&mut batch, Batch::new(batch_no + 1, routes.len())).commit(&mut sinks, &mut summary).await?;
                    }
                    sinks.dead_letter_progress.clear();
                    let _ = ack.send(());
                    continue;
                }
                ReaderMsg::Failed(e) => return Err(e.into()),
            };
            sinks.high_watermarks.extend(std::mem::take(&mut slice.high_watermarks));
            if !slice.is_empty() {
                BatchRead { messages: slice.messages as u64, bytes: slice.bytes as u64 }.emit(&mut summary);
                batch.add(&mut sinks, slice).await?;
                if let Some(bar) = &progress {
                    bar.set(summary.rows_in);
                }
            }
            let stopping = outcome == FillOutcome::Stopped;
            if end_of_batch && !batch.is_empty() {
                batch_no += 1;
                let full = std::mem::replace(&mut batch, Batch::new(batch_no + 1, routes.len()));
                if stopping {
                    // SIGTERM: the batch in flight gets the stop timeout to commit, or is abandoned.
                    if tokio::time::timeout(self.job.shutdown_timeout.0, full.commit(&mut sinks, &mut summary)).await.is_err() {
                        tracing::warn!(stage = "shutdown", "stop timeout reached: batch abandoned uncommitted; the next run re-reads it");
                    }
                } else {
                    full.commit(&mut sinks, &mut summary).await?;
                }
            }
            match outcome {
                FillOutcome::CaughtUp => break,
                FillOutcome::Stopped => {
                    summary.status = "stopped".into();
                    break;
                }
                FillOutcome::Full | FillOutcome::LatencyReached => {}
            }
        }
        if !batch.is_empty() {
            batch.abandon().await;
        }
        if let Some(bar) = progress {
            bar.finish();
        }
        drop(rx);
        reader_thread.join().map_err(|_| RawAppendError::Internal("the reader thread panicked".into()))?;
        if summary.rows_in == 0 && summary.status == "ok" {
            summary.status = "no_new_data".into();
        }
        Ok(finish(summary, started))
    }

    /// Reads a group-assigned partition's next offset from its table (never from group offsets).
    fn progress_lookup(&self, routes: &[Route]) -> ProgressLookup {
        let handle = tokio::runtime::Handle::current();
        let locations: HashMap<String, (String, BTreeMap<String, String>)> =
            routes.iter().map(|r| (r.topic.clone(), (r.spec.location.clone(), r.spec.storage.clone()))).collect();
        let job_id = self.job.job_id.clone();
        Arc::new(move |topic: &str, partition: i32| {
            let (location, storage) = locations.get(topic).ok_or_else(|| format!("no route for topic {topic}"))?;
            let app = format!("{job_id}:{topic}:{partition}");
            handle.block_on(async {
                let table = delta_io::open_table(location, storage).await.map_err(|e| e.to_string())?;
                let last = read_progress(&table, &app).await.map_err(|e| e.to_string())?;
                Ok(last.map(|v| v + 1))
            })
        })
    }
}

/// What the reader thread hands the run loop.
enum ReaderMsg {
    /// Messages read; `end_of_batch` closes the batch they belong to.
    Slice { slice: RawBatch, outcome: FillOutcome, end_of_batch: bool },
    /// Partitions are being revoked: commit the batch in progress, then acknowledge.
    Flush(std::sync::mpsc::Sender<()>),
    /// Reading failed.
    Failed(KafkaError),
}

/// Batch boundaries (a batch is one commit per table).
#[derive(Clone, Copy)]
struct BatchLimits {
    messages: usize,
    bytes: usize,
    /// Continuous mode: commit at the latest this long after a batch's first message.
    interval: Option<Duration>,
}

/// Messages are handed over in slices this size so decoding and encoding overlap reading.
const SLICE_MESSAGES: usize = 131_072;
const SLICE_BYTES: usize = 16 << 20;

/// How often the reader refreshes high watermarks for the consumer-lag figures.
const LAG_REFRESH: Duration = Duration::from_secs(15);

/// Runs the reader on its own thread: it fills the next slice while the previous one is decoded.
fn spawn_reader(
    mut reader: KafkaReader,
    limits: BatchLimits,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tx: tokio::sync::mpsc::Sender<ReaderMsg>,
) -> Result<std::thread::JoinHandle<()>, RawAppendError> {
    std::thread::Builder::new()
        .name("kafka-reader".into())
        .spawn(move || {
            let (mut messages, mut bytes, mut opened): (usize, usize, Option<Instant>) = (0, 0, None);
            let mut last_lag_refresh: Option<Instant> = None;
            loop {
                let slice_limits = ReaderLimits {
                    max_messages: (limits.messages - messages).min(SLICE_MESSAGES),
                    max_bytes: (limits.bytes.saturating_sub(bytes)).clamp(1, SLICE_BYTES),
                    max_latency: match (limits.interval, opened) {
                        (Some(interval), None) => interval,
                        _ => Duration::MAX,
                    },
                    deadline: limits.interval.zip(opened).map(|(interval, t)| t + interval),
                };
                let mut slice = RawBatch::default();
                if last_lag_refresh.is_none_or(|t| t.elapsed() >= LAG_REFRESH) {
                    slice.high_watermarks = reader.high_watermarks();
                    last_lag_refresh = Some(Instant::now());
                }
                let outcome = match reader.fill(&mut slice, &slice_limits, &stop) {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = tx.blocking_send(ReaderMsg::Failed(e));
                        return;
                    }
                };
                messages += slice.messages;
                bytes += slice.bytes;
                if opened.is_none() {
                    opened = slice.opened_at;
                }
                let end_of_batch = match outcome {
                    FillOutcome::Full => messages >= limits.messages || bytes >= limits.bytes,
                    FillOutcome::LatencyReached | FillOutcome::CaughtUp | FillOutcome::Stopped => true,
                };
                if end_of_batch {
                    (messages, bytes, opened) = (0, 0, None);
                }
                let last = matches!(outcome, FillOutcome::CaughtUp | FillOutcome::Stopped);
                if tx.blocking_send(ReaderMsg::Slice { slice, outcome, end_of_batch }).is_err() || last {
                    return;
                }
            }
        })
        .map_err(|e| RawAppendError::Internal(format!("cannot start the reader thread: {e}")))
}

/// The revoke hook: asks the run loop to commit and waits for it (runs on the reader thread,
/// inside librdkafka's rebalance callback).
fn flush_hook(tx: tokio::sync::mpsc::Sender<ReaderMsg>) -> RevokeHook {
    Arc::new(move || {
        let (ack, done) = std::sync::mpsc::channel();
        if tx.blocking_send(ReaderMsg::Flush(ack)).is_ok() {
            let _ = done.recv();
        }
    })
}

fn finish(mut summary: RunSummary, started: Instant) -> RunSummary {
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary
}

impl IntoFuture for RawAppend {
    type Output = Result<RunSummary, RawAppendError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
