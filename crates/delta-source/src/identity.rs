//! Is the source still the table the job read? A source deleted and created again under the
//! same location starts over at version 0 with a new table id: reading on from the recorded
//! version would find "nothing new" for ever, or read a different table's rows.

use deltalake::DeltaTable;

/// How a source differs from what the job recorded of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Its table id is not the one recorded.
    Id {
        /// The id the job recorded.
        recorded: String,
        /// The id the table has now.
        now: String,
    },
    /// Its newest version is older than the last version the job read.
    Version {
        /// The last version the job read.
        recorded: u64,
        /// The table's newest version (None: no version at all).
        now: Option<u64>,
    },
}

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id { recorded, now } => write!(f, "its table id is {now}, the job read table {recorded}"),
            Self::Version { recorded, now: Some(now) } => write!(f, "it is at version {now}, the job already read version {recorded}"),
            Self::Version { recorded, now: None } => write!(f, "it has no version, the job already read version {recorded}"),
        }
    }
}

/// Compares what the job recorded of a source (its id, when recorded, and the last version it
/// read) with the table now.
pub fn changed(recorded_id: Option<&str>, recorded_to: Option<u64>, now_id: Option<&str>, now_version: Option<u64>) -> Option<Changed> {
    if let (Some(recorded), Some(now)) = (recorded_id, now_id) {
        if recorded != now {
            return Some(Changed::Id { recorded: recorded.to_string(), now: now.to_string() });
        }
    }
    match recorded_to {
        Some(recorded) if now_version.is_none_or(|now| now < recorded) => Some(Changed::Version { recorded, now: now_version }),
        _ => None,
    }
}

/// The table's id (its `metaData.id`), None before its first commit.
pub fn table_id(table: &DeltaTable) -> Option<String> {
    let snapshot = table.snapshot().ok()?;
    // delta_kernel keeps the id's accessor crate-private; its serde form is public.
    let metadata = serde_json::to_value(snapshot.metadata()).ok()?;
    metadata.get("id").and_then(|id| id.as_str()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_id_or_an_older_newest_version_is_a_change() {
        assert_eq!(changed(Some("a"), Some(4), Some("a"), Some(4)), None, "nothing new");
        assert_eq!(changed(Some("a"), Some(4), Some("a"), Some(9)), None, "appended to");
        assert_eq!(changed(None, Some(4), Some("b"), Some(9)), None, "no id recorded (records before ids): versions only");
        assert_eq!(changed(None, None, Some("b"), Some(0)), None, "nothing read yet");
        assert_eq!(
            changed(Some("a"), Some(4), Some("b"), Some(9)),
            Some(Changed::Id { recorded: "a".into(), now: "b".into() }),
            "recreated and written past the recorded version"
        );
        assert_eq!(changed(None, Some(4), Some("b"), Some(1)), Some(Changed::Version { recorded: 4, now: Some(1) }));
        assert_eq!(changed(Some("a"), Some(0), None, None), Some(Changed::Version { recorded: 0, now: None }), "emptied");
    }
}
