//! Source rows the merge cannot place (null key or sequence): kept with the reason and where
//! they came from.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use delta_io::TableSpec;

use pipeline_config::ColumnType;

/// Schema of merge-upsert's dead-letter table.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("job_id", DataType::Utf8, false),
        Field::new("source_table", DataType::Utf8, false),
        Field::new("source_version", DataType::Int64, false),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("row", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("batch", DataType::Int64, false),
        Field::new("failed_at", ColumnType::Timestamp.arrow_type(), false),
    ]))
}

/// The dead-letter table at `location`.
pub fn table_spec(location: String, storage: BTreeMap<String, String>) -> TableSpec {
    TableSpec {
        location,
        name: "merge_dead_letter".into(),
        schema: schema(),
        partition_columns: Vec::new(),
        properties: BTreeMap::new(),
        storage,
    }
}

/// Rejected rows of one batch.
#[derive(Default)]
pub struct DeadLetters {
    version: Vec<i64>,
    file: Vec<String>,
    row: Vec<String>,
    error: Vec<String>,
}

impl DeadLetters {
    /// Adds the rows of `rows` (one source file's) with their reasons.
    pub fn push(&mut self, version: u64, file: &str, rows: &RecordBatch, reasons: Vec<String>) -> Result<(), ArrowError> {
        let mut writer = arrow_json::LineDelimitedWriter::new(Vec::new());
        writer.write(rows)?;
        writer.finish()?;
        let text = String::from_utf8(writer.into_inner()).map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
        for (line, reason) in text.lines().zip(reasons) {
            self.version.push(version as i64);
            self.file.push(file.to_string());
            self.row.push(line.to_string());
            self.error.push(reason);
        }
        Ok(())
    }

    /// Number of rejected rows.
    pub fn len(&self) -> usize {
        self.row.len()
    }

    /// True when nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// The rows of the dead-letter table.
    pub fn into_batch(self, job_id: &str, source: &str, batch: i64) -> Result<RecordBatch, ArrowError> {
        let n = self.row.len();
        let now = chrono::Utc::now().timestamp_micros();
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(StringArray::from(vec![job_id; n])),
                Arc::new(StringArray::from(vec![source; n])),
                Arc::new(Int64Array::from(self.version)),
                Arc::new(StringArray::from(self.file)),
                Arc::new(StringArray::from(self.row)),
                Arc::new(StringArray::from(self.error)),
                Arc::new(Int64Array::from(vec![batch; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC")),
            ],
        )
    }
}
