//! raw-append routing one topic into many tables (AWS DMS: one table per source table), end to
//! end against a real tansu broker, crashes included.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use e2e_tests::*;

const ORDERS_SCHEMA: &str = r#"
[[columns]]
name = "order_id"
type = "long"
required = true

[[columns]]
name = "order_owner"
type = "string"

[[columns]]
name = "order_value"
type = "long"
"#;

/// A schema of an id column and a name.
fn id_name_schema(id: &str) -> String {
    format!("[[columns]]\nname = \"{id}\"\ntype = \"long\"\nrequired = true\n\n[[columns]]\nname = \"name\"\ntype = \"string\"\n")
}

/// A pipeline whose raw-append routes DMS topic `topic` into one table per schema file of
/// `dms/`: shop_orders, shop_customers, employees (hr.staff renamed) and shop_idle (never sent).
fn routed_pipeline(services: &Services, topic: &str, extra: &str, tables: &str) -> Pipeline {
    routed_source_pipeline(services, &format!(r#"topic = "{topic}", metadata_columns = ["partition", "offset"]"#), extra, tables)
}

/// [`routed_pipeline`] for any source (`topic = ...` or `stream = ...` and its metadata columns).
fn routed_source_pipeline(services: &Services, source: &str, extra: &str, tables: &str) -> Pipeline {
    let pipeline = Pipeline::new(
        services,
        None,
        &format!(
            r#"{tables}
[raw_append]
{extra}
sources = [{{ {source}, format = "dms", route = {{ schemas = "dms", path = "raw/dms/{{table}}", rename = {{ "hr_staff" = "employees" }}, partitions = [{{ column = "day", source = "ingestion_time", format = "%d" }}] }} }}]
"#
        ),
    );
    std::fs::create_dir(pipeline.dir.path().join("dms")).expect("schema folder");
    pipeline.write_file("dms/shop_orders.schema.toml", ORDERS_SCHEMA);
    pipeline.write_file("dms/shop_customers.schema.toml", &id_name_schema("customer_id"));
    pipeline.write_file("dms/employees.schema.toml", &id_name_schema("staff_id"));
    pipeline.write_file("dms/shop_idle.schema.toml", &id_name_schema("id"));
    pipeline
}

fn order(id: i64, owner: &str, value: i64) -> String {
    format!(r#"{{"order_id": {id}, "order_owner": "{owner}", "order_value": {value}}}"#)
}

fn named(id_column: &str, id: i64, name: &str) -> String {
    format!(r#"{{"{id_column}": {id}, "name": "{name}"}}"#)
}

#[test]
fn one_dms_topic_becomes_one_table_per_source_table_and_merges_to_its_final_state() {
    let services = Services::get();
    let topic = new_topic(&services, "dms-routed", 1);
    let records = [
        dms("shop", "orders", "control", "create-table", 0, None),
        dms("shop", "orders", "data", "load", 1, Some(&order(1, "alice", 10))),
        dms("shop", "orders", "data", "load", 2, Some(&order(2, "bob", 2))),
        dms("shop", "customers", "data", "load", 2, Some(&named("customer_id", 10, "ann"))),
        dms("hr", "staff", "data", "load", 3, Some(&named("staff_id", 100, "hal"))),
        dms("shop", "orders", "data", "load", 3, Some(&order(3, "carol", 3))),
        dms("shop", "customers", "data", "load", 4, Some(&named("customer_id", 11, "ben"))),
        dms("shop", "orders", "data", "insert", 5, Some(&order(4, "dave", 40))),
        dms("shop", "orders", "data", "update", 6, Some(&order(2, "bob", 20))),
        dms("shop", "unknown", "data", "insert", 6, Some(&named("id", 1, "x"))),
        dms("shop", "orders", "data", "delete", 7, Some(&order(3, "carol", 3))),
        dms("shop", "customers", "data", "update", 7, Some(&named("customer_id", 11, "benjamin"))),
        dms("shop", "orders", "data", "insert", 8, Some(r#"{"order_owner": "eve"}"#)),
        dms("shop", "orders", "control", "add-column", 9, None),
        dms("hr", "staff", "data", "insert", 9, Some(&named("staff_id", 101, "ida"))),
    ];
    produce_unkeyed(&services, &topic, &records);
    let merge = dms_orders_merge(r#"ignore_columns = ["day", "_kafka_partition", "_kafka_offset"]"#);
    let pipeline = routed_pipeline(&services, &topic, "", &merge);
    pipeline.write_file(
        "processed.schema.toml",
        &format!("{ORDERS_SCHEMA}\n[[columns]]\nname = \"_dms_timestamp\"\ntype = \"timestamp\"\nrequired = true\n"),
    );
    let config = pipeline.config.to_str().unwrap();
    let r = run_succeeds("raw-append", config, &[]);
    assert_eq!(r.summary["details"]["dms_control_records"], 2, "{}", r.summary);
    assert_eq!(r.summary["dead_letters"], 2, "the unknown table and the order without id: {}", r.summary);
    let rows = |table: &str, sql: &str| query(&[("t", pipeline.table(&format!("raw/dms/{table}")).as_str())], &HashMap::new(), sql);
    assert_eq!(
        rows(
            "shop_orders",
            "SELECT CAST(order_id AS VARCHAR) AS id, _dms_operation, CAST(_kafka_offset AS VARCHAR) AS off FROM t ORDER BY _kafka_offset"
        ),
        [["1", "load", "1"], ["2", "load", "2"], ["3", "load", "5"], ["4", "insert", "7"], ["2", "update", "8"], ["3", "delete", "10"]]
            .map(|r| r.map(str::to_string).to_vec()),
        "the orders records, in order, nothing else"
    );
    assert_eq!(
        rows("shop_customers", "SELECT CAST(customer_id AS VARCHAR) AS id, name, _dms_operation FROM t ORDER BY _kafka_offset"),
        [["10", "ann", "load"], ["11", "ben", "load"], ["11", "benjamin", "update"]].map(|r| r.map(str::to_string).to_vec())
    );
    assert_eq!(
        rows("employees", "SELECT CAST(staff_id AS VARCHAR) AS id, name FROM t ORDER BY staff_id"),
        [["100", "hal"], ["101", "ida"]].map(|r| r.map(str::to_string).to_vec()),
        "hr.staff renamed to employees"
    );
    assert!(!std::path::Path::new(&pipeline.table("raw/dms/shop_idle")).exists(), "a table is created on first sight only");
    let dead = query(
        &[("d", pipeline.table("raw/dead_letter").as_str())],
        &HashMap::new(),
        r#"SELECT CAST("offset" AS VARCHAR) AS o, target_table, error FROM d ORDER BY "offset""#,
    );
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[0][0], "9");
    assert!(dead[0][2].contains("no schema file shop_unknown.schema.toml"), "{dead:?}");
    assert_eq!((dead[1][0].as_str(), dead[1][1].as_str()), ("12", "shop_orders"), "{dead:?}");
    assert!(dead[1][2].contains("data.order_id"), "{dead:?}");
    let m = run("merge-upsert", &["--config", config], &[]);
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    let target = query(
        &[("p", pipeline.table("processed").as_str())],
        &HashMap::new(),
        "SELECT CAST(order_id AS VARCHAR) AS id, order_owner, CAST(order_value AS VARCHAR) AS v FROM p ORDER BY order_id",
    );
    assert_eq!(
        target,
        [["1", "alice", "10"], ["2", "bob", "20"], ["4", "dave", "40"]].map(|r| r.map(str::to_string).to_vec()),
        "shop.orders' final state: the update applied, the delete removed the row"
    );
    assert_nothing_new("raw-append", config);
}

#[test]
fn a_routed_topic_killed_at_any_step_lands_every_record_once_in_its_own_table() {
    let services = Services::get();
    let topic = new_topic(&services, "dms-routed-crash", 3);
    // Four tables interleaved, a control record every 25th, an unknown table every 60th.
    let mut expected: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut records = Vec::new();
    for i in 0..4_000i64 {
        let second = (i % 60) as u32;
        let record = match i {
            _ if i % 25 == 0 => dms("shop", "orders", "control", "add-column", second, None),
            _ if i % 60 == 1 => dms("shop", "unknown", "data", "insert", second, Some(&named("id", i, "x"))),
            _ => {
                let (schema, table, name, data) = match i % 3 {
                    0 => ("shop", "orders", "shop_orders", order(i, "o", 1)),
                    1 => ("shop", "customers", "shop_customers", named("customer_id", i, "c")),
                    _ => ("hr", "staff", "employees", named("staff_id", i, "s")),
                };
                expected.entry(name).or_default().push(i.to_string());
                dms(schema, table, "data", "insert", second, Some(&data))
            }
        };
        records.push(record);
    }
    let unknown = (0..4_000).filter(|i| i % 60 == 1 && i % 25 != 0).count();
    produce_unkeyed(&services, &topic, &records);
    let pipeline = routed_pipeline(&services, &topic, "max_batch_rows = 100\ninterval = \"200ms\"", "");
    let config = pipeline.config.to_str().unwrap().to_string();
    let plan = [
        Kill::At("raw_append::after_routed_commit", "1*off->return"),
        Kill::At("raw_append::after_upload", "3*off->return"),
        Kill::At("raw_append::after_routed_commit", "4*off->return"),
        Kill::At("raw_append::after_commit", "1*off->return"),
        Kill::At("raw_append::after_dead_letter_commit", "return"),
        Kill::At("raw_append::after_decode", "2*off->return"),
        Kill::After(300),
        Kill::After(250),
    ];
    kill_then_drain("raw-append", &config, &[], &plan, 6);
    for (table, ids) in &expected {
        let id = match *table {
            "shop_orders" => "order_id",
            "shop_customers" => "customer_id",
            _ => "staff_id",
        };
        let location = pipeline.table(&format!("raw/dms/{table}"));
        let rows =
            query(&[("t", location.as_str())], &HashMap::new(), &format!("SELECT CAST({id} AS VARCHAR), COUNT(*) FROM t GROUP BY {id}"));
        assert!(rows.iter().all(|r| r[1] == "1"), "{table}: every record once: {:?}", rows.iter().find(|r| r[1] != "1"));
        let mut got: Vec<String> = rows.into_iter().map(|mut r| r.swap_remove(0)).collect();
        got.sort_by_key(|id| id.parse::<i64>().unwrap_or(-1));
        assert_eq!(&got, ids, "{table}: exactly its records");
    }
    let dead = query(
        &[("d", pipeline.table("raw/dead_letter").as_str())],
        &HashMap::new(),
        r#"SELECT CAST("partition" AS VARCHAR) || ':' || CAST("offset" AS VARCHAR) AS at, COUNT(*) FROM d GROUP BY at"#,
    );
    assert_eq!(dead.len(), unknown, "each unroutable record dead-lettered: {dead:?}");
    assert!(dead.iter().all(|r| r[1] == "1"), "once: {dead:?}");
}

/// Records of three routed tables, ids from `first`, keyed so they spread over partitions.
fn three_tables(first: i64, count: i64) -> Vec<(String, String)> {
    (first..first + count)
        .map(|i| {
            let record = match i % 3 {
                0 => dms("shop", "orders", "data", "insert", 1, Some(&order(i, "o", 1))),
                1 => dms("shop", "customers", "data", "insert", 1, Some(&named("customer_id", i, "c"))),
                _ => dms("hr", "staff", "data", "insert", 1, Some(&named("staff_id", i, "s"))),
            };
            (i.to_string(), record)
        })
        .collect()
}

fn produce_keyed(services: &Services, topic: &str, records: &[(String, String)]) {
    let messages: Vec<(Option<&str>, &[u8])> = records.iter().map(|(k, m)| (Some(k.as_str()), m.as_bytes())).collect();
    produce_raw(services, topic, &messages);
}

/// (partition, offset, copies) of every row of the three routed tables.
fn routed_offsets(pipeline: &Pipeline) -> Vec<Vec<String>> {
    let tables: Vec<(String, String)> = ["shop_orders", "shop_customers", "employees"]
        .iter()
        .map(|t| (t.to_string(), pipeline.table(&format!("raw/dms/{t}"))))
        .filter(|(_, location)| std::path::Path::new(location).join("_delta_log").exists())
        .collect();
    if tables.is_empty() {
        return Vec::new();
    }
    let named: Vec<(&str, &str)> = tables.iter().map(|(t, l)| (t.as_str(), l.as_str())).collect();
    let union = tables.iter().map(|(t, _)| format!("SELECT _kafka_partition AS p, _kafka_offset AS o FROM {t}")).collect::<Vec<_>>();
    let sql =
        format!("SELECT CAST(p AS VARCHAR) AS p, CAST(o AS VARCHAR) AS o, COUNT(*) FROM ({}) GROUP BY p, o", union.join(" UNION ALL "));
    query(&named, &HashMap::new(), &sql)
}

#[test]
fn a_zombie_routed_batch_never_lands_and_the_zombie_keeps_running() {
    let services = Services::get();
    let topic = new_topic(&services, "dms-routed-zombie", 2);
    produce_keyed(&services, &topic, &three_tables(0, 3_000));
    let pipeline = routed_pipeline(&services, &topic, "interval = \"500ms\"", "");
    let config = pipeline.config.to_str().unwrap().to_string();
    // The zombie stalls after uploading its first routed table's files.
    let zombie = zombie_beside_a_rival(&config);
    assert_eq!(routed_offsets(&pipeline).len(), 3_000, "the other writer committed everything");
    produce_keyed(&services, &topic, &three_tables(3_000, 1_000));
    let deadline = Instant::now() + Duration::from_secs(90);
    while routed_offsets(&pipeline).len() < 4_000 {
        assert!(Instant::now() < deadline, "the zombie did not write the new records");
        std::thread::sleep(Duration::from_millis(500));
    }
    zombie_kept_serving(zombie);
    let offsets = routed_offsets(&pipeline);
    assert_eq!(offsets.len(), 4_000, "every record routed");
    assert!(offsets.iter().all(|r| r[2] == "1"), "a record landed twice: {:?}", offsets.iter().find(|r| r[2] != "1"));
}

#[test]
fn a_routed_kinesis_stream_killed_at_any_step_lands_every_record_once() {
    let services = Services::get();
    let stream = unique("dms-routed-kinesis");
    let client = kinesis_client(&services);
    block_on(create_stream(&client, &stream, 2));
    let records: Vec<(String, Vec<u8>)> = three_tables(0, 1_500).into_iter().map(|(k, m)| (k, m.into_bytes())).collect();
    block_on(put(&client, &stream, &records));
    let source = format!(r#"stream = "{stream}", metadata_columns = ["shard_id", "sequence_number"]"#);
    let pipeline = routed_source_pipeline(&services, &source, "max_batch_rows = 200\ninterval = \"300ms\"", "");
    let config = pipeline.config.to_str().unwrap().to_string();
    let env = services.s3_env();
    let plan = [
        Kill::At("raw_append::after_routed_commit", "1*off->return"),
        Kill::At("raw_append::after_position_write", "return"),
        Kill::At("raw_append::after_routed_commit", "4*off->return"),
        Kill::At("raw_append::after_commit", "1*off->return"),
        Kill::After(1_500),
    ];
    kill_then_drain("raw-append", &config, &env, &plan, 3);
    let tables = ["shop_orders", "shop_customers", "employees"].map(|t| (t, pipeline.table(&format!("raw/dms/{t}"))));
    let named: Vec<(&str, &str)> = tables.iter().map(|(t, l)| (*t, l.as_str())).collect();
    let union =
        tables.iter().map(|(t, _)| format!("SELECT _kinesis_shard_id AS s, _kinesis_sequence_number AS q FROM {t}")).collect::<Vec<_>>();
    let sql = format!("SELECT COUNT(*), COUNT(DISTINCT concat(s, '/', q)) FROM ({})", union.join(" UNION ALL "));
    let counts = query(&named, &HashMap::new(), &sql);
    assert_eq!(counts[0], ["1500", "1500"], "every record routed once");
    let orders = query(&named[..1], &HashMap::new(), "SELECT COUNT(DISTINCT order_id), COUNT(*) FROM shop_orders");
    assert_eq!(orders[0], ["500", "500"], "shop.orders' records in its own table");
}
