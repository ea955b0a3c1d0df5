//! Derived partition columns (event-time or ingestion-time values formatted per
//! `[tables.*].partitions`) and writing rows that arrive in long runs of one partition.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::compute::{lexsort_to_indices, take, take_record_batch, SortColumn};
use arrow::datatypes::{DataType, Int64Type, Schema, SchemaRef};
use arrow::error::ArrowError;
use chrono::{DateTime, Utc};
use deltalake::kernel::Add;
use deltalake::DeltaTable;
use indexmap::IndexMap;
use pipeline_config::{PartitionSource, PartitionSpec};

use crate::writer::dictionary_sample;
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
        .map(|v| {
            v.and_then(|micros| cache.entry(micros.div_euclid(HOUR)).or_insert_with(|| format_one(micros.div_euclid(HOUR) * HOUR)).clone())
        })
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
        if !matches!(
            spec,
            Some(
                'Y' | 'C'
                    | 'y'
                    | 'm'
                    | 'b'
                    | 'B'
                    | 'h'
                    | 'd'
                    | 'e'
                    | 'a'
                    | 'A'
                    | 'w'
                    | 'u'
                    | 'U'
                    | 'W'
                    | 'G'
                    | 'g'
                    | 'V'
                    | 'j'
                    | 'D'
                    | 'x'
                    | 'F'
                    | 'v'
                    | 'H'
                    | 'k'
                    | 'I'
                    | 'l'
                    | 'P'
                    | 'p'
                    | '%'
            )
        ) {
            return false;
        }
    }
    true
}

/// Writes rows whose partition values come in long runs (event-time ordered output): each run
/// goes to its partition directly instead of through the writer's per-row split, the costliest
/// part of writing tens of millions of rows. Batches with many short runs are grouped first.
pub async fn write_partition_runs(
    table: &DeltaTable,
    schema: SchemaRef,
    partition_columns: &[String],
    rows: &[RecordBatch],
    target_file_size: u64,
) -> Result<Vec<Add>, DeltaIoError> {
    let all_strings = partition_columns.iter().all(|c| schema.field_with_name(c).is_ok_and(|f| f.data_type() == &DataType::Utf8));
    if partition_columns.is_empty() || !all_strings {
        return write_files(table, schema, partition_columns, rows, target_file_size).await;
    }
    let runs = partition_runs(partition_columns, rows)?;
    write_runs(table, schema, partition_columns, runs, dictionary_sample(rows), target_file_size).await
}

/// Writes rows that lack the derived partition columns of `partitions` (`schema` is the full
/// table schema). When every partition is an hourly-or-coarser format of a timestamp column (or
/// ingestion time), the partition of a run of rows is its hour, formatted once per run: no
/// per-row partition strings are built (that was the largest per-row cost of a join output).
/// Other layouts derive the columns and take [`write_partition_runs`].
pub async fn write_derived_partition_runs(
    table: &DeltaTable,
    schema: SchemaRef,
    partition_columns: &[String],
    partitions: &[PartitionSpec],
    rows: &[RecordBatch],
    target_file_size: u64,
) -> Result<Vec<Add>, DeltaIoError> {
    let arrow = DeltaIoError::arrow("partition values");
    let Some(plan) = HourlyPlan::of(partition_columns, partitions) else {
        let full = rows.iter().map(|b| with_derived_partitions(b, partitions, &schema)).collect::<Result<Vec<_>, _>>().map_err(arrow)?;
        return write_partition_runs(table, schema, partition_columns, &full, target_file_size).await;
    };
    let runs = hourly_runs(&plan, partition_columns, &schema, rows).map_err(arrow)?;
    write_runs(table, schema, partition_columns, runs, dictionary_sample(rows), target_file_size).await
}

/// How each partition column's value follows from the hour of a field (or ingestion time).
struct HourlyPlan<'a> {
    /// The timestamp fields whose hours are needed.
    fields: Vec<&'a str>,
    /// Per partition column, in partition order: where its value comes from.
    sources: Vec<(&'a str, HourlyValue<'a>)>,
}

