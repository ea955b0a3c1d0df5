//! Polling Kafka into per-partition chunks of contiguous payload bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::{is_fatal, KafkaError, LakeContext};

const POLL: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);
/// Lag figures are best effort: a slow broker must not hold up reading for long.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
}

impl PartitionKey {
    /// A key for `topic`/`partition`.
    pub fn new(topic: &str, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }
}

/// Where a manually assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The first available offset.
    Beginning,
    /// This offset.
    Offset(i64),
}

/// The messages of one partition in a batch, payloads stored back to back.
#[derive(Debug, Default)]
pub struct PartitionChunk {
    data: Vec<u8>,
    ends: Vec<u32>,
    /// Kafka offset of each message.
    pub offsets: Vec<i64>,
    /// Kafka timestamp of each message in epoch milliseconds (None when absent).
    pub timestamps: Vec<Option<i64>>,
    key_data: Vec<u8>,
    key_ends: Vec<u32>,
    key_null: Vec<bool>,
}

impl PartitionChunk {
    /// An empty chunk with room for about `messages` messages of `bytes` payload bytes in all,
    /// so filling it does not copy its buffers again as they grow.
    pub fn with_capacity(messages: usize, bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(messages),
            offsets: Vec::with_capacity(messages),
            timestamps: Vec::with_capacity(messages),
            key_data: Vec::new(),
            key_ends: Vec::with_capacity(messages),
            key_null: Vec::with_capacity(messages),
        }
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Payload of message `i` (empty for a null payload).
    pub fn payload(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.data[start..self.ends[i] as usize]
    }

    /// All payloads in order.
    pub fn payloads(&self) -> Vec<&[u8]> {
        (0..self.len()).map(|i| self.payload(i)).collect()
    }

    /// Key of message `i` (None for a null key).
    pub fn key(&self, i: usize) -> Option<&[u8]> {
        if self.key_null[i] {
            return None;
        }
        let start = if i == 0 { 0 } else { self.key_ends[i - 1] as usize };
        Some(&self.key_data[start..self.key_ends[i] as usize])
    }

    /// Offset of the last message.
    pub fn last_offset(&self) -> Option<i64> {
        self.offsets.last().copied()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Appends a message.
    pub fn push(&mut self, offset: i64, timestamp: Option<i64>, key: Option<&[u8]>, payload: &[u8]) {
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len() as u32);
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
        self.key_data.extend_from_slice(key.unwrap_or_default());
        self.key_ends.push(self.key_data.len() as u32);
        self.key_null.push(key.is_none());
    }
}

/// Messages read since the last commit, by partition.
#[derive(Debug, Default)]
pub struct RawBatch {
    /// Per-partition messages.
    pub chunks: BTreeMap<PartitionKey, PartitionChunk>,
    /// Total payload bytes.
    pub bytes: usize,
    /// Total messages.
    pub messages: usize,
    /// When the first message arrived.
    pub opened_at: Option<Instant>,
    /// High watermarks fetched while this batch was read (for consumer-lag figures).
    pub high_watermarks: Vec<(PartitionKey, i64)>,
}

impl RawBatch {
    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Drops the messages of `partitions` (revoked by a rebalance).
    pub fn drop_partitions(&mut self, partitions: &BTreeSet<(String, i32)>) {
        self.retain_partitions(|k| !partitions.contains(&(k.topic.to_string(), k.partition)));
    }

    /// Keeps the messages of the partitions `keep` accepts.
    pub fn retain_partitions(&mut self, keep: impl Fn(&PartitionKey) -> bool) {
        self.chunks.retain(|k, chunk| {
            let kept = keep(k);
            if !kept {
                self.bytes -= chunk.bytes();
                self.messages -= chunk.len();
            }
            kept
        });
    }
}

