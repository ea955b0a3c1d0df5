//! Kinesis streams on the moto server: creating them and putting records.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

/// Creates a stream of `shards` shards.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) {
    client.create_stream().stream_name(name).shard_count(shards).send().await.expect("stream created");
}

/// Puts `(partition key, data)` records in order, one PutRecords call per 500.
pub async fn put(client: &aws_sdk_kinesis::Client, stream: &str, records: &[(String, Vec<u8>)]) {
    for part in records.chunks(500) {
        let entries = part
            .iter()
            .map(|(key, data)| PutRecordsRequestEntry::builder().partition_key(key).data(Blob::new(data.clone())).build().expect("entry"))
            .collect::<Vec<_>>();
        let out = client.put_records().stream_name(stream).set_records(Some(entries)).send().await.expect("records put");
        assert_eq!(out.failed_record_count(), Some(0));
    }
}
