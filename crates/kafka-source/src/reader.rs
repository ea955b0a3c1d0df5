//! Polling Kafka into per-partition chunks of contiguous payload bytes.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::chunk::*;
use crate::offsets::*;
use crate::queue::*;
use crate::watermarks::list_offsets;
use crate::{KafkaError, LakeContext};

/// Lag figures are best effort: a slow broker must not hold up reading for long.
const LAG_TIMEOUT: Duration = Duration::from_secs(2);

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
    Manual { consumers: Vec<TopicConsumer>, ends: Option<HashMap<PartitionKey, i64>>, done: BTreeSet<PartitionKey>, turn: usize },
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
            // A broker holds a fetch that finds nothing for this long. A trigger-once run
            // (`eof`) drains a backlog: it waits on empty fetches only to see each partition's
            // end, and closing waits for the fetches in flight, so it waits briefly; a
            // continuous reader waits longer and asks less often while idle.
            ("fetch.wait.max.ms", if eof { "10" } else { "100" }),
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

    /// Manually assigned partitions not yet read to their end (1 when unknown): the slice is
    /// shared among these only, so an empty topic beside a busy one does not halve the
    /// busy partitions' chunks.
    fn unfinished(&self) -> usize {
        match &self.mode {
            Mode::Manual { done, .. } => self.assigned.saturating_sub(done.len()).max(1),
            Mode::Group(_) => 1,
        }
    }

    /// Polls into `batch` until a limit is reached, the manual partitions are done, or `stop`.
    pub fn fill(&mut self, batch: &mut RawBatch, limits: &ReaderLimits, stop: &AtomicBool) -> Result<FillOutcome, KafkaError> {
        let mut taken_this_turn = 0usize;
        let mut revocations_seen = self.context.revocations.load(Ordering::SeqCst);
        let mut since_check = CHECK_EVERY;
        let mut buffer: Vec<*mut rdsys::rd_kafka_message_t> = Vec::with_capacity(READ_BATCH);
        let mut eofs = Vec::new();
        let new_chunk = ChunkSize::share(limits.max_messages, limits.max_bytes, self.unfinished());
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
    /// Trigger once skips the consumers whose topic was read to its end, so a poll never waits
    /// on a finished topic while another one receives data.
    fn next_turn(&mut self, taken_this_turn: &mut usize, empty_polls: usize) -> Duration {
        match &mut self.mode {
            Mode::Manual { consumers, turn, ends, done } if consumers.len() > 1 => {
                // Checked on every poll: no allocation, topics are few.
                let unfinished = |c: &TopicConsumer| !ends.as_ref().is_some_and(|e| topic_read(e, done, &c.topic));
                if *taken_this_turn >= TURN || !unfinished(&consumers[*turn]) {
                    *turn = next_unfinished(consumers, *turn, unfinished);
                    *taken_this_turn = 0;
                }
                if empty_polls >= consumers.iter().filter(|c| unfinished(c)).count() {
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
    fn check(
        &self,
        batch: &RawBatch,
        limits: &ReaderLimits,
        stop: &AtomicBool,
        called: Instant,
        now: Instant,
    ) -> Result<Option<FillOutcome>, KafkaError> {
        if stop.load(Ordering::Relaxed) {
            return Ok(Some(FillOutcome::Stopped));
        }
        if let Some(err) = self.context.rebalance_error.lock().ok().and_then(|mut e| e.take()) {
            return Err(err);
        }
        if let Some(fatal) = self.context.take_fatal() {
            return Err(fatal);
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
    /// brokers (one ListOffsets request per broker and consumer, so call it every few seconds
    /// at most). A consumer whose partitions' watermarks cannot be fetched is left out.
    pub fn high_watermarks(&self) -> Vec<(PartitionKey, i64)> {
        let consumers: Vec<&BaseConsumer<LakeContext>> = match &self.mode {
            Mode::Manual { ends: Some(ends), .. } => return ends.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Mode::Manual { consumers, .. } => consumers.iter().map(|c| &c.consumer).collect(),
            Mode::Group(consumer) => vec![consumer],
        };
        let mut out = Vec::new();
        for consumer in consumers {
            let Ok(assignment) = consumer.assignment() else { continue };
            let keys: Vec<PartitionKey> = assignment.elements().iter().map(|e| PartitionKey::new(e.topic(), e.partition())).collect();
            match list_offsets(consumer, &keys, Offset::End, LAG_TIMEOUT) {
                Ok(highs) => out.extend(highs),
                Err(e) => tracing::debug!(error = %e, partitions = keys.len(), "high watermarks unavailable"),
            }
        }
        out
    }

    /// An end-of-partition event: the partition is done once the consumer's position (the
    /// next offset it would read, past any transaction markers) reached its end offset.
    fn reached_end(&mut self, key: &PartitionKey) {
        let Mode::Manual { consumers, ends: Some(ends), done, .. } = &mut self.mode else { return };
        let (Some(end), Some(TopicConsumer { consumer, .. })) = (ends.get(key), consumers.iter().find(|c| c.topic == key.topic)) else {
            return;
        };
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

impl Drop for KafkaReader {
    /// Closes the per-topic consumers side by side: rust-rdkafka's close polls in steps of
    /// 100 ms whatever happens, so closing them one after the other costs that much per topic
    /// at the end of every trigger-once run.
    fn drop(&mut self) {
        let Mode::Manual { consumers, .. } = &mut self.mode else { return };
        if consumers.len() < 2 {
            return;
        }
        std::thread::scope(|scope| {
            for consumer in consumers.drain(..) {
                scope.spawn(move || drop(consumer));
            }
        });
    }
}

/// Whether every partition of `topic` with an end offset is done.
fn topic_read(ends: &HashMap<PartitionKey, i64>, done: &BTreeSet<PartitionKey>, topic: &str) -> bool {
    ends.keys().filter(|k| k.topic.as_ref() == topic).all(|k| done.contains(k))
}

/// The consumer after `turn` (in turn order) whose topic is not finished; the next one when
/// all are (the reader then returns caught up).
fn next_unfinished<T>(consumers: &[T], turn: usize, unfinished: impl Fn(&T) -> bool) -> usize {
    let n = consumers.len();
    (1..=n).map(|step| (turn + step) % n).find(|&i| unfinished(&consumers[i])).unwrap_or((turn + 1) % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_is_read_once_every_partition_with_an_end_is_done() {
        let ends: HashMap<PartitionKey, i64> =
            [(PartitionKey::new("orders", 0), 10), (PartitionKey::new("orders", 1), 5), (PartitionKey::new("members", 0), 0)].into();
        let mut done: BTreeSet<PartitionKey> = [PartitionKey::new("members", 0), PartitionKey::new("orders", 0)].into();
        assert!(topic_read(&ends, &done, "members"));
        assert!(!topic_read(&ends, &done, "orders"));
        done.insert(PartitionKey::new("orders", 1));
        assert!(topic_read(&ends, &done, "orders"));
    }

    #[test]
    fn the_next_turn_skips_finished_topics() {
        assert_eq!(next_unfinished(&[true, false], 0, |u| *u), 0, "the only unfinished topic keeps its turn");
        assert_eq!(next_unfinished(&[true, false, true], 0, |u| *u), 2);
        assert_eq!(next_unfinished(&[true, false, true], 2, |u| *u), 0);
        assert_eq!(next_unfinished(&[true, true], 1, |u| *u), 0);
        assert_eq!(next_unfinished(&[false, false], 0, |u| *u), 1, "all finished: plain rotation");
    }
}
