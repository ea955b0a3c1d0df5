//! Partition metadata and offsets asked of the brokers: partitions, watermarks, probes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::chunk::*;
use crate::{KafkaError, LakeContext};

/// Poll timeout of the reader's consumers and probes.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// How long metadata requests may take.
pub(crate) const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn single(key: &PartitionKey) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&key.topic, key.partition);
    tpl
}

/// The partitions of `topic`, or [`KafkaError::UnknownTopic`].
pub fn topic_partitions<C: Consumer<LakeContext>>(consumer: &C, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT).map_err(KafkaError::client(format!("metadata of {topic}")))?;
    let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| KafkaError::UnknownTopic(topic.into()))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(KafkaError::UnknownTopic(topic.into()));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// How long [`probe_position`] waits for the broker's answer.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a partition holds at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// A message is there (more may follow).
    Message,
    /// It is the partition's end: nothing there yet.
    End,
    /// Out of range, or no answer within a few seconds.
    Unreadable,
}

/// What offset `next` of the partition is. Asked when recorded progress is past the listed
/// high watermark: the topic was recreated with fewer messages, or the broker's ListOffsets lags
/// what its fetches return (tansu lists the base offset of the last record batch, so messages
/// may follow `next`).
pub fn probe_position(config: &ClientConfig, context: LakeContext, key: &PartitionKey, next: i64) -> Result<Position, KafkaError> {
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
            Some(Ok(_)) => return Ok(Position::Message),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(Position::End),
            Some(Err(e)) if matches!(e.rdkafka_error_code(), Some(C::AutoOffsetReset | C::OffsetOutOfRange)) => {
                return Ok(Position::Unreadable)
            }
            _ => {}
        }
    }
    Ok(Position::Unreadable)
}

/// Messages from offset `next` to the partition's high watermark (0 when a broker lists its end
/// late, below what was read).
pub fn messages_behind(next: i64, high: i64) -> u64 {
    u64::try_from(high - next).unwrap_or(0)
}

/// Low and high watermarks of every partition of `topics` (for trigger-once end offsets).
pub fn fetch_watermarks(
    config: &ClientConfig,
    context: LakeContext,
    topics: &[&str],
) -> Result<HashMap<PartitionKey, (i64, i64)>, KafkaError> {
    let consumer: BaseConsumer<LakeContext> = config.create_with_context(context).map_err(KafkaError::client("create metadata client"))?;
    let mut out = HashMap::new();
    for topic in topics {
        for p in topic_partitions(&consumer, topic)? {
            let wm =
                consumer.fetch_watermarks(topic, p, METADATA_TIMEOUT).map_err(KafkaError::client(format!("watermarks of {topic}[{p}]")))?;
            out.insert(PartitionKey::new(topic, p), wm);
        }
    }
    Ok(out)
}
