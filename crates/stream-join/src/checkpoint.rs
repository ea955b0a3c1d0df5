//! The job's checkpoint folder: per batch a progress record (planned source versions,
//! watermarks, done or pending) and the join state after it, as Parquet.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::Path;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::job::StreamJoinError;

/// The source versions a batch reads: `(after, to]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRange {
    /// Last version read before the batch.
    pub after: Option<u64>,
    /// Last version the batch reads.
    pub to: Option<u64>,
}

/// What a batch planned and where it left the watermarks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Batch number (1, 2, ...).
    pub batch: i64,
    /// Left input versions.
    pub left: SourceRange,
    /// Right input versions.
    pub right: SourceRange,
    /// Left input watermark after the batch (max event time seen − delay), microseconds.
    pub left_watermark: Option<i64>,
    /// Right input watermark after the batch.
    pub right_watermark: Option<i64>,
    /// Job watermark after the batch.
    pub watermark: Option<i64>,
    /// The output commit of this batch landed and its state was adopted.
    pub done: bool,
}

/// The checkpoint folder.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    location: String,
}

fn progress_path(batch: i64) -> Path {
    Path::from(format!("progress/{batch:020}.json"))
}

fn state_path(batch: i64, side: &str) -> Path {
    Path::from(format!("state/{batch:020}/{side}.parquet"))
}

impl CheckpointStore {
    /// The checkpoint folder at `location`.
    pub fn open(location: &str, storage: &std::collections::BTreeMap<String, String>) -> Result<Self, StreamJoinError> {
        Ok(Self { store: delta_io::object_store_at(location, storage)?, location: location.to_string() })
    }

    fn err(&self, e: impl std::fmt::Display) -> StreamJoinError {
        StreamJoinError::Checkpoint(format!("{}: {e}", self.location))
    }

    /// Batch numbers with a progress record, ascending.
    async fn batches(&self) -> Result<Vec<i64>, StreamJoinError> {
        let prefix = Path::from("progress");
        let mut out: Vec<i64> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move { Ok::<Option<i64>, deltalake::ObjectStoreError>(m.location.filename().and_then(|f| f.strip_suffix(".json")).and_then(|n| n.parse().ok())) })
            .try_collect()
            .await
            .map_err(|e| self.err(e))?;
        out.sort_unstable();
        Ok(out)
    }

    /// The latest progress record.
    pub async fn latest(&self) -> Result<Option<Progress>, StreamJoinError> {
        match self.batches().await?.last() {
            Some(&b) => self.progress(b).await,
            None => Ok(None),
        }
    }

    /// The progress record of `batch`.
    pub async fn progress(&self, batch: i64) -> Result<Option<Progress>, StreamJoinError> {
        match self.store.get(&progress_path(batch)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err(e))?;
                serde_json::from_slice(&bytes).map(Some).map_err(|e| self.err(format!("progress of batch {batch}: {e}")))
            }
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Writes (or replaces) a progress record.
    pub async fn put_progress(&self, progress: &Progress) -> Result<(), StreamJoinError> {
        let body = serde_json::to_vec_pretty(progress).map_err(|e| self.err(e))?;
        self.store.put(&progress_path(progress.batch), PutPayload::from(body)).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Writes one side's state after `batch`.
    pub async fn put_state(&self, batch: i64, side: &str, schema: &SchemaRef, rows: &[RecordBatch]) -> Result<(), StreamJoinError> {
        let mut buffer = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut buffer, schema.clone(), None).map_err(|e| self.err(e))?;
        for b in rows {
            writer.write(b).map_err(|e| self.err(e))?;
        }
        writer.close().map_err(|e| self.err(e))?;
        self.store.put(&state_path(batch, side), PutPayload::from(buffer)).await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One side's state after `batch` (batch 0: empty).
    pub async fn state(&self, batch: i64, side: &str) -> Result<Vec<RecordBatch>, StreamJoinError> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let bytes = self.store.get(&state_path(batch, side)).await.map_err(|e| self.err(e))?.bytes().await.map_err(|e| self.err(e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| self.err(e))?;
        reader.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Deletes records and state of batches before `keep_from`.
    pub async fn forget_before(&self, keep_from: i64) -> Result<(), StreamJoinError> {
        for b in self.batches().await?.into_iter().filter(|b| *b < keep_from) {
            for path in [progress_path(b), state_path(b, "left"), state_path(b, "right")] {
                match self.store.delete(&path).await {
                    Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                    Err(e) => return Err(self.err(e)),
                }
            }
        }
        Ok(())
    }
}
