//! Unit tests of the message decoder.
use super::*;
use arrow::array::{AsArray, Int64Array, TimestampMicrosecondArray};
use pipeline_config::{ColumnSpec, TimestampSpec};
use run::TRUNCATED;

/// A column read from `json` (its own name when None).
fn column(name: &str, json: Option<&str>, ty: &str, required: bool) -> ColumnSpec {
    ColumnSpec {
        name: name.into(),
        json_name: json.map(str::to_string),
        type_name: ty.into(),
        required,
        timestamp: Default::default(),
        column_type: ColumnType::parse(ty),
    }
}

fn order_schema() -> TableSchema {
    let col = |name: &str, ty: &str, required: bool| column(name, None, ty, required);
    TableSchema {
        columns: vec![
            col("order_id", "long", true),
            col("order_owner", "string", false),
            col("order_value", "long", false),
            col("timestamp", "timestamp", true),
        ],
    }
}

#[test]
fn json_columns_keep_arrays_and_nested_documents_as_sent() {
    let col = |name: &str, json: &str, ty: &str, required: bool| column(name, Some(json), ty, required);
    let schema = TableSchema {
        columns: vec![
            col("order_id", "order_id", "long", true),
            col("items", "items", "json", true),
            col("tags", "meta.tags", "json", false),
            col("source", "meta.source", "string", false),
        ],
    };
    let d = MessageDecoder::new(&schema, 1 << 20);
    let msgs: Vec<&[u8]> = vec![
        br#"{"order_id": 1, "items": [{"sku": "a", "qty": 2}, {"sku": "b", "price": 1.50}], "meta": {"tags": {"x": [1, 2]}, "source": "web"}}"#,
        br#"{"order_id": 2, "items": [], "meta": {"source": "app"}}"#,
        br#"{"order_id": 3, "meta": {"tags": "plain"}}"#,
        br#"{"order_id": 4, "items": 12345678901234567890123}"#,
    ];
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rows, vec![0, 1, 3]);
    assert_eq!(out.rejects.len(), 1);
    assert!(out.rejects[0].reason.contains("required field 'items'"), "{:?}", out.rejects);
    let text = |c: usize| -> Vec<Option<String>> {
        let a = out.batch.column(c).as_any().downcast_ref::<StringArray>().unwrap();
        a.iter().map(|v| v.map(str::to_string)).collect()
    };
    assert_eq!(
        text(1),
        vec![
            Some(r#"[{"sku": "a", "qty": 2}, {"sku": "b", "price": 1.50}]"#.to_string()),
            Some("[]".to_string()),
            Some("12345678901234567890123".to_string()),
        ],
        "byte for byte: spacing, 1.50 and a number beyond any integer type stay as sent"
    );
    assert_eq!(text(2), vec![Some(r#"{"x": [1, 2]}"#.to_string()), None, None]);
    assert_eq!(text(3), vec![Some("web".to_string()), Some("app".to_string()), None]);
    assert_eq!(out.batch.schema().field(1).data_type(), &DataType::Utf8);
}

#[test]
fn a_json_field_that_is_not_utf8_rejects_its_message_unaltered() {
    let schema = TableSchema { columns: vec![column("order_id", None, "long", true), column("items", None, "json", false)] };
    let d = MessageDecoder::new(&schema, 1 << 20);
    let msgs: Vec<&[u8]> = vec![b"{\"order_id\": 1, \"items\": [\"\xff\"]}", br#"{"order_id": 2, "items": ["ok"]}"#];
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rows, vec![1]);
    assert_eq!(out.rejects.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0]);
}

#[test]
fn dotted_json_names_read_nested_fields_like_aws_dms_records() {
    let col = |name: &str, json: &str, ty: &str, required: bool| column(name, Some(json), ty, required);
    let schema = TableSchema {
        columns: vec![
            col("order_id", "data.order_id", "long", true),
            col("order_value", "data.order_value", "long", false),
            col("op", "metadata.operation", "string", false),
            col("seq", "metadata.timestamp", "timestamp", true),
        ],
    };
    let d = MessageDecoder::new(&schema, 1 << 20);
    let msgs: Vec<&[u8]> = vec![
        br#"{"data": {"order_id": 1, "order_value": 5}, "metadata": {"operation": "load", "timestamp": "2022-04-04T12:00:00.5Z", "table-name": "orders"}}"#,
        br#"{"data": {"order_id": 1}, "metadata": {"operation": "delete", "timestamp": "2022-04-04 12:00:01"}}"#,
        br#"{"data": null, "metadata": {"operation": "insert", "timestamp": "2022-04-04 12:00:02"}}"#,
        br#"{"data": {"order_id": 2, "order_value": 7}}"#,
    ];
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rows, vec![0, 1]);
    let reasons: Vec<&str> = out.rejects.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons, ["required field 'data.order_id' is missing or null", "required field 'metadata.timestamp' is missing or null"]);
    let b = &out.batch;
    assert_eq!(b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values(), &[1, 1]);
    assert!(b.column(1).is_valid(0) && b.column(1).is_null(1));
    let ops = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!((ops.value(0), ops.value(1)), ("load", "delete"));
    let seq = b.column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
    assert_eq!(seq.value(1) - seq.value(0), 500_000);
}

