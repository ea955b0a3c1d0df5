//! maintenance end to end: tables written by raw-append from a real tansu broker, maintained by
//! the `maintenance` binary, checked with independent readers (DataFusion over Delta, the
//! Parquet files a manifest lists, a Hive-dialect SQL parser).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use deltalake::datafusion::sql::sqlparser::ast::Statement;
use deltalake::datafusion::sql::sqlparser::dialect::HiveDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use e2e_tests::*;

const ORDERS: &str = include_str!("fixtures/raw_order_hourly.tables.toml");

/// Rows of the orders table as a sorted list (order-insensitive comparison).
fn order_rows(location: &str) -> Vec<Vec<String>> {
    let mut rows = query(
        &[("o", location)],
        &HashMap::new(),
        "SELECT CAST(_kafka_partition AS VARCHAR), CAST(_kafka_offset AS VARCHAR), CAST(order_id AS VARCHAR), order_owner, CAST(order_value AS VARCHAR), CAST(timestamp AS VARCHAR), year, month, day, hour FROM o",
    );
    rows.sort();
    rows
}

/// Data files of the table's current version and the number of distinct partitions.
fn files_and_partitions(location: &str) -> (Vec<String>, usize) {
    block_on(async {
        let url = url::Url::from_directory_path(Path::new(location).canonicalize().expect("table")).expect("url");
        let table = deltalake::open_table(url).await.expect("table");
        let snapshot = table.snapshot().expect("snapshot");
        let mut files = Vec::new();
        let mut partitions = BTreeSet::new();
        for f in snapshot.log_data() {
            files.push(f.path().to_string());
            let mut values: Vec<(String, Option<String>)> = f.partition_values_map().into_iter().collect();
            values.sort();
            partitions.insert(values);
        }
        (files, partitions.len())
    })
}

fn last_commit_actions(location: &str) -> Vec<serde_json::Value> {
    let log = Path::new(location).join("_delta_log");
    let mut commits: Vec<PathBuf> =
        std::fs::read_dir(&log).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "json")).collect();
    commits.sort();
    let text = std::fs::read_to_string(commits.last().expect("a commit")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).expect("json action")).collect()
}

fn maintenance(args: &[&str]) -> RunResult {
    run("maintenance", args, &[])
}