impl<'a> HourlyPlan<'a> {
    /// The plan when every partition column is ingestion time or an hourly-or-coarser format
    /// of a timestamp field; `None` otherwise (plain columns, finer formats).
    fn of(partition_columns: &'a [String], partitions: &'a [PartitionSpec]) -> Option<Self> {
        let mut plan = Self { fields: Vec::new(), sources: Vec::new() };
        for column in partition_columns {
            let p = partitions.iter().find(|p| &p.column == column)?;
            let format = p.format.as_deref().unwrap_or("%Y");
            let source = match (p.source, p.field.as_deref()) {
                (PartitionSource::IngestionTime, _) => HourlyValue::Now(Utc::now().format(format).to_string()),
                (PartitionSource::Field, Some(field)) if hourly(format) => {
                    let index = plan.fields.iter().position(|f| *f == field).unwrap_or_else(|| {
                        plan.fields.push(field);
                        plan.fields.len() - 1
                    });
                    HourlyValue::Hour { field: index, format }
                }
                _ => return None,
            };
            plan.sources.push((column, source));
        }
        (!plan.sources.is_empty()).then_some(plan)
    }
}

/// Rows grouped by the hour of their partition fields (see [`write_derived_partition_runs`]).
fn hourly_runs(
    plan: &HourlyPlan,
    partition_columns: &[String],
    schema: &SchemaRef,
    rows: &[RecordBatch],
) -> Result<IndexMap<PartitionValues, PartitionRun>, ArrowError> {
    const HOUR: i64 = 3_600_000_000;
    let HourlyPlan { fields, sources } = plan;
    // The writer drops partition columns from what it is given and compares the rest with
    // this schema (delta-rs builds it the same way: the non-partition fields, no metadata).
    let file_schema =
        Arc::new(Schema::new(schema.fields().iter().filter(|f| !partition_columns.contains(f.name())).cloned().collect::<Vec<_>>()));
    let mut formatted: HashMap<(usize, i64), Option<String>> = HashMap::new();
    let mut runs: IndexMap<PartitionValues, PartitionRun> = IndexMap::new();
    for b in rows {
        let keys = fields
            .iter()
            .map(|f| {
                let ts = b.column(b.schema().index_of(f)?).as_any().downcast_ref::<TimestampMicrosecondArray>().cloned();
                let ts =
                    ts.ok_or_else(|| ArrowError::InvalidArgumentError(format!("partition field {f} is not a microsecond timestamp")))?;
                Ok(Arc::new(ts.unary::<_, Int64Type>(|t| t.div_euclid(HOUR))) as ArrayRef)
            })
            .collect::<Result<Vec<ArrayRef>, ArrowError>>()?;
        let (data, keys, ranges) = runs_of(RecordBatch::try_new(file_schema.clone(), b.columns().to_vec())?, keys)?;
        let hours: Vec<&Int64Array> = keys.iter().filter_map(|k| k.as_any().downcast_ref::<Int64Array>()).collect();
        for range in ranges {
            let values: PartitionValues = sources
                .iter()
                .enumerate()
                .map(|(i, (column, source))| {
                    let value = match source {
                        HourlyValue::Now(value) => Some(value.clone()),
                        HourlyValue::Hour { field, format } => {
                            let hour = hours.get(*field).filter(|h| !h.is_null(range.start)).map(|h| h.value(range.start));
                            hour.and_then(|hour| {
                                formatted
                                    .entry((i, hour))
                                    .or_insert_with(|| DateTime::from_timestamp_micros(hour * HOUR).map(|t| t.format(format).to_string()))
                                    .clone()
                            })
                        }
                    };
                    (column.to_string(), value)
                })
                .collect();
            let run = runs.entry(values.clone()).or_insert_with(|| PartitionRun { values, slices: Vec::new(), rows: 0 });
            run.rows += range.len();
            run.slices.push(data.slice(range.start, range.len()));
        }
    }
    Ok(runs)
}

/// Where an hourly partition value comes from.
enum HourlyValue<'a> {
    /// Ingestion time, formatted once per write.
    Now(String),
    /// The hour of a partition field (index into the fields), with its format.
    Hour { field: usize, format: &'a str },
}

