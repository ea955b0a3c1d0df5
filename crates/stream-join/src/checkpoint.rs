//! The job's checkpoint folder: per batch a progress record (planned source versions,
//! watermarks, done or pending) and the join state after it, as Parquet.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use delta_source::{CreateError, ProgressLog, Resume, ResumeError, SourceRange};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::errors::ParquetError;
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::Path;
use serde::{Deserialize, Serialize};

use crate::error::StreamJoinError;

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

delta_source::impl_batch_record!(Progress);

/// The checkpoint folder.
pub struct CheckpointStore {
    log: ProgressLog,
}

fn state_path(batch: i64, side: &str) -> Path {
    Path::from(format!("state/{batch:020}/{side}.parquet"))
}

impl CheckpointStore {
    /// The checkpoint folder at `location`.
    pub fn open(location: &str, storage: &std::collections::BTreeMap<String, String>) -> Result<Self, StreamJoinError> {
        Ok(Self { log: ProgressLog::open(location, storage)? })
    }

    /// Where a restarted run continues, given the output's `txn` version (see
    /// [`ProgressLog::resume`]).
    pub async fn resume(&self, sink_version: Option<i64>) -> Result<Resume<Progress>, StreamJoinError> {
        match self.log.resume(sink_version).await {
            Ok(resume) => Ok(resume),
            Err(ResumeError::Behind(behind)) => Err(StreamJoinError::CheckpointBehind(behind)),
            Err(ResumeError::Progress(e)) => Err(e.into()),
        }
    }

    /// Records a batch as pending: a re-run replaces its earlier record; a new batch is created
    /// only if no other run created it ([`StreamJoinError::AnotherRun`] otherwise).
    pub async fn record_pending(&self, progress: &Progress, rerun: bool) -> Result<(), StreamJoinError> {
        if rerun {
            return self.put_progress(progress).await;
        }
        self.log.create(progress.batch, progress).await.map_err(|e| match e {
            CreateError::Taken(taken) => StreamJoinError::AnotherRun(taken),
            CreateError::Progress(e) => e.into(),
        })
    }

    /// Writes (or replaces) a progress record.
    pub async fn put_progress(&self, progress: &Progress) -> Result<(), StreamJoinError> {
        Ok(self.log.put(progress.batch, progress).await?)
    }

    /// Writes one side's state after `batch`. The state is rewritten every batch and read back
    /// only on restart, so it is encoded for speed (plain values, LZ4, no statistics) on a
    /// blocking thread, off the job's own task.
    pub async fn put_state(&self, batch: i64, side: &str, schema: &SchemaRef, rows: &[RecordBatch]) -> Result<(), StreamJoinError> {
        let (schema, rows) = (schema.clone(), rows.to_vec());
        let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ParquetError> {
            let props = WriterProperties::builder()
                .set_compression(Compression::LZ4_RAW)
                .set_dictionary_enabled(false)
                .set_statistics_enabled(EnabledStatistics::None)
                .build();
            let mut buffer = Vec::new();
            let mut writer = ArrowWriter::try_new(&mut buffer, schema, Some(props))?;
            for b in &rows {
                writer.write(b)?;
            }
            writer.close()?;
            Ok(buffer)
        })
        .await
        .map_err(|e| StreamJoinError::Internal(format!("state encoding: {e}")))?;
        let buffer = encoded.map_err(|e| self.log.error(e))?;
        Ok(self.log.put_file(&state_path(batch, side), buffer).await?)
    }

    /// One side's state after `batch` (batch 0: empty).
    pub async fn state(&self, batch: i64, side: &str) -> Result<Vec<RecordBatch>, StreamJoinError> {
        if batch == 0 {
            return Ok(Vec::new());
        }
        let bytes = self
            .log
            .get_file(&state_path(batch, side))
            .await?
            .ok_or_else(|| self.log.error(format!("state of batch {batch} ({side}) is missing")))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| self.log.error(e))?;
        Ok(reader.collect::<Result<Vec<_>, _>>().map_err(|e| self.log.error(e))?)
    }

    /// Deletes records and state of batches before `keep_from`.
    pub async fn forget_before(&self, keep_from: i64) -> Result<(), StreamJoinError> {
        Ok(self.log.forget_before(keep_from, |b| vec![state_path(b, "left"), state_path(b, "right")]).await?)
    }
}
