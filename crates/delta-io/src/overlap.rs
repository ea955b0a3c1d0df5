//! What a concurrent commit did to what a rewrite (a MERGE, a compaction) read: the decision
//! whether the rewrite may land on top of it.

use std::collections::HashSet;

use percent_encoding::percent_decode_str;

/// What a rewrite read of the table, beyond the files it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadSet {
    /// Only the files it replaces (a compaction).
    Files,
    /// Every row (a merge: a changed key may be in any file).
    Rows,
}

/// What a concurrent commit did to what a rewrite read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlap {
    /// It removed a file the rewrite replaces (a compaction folded it, or a writer rewrote it).
    Rewritten(String),
    /// It added or removed rows (`dataChange=true`) and the rewrite read every row.
    RowsChanged(String),
    /// It changed the table's schema, properties or protocol.
    Metadata,
    /// It recorded progress for one of the rewrite's app ids (another run of the job).
    Progress(String),
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rewritten(path) => write!(f, "it removed {path}, which this commit replaces"),
            Self::RowsChanged(path) => write!(f, "it changed rows ({path})"),
            Self::Metadata => write!(f, "it changed the table's metadata or protocol"),
            Self::Progress(app_id) => write!(f, "it recorded progress for {app_id}"),
        }
    }
}

/// What a rewrite read and records.
#[derive(Debug, Clone)]
pub struct Reads {
    /// The files it replaces (decoded paths, as the snapshot gives them).
    pub files: HashSet<String>,
    /// What else it read.
    pub set: ReadSet,
    /// The app ids whose progress it records.
    pub app_ids: HashSet<String>,
}

/// What a concurrent commit (one log entry) did to a rewrite that read `reads`; None when the
/// rewrite can land on top of it.
pub fn overlap(entry: &str, reads: &Reads) -> Result<Option<Overlap>, serde_json::Error> {
    for line in entry.lines().filter(|l| !l.trim().is_empty()) {
        let action: serde_json::Value = serde_json::from_str(line)?;
        let data_change = |a: &serde_json::Value| a["dataChange"].as_bool() != Some(false);
        // Log paths are percent-encoded; the merge's removes, built from the snapshot, are not.
        let path = |a: &serde_json::Value| percent_decode_str(a["path"].as_str().unwrap_or_default()).decode_utf8_lossy().into_owned();
        if let Some(remove) = action.get("remove") {
            if reads.files.contains(&path(remove)) {
                return Ok(Some(Overlap::Rewritten(path(remove))));
            }
            if data_change(remove) && reads.set == ReadSet::Rows {
                return Ok(Some(Overlap::RowsChanged(path(remove))));
            }
        } else if let Some(add) = action.get("add").filter(|a| data_change(a) && reads.set == ReadSet::Rows) {
            return Ok(Some(Overlap::RowsChanged(path(add))));
        } else if action.get("metaData").is_some() || action.get("protocol").is_some() {
            return Ok(Some(Overlap::Metadata));
        } else if let Some(app_id) = action.get("txn").and_then(|t| t["appId"].as_str()).filter(|a| reads.app_ids.contains(*a)) {
            return Ok(Some(Overlap::Progress(app_id.to_string())));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(files: &[&str], set: ReadSet, app_ids: &[&str]) -> Reads {
        let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        Reads { files: owned(files), set, app_ids: owned(app_ids) }
    }

    const COMPACTION: &str = r#"{"commitInfo":{"operation":"OPTIMIZE"}}
{"remove":{"path":"h=1/a.parquet","dataChange":false}}
{"remove":{"path":"h=1/b.parquet","dataChange":false}}
{"add":{"path":"h=1/ab.parquet","size":10,"partitionValues":{"h":"1"},"dataChange":false}}
"#;
    const APPEND: &str = r#"{"add":{"path":"h=3/new.parquet","size":10,"partitionValues":{"h":"3"},"dataChange":true}}"#;
    const DELETE: &str = r#"{"remove":{"path":"h=4/d.parquet","dataChange":true}}"#;

    #[test]
    fn a_compaction_of_other_files_or_another_jobs_progress_is_rebased_over() {
        let merge = reads(&["h=2/c.parquet"], ReadSet::Rows, &["mu"]);
        assert_eq!(overlap(COMPACTION, &merge).unwrap(), None);
        assert_eq!(overlap(r#"{"txn":{"appId":"other","version":4}}"#, &merge).unwrap(), None);
    }

    #[test]
    fn a_rewrite_of_a_file_we_replace_overlaps_and_any_row_change_overlaps_a_merge() {
        let merge = reads(&["h=1/a.parquet"], ReadSet::Rows, &["mu"]);
        assert_eq!(overlap(COMPACTION, &merge).unwrap(), Some(Overlap::Rewritten("h=1/a.parquet".into())));
        let encoded = r#"{"remove":{"path":"h=a%20b/a.parquet","dataChange":false}}"#;
        let spaced = reads(&["h=a b/a.parquet"], ReadSet::Rows, &[]);
        assert_eq!(overlap(encoded, &spaced).unwrap(), Some(Overlap::Rewritten("h=a b/a.parquet".into())));
        assert_eq!(overlap(APPEND, &merge).unwrap(), Some(Overlap::RowsChanged("h=3/new.parquet".into())));
        assert_eq!(overlap(DELETE, &merge).unwrap(), Some(Overlap::RowsChanged("h=4/d.parquet".into())));
        assert_eq!(overlap(r#"{"metaData":{"id":"x"}}"#, &merge).unwrap(), Some(Overlap::Metadata));
        assert_eq!(overlap(r#"{"txn":{"appId":"mu","version":4}}"#, &merge).unwrap(), Some(Overlap::Progress("mu".into())));
    }

    #[test]
    fn a_compaction_overlaps_only_what_removes_its_files() {
        let compaction = reads(&["h=4/d.parquet"], ReadSet::Files, &[]);
        assert_eq!(overlap(APPEND, &compaction).unwrap(), None, "an append elsewhere");
        assert_eq!(overlap(COMPACTION, &compaction).unwrap(), None, "another partition compacted");
        assert_eq!(overlap(DELETE, &compaction).unwrap(), Some(Overlap::Rewritten("h=4/d.parquet".into())), "a merge rewrote it");
    }
}