#[test]
fn compaction_keeps_every_row_bin_packs_and_loses_nothing_beside_a_running_append() {
    let services = Services::get();
    let topic = new_topic(&services, "compact-orders", 2);
    let sources = format!("sources = [{{ topic = \"{topic}\", table = \"raw_order\", metadata_columns = [\"partition\", \"offset\"] }}]");
    let pipeline = Pipeline::local(&services, &format!("{ORDERS}\n[raw_append]\nmax_batch_rows = 500\n{sources}\n"));
    let config = pipeline.config.to_str().unwrap();
    let table = pipeline.table("raw/order");

    produce_orders(&services, &topic, 11, 10_000, 0, 0.0);
    let first = run("raw-append", &["--config", config], &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let before = order_rows(&table);
    assert_eq!(before.len(), 10_000);
    let (small_files, partitions) = files_and_partitions(&table);
    assert!(small_files.len() >= 20, "500-row batches make many small files, got {}", small_files.len());

    let compacted = maintenance(&["--config", config, "compact", "raw_order"]);
    assert_eq!(compacted.code, Some(0), "{}", compacted.stderr);
    let details = &compacted.summary["details"];
    assert_eq!(details["files_removed"], small_files.len() as u64, "{details}");
    assert_eq!(details["files_added"], partitions as u64, "everything fits in one 128 MiB bin per partition: {details}");
    assert_eq!(order_rows(&table), before, "compaction changes no row");
    let (after_files, _) = files_and_partitions(&table);
    assert_eq!(after_files.len(), partitions);
    let actions = last_commit_actions(&table);
    let adds: Vec<_> = actions.iter().filter_map(|a| a.get("add")).collect();
    let removes: Vec<_> = actions.iter().filter_map(|a| a.get("remove")).collect();
    assert!(!adds.is_empty() && adds.iter().chain(&removes).all(|a| a["dataChange"] == false), "a rewrite is dataChange=false");
    let again = maintenance(&["--config", config, "compact", "raw_order"]);
    assert_eq!(again.summary["details"]["files_added"], 0, "nothing left to compact: {}", again.summary);

    // Compaction and a running raw-append at once: every offset still exactly once.
    produce_orders(&services, &topic, 12, 10_000, 0, 0.0);
    let mut append = spawn("raw-append", &["--config", config], &[]);
    let mut compactions = 0;
    while append.try_wait().expect("wait").is_none() {
        let r = maintenance(&["--config", config, "compact", "raw_order", "--min-commit-interval", "0s"]);
        assert_eq!(r.code, Some(0), "compaction beside an append: {}", r.stderr);
        compactions += 1;
    }
    assert!(append.wait().expect("append").success());
    let rows = order_rows(&table);
    assert_eq!(rows.len(), 20_000, "after {compactions} concurrent compactions");
    let offsets: BTreeSet<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    assert_eq!(offsets.len(), 20_000, "no (partition, offset) twice");
    assert!(before.iter().all(|r| rows.binary_search(r).is_ok()), "the first 10,000 rows are unchanged");

    // A checkpoint keeps the table readable and records itself.
    let cp = maintenance(&["--config", config, "checkpoint", "raw_order"]);
    assert_eq!(cp.code, Some(0), "{}", cp.stderr);
    assert!(Path::new(&table).join("_delta_log/_last_checkpoint").exists());
    assert_eq!(order_rows(&table), rows);
}

#[test]
fn zorder_compaction_rewrites_without_changing_rows() {
    let services = Services::get();
    let topic = new_topic(&services, "zorder-orders", 2);
    let sources = format!("sources = [{{ topic = \"{topic}\", table = \"raw_order\", metadata_columns = [\"partition\", \"offset\"] }}]");
    let pipeline = Pipeline::local(&services, &format!("{ORDERS}\n[raw_append]\nmax_batch_rows = 500\n{sources}\n"));
    let config = pipeline.config.to_str().unwrap();
    let table = pipeline.table("raw/order");
    produce_orders(&services, &topic, 13, 5_000, 0, 0.0);
    let appended = run("raw-append", &["--config", config], &[]);
    assert_eq!(appended.code, Some(0), "{}", appended.stderr);
    let before = order_rows(&table);
    let (small_files, partitions) = files_and_partitions(&table);
    assert!(small_files.len() > partitions, "several small files per partition: {}", small_files.len());

    let r = maintenance(&["--config", config, "compact", "raw_order", "--zorder", "order_owner", "--zorder", "order_value"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(order_rows(&table), before, "z-ordering changes no row");
    let (files, _) = files_and_partitions(&table);
    assert!(files.len() < small_files.len(), "{} files after, {} before", files.len(), small_files.len());
    let actions = last_commit_actions(&table);
    let info = actions.iter().find_map(|a| a.get("commitInfo")).expect("commit info");
    assert_eq!(info["operation"], "OPTIMIZE", "{info}");
    assert_eq!(info["operationMetrics"]["plannerStrategy"], "zOrder", "a z-order rewrite, not a bin-packing: {info}");
    let data: Vec<_> = actions.iter().filter_map(|a| a.get("add").or_else(|| a.get("remove"))).collect();
    assert!(!data.is_empty() && data.iter().all(|a| a["dataChange"] == false), "a z-order rewrite is dataChange=false");
}

#[test]
fn vacuum_guards_retention_dry_runs_and_keeps_time_travel_inside_the_window() {
    let services = Services::get();
    let topic = new_topic(&services, "vacuum-orders", 1);
    let sources = format!("sources = [{{ topic = \"{topic}\", table = \"raw_order\", metadata_columns = [\"partition\", \"offset\"] }}]");
    let pipeline = Pipeline::local(&services, &format!("{ORDERS}\n[raw_append]\nmax_batch_rows = 1000\n{sources}\n"));
    let config = pipeline.config.to_str().unwrap();
    let table = pipeline.table("raw/order");
    produce_orders(&services, &topic, 21, 5_000, 0, 0.0);
    let appended = run("raw-append", &["--config", config], &[]);
    assert_eq!(appended.code, Some(0), "{}", appended.stderr);
    let rows = order_rows(&table);
    let (small_files, _) = files_and_partitions(&table);
    let before_compaction = table_version(&table, &HashMap::new());
    assert_eq!(maintenance(&["--config", config, "compact", "raw_order"]).code, Some(0));

    // Default retention (168 h): the replaced files are still needed for time travel.
    let default = maintenance(&["--config", config, "vacuum", "raw_order"]);
    assert_eq!(default.code, Some(0), "{}", default.stderr);
    assert_eq!(default.summary["details"]["files_count"], 0);
    let old = block_on(async {
        let url = url::Url::from_directory_path(Path::new(&table).canonicalize().unwrap()).unwrap();
        let mut t = deltalake::open_table(url).await.unwrap();
        t.load_version(before_compaction).await.unwrap();
        t.snapshot().unwrap().log_data().into_iter().count()
    });
    assert_eq!(old, small_files.len(), "time travel to the version before compaction still lists its files");
    for f in &small_files {
        assert!(Path::new(&table).join(f).exists(), "{f} kept");
    }

    // A short retention is refused without the override (usage error, nothing deleted).
    let refused = maintenance(&["--config", config, "vacuum", "raw_order", "--retention-hours", "0"]);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.summary["error"].as_str().unwrap().contains("--allow-short-retention"));

    // Dry run: lists exactly the replaced files with their bytes, deletes nothing.
    let dry = maintenance(&["--config", config, "vacuum", "raw_order", "--retention-hours", "0", "--allow-short-retention", "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let listed: BTreeSet<String> =
        dry.summary["details"]["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    let expected: BTreeSet<String> = small_files.iter().cloned().collect();
    assert_eq!(listed, expected);
    let bytes: u64 = small_files.iter().map(|f| std::fs::metadata(Path::new(&table).join(f)).unwrap().len()).sum();
    assert_eq!(dry.summary["details"]["bytes"], bytes);
    assert!(small_files.iter().all(|f| Path::new(&table).join(f).exists()), "dry run deletes nothing");

    // Full mode also removes a file the log never mentions; the current version still reads.
    let orphan = Path::new(&table).join("part-orphan-from-a-failed-writer.parquet");
    std::fs::write(&orphan, b"not referenced").unwrap();
    let full = maintenance(&["--config", config, "vacuum", "raw_order", "--retention-hours", "0", "--allow-short-retention", "--full"]);
    assert_eq!(full.code, Some(0), "{}", full.stderr);
    assert!(!orphan.exists(), "orphan removed");
    assert!(small_files.iter().all(|f| !Path::new(&table).join(f).exists()), "replaced files removed");
    assert_eq!(order_rows(&table), rows, "the current version is intact");
}

// The reference member schema requires an owner; this one lets a null owner through so the
// default partition is exercised.
const MEMBERS: &str = include_str!("fixtures/raw_member_any_owner.tables.toml");

const MEMBER_SCHEMA: &str = include_str!("fixtures/member_any_owner.schema.toml");

fn members_pipeline(services: &Services, table: &str, topic: &str, metadata: &str) -> Pipeline {
    let pipeline = Pipeline::new(
        services,
        None,
        &format!("{table}\n[raw_append]\nsources = [{{ topic = \"{topic}\", table = \"raw_member\", metadata_columns = [{metadata}] }}]\n"),
    );
    pipeline.write_file("member_any_owner.schema.toml", MEMBER_SCHEMA);
    pipeline
}

/// Owners whose Hive directory names are known: (value, directory) as Delta Spark writes them.
const OWNERS: [(Option<&str>, &str); 9] = [
    (Some("alice"), "order_owner=alice"),
    (Some("a/b"), "order_owner=a%2Fb"),
    (Some(".."), "order_owner=.."),
    (Some("x=y"), "order_owner=x%3Dy"),
    (Some("50% off"), "order_owner=50%25 off"),
    (Some("日本語"), "order_owner=日本語"),
    (Some("#?:*"), "order_owner=%23%3F%3A%2A"),
    (Some("it's [\"q\"]^{}"), "order_owner=it%27s %5B%22q%22%5D%5E%7B}"),
    (None, "order_owner=__HIVE_DEFAULT_PARTITION__"),
];

fn member_messages(round: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, (owner, _)) in OWNERS.iter().enumerate() {
        for j in 0..3 {
            let membership = ["bronze", "silver", "gold"][j];
            let timestamp = format!("2022-04-04 1{round}:{i:02}:0{j}");
            let mut v = serde_json::json!({"membership": membership, "timestamp": timestamp});
            if let Some(o) = owner {
                v["order_owner"] = serde_json::json!(o);
            }
            out.push(v.to_string().into_bytes());
        }
    }
    out
}

/// Manifest folder -> lines, read from disk.
fn read_manifests(table: &str) -> BTreeMap<String, Vec<String>> {
    let root = Path::new(table).join("_symlink_format_manifest");
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "manifest") {
                let rel = path.parent().unwrap().strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read_to_string(&path).unwrap().lines().map(str::to_string).collect());
            }
        }
    }
    out
}