/// When [`KafkaReader::fill`] hands a batch over.
#[derive(Debug, Clone, Copy)]
pub struct ReaderLimits {
    /// At this many messages.
    pub max_messages: usize,
    /// At this many payload bytes.
    pub max_bytes: usize,
    /// When the first message read by this call is this old.
    pub max_latency: Duration,
    /// At this instant, whatever was read (a batch opened by earlier calls).
    pub deadline: Option<Instant>,
}

/// Why [`KafkaReader::fill`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillOutcome {
    /// A size limit was reached.
    Full,
    /// The batch's first message reached the latency limit.
    LatencyReached,
    /// Every manually assigned partition reached its end offset.
    CaughtUp,
    /// The stop flag was raised.
    Stopped,
    /// Nothing arrived for [`IDLE_RETURN`] and nothing was read: the caller may show it is
    /// alive, then call again.
    Idle,
}

/// How long [`KafkaReader::fill`] waits on quiet partitions before returning [`FillOutcome::Idle`].
pub const IDLE_RETURN: Duration = Duration::from_secs(1);

/// A consumer's message queue, read many messages per call.
///
/// `rust-rdkafka`'s `poll` returns one message per call and reads the clock several times
/// for it (so does librdkafka's single-message path); `rd_kafka_consume_batch_queue` pays that
/// once per batch. It serves non-message events through callbacks, which is safe for a
/// manually assigned consumer (no rebalances) unless the client refreshes OAUTHBEARER tokens:
/// rust-rdkafka handles those as events, not callbacks, so such clients poll one by one.
struct BatchQueue(NonNull<rdsys::rd_kafka_queue_t>);

// librdkafka queues are thread safe; the handle is only used by the reader's thread.
unsafe impl Send for BatchQueue {}

impl BatchQueue {
    fn of(consumer: &BaseConsumer<LakeContext>) -> Option<Self> {
        // SAFETY: the client pointer is valid for the consumer's lifetime; the returned queue
        // holds its own reference and is destroyed (before the consumer) in Drop.
        NonNull::new(unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) }).map(Self)
    }
}

