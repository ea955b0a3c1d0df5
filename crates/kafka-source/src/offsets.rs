//! Partition metadata and offsets asked of the brokers: partitions, watermarks, probes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::metadata::Metadata;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::chunk::*;
use crate::watermarks::list_watermarks;
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

/// How long the first metadata request may take before the client's events are served; each
/// later one waits twice as long (a slow but healthy broker still gets its answer in).
const FIRST_METADATA_ATTEMPT: Duration = Duration::from_secs(1);
/// Events served between two metadata requests, at most.
const EVENTS_PER_ATTEMPT: usize = 64;

/// The partitions of `topic`, or [`KafkaError::UnknownTopic`].
pub fn topic_partitions(consumer: &BaseConsumer<LakeContext>, topic: &str) -> Result<Vec<i32>, KafkaError> {
    let md = topic_metadata(consumer, topic)?;
    let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| KafkaError::UnknownTopic(topic.into()))?;
    if let Some(code) = t.error() {
        return Err(topic_error(topic, code.into()));
    }
    if t.partitions().is_empty() {
        return Err(KafkaError::UnknownTopic(topic.into()));
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// What an error the brokers give for `topic` in its metadata means: an authorization failure
/// says so (the topic may well exist); anything else, that the topic does not exist.
fn topic_error(topic: &str, code: RDKafkaErrorCode) -> KafkaError {
    use RDKafkaErrorCode as C;
    if matches!(code, C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed) {
        return KafkaError::Fatal(format!("metadata of topic '{topic}': {code}"));
    }
    KafkaError::UnknownTopic(topic.into())
}

/// The brokers' metadata of `topic`, asked in short requests. librdkafka reports why it cannot
/// connect (refused, TLS, SASL) as events only a poll serves, so the client is polled between
/// requests: an error retrying cannot fix fails at once with librdkafka's reason, and brokers
/// that stay unreachable fail after [`METADATA_TIMEOUT`] with the last reason given.
fn topic_metadata(consumer: &BaseConsumer<LakeContext>, topic: &str) -> Result<Metadata, KafkaError> {
    let deadline = Instant::now() + METADATA_TIMEOUT;
    let mut attempt = FIRST_METADATA_ATTEMPT;
    loop {
        let started = Instant::now();
        let wait = attempt.min(deadline.saturating_duration_since(started));
        attempt = (attempt * 2).min(METADATA_TIMEOUT);
        let failed = match consumer.fetch_metadata(Some(topic), wait) {
            Ok(md) => return Ok(md),
            Err(e) => e,
        };
        // A request can fail at once (no broker connected): the rest of the attempt is spent
        // serving events, so the loop never spins.
        serve_events(consumer, wait.saturating_sub(started.elapsed()));
        if let Some(fatal) = consumer.context().take_fatal() {
            return Err(fatal);
        }
        if Instant::now() >= deadline {
            let last = consumer.context().last_error.lock().ok().and_then(|l| l.clone()).unwrap_or_else(|| failed.to_string());
            return Err(KafkaError::Unreachable { topic: topic.into(), seconds: METADATA_TIMEOUT.as_secs(), last });
        }
    }
}

/// Serves the client's queued events (the context records errors; librdkafka's logs reach
/// ours), waiting up to `wait` for the first one. A poll that served only a log line answers
/// None like an empty queue does, so a fixed number of polls follows instead of a drain.
fn serve_events(consumer: &BaseConsumer<LakeContext>, wait: Duration) {
    let _ = consumer.poll(wait);
    for _ in 0..EVENTS_PER_ATTEMPT {
        let _ = consumer.poll(Duration::ZERO);
    }
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
    let mut keys = Vec::new();
    for topic in topics {
        keys.extend(topic_partitions(&consumer, topic)?.into_iter().map(|p| PartitionKey::new(topic, p)));
    }
    list_watermarks(&consumer, &keys, METADATA_TIMEOUT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_the_brokers_deny_is_an_authorization_failure_not_a_missing_topic() {
        let denied = topic_error("orders", RDKafkaErrorCode::TopicAuthorizationFailed).to_string();
        assert!(denied.contains("orders") && denied.contains("retrying does not help"), "{denied}");
        assert!(matches!(topic_error("orders", RDKafkaErrorCode::UnknownTopicOrPartition), KafkaError::UnknownTopic(_)));
        assert!(matches!(topic_error("orders", RDKafkaErrorCode::UnknownTopic), KafkaError::UnknownTopic(_)));
        assert!(matches!(topic_error("orders", RDKafkaErrorCode::LeaderNotAvailable), KafkaError::UnknownTopic(_)));
    }
}