/// Offsets held by the Parquet files a manifest lists, read directly (no Delta involved).
fn offsets_in_files(lines: &[String]) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for line in lines {
        let path = line.strip_prefix("file:").expect("local tables are listed as file:/ URIs");
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path} listed but unreadable: {e}"));
        for batch in ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap() {
            let batch = batch.unwrap();
            let col = batch.column(batch.schema().index_of("_kafka_offset").unwrap());
            let values = col.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
            out.extend(values.iter().flatten());
        }
    }
    out
}

fn offsets_in_table(table: &str, owner: Option<&str>) -> BTreeSet<i64> {
    let filter = match owner {
        Some(o) => format!("order_owner = '{}'", o.replace('\'', "''")),
        None => "order_owner IS NULL".into(),
    };
    query(&[("m", table)], &HashMap::new(), &format!("SELECT _kafka_offset FROM m WHERE {filter}"))
        .into_iter()
        .map(|r| r[0].parse().unwrap())
        .collect()
}

#[test]
fn manifests_follow_delta_spark_layout_list_exactly_the_current_rows_and_drop_emptied_partitions() {
    let services = Services::get();
    let topic = new_topic(&services, "manifest-members", 1);
    let pipeline = members_pipeline(&services, MEMBERS, &topic, "\"offset\"");
    let config = pipeline.config.to_str().unwrap();
    let table = pipeline.table("raw/member");
    let messages = member_messages(0);
    let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_slice())).collect();
    produce_raw(&services, &topic, &refs);
    let appended = run("raw-append", &["--config", config], &[]);
    assert_eq!(appended.code, Some(0), "{}", appended.stderr);

    let generated = maintenance(&["--config", config, "manifest", "raw_member"]);
    assert_eq!(generated.code, Some(0), "{}", generated.stderr);
    let manifests = read_manifests(&table);
    let expected_dirs: BTreeSet<String> = OWNERS.iter().map(|(_, d)| d.to_string()).collect();
    assert_eq!(manifests.keys().cloned().collect::<BTreeSet<_>>(), expected_dirs, "Hive-escaped partition folders");
    let table_dir = Path::new(&table).canonicalize().unwrap();
    for (owner, dir) in OWNERS {
        let lines = &manifests[dir];
        for line in lines {
            // Absolute and not percent-encoded: the file is at exactly this path (delta-rs names
            // data folders its own way; the manifest folder follows Hive).
            let expected_prefix = format!("file:{}/order_owner=", table_dir.display());
            assert!(line.starts_with(&expected_prefix), "{line} should start with {expected_prefix}");
            assert!(Path::new(line.strip_prefix("file:").unwrap()).is_file(), "{line} is a file");
        }
        assert_eq!(offsets_in_files(lines), offsets_in_table(&table, owner), "manifest of {dir} lists exactly the partition's rows");
    }

    // Delete one partition's rows: its manifest goes, the others stay.
    block_on(async {
        let url = url::Url::from_directory_path(&table_dir).unwrap();
        let t = deltalake::open_table(url).await.unwrap();
        t.delete().with_predicate("order_owner = 'x=y'").await.unwrap();
    });
    let regenerated = maintenance(&["--config", config, "manifest", "raw_member"]);
    assert_eq!(regenerated.summary["details"]["manifests_deleted"], 1, "{}", regenerated.summary);
    let after = read_manifests(&table);
    assert!(!after.contains_key("order_owner=x%3Dy"));
    assert_eq!(after.len(), OWNERS.len() - 1);
}

