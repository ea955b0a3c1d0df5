//! Where partitions begin and end, asked of the brokers for many partitions at once.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::chunk::PartitionKey;
use crate::settings::KafkaError;

/// The first (`Offset::Beginning`) or next-to-be-written (`Offset::End`) offset of each of
/// `keys`, asked in one ListOffsets request per broker rather than one per partition (a
/// topic of a hundred partitions otherwise costs two hundred round trips).
pub(crate) fn list_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    keys: &[PartitionKey],
    at: Offset,
    timeout: Duration,
) -> Result<HashMap<PartitionKey, i64>, KafkaError> {
    // librdkafka refuses an empty request, and a group task can be assigned no partition
    // (more tasks than partitions).
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut asked = TopicPartitionList::new();
    for key in keys {
        // librdkafka reads the offset field as a timestamp: -2 (Beginning) and -1 (End) are
        // ListOffsets' earliest and latest.
        asked.add_partition_offset(&key.topic, key.partition, at).map_err(KafkaError::client("build a ListOffsets request"))?;
    }
    let answered = consumer.offsets_for_times(asked, timeout).map_err(KafkaError::client("list offsets"))?;
    let mut out = HashMap::with_capacity(keys.len());
    for elem in answered.elements() {
        let context = || format!("offsets of {}[{}]", elem.topic(), elem.partition());
        elem.error().map_err(KafkaError::client(context()))?;
        match elem.offset() {
            Offset::Offset(offset) => out.insert(PartitionKey::new(elem.topic(), elem.partition()), offset),
            other => return Err(KafkaError::Fatal(format!("{}: the brokers answered {other:?}", context()))),
        };
    }
    if let Some(key) = keys.iter().find(|k| !out.contains_key(*k)) {
        let missing = rdkafka::error::KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownPartition);
        return Err(KafkaError::client(format!("offsets of {}[{}]", key.topic, key.partition))(missing));
    }
    Ok(out)
}

/// Low and high watermarks of each of `keys`: two ListOffsets requests per broker in all.
pub(crate) fn list_watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    keys: &[PartitionKey],
    timeout: Duration,
) -> Result<HashMap<PartitionKey, (i64, i64)>, KafkaError> {
    let lows = list_offsets(consumer, keys, Offset::Beginning, timeout)?;
    let highs = list_offsets(consumer, keys, Offset::End, timeout)?;
    Ok(lows.into_iter().filter_map(|(key, low)| highs.get(&key).map(|high| (key, (low, *high)))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LakeContext;
    use rdkafka::ClientConfig;

    #[test]
    fn no_partitions_have_no_offsets_without_asking_the_brokers() {
        // Nothing listens there: an answer can only come without a request.
        let consumer: BaseConsumer<LakeContext> =
            ClientConfig::new().set("bootstrap.servers", "127.0.0.1:1").create_with_context(LakeContext::default()).expect("client");
        let none = list_offsets(&consumer, &[], Offset::End, Duration::from_millis(100)).expect("no request, no error");
        assert!(none.is_empty());
    }
}
