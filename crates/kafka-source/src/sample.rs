//! The first messages of a topic, for schema inference: every partition from its low
//! watermark, without a consumer group or committed offsets.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::offsets::fetch_watermarks;
use crate::{KafkaError, LakeContext};

/// Gives up when no message arrived for this long (a partition's end is reported by the
/// broker, so this only bounds one that stops answering).
const QUIET_LIMIT: Duration = Duration::from_secs(30);

/// Up to `limit` payloads of `topic`, read from the start of every partition to its end
/// (fewer when the topic holds fewer). The end is where the broker's fetch reports it, not the
/// listed high watermark (some brokers list it late).
pub fn sample_messages(config: &ClientConfig, context: LakeContext, topic: &str, limit: usize) -> Result<Vec<Vec<u8>>, KafkaError> {
    let watermarks = fetch_watermarks(config, context.clone(), &[topic])?;
    let mut config = config.clone();
    config.set("group.id", "lakehouse-sample").set("enable.auto.commit", "false").set("enable.partition.eof", "true");
    let consumer: BaseConsumer<LakeContext> = config.create_with_context(context).map_err(KafkaError::client("create sample consumer"))?;
    let mut assignment = TopicPartitionList::new();
    for (key, (low, _)) in &watermarks {
        assignment
            .add_partition_offset(topic, key.partition, Offset::Offset(*low))
            .map_err(KafkaError::client("build sample assignment"))?;
    }
    consumer.assign(&assignment).map_err(KafkaError::client(format!("assign {topic}")))?;
    let mut at_end = BTreeSet::new();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < limit && at_end.len() < watermarks.len() && last.elapsed() < QUIET_LIMIT {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                out.push(m.payload().unwrap_or_default().to_vec());
                last = Instant::now();
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(e)) => return Err(KafkaError::client(format!("read {topic}"))(e)),
            None => {}
        }
    }
    Ok(out)
}
