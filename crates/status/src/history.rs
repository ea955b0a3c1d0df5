//! A table's history from its log: per commit its time, operation and the rows and files it
//! added, and the file sizes of its last compaction (before and after).

use deltalake::DeltaTable;
use serde::Serialize;

use crate::StatusError;

/// Commits read back at most (the newest).
const MAX_COMMITS: u64 = 2000;

/// One commit.
#[derive(Debug, Clone, Serialize)]
pub struct Commit {
    /// Version.
    pub version: u64,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// Operation (WRITE, STREAMING UPDATE, MERGE, OPTIMIZE, ...).
    pub operation: String,
    /// Rows added with `dataChange=true` (statistics).
    pub rows_added: u64,
    /// The writing job's `lakehouse.job` commit info (batch, source versions read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_json::Value>,
}

/// What a table's log says of its past.
#[derive(Debug, Clone, Default, Serialize)]
pub struct History {
    /// The commits still in the log, oldest first.
    pub commits: Vec<Commit>,
    /// The last compaction: sizes of the files it removed and of those it wrote.
    pub last_compaction: Option<(Vec<i64>, Vec<i64>)>,
}

/// Reads the newest commits of `table` still in its log.
pub(crate) async fn read(table: &DeltaTable) -> Result<History, StatusError> {
    let location = table.table_url().to_string();
    let Some(latest) = table.version() else { return Ok(History::default()) };
    let mut history = History::default();
    for version in latest.saturating_sub(MAX_COMMITS - 1)..=latest {
        let entry = table.log_store().read_commit_entry(version).await.map_err(delta_io::DeltaIoError::delta(&location))?;
        // Versions log cleanup removed are skipped: the history starts where the log does.
        let Some(entry) = entry else { continue };
        let (commit, sizes) = parse(version, &String::from_utf8_lossy(&entry));
        if commit.operation == "OPTIMIZE" {
            history.last_compaction = Some(sizes);
        }
        history.commits.push(commit);
    }
    Ok(history)
}

/// One log entry: the commit, and the sizes of the files it removed and added.
fn parse(version: u64, entry: &str) -> (Commit, (Vec<i64>, Vec<i64>)) {
    let mut commit = Commit { version, time_ms: 0, operation: String::new(), rows_added: 0, job: None };
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    for action in entry.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        if let Some(info) = action.get("commitInfo") {
            commit.time_ms = info["timestamp"].as_i64().unwrap_or(0);
            commit.operation = info["operation"].as_str().unwrap_or_default().to_string();
            commit.job = info.get("lakehouse.job").cloned();
        } else if let Some(add) = action.get("add") {
            added.push(add["size"].as_i64().unwrap_or(0));
            if add["dataChange"].as_bool() == Some(true) {
                let stats: serde_json::Value = add["stats"].as_str().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
                commit.rows_added += stats["numRecords"].as_u64().unwrap_or(0);
            }
        } else if let Some(remove) = action.get("remove") {
            removed.push(remove["size"].as_i64().unwrap_or(0));
        }
    }
    (commit, (removed, added))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_counts_the_rows_it_added_and_the_files_it_replaced() {
        let entry = r#"{"commitInfo":{"timestamp":1700000000000,"operation":"OPTIMIZE"}}
{"remove":{"path":"a","size":10,"dataChange":false}}
{"remove":{"path":"b","size":20,"dataChange":false}}
{"add":{"path":"ab","size":25,"dataChange":false,"stats":"{\"numRecords\":7}"}}
"#;
        let (commit, sizes) = parse(4, entry);
        assert_eq!((commit.version, commit.time_ms, commit.operation.as_str(), commit.rows_added), (4, 1_700_000_000_000, "OPTIMIZE", 0));
        assert_eq!(sizes, (vec![10, 20], vec![25]));
        let append = r#"{"add":{"path":"c","size":5,"dataChange":true,"stats":"{\"numRecords\":3}"}}"#;
        assert_eq!(parse(5, append).0.rows_added, 3);
    }
}
