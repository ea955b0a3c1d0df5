//! Streaming Parquet file writer for one table and one commit.

use std::collections::HashSet;
use std::num::NonZeroU64;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow::row::{RowConverter, SortField};
use delta_kernel::expressions::Scalar;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use deltalake::kernel::{Add, DataType};
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::DeltaTable;
use indexmap::IndexMap;

use crate::DeltaIoError;

/// Table property naming the columns that get file statistics.
pub const STATS_COLUMNS: &str = "delta.dataSkippingStatsColumns";

/// Parquet settings of every data file the jobs write: ZSTD level 1, our `created_by`.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_created_by(format!("lakehouse-writer {}", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Writes record batches as Parquet files (zstd, statistics on every column) under a table,
/// split by partition values and at a target size, while the caller keeps producing rows;
/// `close` uploads what is buffered and returns the `add` actions to commit.
///
/// The Parquet settings are fixed by a sample ([`TableWriter::with_sample`]) or else the first
/// rows written, held until there are enough of them to judge: columns of unbounded
/// cardinality are written without a dictionary (see [`plain_columns`]).
pub struct TableWriter {
    writer: Option<DeltaWriter>,
    store: deltalake::logstore::ObjectStoreRef,
    schema: SchemaRef,
    partition_columns: Vec<String>,
    target_file_size: u64,
    stats_columns: Option<Vec<String>>,
    /// Columns written without a dictionary, once decided (before the writer exists).
    plain: Option<Vec<String>>,
    /// Rows written before the settings are decided (with their partition values when
    /// given), and how many.
    held: Vec<(RecordBatch, Option<PartitionValues>)>,
    held_rows: usize,
    location: String,
}

/// Partition column name → value, in partition order.
type PartitionValues = IndexMap<String, Scalar>;

impl TableWriter {
    /// A writer for `table` with the given full schema and partition columns; statistics
    /// follow the table's `delta.dataSkippingStatsColumns` when set, else every column.
    pub fn new(table: &DeltaTable, schema: SchemaRef, partition_columns: &[String], target_file_size: u64) -> Self {
        let stats_columns = table
            .snapshot()
            .ok()
            .and_then(|s| s.metadata().configuration().get(STATS_COLUMNS).cloned())
            .map(|cols| cols.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect());
        Self {
            writer: None,
            store: table.log_store().object_store(None),
            schema,
            partition_columns: partition_columns.to_vec(),
            target_file_size,
            stats_columns,
            plain: None,
            held: Vec::new(),
            held_rows: 0,
            location: table.table_url().to_string(),
        }
    }

    /// Fits the Parquet settings to `sample` (rows like the ones to come, e.g. the start of a
    /// large output) instead of the first rows written, which may be a short slice.
    pub fn with_sample(mut self, sample: Option<&RecordBatch>) -> Self {
        self.plain = sample.map(|s| plain_columns(s, &self.partition_columns));
        self
    }

    /// The delta-rs writer, created with the decided settings, and the table's location (for errors).
    fn writer(&mut self) -> (&mut DeltaWriter, &str) {
        let writer = self.writer.get_or_insert_with(|| {
            let plain = self.plain.take().unwrap_or_default();
            let props = plain
                .into_iter()
                .fold(writer_properties().into_builder(), |b, c| b.set_column_dictionary_enabled(ColumnPath::from(c), false));
            // Columns outside the table's statistics columns (raw payload bytes, say) get no
            // Parquet statistics either: nothing reads them, and min/max of long values is
            // a comparison per value.
            let unindexed = unindexed_columns(&self.schema, self.stats_columns.as_deref(), &self.partition_columns);
            let props = unindexed
                .into_iter()
                .fold(props, |b, c| b.set_column_statistics_enabled(ColumnPath::from(c), EnabledStatistics::None))
                .build();
            let config = WriterConfig::new(
                self.schema.clone(),
                self.partition_columns.clone(),
                Some(props),
                NonZeroU64::new(self.target_file_size),
                None,
                DataSkippingNumIndexedCols::AllColumns,
                self.stats_columns.clone(),
            );
            DeltaWriter::new(self.store.clone(), config)
        });
        (writer, &self.location)
    }

