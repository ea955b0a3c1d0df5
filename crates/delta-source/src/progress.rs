//! A job's progress log under its checkpoint location: one JSON record per batch
//! (`progress/<batch>.json`), written as pending before the sink commit and marked done after,
//! plus any per-batch files the job keeps beside it (e.g. join state).

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::logstore::object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload, WriteMultipart};
use deltalake::Path;
use futures::TryStreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The progress log could not be used.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {location}: {message}")]
pub struct ProgressError {
    /// Checkpoint location.
    pub location: String,
    /// What failed.
    pub message: String,
}

/// The sink holds a batch the checkpoint does not know: the checkpoint was lost, rolled back or
/// moved. Running on would commit batch numbers (and rows) the sink already holds.
#[derive(Debug, thiserror::Error)]
#[error(
    "checkpoint {location} is behind the output: the output holds batch {sink}, the checkpoint knows batch {checkpoint} \
     (the checkpoint folder was deleted, restored from an older copy or moved)"
)]
pub struct CheckpointBehind {
    /// Checkpoint location.
    pub location: String,
    /// The latest batch the checkpoint records (0 for none).
    pub checkpoint: i64,
    /// The batch the sink's `txn` holds.
    pub sink: i64,
}

/// Why a job cannot resume from its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// The folder could not be read.
    #[error(transparent)]
    Progress(#[from] ProgressError),
    /// The sink is ahead of the checkpoint.
    #[error(transparent)]
    Behind(#[from] CheckpointBehind),
}

/// Another run created a batch's pending record first: two instances of the job are running.
#[derive(Debug, thiserror::Error)]
#[error(
    "checkpoint {location}: another run of this job planned batch {batch} first, so two instances are running (a \
     duplicated task, a manual run beside the scheduled one). This run stopped before writing anything; let the other \
     one finish, and run one instance per job"
)]
pub struct BatchTaken {
    /// Checkpoint location.
    pub location: String,
    /// The batch both planned.
    pub batch: i64,
}

/// Why a new batch's pending record was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The folder could not be written.
    #[error(transparent)]
    Progress(#[from] ProgressError),
    /// Another run holds the batch.
    #[error(transparent)]
    Taken(#[from] BatchTaken),
}

/// The source versions a batch reads: `(after, to]`, and the table they belong to. A commit
/// larger than a batch's limits is read in slices: `after_files` / `to_files` then say how many
/// of the version's data files were read before / through this batch (absent: all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRange {
    /// Last version read before the batch.
    pub after: Option<u64>,
    /// Last version the batch reads.
    pub to: Option<u64>,
    /// Of version `after`, the data files read before the batch, when not all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_files: Option<usize>,
    /// Of version `to`, the data files read through the batch, when not all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_files: Option<usize>,
    /// The source's table id (absent in records written before ids were kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_id: Option<String>,
}

/// A job's per-batch progress record.
pub trait BatchRecord: Serialize + DeserializeOwned + Default {
    /// Batch number (1, 2, ...; 0 for "nothing yet").
    fn batch(&self) -> i64;
    /// Whether the batch's sink commit landed and was recorded.
    fn done(&self) -> bool;
    /// Records that the sink commit landed.
    fn mark_done(&mut self);
}

/// Implements [`BatchRecord`] for a record struct with fields `batch: i64` and `done: bool`.
#[macro_export]
macro_rules! impl_batch_record {
    ($record:ty) => {
        impl $crate::BatchRecord for $record {
            fn batch(&self) -> i64 {
                self.batch
            }
            fn done(&self) -> bool {
                self.done
            }
            fn mark_done(&mut self) {
                self.done = true;
            }
        }
    };
}

/// Where a restarted job continues.
#[derive(Debug, Default)]
pub struct Resume<T> {
    /// The last completed batch (the default record when there is none).
    pub previous: T,
    /// A pending batch whose sink commit did not land: re-run it with what it recorded.
    pub rerun: Option<T>,
}

/// A job's checkpoint folder.
pub struct ProgressLog {
    store: Arc<dyn ObjectStore>,
    location: String,
}

/// Files larger than this (join state) are uploaded in parts: one PUT of a few GB would have to
/// be retried whole, and S3 takes at most 5 GB in one.
const MULTIPART_FROM: usize = 256 << 20;
/// Size of each part.
const PART_BYTES: usize = 64 << 20;

fn progress_path(batch: i64) -> Path {
    Path::from(format!("progress/{batch:020}.json"))
}

impl ProgressLog {
    /// The checkpoint folder at `location` (local path or `s3://`).
    pub fn open(location: &str, storage: &BTreeMap<String, String>) -> Result<Self, ProgressError> {
        let store = delta_io::object_store_at(location, storage)
            .map_err(|e| ProgressError { location: location.to_string(), message: e.to_string() })?;
        Ok(Self { store, location: location.to_string() })
    }

    /// An error about this folder.
    pub fn error(&self, message: impl std::fmt::Display) -> ProgressError {
        ProgressError { location: self.location.clone(), message: message.to_string() }
    }

    /// Batch numbers with a progress record, ascending.
    pub async fn batches(&self) -> Result<Vec<i64>, ProgressError> {
        let prefix = Path::from("progress");
        let mut out: Vec<i64> = self
            .store
            .list(Some(&prefix))
            .try_filter_map(|m| async move {
                Ok::<Option<i64>, deltalake::ObjectStoreError>(
                    m.location.filename().and_then(|f| f.strip_suffix(".json")).and_then(|n| n.parse().ok()),
                )
            })
            .try_collect()
            .await
            .map_err(|e| self.error(e))?;
        out.sort_unstable();
        Ok(out)
    }

