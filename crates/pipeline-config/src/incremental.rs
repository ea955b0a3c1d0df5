//! Options every job that reads Delta tables incrementally shares (stream-join, merge-upsert):
//! its identity, where its progress lives, its trigger and its batch limits.

use serde::Deserialize;

use crate::{checks, ByteSize, ConfigError, DurationStr, Trigger};

/// The shared options as the file writes them (flattened into the job's section).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct IncrementalFile {
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    checkpoint: Option<String>,
    #[serde(default)]
    trigger: Trigger,
    #[serde(default)]
    interval: Option<DurationStr>,
    #[serde(default)]
    max_files_per_batch: Option<usize>,
    #[serde(default)]
    max_bytes_per_batch: Option<ByteSize>,
    #[serde(default)]
    ignore_deletes: bool,
    #[serde(default)]
    max_state_bytes: Option<ByteSize>,
}

/// How an incremental Delta job identifies itself, keeps progress and sizes its batches.
#[derive(Debug, Clone)]
pub struct IncrementalOptions {
    /// Identifies the job in its outputs' `txn` app id; never change it for an existing output.
    pub job_id: String,
    /// Where state and progress live, under the lake root.
    pub checkpoint: String,
    /// Default trigger (the `--trigger` flag wins).
    pub trigger: Trigger,
    /// Continuous mode: time between batches.
    pub interval: DurationStr,
    /// A batch reads at most this many new files per input...
    pub max_files_per_batch: usize,
    /// ...and at most about this many bytes per input (at least one commit).
    pub max_bytes_per_batch: ByteSize,
    /// Skip source commits that delete rows (`remove` with dataChange=true) instead of failing:
    /// the whole commit, its rewritten files too (their surviving rows were read before).
    pub ignore_deletes: bool,
    /// The most memory the job's state may hold (stream-join: rows that may still match;
    /// merge-upsert: tombstones) before a batch fails instead of running out of memory.
    pub max_state_bytes: ByteSize,
}

/// Default cap of a job's state in memory.
pub(crate) const DEFAULT_MAX_STATE_BYTES: ByteSize = ByteSize(4 << 30);

/// Default continuous-mode interval of every job.
pub(crate) const DEFAULT_INTERVAL: DurationStr = DurationStr(std::time::Duration::from_secs(10));

impl IncrementalFile {
    /// Fills the defaults (`job` names the job: its default id and checkpoint folder) and
    /// checks the values; `section` prefixes the keys in errors.
    pub(crate) fn resolve(self, section: &str, job: &str) -> Result<IncrementalOptions, ConfigError> {
        let options = IncrementalOptions {
            job_id: self.job_id.unwrap_or_else(|| job.to_string()),
            checkpoint: self.checkpoint.unwrap_or_else(|| format!("_checkpoints/{job}")),
            trigger: self.trigger,
            interval: self.interval.unwrap_or(DEFAULT_INTERVAL),
            max_files_per_batch: self.max_files_per_batch.unwrap_or(1000),
            max_bytes_per_batch: self.max_bytes_per_batch.unwrap_or(ByteSize(1 << 30)),
            ignore_deletes: self.ignore_deletes,
            max_state_bytes: self.max_state_bytes.unwrap_or(DEFAULT_MAX_STATE_BYTES),
        };
        checks::job_id(&format!("{section}.job_id"), &options.job_id)?;
        checks::relative_path(&format!("{section}.checkpoint"), &options.checkpoint)?;
        checks::positive(&format!("{section}.max_files_per_batch"), options.max_files_per_batch as u64)?;
        checks::positive(&format!("{section}.max_state_bytes"), options.max_state_bytes.0)?;
        Ok(options)
    }
}
