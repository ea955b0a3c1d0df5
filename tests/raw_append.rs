//! raw-append end to end against a real tansu broker and moto S3 server.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e_tests::*;
use reference_data::{OrderGenerator, ProduceOptions};

const ORDERS_TABLE: &str = include_str!("fixtures/raw_order_hourly.tables.toml");

fn orders_pipeline(services: &Services, lake_root: Option<&str>, topic: &str, extra: &str) -> Pipeline {
    Pipeline::new(
        services,
        lake_root,
        &format!(
            "{ORDERS_TABLE}\n[raw_append]\n{extra}\nsources = [{{ topic = \"{topic}\", table = \"raw_order\", metadata_columns = [\"topic\", \"partition\", \"offset\"] }}]\n"
        ),
    )
}

/// The rows a reference order stream of `count` messages must become, as rendered by `query`
/// (order_id, order_owner, order_value, timestamp), skipping the messages the producer replaced
/// with malformed ones.
fn expected_orders(seed: u64, count: u64, bad_fraction: f64) -> BTreeMap<Vec<String>, usize> {
    let mut gen = OrderGenerator::reference(seed);
    let bad_every = if bad_fraction > 0.0 { (1.0 / bad_fraction).round() as u64 } else { 0 };
    let mut rows = BTreeMap::new();
    for i in 0..count {
        let (_, msg) = gen.next_message();
        if bad_every > 0 && i % bad_every == bad_every - 1 {
            continue;
        }
        *rows.entry(order_row(msg.as_bytes())).or_insert(0) += 1;
    }
    rows
}

/// Checks rows of (partition, count, distinct offsets, min offset, max offset): every offset of
/// every partition exactly once, none missing. Returns the total.
fn assert_each_offset_once(per_partition: &[Vec<String>]) -> u64 {
    let mut total = 0;
    for row in per_partition {
        let (n, distinct, min, max): (u64, u64, u64, u64) =
            (row[1].parse().unwrap(), row[2].parse().unwrap(), row[3].parse().unwrap(), row[4].parse().unwrap());
        assert_eq!(n, distinct, "partition {}: an offset landed twice", row[0]);
        assert_eq!((min, max), (0, n - 1), "partition {}: an offset is missing", row[0]);
        total += n;
    }
    total
}

fn count(rows: &[Vec<String>]) -> u64 {
    rows[0][0].parse().expect("a count")
}