    /// Adds rows (encoded now; uploaded when a file reaches the target size or at close).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), DeltaIoError> {
        self.put(batch.clone(), None).await
    }

    /// Adds rows that all share `partition_values` (column name → value, in partition order),
    /// skipping the per-row grouping [`TableWriter::write`] does.
    pub async fn write_partition(
        &mut self,
        batch: &RecordBatch,
        partition_values: &[(String, Option<String>)],
    ) -> Result<(), DeltaIoError> {
        let values: PartitionValues = partition_values
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map_or(Scalar::Null(DataType::STRING), |s| Scalar::String(s.clone()))))
            .collect();
        self.put(batch.clone(), Some(values)).await
    }

    /// Encodes rows, or holds them while the settings are not decided and too few rows came
    /// to decide them on.
    async fn put(&mut self, batch: RecordBatch, values: Option<PartitionValues>) -> Result<(), DeltaIoError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.writer.is_some() || self.plain.is_some() {
            return self.encode(batch, values).await;
        }
        self.held_rows += batch.num_rows();
        self.held.push((batch, values));
        match self.held_rows >= DICTIONARY_SAMPLE_MIN_ROWS {
            true => self.release_held().await,
            false => Ok(()),
        }
    }

    /// Decides the settings on the held rows and encodes them.
    async fn release_held(&mut self) -> Result<(), DeltaIoError> {
        let held = std::mem::take(&mut self.held);
        let batches: Vec<RecordBatch> = held.iter().map(|(b, _)| b.clone()).collect();
        self.plain = Some(dictionary_sample(&batches).map(|s| plain_columns(&s, &self.partition_columns)).unwrap_or_default());
        for (batch, values) in held {
            self.encode(batch, values).await?;
        }
        Ok(())
    }

    async fn encode(&mut self, batch: RecordBatch, values: Option<PartitionValues>) -> Result<(), DeltaIoError> {
        let (writer, location) = self.writer();
        match values {
            Some(values) => writer.write_partition(batch, &values).await.map_err(DeltaIoError::delta(location)),
            None => writer.write(&batch).await.map_err(DeltaIoError::delta(location)),
        }
    }

    /// Uploads the remaining files and returns their `add` actions.
    pub async fn close(mut self) -> Result<Vec<Add>, DeltaIoError> {
        if !self.held.is_empty() {
            self.release_held().await?;
        }
        match self.writer {
            Some(writer) => writer.close().await.map_err(DeltaIoError::delta(&self.location)),
            None => Ok(Vec::new()),
        }
    }

    /// Abandons the files (uploaded ones become orphans that vacuum removes).
    pub async fn abort(self) {
        let Some(writer) = self.writer else { return };
        if let Err(e) = writer.abort().await {
            tracing::warn!(error = %e, table = %self.location, "aborting uploads failed; vacuum removes orphans");
        }
    }
}

/// Top-level, non-nested columns a table keeps no statistics of (all have them without a
/// statistics column list).
fn unindexed_columns(schema: &SchemaRef, stats_columns: Option<&[String]>, partition_columns: &[String]) -> Vec<String> {
    let Some(indexed) = stats_columns else { return Vec::new() };
    schema
        .fields()
        .iter()
        .filter(|f| !f.data_type().is_nested() && !indexed.contains(f.name()) && !partition_columns.contains(f.name()))
        .map(|f| f.name().clone())
        .collect()
}

/// Rows a dictionary decision looks at, at most.
const DICTIONARY_SAMPLE_ROWS: usize = 4096;
/// Rows a dictionary decision needs: a routed table's first write is its share of one chunk,
/// often under [`DICTIONARY_SAMPLE_ROWS`].
const DICTIONARY_SAMPLE_MIN_ROWS: usize = 1024;