#[test]
fn writers_keep_manifests_current_when_the_table_asks_for_it() {
    let services = Services::get();
    let topic = new_topic(&services, "manifest-incremental", 1);
    let table_cfg = MEMBERS.replace(
        "partitions = [{ column = \"order_owner\" }]",
        "partitions = [{ column = \"order_owner\" }]\nproperties = { \"delta.compatibility.symlinkFormatManifest.enabled\" = \"true\" }",
    );
    let pipeline = members_pipeline(&services, &table_cfg, &topic, "\"offset\"");
    let config = pipeline.config.to_str().unwrap();
    let table = pipeline.table("raw/member");
    for round in 0..2 {
        let messages = member_messages(round);
        // The second round only touches two owners.
        let chosen: Vec<&Vec<u8>> = if round == 0 { messages.iter().collect() } else { messages.iter().take(6).collect() };
        let refs: Vec<(Option<&str>, &[u8])> = chosen.iter().map(|m| (None, m.as_slice())).collect();
        produce_raw(&services, &topic, &refs);
        let appended = run("raw-append", &["--config", config], &[]);
        assert_eq!(appended.code, Some(0), "{}", appended.stderr);
        let manifests = read_manifests(&table);
        assert_eq!(manifests.len(), OWNERS.len(), "no `maintenance manifest` run needed");
        for (owner, dir) in OWNERS {
            assert_eq!(offsets_in_files(&manifests[dir]), offsets_in_table(&table, owner), "round {round}: {dir}");
        }
    }
}

