//! merge-upsert end to end: a change stream produced to a real tansu broker, landed by
//! raw-append, merged into `processed`, and compared with "the latest change per key, deletes
//! applied" computed in one shot by DataFusion SQL over everything the source ever held.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use e2e_tests::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CHANGE_SCHEMA: &str = include_str!("fixtures/changes.schema.toml");

const TARGET_SCHEMA: &str = include_str!("fixtures/orders.schema.toml");

/// A pipeline: topic → raw-append → `raw/changes` → merge-upsert → `processed`, partitioned by
/// the hour of `timestamp` (so a newer change of a key may move it to another partition).
fn pipeline(services: &Services, topic: &str, merge: &str) -> Pipeline {
    let p = Pipeline::new(
        services,
        None,
        &format!(
            r#"
[tables.changes]
path = "raw/changes"
schema = "change.schema.toml"

[tables.target]
path = "processed"
schema = "target.schema.toml"
partitions = [{{ column = "hour", source = "field", field = "timestamp", format = "%Y%m%d%H" }}]

[raw_append]
sources = [{{ topic = "{topic}", table = "changes" }}]

[merge_upsert]
source = "changes"
target = "target"
key = ["order_id"]
sequence = "timestamp"
operation = "op"
{merge}
"#
        ),
    );
    p.write_file("change.schema.toml", CHANGE_SCHEMA);
    p.write_file("target.schema.toml", TARGET_SCHEMA);
    p
}

const TARGET: &str = "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR) FROM p";
const ORACLE: &str = "SELECT CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR) FROM ( \
       SELECT *, ROW_NUMBER() OVER (PARTITION BY order_id ORDER BY timestamp DESC) AS rn FROM s \
       WHERE order_id IS NOT NULL AND timestamp IS NOT NULL) t \
     WHERE rn = 1 AND (op IS NULL OR op <> 'delete')";

fn target(p: &Pipeline) -> BTreeMap<Vec<String>, usize> {
    multiset(query(&[("p", p.table("processed").as_str())], &HashMap::new(), TARGET))
}

fn oracle(p: &Pipeline) -> BTreeMap<Vec<String>, usize> {
    multiset(query(&[("s", p.table("raw/changes").as_str())], &HashMap::new(), ORACLE))
}

fn run_ok(binary: &str, config: &str) -> RunResult {
    let r = run(binary, &["--config", config], &[]);
    assert!(r.code == Some(0) || r.code == Some(3), "{binary}: {:?}\n{}", r.code, r.stderr);
    r
}

/// A change stream over `keys` keys whose sequences (timestamps) are all distinct but arrive
/// out of order, spread over about seven hours; 12% deletes, 1% null keys.
struct Changes {
    rng: SmallRng,
    next: u64,
    keys: i64,
    null_keys: u64,
}

impl Changes {
    fn new(seed: u64, keys: i64) -> Self {
        Self { rng: SmallRng::seed_from_u64(seed), next: 0, keys, null_keys: 0 }
    }

    fn message(&mut self) -> String {
        // A permutation of 0..10007: distinct sequences in shuffled order.
        let slot = (self.next * 7919) % 10_007;
        self.next += 1;
        let ts = chrono::DateTime::from_timestamp(1_649_066_400 + (slot as i64) * 5 / 2, (slot % 2 * 500_000_000) as u32).unwrap();
        let key = self.rng.gen_range(1..=self.keys);
        let key = if self.rng.gen_bool(0.01) {
            self.null_keys += 1;
            "null".to_string()
        } else {
            key.to_string()
        };
        let op = match self.rng.gen_range(0..100) {
            0..12 => "delete",
            12..40 => "insert",
            _ => "update",
        };
        format!(
            r#"{{"order_id": {key}, "order_owner": "owner-{}", "order_value": {}, "timestamp": "{}", "op": "{op}"}}"#,
            self.rng.gen_range(0..7),
            self.rng.gen_range(1..1000),
            ts.format("%Y-%m-%d %H:%M:%S%.f")
        )
    }

    fn produce(&mut self, services: &Services, topic: &str, count: usize) {
        let messages: Vec<String> = (0..count).map(|_| self.message()).collect();
        let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_bytes())).collect();
        produce_raw(services, topic, &refs);
    }
}

