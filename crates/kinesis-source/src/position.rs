//! Per-shard progress in a form a Delta `txn` can carry: Kinesis sequence numbers are decimal
//! strings of up to 128 bits and do not fit a txn version (an i64), so each shard's user records
//! are numbered from 0 (the *counter*, the txn version) and the Kinesis position of the last
//! committed record is kept beside it, keyed by that counter.

use serde::{Deserialize, Serialize};

/// Where a shard's reading stands after its last committed user record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPosition {
    /// The record's number in the shard (0 for the first user record read from it).
    pub counter: i64,
    /// Sequence number of the Kinesis record holding it.
    pub sequence: String,
    /// Its index within that Kinesis record (0 unless KPL-aggregated).
    pub sub_sequence: u64,
    /// The shard is closed and was read to its end.
    #[serde(default)]
    pub finished: bool,
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record in retention.
    TrimHorizon,
    /// Only records put from now on.
    Latest,
    /// The first record that arrived at or after this time (Unix ms).
    AtTimestamp(i64),
    /// Just after a committed position.
    After(ShardPosition),
}

impl StartAt {
    /// The counter the first record read gets.
    pub fn next_counter(&self) -> i64 {
        match self {
            Self::After(p) => p.counter + 1,
            _ => 0,
        }
    }

    /// For a resumed position: the Kinesis record to start at and the user records in it
    /// already committed (indexes up to and including this one are skipped). Starting *at*
    /// the record rather than after it lets a half-committed KPL aggregate resume inside.
    pub fn skip_through(&self) -> Option<(&str, u64)> {
        match self {
            Self::After(p) => Some((p.sequence.as_str(), p.sub_sequence)),
            _ => None,
        }
    }
}

/// Parses the configured starting position of a shard without progress: `trim_horizon`,
/// `latest` or `at_timestamp` with the given time.
pub fn configured_start(name: &str, timestamp_ms: Option<i64>) -> Result<StartAt, String> {
    match (name, timestamp_ms) {
        ("trim_horizon", _) => Ok(StartAt::TrimHorizon),
        ("latest", _) => Ok(StartAt::Latest),
        ("at_timestamp", Some(t)) => Ok(StartAt::AtTimestamp(t)),
        ("at_timestamp", None) => Err("at_timestamp needs a start timestamp".into()),
        (other, _) => Err(format!("{other}: expected trim_horizon, latest or at_timestamp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_continues_the_counter_inside_the_last_record() {
        let p = ShardPosition { counter: 41, sequence: "4960".into(), sub_sequence: 2, finished: false };
        let start = StartAt::After(p);
        assert_eq!(start.next_counter(), 42);
        assert_eq!(start.skip_through(), Some(("4960", 2)));
        assert_eq!(StartAt::TrimHorizon.next_counter(), 0);
        assert_eq!(StartAt::Latest.skip_through(), None);
    }

    #[test]
    fn positions_round_trip_and_old_records_read_unfinished() {
        let p = ShardPosition { counter: 7, sequence: "1".repeat(39), sub_sequence: 0, finished: true };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<ShardPosition>(&text).unwrap(), p);
        let old: ShardPosition = serde_json::from_str(r#"{"counter":1,"sequence":"5","sub_sequence":0}"#).unwrap();
        assert!(!old.finished);
    }

    #[test]
    fn configured_starts() {
        assert_eq!(configured_start("latest", None), Ok(StartAt::Latest));
        assert_eq!(configured_start("at_timestamp", Some(5)), Ok(StartAt::AtTimestamp(5)));
        assert!(configured_start("at_timestamp", None).is_err());
        assert!(configured_start("earliest", None).unwrap_err().contains("trim_horizon"));
    }
}
