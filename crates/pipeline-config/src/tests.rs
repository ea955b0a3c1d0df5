//! Tests of the whole file: the shipped pipeline, overrides, and errors that name the key.

use std::path::{Path, PathBuf};

use crate::*;

fn shipped() -> PathBuf {
    // Read at run time: a shared target directory may hold a test binary built from
    // another checkout of the same sources.
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
    Path::new(&crate_dir).join("../../schemas/pipeline.toml")
}

#[test]
fn the_shipped_pipeline_is_valid() {
    let c = PipelineConfig::load_with_env(&shipped(), ConfigOverrides::default(), |_| None).unwrap();
    let ra = c.raw_append.as_ref().unwrap();
    assert_eq!(ra.sources.len(), 2);
    assert_eq!(c.table("raw_order").unwrap().partition_columns(), ["year", "month", "day", "hour"]);
    assert_eq!(c.table("raw_member").unwrap().schema.columns.len(), 3);
    assert_eq!(c.table_location("raw/order"), "lake/raw/order");
    let mu = c.merge_upsert.as_ref().unwrap();
    assert_eq!(
        (mu.source.name.as_str(), mu.target.name.as_str(), mu.key.as_slice()),
        ("curated", "processed", &["order_id".to_string()][..])
    );
}

#[test]
fn environment_overrides_deployment_values() {
    let env = |k: &str| match k {
        "LAKEHOUSE_LAKE_ROOT" => Some("s3://bucket/lake/".to_string()),
        "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL" => Some("sasl_ssl".to_string()),
        "LAKEHOUSE_KAFKA_SASL_MECHANISM" => Some("AWS_MSK_IAM".to_string()),
        _ => None,
    };
    let c = PipelineConfig::load_with_env(&shipped(), ConfigOverrides::default(), env).unwrap();
    assert_eq!(c.table_location("raw/order"), "s3://bucket/lake/raw/order");
    assert_eq!(c.kafka.sasl_mechanism, Some(SaslMechanism::AwsMskIam));
}

