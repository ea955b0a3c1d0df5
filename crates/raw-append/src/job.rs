//! The raw-append run: resume from the tables, read Kafka, commit batches exactly once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delta_io::{open_or_create, read_progress, ProgressTable};
use job_runtime::{PipelineJob, Progress, RunOptions, RunStatus, RunSummary, Shutdown};
use kafka_source::{
    client_config, fetch_watermarks, probe_position, ClientConfig, FillOutcome, KafkaError, KafkaReader, LakeContext, MskTokenProvider,
    PartitionKey, Position, ProgressLookup, RawBatch, ReaderLimits, RevokeHook, StartPosition,
};
use kinesis_source::{KinesisReader, StartAt};
use pipeline_config::{PipelineConfig, RawAppendConfig, SaslMechanism, SourceKind, StartingPosition, Trigger};

use crate::batch::Batch;
use crate::dead_letter;
use crate::error::RawAppendError;
use crate::events::{BatchRead, SourceRead};
use crate::feed::{BatchLimits, ReaderMsg, SourceNotes};
use crate::handover::Resume;
use crate::kinesis_feed::{FeedSettings, KinesisFeed, StreamFeed};
use crate::routes::Route;
use crate::sinks::{SinkParts, Sinks};

/// A raw-append run over a validated configuration.
pub struct RawAppend {
    config: PipelineConfig,
    job: RawAppendConfig,
    trigger: Trigger,
    shutdown: Shutdown,
}

impl PipelineJob for RawAppend {
    type Error = RawAppendError;
    const NAME: &'static str = "raw-append";

    /// A run of the configuration's `[raw_append]` job.
    fn from_config(config: PipelineConfig) -> Result<Self, RawAppendError> {
        let job = config.raw_append.clone().ok_or(RawAppendError::NotConfigured)?;
        Ok(Self { trigger: job.trigger, config, job, shutdown: Shutdown::default() })
    }

    async fn run(mut self, options: RunOptions) -> Result<RunSummary, RawAppendError> {
        self.trigger = options.trigger_or(self.job.trigger);
        self.shutdown = options.shutdown;
        self.execute().await
    }
}