#[test]
fn catalog_ddl_parses_as_hive_and_names_every_column_with_its_type() {
    let services = Services::get();
    let topic = new_topic(&services, "catalog-members", 1);
    let pipeline = members_pipeline(&services, MEMBERS, &topic, "\"partition\", \"offset\", \"timestamp\"");
    let config = pipeline.config.to_str().unwrap();
    let messages = member_messages(0);
    let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_slice())).collect();
    produce_raw(&services, &topic, &refs);
    let appended = run("raw-append", &["--config", config], &[]);
    assert_eq!(appended.code, Some(0), "{}", appended.stderr);
    assert_eq!(maintenance(&["--config", config, "manifest", "raw_member"]).code, Some(0));

    let output =
        command("maintenance", &["--config", config, "catalog", "raw_member", "--database", "lake"], &[]).output().expect("catalog runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let sql = stdout.rsplit_once("\n{").map(|(ddl, _)| ddl).unwrap_or(&stdout);
    // Hive reads `\'` inside a literal as a quote; sqlparser's Hive dialect does not know that
    // escape, so the one statement that needs it is checked as text and the rest are parsed.
    let (escaped, plain): (Vec<&str>, Vec<&str>) =
        sql.split(";\n").map(str::trim).filter(|s| !s.is_empty()).partition(|s| s.contains("\\'"));
    assert_eq!(escaped.len(), 1, "{escaped:?}");
    assert!(escaped[0].contains("PARTITION (`order_owner`='it\\'s [\"q\"]^{}') LOCATION"), "{}", escaped[0]);
    let statements =
        Parser::parse_sql(&HiveDialect {}, &plain.join(";\n")).unwrap_or_else(|e| panic!("DDL does not parse as Hive: {e}\n{sql}"));
    assert_eq!(statements.len() + escaped.len(), 2 + OWNERS.len(), "native, symlink, one ADD PARTITION per partition");

    let Statement::CreateTable(symlink) = &statements[1] else { panic!("second statement creates the symlink table: {}", statements[1]) };
    assert_eq!(symlink.name.to_string(), "`lake`.`raw_member_symlink`");
    let columns: Vec<(String, String)> =
        symlink.columns.iter().map(|c| (c.name.value.clone(), c.data_type.to_string().to_lowercase())).collect();
    let expected: Vec<(String, String)> = [
        ("membership", "string"),
        ("timestamp", "timestamp"),
        ("_kafka_partition", "int"),
        ("_kafka_offset", "bigint"),
        ("_kafka_timestamp", "timestamp"),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), t.to_string()))
    .collect();
    assert_eq!(columns, expected, "every data column, in table order, with its Hive type");
    assert!(!columns.iter().any(|(n, _)| n == "order_owner"), "partition column is not a data column");
    assert!(sql.contains("PARTITIONED BY (`order_owner` string)"));
    assert!(sql.contains("'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'"));
    assert!(statements[0].to_string().contains("table_type"), "{}", statements[0]);
    let locations: BTreeSet<String> = sql
        .lines()
        .filter(|l| l.starts_with("ALTER TABLE"))
        .map(|l| l.rsplit_once("/_symlink_format_manifest/").unwrap().1.trim_end_matches("/';").to_string())
        .collect();
    assert_eq!(locations, read_manifests(&pipeline.table("raw/member")).keys().cloned().collect(), "one partition per manifest");
}