#[test]
fn processed_equals_the_latest_change_per_key_whatever_the_batch_sizes_and_runs() {
    let services = Services::get();
    for (case, max_files) in [("one-file", 1usize), ("three-files", 3), ("all", 100_000)] {
        let topic = unique(&format!("mu-{case}"));
        create_topics(&services, &[&topic], 2);
        let p = pipeline(&services, &topic, &format!("max_files_per_batch = {max_files}"));
        let config = p.config.to_str().unwrap();
        let mut changes = Changes::new(3, 400);
        let mut summaries = Vec::new();
        for round in 0..4 {
            // Two raw-append commits per round, so small batch limits split a round.
            for _ in 0..2 {
                changes.produce(&services, &topic, 600);
                run_ok("raw-append", config);
            }
            if round == 2 {
                // A compaction of the source (dataChange=false) must change nothing downstream.
                let c = run("maintenance", &["--config", config, "compact", "changes"], &[]);
                assert_eq!(c.code, Some(0), "{}", c.stderr);
            }
            let r = run_ok("merge-upsert", config);
            assert_eq!(target(&p), oracle(&p), "{case}, round {round}: processed equals the latest change per key");
            summaries.push(r.summary);
        }
        let expected = oracle(&p);
        assert!(expected.len() > 250, "{case}: most keys are live ({})", expected.len());
        let details = |k: &str| summaries.iter().map(|s| s["details"][k].as_u64().unwrap_or(0)).sum::<u64>();
        assert!(
            details("rows_updated") > 100 && details("rows_deleted") > 20 && details("rows_stale") > 100,
            "{case}: every kind of change happened: {summaries:?}"
        );
        let dead: u64 = summaries.iter().map(|s| s["dead_letters"].as_u64().unwrap()).sum();
        assert_eq!(dead, changes.null_keys, "{case}: every null key is a dead letter");
        let letters = query(&[("d", p.table("processed_dead_letter").as_str())], &HashMap::new(), "SELECT COUNT(*), MIN(error) FROM d");
        assert_eq!(letters[0][0], changes.null_keys.to_string(), "{case}");
        assert_eq!(letters[0][1], "null key column 'order_id': the row cannot be merged");
        let misplaced = query(
            &[("p", p.table("processed").as_str())],
            &HashMap::new(),
            "SELECT COUNT(*) FROM p WHERE to_char(timestamp, '%Y%m%d%H') <> hour",
        );
        assert_eq!(misplaced[0][0], "0", "{case}: every row sits in the partition of its latest timestamp");
        let again = run("merge-upsert", &["--config", config], &[]);
        assert_eq!(again.code, Some(3), "{case}: nothing new: {}", again.stderr);
    }
}

#[test]
fn late_older_changes_never_win_and_deletes_leave_tombstones() {
    let services = Services::get();
    let topic = new_topic(&services, "mu-order", 1);
    let p = pipeline(&services, &topic, "");
    let config = p.config.to_str().unwrap();
    // Rounds of changes, each `key sequence value op`.
    let rounds = [
        "1 10 1 insert, 2 10 1 insert, 3 20 0 delete, 4 10 1 insert, 5 10 1 insert, 5 10 2 update, 6 1 1 insert, 6 3 3 update, \
         6 2 2 update, 7 10 1 insert, null 10 1 insert",
        "1 5 2 update, 2 20 0 delete, 3 10 1 insert, 4 20 0 delete, 5 10 3 update, 7 5 0 delete",
        "2 30 3 insert, 4 15 9 update",
    ]
    .map(|round| round.split(", ").map(change_message).collect::<Vec<String>>());
    for (i, messages) in rounds.iter().enumerate() {
        let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_bytes())).collect();
        produce_raw(&services, &topic, &refs);
        run_ok("raw-append", config);
        let r = run_ok("merge-upsert", config);
        assert_eq!(r.code, Some(0), "round {i}: {}", r.stderr);
    }
    let rows = query(
        &[("p", p.table("processed").as_str())],
        &HashMap::new(),
        "SELECT order_id, order_value, CAST(timestamp AS VARCHAR) FROM p ORDER BY order_id",
    );
    let got: Vec<(String, String)> = rows.into_iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let expected: Vec<(String, String)> = [
        ("1", "1"), // the older update (5 < 10) arrived late and lost
        ("2", "3"), // deleted at 20, re-inserted at 30
        // 3: deleted at 20 before its insert at 10 arrived: the tombstone keeps it deleted
        // 4: deleted at 20; the late update at 15 does not resurrect it
        ("5", "3"), // equal sequences: the later change wins, within a batch and across batches
        ("6", "3"), // the greatest sequence of the batch, not the last arrival
        ("7", "1"), // a delete older than the row does nothing
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, expected);
    let tombstones = query(
        &[("t", p.table("processed_tombstones").as_str())],
        &HashMap::new(),
        "SELECT order_id, MAX(CAST(_sequence AS VARCHAR)) FROM t GROUP BY order_id ORDER BY order_id",
    );
    assert_eq!(tombstones.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(), ["2", "3", "4", "7"], "every delete left a tombstone");
    let letters = query(&[("d", p.table("processed_dead_letter").as_str())], &HashMap::new(), "SELECT source_table, error, row FROM d");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0][0], "changes");
    assert!(letters[0][1].contains("null key column 'order_id'"), "{:?}", letters[0]);
    assert!(letters[0][2].contains("\"order_owner\":\"o\""), "the row is kept: {:?}", letters[0]);
}