    /// The record of the latest batch.
    pub async fn latest<T: DeserializeOwned>(&self) -> Result<Option<T>, ProgressError> {
        match self.batches().await?.last() {
            Some(&b) => self.get(b).await,
            None => Ok(None),
        }
    }

    /// Recovery at start: a pending latest batch whose sink commit landed (`sink_version`, the
    /// job's `txn` version in the sink, is at least its number) is marked done and adopted;
    /// otherwise it is to be re-run after the batch before it. A sink holding a later batch
    /// than the checkpoint knows is [`ResumeError::Behind`]: the sink is the authority.
    pub async fn resume<T: BatchRecord>(&self, sink_version: Option<i64>) -> Result<Resume<T>, ResumeError> {
        let mut latest: T = self.latest().await?.unwrap_or_default();
        if let Some(sink) = sink_version.filter(|&v| v > latest.batch()) {
            return Err(CheckpointBehind { location: self.location.clone(), checkpoint: latest.batch(), sink }.into());
        }
        if latest.batch() == 0 || latest.done() {
            return Ok(Resume { previous: latest, rerun: None });
        }
        if sink_version.is_some_and(|v| v >= latest.batch()) {
            latest.mark_done();
            self.put(latest.batch(), &latest).await?;
            tracing::info!(batch = latest.batch(), "recovered: the pending batch's sink commit had landed; adopted");
            return Ok(Resume { previous: latest, rerun: None });
        }
        tracing::info!(batch = latest.batch(), "recovered: re-running the pending batch from its recorded source versions");
        let previous = self.get(latest.batch() - 1).await?.unwrap_or_default();
        Ok(Resume { previous, rerun: Some(latest) })
    }

    /// The record of `batch`.
    pub async fn get<T: DeserializeOwned>(&self, batch: i64) -> Result<Option<T>, ProgressError> {
        match self.get_file(&progress_path(batch)).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| self.error(format!("progress of batch {batch}: {e}"))),
            None => Ok(None),
        }
    }

    /// Writes the pending record of a newly planned batch, only if no run wrote one (a
    /// conditional put, If-None-Match on S3): of two instances planning the same batch, one
    /// goes on and the other stops with [`BatchTaken`] before writing anything else.
    pub async fn create<T: Serialize>(&self, batch: i64, record: &T) -> Result<(), CreateError> {
        let body = serde_json::to_vec_pretty(record).map_err(|e| self.error(e))?;
        let options = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(&progress_path(batch), PutPayload::from(body), options).await {
            Ok(_) => Ok(()),
            Err(deltalake::ObjectStoreError::AlreadyExists { .. }) => Err(BatchTaken { location: self.location.clone(), batch }.into()),
            Err(e) => Err(self.error(e).into()),
        }
    }

    /// Writes (or replaces) the record of `batch`.
    pub async fn put<T: Serialize>(&self, batch: i64, record: &T) -> Result<(), ProgressError> {
        let body = serde_json::to_vec_pretty(record).map_err(|e| self.error(e))?;
        self.put_file(&progress_path(batch), body).await
    }

    /// A file of the folder (None when absent).
    pub async fn get_file(&self, path: &Path) -> Result<Option<bytes::Bytes>, ProgressError> {
        match self.store.get(path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| self.error(e))?)),
            Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Writes a file of the folder (in parts when large).
    pub async fn put_file(&self, path: &Path, body: Vec<u8>) -> Result<(), ProgressError> {
        self.put_file_in_parts(path, body, MULTIPART_FROM, PART_BYTES).await
    }

    async fn put_file_in_parts(&self, path: &Path, body: Vec<u8>, multipart_from: usize, part: usize) -> Result<(), ProgressError> {
        if body.len() < multipart_from {
            self.store.put(path, PutPayload::from(body)).await.map_err(|e| self.error(e))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(path).await.map_err(|e| self.error(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        writer.put(body.into());
        writer.finish().await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Deletes the records of batches before `keep_from`, and the files `extra` names for them.
    pub async fn forget_before(&self, keep_from: i64, extra: impl Fn(i64) -> Vec<Path>) -> Result<(), ProgressError> {
        for b in self.batches().await?.into_iter().filter(|b| *b < keep_from) {
            for path in extra(b).into_iter().chain(std::iter::once(progress_path(b))) {
                match self.store.delete(&path).await {
                    Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
                    Err(e) => return Err(self.error(e)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    }

    #[test]
    fn a_large_file_is_uploaded_in_parts_and_reads_back_whole() {
        let dir = std::env::temp_dir().join(format!("progress-parts-{}", std::process::id()));
        let log = ProgressLog::open(dir.to_str().expect("utf-8"), &BTreeMap::new()).expect("folder");
        let body: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let (small, large) = (Path::from("small.bin"), Path::from("state/large.bin"));
        block_on(async {
            log.put_file_in_parts(&small, body[..1000].to_vec(), 4096, 1024).await.expect("one put");
            log.put_file_in_parts(&large, body.clone(), 4096, 65_536).await.expect("thirteen parts");
            assert_eq!(log.get_file(&small).await.expect("read").expect("there").as_ref(), &body[..1000]);
            assert_eq!(log.get_file(&large).await.expect("read").expect("there").as_ref(), &body[..]);
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}