#[test]
fn every_operation_works_on_s3() {
    use deltalake::logstore::object_store::ObjectStoreExt as _;
    use futures::TryStreamExt;
    let services = Services::get();
    let bucket = unique("maint").to_lowercase();
    services.create_bucket(&bucket);
    let root = format!("s3://{bucket}/lake");
    let env = services.s3_env();
    let storage = services.s3_options();
    let topic = new_topic(&services, "s3-members", 1);
    let pipeline = Pipeline::new(
        &services,
        Some(&root),
        &format!(
            "{MEMBERS}\n[raw_append]\nsources = [{{ topic = \"{topic}\", table = \"raw_member\", metadata_columns = [\"offset\"] }}]\n"
        ),
    );
    pipeline.write_file("member_any_owner.schema.toml", MEMBER_SCHEMA);
    let config = pipeline.config.to_str().unwrap();
    let table = format!("{root}/raw/member");
    // Three commits, so every partition has three small files to pack.
    for round in 0..3 {
        let messages = member_messages(round);
        let refs: Vec<(Option<&str>, &[u8])> = messages.iter().map(|m| (None, m.as_slice())).collect();
        produce_raw(&services, &topic, &refs);
        let appended = run("raw-append", &["--config", config], &env);
        assert_eq!(appended.code, Some(0), "{}", appended.stderr);
    }
    let rows_before =
        query(&[("m", table.as_str())], &storage, "SELECT _kafka_offset, order_owner, membership FROM m ORDER BY _kafka_offset");

    for args in [
        vec!["compact", "raw_member"],
        vec!["vacuum", "raw_member", "--dry-run"],
        vec!["checkpoint", "raw_member"],
        vec!["manifest", "raw_member"],
        vec!["catalog", "raw_member"],
    ] {
        let mut full = vec!["--config", config];
        full.extend(args.iter());
        let r = run("maintenance", &full, &env);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        if args[0] == "compact" {
            assert!(
                r.summary["details"]["files_removed"].as_u64().unwrap() > OWNERS.len() as u64,
                "three commits leave small files to pack: {}",
                r.summary
            );
        }
    }
    let rows_after =
        query(&[("m", table.as_str())], &storage, "SELECT _kafka_offset, order_owner, membership FROM m ORDER BY _kafka_offset");
    assert_eq!(rows_after, rows_before, "compaction on S3 changes no row");

    // Manifest keys keep Hive's escapes literally; lines are s3:// URIs of live objects.
    block_on(async {
        let url = url::Url::parse(&table).unwrap();
        let t = deltalake::DeltaTableBuilder::from_url(url).unwrap().with_storage_options(storage.clone()).load().await.unwrap();
        let store = t.object_store();
        let prefix = deltalake::Path::parse("_symlink_format_manifest").unwrap();
        let keys: BTreeSet<String> = store.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap();
        let expected: BTreeSet<String> = OWNERS.iter().map(|(_, d)| format!("_symlink_format_manifest/{d}/manifest")).collect();
        assert_eq!(keys, expected);
        for key in keys {
            let body = store.get(&deltalake::Path::parse(&key).unwrap()).await.unwrap().bytes().await.unwrap();
            for line in String::from_utf8(body.to_vec()).unwrap().lines() {
                let object = line.strip_prefix(&format!("s3://{bucket}/lake/raw/member/")).unwrap_or_else(|| panic!("{line}"));
                store.head(&deltalake::Path::parse(object).unwrap()).await.unwrap_or_else(|e| panic!("{line} listed but missing: {e}"));
            }
        }
    });
}

/// What the DDL states: symlink columns, partition keys and (values, location) per partition,
/// and the native table's location.
struct DdlCatalog {
    native_location: String,
    columns: Vec<(String, String)>,
    partition_keys: Vec<(String, String)>,
    partitions: BTreeSet<(Vec<String>, String)>,
}

