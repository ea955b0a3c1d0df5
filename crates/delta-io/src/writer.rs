//! Streaming Parquet file writer for one table and one commit.

use std::num::NonZeroU64;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use delta_kernel::table_properties::DataSkippingNumIndexedCols;
use deltalake::datafile::writer::{DeltaWriter, WriterConfig};
use delta_kernel::expressions::Scalar;
use deltalake::kernel::{Add, DataType};
use indexmap::IndexMap;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::DeltaTable;

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
pub struct TableWriter {
    writer: DeltaWriter,
    location: String,
}

impl TableWriter {
    /// A writer for `table` with the given full schema and partition columns; statistics
    /// follow the table's `delta.dataSkippingStatsColumns` when set, else every column.
    pub fn new(table: &DeltaTable, schema: SchemaRef, partition_columns: &[String], target_file_size: u64) -> Self {
        let stats_columns = table
            .snapshot()
            .ok()
            .and_then(|s| s.metadata().configuration().get(STATS_COLUMNS).cloned())
            .map(|cols| cols.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect());
        let props = writer_properties();
        let config = WriterConfig::new(
            schema,
            partition_columns.to_vec(),
            Some(props),
            NonZeroU64::new(target_file_size),
            None,
            DataSkippingNumIndexedCols::AllColumns,
            stats_columns,
        );
        Self { writer: DeltaWriter::new(table.log_store().object_store(None), config), location: table.table_url().to_string() }
    }

    /// Adds rows (encoded now; uploaded when a file reaches the target size or at close).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<(), DeltaIoError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.writer.write(batch).await.map_err(DeltaIoError::delta(&self.location))
    }

    /// Adds rows that all share `partition_values` (column name → value, in partition order),
    /// skipping the per-row grouping [`TableWriter::write`] does.
    pub async fn write_partition(&mut self, batch: &RecordBatch, partition_values: &[(String, Option<String>)]) -> Result<(), DeltaIoError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let values: IndexMap<String, Scalar> = partition_values
            .iter()
            .map(|(k, v)| (k.clone(), v.as_ref().map_or(Scalar::Null(DataType::STRING), |s| Scalar::String(s.clone()))))
            .collect();
        self.writer.write_partition(batch.clone(), &values).await.map_err(DeltaIoError::delta(&self.location))
    }

    /// Uploads the remaining files and returns their `add` actions.
    pub async fn close(self) -> Result<Vec<Add>, DeltaIoError> {
        self.writer.close().await.map_err(DeltaIoError::delta(&self.location))
    }

    /// Abandons the files (uploaded ones become orphans that vacuum removes).
    pub async fn abort(self) {
        if let Err(e) = self.writer.abort().await {
            tracing::warn!(error = %e, table = %self.location, "aborting uploads failed; vacuum removes orphans");
        }
    }
}

/// Writes `batches` in one go (see [`TableWriter`]).
pub async fn write_files(
    table: &DeltaTable,
    schema: SchemaRef,
    partition_columns: &[String],
    batches: &[RecordBatch],
    target_file_size: u64,
) -> Result<Vec<Add>, DeltaIoError> {
    let mut writer = TableWriter::new(table, schema, partition_columns, target_file_size);
    for batch in batches {
        if let Err(e) = writer.write(batch).await {
            writer.abort().await;
            return Err(e);
        }
    }
    writer.close().await
}
