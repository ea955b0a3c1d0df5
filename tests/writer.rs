//! The shared Parquet writer on large outputs: partitions spread over one writer per core
//! still land whole, each in its own files, every row once.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use delta_io::{commit_append, open_or_create, write_partition_runs, TableSpec};
use e2e_tests::*;

#[test]
fn large_outputs_written_in_parallel_keep_every_row_once_and_each_partition_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("t").display().to_string();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("p", DataType::Utf8, true)]));
    let spec = TableSpec {
        location: location.clone(),
        name: "t".into(),
        schema: schema.clone(),
        partition_columns: vec!["p".into()],
        properties: Default::default(),
        storage: Default::default(),
    };
    // 600,000 rows in batches of 50,000 (above the parallel threshold); partitions come in runs
    // of 45,000 rows that cross batch boundaries, one of them null, and one batch is mixed.
    const ROWS: i64 = 600_000;
    let partition = |i: i64| match i / 45_000 {
        5 => None,
        n => Some(format!("p{n}")),
    };
    let mut batches = Vec::new();
    for start in (0..ROWS).step_by(50_000) {
        let ids: Vec<i64> = (start..start + 50_000).collect();
        // The last batch alternates partitions row by row: the writer's own split takes it.
        let parts: Vec<Option<String>> = ids.iter().map(|&i| if start == ROWS - 50_000 { Some(format!("m{}", i % 70)) } else { partition(i) }).collect();
        batches.push(RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(parts))]).expect("batch"));
    }
    let files = block_on(async {
        let mut table = open_or_create(&spec).await.expect("table");
        let adds = write_partition_runs(&table, schema.clone(), &spec.partition_columns, &batches, 128 << 20).await.expect("written");
        let files: Vec<Option<String>> = adds.iter().map(|a| a.partition_values.get("p").cloned().flatten()).collect();
        commit_append(&mut table, adds, Vec::new(), "test", 1, HashMap::new()).await.expect("committed");
        files
    });
    // One file per partition: no partition was split between writers.
    let mut expected_partitions: Vec<Option<String>> = (0..(ROWS - 50_000)).map(partition).collect();
    expected_partitions.extend((0..70).map(|m| Some(format!("m{m}"))));
    expected_partitions.sort();
    expected_partitions.dedup();
    let mut seen = files.clone();
    seen.sort();
    assert_eq!(seen, expected_partitions, "one file per partition");

    let rows = query(&[("t", location.as_str())], &HashMap::new(), "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id) FROM t");
    assert_eq!(rows, vec![vec![ROWS.to_string(), ROWS.to_string(), "0".to_string(), (ROWS - 1).to_string()]]);
    // Every row sits in the partition its values say.
    let misplaced = query(
        &[("t", location.as_str())],
        &HashMap::new(),
        "SELECT COUNT(*) FROM t WHERE id < 550000 AND COALESCE(p, 'null') <> CASE WHEN id / 45000 = 5 THEN 'null' ELSE CONCAT('p', CAST(id / 45000 AS VARCHAR)) END \
         OR id >= 550000 AND p <> CONCAT('m', CAST(id % 70 AS VARCHAR))",
    );
    assert_eq!(misplaced, vec![vec!["0".to_string()]]);
}