/// Runs `maintenance catalog` (DDL) and reads it with a Hive-dialect parser; the one literal
/// form sqlparser does not know (`\'`) is unescaped by hand.
fn catalog_ddl(config: &str, database: &str, env: &[(String, String)]) -> DdlCatalog {
    let printed = run("maintenance", &["--config", config, "catalog", "raw_member", "--database", database], env);
    assert_eq!(printed.code, Some(0), "{}", printed.stderr);
    let sql = printed.stdout.rsplit_once("\n{").map(|(ddl, _)| ddl.to_string()).unwrap_or(printed.stdout.clone());
    let statements: Vec<&str> = sql.split(";\n").map(|s| s.trim().trim_end_matches(';')).filter(|s| !s.is_empty()).collect();
    let parsed = Parser::parse_sql(&HiveDialect {}, &format!("{};", statements[1])).expect("symlink DDL parses as Hive");
    let Statement::CreateTable(symlink) = &parsed[0] else { panic!("{}", statements[1]) };
    let pair = |c: &deltalake::datafusion::sql::sqlparser::ast::ColumnDef| (c.name.value.clone(), c.data_type.to_string().to_lowercase());
    let partition_keys = match &symlink.hive_distribution {
        deltalake::datafusion::sql::sqlparser::ast::HiveDistributionStyle::PARTITIONED { columns } => columns.iter().map(pair).collect(),
        _ => Vec::new(),
    };
    let unescape = |s: &str| s.replace("\\'", "'").replace("\\\\", "\\");
    let partitions = statements[2..]
        .iter()
        .map(|s| {
            let (spec, location) = s.split_once("') LOCATION '").expect("ADD PARTITION ... LOCATION");
            let value = spec.split_once("`order_owner`='").expect("one partition key").1;
            (vec![unescape(value)], unescape(location.trim_end_matches('\'')))
        })
        .collect();
    let native_location = statements[0].split_once("LOCATION '").unwrap().1.split_once('\'').unwrap().0.to_string();
    DdlCatalog { native_location, columns: symlink.columns.iter().map(pair).collect(), partition_keys, partitions }
}

/// What moto's Glue holds: (table -> (location, columns, partition keys, parameters)), and the
/// symlink table's partitions as (values, location).
type GlueTables = BTreeMap<String, (String, Vec<(String, String)>, Vec<(String, String)>, HashMap<String, String>)>;