#[test]
fn killed_at_any_step_and_restarted_the_target_equals_the_oracle() {
    let services = Services::get();
    let topic = new_topic(&services, "mu-crash", 2);
    let p = pipeline(&services, &topic, "max_files_per_batch = 1");
    let config = p.config.to_str().unwrap();
    let mut changes = Changes::new(5, 300);
    let points = [
        ("merge_upsert::after_plan", "1*off->return"),
        ("merge_upsert::after_dead_letters", "return"),
        ("merge_upsert::after_tombstones", "return"),
        ("merge_upsert::after_target_commit", "return"),
        ("merge_upsert::after_done", "1*off->return"),
        ("merge_upsert::after_tombstones", "2*off->return"),
        ("merge_upsert::after_target_commit", "2*off->return"),
    ];
    let mut kills = 0;
    for (point, action) in points {
        for _ in 0..3 {
            changes.produce(&services, &topic, 300);
            run_ok("raw-append", config);
        }
        let r = run("merge-upsert", &["--config", config], &[("FAILPOINTS".into(), format!("{point}={action}"))]);
        if r.code.is_none() || r.code == Some(134) {
            kills += 1;
        }
        run_ok("merge-upsert", config);
        assert_eq!(target(&p), oracle(&p), "after a crash at {point} ({action}) and a restart");
    }
    assert!(kills >= 6, "the crash points fired ({kills} of {})", points.len());

    // SIGKILL at random instants of continuous runs while changes keep arriving.
    let mut rng = SmallRng::seed_from_u64(9);
    for _ in 0..5 {
        let mut job = spawn("merge-upsert", &["--config", config, "--trigger", "continuous"], &[]);
        for _ in 0..2 {
            changes.produce(&services, &topic, 300);
            run_ok("raw-append", config);
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..1500)));
        job.kill().expect("killed");
        job.wait().expect("reaped");
    }
    run_ok("merge-upsert", config);
    assert_eq!(target(&p), oracle(&p), "nothing lost, nothing twice after SIGKILLs");
    let dead = query(&[("d", p.table("processed_dead_letter").as_str())], &HashMap::new(), "SELECT COUNT(*) FROM d");
    assert_eq!(dead[0][0], changes.null_keys.to_string(), "each null key dead-lettered once");
}

/// Appends rows to the source table directly (delta-rs), with an extra column when `coupon`.
fn append_source(location: &str, first_key: i64, coupon: bool) {
    append_source_at(location, first_key, coupon, 0);
}

/// [`append_source`] with the change times `hour` hours later (another `hour` partition).
fn append_source_at(location: &str, first_key: i64, coupon: bool, hour: i64) {
    block_on(async {
        std::fs::create_dir_all(location).unwrap();
        let url = url::Url::from_directory_path(std::path::Path::new(location).canonicalize().unwrap()).unwrap();
        let table = deltalake::DeltaTable::try_from_url(url).await.unwrap();
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let mut fields = vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("order_owner", DataType::Utf8, true),
            Field::new("order_value", DataType::Int64, true),
            Field::new("timestamp", ts, true),
            Field::new("op", DataType::Utf8, true),
        ];
        let keys: Vec<i64> = (first_key..first_key + 10).collect();
        let mut columns: Vec<Arc<dyn arrow::array::Array>> = vec![
            Arc::new(Int64Array::from(keys.clone())),
            Arc::new(StringArray::from(vec!["o"; 10])),
            Arc::new(Int64Array::from(keys.clone())),
            Arc::new(
                TimestampMicrosecondArray::from(keys.iter().map(|k| 1_649_073_600_000_000 + hour * 3_600_000_000 + k).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec!["insert"; 10])),
        ];
        if coupon {
            fields.push(Field::new("coupon", DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(vec!["SAVE10"; 10])));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        table
            .write(vec![batch])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .await
            .unwrap();
    });
}