impl Drop for BatchQueue {
    fn drop(&mut self) {
        // SAFETY: obtained from rd_kafka_queue_get_consumer and destroyed once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// Messages taken per batched read.
const READ_BATCH: usize = 1024;

/// The consumer of one topic in manual mode.
struct TopicConsumer {
    // Declared first so it is dropped before the consumer that owns the queue.
    queue: Option<BatchQueue>,
    topic: Arc<str>,
    consumer: BaseConsumer<LakeContext>,
}

enum Mode {
    /// Manual assignment, one consumer per topic (librdkafka's end-of-partition events name
    /// the partition but not the topic). With `ends`, a partition is done once it has read to
    /// its end offset and then reached the end of the partition; without, it reads on forever.
    Manual {
        consumers: Vec<TopicConsumer>,
        ends: Option<HashMap<PartitionKey, i64>>,
        done: BTreeSet<PartitionKey>,
        turn: usize,
    },
    /// Consumer-group subscription.
    Group(BaseConsumer<LakeContext>),
}

/// A Kafka consumer that fills [`RawBatch`]es.
pub struct KafkaReader {
    context: LakeContext,
    mode: Mode,
    /// Topic names as shared strings, so a message's key costs no allocation.
    topics: HashMap<String, Arc<str>>,
    /// Partitions assigned (manual mode), to size new chunks; 1 when unknown.
    assigned: usize,
}

/// What one poll produced (the messages themselves are already in the batch, the partitions
/// that reported their end in the caller's list).
enum Polled {
    Idle,
    Eof,
    Messages(usize),
    /// An error retrying cannot fix (the run fails with it).
    Failed(KafkaError),
}

/// Messages between checks of the stop flag and the end conditions...
const CHECK_EVERY: usize = 1024;
/// ...or this much time, whichever comes first.
const CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// Messages taken from one consumer before polling the next (multi-topic fairness).
const TURN: usize = 4096;

impl KafkaReader {
    fn consumer(config: &ClientConfig, context: LakeContext, group: &str, eof: bool) -> Result<BaseConsumer<LakeContext>, KafkaError> {
        let mut config = config.clone();
        // We never resume from group offsets (the table is the source of truth), so the
        // group's offsets are not auto-committed.
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", if eof { "true" } else { "false" });
        // Throughput-minded defaults an operator can still override in [kafka.properties]:
        // librdkafka postpones fetching for fetch.queue.backoff.ms (1 s by default) whenever its
        // local queue is above queued.min.messages, which stalls a fast reader every 100k messages.
        let defaults = [
            // Every assignment names its start offset; an offset that is gone while reading
            // (retention overtook a slow reader) must stop the run, never reset silently.
            ("auto.offset.reset", "error"),
            ("fetch.wait.max.ms", "100"),
            ("queued.max.messages.kbytes", "65536"),
            ("queued.min.messages", "1000000"),
            ("fetch.queue.backoff.ms", "10"),
        ];
        for (key, value) in defaults {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        config.create_with_context(context).map_err(KafkaError::client("create consumer"))
    }

    /// Reads the given partitions from the given positions. With `ends` (trigger once: the
    /// high watermarks captured at start), each partition reads at least to its end and stops
    /// at the first end-of-partition after it; a partition already at its end is not read.
    pub fn manual(
        config: ClientConfig,
        context: LakeContext,
        starts: &[(PartitionKey, StartPosition)],
        ends: Option<HashMap<PartitionKey, i64>>,
    ) -> Result<Self, KafkaError> {
        let mut topics: Vec<Arc<str>> = starts.iter().map(|(k, _)| k.topic.clone()).collect();
        topics.sort();
        topics.dedup();
        let eof = ends.is_some();
        let batched = !config.get("sasl.mechanism").is_some_and(|m| m.eq_ignore_ascii_case("OAUTHBEARER"));
        let consumers = topics
            .into_iter()
            .map(|topic| {
                let consumer = Self::consumer(&config, context.clone(), "lakehouse-manual", eof)?;
                let queue = if batched { BatchQueue::of(&consumer) } else { None };
                Ok(TopicConsumer { queue, topic, consumer })
            })
            .collect::<Result<Vec<_>, KafkaError>>()?;
        let mode = Mode::Manual { consumers, ends, done: BTreeSet::new(), turn: 0 };
        let mut reader = Self { context, mode, topics: HashMap::new(), assigned: 1 };
        reader.assign(starts)?;
        Ok(reader)
    }

    /// Joins `group_id` and subscribes to `topics`; assignments resume from the context's
    /// progress lookup.
    pub fn group(config: ClientConfig, context: LakeContext, topics: &[&str], group_id: &str) -> Result<Self, KafkaError> {
        let consumer = Self::consumer(&config, context.clone(), group_id, false)?;
        consumer.subscribe(topics).map_err(KafkaError::client("subscribe"))?;
        Ok(Self { context, mode: Mode::Group(consumer), topics: HashMap::new(), assigned: 1 })
    }

    /// Assigns manual partitions from the given positions (replacing earlier assignments).
    pub fn assign(&mut self, starts: &[(PartitionKey, StartPosition)]) -> Result<(), KafkaError> {
        let Mode::Manual { consumers, ends, done, .. } = &mut self.mode else {
            return Err(KafkaError::ManualOnly("explicit assignment"));
        };
        done.clear();
        self.assigned = starts.len().max(1);
        for TopicConsumer { topic, consumer, .. } in consumers.iter() {
            let mut tpl = TopicPartitionList::new();
            for (key, start) in starts.iter().filter(|(k, _)| &k.topic == topic) {
                let offset = match start {
                    StartPosition::Beginning => Offset::Beginning,
                    StartPosition::Offset(o) => Offset::Offset(*o),
                };
                let from = match start {
                    StartPosition::Offset(o) => *o,
                    StartPosition::Beginning => 0,
                };
                if ends.as_ref().and_then(|e| e.get(key)).is_some_and(|end| from >= *end) {
                    done.insert(key.clone());
                    continue;
                }
                tpl.add_partition_offset(&key.topic, key.partition, offset).map_err(KafkaError::client("build assignment"))?;
            }
            consumer.assign(&tpl).map_err(KafkaError::client(format!("assign {topic}")))?;
        }
        Ok(())
    }

    /// Low and high watermarks of one partition.
    pub fn watermarks(&self, key: &PartitionKey) -> Result<(i64, i64), KafkaError> {
        let consumer = match &self.mode {
            Mode::Manual { consumers, .. } => match consumers.iter().find(|c| c.topic == key.topic) {
                Some(c) => &c.consumer,
                None => return Err(KafkaError::UnknownTopic(key.topic.to_string())),
            },
            Mode::Group(consumer) => consumer,
        };
        consumer
            .fetch_watermarks(&key.topic, key.partition, METADATA_TIMEOUT)
            .map_err(KafkaError::client(format!("watermarks of {}[{}]", key.topic, key.partition)))
    }

    /// Moves an assigned partition to offset `next` (its progress was re-read from the table).
    /// Returns false when the partition is not assigned to this reader (a group moved it).
    pub fn seek(&mut self, key: &PartitionKey, next: i64) -> Result<bool, KafkaError> {
        let consumer = match &mut self.mode {
            Mode::Manual { consumers, ends, done, .. } => {
                let Some(c) = consumers.iter().find(|c| c.topic == key.topic) else { return Ok(false) };
                // Trigger once: a partition already read to its end offset is done.
                if ends.as_ref().and_then(|e| e.get(key)).is_some_and(|end| next >= *end) {
                    done.insert(key.clone());
                    let _ = c.consumer.pause(&single(key));
                    return Ok(true);
                }
                if done.remove(key) {
                    let _ = c.consumer.resume(&single(key));
                }
                &c.consumer
            }
            Mode::Group(consumer) => &*consumer,
        };
        let assigned = consumer.assignment().map_err(KafkaError::client("assignment"))?;
        if assigned.find_partition(&key.topic, key.partition).is_none() {
            return Ok(false);
        }
        consumer
            .seek(&key.topic, key.partition, Offset::Offset(next), METADATA_TIMEOUT)
            .map_err(KafkaError::client(format!("seek {}[{}] to {next}", key.topic, key.partition)))?;
        Ok(true)
    }

    /// Polls into `batch` until a limit is reached, the manual partitions are done, or `stop`.
    pub fn fill(&mut self, batch: &mut RawBatch, limits: &ReaderLimits, stop: &AtomicBool) -> Result<FillOutcome, KafkaError> {
        let mut taken_this_turn = 0usize;
        let mut revocations_seen = self.context.revocations.load(Ordering::SeqCst);
        let mut since_check = CHECK_EVERY;
        let mut buffer: Vec<*mut rdsys::rd_kafka_message_t> = Vec::with_capacity(READ_BATCH);
        let mut eofs = Vec::new();
        // Each partition's share of the slice, with some slack: fewer buffer regrowths.
        let share = |total: usize| total / self.assigned + total / self.assigned / 8;
        let new_chunk = ChunkSize { messages: share(limits.max_messages), bytes: share(limits.max_bytes) };
        let called = Instant::now();
        let mut next_check = called;
        // Consecutive empty polls (see `next_turn`).
        let mut empty_polls = 0usize;
        loop {
            // Limits are counted per message; locks and flags only every CHECK_EVERY messages,
            // CHECK_INTERVAL, or when a poll comes back empty (a slow topic must still close
            // its batch on time).
            if batch.messages >= limits.max_messages || batch.bytes >= limits.max_bytes {
                return Ok(FillOutcome::Full);
            }
            let now = Instant::now();
            if since_check >= CHECK_EVERY || now >= next_check {
                since_check = 0;
                next_check = now + CHECK_INTERVAL;
                if let Some(outcome) = self.check(batch, limits, stop, called, now)? {
                    return Ok(outcome);
                }
            }
            since_check += 1;
            let timeout = self.next_turn(&mut taken_this_turn, empty_polls);
            let polled = match &self.mode {
                Mode::Manual { consumers, turn, .. } => match consumers.get(*turn) {
                    Some(TopicConsumer { queue: Some(queue), topic, .. }) => {
                        let room = (limits.max_messages - batch.messages).min(READ_BATCH);
                        read_batch(queue, topic, timeout, room, &mut buffer, batch, &mut eofs, new_chunk)
                    }
                    Some(TopicConsumer { consumer, .. }) => {
                        poll_one(consumer, &self.context, &mut revocations_seen, &mut self.topics, timeout, batch, &mut eofs, new_chunk)
                    }
                    None => return Ok(FillOutcome::CaughtUp),
                },
                Mode::Group(consumer) => {
                    poll_one(consumer, &self.context, &mut revocations_seen, &mut self.topics, timeout, batch, &mut eofs, new_chunk)
                }
            };
            if matches!(polled, Polled::Idle) {
                empty_polls += 1;
            } else {
                empty_polls = 0;
            }
            match polled {
                Polled::Failed(e) => return Err(e),
                Polled::Idle => {
                    taken_this_turn = TURN;
                    since_check = CHECK_EVERY;
                }
                Polled::Eof => {
                    self.current_topic_ended(&mut eofs);
                    taken_this_turn = TURN;
                    since_check = CHECK_EVERY;
                }
                Polled::Messages(n) => {
                    taken_this_turn += n;
                    since_check += n - 1;
                }
            }
        }
    }

    /// Moves a multi-topic manual reader to its next consumer once the current one had its
    /// turn; returns how long the next poll may wait (a quiet topic is polled without waiting
    /// while another one has data, so it never slows the busy one; only a quiet round waits).
    fn next_turn(&mut self, taken_this_turn: &mut usize, empty_polls: usize) -> Duration {
        match &mut self.mode {
            Mode::Manual { consumers, turn, .. } if consumers.len() > 1 => {
                if *taken_this_turn >= TURN {
                    *turn = (*turn + 1) % consumers.len();
                    *taken_this_turn = 0;
                }
                if empty_polls >= consumers.len() {
                    MULTI_TOPIC_POLL
                } else {
                    Duration::ZERO
                }
            }
            _ => POLL,
        }
    }

    /// End-of-partition events of the current manual consumer's topic.
    fn current_topic_ended(&mut self, eofs: &mut Vec<i32>) {
        let topic = match &self.mode {
            Mode::Manual { consumers, turn, .. } => consumers.get(*turn).map(|c| c.topic.clone()),
            Mode::Group(_) => None,
        };
        for partition in eofs.drain(..) {
            if let Some(topic) = &topic {
                self.reached_end(&PartitionKey { topic: topic.clone(), partition });
            }
        }
    }

    /// The conditions that end a fill besides size: stop flag, failures, latency, the end of
    /// every manual partition, idleness.
    fn check(&self, batch: &RawBatch, limits: &ReaderLimits, stop: &AtomicBool, called: Instant, now: Instant) -> Result<Option<FillOutcome>, KafkaError> {
        if stop.load(Ordering::Relaxed) {
            return Ok(Some(FillOutcome::Stopped));
        }
        if let Some(err) = self.context.rebalance_error.lock().ok().and_then(|mut e| e.take()) {
            return Err(err);
        }
        if let Some(err) = self.context.fatal.lock().ok().and_then(|mut e| e.take()) {
            return Err(KafkaError::Fatal(err));
        }
        if batch.opened_at.is_some_and(|t| now.duration_since(t) >= limits.max_latency) || limits.deadline.is_some_and(|d| now >= d) {
            return Ok(Some(FillOutcome::LatencyReached));
        }
        if let Mode::Manual { ends: Some(ends), done, .. } = &self.mode {
            if ends.keys().all(|k| done.contains(k)) {
                return Ok(Some(FillOutcome::CaughtUp));
            }
        }
        if batch.messages == 0 && now.duration_since(called) >= IDLE_RETURN {
            return Ok(Some(FillOutcome::Idle));
        }
        Ok(None)
    }

    /// High watermarks of the partitions this reader owns now, for lag figures. Manual
    /// trigger-once readers answer from the end offsets captured at start; others ask the
    /// brokers (one ListOffsets round trip per partition, so call it every few seconds at
    /// most). Partitions whose watermark cannot be fetched are left out.
    pub fn high_watermarks(&self) -> Vec<(PartitionKey, i64)> {
        let consumers: Vec<&BaseConsumer<LakeContext>> = match &self.mode {
            Mode::Manual { ends: Some(ends), .. } => return ends.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Mode::Manual { consumers, .. } => consumers.iter().map(|c| &c.consumer).collect(),
            Mode::Group(consumer) => vec![consumer],
        };
        let mut out = Vec::new();
        for consumer in consumers {
            let Ok(assignment) = consumer.assignment() else { continue };
            for elem in assignment.elements() {
                match consumer.fetch_watermarks(elem.topic(), elem.partition(), LAG_TIMEOUT) {
                    Ok((_, high)) => out.push((PartitionKey::new(elem.topic(), elem.partition()), high)),
                    Err(e) => tracing::debug!(error = %e, topic = elem.topic(), partition = elem.partition(), "high watermark unavailable"),
                }
            }
        }
        out
    }

    /// An end-of-partition event: the partition is done once the consumer's position (the
    /// next offset it would read, past any transaction markers) reached its end offset.
    fn reached_end(&mut self, key: &PartitionKey) {
        let Mode::Manual { consumers, ends: Some(ends), done, .. } = &mut self.mode else { return };
        let (Some(end), Some(TopicConsumer { consumer, .. })) = (ends.get(key), consumers.iter().find(|c| c.topic == key.topic)) else { return };
        let position = consumer.position().ok().and_then(|tpl| match tpl.find_partition(&key.topic, key.partition).map(|e| e.offset()) {
            Some(Offset::Offset(pos)) => Some(pos),
            _ => None,
        });
        if position.is_some_and(|pos| pos >= *end) {
            done.insert(key.clone());
            if let Err(e) = consumer.pause(&single(key)) {
                tracing::warn!(error = %e, "pause failed");
            }
        }
    }
}

/// The room a partition's new chunk starts with.
#[derive(Debug, Clone, Copy)]
struct ChunkSize {
    messages: usize,
    bytes: usize,
}

impl ChunkSize {
    fn chunk(self) -> PartitionChunk {
        PartitionChunk::with_capacity(self.messages, self.bytes)
    }
}

/// Poll timeout once every consumer of a multi-topic reader came back empty.
const MULTI_TOPIC_POLL: Duration = Duration::from_millis(10);

/// The error a consumed message carries, when retrying cannot fix it.
fn message_failure(code: rdkafka::error::RDKafkaErrorCode, topic: &str, partition: i32, offset: i64) -> Option<KafkaError> {
    use rdkafka::error::RDKafkaErrorCode as C;
    match code {
        C::AutoOffsetReset | C::OffsetOutOfRange => Some(KafkaError::OffsetOutOfRange(match partition {
            p if p >= 0 => format!("{topic}[{p}] at offset {offset}"),
            _ => topic.to_string(),
        })),
        code if is_fatal(code) => Some(KafkaError::Fatal(format!("{topic}[{partition}]: {code}"))),
        _ => None,
    }
}

/// One message (or event) through rust-rdkafka's poll, which also serves rebalances.
fn poll_one(
    consumer: &BaseConsumer<LakeContext>,
    context: &LakeContext,
    revocations_seen: &mut u64,
    topics: &mut HashMap<String, Arc<str>>,
    timeout: Duration,
    batch: &mut RawBatch,
    eofs: &mut Vec<i32>,
    new_chunk: ChunkSize,
) -> Polled {
    let polled = consumer.poll(timeout);
    // A rebalance runs inside poll: what was read before it may belong to partitions that are
    // no longer ours (a message this poll returned is already from the new assignment, so
    // drop before adding it).
    drop_revoked(context, batch, revocations_seen);
    match polled {
        None => Polled::Idle,
        Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
            eofs.push(partition);
            Polled::Eof
        }
        Some(Err(e)) => {
            if let Some(code) = e.rdkafka_error_code() {
                if let Some(failure) = message_failure(code, "a subscribed topic", -1, -1) {
                    return Polled::Failed(failure);
                }
            }
            tracing::warn!(error = %e, stage = "kafka_poll", "kafka poll error; librdkafka retries");
            Polled::Idle
        }
        Some(Ok(msg)) => {
            let topic = match topics.get(msg.topic()) {
                Some(t) => t.clone(),
                None => topics.entry(msg.topic().to_string()).or_insert_with(|| msg.topic().into()).clone(),
            };
            let key = PartitionKey { topic, partition: msg.partition() };
            let payload = msg.payload().unwrap_or_default();
            batch.messages += 1;
            batch.bytes += payload.len();
            batch.opened_at.get_or_insert_with(Instant::now);
            batch.chunks.entry(key).or_insert_with(|| new_chunk.chunk()).push(msg.offset(), msg.timestamp().to_millis(), msg.key(), payload);
            Polled::Messages(1)
        }
    }
}

/// Up to `room` messages of `topic` from a [`BatchQueue`]; partitions whose end-of-partition
/// event was among them go to `eofs`.
fn read_batch(
    queue: &BatchQueue,
    topic: &Arc<str>,
    timeout: Duration,
    room: usize,
    buffer: &mut Vec<*mut rdsys::rd_kafka_message_t>,
    batch: &mut RawBatch,
    eofs: &mut Vec<i32>,
    new_chunk: ChunkSize,
) -> Polled {
    buffer.clear();
    let room = room.clamp(1, buffer.capacity());
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the buffer has room for `room` pointers; librdkafka writes at most that many.
    let read = unsafe { rdsys::rd_kafka_consume_batch_queue(queue.0.as_ptr(), timeout_ms, buffer.as_mut_ptr(), room) };
    let Ok(read) = usize::try_from(read) else {
        tracing::warn!(stage = "kafka_poll", "batched read failed; retrying");
        return Polled::Idle;
    };
    // SAFETY: librdkafka initialised the first `read` entries.
    unsafe { buffer.set_len(read) };
    let mut taken = 0usize;
    let mut failure = None;
    let mut current: Option<(i32, &mut PartitionChunk)> = None;
    for &ptr in buffer.iter() {
        // SAFETY: each pointer is a live message owned by us until destroyed below.
        let message = unsafe { &*ptr };
        if message.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            if message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                eofs.push(message.partition);
            } else {
                let error = rdkafka::error::RDKafkaErrorCode::from(message.err);
                if failure.is_none() {
                    failure = message_failure(error, topic, message.partition, message.offset);
                }
                tracing::warn!(error = %error, stage = "kafka_poll", "kafka poll error");
            }
        } else {
            // SAFETY: payload/key point to len/key_len bytes (or are null) while the message lives.
            let payload = unsafe { bytes(message.payload.cast(), message.len) }.unwrap_or_default();
            let key = unsafe { bytes(message.key.cast(), message.key_len) };
            let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a live message.
            let millis = unsafe { rdsys::rd_kafka_message_timestamp(ptr, &mut kind) };
            let timestamp = (kind != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && millis != -1).then_some(millis);
            // Consecutive messages mostly share a partition: look the chunk up only on a change.
            let chunk = match current.take() {
                Some((partition, chunk)) if partition == message.partition => chunk,
                _ => batch.chunks.entry(PartitionKey { topic: topic.clone(), partition: message.partition }).or_insert_with(|| new_chunk.chunk()),
            };
            chunk.push(message.offset, timestamp, key, payload);
            current = Some((message.partition, chunk));
            batch.bytes += payload.len();
            taken += 1;
        }
        // SAFETY: each message is destroyed exactly once, after its last use.
        unsafe { rdsys::rd_kafka_message_destroy(ptr) };
    }
    buffer.clear();
    if taken > 0 {
        batch.messages += taken;
        batch.opened_at.get_or_insert_with(Instant::now);
    }
    if let Some(failure) = failure {
        return Polled::Failed(failure);
    }
    match (eofs.is_empty(), taken) {
        (false, _) => Polled::Eof,
        (true, 0) => Polled::Idle,
        (true, n) => Polled::Messages(n),
    }
}