#[test]
fn end_to_end_local_tables_hold_exactly_what_was_produced() {
    let services = Services::get();
    let orders = unique("orders");
    let members = unique("members");
    create_topics(&services, &[&orders], 3);
    create_topics(&services, &[&members], 2);
    produce_orders(&services, &orders, 11, 3000, 0, 0.0);
    let mut gen = reference_data::MembershipGenerator::reference(11);
    reference_data::produce(&services.brokers, &members, &ProduceOptions { count: 200, rate: 0, bad_fraction: 0.0 }, || gen.next_message())
        .expect("members");

    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"{ORDERS_TABLE}
[tables.raw_member]
path = "raw/member"
schema = "member.schema.toml"
partitions = [{{ column = "order_owner" }}]

[raw_append]
max_batch_rows = 1000
sources = [
  {{ topic = "{orders}", table = "raw_order", metadata_columns = ["partition", "offset"] }},
  {{ topic = "{members}", table = "raw_member", metadata_columns = ["partition", "offset", "timestamp", "key", "raw_message"] }},
]
"#
        ),
    );
    let config = pipeline.config.to_str().expect("utf-8 path");
    let first = run("raw-append", &["--config", config], &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert_eq!(first.summary["rows_in"], 3200);
    assert_eq!(first.summary["rows_out"]["raw_order"], 3000);
    assert_eq!(first.summary["rows_out"]["raw_member"], 200);
    assert_eq!(first.summary["dead_letters"], 0);

    let order_table = pipeline.table("raw/order");
    let none = HashMap::new();
    let tables = [("o", order_table.as_str())];
    let rows = query(&tables, &none, "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), timestamp FROM o");
    assert_eq!(multiset(rows), expected_orders(11, 3000, 0.0), "field by field, the table holds what was produced");
    let per_partition = query(&tables, &none, "SELECT _kafka_partition, COUNT(*), COUNT(DISTINCT _kafka_offset), MIN(_kafka_offset), MAX(_kafka_offset) FROM o GROUP BY 1 ORDER BY 1");
    let total = assert_each_offset_once(&per_partition);
    assert_eq!(total, 3000);
    let year = query(&tables, &none, "SELECT DISTINCT year, month FROM o");
    let now = chrono_now();
    assert_eq!(year, vec![vec![now.0, now.1]], "ingestion-time partitions");
    assert!(std::path::Path::new(&order_table).join(format!("year={}", year[0][0])).is_dir(), "Hive-style partition folders");

    let member_table = pipeline.table("raw/member");
    let owners = query(&[("m", member_table.as_str())], &none, "SELECT order_owner, COUNT(*) FROM m GROUP BY 1 ORDER BY 1");
    assert_eq!(owners.iter().map(|r| r[1].parse::<u64>().unwrap()).sum::<u64>(), 200);
    assert!(std::path::Path::new(&member_table).join("order_owner=alice").is_dir());
    let keys = query(
        &[("m", member_table.as_str())],
        &none,
        "SELECT COUNT(*) FROM m WHERE _kafka_key = order_owner AND _kafka_timestamp IS NOT NULL",
    );
    assert_eq!(count(&keys), 200, "metadata columns carry the key and the Kafka timestamp");
    let raw = query(
        &[("m", member_table.as_str())],
        &none,
        "SELECT COUNT(*) FROM m WHERE strpos(CAST(_raw_message AS VARCHAR), concat('\"order_owner\": \"', order_owner, '\"')) > 0",
    );
    assert_eq!(count(&raw), 200, "_raw_message holds each message's payload");

    let protocol =
        std::fs::read_to_string(std::path::Path::new(&order_table).join("_delta_log/00000000000000000000.json")).expect("first commit");
    assert!(protocol.contains(r#""minReaderVersion":1"#) && protocol.contains(r#""minWriterVersion":2"#), "lowest protocol: {protocol}");
    assert!(protocol.contains(r#"\"type\":\"timestamp\""#) && !protocol.contains("timestamp_ntz"), "UTC timestamps: {protocol}");

    let version = table_version(&order_table, &none);
    let second = run("raw-append", &["--config", config], &[]);
    assert_eq!(second.code, Some(3), "nothing new: distinct exit code\n{}", second.stderr);
    assert_eq!(second.summary["status"], "no_new_data");
    assert_eq!(table_version(&order_table, &none), version, "a run without new data commits nothing");
}

fn chrono_now() -> (String, String) {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let days = secs.div_euclid(86_400);
    // Civil-from-days (Howard Hinnant), to stay independent of the job's own date code.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year.to_string(), format!("{month:02}"))
}

#[test]
fn bad_input_lands_in_the_dead_letter_table_and_partitions_are_escaped() {
    let services = Services::get();
    let topic = new_topic(&services, "events", 1);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"[tables.events]
path = "raw/events"
schema = "events.schema.toml"
partitions = [{{ column = "category" }}, {{ column = "ot", source = "field", field = "ts", format = "%Y%m%d%H" }}]

[raw_append]
max_message_bytes = "1 KiB"
sources = [{{ topic = "{topic}", table = "events", metadata_columns = ["offset"] }}]
"#
        ),
    );
    pipeline.write_file(
        "events.schema.toml",
        r#"
[[columns]]
name = "id"
type = "long"
required = true
[[columns]]
name = "category"
type = "string"
[[columns]]
name = "amount"
type = "double"
[[columns]]
name = "ts"
type = "timestamp"
required = true
format = "%y-%m-%d %H:%M:%S"
"#,
    );
    let categories = ["a/b", "..", "x=y", "50%", "with space", "日本語", "plain", "#?:"];
    let mut good: Vec<String> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| serde_json::json!({"id": i, "category": c, "amount": 1.5, "ts": "22-04-04 12:30:00"}).to_string())
        .collect();
    good.push(r#"{"id": 100, "amount": 2, "ts": "22-04-04 13:00:00"}"#.to_string());
    let oversized = format!(r#"{{"id": 1, "ts": "22-04-04 12:00:00", "pad": "{}"}}"#, "x".repeat(2000));
    let bad: Vec<(&str, String)> = vec![
        ("malformed JSON", r#"{"id": 1, "category": "#.to_string()),
        ("one is not a number (column type long)", r#"{"id": "one", "ts": "22-04-04 12:00:00"}"#.to_string()),
        ("required field 'id'", r#"{"category": "a", "ts": "22-04-04 12:00:00"}"#.to_string()),
        ("cannot read", r#"{"id": 2, "ts": "2022-04-04 12:00:00"}"#.to_string()),
        ("required field 'ts'", r#"{"id": 3, "ts": null}"#.to_string()),
        ("max_message_bytes", oversized),
        ("empty message", String::new()),
        ("JSON values", r#"{"id": 4, "ts": "22-04-04 12:00:00"} {"id": 5, "ts": "22-04-04 12:00:00"}"#.to_string()),
    ];
    // Interleave good and bad messages so rejection happens inside decode chunks.
    let mut messages: Vec<(Option<&str>, Vec<u8>)> = Vec::new();
    let mut expected_bad: Vec<(usize, &str)> = Vec::new();
    for i in 0..good.len().max(bad.len()) {
        if let Some(g) = good.get(i) {
            messages.push((None, g.clone().into_bytes()));
        }
        if let Some((reason, b)) = bad.get(i) {
            expected_bad.push((messages.len(), reason));
            messages.push((Some("k"), b.clone().into_bytes()));
        }
    }
    let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|(k, p)| (*k, p.as_slice())).collect();
    produce_raw(&services, &topic, &refs);

    let config = pipeline.config.to_str().unwrap();
    let result = run("raw-append", &["--config", config], &[]);
    assert_eq!(result.code, Some(0), "{}", result.stderr);
    assert_eq!(result.summary["dead_letters"], bad.len());
    assert_eq!(result.summary["rows_out"]["events"], good.len());

    let none = HashMap::new();
    let dlq = pipeline.table("raw/dead_letter");
    let dead =
        query(&[("d", dlq.as_str())], &none, "SELECT \"offset\", error, payload, topic, target_table, key FROM d ORDER BY \"offset\"");
    assert_eq!(dead.len(), bad.len());
    for ((offset, reason), row) in expected_bad.iter().zip(&dead) {
        assert_eq!(row[0], offset.to_string());
        assert!(row[1].contains(reason), "offset {offset}: expected '{reason}' in '{}'", row[1]);
        assert_eq!(row[3], topic);
        assert_eq!(row[4], "events");
        let payload_hex: String = messages[*offset].1.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(row[2], payload_hex, "raw bytes kept");
        assert_eq!(row[5], "6b", "key kept");
    }

    let events = pipeline.table("raw/events");
    let rows = query(&[("e", events.as_str())], &none, "SELECT id, category, ot, ts FROM e ORDER BY id");
    let mut expected: Vec<Vec<String>> = categories
        .iter()
        .enumerate()
        .map(|(i, c)| vec![i.to_string(), c.to_string(), "2022040412".into(), "2022-04-04T12:30:00Z".into()])
        .collect();
    expected.push(vec!["100".into(), "NULL".into(), "2022040413".into(), "2022-04-04T13:00:00Z".into()]);
    assert_eq!(rows, expected, "partition values survive escaping exactly, null included");
    // Every data file lives inside the table folder, in Hive-escaped partition folders.
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&events).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("category=") {
            dirs.push(name);
        }
    }
    assert!(dirs.contains(&"category=a%2Fb".to_string()), "{dirs:?}");
    assert!(dirs.contains(&"category=__HIVE_DEFAULT_PARTITION__".to_string()), "{dirs:?}");
    assert_eq!(dirs.len(), categories.len() + 1, "{dirs:?}");
    let lake_entries: Vec<String> =
        std::fs::read_dir(&pipeline.lake_root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(lake_entries, vec!["raw".to_string()], "nothing escapes the lake");

    let again = run("raw-append", &["--config", config], &[]);
    assert_eq!(again.code, Some(3), "{}", again.stderr);
}

#[test]
fn killed_at_any_step_and_restarted_nothing_is_lost_or_doubled() {
    let services = Services::get();
    let topic = new_topic(&services, "crash-orders", 3);
    const TOTAL: u64 = 24_000;
    const BAD: f64 = 0.02;
    let producer = {
        let (services, topic) = (services.clone(), topic.clone());
        std::thread::spawn(move || produce_orders(&services, &topic, 5, TOTAL, 3_000, BAD))
    };
    // Continuous runs (the SIGKILL ones) commit every 300 ms; trigger-once runs by size.
    let pipeline = orders_pipeline(&services, None, &topic, "max_batch_rows = 700\ninterval = \"300ms\"");
    let config = pipeline.config.to_str().unwrap().to_string();
    let plan = [
        Kill::At("raw_append::after_decode", "2*off->return"),
        Kill::At("raw_append::after_upload", "1*off->return"),
        Kill::After(700),
        Kill::At("raw_append::after_commit", "return"),
        Kill::At("raw_append::after_dead_letter_upload", "return"),
        Kill::After(1_500),
        Kill::At("raw_append::after_dead_letter_commit", "return"),
        Kill::At("raw_append::after_upload", "3*off->return"),
        Kill::After(300),
        Kill::At("raw_append::after_commit", "2*off->return"),
        Kill::After(2_500),
        Kill::At("raw_append::after_decode", "return"),
        Kill::After(1_000),
    ];
    let crashes = run_kill_plan("raw-append", &config, &[], &plan);
    assert!(crashes >= 10, "only {crashes} runs were actually killed");
    let report = producer.join().expect("producer thread");
    drain("raw-append", &config, &[]);

    let none = HashMap::new();
    let main = pipeline.table("raw/order");
    let dlq = pipeline.table("raw/dead_letter");
    let tables = [("o", main.as_str()), ("d", dlq.as_str())];
    let all = query(
        &tables,
        &none,
        "SELECT p, COUNT(*), COUNT(DISTINCT off), MIN(off), MAX(off) FROM (SELECT _kafka_partition AS p, _kafka_offset AS off FROM o UNION ALL SELECT \"partition\" AS p, \"offset\" AS off FROM d) GROUP BY p ORDER BY p",
    );
    let total = assert_each_offset_once(&all);
    assert_eq!(total, report.messages, "every produced message is in exactly one table");
    let dead = query(&tables, &none, "SELECT COUNT(*) FROM d");
    assert_eq!(count(&dead), report.malformed);
    let rows = query(&tables, &none, "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), timestamp FROM o");
    assert_eq!(multiset(rows), expected_orders(5, TOTAL, BAD), "field by field");
}

#[test]
fn on_moto_s3_end_to_end_and_two_writers_lose_no_commit() {
    let services = Services::get();
    let bucket = unique("lake").to_lowercase();
    services.create_bucket(&bucket);
    let root = format!("s3://{bucket}/lake");
    let env = services.s3_env();
    let storage = services.s3_options();

    let topic = new_topic(&services, "s3-orders", 2);
    produce_orders(&services, &topic, 21, 1500, 0, 0.0);
    let pipeline = orders_pipeline(&services, Some(&root), &topic, "max_batch_rows = 500");
    let config = pipeline.config.to_str().unwrap();
    run_succeeds("raw-append", config, &env);
    let table = format!("{root}/raw/order");
    let rows = query(
        &[("o", table.as_str())],
        &storage,
        "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), timestamp FROM o",
    );
    assert_eq!(multiset(rows), expected_orders(21, 1500, 0.0));
    let again = run("raw-append", &["--config", config], &env);
    assert_eq!(again.code, Some(3), "{}", again.stderr);

    // Two processes append to one table at once, each from its own topic (disjoint partitions),
    // in many small commits: S3 conditional put must serialise them without losing any.
    let (a, b) = (unique("s3-a"), unique("s3-b"));
    create_topics(&services, &[&a, &b], 2);
    produce_orders(&services, &a, 31, 2000, 0, 0.0);
    produce_orders(&services, &b, 32, 2000, 0, 0.0);
    let shared_root = format!("s3://{bucket}/shared");
    let pa = orders_pipeline(&services, Some(&shared_root), &a, "max_batch_rows = 100");
    let pb = orders_pipeline(&services, Some(&shared_root), &b, "max_batch_rows = 100");
    let ca = spawn("raw-append", &["--config", pa.config.to_str().unwrap()], &env);
    let cb = spawn("raw-append", &["--config", pb.config.to_str().unwrap()], &env);
    for child in [ca, cb] {
        let out = child.wait_with_output().expect("finished");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let shared = format!("{shared_root}/raw/order");
    let per_topic = query(
        &[("o", shared.as_str())],
        &storage,
        "SELECT _kafka_topic, COUNT(*), COUNT(DISTINCT (_kafka_partition * 1000000 + _kafka_offset)) FROM o GROUP BY 1 ORDER BY 1",
    );
    let mut expected = vec![vec![a.clone(), "2000".into(), "2000".into()], vec![b.clone(), "2000".into(), "2000".into()]];
    expected.sort();
    assert_eq!(per_topic, expected);
}

#[test]
fn continuous_mode_commits_by_interval_and_stops_cleanly_on_sigterm() {
    let services = Services::get();
    let topic = new_topic(&services, "cont-orders", 2);
    let pipeline = orders_pipeline(&services, None, &topic, "interval = \"1s\"\nshutdown_timeout = \"20s\"");
    let config = pipeline.config.to_str().unwrap().to_string();
    let mut child = spawn("raw-append", &["--config", &config, "--trigger", "continuous"], &[]);
    produce_orders(&services, &topic, 41, 800, 0, 0.0);
    let table = pipeline.table("raw/order");
    let none = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let ready = std::path::Path::new(&table).join("_delta_log").exists()
            && count(&query(&[("o", table.as_str())], &none, "SELECT COUNT(*) FROM o")) == 800;
        if ready {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "continuous run exited early");
        assert!(Instant::now() < deadline, "continuous run did not commit the data");
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("exited");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "stopped");
    assert_eq!(summary["rows_out"]["raw_order"], 800);
    let once = run("raw-append", &["--config", &config], &[]);
    assert_eq!(once.code, Some(3), "{}", once.stderr);
}

#[test]
fn invalid_configuration_names_the_key_and_exits_78() {
    let services = Services::get();
    let pipeline = Pipeline::local(
        &services,
        r#"[tables.raw_order]
path = "raw/order"
schema = "order.schema.toml"
partitions = [{ column = "year", source = "ingestion_time", format = "%Q" }]
[raw_append]
sources = [{ topic = "t", table = "raw_order" }]
"#,
    );
    let r = run("raw-append", &["--config", pipeline.config.to_str().unwrap()], &[]);
    assert_eq!(r.code, Some(78));
    let error = r.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("tables.raw_order.partitions[0].format"), "{error}");
    let usage = run("raw-append", &["--trigger", "sometimes"], &[]);
    assert_eq!(usage.code, Some(2));
}

#[test]
fn two_continuous_tasks_in_one_consumer_group_share_partitions_exactly_once() {
    let services = Services::get();
    let topic = new_topic(&services, "group-orders", 4);
    // 30 s of production: long enough for tansu's ~20 s group join to hand the second task
    // partitions while data still flows.
    const TOTAL: u64 = 9_000;
    let producer = {
        let (services, topic) = (services.clone(), topic.clone());
        std::thread::spawn(move || produce_orders(&services, &topic, 51, TOTAL, 300, 0.0))
    };
    let group = unique("group");
    let pipeline = orders_pipeline(&services, None, &topic, &format!("interval = \"500ms\"\ngroup_id = \"{group}\""));
    let config = pipeline.config.to_str().unwrap().to_string();
    // The second task joins while the first holds every partition: the first must commit
    // what it read before handing partitions over (commit on revoke).
    let first = spawn("raw-append", &["--config", &config, "--trigger", "continuous"], &[]);
    std::thread::sleep(Duration::from_secs(3));
    let second = spawn("raw-append", &["--config", &config, "--trigger", "continuous"], &[]);
    let report = producer.join().expect("producer");
    let table = pipeline.table("raw/order");
    let none = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let landed = std::path::Path::new(&table).join("_delta_log").exists()
            && count(&query(&[("o", table.as_str())], &none, "SELECT COUNT(*) FROM o")) >= report.messages;
        if landed || Instant::now() > deadline {
            break;
        }
    }
    for child in [&first, &second] {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    for (name, child) in [("first", first), ("second", second)] {
        let out = child.wait_with_output().expect("exited");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("{}")).unwrap();
        assert!(summary["rows_in"].as_u64().unwrap_or(0) > 0, "the {name} task ingested nothing: partitions were not shared\n{summary}");
    }
    let all = query(
        &[("o", table.as_str())],
        &none,
        "SELECT _kafka_partition, COUNT(*), COUNT(DISTINCT _kafka_offset), MIN(_kafka_offset), MAX(_kafka_offset) FROM o GROUP BY 1",
    );
    let total = assert_each_offset_once(&all);
    assert_eq!(total, report.messages);
}

#[test]
fn rescue_keeps_fields_the_schema_does_not_read_exactly_as_sent() {
    let services = Services::get();
    let topic = new_topic(&services, "rescue", 1);
    let messages: [&[u8]; 3] = [
        br#"{"order_id": 1, "order_owner": "alice", "order_value": 5, "timestamp": "2022-04-04 11:30:00"}"#,
        br#"{"order_id": 2, "order_owner": "bob", "order_value": 6, "timestamp": "2022-04-04 11:31:00", "coupon": {"code": "X1", "pct": 12345678901234567890.25}, "tags": ["a", "\u00e9"]}"#,
        br#"{"order_id": 3, "channel": null, "order_owner": "carol", "order_value": 7, "timestamp": "2022-04-04 11:32:00"}"#,
    ];
    let with_keys: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, *m)).collect();
    produce_raw(&services, &topic, &with_keys);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            "{}\n[raw_append]\nsources = [{{ topic = \"{topic}\", table = \"raw_order\", unknown_fields = \"rescue\" }}]\n",
            include_str!("fixtures/raw_order_daily.tables.toml")
        ),
    );
    run_succeeds("raw-append", pipeline.config.to_str().unwrap(), &[]);
    let table = pipeline.table("raw/order");
    let rows = query(&[("o", table.as_str())], &HashMap::new(), "SELECT CAST(order_id AS VARCHAR) AS id, _rescued_data FROM o ORDER BY id");
    assert_eq!(
        rows,
        [
            vec!["1".to_string(), "NULL".to_string()],
            vec!["2".to_string(), r#"{"coupon":{"code": "X1", "pct": 12345678901234567890.25},"tags":["a", "\u00e9"]}"#.to_string()],
            vec!["3".to_string(), r#"{"channel":null}"#.to_string()],
        ],
        "unknown fields as sent, numbers and escapes untouched; none is NULL"
    );
}

/// An AWS DMS record of the `shop.orders` table (`data` left out when None).
fn dms_record(record_type: &str, operation: &str, second: u32, data: Option<String>) -> String {
    let data = data.map_or(String::new(), |d| format!(r#""data": {d}, "#));
    format!(
        r#"{{{data}"metadata": {{"timestamp": "2026-11-30T10:00:{second:02}.000001Z", "record-type": "{record_type}", "operation": "{operation}", "partition-key-type": "schema-table", "schema-name": "shop", "table-name": "orders"}}}}"#
    )
}

fn dms_order(id: i64, owner: &str, value: i64) -> Option<String> {
    Some(format!(r#"{{"order_id": {id}, "order_owner": "{owner}", "order_value": {value}, "timestamp": "2022-04-04 12:00:00"}}"#))
}

#[test]
fn dms_records_skip_control_records_and_merge_to_the_source_tables_state() {
    let services = Services::get();
    let topic = new_topic(&services, "dms", 1);
    let messages = [
        dms_record("control", "create-table", 0, None),
        dms_record("data", "load", 1, dms_order(1, "alice", 10)),
        dms_record("data", "load", 2, dms_order(2, "bob", 2)),
        dms_record("data", "load", 3, dms_order(3, "carol", 3)),
        dms_record("data", "insert", 5, dms_order(4, "dave", 40)),
        dms_record("data", "update", 6, dms_order(2, "bob", 20)),
        dms_record("data", "delete", 7, dms_order(3, "carol", 3)),
        dms_record("data", "insert", 8, None),
        dms_record("control", "add-column", 9, None),
        dms_record("data", "insert", 9, Some(r#"{"order_owner": "eve"}"#.to_string())),
    ];
    let with_keys: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_bytes())).collect();
    produce_raw(&services, &topic, &with_keys);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"{}
[tables.processed]
path = "processed"
schema = "processed.schema.toml"

[raw_append]
sources = [{{ topic = "{topic}", table = "raw_order", format = "dms" }}]

[merge_upsert]
source = "raw_order"
target = "processed"
key = ["order_id"]
sequence = "_dms_timestamp"
operation = "_dms_operation"
delete_values = ["delete"]
ignore_columns = ["day"]
"#,
            include_str!("fixtures/raw_order_daily.tables.toml")
        ),
    );
    let processed = include_str!("fixtures/orders.schema.toml").to_string()
        + "\n[[columns]]\nname = \"_dms_timestamp\"\ntype = \"timestamp\"\nrequired = true\n";
    pipeline.write_file("processed.schema.toml", &processed);
    let config = pipeline.config.to_str().unwrap();
    let run_job = |job: &str| {
        let r = run(job, &["--config", config], &[]);
        assert_eq!(r.code, Some(0), "{job}: {}", r.stderr);
        r
    };
    let r = run_job("raw-append");
    let details = &r.summary["details"];
    assert_eq!(
        (details["dms_control_records"].as_u64(), details["dms_records_without_data"].as_u64()),
        (Some(2), Some(1)),
        "{}",
        r.summary
    );
    assert_eq!(r.summary["dead_letters"], 1, "the record without order_id: {}", r.summary);
    let raw = query(
        &[("o", pipeline.table("raw/order").as_str())],
        &HashMap::new(),
        "SELECT CAST(order_id AS VARCHAR) AS id, order_owner, CAST(order_value AS VARCHAR) AS v, _dms_operation, \
         CAST(_dms_timestamp AS VARCHAR) AS t FROM o ORDER BY t",
    );
    let row = |id: &str, owner: &str, v: &str, op: &str, s: u32| {
        [id, owner, v, op].map(str::to_string).into_iter().chain([format!("2026-11-30T10:00:{s:02}.000001Z")]).collect::<Vec<_>>()
    };
    assert_eq!(
        raw,
        [
            row("1", "alice", "10", "load", 1),
            row("2", "bob", "2", "load", 2),
            row("3", "carol", "3", "load", 3),
            row("4", "dave", "40", "insert", 5),
            row("2", "bob", "20", "update", 6),
            row("3", "carol", "3", "delete", 7),
        ],
        "load and CDC rows in one table, read under data, operation and time from metadata"
    );
    let dead = query(&[("d", pipeline.table("raw/dead_letter").as_str())], &HashMap::new(), "SELECT error FROM d");
    assert!(dead[0][0].contains("data.order_id"), "{dead:?}");
    run_job("merge-upsert");
    let target = query(
        &[("p", pipeline.table("processed").as_str())],
        &HashMap::new(),
        "SELECT CAST(order_id AS VARCHAR) AS id, order_owner, CAST(order_value AS VARCHAR) FROM p ORDER BY id",
    );
    assert_eq!(
        target,
        [["1", "alice", "10"], ["2", "bob", "20"], ["4", "dave", "40"]].map(|r| r.map(str::to_string).to_vec()),
        "the source table's final state: the update applied, the delete removed the row"
    );
    let again = run("raw-append", &["--config", config], &[]);
    assert_eq!(again.code, Some(3), "nothing new: {}", again.stderr);
}

#[test]
fn dms_records_killed_at_any_step_land_once_and_skipped_records_never() {
    let services = Services::get();
    let topic = new_topic(&services, "dms-crash", 3);
    // Every 25th record a control record, every 40th a data record without data.
    // (order id of a data record, the record)
    let records: Vec<(Option<u32>, String)> = (0..4_000u32)
        .map(|i| match i {
            _ if i % 25 == 0 => (None, dms_record("control", "add-column", i % 60, None)),
            _ if i % 40 == 0 => (None, dms_record("data", "insert", i % 60, None)),
            _ => (Some(i), dms_record("data", "insert", i % 60, dms_order(i64::from(i), "o", 1))),
        })
        .collect();
    let expected: Vec<String> = records.iter().filter_map(|(id, _)| id.map(|i| i.to_string())).collect();
    let messages: Vec<(Option<&str>, &[u8])> = records.iter().map(|(_, m)| (None, m.as_bytes())).collect();
    produce_raw(&services, &topic, &messages);
    let pipeline = Pipeline::local(&services, &format!(
            "{ORDERS_TABLE}\n[raw_append]\nmax_batch_rows = 300\ninterval = \"200ms\"\nsources = [{{ topic = \"{topic}\", table = \"raw_order\", format = \"dms\" }}]\n"
        ),
    );
    let config = pipeline.config.to_str().unwrap().to_string();
    let plan = [
        Kill::At("raw_append::after_decode", "1*off->return"),
        Kill::At("raw_append::after_upload", "2*off->return"),
        Kill::After(400),
        Kill::At("raw_append::after_commit", "1*off->return"),
        Kill::At("raw_append::after_upload", "return"),
        Kill::After(250),
    ];
    kill_then_drain("raw-append", &config, &[], &plan, 4);
    let rows = query(
        &[("o", pipeline.table("raw/order").as_str())],
        &HashMap::new(),
        "SELECT CAST(order_id AS VARCHAR) AS id, COUNT(*) FROM o GROUP BY order_id",
    );
    let mut got: Vec<String> = rows.iter().map(|r| r[0].clone()).collect();
    got.sort_by_key(|id| id.parse::<i64>().unwrap_or(-1));
    assert!(rows.iter().all(|r| r[1] == "1"), "every data record once: {:?}", rows.iter().find(|r| r[1] != "1"));
    let (missing, extra): (Vec<&String>, Vec<&String>) =
        (expected.iter().filter(|id| !got.contains(id)).collect(), got.iter().filter(|id| !expected.contains(id)).collect());
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}, unexpected {extra:?}");
    assert_eq!(got.len(), expected.len());
    let dead = query(&[("d", pipeline.table("raw/dead_letter").as_str())], &HashMap::new(), "SELECT COUNT(*) FROM d");
    assert_eq!(dead[0][0], "0", "records skipped by design are not dead letters");
}

#[test]
fn a_run_resumed_inside_the_brokers_last_record_batch_reads_to_the_partitions_end() {
    // tansu lists a partition's high watermark as the base offset of its last record batch + 1;
    // progress inside one large batch is past that listing while messages still follow.
    let services = Services::get();
    let topic = new_topic(&services, "big-batch", 1);
    let mut generator = OrderGenerator::reference(11);
    let messages: Vec<Vec<u8>> = (0..2_000).map(|_| generator.next_message().1.into_bytes()).collect();
    let with_keys: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_slice())).collect();
    produce_raw(&services, &topic, &with_keys);
    let pipeline = orders_pipeline(&services, None, &topic, "max_batch_rows = 300");
    let config = pipeline.config.to_str().unwrap();
    let crashed = run("raw-append", &["--config", config], &[("FAILPOINTS".into(), "raw_append::after_commit=2*off->return".into())]);
    assert_eq!(crashed.code, None, "killed after its third commit: {}", crashed.stderr);
    let r = run_succeeds("raw-append", config, &[]);
    assert_eq!(r.summary["rows_in"], 2_000 - 900, "one run reads the rest: {}", r.summary);
    let again = run("raw-append", &["--config", config], &[]);
    assert_eq!(again.code, Some(3), "{}", again.stderr);
    let rows =
        query(&[("o", pipeline.table("raw/order").as_str())], &HashMap::new(), "SELECT COUNT(DISTINCT _kafka_offset), COUNT(*) FROM o");
    assert_eq!(rows, [["2000", "2000"]].map(|r| r.map(str::to_string).to_vec()));
}
