//! KPL aggregated records: one Kinesis record carrying many user records, as the Kinesis
//! Producer Library writes them — the magic `F3 89 9A C2`, an `AggregatedRecord` protobuf, and
//! the MD5 of the protobuf bytes. Read as the KCL does: a record without the magic, or whose
//! digest or protobuf does not check out, is one user record as it stands.

use md5::{Digest, Md5};
use prost::Message;

/// The first bytes of an aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// The KPL's `AggregatedRecord` message.
#[derive(Clone, PartialEq, Message)]
pub struct AggregatedRecord {
    /// Partition keys, referred to by index.
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Explicit hash keys, referred to by index.
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// One user record inside an [`AggregatedRecord`].
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// Index into the partition key table.
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    /// Index into the explicit hash key table.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// The user's bytes.
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    /// KPL tags (not used by readers).
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// A KPL tag.
#[derive(Clone, PartialEq, Message)]
pub struct Tag {
    /// Tag key.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Tag value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// A user record: its partition key and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Partition key (the aggregate's own for a plain record).
    pub partition_key: String,
    /// Payload.
    pub data: Vec<u8>,
}

/// What a Kinesis record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deaggregated {
    /// Not aggregated: the record is one user record.
    Plain,
    /// The user records of an aggregate, in order.
    Aggregated(Vec<UserRecord>),
    /// It starts with the magic but does not check out (digest, protobuf or key index): read
    /// as one plain record, as the KCL does; the reason is for the log.
    Malformed(&'static str),
}

/// De-aggregates `data` (a Kinesis record's payload).
pub fn deaggregate(data: &[u8]) -> Deaggregated {
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return Deaggregated::Plain;
    }
    let (body, digest) = data[MAGIC.len()..].split_at(data.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(body).as_slice() != digest {
        return Deaggregated::Malformed("MD5 digest does not match");
    }
    let Ok(aggregate) = AggregatedRecord::decode(body) else {
        return Deaggregated::Malformed("not an AggregatedRecord protobuf");
    };
    let mut records = Vec::with_capacity(aggregate.records.len());
    for record in aggregate.records {
        let Some(key) = usize::try_from(record.partition_key_index).ok().and_then(|i| aggregate.partition_key_table.get(i)) else {
            return Deaggregated::Malformed("partition key index out of range");
        };
        records.push(UserRecord { partition_key: key.clone(), data: record.data });
    }
    Deaggregated::Aggregated(records)
}

/// Aggregates `records` as the KPL does (for tests and benchmarks that need KPL input).
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    let mut keys: Vec<String> = Vec::new();
    let mut message = AggregatedRecord::default();
    for r in records {
        let index = keys.iter().position(|k| *k == r.partition_key).unwrap_or_else(|| {
            keys.push(r.partition_key.clone());
            keys.len() - 1
        });
        message.records.push(Record { partition_key_index: index as u64, data: r.data.clone(), ..Default::default() });
    }
    message.partition_key_table = keys;
    let body = message.encode_to_vec();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(key: &str, data: &str) -> UserRecord {
        UserRecord { partition_key: key.into(), data: data.as_bytes().to_vec() }
    }

    #[test]
    fn aggregates_expand_to_their_user_records_in_order() {
        let records = vec![user("a", "{\"n\":1}"), user("b", "{\"n\":2}"), user("a", "")];
        assert_eq!(deaggregate(&aggregate(&records)), Deaggregated::Aggregated(records));
    }

    #[test]
    fn plain_and_damaged_records_stay_whole() {
        assert_eq!(deaggregate(b"{\"plain\":true}"), Deaggregated::Plain);
        assert_eq!(deaggregate(&MAGIC), Deaggregated::Plain, "too short to hold a digest");
        let mut damaged = aggregate(&[user("a", "x")]);
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert_eq!(deaggregate(&damaged), Deaggregated::Malformed("MD5 digest does not match"));
        let body = AggregatedRecord { records: vec![Record { partition_key_index: 3, ..Default::default() }], ..Default::default() };
        let body = body.encode_to_vec();
        let bad_index = [MAGIC.as_slice(), &body, &Md5::digest(&body)].concat();
        assert_eq!(deaggregate(&bad_index), Deaggregated::Malformed("partition key index out of range"));
    }
}
