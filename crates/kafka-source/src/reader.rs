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
    /// Message keys, when the reader keeps them.
    pub keys: Vec<Option<Box<[u8]>>>,
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

    /// Offset of the last message.
    pub fn last_offset(&self) -> Option<i64> {
        self.offsets.last().copied()
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Appends a message (for producers of chunks other than the reader, e.g. tests).
    pub fn push(&mut self, offset: i64, timestamp: Option<i64>, key: Option<&[u8]>, payload: &[u8], keep_key: bool) {
        self.data.extend_from_slice(payload);
        self.ends.push(self.data.len() as u32);
        self.offsets.push(offset);
        self.timestamps.push(timestamp);
        if keep_key {
            self.keys.push(key.map(Into::into));
        }
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
    /// When the first message is this old.
    pub max_latency: Duration,
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
    /// Manual assignment up to fixed end offsets (exclusive); `None` reads on forever.
    Manual { ends: Option<HashMap<PartitionKey, i64>>, done: BTreeSet<PartitionKey> },
    /// Consumer-group subscription.
    Group,
}

/// A Kafka consumer that fills [`RawBatch`]es.
pub struct KafkaReader {
    consumer: BaseConsumer<LakeContext>,
    context: LakeContext,
    mode: Mode,
    keep_keys: bool,
}

impl KafkaReader {
    fn consumer(mut config: ClientConfig, context: LakeContext, group: &str) -> Result<BaseConsumer<LakeContext>, KafkaError> {
        // We never resume from group offsets (the table is the source of truth), so the
        // group's offsets are not auto-committed.
        config.set("group.id", group).set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
        // Throughput-minded defaults an operator can still override in [kafka.properties].
        for (key, value) in [("auto.offset.reset", "earliest"), ("fetch.wait.max.ms", "100"), ("queued.max.messages.kbytes", "262144")] {
            if config.get(key).is_none() {
                config.set(key, value);
            }
        }
        config.create_with_context(context).map_err(KafkaError::client("create consumer"))
    }

    /// Reads the given partitions from the given positions; with `ends`, each partition stops
    /// before its end offset (trigger-once reads to the high watermarks captured at start).
    pub fn manual(
        config: ClientConfig,
        context: LakeContext,
        starts: &[(PartitionKey, StartPosition)],
        ends: Option<HashMap<PartitionKey, i64>>,
        keep_keys: bool,
    ) -> Result<Self, KafkaError> {
        let consumer = Self::consumer(config, context.clone(), "lakehouse-manual")?;
        let mut reader = Self { consumer, context, mode: Mode::Manual { ends, done: BTreeSet::new() }, keep_keys };
        reader.assign(starts)?;
        Ok(reader)
    }

    /// Joins `group_id` and subscribes to `topics`; assignments resume from the context's
    /// progress lookup.
    pub fn group(config: ClientConfig, context: LakeContext, topics: &[&str], group_id: &str, keep_keys: bool) -> Result<Self, KafkaError> {
        let consumer = Self::consumer(config, context.clone(), group_id)?;
        consumer.subscribe(topics).map_err(KafkaError::client("subscribe"))?;
        Ok(Self { consumer, context, mode: Mode::Group, keep_keys })
    }

    /// Re-assigns manual partitions from new positions (after a commit conflict).
    pub fn assign(&mut self, starts: &[(PartitionKey, StartPosition)]) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        if let Mode::Manual { ends, done } = &mut self.mode {
            done.clear();
            for (key, start) in starts {
                let offset = match start {
                    StartPosition::Beginning => Offset::Beginning,
                    StartPosition::Offset(o) => Offset::Offset(*o),
                };
                let finished = match (ends.as_ref().and_then(|e| e.get(key)), start) {
                    (Some(end), StartPosition::Offset(o)) => o >= end,
                    (Some(end), StartPosition::Beginning) => *end <= 0,
                    (None, _) => false,
                };
                if finished {
                    done.insert(key.clone());
                } else {
                    tpl.add_partition_offset(&key.topic, key.partition, offset)
                        .map_err(KafkaError::client("build assignment"))?;
                }
            }
        } else {
            for (key, start) in starts {
                if let StartPosition::Offset(o) = start {
                    self.consumer
                        .seek(&key.topic, key.partition, Offset::Offset(*o), Duration::from_secs(10))
                        .map_err(KafkaError::client(format!("seek {}[{}]", key.topic, key.partition)))?;
                }
            }
            return Ok(());
        }
        self.consumer.assign(&tpl).map_err(KafkaError::client("assign"))
    }

    /// Partitions revoked by rebalances since the last call.
    pub fn take_revoked(&self) -> BTreeSet<(String, i32)> {
        self.context.revoked.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    /// Polls into `batch` until a limit is reached, the manual partitions are done, or `stop`.
    pub fn fill(&mut self, batch: &mut RawBatch, limits: &ReaderLimits, stop: &AtomicBool) -> Result<FillOutcome, KafkaError> {
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(FillOutcome::Stopped);
            }
            if let Some(err) = self.context.rebalance_error.lock().ok().and_then(|mut e| e.take()) {
                return Err(KafkaError::Progress { topic: err, partition: -1, message: "could not resume an assigned partition".into() });
            }
            if batch.messages >= limits.max_messages || batch.bytes >= limits.max_bytes {
                return Ok(FillOutcome::Full);
            }
            if batch.opened_at.is_some_and(|t| t.elapsed() >= limits.max_latency) {
                return Ok(FillOutcome::LatencyReached);
            }
            if let Mode::Manual { ends: Some(ends), done } = &self.mode {
                if done.len() >= ends.len() || ends.keys().all(|k| done.contains(k)) {
                    return Ok(FillOutcome::CaughtUp);
                }
            }
            match self.consumer.poll(POLL) {
                None => self.mark_done_by_position(),
                Some(Err(e)) => tracing::warn!(error = %e, stage = "kafka_poll", "kafka poll error; librdkafka retries"),
                Some(Ok(msg)) => {
                    let key = PartitionKey::new(msg.topic(), msg.partition());
                    let offset = msg.offset();
                    if let Mode::Manual { ends: Some(ends), done } = &mut self.mode {
                        let end = ends.get(&key).copied().unwrap_or(i64::MAX);
                        if offset >= end - 1 {
                            done.insert(key.clone());
                            if let Err(e) = self.consumer.pause(&single(&key)) {
                                tracing::warn!(error = %e, "pause failed");
                            }
                        }
                        if offset >= end {
                            continue;
                        }
                    }
                    let payload = msg.payload().unwrap_or_default();
                    let chunk = batch.chunks.entry(key).or_default();
                    chunk.push(offset, msg.timestamp().to_millis(), msg.key(), payload, self.keep_keys);
                    batch.messages += 1;
                    batch.bytes += payload.len();
                    batch.opened_at.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// Marks manual partitions whose position passed their end (offsets taken by transaction
    /// markers or compaction never arrive as messages).
    fn mark_done_by_position(&mut self) {
        let Mode::Manual { ends: Some(ends), done } = &mut self.mode else { return };
        let Ok(positions) = self.consumer.position() else { return };
        for elem in positions.elements() {
            let key = PartitionKey::new(elem.topic(), elem.partition());
            if let (Offset::Offset(pos), Some(end)) = (elem.offset(), ends.get(&key)) {
                if pos >= *end {
                    done.insert(key);
                }
            }
        }
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, KafkaError> {
        topic_partitions(&self.consumer, topic)
    }
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