#[test]
fn a_new_source_column_is_added_only_when_configured() {
    let (p, source) = source_pipeline();
    let config = p.config.to_str().unwrap();
    append_source(&source, 1, false);
    run_ok("merge-upsert", config);
    append_source(&source, 11, true);
    let r = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("[\\\"coupon\\\"]") && r.stderr.contains("schema_evolution = \\\"add_columns\\\""),
        "the error names the column and the fix: {}",
        r.stderr
    );

    let evolving =
        std::fs::read_to_string(&p.config).unwrap().replace("operation = \"op\"", "operation = \"op\"\nschema_evolution = \"add_columns\"");
    p.write_file("evolving.toml", &evolving);
    let evolving = p.dir.path().join("evolving.toml");
    let r = run_ok("merge-upsert", evolving.to_str().unwrap());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let rows = query(
        &[("p", p.table("processed").as_str())],
        &HashMap::new(),
        "SELECT COALESCE(coupon, 'none'), COUNT(*) FROM p GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(rows, vec![vec!["SAVE10".to_string(), "10".to_string()], vec!["none".to_string(), "10".to_string()]]);
}

#[test]
fn aws_dms_change_records_are_merged_through_configuration() {
    let services = Services::get();
    let topic = new_topic(&services, "mu-dms", 1);
    let p = Pipeline::local(
        &services,
        &format!(
            r#"
[tables.dms_orders]
path = "raw/dms_orders"
schema = "dms.schema.toml"

[tables.orders]
path = "orders"
schema = "orders.schema.toml"

[raw_append]
sources = [{{ topic = "{topic}", table = "dms_orders", metadata_columns = ["offset"] }}]

[merge_upsert]
source = "dms_orders"
target = "orders"
key = ["order_id"]
sequence = "changed_at"
operation = "op"
delete_values = ["delete"]
ignore_columns = ["_kafka_offset"]   # raw-append's coordinates stay in the raw table
"#
        ),
    );
    // The fields to take from `data`, the operation and sequence from `metadata`.
    p.write_file(
        "dms.schema.toml",
        r#"
columns = [
  { name = "order_id", json_name = "data.order_id", type = "long" },
  { name = "order_value", json_name = "data.order_value", type = "long" },
  { name = "op", json_name = "metadata.operation", type = "string" },
  { name = "changed_at", json_name = "metadata.timestamp", type = "timestamp", required = true },
  { name = "source_table", json_name = "metadata.table-name", type = "string" },
]
"#,
    );
    p.write_file(
        "orders.schema.toml",
        r#"
columns = [
  { name = "order_id", type = "long" },
  { name = "order_value", type = "long" },
  { name = "changed_at", type = "timestamp" },
  { name = "source_table", type = "string" },
]
"#,
    );
    let config = p.config.to_str().unwrap();
    let dms = |id: u32, value: Option<u32>, op: &str, second: u32| {
        let data = match value {
            Some(v) => format!(r#"{{"order_id": {id}, "order_value": {v}}}"#),
            None => format!(r#"{{"order_id": {id}}}"#),
        };
        format!(
            r#"{{"data": {data}, "metadata": {{"timestamp": "2022-04-04T12:00:{second:02}.000000Z", "record-type": "data", "operation": "{op}", "partition-key-type": "schema-table", "schema-name": "shop", "table-name": "orders"}}}}"#
        )
    };
    let rounds = [
        vec![dms(1, Some(10), "load", 0), dms(2, Some(20), "load", 0), dms(3, Some(30), "insert", 5)],
        vec![dms(1, Some(11), "update", 6), dms(2, None, "delete", 7), dms(3, Some(29), "update", 4), dms(4, Some(40), "insert", 8)],
    ];
    for messages in &rounds {
        let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_bytes())).collect();
        produce_raw(&services, &topic, &refs);
        run_ok("raw-append", config);
        run_ok("merge-upsert", config);
    }
    let rows =
        query(&[("o", p.table("orders").as_str())], &HashMap::new(), "SELECT order_id, order_value, source_table FROM o ORDER BY order_id");
    let expected: Vec<Vec<String>> =
        [["1", "11"], ["3", "30"], ["4", "40"]].iter().map(|r| vec![r[0].to_string(), r[1].to_string(), "orders".to_string()]).collect();
    assert_eq!(rows, expected, "update applied, delete applied, the older update of 3 ignored");
}

