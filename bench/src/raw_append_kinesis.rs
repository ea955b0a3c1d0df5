//! `lakebench raw-append --source kinesis`: raw-append reading a Kinesis stream (moto's, at
//! `AWS_ENDPOINT_URL`) against a bare GetRecords loop over the same records, the ceiling here,
//! measured in the same run.

use std::path::Path;
use std::time::Instant;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use aws_sdk_kinesis::Client;
use reference_data::{create_topics, OrderGenerator};

use crate::common::{median, tokio_block};

/// What one run measured.
struct Times {
    ceiling: f64,
    job: f64,
    peak_rss: u64,
}

/// Puts `n` reference orders into a new stream of `shards` shards and times, `runs` times, the
/// bare loop and a trigger-once raw-append of the shipped configuration with its orders source
/// read from the stream (members: an empty Kafka topic, as the reference shape has two sources).
pub fn run(brokers: &str, schemas: &Path, work_dir: &Path, n: u64, shards: i32, runs: usize) -> Result<(), String> {
    let client = tokio_block(async { Client::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await) });
    let stream = format!("bench-orders-{n}-{}", std::process::id());
    let members = format!("bench-members-{n}-{}", std::process::id());
    tokio_block(create_topics(brokers, &[&members], 2)).map_err(|e| e.to_string())?;
    let started = Instant::now();
    tokio_block(put_orders(&client, &stream, shards, n))?;
    println!("put {n} orders into {shards} shards in {:.1}s", started.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for run in 0..runs {
        let ceiling = tokio_block(bare_loop(&client, &stream, n))?;
        let (job, peak_rss) = raw_append_once(brokers, &stream, &members, schemas, work_dir, run)?;
        println!("    run {}: bare GetRecords {ceiling:.2}s, raw-append {job:.2}s, peak RSS {:.0} MB", run + 1, peak_rss as f64 / 1e6);
        times.push(Times { ceiling, job, peak_rss });
    }
    let ceiling = n as f64 / median(times.iter().map(|t| t.ceiling));
    let job = n as f64 / median(times.iter().map(|t| t.job));
    let rss = median(times.iter().map(|t| t.peak_rss as f64));
    println!("{n} orders from Kinesis: bare GetRecords loop {ceiling:.0} rec/s, raw-append {job:.0} rec/s ({:.0}% of the loop), peak RSS {:.0} MB (medians of {runs})", 100.0 * job / ceiling, rss / 1e6);
    Ok(())
}

async fn put_orders(client: &Client, stream: &str, shards: i32, n: u64) -> Result<(), String> {
    client.create_stream().stream_name(stream).shard_count(shards).send().await.map_err(|e| format!("CreateStream: {e:?}"))?;
    let mut gen = OrderGenerator::reference(7);
    let mut left = n;
    let mut i = 0u64;
    while left > 0 {
        let take = left.min(500);
        let mut entries = Vec::with_capacity(take as usize);
        for _ in 0..take {
            let (id, json) = gen.next_message();
            i += 1;
            let entry = PutRecordsRequestEntry::builder().partition_key(format!("{id}-{i}")).data(Blob::new(json)).build();
            entries.push(entry.map_err(|e| e.to_string())?);
        }
        let out =
            client.put_records().stream_name(stream).set_records(Some(entries)).send().await.map_err(|e| format!("PutRecords: {e:?}"))?;
        if out.failed_record_count().unwrap_or(0) > 0 {
            return Err("PutRecords failed some records".into());
        }
        left -= take;
    }
    Ok(())
}

/// Reads every shard to its tip with GetRecords (10,000 per call), nothing else: the ceiling.
async fn bare_loop(client: &Client, stream: &str, expected: u64) -> Result<f64, String> {
    let started = Instant::now();
    let listed = client.list_shards().stream_name(stream).send().await.map_err(|e| format!("ListShards: {e:?}"))?;
    let mut count = 0u64;
    for shard in listed.shards() {
        let it =
            client.get_shard_iterator().stream_name(stream).shard_id(shard.shard_id()).shard_iterator_type(ShardIteratorType::TrimHorizon);
        let mut iterator = it.send().await.map_err(|e| format!("GetShardIterator: {e:?}"))?.shard_iterator().map(String::from);
        while let Some(current) = iterator {
            let out = client.get_records().shard_iterator(current).limit(10_000).send().await.map_err(|e| format!("GetRecords: {e:?}"))?;
            count += out.records().len() as u64;
            let at_tip = out.records().is_empty() && out.millis_behind_latest() == Some(0);
            iterator = if at_tip { None } else { out.next_shard_iterator().map(String::from) };
        }
    }
    if count != expected {
        return Err(format!("the bare loop read {count} records, {expected} were put"));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// One trigger-once raw-append of the shipped `schemas/pipeline.toml` with the orders source
/// read from `stream` (Kinesis metadata columns in place of Kafka's); returns seconds and peak RSS.
fn raw_append_once(brokers: &str, stream: &str, members: &str, schemas: &Path, work_dir: &Path, run: usize) -> Result<(f64, u64), String> {
    let orders = r#"{ topic = "orders", table = "raw_order", metadata_columns = ["partition", "offset", "timestamp"] }"#;
    let edits = [
        (
            orders.to_string(),
            format!(
                r#"{{ stream = "{stream}", table = "raw_order", metadata_columns = ["shard_id", "sequence_number", "arrival_time"] }}"#
            ),
        ),
        ("topic = \"members\"".to_string(), format!("topic = \"{members}\"")),
    ];
    crate::raw_append::shipped_run(work_dir, schemas, &format!("kinesis-run-{run}"), brokers, (&edits, &[]))
}
