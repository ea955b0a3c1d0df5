//! raw-append schema evolution (`unknown_fields = "add_columns"`): new fields become columns
//! committed before the rows that carry them, end to end against a real tansu broker, crashes,
//! a concurrent reader and a second task included.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2e_tests::*;

const ITEM_SCHEMA: &str =
    "[[columns]]\nname = \"id\"\ntype = \"long\"\nrequired = true\n\n[[columns]]\nname = \"name\"\ntype = \"string\"\n";

/// Item `i` as sent: fields appear in three waves (a nested object, a fraction, an array, a
/// timestamp; a dotted key and an always-null field that cannot become columns).
fn item(i: i64) -> String {
    match i {
        _ if i < 1_000 => format!(r#"{{"id": {i}, "name": "n{i}"}}"#),
        _ if i < 2_000 => format!(r#"{{"id": {i}, "name": "n{i}", "price": {i}.25, "address": {{"city": "c{}", "zip": "z{i}"}}}}"#, i % 7),
        _ => format!(
            r#"{{"id": {i}, "name": "n{i}", "tags": ["t{i}", {i}], "seen": "2026-01-02 03:04:05", "a.b": 1, "note": null, "price": {i}.5, "address": {{"city": "c{}"}}}}"#,
            i % 7
        ),
    }
}

/// Item `i`'s row: id, name, price, address_city, address_zip, tags, seen.
fn item_row(i: i64) -> Vec<String> {
    let null = || "NULL".to_string();
    match i {
        _ if i < 1_000 => vec![i.to_string(), format!("n{i}"), null(), null(), null(), null(), null()],
        _ if i < 2_000 => vec![i.to_string(), format!("n{i}"), format!("{i}.25"), format!("c{}", i % 7), format!("z{i}"), null(), null()],
        _ => vec![
            i.to_string(),
            format!("n{i}"),
            format!("{i}.5"),
            format!("c{}", i % 7),
            null(),
            format!(r#"["t{i}", {i}]"#),
            "2026-01-02T03:04:05Z".into(),
        ],
    }
}

const ROWS_SQL: &str = "SELECT CAST(id AS VARCHAR) AS i, name, CAST(price AS VARCHAR) AS p, address_city, address_zip, tags, \
                        CAST(seen AS VARCHAR) AS s FROM t ORDER BY id";

fn items_pipeline(services: &Services, topic: &str, extra: &str) -> Pipeline {
    let pipeline = Pipeline::new(
        services,
        None,
        &format!(
            r#"[tables.items]
path = "raw/items"
schema = "item.schema.toml"

[raw_append]
max_batch_rows = 400
{extra}
sources = [{{ topic = "{topic}", table = "items", unknown_fields = "add_columns", metadata_columns = ["partition", "offset"] }}]
"#
        ),
    );
    pipeline.write_file("item.schema.toml", ITEM_SCHEMA);
    pipeline
}

fn produce_items(services: &Services, topic: &str, ids: std::ops::Range<i64>) {
    let records: Vec<(String, String)> = ids.map(|i| (i.to_string(), item(i))).collect();
    let messages: Vec<(Option<&str>, &[u8])> = records.iter().map(|(k, m)| (Some(k.as_str()), m.as_bytes())).collect();
    produce_raw(services, topic, &messages);
}

/// Reads the whole table every 200 ms until stopped: every read must succeed, whatever the
/// schema of the files it meets, and the row count never shrinks. Returns the reads made.
fn spawn_reader(location: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let (mut reads, mut seen) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            let rows = query_table(location.as_str(), "SELECT * FROM t").len();
            assert!(rows >= seen, "a reader saw {rows} rows after {seen}");
            (seen, reads) = (rows, reads + 1);
            std::thread::sleep(Duration::from_millis(200));
        }
        reads
    })
}