#[test]
fn works_on_s3_and_a_merge_that_empties_a_partition_removes_its_manifest() {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
    use futures::TryStreamExt;
    let services = Services::get();
    let bucket = unique("merge").to_lowercase();
    services.create_bucket(&bucket);
    let root = format!("s3://{bucket}/lake");
    let (env, storage) = (services.s3_env(), services.s3_options());
    let topic = new_topic(&services, "mu-s3", 1);
    let p = pipeline(&services, &topic, "");
    // The same pipeline on S3, with symlink manifests kept up to date by the job.
    let body = std::fs::read_to_string(&p.config).unwrap();
    let lake_line = body.lines().find(|l| l.starts_with("root = ")).unwrap().to_string();
    let body = body.replace(&lake_line, &format!("root = \"{root}\"")).replace(
        "partitions = [{ column = \"hour\"",
        "properties = { \"delta.compatibility.symlinkFormatManifest.enabled\" = \"true\" }\npartitions = [{ column = \"hour\"",
    );
    p.write_file("s3.toml", &body);
    let config = p.dir.path().join("s3.toml");
    let config = config.to_str().unwrap();
    let change = |key: u32, time: &str, op: &str| {
        format!(r#"{{"order_id": {key}, "order_owner": "o", "order_value": {key}, "timestamp": "2022-04-04 {time}", "op": "{op}"}}"#)
    };
    let rounds = [
        vec![
            change(1, "12:00:01", "insert"),
            change(2, "12:00:02", "insert"),
            change(3, "13:00:03", "insert"),
            change(4, "13:00:04", "insert"),
        ],
        vec![change(3, "13:10:00", "delete"), change(4, "13:10:00", "delete"), change(1, "14:00:00", "update")],
    ];
    for messages in &rounds {
        let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_bytes())).collect();
        produce_raw(&services, &topic, &refs);
        run_succeeds("raw-append", config, &env);
        run_succeeds("merge-upsert", config, &env);
    }
    let target = format!("{root}/processed");
    let rows = query(&[("p", target.as_str())], &storage, "SELECT order_id, hour FROM p ORDER BY order_id");
    assert_eq!(rows, vec![vec!["1".to_string(), "2022040414".to_string()], vec!["2".to_string(), "2022040412".to_string()]]);
    block_on(async {
        let url = url::Url::parse(&target).unwrap();
        let t = deltalake::DeltaTableBuilder::from_url(url).unwrap().with_storage_options(storage.clone()).load().await.unwrap();
        let store = t.object_store();
        let prefix = deltalake::Path::parse("_symlink_format_manifest").unwrap();
        let keys: Vec<String> = store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        let mut keys = keys;
        keys.sort();
        // Hour 13 lost both rows to deletes: its manifest is gone. Row 1 moved from hour 12 to 14.
        assert_eq!(keys, ["_symlink_format_manifest/hour=2022040412/manifest", "_symlink_format_manifest/hour=2022040414/manifest"]);
        for key in keys {
            let body = store.get(&deltalake::Path::parse(&key).unwrap()).await.unwrap().bytes().await.unwrap();
            for line in String::from_utf8(body.to_vec()).unwrap().lines() {
                let object = line.strip_prefix(&format!("{target}/")).unwrap_or_else(|| panic!("{line}"));
                store.head(&deltalake::Path::parse(object).unwrap()).await.unwrap_or_else(|e| panic!("{line} listed but missing: {e}"));
            }
        }
    });
}

