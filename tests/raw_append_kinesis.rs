//! raw-append from Kinesis Data Streams (moto's Kinesis on the moto server the S3 tests use),
//! end to end through the job: the table holds what was put, field by field, KPL aggregates
//! expanded; SIGKILLs at every step while a producer keeps putting lose or double nothing;
//! resharded streams are read parents first; throttling is retried and counted; two tasks
//! share a stream by shard index, and a replaced task (a rolling deploy) doubles nothing.
//!
//! moto's Kinesis differs from AWS in ways these tests work around: it picks the first shard
//! whose hash range holds a key, closed or not, so puts after a split (and the records a split
//! re-puts) land in the closed parent, which AWS never does; reshards here happen before the
//! job first reads the stream, and the test checks the order in which shards are finished and
//! opened. The parent-before-child order during ingestion is unit-tested over the shard graph
//! (`kinesis_source::shards`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use e2e_tests::*;
use kinesis_source::kpl::{aggregate, UserRecord};
use reference_data::OrderGenerator;

const ORDERS_TABLE: &str = include_str!("fixtures/raw_order_hourly.tables.toml");
const METADATA: &str = r#"metadata_columns = ["stream", "shard_id", "sequence_number", "sub_sequence_number", "arrival_time", "partition_key", "raw_message"]"#;

fn kinesis_pipeline(services: &Services, stream: &str, extra: &str) -> Pipeline {
    Pipeline::new(
        services,
        None,
        &format!("{ORDERS_TABLE}\n[raw_append]\n{extra}\nsources = [{{ stream = \"{stream}\", table = \"raw_order\", {METADATA} }}]\n"),
    )
}

/// `count` reference orders as (partition key `<order id>-<n>`, JSON) records (the reference
/// has few order ids: the suffix spreads them over every shard).
fn orders(seed: u64, count: usize) -> Vec<(String, Vec<u8>)> {
    let mut gen = OrderGenerator::reference(seed);
    (0..count).map(|i| (i, gen.next_message())).map(|(i, (id, json))| (format!("{id}-{i}"), json.into_bytes())).collect()
}

/// The rows records become, as `query` renders them (order_id, owner, value, timestamp).
fn rows_of(records: &[(String, Vec<u8>)]) -> BTreeMap<Vec<String>, usize> {
    let mut rows = BTreeMap::new();
    for (_, data) in records {
        *rows.entry(order_row(data)).or_insert(0) += 1;
    }
    rows
}

/// Packs records into KPL aggregates of `per` user records each (the aggregate's own
/// partition key is its first record's).
fn aggregates(records: &[(String, Vec<u8>)], per: usize) -> Vec<(String, Vec<u8>)> {
    records
        .chunks(per)
        .map(|part| {
            let users: Vec<UserRecord> = part.iter().map(|(k, d)| UserRecord { partition_key: k.clone(), data: d.clone() }).collect();
            (part[0].0.clone(), aggregate(&users))
        })
        .collect()
}

fn put_all(services: &Services, stream: &str, records: &[(String, Vec<u8>)]) {
    block_on(put(&kinesis_client(services), stream, records));
}

fn table_rows(pipeline: &Pipeline) -> BTreeMap<Vec<String>, usize> {
    let table = pipeline.table("raw/order");
    let rows = query(
        &[("o", table.as_str())],
        &HashMap::new(),
        "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), timestamp FROM o",
    );
    multiset(rows)
}

/// Every (shard, sequence, sub-sequence) of the table and the dead-letter table exactly once;
/// returns the rows of each.
fn assert_each_record_once(pipeline: &Pipeline) -> (u64, u64) {
    let (main, dlq) = (pipeline.table("raw/order"), pipeline.table("raw/dead_letter"));
    let tables = [("o", main.as_str())];
    let once = query(
        &tables,
        &HashMap::new(),
        "SELECT COUNT(*), COUNT(DISTINCT concat(_kinesis_shard_id, '/', _kinesis_sequence_number, '/', CAST(_kinesis_sub_sequence_number AS VARCHAR))) FROM o",
    );
    assert_eq!(once[0][0], once[0][1], "a Kinesis record landed twice");
    let dead = if std::path::Path::new(&dlq).join("_delta_log").is_dir() {
        query(&[("d", dlq.as_str())], &HashMap::new(), "SELECT COUNT(*) FROM d")[0][0].parse().unwrap()
    } else {
        0
    };
    (once[0][0].parse().unwrap(), dead)
}

