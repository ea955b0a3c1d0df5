//! raw-append with Delta `array` and `struct` columns: declared in a schema file, or added by
//! schema evolution with `flatten.nested = "typed"`, end to end against a real tansu broker
//! (kills included); values exact, a bad nested value a dead letter, fields a nested type does
//! not name rescued rather than lost.

use e2e_tests::*;

const ORDER_SCHEMA: &str = r#"
[[columns]]
name = "id"
type = "long"
required = true

[[columns]]
name = "items"
type = "array<struct<sku:string,qty:integer,price:decimal(10,2)>>"

[[columns]]
name = "address"
type = "struct<city:string,geo:struct<lat:double,lon:double>>"

[[columns]]
name = "tags"
type = "array<long>"
"#;

/// Order `i` as sent: every 10th carries fields its types do not name, every 50th (from 25)
/// a fractional quantity, every 50th (from 45) tags that are not an array.
fn order(i: i64) -> String {
    let extra_item = if i % 10 == 3 { r#", "color": "red""# } else { "" };
    let extra_address = if i % 10 == 3 { r#", "country": "NO""# } else { "" };
    let qty = if i % 50 == 25 { "2.5".to_string() } else { (i % 4).to_string() };
    let tags = if i % 50 == 45 { r#""t1""#.to_string() } else { format!("[{i}, 9223372036854775807]") };
    format!(
        r#"{{"id": {i}, "items": [{{"sku": "s{i}", "qty": 1, "price": 0.10}}, {{"sku": "x", "qty": {qty}, "price": {i}.25{extra_item}}}],
           "address": {{"city": "c{}", "geo": {{"lat": 59.9, "lon": 10.75}}{extra_address}}}, "tags": {tags}}}"#,
        i % 3
    )
}

/// Order `i`'s row as the query renders it, or None when it is a dead letter.
fn order_row(i: i64) -> Option<Vec<String>> {
    if i % 50 == 25 || i % 50 == 45 {
        return None;
    }
    let rescued = match i % 10 {
        3 => r#"{"items":[null,{"color":"red"}],"address":{"country":"NO"}}"#.to_string(),
        _ => "NULL".into(),
    };
    Some(vec![
        i.to_string(),
        format!("[{{sku: s{i}, qty: 1, price: 0.10}}, {{sku: x, qty: {}, price: {i}.25}}]", i % 4),
        format!("{{city: c{}, geo: {{lat: 59.9, lon: 10.75}}}}", i % 3),
        format!("[{i}, 9223372036854775807]"),
        rescued,
    ])
}

#[test]
fn declared_array_and_struct_columns_hold_exact_values_under_kills_and_bad_ones_are_dead_letters() {
    let services = Services::get();
    let topic = new_topic(&services, "nested", 3);
    produce_unkeyed(&services, &topic, &(0..3_000).map(order).collect::<Vec<_>>());
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"[tables.orders]
path = "raw/orders"
schema = "order_nested.schema.toml"

[raw_append]
max_batch_rows = 500
sources = [{{ topic = "{topic}", table = "orders", unknown_fields = "rescue" }}]
"#
        ),
    );
    pipeline.write_file("order_nested.schema.toml", ORDER_SCHEMA);
    let config = pipeline.config.to_str().unwrap().to_string();
    let plan = [Kill::At("raw_append::after_upload", "return"), Kill::At("raw_append::after_commit", "2*off->return")];
    kill_then_drain("raw-append", &config, &[], &plan, 2);

    let rows = pipeline.query("raw/orders", "SELECT CAST(id AS VARCHAR) AS i, items, address, tags, _rescued_data FROM t ORDER BY id");
    let expected: Vec<Vec<String>> = (0..3_000).filter_map(order_row).collect();
    assert_eq!(rows.len(), expected.len(), "every good order once");
    for (got, want) in rows.iter().zip(&expected) {
        assert_eq!(got, want);
    }
    let mut dead = pipeline.query("raw/dead_letter", "SELECT error FROM t");
    dead.sort();
    dead.dedup();
    assert_eq!(
        dead,
        vec![
            vec!["field 'items[].qty': 2.5 is not an integer (column type integer)".to_string()],
            vec!["invalid value: whilst decoding field 'tags': expected [ got \"t1\"".to_string()],
        ],
        "one reason per kind of bad value, naming the field"
    );
    let counted = pipeline.query("raw/dead_letter", "SELECT COUNT(*) FROM t");
    assert_eq!(counted, vec![vec!["120".to_string()]], "60 fractional quantities and 60 bad tags, each once");
}

const ITEM_SCHEMA: &str = "[[columns]]\nname = \"id\"\ntype = \"long\"\nrequired = true\n";

#[test]
fn typed_evolution_adds_array_and_struct_columns_and_rescues_what_their_types_do_not_name() {
    let services = Services::get();
    let topic = new_topic(&services, "nested-evolve", 2);
    let first: Vec<String> = (0..500)
        .map(|i| format!(r#"{{"id": {i}, "lines": [{{"sku": "a{i}", "n": {i}}}], "ship": {{"to": {{"city": "c{i}"}}}}}}"#))
        .collect();
    produce_unkeyed(&services, &topic, &first);
    let pipeline = Pipeline::local(
        &services,
        &format!(
            r#"[tables.items]
path = "raw/items"
schema = "item.schema.toml"

[raw_append]
sources = [{{ topic = "{topic}", table = "items", unknown_fields = "add_columns", rescue_refused = true, flatten = {{ max_depth = 1, nested = "typed" }} }}]
"#
        ),
    );
    pipeline.write_file("item.schema.toml", ITEM_SCHEMA);
    let config = pipeline.config.to_str().unwrap().to_string();
    kill_then_drain("raw-append", &config, &[], &[Kill::At("raw_append::after_schema_commit", "return")], 1);
    // Later messages hold a field inside the struct that its type does not name.
    let second: Vec<String> =
        (500..600).map(|i| format!(r#"{{"id": {i}, "lines": [], "ship": {{"to": {{"city": "c{i}", "zip": "z{i}"}}}}}}"#)).collect();
    produce_unkeyed(&services, &topic, &second);
    drain("raw-append", &config, &[]);

    let types = pipeline.query("raw/items", "SELECT arrow_typeof(lines), arrow_typeof(ship) FROM t LIMIT 1");
    assert!(types[0][0].starts_with("List(") && types[0][0].contains("sku") && types[0][0].contains("Int64"), "{types:?}");
    assert!(types[0][1].starts_with("Struct(") && types[0][1].contains("city"), "{types:?}");
    let rows = pipeline.query("raw/items", "SELECT CAST(id AS VARCHAR) AS i, lines, ship, _rescued_data FROM t ORDER BY id");
    assert_eq!(rows.len(), 600);
    assert_eq!(rows[7], ["7", "[{sku: a7, n: 7}]", "{to: {city: c7}}", "NULL"]);
    assert_eq!(rows[507], ["507", "[]", "{to: {city: c507}}", r#"{"ship":{"to":{"zip":"z507"}}}"#]);
    let dead = pipeline.query("raw/dead_letter", "SELECT error FROM t");
    assert!(dead.is_empty(), "{dead:?}");
}