/// Writes grouped runs. Parquet encoding is CPU-bound and a writer encodes on the task that
/// feeds it, so large outputs are spread over one writer per core, each owning whole
/// partitions (the files per partition stay what one writer would make).
async fn write_runs(
    table: &DeltaTable,
    schema: SchemaRef,
    partition_columns: &[String],
    runs: IndexMap<PartitionValues, PartitionRun>,
    sample: Option<RecordBatch>,
    target_file_size: u64,
) -> Result<Vec<Add>, DeltaIoError> {
    // Every writer takes its Parquet settings from the start of the output in row order (its
    // own first slice may be a few rows at a partition's edge).
    let writer = || TableWriter::new(table, schema.clone(), partition_columns, target_file_size).with_sample(sample.as_ref());
    let total: usize = runs.values().map(|r| r.rows).sum();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(runs.len().max(1));
    if workers <= 1 || total < PARALLEL_WRITE_ROWS {
        return write_share(writer(), runs.into_values()).await;
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
    for (_, share) in shares {
        tasks.spawn(write_share(writer(), share));
    }
    let mut adds = Vec::new();
    while let Some(done) = tasks.join_next().await {
        adds.extend(done??);
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

/// Rows grouped by partition values (in first-seen order of the runs within a partition).
fn partition_runs(columns: &[String], rows: &[RecordBatch]) -> Result<IndexMap<PartitionValues, PartitionRun>, DeltaIoError> {
    let arrow = DeltaIoError::arrow("partition runs");
    let mut runs: IndexMap<PartitionValues, PartitionRun> = IndexMap::new();
    for b in rows {
        let keys: Vec<ArrayRef> =
            columns.iter().map(|c| Ok(b.column(b.schema().index_of(c)?).clone())).collect::<Result<_, ArrowError>>().map_err(arrow)?;
        let (b, keys, ranges) = runs_of(b.clone(), keys).map_err(arrow)?;
        let strings: Vec<&StringArray> = keys.iter().filter_map(|k| k.as_any().downcast_ref::<StringArray>()).collect();
        if strings.len() != keys.len() {
            return Err(arrow(ArrowError::InvalidArgumentError("partition columns must be strings".into())));
        }
        for range in ranges {
            let values: PartitionValues = columns
                .iter()
                .zip(&strings)
                .map(|(c, s)| (c.clone(), (!s.is_null(range.start)).then(|| s.value(range.start).to_string())))
                .collect();
            let run = runs.entry(values.clone()).or_insert_with(|| PartitionRun { values, slices: Vec::new(), rows: 0 });
            run.rows += range.len();
            run.slices.push(b.slice(range.start, range.len()));
        }
    }
    Ok(runs)
}

/// The ranges of equal `keys` in `data`. A batch with many short runs is sorted by its keys
/// first, so each partition is one range and stays with one writer.
/// A batch, its partition key columns and the row ranges of equal keys.
type Runs = (RecordBatch, Vec<ArrayRef>, Vec<Range<usize>>);

fn runs_of(data: RecordBatch, keys: Vec<ArrayRef>) -> Result<Runs, ArrowError> {
    if keys.is_empty() {
        let n = data.num_rows();
        return Ok((data, keys, std::iter::once(0..n).collect()));
    }
    let ranges = arrow::compute::partition(&keys)?.ranges();
    if ranges.len() <= 64 {
        return Ok((data, keys, ranges));
    }
    let order = lexsort_to_indices(&keys.iter().map(|k| SortColumn { values: k.clone(), options: None }).collect::<Vec<_>>(), None)?;
    let data = take_record_batch(&data, &order)?;
    let keys: Vec<ArrayRef> = keys.iter().map(|k| take(k, &order, None)).collect::<Result<_, _>>()?;
    let ranges = arrow::compute::partition(&keys)?.ranges();
    Ok((data, keys, ranges))
}

/// Feeds one writer its partitions' slices and closes it (or aborts its uploads on failure).
async fn write_share(mut writer: TableWriter, runs: impl IntoIterator<Item = PartitionRun>) -> Result<Vec<Add>, DeltaIoError> {
    let written: Result<(), DeltaIoError> = async {
        for run in runs {
            for slice in &run.slices {
                writer.write_partition(slice, &run.values).await?;
            }
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
