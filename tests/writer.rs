//! The shared Parquet writer on large outputs: partitions spread over one writer per core
//! still land whole, each in its own files, every row once.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use delta_io::{open_or_create, write_partition_runs, AppendCommit, TableSpec, WithCommitParts};
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
        let parts: Vec<Option<String>> =
            ids.iter().map(|&i| if start == ROWS - 50_000 { Some(format!("m{}", i % 70)) } else { partition(i) }).collect();
        batches.push(
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(parts))]).expect("batch"),
        );
    }
    let files = block_on(async {
        let mut table = open_or_create(&spec).await.expect("table");
        let adds = write_partition_runs(&table, schema.clone(), &spec.partition_columns, &batches, 128 << 20).await.expect("written");
        let files: Vec<Option<String>> = adds.iter().map(|a| a.partition_values.get("p").cloned().flatten()).collect();
        AppendCommit::new("test", 1).with_adds(adds).commit(&mut table).await.expect("committed");
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

/// Rows without their derived partition columns: each run of one hour lands in the partition
/// its timestamp formats to (null timestamps in the null partition), mixed batches and
/// formats finer than the hour included.
#[test]
fn derived_partitions_are_formatted_per_run_and_every_row_lands_in_its_hour() {
    use arrow::array::TimestampMicrosecondArray;
    use arrow::datatypes::TimeUnit;
    use delta_io::write_derived_partition_runs;
    use pipeline_config::{PartitionSource, PartitionSpec};

    const HOUR: i64 = 3_600_000_000;
    const ROWS: i64 = 600_000;
    let start = 1_700_000_000_000_000_i64; // 2023-11-14T22:13:20Z: days and years roll over below
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let field = |column: &str, format: &str| PartitionSpec {
        column: column.into(),
        source: PartitionSource::Field,
        field: Some("ts".into()),
        format: Some(format.into()),
    };
    let cases = [
        (
            "hourly",
            vec![
                field("day", "%Y%m%d"),
                field("hour", "%H"),
                PartitionSpec { column: "loaded".into(), source: PartitionSource::IngestionTime, field: None, format: Some("%Y".into()) },
            ],
        ),
        // Minutes are finer than runs of one hour: the columns are derived per row.
        ("minutes", vec![field("day", "%Y%m%d"), field("hour", "%H%M")]),
    ];
    for (case, partitions) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = dir.path().join("t").display().to_string();
        let data = vec![Field::new("id", DataType::Int64, false), Field::new("ts", ts_type.clone(), true)];
        let mut fields = data.clone();
        fields.extend(partitions.iter().map(|p| Field::new(&p.column, DataType::Utf8, true)));
        let schema = Arc::new(Schema::new(fields));
        let partition_columns: Vec<String> = partitions.iter().map(|p| p.column.clone()).collect();
        let spec = TableSpec {
            location: location.clone(),
            name: "t".into(),
            schema: schema.clone(),
            partition_columns: partition_columns.clone(),
            properties: Default::default(),
            storage: Default::default(),
        };
        // Runs of 45,000 rows per hour crossing batch boundaries and days, one run
        // without timestamps, and a last batch that changes hour on every row.
        let time = |i: i64| match i / 45_000 {
            5 => None,
            n if i >= ROWS - 50_000 => Some(start + (i % 97) * HOUR + n),
            n => Some(start + n * 7 * HOUR + (i % 45_000) * 1_000),
        };
        let data_schema = Arc::new(Schema::new(data));
        let batches: Vec<RecordBatch> = (0..ROWS)
            .step_by(50_000)
            .map(|first| {
                let ids: Vec<i64> = (first..first + 50_000).collect();
                let times = TimestampMicrosecondArray::from(ids.iter().map(|&i| time(i)).collect::<Vec<_>>()).with_timezone("UTC");
                RecordBatch::try_new(data_schema.clone(), vec![Arc::new(Int64Array::from(ids)), Arc::new(times)]).expect("batch")
            })
            .collect();
        let files = block_on(async {
            let mut table = open_or_create(&spec).await.expect("table");
            let adds = write_derived_partition_runs(&table, schema.clone(), &partition_columns, &partitions, &batches, 128 << 20)
                .await
                .expect("written");
            let files = adds.len();
            AppendCommit::new("test", 1).with_adds(adds).commit(&mut table).await.expect("committed");
            files
        });
        let tables = [("t", location.as_str())];
        let rows = query(&tables, &HashMap::new(), "SELECT COUNT(*), COUNT(DISTINCT id) FROM t");
        assert_eq!(rows, vec![vec![ROWS.to_string(), ROWS.to_string()]], "{case}");
        let (day, hour) = if case == "hourly" { ("%Y%m%d", "%H") } else { ("%Y%m%d", "%H%M") };
        let misplaced = query(
            &tables,
            &HashMap::new(),
            &format!(
                "SELECT COUNT(*) FROM t WHERE ts IS NULL AND (day IS NOT NULL OR hour IS NOT NULL) \
                 OR ts IS NOT NULL AND (day <> to_char(ts, '{day}') OR hour <> to_char(ts, '{hour}'))"
            ),
        );
        assert_eq!(misplaced, vec![vec!["0".to_string()]], "{case}: every row in the partition of its time");
        let partitions_written = query(&tables, &HashMap::new(), "SELECT COUNT(*) FROM (SELECT DISTINCT day, hour FROM t)");
        assert_eq!(partitions_written, vec![vec![files.to_string()]], "{case}: one file per partition");
        if case == "hourly" {
            let loaded = query(&tables, &HashMap::new(), "SELECT DISTINCT loaded FROM t");
            assert_eq!(loaded, vec![vec![chrono::Utc::now().format("%Y").to_string()]], "ingestion-time partition");
        }
    }
}

/// Columns of unbounded cardinality (ids, also when each repeats a few times as in a join's
/// output; event times) are written without a dictionary; columns of a bounded set of values
/// keep it. The files read back with every value.
#[test]
fn dictionaries_are_kept_only_where_values_repeat() {
    use deltalake::parquet::basic::Encoding;
    use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("t").display().to_string();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("order_id", DataType::Int64, false),
        Field::new("owner", DataType::Utf8, false),
        Field::new("value", DataType::Int64, false),
        Field::new("note", DataType::Utf8, true),
    ]));
    let spec = TableSpec {
        location: location.clone(),
        name: "t".into(),
        schema: schema.clone(),
        partition_columns: Vec::new(),
        properties: Default::default(),
        storage: Default::default(),
    };
    const ROWS: i64 = 50_000;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..ROWS)),
            Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| i / 4))),
            Arc::new(StringArray::from_iter_values((0..ROWS).map(|i| format!("owner-{}", (i * 7919) % 1000)))),
            Arc::new(Int64Array::from_iter_values((0..ROWS).map(|i| (i * 31) % 1000))),
            Arc::new(StringArray::from_iter((0..ROWS).map(|i| (i % 3 != 0).then(|| format!("note {i}"))))),
        ],
    )
    .expect("batch");
    // Written in short batches: the settings come from the whole sample, not the first batch.
    let batches: Vec<RecordBatch> = (0..ROWS as usize).step_by(1000).map(|o| batch.slice(o, 1000)).collect();
    let adds = block_on(async {
        let mut table = open_or_create(&spec).await.expect("table");
        let adds = delta_io::write_files(&table, schema.clone(), &[], &batches, 128 << 20).await.expect("written");
        AppendCommit::new("test", 1).with_adds(adds.clone()).commit(&mut table).await.expect("committed");
        adds
    });
    assert_eq!(adds.len(), 1);
    let file = std::fs::File::open(dir.path().join("t").join(&adds[0].path)).expect("data file");
    let reader = SerializedFileReader::new(file).expect("parquet");
    let dictionary = |column: usize| {
        let encodings = reader.metadata().row_group(0).column(column).encodings().collect::<Vec<_>>();
        encodings.contains(&Encoding::RLE_DICTIONARY) || encodings.contains(&Encoding::PLAIN_DICTIONARY)
    };
    assert!(!dictionary(0), "unique ids: no dictionary");
    assert!(!dictionary(1), "ids four rows each: no dictionary");
    assert!(dictionary(2), "1,000 owners: dictionary");
    assert!(dictionary(3), "1,000 values: dictionary");
    assert!(!dictionary(4), "distinct notes (a third null): no dictionary");
    let rows = query(
        &[("t", location.as_str())],
        &HashMap::new(),
        "SELECT COUNT(*), COUNT(DISTINCT id), COUNT(DISTINCT order_id), COUNT(DISTINCT owner), COUNT(DISTINCT value), COUNT(note) FROM t",
    );
    let notes = ROWS - (ROWS + 2) / 3;
    assert_eq!(
        rows,
        vec![vec![ROWS.to_string(), ROWS.to_string(), (ROWS / 4).to_string(), "1000".to_string(), "1000".to_string(), notes.to_string()]]
    );
}

