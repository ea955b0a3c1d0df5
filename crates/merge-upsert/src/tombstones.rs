//! Delete tombstones: a side Delta table of (key, sequence, deleted_at). An insert or update
//! of a key the target does not hold is dropped when a tombstone of a greater sequence exists,
//! so a change arriving late never resurrects a key a newer delete removed. Tombstones older
//! than the retention are dropped when the table is rewritten (it is rewritten, as one file,
//! once expired tombstones exist or appends have made it fragmented). The table is read once
//! per run; the run keeps its copy current as it writes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::Array as _;
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{filter_record_batch, take_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::row::{OwnedRow, Row};
use delta_io::{DeltaIoError, DeltaTable, TableSpec};

use crate::changes::{ChangeColumns, Changes, Encoders};
use pipeline_config::ColumnType;

/// Column of the delete's sequence.
pub const SEQUENCE: &str = "_sequence";
/// Column of the time the delete was merged.
pub const DELETED_AT: &str = "_deleted_at";

/// Appended files after which the table is rewritten as one.
const MAX_FILES: usize = 16;

/// The tombstone table for a target whose key and sequence fields are given.
pub fn table_spec(location: &str, key: &[Field], sequence: &Field, storage: &std::collections::BTreeMap<String, String>) -> TableSpec {
    let mut fields: Vec<Field> = key.iter().map(|f| f.clone().with_nullable(false)).collect();
    fields.push(Field::new(SEQUENCE, sequence.data_type().clone(), false));
    fields.push(Field::new(DELETED_AT, ColumnType::Timestamp.arrow_type(), false));
    TableSpec {
        location: location.to_string(),
        name: "tombstones".into(),
        schema: Arc::new(Schema::new(fields)),
        partition_columns: Vec::new(),
        properties: Default::default(),
        storage: storage.clone(),
    }
}

/// The live tombstones of a table.
pub struct Tombstones {
    schema: SchemaRef,
    retention: Duration,
    /// Greatest deleted sequence per key.
    latest: HashMap<OwnedRow, OwnedRow>,
    /// Unexpired rows, as stored.
    live: Vec<RecordBatch>,
    /// Rows past the retention still in the table.
    expired: usize,
    files: usize,
}

impl Tombstones {
    /// Reads every tombstone of `table`.
    pub async fn load(
        table: &DeltaTable,
        schema: &SchemaRef,
        columns: &ChangeColumns,
        encoders: &Encoders,
        retention: Duration,
    ) -> Result<Self, DeltaIoError> {
        let location = table.table_url().to_string();
        let snapshot = table.snapshot().map_err(DeltaIoError::delta(&location))?;
        let paths: Vec<String> = snapshot.log_data().iter().map(|f| f.path().to_string()).collect();
        let store = table.object_store();
        let mut live = Vec::new();
        for path in &paths {
            live.extend(delta_io::read_data_file(&store, &location, path, schema, &HashMap::new()).await?);
        }
        let mut tombstones = Self { schema: schema.clone(), retention, latest: HashMap::new(), live, expired: 0, files: paths.len() };
        tombstones.expire(columns, encoders).map_err(DeltaIoError::arrow("tombstones"))?;
        Ok(tombstones)
    }

    /// Drops the tombstones past the retention from memory (the table keeps them until the
    /// next write rewrites it).
    pub fn expire(&mut self, columns: &ChangeColumns, encoders: &Encoders) -> Result<(), ArrowError> {
        let cutoff = chrono::Utc::now().timestamp_micros() - i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX);
        let mut expired = 0;
        let mut live = Vec::with_capacity(self.live.len());
        for batch in std::mem::take(&mut self.live) {
            let at = batch.column(batch.schema().index_of(DELETED_AT)?);
            let at = at
                .as_any()
                .downcast_ref::<TimestampMicrosecondArray>()
                .ok_or_else(|| ArrowError::SchemaError(format!("{DELETED_AT} is not a timestamp")))?;
            let keep: BooleanArray = at.iter().map(|t| Some(t.is_none_or(|t| t >= cutoff))).collect();
            expired += keep.false_count();
            live.push(if keep.false_count() == 0 { batch } else { filter_record_batch(&batch, &keep)? });
        }
        self.live = live;
        if expired > 0 || self.latest.is_empty() {
            self.expired += expired;
            self.latest.clear();
            for batch in std::mem::take(&mut self.live) {
                self.remember(&batch, columns, encoders)?;
                self.live.push(batch);
            }
        }
        Ok(())
    }

    /// Takes in what a write stored: `new` rows, appended or, after a rewrite, with the table
    /// now holding exactly the live rows.
    pub fn record(
        &mut self,
        new: Option<RecordBatch>,
        rewritten: bool,
        columns: &ChangeColumns,
        encoders: &Encoders,
    ) -> Result<(), ArrowError> {
        if rewritten {
            self.expired = 0;
            self.files = 1;
        }
        if let Some(new) = new {
            self.remember(&new, columns, encoders)?;
            self.live.push(new);
            if !rewritten {
                self.files += 1;
            }
        }
        Ok(())
    }

    fn remember(&mut self, batch: &RecordBatch, columns: &ChangeColumns, encoders: &Encoders) -> Result<(), ArrowError> {
        let keys = encoders.keys(batch, columns)?;
        let sequences = encoders.sequences(batch, SEQUENCE)?;
        for i in 0..batch.num_rows() {
            let seq = sequences.row(i);
            match self.latest.get_mut(&keys.row(i).owned()) {
                Some(existing) if existing.row() >= seq => {}
                Some(existing) => *existing = seq.owned(),
                None => {
                    self.latest.insert(keys.row(i).owned(), seq.owned());
                }
            }
        }
        Ok(())
    }

    /// True when a delete newer than `sequence` was merged for `key`.
    pub fn blocks(&self, key: Row<'_>, sequence: Row<'_>) -> bool {
        self.latest.get(&key.owned()).is_some_and(|deleted| deleted.row() > sequence)
    }

    /// Number of live tombstones (distinct keys).
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    /// Memory the tombstones hold: the rows as stored and the latest sequence per key.
    pub fn bytes(&self) -> u64 {
        // A hash map entry of two owned rows: their bytes and about six words of bookkeeping.
        let entry = |(k, v): (&OwnedRow, &OwnedRow)| (k.row().as_ref().len() + v.row().as_ref().len() + 48) as u64;
        let live: u64 = self.live.iter().map(|b| b.get_array_memory_size() as u64).sum();
        live + self.latest.iter().map(entry).sum::<u64>()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// The tombstone rows the deletes of `changes` add.
    pub fn from_deletes(&self, changes: &Changes, columns: &ChangeColumns) -> Result<Option<RecordBatch>, ArrowError> {
        let indices: Vec<u32> = changes.deletes.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i as u32).collect();
        if indices.is_empty() {
            return Ok(None);
        }
        let rows = take_record_batch(&changes.rows, &UInt32Array::from(indices))?;
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for k in &columns.key {
            arrays.push(rows.column(rows.schema().index_of(k)?).clone());
        }
        arrays.push(rows.column(rows.schema().index_of(&columns.sequence)?).clone());
        let now = chrono::Utc::now().timestamp_micros();
        arrays.push(Arc::new(TimestampMicrosecondArray::from(vec![now; rows.num_rows()]).with_timezone("UTC")));
        Ok(Some(RecordBatch::try_new(self.schema.clone(), arrays)?))
    }

    /// Whether the next write should rewrite the table (dropping expired tombstones and
    /// gathering appended files) rather than append.
    pub fn needs_rewrite(&self) -> bool {
        self.expired > 0 || self.files >= MAX_FILES
    }

    /// Rows past the retention still stored.
    pub fn expired(&self) -> usize {
        self.expired
    }

    /// The unexpired rows (for a rewrite).
    pub fn live_rows(&self) -> &[RecordBatch] {
        &self.live
    }
}
