//! Polling Kafka into per-partition chunks of contiguous payload bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::{KafkaError, LakeContext};

const POLL: Duration = Duration::from_millis(100);
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

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
}

impl RawBatch {
    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Drops the messages of `partitions` (revoked by a rebalance).
    pub fn drop_partitions(&mut self, partitions: &BTreeSet<(String, i32)>) {
        self.chunks.retain(|k, chunk| {
            let keep = !partitions.contains(&(k.topic.to_string(), k.partition));
            if !keep {
                self.bytes -= chunk.bytes();
                self.messages -= chunk.len();
            }
            keep
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
}

enum Mode {
    /// Manual assignment, one consumer per topic (librdkafka's end-of-partition events name
    /// the partition but not the topic). With `ends`, a partition is done once it has read to
    /// its end offset and then reached the end of the partition; without, it reads on forever.
    Manual {
        consumers: Vec<(Arc<str>, BaseConsumer<LakeContext>)>,
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
}

/// What one poll produced (the message itself is already in the batch).
enum Polled {
    Idle,
    Eof(i32),
    Message,
}

/// Messages between checks of the clock, the stop flag and the end condition.
const CHECK_EVERY: usize = 1024;

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
            ("auto.offset.reset", "earliest"),
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
        let consumers = topics
            .into_iter()
            .map(|t| Ok((t, Self::consumer(&config, context.clone(), "lakehouse-manual", eof)?)))
            .collect::<Result<Vec<_>, KafkaError>>()?;
        let mode = Mode::Manual { consumers, ends, done: BTreeSet::new(), turn: 0 };
        let mut reader = Self { context, mode, topics: HashMap::new() };
        reader.assign(starts)?;
        Ok(reader)
    }

    /// Joins `group_id` and subscribes to `topics`; assignments resume from the context's
    /// progress lookup.
    pub fn group(config: ClientConfig, context: LakeContext, topics: &[&str], group_id: &str) -> Result<Self, KafkaError> {
        let consumer = Self::consumer(&config, context.clone(), group_id, false)?;
        consumer.subscribe(topics).map_err(KafkaError::client("subscribe"))?;
        Ok(Self { context, mode: Mode::Group(consumer), topics: HashMap::new() })
    }

    /// Assigns manual partitions from the given positions (replacing earlier assignments).
    pub fn assign(&mut self, starts: &[(PartitionKey, StartPosition)]) -> Result<(), KafkaError> {
        let Mode::Manual { consumers, ends, done, .. } = &mut self.mode else {
            return Err(KafkaError::ManualOnly("explicit assignment"));
        };
        done.clear();
        for (topic, consumer) in consumers.iter() {
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


    /// Polls into `batch` until a limit is reached, the manual partitions are done, or `stop`.
    pub fn fill(&mut self, batch: &mut RawBatch, limits: &ReaderLimits, stop: &AtomicBool) -> Result<FillOutcome, KafkaError> {
        let mut taken_this_turn = 0usize;
        let mut revocations_seen = self.context.revocations.load(Ordering::SeqCst);
        let mut since_check = CHECK_EVERY;
        loop {
            // Limits are counted per message; clocks, locks and flags only every CHECK_EVERY
            // messages or when a poll comes back empty (they cost as much as a message).
            if batch.messages >= limits.max_messages || batch.bytes >= limits.max_bytes {
                return Ok(FillOutcome::Full);
            }
            if since_check >= CHECK_EVERY {
                since_check = 0;
                if stop.load(Ordering::Relaxed) {
                    return Ok(FillOutcome::Stopped);
                }
                if let Some(err) = self.context.rebalance_error.lock().ok().and_then(|mut e| e.take()) {
                    return Err(KafkaError::Rebalance(err));
                }
                let now = Instant::now();
                if batch.opened_at.is_some_and(|t| now.duration_since(t) >= limits.max_latency) || limits.deadline.is_some_and(|d| now >= d) {
                    return Ok(FillOutcome::LatencyReached);
                }
                if let Mode::Manual { ends: Some(ends), done, .. } = &self.mode {
                    if ends.keys().all(|k| done.contains(k)) {
                        return Ok(FillOutcome::CaughtUp);
                    }
                }
            }
            since_check += 1;
            if let Mode::Manual { consumers, turn, .. } = &mut self.mode {
                if taken_this_turn >= TURN {
                    *turn = (*turn + 1) % consumers.len().max(1);
                    taken_this_turn = 0;
                }
            }
            let (consumer, multi) = match &self.mode {
                Mode::Manual { consumers, turn, .. } => match consumers.get(*turn) {
                    Some((_, c)) => (c, consumers.len() > 1),
                    None => return Ok(FillOutcome::CaughtUp),
                },
                Mode::Group(c) => (c, false),
            };
            let timeout = if multi { Duration::from_millis(10) } else { POLL };
            let polled = consumer.poll(timeout);
            // A rebalance runs inside poll: what was read before it may belong to partitions
            // that are no longer ours (a message this poll returned is already from the new
            // assignment, so drop before adding it).
            drop_revoked(&self.context, batch, &mut revocations_seen);
            let polled = match polled {
                None => Polled::Idle,
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => Polled::Eof(partition),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, stage = "kafka_poll", "kafka poll error; librdkafka retries");
                    Polled::Idle
                }
                Some(Ok(msg)) => {
                    let topic = match self.topics.get(msg.topic()) {
                        Some(t) => t.clone(),
                        None => self.topics.entry(msg.topic().to_string()).or_insert_with(|| msg.topic().into()).clone(),
                    };
                    let key = PartitionKey { topic, partition: msg.partition() };
                    let offset = msg.offset();
                    let payload = msg.payload().unwrap_or_default();
                    batch.messages += 1;
                    batch.bytes += payload.len();
                    batch.opened_at.get_or_insert_with(Instant::now);
                    batch.chunks.entry(key.clone()).or_default().push(offset, msg.timestamp().to_millis(), msg.key(), payload);
                    Polled::Message
                }
            };
            match polled {
                Polled::Idle => {
                    taken_this_turn = TURN;
                    since_check = CHECK_EVERY;
                }
                Polled::Eof(partition) => {
                    if let Mode::Manual { consumers, turn, .. } = &self.mode {
                        if let Some((topic, _)) = consumers.get(*turn) {
                            let key = PartitionKey { topic: topic.clone(), partition };
                            self.reached_end(&key);
                        }
                    }
                    taken_this_turn = TURN;
                    since_check = CHECK_EVERY;
                }
                Polled::Message => taken_this_turn += 1,
            }
        }
    }

    /// An end-of-partition event: the partition is done once the consumer's position (the
    /// next offset it would read, past any transaction markers) reached its end offset.
    fn reached_end(&mut self, key: &PartitionKey) {
        let Mode::Manual { consumers, ends: Some(ends), done, .. } = &mut self.mode else { return };
        let (Some(end), Some((_, consumer))) = (ends.get(key), consumers.iter().find(|(t, _)| *t == key.topic)) else { return };
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