#[test]
fn a_stream_lands_field_by_field_with_kpl_aggregates_expanded_and_exit_3_when_nothing_is_new() {
    let services = Services::get();
    let stream = unique("orders");
    block_on(create_stream(&kinesis_client(&services), &stream, 2));
    let plain = orders(21, 600);
    let packed = orders(22, 400);
    let malformed = vec![("bad".to_string(), b"{\"order_id\": 1, ".to_vec())];
    put_all(&services, &stream, &plain);
    put_all(&services, &stream, &aggregates(&packed, 10));
    put_all(&services, &stream, &malformed);

    let pipeline = kinesis_pipeline(&services, &stream, "max_batch_rows = 300");
    let config = pipeline.config.to_str().unwrap();
    let env = services.s3_env();
    let first = run("raw-append", &["--config", config], &env);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(first.summary["rows_in"], 1001, "{}", first.summary);
    assert_eq!(first.summary["rows_out"]["raw_order"], 1000);
    assert_eq!(first.summary["dead_letters"], 1);
    // GetRecords limits count Kinesis records, so a batch may pass 300 rows by one answer's
    // aggregates: 1,001 rows still need several batches.
    assert!(first.summary["batches"].as_u64().unwrap() >= 3, "batches of about 300 rows: {}", first.summary);
    let mut expected = rows_of(&plain);
    for (row, n) in rows_of(&packed) {
        *expected.entry(row).or_insert(0) += n;
    }
    assert_eq!(table_rows(&pipeline), expected, "field by field, each aggregate as its user records");
    assert_eq!(assert_each_record_once(&pipeline), (1000, 1));

    let table = pipeline.table("raw/order");
    let meta = query(
        &[("o", table.as_str())],
        &HashMap::new(),
        &format!(
            "SELECT COUNT(*) FILTER (WHERE _kinesis_stream = '{stream}'), COUNT(DISTINCT _kinesis_shard_id), \
             COUNT(*) FILTER (WHERE _kinesis_sub_sequence_number > 0), COUNT(*) FILTER (WHERE starts_with(_kinesis_partition_key, CAST(order_id AS VARCHAR) || '-')), \
             COUNT(*) FILTER (WHERE _kinesis_arrival_time IS NOT NULL AND _kinesis_sequence_number IS NOT NULL), MIN(_kinesis_shard_id) FROM o"
        ),
    );
    assert_eq!(meta[0][..5], ["1000", "2", "360", "1000", "1000"], "metadata columns: {meta:?}");
    assert_eq!(meta[0][5], "shardId-000000000000");
    // The payloads as received (each aggregate's user records), byte for byte, for replay.
    let raw = query(&[("o", table.as_str())], &HashMap::new(), "SELECT CAST(_raw_message AS VARCHAR) FROM o");
    let put_payloads = plain.iter().chain(&packed).map(|(_, d)| vec![String::from_utf8(d.clone()).unwrap()]).collect();
    assert_eq!(multiset(raw), multiset(put_payloads), "_raw_message holds every payload as put");
    // One position per shard remains beside the table: superseded ones are deleted.
    let positions = std::path::Path::new(&table).join(format!("_lakehouse/kinesis/raw-append/{stream}/shardId-000000000000"));
    assert_eq!(std::fs::read_dir(&positions).expect("positions folder").count(), 1, "{}", positions.display());

    let again = run("raw-append", &["--config", config], &env);
    assert_eq!(again.code, Some(3), "nothing new: {}", again.stderr);
    let more = orders(23, 50);
    put_all(&services, &stream, &more);
    let third = run("raw-append", &["--config", config], &env);
    assert_eq!((third.code, third.summary["rows_in"].as_u64()), (Some(0), Some(50)), "{}", third.stderr);
    for (row, n) in rows_of(&more) {
        *expected.entry(row).or_insert(0) += n;
    }
    assert_eq!(table_rows(&pipeline), expected, "only the new records were added");

    // The positions beside the table are lost (deleted by hand): the run stops, exit 5 and the
    // fix, rather than re-reading the shards from their start.
    std::fs::remove_dir_all(std::path::Path::new(&table).join("_lakehouse")).expect("positions removed");
    let lost = run("raw-append", &["--config", config], &env);
    assert_eq!(lost.code, Some(5), "{}", lost.stderr);
    assert!(lost.stderr.contains("restore the _lakehouse folder"), "{}", lost.stderr);
    assert_eq!(table_rows(&pipeline), expected, "nothing written");
}