#[test]
fn new_fields_become_columns_exactly_once_under_kills_and_concurrent_readers() {
    let services = Services::get();
    let topic = new_topic(&services, "evolve", 3);
    produce_items(&services, &topic, 0..2_000);
    let pipeline = items_pipeline(&services, &topic, "");
    let config = pipeline.config.to_str().unwrap().to_string();
    let table = pipeline.table("raw/items");
    // The first run dies right after its first schema commit: rows of the first wave landed,
    // the new columns are in the table, no row that carries them is.
    let first = run_kill_plan("raw-append", &config, &[], &[Kill::At("raw_append::after_schema_commit", "return")]);
    assert_eq!(first, 1, "the first run crashed after a schema commit");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(table.clone(), stop.clone());
    let plan = [Kill::At("raw_append::after_decode", "2*off->return"), Kill::At("raw_append::after_commit", "return")];
    let mut crashes = first + run_kill_plan("raw-append", &config, &[], &plan);
    drain("raw-append", &config, &[]);
    // The third wave: its schema commit, an upload and a continuous run are cut short.
    produce_items(&services, &topic, 2_000..3_000);
    let plan = [Kill::At("raw_append::after_schema_commit", "return"), Kill::At("raw_append::after_upload", "return"), Kill::After(1_500)];
    crashes += run_kill_plan("raw-append", &config, &[], &plan);
    assert!(crashes >= 4, "only {crashes} runs were killed");
    drain("raw-append", &config, &[]);
    stop.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("every concurrent read succeeded");
    assert!(reads > 0);
    let rows = query_table(table.as_str(), ROWS_SQL);
    let expected: Vec<Vec<String>> = (0..3_000).map(item_row).collect();
    assert_eq!(rows.len(), expected.len(), "every item once");
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got, want, "each value where its field was, nothing else");
    }
    let dead = pipeline.query("raw/dead_letter", "SELECT error FROM t");
    assert!(dead.is_empty(), "no item was dead-lettered: {dead:?}");
    assert_nothing_new("raw-append", &config);
}

#[test]
fn a_field_that_cannot_be_a_column_is_reported_and_two_tasks_evolve_one_table() {
    let services = Services::get();
    let topic = new_topic(&services, "evolve-group", 4);
    produce_items(&services, &topic, 0..1_000);
    let pipeline = items_pipeline(&services, &topic, &format!("interval = \"500ms\"\ngroup_id = \"{}\"", unique("evolvers")));
    let config = pipeline.config.to_str().unwrap().to_string();
    let table = pipeline.table("raw/items");
    // The first task pauses between its uploads and its commits, so the other's schema commits
    // land between its snapshot and its commit.
    let slow = [("FAILPOINTS".to_string(), "raw_append::after_upload=sleep(1500)".to_string())];
    let tasks: Vec<_> =
        [&slow[..], &[]].iter().map(|env| spawn("raw-append", &["--config", &config, "--trigger", "continuous"], env)).collect();
    let wait_for = |n: usize| wait_for_rows(&table, n, Duration::from_secs(120), &format!("the tasks did not write {n} rows"));
    wait_for(1_000);
    // Both tasks meet the new fields, each in its own partitions, and race to add them.
    produce_items(&services, &topic, 1_000..3_000);
    wait_for(3_000);
    std::thread::sleep(Duration::from_secs(2));
    let mut summaries = Vec::new();
    for task in tasks {
        assert!(child_running(&task), "a task exited while the other evolved the table");
        signal(&task, libc::SIGTERM);
        let (code, summary, stderr) = finish(task);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stderr.contains("field_not_added") && stderr.contains("a.b"), "the dotted key is reported: {stderr}");
        summaries.push(summary);
    }
    let added: u64 = summaries.iter().map(|s| s["details"]["columns_added"].as_u64().unwrap_or(0)).sum();
    assert_eq!(added, 5, "price, address_city, address_zip, tags and seen added once between the two tasks: {summaries:?}");
    let rows = query_table(table.as_str(), ROWS_SQL);
    assert_eq!(rows, (0..3_000).map(item_row).collect::<Vec<_>>(), "every item once with its values");
}

const ORDERS_SCHEMA: &str =
    "[[columns]]\nname = \"order_id\"\ntype = \"long\"\nrequired = true\n\n[[columns]]\nname = \"order_owner\"\ntype = \"string\"\n";

