//! `lakectl infer-schema` against real sources: on the reference topics it proposes the
//! hand-written schemas' columns and types (its `required` is at least as strict: the reference
//! producer always sends every field), and on a Kinesis stream of nested change records it
//! flattens them into columns raw-append then fills, field by field.

use std::collections::HashMap;

use e2e_tests::*;
use pipeline_config::TableSchema;

fn shipped_schema(name: &str) -> TableSchema {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
    TableSchema::load(&std::path::Path::new(&crate_dir).join("../schemas").join(name), "schema").expect("shipped schema")
}

fn columns(schema: &TableSchema) -> Vec<(String, String)> {
    schema.columns.iter().map(|c| (c.name.clone(), c.type_name.clone())).collect()
}

#[test]
fn the_reference_topics_give_the_hand_written_schemas_back() {
    let services = Services::get();
    let (orders, members) = (unique("infer-orders"), unique("infer-members"));
    create_topics(&services, &[&orders, &members], 2);
    produce_orders(&services, &orders, 91, 300, 0, 0.0);
    let mut gen = reference_data::MembershipGenerator::reference(91);
    let options = reference_data::ProduceOptions { count: 100, rate: 0, bad_fraction: 0.0 };
    reference_data::produce(&services.brokers, &members, &options, || gen.next_message()).expect("members");
    let dir = tempfile::tempdir().unwrap();
    for (topic, shipped) in [(&orders, "order.schema.toml"), (&members, "member.schema.toml")] {
        let out = dir.path().join(shipped);
        let r = run(
            "lakectl",
            &["--brokers", &services.brokers, "infer-schema", "--topic", topic, "--messages", "250", "--out", out.to_str().unwrap()],
            &[],
        );
        assert_eq!(r.code, Some(0), "{}", r.stderr);
        let text = std::fs::read_to_string(&out).unwrap();
        let sampled = if shipped.starts_with("order") { 250 } else { 100 };
        assert!(text.starts_with(&format!("# Inferred by `lakectl infer-schema` from {sampled} messages of topic {topic}")), "{text}");
        let inferred = TableSchema::load(&out, "schema").expect("the proposal is a valid schema file");
        let hand = shipped_schema(shipped);
        assert_eq!(columns(&inferred), columns(&hand), "{shipped}: names, order and types");
        for (i, h) in inferred.columns.iter().zip(&hand.columns) {
            assert!(i.required || !h.required, "{shipped}: {} is required by hand, so in every sample", h.name);
        }
    }
}

#[test]
fn nested_change_records_on_a_stream_flatten_into_columns_raw_append_fills() {
    let services = Services::get();
    let stream = unique("infer-changes");
    let client = kinesis_client(&services);
    block_on(create_stream(&client, &stream, 1));
    let records: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let json = format!(
                r#"{{"data": {{"id": {i}, "name": "n{i}", "price": {}.5, "tags": ["a", "b"]}}, "metadata": {{"operation": "{}", "timestamp": "2026-11-30T10:00:{:02}Z", "source": {{"db": "shop"}}}}}}"#,
                i * 2,
                if i % 3 == 0 { "insert" } else { "update" },
                i
            );
            (format!("k{i}"), json.into_bytes())
        })
        .collect();
    block_on(put(&client, &stream, &records));

    let pipeline = Pipeline::local(&services, "");
    let schema = pipeline.dir.path().join("change.schema.toml");
    let r =
        run("lakectl", &["infer-schema", "--stream", &stream, "--max-depth", "2", "--out", schema.to_str().unwrap()], &services.s3_env());
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = std::fs::read_to_string(&schema).unwrap();
    assert!(text.contains("# an array or an object deeper than --max-depth 2: its JSON text as sent"), "{text}");
    let inferred = TableSchema::load(&schema, "schema").expect("valid");
    let expected = [
        ("data_id", "long"),
        ("data_name", "string"),
        ("data_price", "double"),
        ("data_tags", "json"),
        ("metadata_operation", "string"),
        ("metadata_timestamp", "timestamp"),
        ("metadata_source", "json"),
    ];
    assert_eq!(columns(&inferred), expected.map(|(n, t)| (n.to_string(), t.to_string())));
    // With --nested typed the same fields become array and struct columns.
    let typed = pipeline.dir.path().join("typed.schema.toml");
    let args = ["infer-schema", "--stream", &stream, "--max-depth", "2", "--nested", "typed", "--out", typed.to_str().unwrap()];
    assert_eq!(run("lakectl", &args, &services.s3_env()).code, Some(0));
    let typed = columns(&TableSchema::load(&typed, "schema").expect("valid"));
    assert_eq!(typed[3], ("data_tags".to_string(), "array<string>".to_string()));
    assert_eq!(typed[6], ("metadata_source".to_string(), "struct<db:string>".to_string()));

    pipeline.edit(
        "[kafka]",
        &format!(
            "[tables.changes]\npath = \"raw/changes\"\nschema = \"change.schema.toml\"\n\n[raw_append]\nsources = [{{ stream = \"{stream}\", table = \"changes\" }}]\n\n[kafka]"
        ),
    );
    run_succeeds("raw-append", pipeline.config.to_str().unwrap(), &services.s3_env());
    let table = pipeline.table("raw/changes");
    let rows = query(
        &[("c", table.as_str())],
        &HashMap::new(),
        "SELECT CAST(data_id AS VARCHAR), data_name, CAST(data_price AS VARCHAR), metadata_operation, metadata_timestamp, data_tags, \
         metadata_source FROM c",
    );
    let mut rows = rows;
    rows.sort_by_key(|r| r[0].parse::<i64>().unwrap_or(-1));
    let hand: Vec<Vec<String>> = (0..40)
        .map(|i| {
            vec![
                i.to_string(),
                format!("n{i}"),
                format!("{}.5", i * 2),
                (if i % 3 == 0 { "insert" } else { "update" }).to_string(),
                format!("2026-11-30T10:00:{i:02}Z"),
                r#"["a", "b"]"#.to_string(),
                r#"{"db": "shop"}"#.to_string(),
            ]
        })
        .collect();
    assert_eq!(rows, hand, "the nested values, flattened, field by field; arrays and deeper objects as sent");
}