/// A guarded append loaded before another writer added columns lands on the newest snapshot
/// (its files, without the new columns, are still rows of the table), with its progress
/// checked again there; the other writer's stale add of the same column is a no-op.
#[test]
fn a_guarded_append_lands_over_columns_another_writer_added() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("t").display().to_string();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
    let spec = TableSpec {
        location: location.clone(),
        name: "t".into(),
        schema: schema.clone(),
        partition_columns: vec![],
        properties: Default::default(),
        storage: Default::default(),
    };
    let price = Field::new("price", DataType::Float64, true);
    let version = block_on(async {
        let mut stale = delta_io::ProgressTable::new(open_or_create(&spec).await.expect("table"));
        let mut other = delta_io::ProgressTable::new(open_or_create(&spec).await.expect("table"));
        assert_eq!(stale.progress("job:t:0").await.expect("progress"), None);
        other.add_columns(std::slice::from_ref(&price)).await.expect("columns added").expect("a metadata commit");
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))]).expect("batch");
        let adds = delta_io::write_files(stale.table(), schema.clone(), &[], &[batch], 128 << 20).await.expect("written");
        let txn = delta_io::GuardedTxn { app_id: "job:t:0".into(), expected: None, version: 7 };
        let done = stale.commit_append(adds, vec![txn], "job", 1, HashMap::new()).await.expect("the append lands");
        assert_eq!(stale.progress("job:t:0").await.expect("progress"), Some(7));
        let again = stale.add_columns(std::slice::from_ref(&price)).await.expect("nothing to add");
        assert_eq!(again, None, "the refreshed table holds the column already");
        done.version
    });
    assert_eq!(version, 2, "create, add column, append");
    let rows = query(
        &[("t", location.as_str())],
        &HashMap::new(),
        "SELECT CAST(id AS VARCHAR) AS i, CAST(price AS VARCHAR) AS p FROM t ORDER BY id",
    );
    assert_eq!(rows, vec![vec!["1".to_string(), "NULL".to_string()], vec!["2".to_string(), "NULL".to_string()]]);
}