#[test]
fn good_and_bad_messages_are_separated() {
    let d = MessageDecoder::new(&order_schema(), 200);
    let big = format!("{{\"order_id\": 1, \"pad\": \"{}\"}}", "x".repeat(300));
    let msgs: Vec<&[u8]> = vec![
        br#"{"order_id": 1, "order_owner": "alice", "order_value": 870, "timestamp": "2022-04-04 12:00:01"}"#,
        br#"{"order_id": 2, "order_owner": "bob""#,
        br#"{"order_id": "abc", "timestamp": "2022-04-04 12:00:01"}"#,
        br#"{"order_owner": "carol", "timestamp": "2022-04-04 12:00:01"}"#,
        br#"{"order_id": 5, "timestamp": "not a time"}"#,
        big.as_bytes(),
        br#"{"order_id": 7, "timestamp": "2022-04-04T12:00:02Z"}{"order_id": 8}"#,
        b"   ",
        br#"[1, 2]"#,
        br#"{"order_id": 10, "order_owner": null, "timestamp": "2022-04-04T12:00:03Z", "extra": {"nested": [1]}}"#,
    ];
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rows, vec![0, 9]);
    let rejected: Vec<usize> = out.rejects.iter().map(|r| r.index).collect();
    assert_eq!(rejected, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(out.rejects[2].reason.contains("required field 'order_id'"), "{:?}", out.rejects[2]);
    assert!(out.rejects[3].reason.contains("timestamp"), "{:?}", out.rejects[3]);
    assert!(out.rejects[4].reason.contains("max_message_bytes"));
    let ids = out.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(ids.values(), &[1, 10]);
    let ts = out.batch.column(3).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
    assert_eq!(ts.value(0), 1_649_073_601_000_000);
    assert_eq!(out.batch.schema().field(3).data_type(), &ColumnType::Timestamp.arrow_type());
}

