//! Derived partition columns (event-time or ingestion-time values formatted per
//! `[tables.*].partitions`) and writing rows that arrive in long runs of one partition.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use deltalake::kernel::Add;
use deltalake::DeltaTable;
use indexmap::IndexMap;
use pipeline_config::{PartitionSource, PartitionSpec};

use crate::{write_files, DeltaIoError, TableWriter};

/// `rows` in `schema`: its columns followed by the derived partition columns of `partitions`
/// (`field` partitions formatted from a timestamp column of the row, `ingestion_time` from now).
pub fn with_derived_partitions(rows: &RecordBatch, partitions: &[PartitionSpec], schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    for p in partitions.iter().filter(|p| p.source != PartitionSource::Column) {
        let format = p.format.as_deref().unwrap_or("%Y");
        let values: StringArray = match p.source {
            PartitionSource::IngestionTime => std::iter::repeat_n(Some(Utc::now().format(format).to_string()), rows.num_rows()).collect(),
            _ => {
                let field = p.field.as_deref().unwrap_or_default();
                let ts = rows
                    .column(rows.schema().index_of(field)?)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .ok_or_else(|| ArrowError::InvalidArgumentError(format!("partition field {field} is not a microsecond timestamp")))?
                    .clone();
                format_timestamps(&ts, format)
            }
        };
        columns.push(Arc::new(values));
    }
    RecordBatch::try_new(schema.clone(), columns)
}

/// Formats event times for a partition column. Partition formats rarely go below the hour, and
/// formatting is the costliest per-row step of an output: when the format only uses date and
/// hour fields, each hour is formatted once.
pub fn format_timestamps(ts: &TimestampMicrosecondArray, format: &str) -> StringArray {
    const HOUR: i64 = 3_600_000_000;
    let format_one = |micros: i64| DateTime::from_timestamp_micros(micros).map(|t| t.format(format).to_string());
    if !hourly(format) {
        return ts.iter().map(|v| v.and_then(format_one)).collect();
    }
    let mut cache: HashMap<i64, Option<String>> = HashMap::new();
    ts.iter()
        .map(|v| v.and_then(|micros| cache.entry(micros.div_euclid(HOUR)).or_insert_with(|| format_one(micros.div_euclid(HOUR) * HOUR)).clone()))
        .collect()
}

/// Whether every strftime field of `format` depends only on the date and the hour.
fn hourly(format: &str) -> bool {
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let mut spec = chars.next();
        while matches!(spec, Some('-' | '_' | '0' | '#')) {
            spec = chars.next();
        }
        if !matches!(spec, Some('Y' | 'C' | 'y' | 'm' | 'b' | 'B' | 'h' | 'd' | 'e' | 'a' | 'A' | 'w' | 'u' | 'U' | 'W' | 'G' | 'g' | 'V' | 'j' | 'D' | 'x' | 'F' | 'v' | 'H' | 'k' | 'I' | 'l' | 'P' | 'p' | '%')) {
            return false;
        }
    }
    true
}

/// Writes rows whose partition values come in long runs (event-time ordered output): each run
/// goes to its partition directly instead of through the writer's per-row split, the costliest
/// part of writing tens of millions of rows. Mixed batches take the writer's own split.
///
/// Parquet encoding is CPU-bound and a writer encodes on the task that feeds it, so large
/// outputs are spread over one writer per core, each owning whole partitions (the files per
/// partition stay what one writer would make).
pub async fn write_partition_runs(table: &DeltaTable, schema: SchemaRef, partition_columns: &[String], rows: &[RecordBatch], target_file_size: u64) -> Result<Vec<Add>, DeltaIoError> {
    let all_strings = partition_columns.iter().all(|c| schema.field_with_name(c).is_ok_and(|f| f.data_type() == &DataType::Utf8));
    if partition_columns.is_empty() || !all_strings {
        return write_files(table, schema, partition_columns, rows, target_file_size).await;
    }
    let (runs, mixed) = partition_runs(partition_columns, rows)?;
    let total: usize = rows.iter().map(RecordBatch::num_rows).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(runs.len().max(1));
    if workers <= 1 || total < PARALLEL_WRITE_ROWS {
        return write_share(TableWriter::new(table, schema, partition_columns, target_file_size), runs.into_values(), mixed).await;
    }
    // Largest partitions first, each to the least loaded writer.
    let mut groups: Vec<PartitionRun> = runs.into_values().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.rows));
    let mut shares: Vec<(usize, Vec<PartitionRun>)> = (0..workers).map(|_| (0, Vec::new())).collect();
    for group in groups {
        if let Some(share) = shares.iter_mut().min_by_key(|(rows, _)| *rows) {
            share.0 += group.rows;
            share.1.push(group);
        }
    }
    let mut tasks = tokio::task::JoinSet::new();
    // Batches too mixed for runs go through the first writer's own split.
    let mut mixed = Some(mixed);
    for (_, share) in shares {
        let writer = TableWriter::new(table, schema.clone(), partition_columns, target_file_size);
        tasks.spawn(write_share(writer, share, mixed.take().unwrap_or_default()));
    }
    let mut adds = Vec::new();
    while let Some(done) = tasks.join_next().await {
        adds.extend(done.map_err(|e| DeltaIoError::Location(format!("a file writer failed: {e}")))??);
    }
    Ok(adds)
}