#[test]
fn an_unknown_stream_fails_the_run_naming_it() {
    let services = Services::get();
    let pipeline = kinesis_pipeline(&services, "no-such-stream", "");
    let r = run("raw-append", &["--config", pipeline.config.to_str().unwrap()], &services.s3_env());
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("kinesis ListShards on stream no-such-stream") && r.stderr.contains("ResourceNotFound"), "{}", r.stderr);
}

#[test]
fn killed_at_any_step_while_a_producer_puts_every_record_lands_once() {
    let services = Services::get();
    let stream = unique("crash");
    block_on(create_stream(&kinesis_client(&services), &stream, 3));
    let records = orders(31, 6_000);
    let bad_every = 97;
    let with_bad: Vec<(String, Vec<u8>)> = records
        .iter()
        .enumerate()
        .map(|(i, r)| if i % bad_every == bad_every - 1 { (r.0.clone(), b"not json".to_vec()) } else { r.clone() })
        .collect();
    let producer = {
        let (services, stream, with_bad) = (services.clone(), stream.clone(), with_bad.clone());
        std::thread::spawn(move || {
            for part in with_bad.chunks(300) {
                put_all(&services, &stream, part);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let pipeline = kinesis_pipeline(&services, &stream, "max_batch_rows = 400\ninterval = \"300ms\"");
    let config = pipeline.config.to_str().unwrap().to_string();
    let env = services.s3_env();
    let plan = [
        Kill::At("raw_append::after_decode", "1*off->return"),
        Kill::At("raw_append::after_upload", "1*off->return"),
        Kill::At("raw_append::after_position_write", "return"),
        Kill::After(900),
        Kill::At("raw_append::after_commit", "return"),
        Kill::At("raw_append::after_dead_letter_upload", "return"),
        Kill::At("raw_append::after_position_write", "2*off->return"),
        Kill::After(1_500),
        Kill::At("raw_append::after_dead_letter_commit", "return"),
        Kill::At("raw_append::after_upload", "3*off->return"),
        Kill::At("raw_append::after_commit", "2*off->return"),
        Kill::After(2_000),
    ];
    let crashes = run_kill_plan("raw-append", &config, &env, &plan);
    assert!(crashes >= 10, "only {crashes} runs were actually killed");
    producer.join().expect("producer");
    drain("raw-append", &config, &env);

    let bad = with_bad.iter().filter(|(_, d)| d == b"not json").count() as u64;
    assert_eq!(assert_each_record_once(&pipeline), (records.len() as u64 - bad, bad), "every record in exactly one table");
    let good: Vec<_> = with_bad.into_iter().filter(|(_, d)| d != b"not json").collect();
    assert_eq!(table_rows(&pipeline), rows_of(&good), "field by field");
}

#[test]
fn a_resharded_stream_is_read_parents_first_and_finished_parents_stay_finished() {
    let services = Services::get();
    let stream = unique("resharded");
    let client = kinesis_client(&services);
    block_on(create_stream(&client, &stream, 2));
    let records = orders(41, 800);
    put_all(&services, &stream, &records);
    block_on(async {
        // Shard 0 split into 2 and 3 (moto moves its records into them, see the module doc).
        let shard0 = client.list_shards().stream_name(&stream).send().await.unwrap().shards()[0].clone();
        let range = shard0.hash_key_range().unwrap();
        let middle = (range.starting_hash_key().parse::<u128>().unwrap() + range.ending_hash_key().parse::<u128>().unwrap()) / 2;
        client
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(shard0.shard_id())
            .new_starting_hash_key(middle.to_string())
            .send()
            .await
            .unwrap();
    });
    let pipeline = kinesis_pipeline(&services, &stream, "max_batch_rows = 250");
    let config = pipeline.config.to_str().unwrap();
    let env = services.s3_env();
    let first = run("raw-append", &["--config", config], &env);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(assert_each_record_once(&pipeline).0, 800);
    assert_eq!(table_rows(&pipeline), rows_of(&records), "every record once after the split");
    let table = pipeline.table("raw/order");
    // The children open only once the parent is read to its end.
    let line = |what: &str, shard: &str| first.stderr.lines().position(|l| l.contains(what) && l.contains(shard));
    let parent_done = line("kinesis shard finished", "shardId-000000000000").expect("the parent finished");
    for child in ["shardId-000000000002", "shardId-000000000003"] {
        assert!(line("kinesis shard opened", child).is_some_and(|l| l > parent_done), "{child} opened after its parent:\n{}", first.stderr);
    }
    // The split parent is recorded finished: a later run does not open it again.
    let parent = std::path::Path::new(&table).join(format!("_lakehouse/kinesis/raw-append/{stream}/shardId-000000000000"));
    let position: serde_json::Value =
        serde_json::from_slice(&std::fs::read(std::fs::read_dir(&parent).unwrap().next().unwrap().unwrap().path()).unwrap()).unwrap();
    assert_eq!(position["finished"], true, "{position}");
    let again = run("raw-append", &["--config", config], &env);
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    let reopened = again.stderr.lines().filter(|l| l.contains("kinesis shard opened") && l.contains("shardId-000000000000")).count();
    assert_eq!(reopened, 0, "the finished parent is not reopened:\n{}", again.stderr);
}

#[test]
fn throttled_reads_are_retried_and_counted_in_the_summary() {
    let services = Services::get();
    let proxy = FaultProxy::kinesis_throttling(&services, 0.4, 11);
    let stream = unique("throttled");
    block_on(create_stream(&kinesis_client(&services), &stream, 2));
    let records = orders(51, 300);
    put_all(&services, &stream, &records);
    // Small batches: many GetRecords calls for the proxy to throttle.
    let pipeline = kinesis_pipeline(&services, &stream, "max_batch_rows = 20");
    // The lake is a local folder: only Kinesis goes through the proxy.
    let env = proxy.s3_env(&services);
    let r = run_succeeds("raw-append", pipeline.config.to_str().unwrap(), &env);
    let injected = proxy.counts(None)["throttle"].as_u64().unwrap_or(0);
    assert!(injected > 0, "the proxy throttled: {}", proxy.counts(None));
    assert_eq!(r.summary["source_throttles"].as_u64(), Some(injected), "every throttle counted: {}", r.summary);
    assert!(r.summary["millis_behind_latest"].as_object().is_some_and(|m| m.len() == 2), "lag per shard: {}", r.summary);
    assert_eq!(table_rows(&pipeline), rows_of(&records), "nothing lost to throttling");
}

#[test]
fn two_tasks_share_the_shards_and_a_replaced_task_doubles_nothing() {
    let services = Services::get();
    let stream = unique("shared");
    block_on(create_stream(&kinesis_client(&services), &stream, 4));
    let records = orders(61, 4_000);
    let producer = {
        let (services, stream, records) = (services.clone(), stream.clone(), records.clone());
        std::thread::spawn(move || {
            for part in records.chunks(200) {
                put_all(&services, &stream, part);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let pipeline = kinesis_pipeline(&services, &stream, "interval = \"500ms\"");
    let config = pipeline.config.to_str().unwrap();
    let task = |index: u32| {
        let mut env = services.s3_env();
        env.push(("LAKEHOUSE_KINESIS_SHARD_INDEX".into(), index.to_string()));
        env.push(("LAKEHOUSE_KINESIS_SHARD_COUNT".into(), "2".into()));
        spawn("raw-append", &["--config", config, "--trigger", "continuous"], &env)
    };
    let stop = |child: std::process::Child| {
        // SIGTERM: a graceful stop commits the batch in flight.
        let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let out = child.wait_with_output().expect("task ended");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let summary: serde_json::Value = stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).expect("a summary");
        (String::from_utf8_lossy(&out.stderr).into_owned(), summary)
    };
    let first = task(0);
    let second = task(1);
    std::thread::sleep(Duration::from_secs(4));
    // A rolling deploy: the replacement of task 1 starts before the old one stops.
    let replacement = task(1);
    std::thread::sleep(Duration::from_secs(3));
    let (_, old) = stop(second);
    producer.join().expect("producer");
    std::thread::sleep(Duration::from_secs(4));
    let (first_logs, _) = stop(first);
    let (_, new) = stop(replacement);
    // While both read shards 1 and 3 from a stream that kept growing, whichever committed second
    // found the shards moved under its batch: dropped, re-read, no exit.
    let dropped = old["batches_dropped"].as_u64().unwrap_or(0) + new["batches_dropped"].as_u64().unwrap_or(0);
    assert!(dropped >= 1, "the two tasks of index 1 overlapped: {old}\n{new}");
    let opened = |logs: &str, shard: &str| logs.lines().any(|l| l.contains("kinesis shard opened") && l.contains(shard));
    assert!(opened(&first_logs, "shardId-000000000000") && opened(&first_logs, "shardId-000000000002"), "{first_logs}");
    assert!(!opened(&first_logs, "shardId-000000000001") && !opened(&first_logs, "shardId-000000000003"), "task 0 reads only its shards");
    let (before_drain, _) = assert_each_record_once(&pipeline);
    assert!(before_drain > 0, "the tasks wrote");
    drain("raw-append", config, &services.s3_env());
    assert_eq!(assert_each_record_once(&pipeline).0, records.len() as u64);
    assert_eq!(table_rows(&pipeline), rows_of(&records), "every record once, whichever task wrote it");
    let table = pipeline.table("raw/order");
    let writers = query(&[("o", table.as_str())], &HashMap::new(), "SELECT COUNT(DISTINCT _kinesis_shard_id) FROM o");
    assert_eq!(writers[0][0], "4");
}

#[test]
fn shards_gone_before_they_were_read_to_their_end_stop_the_run_unless_skipping_is_configured() {
    let services = Services::get();
    let stream = unique("recreated");
    let client = kinesis_client(&services);
    block_on(create_stream(&client, &stream, 3));
    put_all(&services, &stream, &orders(71, 300));
    let pipeline = kinesis_pipeline(&services, &stream, "");
    let config = pipeline.config.to_str().unwrap();
    let env = services.s3_env();
    assert_eq!(run("raw-append", &["--config", config], &env).code, Some(0));
    // The stream is recreated with one shard: shards 1 and 2, started and not finished, are
    // gone with whatever they still held (as retention would drop them).
    block_on(async {
        client.delete_stream().stream_name(&stream).send().await.expect("stream deleted");
        create_stream(&client, &stream, 1).await;
    });
    let version = table_version(&pipeline.table("raw/order"), &HashMap::new());
    let gone = run("raw-append", &["--config", config], &env);
    assert_eq!(gone.code, Some(4), "{}", gone.stderr);
    assert!(
        gone.stderr.contains("shardId-000000000001")
            && gone.stderr.contains("shardId-000000000002")
            && gone.stderr.contains("on_missing_offsets"),
        "names the shards and the fix: {}",
        gone.stderr
    );
    assert_eq!(table_version(&pipeline.table("raw/order"), &HashMap::new()), version, "nothing committed");

    pipeline.edit("[raw_append]\n", "[raw_append]\non_missing_offsets = \"skip\"\n");
    let skipped = run("raw-append", &["--config", config], &env);
    assert!(matches!(skipped.code, Some(0 | 3)), "{}", skipped.stderr);
    assert!(skipped.stderr.contains("shards_expired"), "the skip is logged: {}", skipped.stderr);
}

#[test]
fn one_run_reads_a_kafka_topic_and_a_kinesis_stream_together() {
    let services = Services::get();
    let (topic, stream) = (unique("kafka-orders"), unique("kinesis-orders"));
    create_topics(&services, &[&topic], 2);
    produce_orders(&services, &topic, 81, 500, 0, 0.0);
    block_on(create_stream(&kinesis_client(&services), &stream, 2));
    let records = orders(82, 400);
    put_all(&services, &stream, &records);
    let pipeline = Pipeline::local(&services, &format!(
            "{ORDERS_TABLE}\n[tables.stream_order]\npath = \"raw/stream_order\"\nschema = \"order.schema.toml\"\n\n[raw_append]\nmax_batch_rows = 150\nsources = [\n  {{ topic = \"{topic}\", table = \"raw_order\", metadata_columns = [\"partition\", \"offset\"] }},\n  {{ stream = \"{stream}\", table = \"stream_order\", {METADATA} }},\n]\n"
        ),
    );
    let r = run_succeeds("raw-append", pipeline.config.to_str().unwrap(), &services.s3_env());
    assert_eq!((r.summary["rows_out"]["raw_order"].as_u64(), r.summary["rows_out"]["stream_order"].as_u64()), (Some(500), Some(400)));
    let kafka_rows = query(
        &[("o", pipeline.table("raw/order").as_str())],
        &HashMap::new(),
        "SELECT COUNT(*), COUNT(DISTINCT concat(CAST(_kafka_partition AS VARCHAR), '/', CAST(_kafka_offset AS VARCHAR))) FROM o",
    );
    assert_eq!(kafka_rows, [["500", "500"]], "every Kafka message once");
    let stream_table = pipeline.table("raw/stream_order");
    let rows = query(
        &[("s", stream_table.as_str())],
        &HashMap::new(),
        "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), timestamp FROM s",
    );
    assert_eq!(multiset(rows), rows_of(&records), "the stream's table, field by field");
    let again = run("raw-append", &["--config", pipeline.config.to_str().unwrap()], &services.s3_env());
    assert_eq!(again.code, Some(3), "{}", again.stderr);
}