/// `len` bytes at `ptr`, or None for a null pointer.
///
/// # Safety
/// `ptr` must be null or point to `len` readable bytes that outlive the returned slice.
unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
    if ptr.is_null() {
        None
    } else {
        // SAFETY: guaranteed by the caller.
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }
}

/// Drops from `batch` the messages of partitions revoked since the last check.
fn drop_revoked(context: &LakeContext, batch: &mut RawBatch, seen: &mut u64) {
    let now = context.revocations.load(Ordering::SeqCst);
    if now == *seen {
        return;
    }
    *seen = now;
    let revoked = context.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
    batch.drop_partitions(&revoked);
}

fn single(key: &PartitionKey) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.topic, key.partition);
    tpl
}

/// The partitions of `topic`, or [`KafkaError::UnknownTopic`].
pub fn topic_partitions<C: Consumer<LakeContext>>(consumer: &C, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let md = consumer
        .fetch_metadata(Some(topic), METADATA_TIMEOUT)
        .map_err(KafkaError::client(format!("metadata of {topic}")))?;
    let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| KafkaError::UnknownTopic(topic.into()))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(KafkaError::UnknownTopic(topic.into()));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// How long [`position_exists`] waits for the broker's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether offset `next` is a readable position of the partition: a message is there or it is