#[test]
fn a_dms_column_added_mid_stream_reaches_the_routed_table_and_the_merged_state() {
    let services = Services::get();
    let topic = new_topic(&services, "dms-evolve", 1);
    let records = [
        dms("shop", "orders", "data", "load", 1, Some(r#"{"order_id": 1, "order_owner": "alice"}"#)),
        dms("shop", "orders", "data", "load", 2, Some(r#"{"order_id": 2, "order_owner": "bob"}"#)),
        dms("shop", "orders", "control", "add-column", 3, None),
        dms("shop", "orders", "data", "insert", 4, Some(r#"{"order_id": 3, "order_owner": "carol", "coupon": "C3"}"#)),
        dms("shop", "orders", "data", "update", 5, Some(r#"{"order_id": 1, "order_owner": "alice", "coupon": "C1"}"#)),
        dms("shop", "orders", "data", "delete", 6, Some(r#"{"order_id": 2, "order_owner": "bob", "coupon": null}"#)),
    ];
    produce_unkeyed(&services, &topic, &records);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"[raw_append]
sources = [{{ topic = "{topic}", format = "dms", unknown_fields = "add_columns", route = {{ schemas = "dms", path = "raw/dms/{{table}}" }} }}]
{}"#,
            dms_orders_merge("schema_evolution = \"add_columns\"")
        ),
    );
    std::fs::create_dir(pipeline.dir.path().join("dms")).expect("schema folder");
    pipeline.write_file("dms/shop_orders.schema.toml", ORDERS_SCHEMA);
    pipeline
        .write_file("processed.schema.toml", &format!("{ORDERS_SCHEMA}\n[[columns]]\nname = \"_dms_timestamp\"\ntype = \"timestamp\"\n"));
    let config = pipeline.config.to_str().unwrap();
    let r = run_succeeds("raw-append", config, &[]);
    assert_eq!(r.summary["details"]["dms_control_records"], 1, "{}", r.summary);
    assert_eq!(r.summary["details"]["columns_added"], 1, "{}", r.summary);
    let raw = pipeline
        .query("raw/dms/shop_orders", "SELECT CAST(order_id AS VARCHAR) AS id, _dms_operation, coupon FROM t ORDER BY _dms_timestamp");
    assert_eq!(
        raw,
        rows(&[["1", "load", "NULL"], ["2", "load", "NULL"], ["3", "insert", "C3"], ["1", "update", "C1"], ["2", "delete", "NULL"]])
    );
    let m = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let target = pipeline.query("processed", "SELECT CAST(order_id AS VARCHAR) AS id, order_owner, coupon FROM t ORDER BY order_id");
    assert_eq!(target, rows(&[["1", "alice", "C1"], ["3", "carol", "C3"]]), "the source table's final state, the added column included");
    assert_nothing_new("raw-append", config);
}

/// Record `i` of three source tables in turn, and the row its table gets (as the query
/// below renders it).
fn inferred_record(i: i64) -> (&'static str, String, Vec<String>) {
    let (table, data, row) = match i % 3 {
        0 => (
            "shop_orders",
            format!(r#"{{"order_id": {i}, "owner": "o{i}", "value": {}, "placed": "2026-11-30 10:00:00"}}"#, i * 2),
            vec![i.to_string(), format!("o{i}"), (i * 2).to_string(), "2026-11-30T10:00:00Z".into()],
        ),
        1 => (
            "shop_customers",
            format!(r#"{{"customer_id": {i}, "name": "c{i}", "address": {{"city": "x{}"}}}}"#, i % 5),
            vec![i.to_string(), format!("c{i}"), format!("x{}", i % 5)],
        ),
        _ => ("hr_staff", format!(r#"{{"staff_id": {i}, "salary": {i}.5}}"#), vec![i.to_string(), format!("{i}.5")]),
    };
    let (schema, source) = table.split_once('_').unwrap_or_default();
    (table, dms(schema, source, "data", "insert", 0, Some(&data)), row)
}

#[test]
fn tables_without_a_schema_file_are_inferred_from_their_first_records_exactly_once_under_kills() {
    let services = Services::get();
    let topic = new_topic(&services, "dms-infer", 3);
    let records: Vec<(String, String)> = (0..1_500).map(|i| (i.to_string(), inferred_record(i).1)).collect();
    let messages: Vec<(Option<&str>, &[u8])> = records.iter().map(|(k, m)| (Some(k.as_str()), m.as_bytes())).collect();
    produce_raw(&services, &topic, &messages);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"[raw_append]
max_batch_rows = 300
sources = [{{ topic = "{topic}", format = "dms", unknown_fields = "add_columns", route = {{ infer = true, path = "raw/dms/{{table}}" }} }}]
"#
        ),
    );
    let config = pipeline.config.to_str().unwrap().to_string();
    let plan = [
        Kill::At("raw_append::after_schema_commit", "return"),
        Kill::At("raw_append::after_schema_commit", "1*off->return"),
        Kill::At("raw_append::after_routed_commit", "2*off->return"),
        Kill::At("raw_append::after_commit", "return"),
        Kill::After(1_200),
    ];
    kill_then_drain("raw-append", &config, &[], &plan, 3);
    let sql = [
        ("shop_orders", "SELECT CAST(order_id AS VARCHAR) AS i, owner, CAST(value AS VARCHAR) AS v, CAST(placed AS VARCHAR) AS p FROM t ORDER BY order_id"),
        ("shop_customers", "SELECT CAST(customer_id AS VARCHAR) AS i, name, address_city FROM t ORDER BY customer_id"),
        ("hr_staff", "SELECT CAST(staff_id AS VARCHAR) AS i, CAST(salary AS VARCHAR) AS s FROM t ORDER BY staff_id"),
    ];
    for (table, sql) in sql {
        let location = pipeline.table(&format!("raw/dms/{table}"));
        let rows = query_table(location.as_str(), sql);
        let expected: Vec<Vec<String>> = (0..1_500).map(inferred_record).filter(|(t, _, _)| *t == table).map(|(_, _, row)| row).collect();
        assert_eq!(rows, expected, "{table}: each record once, typed from its values");
    }
    let types = pipeline.query(
        "raw/dms/shop_orders",
        "SELECT arrow_typeof(order_id), arrow_typeof(value), arrow_typeof(placed), arrow_typeof(_dms_operation) FROM t LIMIT 1",
    );
    assert_eq!(
        types[0],
        ["Int64", "Int64", "Timestamp(µs, \"UTC\")", "Utf8View"],
        "inferred long, long, timestamp; the format's own columns"
    );
    assert_nothing_new("raw-append", &config);
}

#[test]
fn a_table_with_schema_infer_is_created_from_its_first_messages_and_keeps_evolving() {
    let services = Services::get();
    let topic = new_topic(&services, "infer-table", 2);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"[tables.events]
path = "raw/events"
schema = "infer"

[raw_append]
sources = [{{ topic = "{topic}", table = "events", unknown_fields = "add_columns" }}]
"#
        ),
    );
    // The first messages: their fields become the table's columns.
    let first: Vec<String> =
        (0..500).map(|i| format!(r#"{{"id": {i}, "kind": "k{}", "at": "2026-12-01T00:00:0{}Z"}}"#, i % 3, i % 10)).collect();
    produce_unkeyed(&services, &topic, &first);
    let config = pipeline.config.to_str().unwrap().to_string();
    // Killed right after the table's creation (its columns, no rows): the rerun writes each
    // message once into it.
    let crashes = run_kill_plan("raw-append", &config, &[], &[Kill::At("raw_append::after_schema_commit", "return")]);
    assert_eq!(crashes, 1);
    let table = pipeline.table("raw/events");
    assert_eq!(query_table(table.as_str(), "SELECT COUNT(*) FROM t"), [["0"]], "created, nothing written yet");
    run_succeeds("raw-append", &config, &[]);
    let later: Vec<String> = (500..600).map(|i| format!(r#"{{"id": {i}, "kind": "k", "score": {i}}}"#)).collect();
    produce_unkeyed(&services, &topic, &later);
    let r = run_succeeds("raw-append", &config, &[]);
    assert_eq!(r.summary["details"]["columns_added"], 1, "score: {}", r.summary);
    let rows = query_table(
        table.as_str(),
        "SELECT COUNT(*), COUNT(DISTINCT id), COUNT(at), COUNT(score), CAST(MIN(at) AS VARCHAR) AS first_at, SUM(score) AS s FROM t",
    );
    let score: i64 = (500..600).sum();
    assert_eq!(rows[0], ["600", "600", "500", "100", "2026-12-01T00:00:00Z", &score.to_string()], "every message once");
    let types = query_table(table.as_str(), "SELECT arrow_typeof(at), arrow_typeof(score) FROM t LIMIT 1");
    assert_eq!(types[0], ["Timestamp(µs, \"UTC\")", "Int64"], "RFC 3339 strings became timestamps, integers longs");
    assert_nothing_new("raw-append", &config);
}

#[test]
fn a_batch_whose_later_slices_bring_new_fields_commits_its_earlier_files_too() {
    let services = Services::get();
    let topic = new_topic(&services, "evolve-mid-batch", 1);
    let pipeline = items_pipeline(&services, &topic, "interval = \"6s\"");
    pipeline.edit("max_batch_rows = 400", "max_batch_rows = 100000");
    let config = pipeline.config.to_str().unwrap().to_string();
    let task = spawn("raw-append", &["--config", &config, "--trigger", "continuous"], &[]);
    // Two slices of one batch: the first written with the file's columns, the second after the
    // table gained the new ones; one commit holds both.
    produce_items(&services, &topic, 0..1_000);
    std::thread::sleep(Duration::from_millis(1_500));
    produce_items(&services, &topic, 1_000..2_000);
    let table = pipeline.table("raw/items");
    wait_for_rows(&table, 2_000, Duration::from_secs(60), "the batch did not land");
    signal(&task, libc::SIGTERM);
    let (code, summary, stderr) = finish(task);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(summary["details"]["columns_added"], 3, "{summary}");
    let sql = "SELECT CAST(id AS VARCHAR) AS i, name, CAST(price AS VARCHAR) AS p, address_city, address_zip FROM t ORDER BY id";
    let rows = query_table(table.as_str(), sql);
    let expected: Vec<Vec<String>> = (0..2_000).map(|i| item_row(i)[..5].to_vec()).collect();
    assert_eq!(rows, expected, "both slices' rows, once");
    let log = std::path::Path::new(&table).join("_delta_log");
    let data_commits = std::fs::read_dir(&log)
        .expect("log")
        .filter_map(|e| std::fs::read_to_string(e.expect("entry").path()).ok())
        .filter(|commit| commit.contains("\"add\":"))
        .count();
    assert_eq!(data_commits, 1, "one batch: the files of both slices in one commit");
}

#[test]
fn fields_that_cannot_be_columns_are_rescued_when_asked() {
    let services = Services::get();
    let topic = new_topic(&services, "evolve-rescue", 1);
    let messages: [&[u8]; 3] = [
        br#"{"id": 1, "name": "a"}"#,
        br#"{"id": 2, "name": "b", "price": 3, "a.b": {"c": 1}, "x y": "z"}"#,
        br#"{"id": 3, "name": "c", "price": 4, "_RESCUED_DATA": 5}"#,
    ];
    produce_raw(&services, &topic, &messages.iter().map(|m| (None, *m)).collect::<Vec<_>>());
    let pipeline = items_pipeline(&services, &topic, "");
    pipeline.edit("unknown_fields = \"add_columns\"", "unknown_fields = \"add_columns\", rescue_refused = true");
    let config = pipeline.config.to_str().unwrap().to_string();
    let r = run_succeeds("raw-append", &config, &[]);
    assert_eq!(r.summary["details"]["columns_added"], 1, "price: {}", r.summary);
    let got = pipeline.query("raw/items", "SELECT CAST(id AS VARCHAR) AS i, CAST(price AS VARCHAR) AS p, _rescued_data FROM t ORDER BY id");
    assert_eq!(
        got,
        rows(&[["1", "NULL", "NULL"], ["2", "3", r#"{"a.b":{"c": 1},"x y":"z"}"#], ["3", "4", r#"{"_RESCUED_DATA":5}"#]]),
        "the added column holds its values; what could not be a column is kept as sent"
    );
}