#[test]
fn continuous_runs_merge_new_commits_and_stop_cleanly_on_sigterm() {
    let services = Services::get();
    let topic = new_topic(&services, "mu-continuous", 1);
    let p = pipeline(&services, &topic, "interval = \"1s\"");
    let config = p.config.to_str().unwrap();
    let mut changes = Changes::new(21, 100);
    changes.produce(&services, &topic, 200);
    run_ok("raw-append", config);
    let child = spawn("merge-upsert", &["--config", config, "--trigger", "continuous"], &[]);
    // A second source commit while the job runs is picked up by a later batch.
    std::thread::sleep(Duration::from_secs(2));
    changes.produce(&services, &topic, 200);
    run_ok("raw-append", config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while target(&p) != oracle(&p) {
        assert!(std::time::Instant::now() < deadline, "the continuous run did not merge the second commit");
        std::thread::sleep(Duration::from_millis(500));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("exited");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["status"], "stopped");
    assert!(summary["batches"].as_u64().unwrap() >= 2, "{summary}");
    let once = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(once.code, Some(3), "{}", once.stderr);
}

#[test]
fn key_statistics_limit_the_target_files_read() {
    let (p, source) = source_pipeline();
    let config = p.config.to_str().unwrap();
    append_source(&source, 1, false);
    run_ok("merge-upsert", config);
    append_source(&source, 11, false);
    run_ok("merge-upsert", config);
    // Keys 1..10 again (equal sequences: the later change wins): only the first file can hold them.
    append_source(&source, 1, false);
    let r = run_ok("merge-upsert", config);
    let details = &r.summary["details"];
    assert_eq!(
        (details["target_files"].as_u64(), details["files_scanned"].as_u64(), details["files_rewritten"].as_u64()),
        (Some(2), Some(1), Some(1)),
        "{details}"
    );
    assert_eq!(details["rows_updated"], 10, "{details}");
    let rows = query(&[("p", p.table("processed").as_str())], &HashMap::new(), "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM p");
    assert_eq!(rows, vec![vec!["20".to_string(), "20".to_string()]]);
}

/// A one-partition pipeline whose raw table holds 800 changes (seed `seed`) over 300 keys.
fn landed_changes(name: &str, seed: u64) -> (Services, String, Pipeline, Changes) {
    let services = Services::get();
    let topic = unique(name);
    create_topics(&services, &[&topic], 1);
    let p = pipeline(&services, &topic, "");
    let mut changes = Changes::new(seed, 300);
    changes.produce(&services, &topic, 800);
    run_ok("raw-append", p.config.to_str().unwrap());
    (services, topic, p, changes)
}

#[test]
fn a_lost_checkpoint_is_rebuilt_from_the_target_and_no_batch_is_merged_twice() {
    let (services, topic, p, mut changes) = landed_changes("mu-lost", 13);
    let config = p.config.to_str().unwrap();
    run_ok("merge-upsert", config);
    let version = table_version(&p.table("processed"), &HashMap::new());
    // The checkpoint folder is gone (a cleaned-up prefix, a moved setting, a restored bucket).
    std::fs::remove_dir_all(p.table("_checkpoints/merge-upsert")).expect("checkpoint deleted");
    let again = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(again.code, Some(3), "the rebuilt checkpoint knows the source was read: {}", again.stderr);
    assert!(again.stderr.contains("rebuilt from the target"), "{}", again.stderr);
    assert_eq!(table_version(&p.table("processed"), &HashMap::new()), version, "no batch was merged again");
    changes.produce(&services, &topic, 800);
    run_ok("raw-append", config);
    let next = run_ok("merge-upsert", config);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert_eq!(target(&p), oracle(&p), "processed equals the latest change per key");
    let txn = block_on(async {
        let table = delta_io::open_table(&p.table("processed"), &Default::default()).await.expect("target");
        delta_io::read_progress(&table, "merge-upsert").await.expect("txn")
    });
    assert_eq!(txn, Some(2), "batch numbers continue after the target's");
}

#[test]
fn of_two_instances_planning_the_same_batch_one_stops_and_nothing_is_doubled_or_skipped() {
    let (services, topic, p, mut changes) = landed_changes("mu-two", 17);
    let config = p.config.to_str().unwrap();
    // The first instance plans batch 1 and waits before recording it; a second instance (a
    // duplicated task) plans the same batch meanwhile, records it and merges it.
    let paused = vec![("FAILPOINTS".to_string(), "merge_upsert::before_plan_record=1*sleep(8000)".to_string())];
    let first = spawn("merge-upsert", &["--config", config], &paused);
    std::thread::sleep(Duration::from_millis(2500));
    let second = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(second.code, Some(0), "the second instance merges the batch: {}", second.stderr);
    let first = first.wait_with_output().expect("exited");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "the first instance stops: {stderr}");
    assert!(stderr.contains("another run of this job planned batch 1 first"), "{stderr}");
    assert_eq!(target(&p), oracle(&p), "processed equals the latest change per key");
    let version = table_version(&p.table("processed"), &HashMap::new());
    changes.produce(&services, &topic, 400);
    run_ok("raw-append", config);
    let next = run_ok("merge-upsert", config);
    assert_eq!(next.code, Some(0), "{}", next.stderr);
    assert!(table_version(&p.table("processed"), &HashMap::new()) > version);
    assert_eq!(target(&p), oracle(&p), "the next run continues exactly");
}