/// the partition's end. Asked when recorded progress is past the listed high watermark: the
/// topic was recreated with fewer messages, or the broker's ListOffsets lags what its fetches
/// return (tansu lists the base offset of the last record batch). A broker that neither
/// returns data, nor the end, nor "out of range" within a few seconds counts as "no".
pub fn position_exists(config: &ClientConfig, context: LakeContext, key: &PartitionKey, next: i64) -> Result<bool, KafkaError> {
    use rdkafka::error::RDKafkaErrorCode as C;
    let mut config = config.clone();
    config
        .set("group.id", "lakehouse-probe")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "error");
    let consumer: BaseConsumer<LakeContext> = config.create_with_context(context).map_err(KafkaError::client("create probe consumer"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&key.topic, key.partition, Offset::Offset(next)).map_err(KafkaError::client("build probe assignment"))?;
    consumer.assign(&tpl).map_err(KafkaError::client(format!("assign {}[{}]", key.topic, key.partition)))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    while Instant::now() < deadline {
        match consumer.poll(POLL) {
            Some(Ok(_)) | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(true),
            Some(Err(e)) if matches!(e.rdkafka_error_code(), Some(C::AutoOffsetReset | C::OffsetOutOfRange)) => return Ok(false),
            _ => {}
        }
    }
    Ok(false)
}

/// Low and high watermarks of every partition of `topics` (for trigger-once end offsets).
pub fn fetch_watermarks(config: &ClientConfig, context: LakeContext, topics: &[&str]) -> Result<HashMap<PartitionKey, (i64, i64)>, KafkaError> {
    let consumer: BaseConsumer<LakeContext> = config.create_with_context(context).map_err(KafkaError::client("create metadata client"))?;
    let mut out = HashMap::new();
    for topic in topics {
        for p in topic_partitions(&consumer, topic)? {
            let wm = consumer
                .fetch_watermarks(topic, p, METADATA_TIMEOUT)
                .map_err(KafkaError::client(format!("watermarks of {topic}[{p}]")))?;
            out.insert(PartitionKey::new(topic, p), wm);
        }
    }
    Ok(out)
}