#[test]
fn a_run_fed_part_of_the_input_keeps_the_inputs_indexes_across_flushes() {
    // Two tables' runs over one chunk (every other message each), as routing feeds them:
    // rows, rejects and the JSON text all refer to the chunk's own indexes.
    let col = |name: &str, ty: &str, required: bool| column(name, None, ty, required);
    let schema = TableSchema { columns: vec![col("order_id", "long", true), col("meta", "json", false)] };
    let d = MessageDecoder::new(&schema, 1 << 20);
    let owned: Vec<String> = (0..10_000)
        .map(|i| match i % 7 {
            0 => format!(r#"{{"order_id": {i}, "meta": "#),
            1 => format!(r#"{{"order_id": {i}.5}}"#),
            _ => format!(r#"{{"order_id": {i}, "meta": [{i}]}}"#),
        })
        .collect();
    let msgs: Vec<&[u8]> = owned.iter().map(|s| s.as_bytes()).collect();
    let (mut even, mut odd) = (d.run().unwrap(), d.run().unwrap());
    for (i, msg) in msgs.iter().enumerate() {
        let run = if i % 2 == 0 { &mut even } else { &mut odd };
        run.push(i as u32, msg).unwrap();
    }
    for (out, parity) in [(even.finish(&msgs).unwrap(), 0), (odd.finish(&msgs).unwrap(), 1)] {
        let expected: Vec<u32> = (0..10_000).filter(|i| i % 2 == parity && i % 7 > 1).collect();
        assert_eq!(out.rows, expected);
        let rejected: Vec<usize> = out.rejects.iter().map(|r| r.index).collect();
        assert_eq!(rejected, (0..10_000).filter(|i| i % 2 == parity as usize && i % 7 <= 1).collect::<Vec<_>>());
        let ids = out.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let texts = out.batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        for (row, &i) in out.rows.iter().enumerate() {
            assert_eq!((ids.value(row), texts.value(row)), (i as i64, format!("[{i}]").as_str()));
        }
    }
}

#[test]
fn a_truncated_message_does_not_swallow_the_next() {
    let d = MessageDecoder::new(&order_schema(), 1 << 20);
    let msgs: Vec<&[u8]> = vec![br#"{"order_id": 1, "timestamp": "#, br#""2022-04-04 12:00:01"}"#];
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.batch.num_rows(), 0);
    assert_eq!(out.rejects.len(), 2);
}

#[test]
fn truncated_messages_among_good_ones_are_rejected_alike_and_spare_their_neighbours() {
    let d = MessageDecoder::new(&order_schema(), 1 << 20);
    let owned: Vec<String> = (0..9_000)
        .map(|i| match i % 3 {
            0 => format!(r#"{{"order_id": {i}, "order_owner": "a\"}}{{", "#),
            1 => format!(r#"{{"order_id": {i}, "tags": [{{"x": "]"}}], "timestamp": "2022-04-04 12:00:01"}}"#),
            _ => format!(r#"{{"order_id": {i}, "order_owner": "o\"]", "timestamp": "2022-04-04 12:00:01"}}"#),
        })
        .collect();
    let msgs: Vec<&[u8]> = owned.iter().map(|s| s.as_bytes()).collect();
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rejects.len(), 3_000);
    assert!(out.rejects.iter().all(|r| r.index % 3 == 0 && r.reason == TRUNCATED), "{:?}", out.rejects.first());
    let ids = out.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(ids.len(), 6_000);
    assert!(ids.values().iter().zip(&out.rows).all(|(id, row)| *id == *row as i64 && row % 3 != 0));
    let owners = out.batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(owners.value(1), "o\"]", "escaped quotes and brackets inside strings are text");
}

#[test]
fn many_chunks_keep_order() {
    let d = MessageDecoder::new(&order_schema(), 1 << 20);
    let owned: Vec<String> = (0..10_000)
        .map(|i| if i % 997 == 0 { "{bad".to_string() } else { format!(r#"{{"order_id": {i}, "timestamp": "2022-04-04 12:00:01"}}"#) })
        .collect();
    let msgs: Vec<&[u8]> = owned.iter().map(|s| s.as_bytes()).collect();
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rejects.len(), 11);
    assert_eq!(out.batch.num_rows() + out.rejects.len(), 10_000);
    let ids = out.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert!(ids.values().iter().zip(&out.rows).all(|(id, row)| *id == *row as i64));
}

#[test]
fn a_schema_without_columns_still_counts_one_row_per_object() {
    let decoder = MessageDecoder::new(&TableSchema { columns: vec![] }, 1 << 20);
    let messages: Vec<&[u8]> = vec![br#"{"a": 1}"#, br#"{}"#, b"not json", br#"{"b": {"c": [1]}}"#];
    let decoded = decoder.decode(&messages).expect("decoded");
    assert_eq!(decoded.batch.num_rows(), 3);
    assert_eq!(decoded.batch.num_columns(), 0);
    assert_eq!(decoded.rows, vec![0, 1, 3]);
    assert_eq!(decoded.rejects.iter().map(|r| r.index).collect::<Vec<_>>(), vec![2]);
}

#[test]
fn array_and_struct_columns_hold_exact_values_and_a_bad_one_rejects_its_message() {
    let col = |name: &str, ty: &str| column(name, None, ty, false);
    let schema = TableSchema {
        columns: vec![
            col("order_id", "long"),
            col("items", "array<struct<sku:string,qty:integer,price:decimal(20,2)>>"),
            col("address", "struct<city:string,seen:timestamp>"),
            col("tags", "array<long>"),
        ],
    };
    let d = MessageDecoder::new(&schema, 1 << 20);
    let msgs: Vec<&[u8]> = vec![
        br#"{"order_id": 1, "items": [{"sku": "a", "qty": 2, "price": 1.50}, {"sku": "b", "qty": 1, "price": 9007199254740993.25}], "address": {"city": "Oslo", "seen": "2026-01-02 03:04:05"}, "tags": [9223372036854775807]}"#,
        br#"{"order_id": 2, "items": [{"sku": "c", "qty": 2.5}]}"#,
        br#"{"order_id": 3, "address": {"city": "Bergen", "seen": "yesterday"}}"#,
        br#"{"order_id": 4, "tags": "not an array"}"#,
        br#"{"order_id": 5, "items": [], "address": null, "tags": [1, null, 3]}"#,
    ];
    let out = d.decode(&msgs).unwrap();
    assert_eq!(out.rows, vec![0, 4]);
    let reasons: Vec<(usize, &str)> = out.rejects.iter().map(|r| (r.index, r.reason.as_str())).collect();
    assert_eq!(reasons[0], (1, "field 'items[].qty': 2.5 is not an integer (column type integer)"));
    assert!(reasons[1].0 == 2 && reasons[1].1.contains("field 'address.seen': cannot read \"yesterday\" as a timestamp"), "{reasons:?}");
    assert!(reasons[2].0 == 3 && reasons[2].1.starts_with("invalid value"), "{reasons:?}");
    assert_eq!(out.batch.schema().as_ref(), schema.arrow_schema().as_ref());
    let items = out.batch.column(1).as_list::<i32>();
    let first = items.value(0);
    let prices = first.as_struct().column(2).as_primitive::<arrow::datatypes::Decimal128Type>();
    assert_eq!(prices.values().to_vec(), vec![150, 900719925474099325], "decimals exact beyond 2^53");
    assert_eq!(items.value(1).len(), 0);
    let tags = out.batch.column(3).as_list::<i32>();
    assert_eq!(tags.value(0).as_primitive::<arrow::datatypes::Int64Type>().value(0), i64::MAX);
    assert_eq!(tags.value(1).null_count(), 1);
    assert!(out.batch.column(2).is_null(1));
    let address = out.batch.column(2).as_struct();
    let seen = address.column(1).as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    assert_eq!(seen.value(0), 1_767_323_045_000_000);
}

/// Every column kind the flat path takes, one required.
fn flat_schema() -> TableSchema {
    let col = |name: &str, ty: &str, required: bool| column(name, None, ty, required);
    TableSchema {
        columns: vec![
            col("order_id", "long", true),
            col("order_owner", "string", false),
            col("timestamp", "timestamp", false),
            col("flag", "boolean", false),
            col("small", "short", false),
            col("mid", "integer", false),
            ColumnSpec {
                timestamp: TimestampSpec { format: Some("%Y%m%d%H%M%S".into()), ..Default::default() },
                ..col("day", "timestamp", false)
            },
        ],
    }
}

/// Keys of [`hostile_messages`]: the flat schema's, an unknown one, an escaped one.
const HOSTILE_KEYS: &[&str] = &["order_id", "order_owner", "timestamp", "flag", "small", "mid", "day", "extra", "order\\u005fid"];

/// Values of [`hostile_messages`].
const HOSTILE_VALUES: &[&[u8]] = &[
    b"0",
    b"-0",
    b"42",
    b"-7",
    b"9223372036854775807",
    b"9223372036854775808",
    b"-9223372036854775808",
    b"-9223372036854775809",
    b"32767",
    b"32768",
    b"-32769",
    b"2147483648",
    b"1e3",
    b"870.0",
    b"870.9",
    b"1.5e2",
    b"1e400",
    b"\"alice\"",
    b"\"caf\\u00e9\"",
    b"\"tab\\there\"",
    b"\"\"",
    b"\"12\"",
    b"\"true\"",
    b"\"2022-04-04 11:30:00\"",
    b"\"2022-04-04T11:30:00.123456Z\"",
    b"\"2022-04-04 11:30:00+02:00\"",
    b"\"04/04/2022\"",
    b"\"\\ud83d\\ude00\"",
    b"\"\\ud800\"",
    b"\"a\nb\"",
    b"\"bad \xff byte\"",
    b"\"caf\xc3\xa9\"",
    b"\"r\xc3\xa9sum\xc3\xa9 na\xc3\xafve, longer than a word\"",
    b"\"cut \xe2\x82\"",
    b"\"\xc3\xa9\\n\"",
    b"\xc3\xa9",
    b"true",
    b"false",
    b"null",
    b"20220404113000",
    b"\"20220404113000\"",
    b"-12",
    b"{\"a\": 1}",
    b"[1, 2]",
    b"[]",
    b"{}",
    b"\"unterminated",
    b"01",
    b"-01",
    b"+1",
    b"1.",
    b"-",
    b"truex",
    b"nul",
    b"\"say \\\"hi\\\"\"",
    b"\"a string longer than a word\"",
    b"\"x\x7f\"",
];

/// Random messages over the flat schema's keys and an unknown one, with values of every JSON
/// type and the edge cases of each (escapes, control characters, lone surrogates, invalid
/// UTF-8, numbers at and past each width, notations that are integers, duplicate keys, nested
/// values, truncation, trailing text), from a fixed seed.
fn hostile_messages(count: usize) -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    (0..count)
        .map(|_| {
            let mut msg = b"{".to_vec();
            for field in 0..next(6) + 1 {
                if field > 0 {
                    msg.extend_from_slice(if next(2) == 0 { b", " } else { b"," });
                }
                // Mostly the required key first, so many messages are whole and clean.
                let key = if field == 0 && next(4) > 0 { "order_id" } else { HOSTILE_KEYS[next(HOSTILE_KEYS.len())] };
                msg.extend_from_slice(format!("\"{key}\"").as_bytes());
                msg.extend_from_slice(match next(24) {
                    0 => b"\x0c:".as_slice(),
                    1..=7 => b" : ",
                    _ => b":",
                });
                let value = match key {
                    "order_id" if next(3) > 0 => b"17".as_slice(),
                    "timestamp" if next(2) > 0 => b"\"2022-04-04 11:30:00\"".as_slice(),
                    _ => HOSTILE_VALUES[next(HOSTILE_VALUES.len())],
                };
                msg.extend_from_slice(value);
            }
            msg.extend_from_slice(b"}");
            match next(12) {
                0 => msg.truncate(next(msg.len()) + 1),
                1 => msg.extend_from_slice(b" {}"),
                2 => msg.extend_from_slice(b" \n"),
                _ => {}
            }
            msg
        })
        .collect()
}

#[test]
fn the_flat_path_takes_rows_exactly_as_the_general_path_would() {
    let schema = flat_schema();
    let flat = MessageDecoder::new(&schema, 1 << 20);
    let mut general = MessageDecoder::new(&schema, 1 << 20);
    assert!(flat.flat.is_some(), "every column of this schema takes the flat path");
    general.flat = None;
    let owned = hostile_messages(20_000);
    let msgs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
    let (a, b) = (flat.decode(&msgs).unwrap(), general.decode(&msgs).unwrap());
    let differ: Vec<String> = a
        .rows
        .iter()
        .filter(|r| !b.rows.contains(r))
        .chain(b.rows.iter().filter(|r| !a.rows.contains(r)))
        .take(5)
        .map(|&r| String::from_utf8_lossy(msgs[r as usize]).into_owned())
        .collect();
    assert!(differ.is_empty(), "taken by one path only: {differ:#?}");
    assert_eq!(a.rows, b.rows);
    assert_eq!(a.rejects, b.rejects);
    assert_eq!(a.batch, b.batch);
    // Both paths and both outcomes were exercised.
    let mut run = flat::FlatRows::new(flat.flat.as_ref().unwrap());
    let outcomes: Vec<flat::FlatOutcome> = msgs.iter().enumerate().map(|(i, m)| run.push(i as u32, m)).collect();
    let count = |f: fn(&flat::FlatOutcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let (rows, rejects) = (count(|o| *o == flat::FlatOutcome::Row), count(|o| matches!(o, flat::FlatOutcome::Reject(_))));
    assert!(rows > 2_000 && rows < a.rows.len(), "flat rows {rows} of {} rows", a.rows.len());
    assert!(rejects > 1_000 && rejects < a.rejects.len(), "flat rejects {rejects} of {}", a.rejects.len());
}

#[test]
fn the_plain_reader_reads_what_the_serde_reader_reads() {
    let table = flat_schema();
    let decoder = MessageDecoder::new(&table, 1 << 20);
    let schema = decoder.flat.as_ref().unwrap();
    let owned = hostile_messages(20_000);
    let (mut plain, mut serde) = (flat::FlatRows::new(schema), flat::FlatRows::new(schema).serde_only());
    for (i, msg) in owned.iter().enumerate() {
        assert_eq!(plain.push(i as u32, msg), serde.push(i as u32, msg), "{}", String::from_utf8_lossy(msg));
    }
    let arrow = table.arrow_schema();
    assert_eq!(plain.finish(&arrow).unwrap(), serde.finish(&arrow).unwrap());
    // The plain reader judged a good part of them, and left a good part to the serde reader.
    let judged = owned.iter().filter(|m| flat::is_plain(schema, m)).count();
    assert!((2_000..15_000).contains(&judged), "the plain reader read {judged} of 20000");
}
