//! How far behind each job is: raw-append's committed offsets against the brokers' high
//! watermarks, stream-join's and merge-upsert's last batch against their sources' versions.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_source::{client_config, fetch_watermarks, messages_behind, LakeContext, MskTokenProvider, PartitionKey};
use pipeline_config::{PipelineConfig, RawAppendConfig, SaslMechanism, SourceKind, TableConfig};
use serde::Serialize;

use crate::tables::rows;
use crate::StatusError;
use delta_io::open_if_exists;

/// One source partition of raw-append.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The last offset committed to the table (None: nothing yet).
    pub committed: Option<i64>,
    /// The broker's high watermark (the next offset to be written).
    pub high_watermark: i64,
    /// Messages not in the table yet.
    pub lag: u64,
}

/// raw-append's progress.
#[derive(Debug, Clone, Serialize)]
pub struct RawAppendStatus {
    /// Its job id.
    pub job_id: String,
    /// Per source partition.
    pub partitions: Vec<PartitionLag>,
    /// Messages not in the tables yet, all partitions.
    pub lag: u64,
    /// Why the brokers could not be asked (the tables' figures are still shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Where raw-append stands: each source partition's committed offset (the table's `txn`) against
/// its high watermark.
pub(crate) async fn raw_append(config: &PipelineConfig, job: &RawAppendConfig) -> Result<RawAppendStatus, StatusError> {
    let msk = match config.kafka.sasl_mechanism {
        Some(SaslMechanism::AwsMskIam) => Some(Arc::new(MskTokenProvider::start(config.kafka.aws_region.clone()).await?)),
        _ => None,
    };
    // Kinesis sources have no high watermark to compare with (their lag is the job's
    // `millis_behind_latest` metric).
    let kafka_sources: Vec<_> = job.sources.iter().filter(|s| s.kind == SourceKind::Kafka).collect();
    if kafka_sources.is_empty() {
        return Ok(RawAppendStatus { job_id: job.job_id.clone(), partitions: Vec::new(), lag: 0, error: None });
    }
    let topics: Vec<&str> = kafka_sources.iter().map(|s| s.name.as_str()).collect();
    let watermarks = match fetch_watermarks(&client_config(&config.kafka), LakeContext::new(msk), &topics) {
        Ok(w) => w,
        Err(e) => return Ok(RawAppendStatus { job_id: job.job_id.clone(), partitions: Vec::new(), lag: 0, error: Some(e.to_string()) }),
    };
    let mut partitions = Vec::new();
    for source in kafka_sources {
        let table = open_if_exists(&source.table.location, &config.lake.storage_options).await?;
        let mut keys: Vec<&PartitionKey> = watermarks.keys().filter(|k| *k.topic == *source.name).collect();
        keys.sort_by_key(|k| k.partition);
        for key in keys {
            let (low, high) = watermarks[key];
            let committed = match &table {
                Some(t) => delta_io::read_progress(t, &key.txn_app_id(&job.job_id)).await?,
                None => None,
            };
            let lag = lag(committed, low, high);
            partitions.push(PartitionLag { topic: source.name.clone(), partition: key.partition, committed, high_watermark: high, lag });
        }
    }
    let lag = partitions.iter().map(|p| p.lag).sum();
    Ok(RawAppendStatus { job_id: job.job_id.clone(), partitions, lag, error: None })
}

/// Messages between the last committed offset (or the partition's start) and its end.
fn lag(committed: Option<i64>, low: i64, high: i64) -> u64 {
    messages_behind(committed.map_or(low, |c| c + 1), high)
}

/// A source of an incremental job.
#[derive(Debug, Clone, Serialize)]
pub struct SourceLag {
    /// The source table.
    pub table: String,
    /// The last version the job's last batch read.
    pub read_to: Option<u64>,
    /// The source's version now.
    pub version: Option<u64>,
    /// Versions not read yet.
    pub behind: u64,
}

/// stream-join's or merge-upsert's progress.
#[derive(Debug, Clone, Serialize)]
pub struct IncrementalStatus {
    /// `stream-join` or `merge-upsert`.
    pub job: String,
    /// Its last batch (0: none) and whether it completed.
    pub batch: i64,
    /// Whether that batch's output commit landed (false: a restart re-runs it).
    pub done: bool,
    /// Per source.
    pub sources: Vec<SourceLag>,
    /// stream-join: the job watermark after its last batch (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// merge-upsert: tombstones kept (rows of the tombstone table).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tombstones: Option<u64>,
}

/// The configured incremental jobs' progress, from their checkpoints' latest records.
pub(crate) async fn incremental(config: &PipelineConfig) -> Result<Vec<IncrementalStatus>, StatusError> {
    let storage = &config.lake.storage_options;
    let mut out = Vec::new();
    if let Some(job) = &config.stream_join {
        let record = latest_record(config, &job.incremental.checkpoint).await?;
        let sources = vec![
            source_lag(&job.left.table, &record["left"], storage).await?,
            source_lag(&job.right.table, &record["right"], storage).await?,
        ];
        let watermark = record["watermark"].as_i64().and_then(chrono::DateTime::from_timestamp_micros).map(|t| t.to_rfc3339());
        out.push(IncrementalStatus {
            job: "stream-join".into(),
            batch: batch(&record),
            done: done(&record),
            sources,
            watermark,
            tombstones: None,
        });
    }
    if let Some(job) = &config.merge_upsert {
        let record = latest_record(config, &job.incremental.checkpoint).await?;
        let sources = vec![source_lag(&job.source, &record["source"], storage).await?];
        let tombstones = match open_if_exists(&config.table_location(&job.tombstone_table), storage).await? {
            Some(t) => rows(&t, &[])?,
            None => Some(0),
        };
        out.push(IncrementalStatus {
            job: "merge-upsert".into(),
            batch: batch(&record),
            done: done(&record),
            sources,
            watermark: None,
            tombstones,
        });
    }
    Ok(out)
}

fn batch(record: &serde_json::Value) -> i64 {
    record["batch"].as_i64().unwrap_or(0)
}

fn done(record: &serde_json::Value) -> bool {
    record["done"].as_bool().unwrap_or(false)
}

/// The checkpoint's latest batch record (null when there is none).
async fn latest_record(config: &PipelineConfig, checkpoint: &str) -> Result<serde_json::Value, StatusError> {
    let log = delta_source::ProgressLog::open(&config.table_location(checkpoint), &config.lake.storage_options)?;
    Ok(log.latest::<serde_json::Value>().await?.unwrap_or_default())
}

async fn source_lag(table: &TableConfig, range: &serde_json::Value, storage: &BTreeMap<String, String>) -> Result<SourceLag, StatusError> {
    let version = open_if_exists(&table.location, storage).await?.and_then(|t| t.version());
    let read_to = range["to"].as_u64();
    let behind = match (version, read_to) {
        (Some(v), Some(r)) => v.saturating_sub(r),
        (Some(v), None) => v + 1,
        (None, _) => 0,
    };
    Ok(SourceLag { table: table.name.clone(), read_to, version, behind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_the_messages_after_the_committed_offset() {
        assert_eq!(lag(Some(99), 0, 100), 0, "read to the end");
        assert_eq!(lag(Some(49), 0, 100), 50);
        assert_eq!(lag(None, 10, 100), 90, "nothing committed: all that is kept");
        assert_eq!(lag(Some(120), 0, 100), 0, "a broker listing its end late never gives a negative lag");
    }
}