#[test]
fn a_vacuumed_or_recreated_source_stops_with_exit_4_and_the_fix_never_no_new_data() {
    let (p, source) = source_pipeline();
    let config = p.config.to_str().unwrap();
    let maintenance = |args: &[&str]| run("maintenance", &[&["--config", config], args].concat(), &[]);
    append_source(&source, 1, false);
    run_ok("merge-upsert", config);
    let merged = target(&p);
    // Two commits the job has not read yet are compacted and their files vacuumed at once.
    append_source(&source, 11, false);
    append_source(&source, 21, false);
    assert_eq!(maintenance(&["compact", "changes", "--min-commit-interval", "0s"]).code, Some(0));
    let vacuum = maintenance(&["vacuum", "changes", "--retention-hours", "0", "--allow-short-retention"]);
    assert_eq!(vacuum.code, Some(0), "{}", vacuum.stderr);
    let gone = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(gone.code, Some(4), "files the job still needs are gone: {}", gone.stderr);
    let error = gone.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("of version 1 is gone") && error.contains("deletedFileRetentionDuration"), "{error}");
    assert_eq!(target(&p), merged, "nothing was merged");

    // The source deleted and created again: version 0 again, another table id.
    std::fs::remove_dir_all(&source).expect("source deleted");
    append_source(&source, 31, false);
    let recreated = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(recreated.code, Some(4), "never \"no new data\": {}", recreated.stderr);
    let error = recreated.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("is not the table this job read: its table id is"), "{error}");
    assert!(error.contains("rebuild the output from scratch"), "{error}");
    assert_eq!(target(&p), merged, "nothing was merged");
}

#[test]
fn continuous_merges_survive_compactions_of_the_target_and_re_plan_a_batch_whose_files_were_compacted() {
    let services = Services::get();
    let topic = new_topic(&services, "mu-compact", 1);
    let p = pipeline(&services, &topic, "interval = \"1s\"");
    let config = p.config.to_str().unwrap();
    let compact = || run("maintenance", &["--config", config, "compact", "target", "--min-commit-interval", "0s"], &[]);
    // Two batches leave two or more small files in most hour partitions.
    let mut changes = Changes::new(29, 200);
    for _ in 0..2 {
        changes.produce(&services, &topic, 400);
        run_ok("raw-append", config);
        run_ok("merge-upsert", config);
    }
    changes.produce(&services, &topic, 400);
    run_ok("raw-append", config);
    // The next batch's merge waits between its plan and its commit; a compaction folds the
    // files it rewrites meanwhile. Landing both would keep the replaced rows in the compacted
    // files beside their new versions.
    let paused = vec![("FAILPOINTS".to_string(), "merge_upsert::before_target_commit=1*sleep(6000)".to_string())];
    let job = spawn("merge-upsert", &["--config", config, "--trigger", "continuous"], &paused);
    std::thread::sleep(Duration::from_millis(3000));
    let compacted = compact();
    assert_eq!(compacted.code, Some(0), "{}", compacted.stderr);
    assert!(compacted.summary["details"]["files_removed"].as_u64() > Some(0), "{}", compacted.summary);
    // More changes and compactions while the job keeps merging.
    for _ in 0..3 {
        changes.produce(&services, &topic, 300);
        run_ok("raw-append", config);
        let beside = compact();
        assert!(beside.code == Some(0) || beside.stderr.contains("nothing of it was committed"), "{:?} {}", beside.code, beside.stderr);
        std::thread::sleep(Duration::from_millis(700));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while target(&p) != oracle(&p) {
        assert!(std::time::Instant::now() < deadline, "the continuous run did not converge to the latest change per key");
        std::thread::sleep(Duration::from_millis(500));
    }
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(job.id() as i32, libc::SIGTERM) };
    let out = job.wait_with_output().expect("exited");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the run survived the compactions: {stderr}");
    assert!(stderr.contains("merging again"), "the compacted batch was re-planned: {stderr}");
    assert_eq!(target(&p), oracle(&p), "processed equals the latest change per key");
}

#[test]
fn tombstones_report_their_size_and_a_configured_cap_stops_the_batch_loudly() {
    let (services, topic, p, mut changes) = landed_changes("mu-cap", 31);
    let config = p.config.to_str().unwrap();
    let first = run_ok("merge-upsert", config);
    let bytes = first.summary["details"]["state_bytes"].as_u64().unwrap_or(0);
    assert!(bytes > 0, "the summary reports the tombstones' size: {}", first.summary);
    changes.produce(&services, &topic, 200);
    run_ok("raw-append", config);
    let merged = target(&p);
    let capped =
        std::fs::read_to_string(&p.config).unwrap().replace("operation = \"op\"", "operation = \"op\"\nmax_state_bytes = \"1 KiB\"");
    p.write_file("capped.toml", &capped);
    let over = run("merge-upsert", &["--config", p.dir.path().join("capped.toml").to_str().unwrap()], &[]);
    assert_eq!(over.code, Some(1), "{}", over.stderr);
    let error = over.summary["error"].as_str().unwrap_or_default();
    assert!(error.contains("over merge_upsert.max_state_bytes = 1024") && error.contains("tombstone_retention"), "{error}");
    assert_eq!(target(&p), merged, "nothing was merged");
    run_ok("merge-upsert", config);
    assert_eq!(target(&p), oracle(&p));
}