fn glue_catalog(services: &Services, database: &str) -> (GlueTables, BTreeSet<(Vec<String>, String)>) {
    block_on(async {
        let glue = aws_sdk_glue::Client::new(&services.aws_config(&services.s3_endpoint).await);
        let columns = |c: &[aws_sdk_glue::types::Column]| -> Vec<(String, String)> {
            c.iter().map(|c| (c.name().to_string(), c.r#type().unwrap_or_default().to_string())).collect()
        };
        let mut tables = BTreeMap::new();
        for t in glue.get_tables().database_name(database).send().await.expect("tables").table_list() {
            let sd = t.storage_descriptor().expect("storage descriptor");
            let parameters = t.parameters().cloned().unwrap_or_default();
            tables.insert(
                t.name().to_string(),
                (sd.location().unwrap_or_default().to_string(), columns(sd.columns()), columns(t.partition_keys()), parameters),
            );
        }
        let partitions = glue.get_partitions().database_name(database).table_name("raw_member_symlink").send().await.expect("partitions");
        let partitions = partitions
            .partitions()
            .iter()
            .map(|p| (p.values().to_vec(), p.storage_descriptor().and_then(|sd| sd.location()).unwrap_or_default().to_string()))
            .collect();
        (tables, partitions)
    })
}

/// Glue holds what the DDL states: both tables (the native one with the same columns, as
/// Athena registers it), every partition with its manifest folder.
fn assert_glue_equals_ddl(ddl: &DdlCatalog, tables: &GlueTables, partitions: &BTreeSet<(Vec<String>, String)>) {
    assert_eq!(tables.keys().collect::<Vec<_>>(), ["raw_member", "raw_member_symlink"]);
    let (native_location, native_columns, native_keys, native_parameters) = &tables["raw_member"];
    assert_eq!(native_location, &ddl.native_location);
    assert_eq!(native_parameters.get("table_type").map(String::as_str), Some("DELTA"));
    let (symlink_location, columns, keys, _) = &tables["raw_member_symlink"];
    assert_eq!(symlink_location, &format!("{}_symlink_format_manifest/", ddl.native_location));
    assert_eq!((columns, keys), (&ddl.columns, &ddl.partition_keys), "symlink columns and partition keys as the DDL");
    assert_eq!((native_columns, native_keys), (&ddl.columns, &ddl.partition_keys), "native columns as the Delta schema");
    assert_eq!(partitions, &ddl.partitions, "partition values and locations as the DDL");
}

#[test]
fn catalog_apply_keeps_glue_equal_to_the_ddl_through_a_removed_partition_and_an_added_column() {
    let services = Services::get();
    let bucket = unique("glue").to_lowercase();
    services.create_bucket(&bucket);
    let root = format!("s3://{bucket}/lake");
    let env = services.s3_env();
    let storage: BTreeMap<String, String> = services.s3_options().into_iter().collect();
    let topic = new_topic(&services, "glue-members", 1);
    let sources = format!("sources = [{{ topic = \"{topic}\", table = \"raw_member\", metadata_columns = [\"offset\"] }}]");
    let pipeline = Pipeline::new(&services, Some(&root), &format!("{MEMBERS}\n[raw_append]\n{sources}\n"));
    pipeline.write_file("member_any_owner.schema.toml", MEMBER_SCHEMA);
    let config = pipeline.config.to_str().unwrap();
    let table = format!("{root}/raw/member");
    // moto's catalog outlives a test run: a database of its own.
    let database = bucket.replace('-', "_");
    let messages = member_messages(0);
    produce_raw(&services, &topic, &messages.iter().map(|m| (None, m.as_slice())).collect::<Vec<_>>());
    assert_eq!(run("raw-append", &["--config", config], &env).code, Some(0));
    let apply = || {
        let manifest = run("maintenance", &["--config", config, "manifest", "raw_member"], &env);
        assert_eq!(manifest.code, Some(0), "{}", manifest.stderr);
        let r = run("maintenance", &["--config", config, "catalog", "raw_member", "--database", &database, "--apply"], &env);
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        r.summary["details"].clone()
    };

    let first = apply();
    assert_eq!(first["database_created"], true, "{first}");
    assert_eq!(first["tables_created"], serde_json::json!(["raw_member", "raw_member_symlink"]), "{first}");
    assert_eq!(first["partitions_created"], OWNERS.len(), "{first}");
    let (tables, partitions) = glue_catalog(&services, &database);
    assert_glue_equals_ddl(&catalog_ddl(config, &database, &env), &tables, &partitions);
    assert_eq!(apply()["unchanged"], true, "a second run changes nothing");

    // A merge deletes every row of one owner (its partition goes) and a write adds a column.
    block_on(async {
        use deltalake::datafusion::prelude::SessionContext;
        let t = delta_io::open_table(&table, &storage).await.unwrap();
        let source = SessionContext::new().sql("SELECT 'x=y' AS order_owner").await.unwrap();
        let (t, _) = t
            .merge(source, "t.order_owner = s.order_owner")
            .with_source_alias("s")
            .with_target_alias("t")
            .when_matched_delete(|d| d)
            .unwrap()
            .await
            .unwrap();
        let schema = arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("order_owner", arrow::datatypes::DataType::Utf8, true),
            arrow::datatypes::Field::new("tier", arrow::datatypes::DataType::Utf8, true),
        ]);
        let batch = arrow::record_batch::RecordBatch::try_new(
            std::sync::Arc::new(schema),
            vec![
                std::sync::Arc::new(arrow::array::StringArray::from(vec!["alice"])),
                std::sync::Arc::new(arrow::array::StringArray::from(vec!["vip"])),
            ],
        )
        .unwrap();
        t.write(vec![batch])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .await
            .unwrap();
    });
    // A dry run reports the changes and makes none.
    let dry = run("maintenance", &["--config", config, "catalog", "raw_member", "--database", &database, "--apply", "--dry-run"], &env);
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    assert_eq!(dry.summary["details"]["partitions_deleted"], 1, "{}", dry.summary);
    assert_eq!(glue_catalog(&services, &database), (tables, partitions), "a dry run changes nothing in Glue");
    let second = apply();
    assert_eq!(second["partitions_deleted"], 1, "{second}");
    assert_eq!(second["tables_updated"], serde_json::json!(["raw_member", "raw_member_symlink"]), "{second}");
    assert_eq!(second["partitions_updated"], OWNERS.len() - 1, "partitions list the new column too: {second}");
    let ddl = catalog_ddl(config, &database, &env);
    assert!(ddl.columns.contains(&("tier".to_string(), "string".to_string())), "{:?}", ddl.columns);
    assert!(!ddl.partitions.iter().any(|(v, _)| v[0] == "x=y"));
    let (tables, partitions) = glue_catalog(&services, &database);
    assert_glue_equals_ddl(&ddl, &tables, &partitions);
    assert_eq!(apply()["unchanged"], true, "a second run changes nothing");

    // A name Athena would fold is refused before anything is written.
    let refused = run("maintenance", &["--config", config, "catalog", "raw_member", "--database", "Lake", "--apply"], &env);
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--database"), "{}", refused.stderr);
}