/// Below this many rows one writer is as fast as several.
const PARALLEL_WRITE_ROWS: usize = 200_000;

/// Partition column → value, in partition order.
type PartitionValues = Vec<(String, Option<String>)>;

/// The slices of one partition.
struct PartitionRun {
    values: PartitionValues,
    slices: Vec<RecordBatch>,
    rows: usize,
}

/// Rows grouped by partition values (in first-seen order within a partition), and the batches
/// too mixed to split by runs.
fn partition_runs(columns: &[String], rows: &[RecordBatch]) -> Result<(IndexMap<PartitionValues, PartitionRun>, Vec<RecordBatch>), DeltaIoError> {
    let arrow = |e: ArrowError| DeltaIoError::Location(format!("partition runs: {e}"));
    let mut runs: IndexMap<PartitionValues, PartitionRun> = IndexMap::new();
    let mut mixed = Vec::new();
    for b in rows {
        let keys: Vec<ArrayRef> = columns.iter().map(|c| Ok(b.column(b.schema().index_of(c)?).clone())).collect::<Result<_, ArrowError>>().map_err(arrow)?;
        let ranges = arrow::compute::partition(&keys).map_err(arrow)?.ranges();
        let strings: Vec<&StringArray> = keys.iter().filter_map(|k| k.as_any().downcast_ref::<StringArray>()).collect();
        if ranges.len() > 64 || strings.len() != keys.len() {
            mixed.push(b.clone());
            continue;
        }
        for range in ranges {
            let values: PartitionValues =
                columns.iter().zip(&strings).map(|(c, s)| (c.clone(), (!s.is_null(range.start)).then(|| s.value(range.start).to_string()))).collect();
            let run = runs.entry(values.clone()).or_insert_with(|| PartitionRun { values, slices: Vec::new(), rows: 0 });
            run.rows += range.len();
            run.slices.push(b.slice(range.start, range.len()));
        }
    }
    Ok((runs, mixed))
}

/// Feeds one writer its partitions' slices, then the mixed batches, and closes it (or aborts
/// its uploads on failure).
async fn write_share(mut writer: TableWriter, runs: impl IntoIterator<Item = PartitionRun>, mixed: Vec<RecordBatch>) -> Result<Vec<Add>, DeltaIoError> {
    let written: Result<(), DeltaIoError> = async {
        for run in runs {
            for slice in &run.slices {
                writer.write_partition(slice, &run.values).await?;
            }
        }
        for b in &mixed {
            writer.write(b).await?;
        }
        Ok(())
    }
    .await;
    match written {
        Ok(()) => writer.close().await,
        Err(e) => {
            writer.abort().await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hourly_formats_are_cached_and_agree_with_chrono() {
        assert!(hourly("%Y") && hourly("%Y%m%d%H") && hourly("%y-%m-%d %H") && hourly("%-d/%b"));
        assert!(!hourly("%Y%m%d%H%M") && !hourly("%s") && !hourly("%T") && !hourly("%.f"));
        let times: Vec<i64> = (0..5000).map(|i| 1_649_073_600_000_000 + i * 977_777_777 - 2_000_000_000_000).collect();
        let ts = TimestampMicrosecondArray::from(times.clone());
        for format in ["%Y%m%d%H", "%y/%j %I%p", "%Y-%m-%d %H:%M:%S"] {
            let fast = format_timestamps(&ts, format);
            for (i, t) in times.iter().enumerate() {
                let expected = DateTime::from_timestamp_micros(*t).unwrap().format(format).to_string();
                assert_eq!(fast.value(i), expected, "{format} at {t}");
            }
        }
    }
}
