//! Running jobs seen through their heartbeat files (`--health-file`): whether the loop is alive
//! and when it last committed.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// One job process, from its heartbeat file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProcessStatus {
    /// The heartbeat file.
    pub path: PathBuf,
    /// The job that writes it.
    pub job: String,
    /// Its process id.
    pub pid: u32,
    /// Seconds since the job's loop last showed life.
    pub heartbeat_age_secs: u64,
    /// Seconds since its last committed batch (none before the first).
    pub last_progress_age_secs: Option<u64>,
    /// The summary line of its last finished run (a scheduled job's file outlives it).
    pub last_summary: Option<serde_json::Value>,
    /// Why the file could not be read.
    pub error: Option<String>,
}

/// The status of each heartbeat file in `paths`, ages measured at `now_ms` (Unix ms).
pub fn read_all(paths: &[PathBuf], now_ms: u64) -> Vec<ProcessStatus> {
    paths.iter().map(|p| read(p, now_ms)).collect()
}

fn read(path: &Path, now_ms: u64) -> ProcessStatus {
    let age = |then: u64| now_ms.saturating_sub(then) / 1000;
    match job_runtime::read_heartbeat(path) {
        Ok(beat) => ProcessStatus {
            path: path.to_path_buf(),
            job: beat.job,
            pid: beat.pid,
            heartbeat_age_secs: age(beat.heartbeat_unix_ms),
            last_progress_age_secs: beat.last_progress_unix_ms.map(age),
            last_summary: beat.last_summary,
            error: None,
        },
        Err(e) => ProcessStatus { path: path.to_path_buf(), error: Some(e.to_string()), ..Default::default() },
    }
}