fn error_for(body: &str, env: &[(&str, &str)]) -> String {
    let dir = std::env::temp_dir().join(format!("pcfg-{}-{}", std::process::id(), body.len()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["order.schema.toml", "member.schema.toml"] {
        std::fs::copy(shipped().parent().unwrap().join(f), dir.join(f)).unwrap();
    }
    let path = dir.join("p.toml");
    std::fs::write(&path, body).unwrap();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let err =
        PipelineConfig::load_with_env(&path, ConfigOverrides::default(), |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
            .unwrap_err();
    err.to_string()
}

/// Writes `body` as `p.toml` in `dir` and loads it without environment overrides.
fn load_in(dir: &Path, body: &str) -> Result<PipelineConfig, ConfigError> {
    let path = dir.join("p.toml");
    std::fs::write(&path, body).unwrap();
    PipelineConfig::load_with_env(&path, ConfigOverrides::default(), |_| None)
}

#[test]
fn errors_name_the_key() {
    let base = "[lake]\nroot = \"lake\"\n[tables.t]\npath = \"t\"\nschema = \"order.schema.toml\"\n";
    let e = error_for(&format!("{base}partitions = [{{ column = \"nope\" }}]\n"), &[]);
    assert!(e.starts_with("tables.t.partitions[0].column:"), "{e}");
    let e = error_for(&format!("{base}[raw_append]\nsources = [{{ topic = \"x\", table = \"missing\" }}]\n"), &[]);
    assert!(e.starts_with("raw_append.sources[0].table:"), "{e}");
    let e = error_for(base, &[("LAKEHOUSE_KAFKA_SECURITY_PROTOCOL", "tls")]);
    assert!(e.starts_with("kafka.security_protocol: from LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"), "{e}");
    let e = error_for(base, &[("LAKEHOUSE_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]);
    assert!(e.starts_with("kafka.sasl_mechanism:"), "{e}");
    let e = error_for(&format!("{base}[raw_append]\nmax_batch_bytes = \"12 parsecs\"\nsources = []\n"), &[]);
    assert!(e.contains("max_batch_bytes") || e.contains("parsecs"), "{e}");
    let e = error_for(&base.replace("path = \"t\"", "path = \"../t\""), &[]);
    assert!(e.starts_with("tables.t.path:"), "{e}");
    let merge = |extra: &str| {
        format!("{base}[tables.u]\npath = \"u\"\nschema = \"order.schema.toml\"\n[merge_upsert]\nsource = \"t\"\ntarget = \"u\"\n{extra}")
    };
    let e = error_for(&merge("key = [\"id\"]\nsequence = \"timestamp\"\n"), &[]);
    assert!(e.starts_with("merge_upsert.key: 'id' is not a schema column of the target u"), "{e}");
    let e = error_for(&merge("key = [\"order_id\"]\nsequence = \"ts\"\n"), &[]);
    assert!(e.starts_with("merge_upsert.sequence:"), "{e}");
    let e = error_for(&merge("key = [\"order_id\"]\nsequence = \"timestamp\"\noperation = \"op\"\n"), &[]);
    assert!(e.starts_with("merge_upsert.operation: 'op' is not a column of the source t"), "{e}");
    let e = error_for(&merge("key = []\nsequence = \"timestamp\"\n"), &[]);
    assert!(e.starts_with("merge_upsert.key:"), "{e}");
}

#[test]
fn the_command_line_lake_root_applies_before_validation() {
    let overrides = ConfigOverrides { lake_root: Some("s3://bucket/from-flag".into()), brokers: Some("b-1:9098".into()) };
    let env = |k: &str| (k == "LAKEHOUSE_LAKE_ROOT").then(|| "ftp://not-supported".to_string());
    let c = PipelineConfig::load_with_env(&shipped(), overrides, env).unwrap();
    assert_eq!(c.table("raw_order").unwrap().location, "s3://bucket/from-flag/raw/order");
    assert_eq!(c.kafka.brokers, "b-1:9098");
}

#[test]
fn shared_incremental_options_resolve_per_job() {
    let c = PipelineConfig::load_with_env(&shipped(), ConfigOverrides::default(), |_| None).unwrap();
    let (sj, mu) = (&c.stream_join.as_ref().unwrap().incremental, &c.merge_upsert.as_ref().unwrap().incremental);
    assert_eq!((sj.job_id.as_str(), sj.checkpoint.as_str()), ("stream-join", "_checkpoints/stream-join"));
    assert_eq!((mu.job_id.as_str(), mu.max_files_per_batch), ("merge-upsert", 1000));
    assert_eq!(sj.max_bytes_per_batch, ByteSize(1 << 30));
}

#[test]
fn unknown_keys_of_sections_with_shared_options_are_named() {
    let base = "[lake]\nroot = \"lake\"\n[tables.t]\npath = \"t\"\nschema = \"order.schema.toml\"\n[tables.u]\npath = \"u\"\nschema = \"order.schema.toml\"\n";
    let e = error_for(&format!("{base}[merge_upsert]\nsource = \"t\"\ntarget = \"u\"\nkey = [\"order_id\"]\nsequence = \"timestamp\"\nmax_file_per_batch = 3\n"), &[]);
    assert!(e.starts_with("merge_upsert.max_file_per_batch: unknown key"), "{e}");
    let e = error_for(
        &format!(
            "{base}[merge_upsert]\nsource = \"t\"\ntarget = \"u\"\nkey = [\"order_id\"]\nsequence = \"timestamp\"\njob_id = \"a:b\"\n"
        ),
        &[],
    );
    assert!(e.starts_with("merge_upsert.job_id:"), "{e}");
}

#[test]
fn store_retries_and_timeouts_reach_the_storage_options_with_defaults() {
    let c = PipelineConfig::load_with_env(&shipped(), ConfigOverrides::default(), |_| None).unwrap();
    let options = &c.lake.storage_options;
    assert_eq!(options.get("max_retries").map(String::as_str), Some("10"));
    assert_eq!(options.get("retry_timeout").map(String::as_str), Some("3m"));
    assert_eq!(options.get("backoff_config.init_backoff").map(String::as_str), Some("100ms"));
    assert_eq!(options.get("timeout").map(String::as_str), Some("30s"));
    let base = "[lake]\nroot = \"lake\"\n";
    let e = error_for(&format!("{base}storage_options = {{ timeout = \"5s\" }}\n"), &[]);
    assert!(e.starts_with("lake.storage_options.timeout: is set by [lake.store]"), "{e}");
    let e = error_for(&format!("{base}[lake.store]\nmax_retry = 3\n"), &[]);
    assert!(e.contains("max_retry"), "{e}");
    let e = error_for(&format!("{base}[lake.store]\nrequest_timeout = \"soon\"\n"), &[]);
    assert!(e.contains("'soon' is not a duration"), "{e}");
}

#[test]
fn kinesis_sources_and_their_section_are_checked() {
    let base = "[lake]\nroot = \"lake\"\n[tables.t]\npath = \"t\"\nschema = \"order.schema.toml\"\n[tables.u]\npath = \"u\"\nschema = \"order.schema.toml\"\n";
    let sources = |list: &str| format!("{base}[raw_append]\nsources = [{list}]\n");
    let e = error_for(&sources("{ topic = \"a\", stream = \"a\", table = \"t\" }"), &[]);
    assert!(e.starts_with("raw_append.sources[0]: give exactly one of topic"), "{e}");
    let e = error_for(&sources("{ topic = \"a\", table = \"t\" }, { stream = \"a\", table = \"u\" }"), &[]);
    assert!(e.starts_with("raw_append.sources[1]: 'a' is routed twice"), "{e}");
    let e = error_for(&sources("{ stream = \"a\", table = \"t\", metadata_columns = [\"offset\"] }"), &[]);
    assert!(e.starts_with("raw_append.sources[0].metadata_columns: offset: topic, partition, offset"), "{e}");
    let e = error_for(&sources("{ topic = \"a\", table = \"t\", metadata_columns = [\"shard_id\"] }"), &[]);
    assert!(e.starts_with("raw_append.sources[0].metadata_columns: shard_id: stream, shard_id"), "{e}");
    let e = error_for(&sources("{ stream = \"a\", table = \"t\" }"), &[("LAKEHOUSE_KINESIS_SHARD_INDEX", "1")]);
    assert!(e.starts_with("kinesis.shard_count: set shard_index and shard_count together"), "{e}");
    let e = error_for(&sources("{ stream = \"a\", table = \"t\" }"), &[("LAKEHOUSE_KINESIS_SHARD_COUNT", "two")]);
    assert!(e.starts_with("kinesis.shard_count: from LAKEHOUSE_KINESIS_SHARD_COUNT"), "{e}");

    let dir = std::env::temp_dir().join(format!("pcfg-kinesis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(shipped().parent().unwrap().join("order.schema.toml"), dir.join("order.schema.toml")).unwrap();
    let path = dir.join("p.toml");
    let body = sources(
        "{ topic = \"a\", table = \"t\", metadata_columns = [\"raw_message\"] }, { stream = \"b\", table = \"u\", metadata_columns = [\"sequence_number\", \"raw_message\"] }",
    );
    std::fs::write(&path, format!("{body}[kinesis]\nstarting_position = \"latest\"\n")).unwrap();
    let env = |k: &str| match k {
        "LAKEHOUSE_KINESIS_SHARD_INDEX" => Some("1".to_string()),
        "LAKEHOUSE_KINESIS_SHARD_COUNT" => Some("3".to_string()),
        _ => None,
    };
    let c = PipelineConfig::load_with_env(&path, ConfigOverrides::default(), env).unwrap();
    let ra = c.raw_append.unwrap();
    assert_eq!(
        ra.sources.iter().map(|s| (s.name.as_str(), s.kind)).collect::<Vec<_>>(),
        [("a", SourceKind::Kafka), ("b", SourceKind::Kinesis)]
    );
    assert_eq!(c.kinesis.starting_position, StartingPosition::Latest);
    assert_eq!(c.kinesis.assignment, ShardAssignment { index: 1, count: 3 });
}

#[test]
fn jobs_reading_raw_tables_may_name_the_columns_raw_append_adds() {
    let text = std::fs::read_to_string(shipped()).unwrap();
    let dir = std::env::temp_dir().join(format!("pcfg-added-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["order.schema.toml", "member.schema.toml", "curated.schema.toml", "processed.schema.toml"] {
        std::fs::copy(shipped().parent().unwrap().join(f), dir.join(f)).unwrap();
    }
    let load = |body: &str| load_in(&dir, body);
    // The orders' Kafka timestamp as the join's event time: a metadata column raw-append adds.
    let left = r#"left = { table = "raw_order", key = ["order_owner"], time = "timestamp", delay = "3h" }"#;
    let edited = text.replace(left, r#"left = { table = "raw_order", key = ["order_owner"], time = "_kafka_timestamp", delay = "3h" }"#);
    assert_ne!(edited, text, "the shipped left input changed: update this test");
    let c = load(&edited).unwrap();
    assert_eq!(c.stream_join.unwrap().left.time, "_kafka_timestamp");
    let typed = edited.replace(r#"time = "_kafka_timestamp""#, r#"time = "_kafka_offset""#);
    let e = load(&typed).unwrap_err().to_string();
    assert!(e.starts_with("stream_join.left.time: '_kafka_offset' is not a timestamp column of raw_order"), "{e}");
    let without = edited.replacen(r#"metadata_columns = ["partition", "offset", "timestamp"]"#, r#"metadata_columns = ["offset"]"#, 1);
    let e = load(&without).unwrap_err().to_string();
    assert!(e.starts_with("stream_join.left.time: '_kafka_timestamp'"), "{e}");
}

#[test]
fn routed_sources_load_a_table_per_schema_file_and_name_what_is_wrong() {
    let dir = std::env::temp_dir().join(format!("pcfg-route-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("dms")).unwrap();
    let order = shipped().parent().unwrap().join("order.schema.toml");
    for name in ["shop_orders", "hr_staff"] {
        std::fs::copy(&order, dir.join(format!("dms/{name}.schema.toml"))).unwrap();
    }
    std::fs::write(dir.join("dms/notes.txt"), "not a schema").unwrap();
    let load = |route: &str| {
        load_in(&dir, &format!("[lake]\nroot = \"s3://b/lake\"\n[raw_append]\nsources = [{{ topic = \"cdc\", format = \"dms\", route = {{ {route} }} }}]\n"))
    };
    let c = load(r#"schemas = "dms", path = "raw/{table}", default = "hr_staff""#).unwrap();
    let src = &c.raw_append.as_ref().unwrap().sources[0];
    let routing = src.routing.as_ref().unwrap();
    assert_eq!(routing.tables.keys().collect::<Vec<_>>(), ["hr_staff", "shop_orders"]);
    assert_eq!(routing.tables["shop_orders"].location, "s3://b/lake/raw/shop_orders");
    assert_eq!(routing.template, NameTemplate::parse("k", DMS_TABLE_TEMPLATE).unwrap(), "DMS sources route by schema and table name");
    assert_eq!(src.table.location, "s3://b/lake/_progress/raw-append/cdc", "the source's progress has a table of its own");
    let added = c.raw_append.unwrap().added_columns();
    assert!(added["shop_orders"].iter().any(|(c, _)| c == DMS_OPERATION_COLUMN), "jobs reading a routed table may name _dms_operation");
    for (route, error) in [
        (r#"schemas = "dms", path = "raw/x""#, "raw_append.sources[0].route.path: must contain {table}"),
        (r#"schemas = "nowhere", path = "raw/{table}""#, "raw_append.sources[0].route.schemas: cannot read the folder"),
        (
            r#"schemas = "dms", path = "raw/{table}", default = "other""#,
            "raw_append.sources[0].route.default: no schema file other.schema.toml",
        ),
        (
            r#"schemas = "dms", path = "raw/{table}", rename = { a = "b" }"#,
            "raw_append.sources[0].route.rename.a: no schema file b.schema.toml",
        ),
        (r#"schemas = "dms", path = "raw/{table}", table = "fixed""#, "raw_append.sources[0].route.table: 'fixed' names no field"),
        (
            r#"schemas = "dms", path = "raw/{table}", partitions = [{ column = "nope" }]"#,
            "raw_append.sources[0].route[hr_staff].partitions[0].column: 'nope' is not a schema column",
        ),
        (
            r#"path = "raw/{table}""#,
            "raw_append.sources[0].route.schemas: name the folder of <table>.schema.toml files, or set infer = true",
        ),
        (
            r#"infer = true, path = "raw/{table}""#,
            "raw_append.sources[0].route.infer: inferred tables get their columns from schema evolution",
        ),
    ] {
        let e = load(route).unwrap_err().to_string();
        assert!(e.contains(error), "{route}: {e}");
    }
}

#[test]
fn inferred_routed_tables_need_no_schema_file_and_only_ingestion_time_partitions() {
    let dir = std::env::temp_dir().join(format!("pcfg-infer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |route: &str| {
        load_in(
            &dir,
            &format!(
                "[lake]\nroot = \"s3://b/lake\"\n[raw_append]\nsources = [{{ topic = \"cdc\", format = \"dms\", unknown_fields = \"add_columns\", flatten = {{ separator = \"__\" }}, route = {{ {route} }} }}]\n"
            ),
        )
    };
    let c = load(r#"infer = true, path = "raw/{table}", default = "rest", partitions = [{ column = "day", source = "ingestion_time", format = "%d" }]"#)
        .unwrap();
    let src = &c.raw_append.as_ref().unwrap().sources[0];
    assert_eq!(src.flatten.separator, "__");
    assert_eq!(src.flatten.max_depth, 3);
    let inferred = src.routing.as_ref().unwrap().inferred.as_ref().expect("infer = true");
    let table = inferred.table("shop_orders");
    assert_eq!(table.location, "s3://b/lake/raw/shop_orders");
    assert!(table.schema.columns.is_empty());
    assert_eq!(table.partition_columns(), ["day"]);
    let e = load(r#"infer = true, path = "raw/{table}", partitions = [{ column = "owner" }]"#).unwrap_err().to_string();
    assert!(e.contains("route.partitions[0]: with infer = true partitions come from ingestion time"), "{e}");
    let e = load_in(
        &dir,
        "[lake]\nroot = \"l\"\n[raw_append]\nsources = [{ topic = \"t\", format = \"dms\", unknown_fields = \"add_columns\", flatten = { separator = \".\" }, route = { infer = true, path = \"r/{table}\" } }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("raw_append.sources[0].flatten.separator: '.'"), "{e}");
}

#[test]
fn a_table_with_an_inferred_schema_is_written_by_raw_append_only() {
    let dir = std::env::temp_dir().join(format!("pcfg-infer-table-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let load = |tables: &str, rest: &str| load_in(&dir, &format!("[lake]\nroot = \"l\"\n{tables}\n{rest}"));
    let events = "[tables.events]\npath = \"raw/events\"\nschema = \"infer\"\n";
    let source = "[raw_append]\nsources = [{ topic = \"t\", table = \"events\", unknown_fields = \"add_columns\" }]\n";
    let c = load(events, source).unwrap();
    let src = &c.raw_append.as_ref().unwrap().sources[0];
    let inferred = src.routing.as_ref().and_then(|r| r.inferred.as_ref()).expect("routed to its one inferred table");
    assert_eq!(inferred.table("events").location, "l/raw/events");
    assert_eq!(src.table.location, "l/_progress/raw-append/t", "progress kept apart");
    let e = load(events, &source.replace(", unknown_fields = \"add_columns\"", "")).unwrap_err().to_string();
    assert!(e.contains("raw_append.sources[0].table: inferred tables get their columns from schema evolution"), "{e}");
    let e = load(events, &source.replace("\"add_columns\"", "\"rescue\", rescue_refused = true")).unwrap_err().to_string();
    assert!(e.contains("raw_append.sources[0].rescue_refused: keeps the fields schema evolution cannot add"), "{e}");
    let e = load(&format!("{events}partitions = [{{ column = \"kind\" }}]\n"), source).unwrap_err().to_string();
    assert!(e.contains("tables.events.partitions[0]: with schema = \"infer\" partitions come from ingestion time"), "{e}");
    let merge = "[tables.p]\npath = \"p\"\nschema = \"infer\"\n[merge_upsert]\nsource = \"events\"\ntarget = \"p\"\nkey = [\"id\"]\nsequence = \"ts\"\n";
    let e = load(&format!("{events}{merge}"), "").unwrap_err().to_string();
    assert!(e.contains("merge_upsert.source: table 'events' has schema = \"infer\""), "{e}");
}

#[test]
fn nested_columns_are_declared_by_type_and_never_partition_a_table() {
    let dir = std::env::temp_dir().join(format!("pcfg-nested-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema =
        "[[columns]]\nname = \"id\"\ntype = \"long\"\n\n[[columns]]\nname = \"address\"\ntype = \"struct<city:string,zip:string>\"\n";
    std::fs::write(dir.join("nested.schema.toml"), schema).unwrap();
    std::fs::write(dir.join("bad.schema.toml"), "[[columns]]\nname = \"tags\"\ntype = \"array<json>\"\n").unwrap();
    let load = |schema: &str, partitions: &str, flatten: &str| {
        load_in(
            &dir,
            &format!(
                "[lake]\nroot = \"l\"\n[tables.t]\npath = \"raw/t\"\nschema = \"{schema}\"\npartitions = [{partitions}]\n[raw_append]\nsources = [{{ topic = \"t\", table = \"t\", unknown_fields = \"add_columns\"{flatten} }}]\n"
            ),
        )
    };
    let c = load("nested.schema.toml", "", ", flatten = { nested = \"typed\" }").unwrap();
    let src = &c.raw_append.as_ref().unwrap().sources[0];
    assert_eq!(src.flatten.nested, NestedAs::Typed);
    assert_eq!(src.table.schema.columns[1].kind().type_name(), "struct<city:string,zip:string>");
    let e = load("nested.schema.toml", "{ column = \"address\" }", "").unwrap_err().to_string();
    assert!(e.contains("tables.t.partitions[0].column") && e.contains("array or struct column"), "{e}");
    let e = load("bad.schema.toml", "", "").unwrap_err().to_string();
    assert!(e.contains("columns[0].type") && e.contains("json cannot sit inside array or struct"), "{e}");
    let e = load("nested.schema.toml", "", ", flatten = { nested = \"deep\" }").unwrap_err().to_string();
    assert!(e.contains("unknown variant `deep`"), "{e}");
}