impl RawAppend {
    async fn execute(self) -> Result<RunSummary, RawAppendError> {
        let started = Instant::now();
        let mut summary = RunSummary::new(Self::NAME, self.trigger.name());
        let mut sinks = self.open_sinks().await?;
        let limits = BatchLimits {
            messages: self.job.max_batch_rows as usize,
            bytes: self.job.max_batch_bytes.0 as usize,
            // Trigger-once batches are bounded by size only.
            interval: (self.trigger == Trigger::Continuous).then_some(self.job.interval.0),
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<ReaderMsg>(1);
        let kafka = self.start_kafka(&mut sinks, limits, tx.clone()).await?;
        let kinesis = self.start_kinesis(&sinks, limits, tx).await?;
        let readers = usize::from(kafka.is_some()) + usize::from(kinesis.is_some());
        if readers == 0 {
            tracing::info!(stage = "start", "no new data in any partition");
            summary.status = RunStatus::NoNewData;
            return Ok(finish(summary, started));
        }
        let progress = kafka.as_ref().and_then(|(_, total)| *total).and_then(|total| Progress::for_terminal(total, "messages"));
        let outcome = self.run_loop(&mut sinks, rx, readers, &mut summary, progress.as_ref()).await;
        if let Some(bar) = progress {
            bar.finish();
        }
        if let Some((thread, _)) = kafka {
            thread.join().map_err(|_| RawAppendError::Internal("the reader thread panicked".into()))?;
        }
        if let Some(task) = kinesis {
            task.await.map_err(|e| RawAppendError::Internal(format!("the kinesis reader task: {e}")))?;
        }
        outcome?;
        if summary.rows_in == 0 && summary.status == RunStatus::Ok && summary.skipped_offsets == 0 {
            summary.status = RunStatus::NoNewData;
        }
        Ok(finish(summary, started))
    }

    /// Starts the Kafka reader thread when the run has Kafka sources with something to read;
    /// returns it with the number of messages trigger once expects.
    async fn start_kafka(
        &self,
        sinks: &mut Sinks,
        limits: BatchLimits,
        tx: tokio::sync::mpsc::Sender<ReaderMsg>,
    ) -> Result<Option<(std::thread::JoinHandle<()>, Option<u64>)>, RawAppendError> {
        if !sinks.routes.iter().any(|r| r.reads(SourceKind::Kafka)) {
            return Ok(None);
        }
        let msk = match self.config.kafka.sasl_mechanism {
            Some(SaslMechanism::AwsMskIam) => Some(Arc::new(MskTokenProvider::start(self.config.kafka.aws_region.clone()).await?)),
            _ => None,
        };
        let kafka = client_config(&self.config.kafka);
        let lookup = self.progress_lookup(
            &sinks.routes,
            sinks.resume.clone(),
            Probe { kafka: kafka.clone(), context: LakeContext::new(msk.clone()) },
        );
        let Some((reader, expected_total)) = self.open_reader(sinks, kafka, msk, lookup.clone(), tx.clone()).await? else {
            return Ok(None);
        };
        let topics = sinks.routes.iter().filter(|r| r.reads(SourceKind::Kafka)).map(|r| r.source.clone()).collect();
        let rereads = Rereads { resume: sinks.resume.clone(), lookup, topics };
        Ok(Some((spawn_reader(reader, limits, self.shutdown.flag(), tx, rereads)?, expected_total)))
    }

    /// Starts the Kinesis reader task when the run has Kinesis sources.
    async fn start_kinesis(
        &self,
        sinks: &Sinks,
        limits: BatchLimits,
        tx: tokio::sync::mpsc::Sender<ReaderMsg>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, RawAppendError> {
        let streams: Vec<(usize, &Route)> =
            sinks.routes.iter().map(AsRef::as_ref).enumerate().filter(|(_, r)| r.reads(SourceKind::Kinesis)).collect();
        if streams.is_empty() {
            return Ok(None);
        }
        let settings = &self.config.kinesis;
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        let aws = loader.load().await;
        let mut feeds = Vec::with_capacity(streams.len());
        for (idx, route) in streams {
            let positions =
                sinks.shard_positions[idx].clone().ok_or_else(|| RawAppendError::Internal("a stream route without positions".into()))?;
            let reader = KinesisReader::new(&aws, &route.source);
            feeds.push(StreamFeed::new(reader, route.spec.location.clone(), route.spec.storage.clone(), positions));
        }
        let start = match settings.starting_position {
            StartingPosition::TrimHorizon => StartAt::TrimHorizon,
            StartingPosition::Latest => StartAt::Latest,
            StartingPosition::AtTimestamp => StartAt::AtTimestamp(settings.start_timestamp_ms.unwrap_or_default()),
        };
        let feed = KinesisFeed {
            streams: feeds,
            settings: FeedSettings {
                start,
                assignment: settings.assignment,
                on_expired: self.job.on_missing_offsets,
                limits,
                cutoff_ms: (self.trigger == Trigger::Once).then(|| job_runtime::now_ms() as i64),
                job_id: self.job.job_id.clone(),
            },
            resume: sinks.resume.clone(),
            stop: self.shutdown.flag(),
        };
        Ok(Some(tokio::spawn(feed.run(tx))))
    }

    /// Opens (or creates) the tables the run writes (routed tables on first sight).
    async fn open_sinks(&self) -> Result<Sinks, RawAppendError> {
        let (routes, routers) = Route::all(&self.config, &self.job);
        let dlq_spec =
            dead_letter::table_spec(self.config.table_location(&self.job.dead_letter_table), self.config.lake.storage_options.clone());
        let dead_letter = ProgressTable::new(open_or_create(&dlq_spec).await?);
        Sinks::open(routes, routers, SinkParts { dead_letter, job: self.job.clone() }).await
    }

    /// The Kafka reader: a group member (continuous with `group_id`, resuming each assigned
    /// partition from its table) or manual assignment of every partition from its table's
    /// progress. Trigger once also captures the high watermarks to read to, and returns None
    /// when there is nothing to read.
    async fn open_reader(
        &self,
        sinks: &mut Sinks,
        kafka: ClientConfig,
        msk: Option<Arc<MskTokenProvider>>,
        lookup: ProgressLookup,
        tx: tokio::sync::mpsc::Sender<ReaderMsg>,
    ) -> Result<Option<(KafkaReader, Option<u64>)>, RawAppendError> {
        let topics: Vec<&str> = sinks.routes.iter().filter(|r| r.reads(SourceKind::Kafka)).map(|r| r.source.as_str()).collect();
        if let (Some(group), Trigger::Continuous) = (&self.job.group_id, self.trigger) {
            // A subscription to a topic that does not exist would wait forever: refuse it.
            fetch_watermarks(&kafka, LakeContext::new(msk.clone()), &topics)?;
            let context = LakeContext::new(msk).with_progress(lookup).with_revoke_hook(flush_hook(tx));
            return Ok(Some((KafkaReader::group(kafka, context, &topics, group)?, None)));
        }
        let context = LakeContext::new(msk);
        let watermarks = fetch_watermarks(&kafka, context.clone(), &topics)?;
        let mut starts = Vec::new();
        let mut pending = 0u64;
        // The end each partition reads to: its listed high watermark, or what the probe found
        // past a listing that lags.
        let mut ends = HashMap::new();
        let probe = Probe { kafka: kafka.clone(), context: context.clone() };
        for (key, listed) in &watermarks {
            let app = sinks.app_id(key);
            let progress = sinks.table(sinks.by_topic[key.topic.as_ref()]).await?.progress(&app).await?;
            let (low, high) = probe.watermarks(key, progress, *listed)?;
            let next = sinks.resume.resumed(key, progress, (low, high))?;
            pending += (high - next).max(0) as u64;
            starts.push((key.clone(), StartPosition::Offset(next)));
            ends.insert(key.clone(), high);
        }
        starts.sort_by(|a, b| a.0.cmp(&b.0));
        if self.trigger == Trigger::Continuous {
            return Ok(Some((KafkaReader::manual(kafka, context, &starts, None)?, None)));
        }
        let skips = sinks.resume.has_skipped();
        if pending == 0 && !skips {
            return Ok(None);
        }
        tracing::info!(stage = "start", partitions = starts.len(), pending, "reading to the high watermarks captured at start");
        Ok(Some((KafkaReader::manual(kafka, context, &starts, Some(ends))?, Some(pending))))
    }

    /// Receives slices from the readers and commits batches until every reader is done or stopped.
    async fn run_loop(
        &self,
        sinks: &mut Sinks,
        mut rx: tokio::sync::mpsc::Receiver<ReaderMsg>,
        mut readers: usize,
        summary: &mut RunSummary,
        progress: Option<&Progress>,
    ) -> Result<(), RawAppendError> {
        let mut pending = Pending::new(sinks.routes.len());
        while let Some(msg) = rx.recv().await {
            job_runtime::heartbeat();
            for range in sinks.resume.take_skipped() {
                pending.batch.mark_skipped(sinks, range)?;
            }
            let (slice, outcome, end_of_batch, generation, notes) = match msg {
                ReaderMsg::Slice { slice, outcome, end_of_batch, generation, notes } => (slice, outcome, end_of_batch, generation, notes),
                ReaderMsg::Idle(high_watermarks) => {
                    sinks.high_watermarks.extend(high_watermarks);
                    continue;
                }
                ReaderMsg::Flush(ack) => {
                    // Partitions are being revoked: commit what was read so far.
                    pending.commit(sinks, summary).await?;
                    let _ = ack.send(());
                    continue;
                }
                ReaderMsg::Failed(e) => return Err(e),
            };
            pending.add(sinks, slice, notes, generation, summary).await?;
            if let Some(bar) = progress {
                bar.set(summary.rows_in);
            }
            let stopping = outcome == FillOutcome::Stopped;
            if end_of_batch && stopping {
                // SIGTERM: the batch in flight gets the stop timeout to commit, or is abandoned.
                if tokio::time::timeout(self.job.shutdown_timeout.0, pending.commit(sinks, summary)).await.is_err() {
                    tracing::warn!(stage = "shutdown", "stop timeout reached: batch abandoned uncommitted; the next run re-reads it");
                }
            } else if end_of_batch {
                pending.commit(sinks, summary).await?;
            }
            if stopping {
                summary.status = RunStatus::Stopped;
            }
            if matches!(outcome, FillOutcome::CaughtUp | FillOutcome::Stopped) {
                readers -= 1;
                if readers == 0 {
                    break;
                }
            }
        }
        pending.batch.abandon().await;
        Ok(())
    }

    /// Reads a partition's next offset from its table (never from group offsets), checked
    /// against its watermarks; used on group assignments and re-reads.
    fn progress_lookup(&self, routes: &[Arc<Route>], resume: Arc<Resume>, probe: Probe) -> ProgressLookup {
        let handle = tokio::runtime::Handle::current();
        let locations: HashMap<String, (String, BTreeMap<String, String>)> =
            routes.iter().filter(|r| !r.routed).map(|r| (r.source.clone(), (r.spec.location.clone(), r.spec.storage.clone()))).collect();
        let job_id = self.job.job_id.clone();
        Arc::new(move |key: &PartitionKey, watermarks: (i64, i64)| {
            let unreadable = |e: String| KafkaError::Rebalance(format!("{}[{}]: {e}", key.topic, key.partition));
            let (location, storage) = locations.get(key.topic.as_ref()).ok_or_else(|| unreadable("no route for this topic".into()))?;
            let app = key.txn_app_id(&job_id);
            let progress = handle
                .block_on(async {
                    let table = delta_io::open_table(location, storage).await?;
                    read_progress(&table, &app).await
                })
                .map_err(|e| unreadable(e.to_string()))?;
            resume.resumed(key, progress, probe.watermarks(key, progress, watermarks)?)
        })
    }
}

/// Confirms a partition's end when the recorded progress lies past the listed high watermark.
struct Probe {
    kafka: ClientConfig,
    context: LakeContext,
}

impl Probe {
    /// The partition's (low, high) watermarks as far as resuming from `progress` goes: when the
    /// progress is past the listed end but the broker serves that position (its listing lags,
    /// as tansu's does), the end is at least the position, one past it when a message is there
    /// (so a trigger-once run reads on to the partition's real end); otherwise the listed
    /// values stand.
    fn watermarks(&self, key: &PartitionKey, progress: Option<i64>, (low, high): (i64, i64)) -> Result<(i64, i64), KafkaError> {
        match progress.map(|v| v + 1) {
            Some(next) if next > high => Ok(match probe_position(&self.kafka, self.context.clone(), key, next)? {
                Position::Message => (low, next + 1),
                Position::End => (low, next),
                Position::Unreadable => (low, high),
            }),
            _ => Ok((low, high)),
        }
    }
}

/// The batch being assembled, and the partitions being re-read after a lost compare-and-set
/// (slices the readers started before the re-read are stale).
struct Pending {
    number: i64,
    batch: Batch,
    rereading: HashMap<PartitionKey, u64>,
}

impl Pending {
    fn new(routes: usize) -> Self {
        Self { number: 1, batch: Batch::new(1, routes), rereading: HashMap::new() }
    }

    /// Adds a reader's slice and notes, minus what belongs to partitions being re-read.
    async fn add(
        &mut self,
        sinks: &mut Sinks,
        mut slice: RawBatch,
        notes: SourceNotes,
        generation: u64,
        summary: &mut RunSummary,
    ) -> Result<(), RawAppendError> {
        sinks.high_watermarks.extend(std::mem::take(&mut slice.high_watermarks));
        let current = |key: &PartitionKey| self.rereading.get(key).is_none_or(|g| generation >= *g);
        slice.retain_partitions(current);
        let positions: Vec<_> = notes.positions.into_iter().filter(|(key, _)| current(key)).collect();
        SourceRead { throttles: notes.throttles, millis_behind: &notes.millis_behind }.emit(summary);
        if !slice.is_empty() {
            BatchRead { messages: slice.messages as u64, bytes: slice.bytes as u64 }.emit(summary);
            self.batch.add(sinks, slice, summary).await?;
        }
        self.batch.record_positions(sinks, positions);
        Ok(())
    }

    /// Commits the batch unless it is empty; partitions another task moved under it are
    /// re-read from their tables.
    async fn commit(&mut self, sinks: &mut Sinks, summary: &mut RunSummary) -> Result<(), RawAppendError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.number += 1;
        // Routes grow when tables are inferred: a new batch is sized for all of them.
        let full = std::mem::replace(&mut self.batch, Batch::new(self.number, sinks.routes.len()));
        let lost = full.commit(sinks, summary).await?;
        if !lost.is_empty() {
            let generation = sinks.resume.request_reread(&lost);
            self.rereading.extend(lost.into_iter().map(|k| (k, generation)));
        }
        Ok(())
    }
}

/// Messages are handed over in slices this size so decoding and encoding overlap reading.
const SLICE_MESSAGES: usize = 131_072;
const SLICE_BYTES: usize = 16 << 20;

/// How often the reader refreshes high watermarks for the consumer-lag figures.
const LAG_REFRESH: Duration = Duration::from_secs(15);

/// What the reader thread needs to re-read partitions from their tables.
struct Rereads {
    resume: Arc<Resume>,
    lookup: ProgressLookup,
    /// The Kafka topics (Kinesis shards are re-read by their own reader).
    topics: std::collections::HashSet<String>,
}

impl Rereads {
    /// Seeks the partitions the run loop asked to re-read to their table progress; returns
    /// the generation the next slice carries.
    fn apply(&self, reader: &mut KafkaReader) -> Result<u64, KafkaError> {
        let (keys, generation) = self.resume.take_rereads(|k| self.topics.contains(k.topic.as_ref()));
        for key in keys {
            let next = (self.lookup)(&key, reader.watermarks(&key)?)?;
            let assigned = reader.seek(&key, next)?;
            tracing::info!(stage = "reread", topic = %key.topic, partition = key.partition, next, assigned, "partition re-read from its table progress");
        }
        Ok(generation)
    }
}

/// Runs the reader on its own thread: it fills the next slice while the previous one is decoded.
fn spawn_reader(
    mut reader: KafkaReader,
    limits: BatchLimits,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tx: tokio::sync::mpsc::Sender<ReaderMsg>,
    rereads: Rereads,
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
                let filled =
                    rereads.apply(&mut reader).and_then(|generation| Ok((generation, reader.fill(&mut slice, &slice_limits, &stop)?)));
                let (generation, outcome) = match filled {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = tx.blocking_send(ReaderMsg::Failed(e.into()));
                        return;
                    }
                };
                if outcome == FillOutcome::Idle {
                    // A busy run loop needs no reminder (a full channel skips this one); a
                    // closed one means the run loop ended.
                    match tx.try_send(ReaderMsg::Idle(std::mem::take(&mut slice.high_watermarks))) {
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                        _ => continue,
                    }
                }
                messages += slice.messages;
                bytes += slice.bytes;
                if opened.is_none() {
                    opened = slice.opened_at;
                }
                let end_of_batch = match outcome {
                    FillOutcome::Full => messages >= limits.messages || bytes >= limits.bytes,
                    FillOutcome::LatencyReached | FillOutcome::CaughtUp | FillOutcome::Stopped | FillOutcome::Idle => true,
                };
                if end_of_batch {
                    (messages, bytes, opened) = (0, 0, None);
                }
                let last = matches!(outcome, FillOutcome::CaughtUp | FillOutcome::Stopped);
                let notes = SourceNotes::default();
                if tx.blocking_send(ReaderMsg::Slice { slice, outcome, end_of_batch, generation, notes }).is_err() || last {
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