#[test]
fn a_compaction_whose_files_a_merge_rewrote_meanwhile_drops_that_bin_and_loses_nothing() {
    let (p, source) = source_pipeline();
    let config = p.config.to_str().unwrap();
    // Two merges leave two small files (keys 1-10 and 11-20) in one hour partition.
    for first_key in [1, 11] {
        append_source(&source, first_key, false);
        run_ok("merge-upsert", config);
    }
    let compact = ["--config", config, "compact", "target", "--min-commit-interval", "0s"];
    let paused = vec![("FAILPOINTS".to_string(), "maintenance::before_compaction_commit=1*sleep(5000)".to_string())];
    let compaction = spawn("maintenance", &compact, &paused);
    std::thread::sleep(Duration::from_millis(2500));
    // Keys 1-10 again (equal sequences: the later change wins): the merge rewrites their file.
    append_source(&source, 1, false);
    run_ok("merge-upsert", config);
    let out = compaction.wait_with_output().expect("exited");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the compaction finishes: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["details"]["bins_dropped"], 1, "{summary}");
    assert_eq!(summary["details"]["files_removed"], 0, "nothing of the dropped bin counted: {summary}");
    let rows = query(&[("p", p.table("processed").as_str())], &HashMap::new(), "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM p");
    assert_eq!(rows, vec![vec!["20".to_string(), "20".to_string()]], "no row doubled by the compaction");
    let again = run("maintenance", &compact, &[]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.summary["details"]["files_removed"].as_u64() >= Some(2), "the next run packs the partition: {}", again.summary);
    let rows = query(&[("p", p.table("processed").as_str())], &HashMap::new(), "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM p");
    assert_eq!(rows, vec![vec!["20".to_string(), "20".to_string()]]);
}

#[test]
fn a_compaction_checks_every_commit_since_it_read_even_after_dropping_a_bin() {
    let (p, source) = source_pipeline();
    let config = p.config.to_str().unwrap();
    // Two hour partitions of two small files each: two bins.
    for (first_key, hour) in [(1, 0), (11, 0), (21, 1), (31, 1)] {
        append_source_at(&source, first_key, false, hour);
        run_ok("merge-upsert", config);
    }
    let compact = ["--config", config, "compact", "target", "--min-commit-interval", "0s"];
    let paused = vec![("FAILPOINTS".to_string(), "maintenance::before_compaction_commit=1*sleep(9000)".to_string())];
    let compaction = spawn("maintenance", &compact, &paused);
    std::thread::sleep(Duration::from_millis(2500));
    // While it waits, two merges rewrite a file of each bin, in two commits: finding the first
    // drops its bin, and the second must still be found for the other bin.
    append_source_at(&source, 1, false, 0);
    run_ok("merge-upsert", config);
    append_source_at(&source, 21, false, 1);
    run_ok("merge-upsert", config);
    let out = compaction.wait_with_output().expect("exited");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "the compaction finishes: {stderr}");
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(summary["details"]["bins_dropped"], 2, "{summary}");
    let rows = query(&[("p", p.table("processed").as_str())], &HashMap::new(), "SELECT COUNT(*), COUNT(DISTINCT order_id) FROM p");
    assert_eq!(rows, vec![vec!["40".to_string(), "40".to_string()]], "no row doubled by the compaction");
    assert_eq!(target(&p), oracle(&p));
}

/// A change message of the `changes` topic from `key sequence value op` (sequence: the second
/// of its timestamp).
fn change_message(fields: &str) -> String {
    let [key, seq, value, op]: [&str; 4] = fields.split(' ').collect::<Vec<_>>().try_into().expect("key sequence value op");
    let seq: u32 = seq.parse().expect("sequence");
    format!(r#"{{"order_id": {key}, "order_owner": "o", "order_value": {value}, "timestamp": "2022-04-04 12:00:{seq:02}", "op": "{op}"}}"#)
}

/// A pipeline whose merge-upsert reads a hand-written `raw/changes` table (no Kafka), and the
/// location of that table.
fn source_pipeline() -> (Pipeline, String) {
    let p = pipeline(&Services::get(), "unused", "");
    let source = p.table("raw/changes");
    (p, source)
}
