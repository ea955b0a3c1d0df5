//! Reading a table's data files back as rows of its current schema.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt as _};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::Path;

use crate::DeltaIoError;

/// Reads the data file at `path` (relative to the table root, as decoded from the log) and
/// returns its rows in `schema`: partition columns filled from `partition_values`, columns
/// added since the file was written as nulls, widened columns cast.
pub async fn read_data_file(
    store: &Arc<dyn ObjectStore>,
    location: &str,
    path: &str,
    schema: &SchemaRef,
    partition_values: &HashMap<String, Option<String>>,
) -> Result<Vec<RecordBatch>, DeltaIoError> {
    let store_error = |source| DeltaIoError::Store { table: location.to_string(), path: path.to_string(), source: Box::new(source) };
    let object = Path::parse(path).map_err(|e| store_error(e.into()))?;
    let bytes = store.get(&object).await.map_err(store_error)?.bytes().await.map_err(store_error)?;
    decode_data_file(bytes, schema, partition_values).map_err(|source| DeltaIoError::DataFile {
        table: location.to_string(),
        path: path.to_string(),
        source,
    })
}

/// Decodes a data file's bytes into rows of `schema` (see [`read_data_file`]).
pub fn decode_data_file(
    bytes: impl deltalake::parquet::file::reader::ChunkReader + 'static,
    schema: &SchemaRef,
    partition_values: &HashMap<String, Option<String>>,
) -> Result<Vec<RecordBatch>, ArrowError> {
    let parquet = |e: deltalake::parquet::errors::ParquetError| ArrowError::ExternalError(Box::new(e));
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(parquet)?;
    // Decode only the columns asked for (a key lookup reads two columns of a wide file).
    let wanted: Vec<usize> =
        builder.schema().fields().iter().enumerate().filter(|(_, f)| schema.field_with_name(f.name()).is_ok()).map(|(i, _)| i).collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
    let reader = builder.with_projection(mask).build().map_err(parquet)?;
    reader.map(|batch| conform(&batch?, schema, partition_values)).collect()
}

/// A file's rows in the table's current schema.
fn conform(batch: &RecordBatch, schema: &SchemaRef, partition_values: &HashMap<String, Option<String>>) -> Result<RecordBatch, ArrowError> {
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| {
            if let Some(value) = partition_values.get(field.name()) {
                let strings: ArrayRef = Arc::new(StringArray::from(vec![value.as_deref(); rows]));
                return cast(&strings, field.data_type());
            }
            match batch.column_by_name(field.name()) {
                Some(col) if col.data_type() == field.data_type() => Ok(col.clone()),
                Some(col) => cast(col, field.data_type()),
                None => Ok(new_null_array(field.data_type(), rows)),
            }
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}