/// Top-level columns (not partition columns) of unbounded cardinality in a sample of up to
/// [`DICTIONARY_SAMPLE_ROWS`] rows: on average fewer than 8 rows per value, and four times the
/// rows bring at least three times the distinct values (ids, event times; a column of a few
/// thousand values saturates instead). parquet-rs interns every value until a column chunk's
/// dictionary page is full, which for such columns is most of a file and buys nothing;
/// parquet-mr (Spark, Hudi) drops the dictionary after a first page that does not compress.
/// Samples under [`DICTIONARY_SAMPLE_MIN_ROWS`] keep the defaults.
fn plain_columns(sample: &RecordBatch, partition_columns: &[String]) -> Vec<String> {
    let n = sample.num_rows().min(DICTIONARY_SAMPLE_ROWS);
    if n < DICTIONARY_SAMPLE_MIN_ROWS {
        return Vec::new();
    }
    let schema = sample.schema();
    let mut out = Vec::new();
    for (field, column) in schema.fields().iter().zip(sample.columns()) {
        if partition_columns.contains(field.name()) || field.data_type().is_nested() {
            continue;
        }
        let Ok(converter) = RowConverter::new(vec![SortField::new(field.data_type().clone())]) else { continue };
        let Ok(values) = converter.convert_columns(&[column.slice(0, n)]) else { continue };
        let mut distinct = HashSet::new();
        let mut quarter = 0;
        for (i, value) in values.iter().enumerate() {
            if i == n / 4 {
                quarter = distinct.len();
            }
            distinct.insert(value);
        }
        if distinct.len() * 8 > n && distinct.len() >= 3 * quarter {
            out.push(field.name().clone());
        }
    }
    out
}

/// The first [`DICTIONARY_SAMPLE_ROWS`] of `batches` as one batch (fewer if they hold fewer).
pub(crate) fn dictionary_sample(batches: &[RecordBatch]) -> Option<RecordBatch> {
    let first = batches.first()?;
    let mut slices = Vec::new();
    let mut rows = 0;
    for b in batches.iter().filter(|b| b.schema() == first.schema()) {
        if rows >= DICTIONARY_SAMPLE_ROWS {
            break;
        }
        let take = b.num_rows().min(DICTIONARY_SAMPLE_ROWS - rows);
        slices.push(b.slice(0, take));
        rows += take;
    }
    arrow::compute::concat_batches(&first.schema(), &slices).ok()
}

/// Writes `batches` in one go (see [`TableWriter`]).
pub async fn write_files(
    table: &DeltaTable,
    schema: SchemaRef,
    partition_columns: &[String],
    batches: &[RecordBatch],
    target_file_size: u64,
) -> Result<Vec<Add>, DeltaIoError> {
    let mut writer = TableWriter::new(table, schema, partition_columns, target_file_size).with_sample(dictionary_sample(batches).as_ref());
    for batch in batches {
        if let Err(e) = writer.write(batch).await {
            writer.abort().await;
            return Err(e);
        }
    }
    writer.close().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// `rows` rows: a unique id, one of 20 categories, a unique partition value.
    fn sample(rows: i64) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("category", DataType::Utf8, false),
            Field::new("day", DataType::Utf8, false),
        ]);
        let ids = Int64Array::from_iter_values(0..rows);
        let categories = StringArray::from_iter_values((0..rows).map(|i| format!("c{}", i % 20)));
        let days = StringArray::from_iter_values((0..rows).map(|i| format!("d{i}")));
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ids), Arc::new(categories), Arc::new(days)]).expect("sample")
    }

    #[test]
    fn columns_outside_the_statistics_columns_get_no_parquet_statistics() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("offset", DataType::Int64, false),
            Field::new("payload", DataType::Binary, true),
            Field::new("tags", DataType::List(Arc::new(Field::new("element", DataType::Utf8, true))), true),
            Field::new("day", DataType::Utf8, false),
        ]));
        let (indexed, partitions) = (["offset".to_string()], ["day".to_string()]);
        assert_eq!(unindexed_columns(&schema, Some(&indexed), &partitions), vec!["payload".to_string()]);
        assert!(unindexed_columns(&schema, None, &partitions).is_empty(), "no list: every column keeps statistics");
    }

    #[test]
    fn unique_columns_lose_the_dictionary_from_a_short_first_write_on() {
        let partitions = ["day".to_string()];
        assert_eq!(plain_columns(&sample(10_000), &partitions), vec!["id".to_string()]);
        assert_eq!(plain_columns(&sample(1_500), &partitions), vec!["id".to_string()], "a routed table's share of a chunk");
        assert!(plain_columns(&sample(1_000), &partitions).is_empty(), "too few rows to tell: the defaults");
    }
}
