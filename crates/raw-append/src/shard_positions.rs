//! Where each Kinesis shard's reading stands, beside its table.
//!
//! A shard's `txn` version in the table is the counter of the last user record committed (see
//! `kinesis_source::position`); the Kinesis position of that record is an object under the
//! table's `_lakehouse/kinesis/<job_id>/<stream>/<shard id>/<counter>.json`, written before the
//! commit that records the counter. A restart reads the counter from the table and the object
//! it names: no scan of the table's history. A crash between the write and the commit leaves
//! an object no `txn` names (the same record always gets the same counter, so a later commit
//! of that counter finds the same content); superseded objects are deleted after each commit.

use delta_io::{DeltaIoError, DeltaTable, Sidecar};
use kafka_source::PartitionKey;
use kinesis_source::{shard_id, ShardPosition};

use crate::RawAppendError;

/// The shard positions of one table written by one job.
#[derive(Debug, Clone)]
pub struct ShardPositions {
    sidecar: Sidecar,
    job_id: String,
}

impl ShardPositions {
    /// Positions kept beside `table` for job `job_id`.
    pub fn new(table: &DeltaTable, job_id: &str) -> Self {
        Self { sidecar: Sidecar::of(table), job_id: job_id.to_string() }
    }

    fn stream_folder(&self, stream: &str) -> String {
        format!("kinesis/{}/{stream}", self.job_id)
    }

    fn object(&self, key: &PartitionKey, counter: i64) -> String {
        format!("{}/{}/{counter:020}.json", self.stream_folder(&key.topic), shard_id(key.partition))
    }

    /// Records `position` of shard `key` (before the commit of its counter).
    pub async fn write(&self, key: &PartitionKey, position: &ShardPosition) -> Result<(), RawAppendError> {
        let bytes = serde_json::to_vec(position).map_err(|e| RawAppendError::Internal(format!("shard position: {e}")))?;
        Ok(self.sidecar.put(&self.object(key, position.counter), bytes).await?)
    }

    /// The position committed as `counter` for shard `key`; an error when the table records a
    /// counter whose position is missing or unreadable (the folder was deleted or edited).
    pub async fn read(&self, key: &PartitionKey, counter: i64) -> Result<ShardPosition, RawAppendError> {
        let object = self.object(key, counter);
        let missing = |why: String| RawAppendError::PositionMissing { object: object.clone(), why };
        let bytes = self.sidecar.get(&object).await?.ok_or_else(|| missing("not found".into()))?;
        let position: ShardPosition = serde_json::from_slice(&bytes).map_err(|e| missing(e.to_string()))?;
        if position.counter != counter {
            return Err(missing(format!("it holds counter {}", position.counter)));
        }
        Ok(position)
    }

    /// Deletes the position of a counter a later commit superseded.
    pub async fn forget(&self, key: &PartitionKey, counter: i64) -> Result<(), DeltaIoError> {
        self.sidecar.delete(&self.object(key, counter)).await
    }

    /// Ids of the shards of `stream` this job has recorded positions for.
    pub async fn shards(&self, stream: &str) -> Result<Vec<String>, DeltaIoError> {
        self.sidecar.folders(&self.stream_folder(stream)).await
    }
}
