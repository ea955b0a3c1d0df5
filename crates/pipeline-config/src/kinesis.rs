//! `[kinesis]`: how raw-append reads Amazon Kinesis Data Streams sources.

use chrono::DateTime;
use serde::Deserialize;

use crate::ConfigError;

/// The section as the file writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KinesisFile {
    #[serde(default)]
    pub(crate) region: Option<String>,
    #[serde(default)]
    starting_position: StartingPosition,
    #[serde(default)]
    start_timestamp: Option<String>,
    #[serde(default)]
    pub(crate) shard_index: Option<u32>,
    #[serde(default)]
    pub(crate) shard_count: Option<u32>,
}

/// Where a shard without progress starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartingPosition {
    /// The oldest record in the stream's retention.
    #[default]
    TrimHorizon,
    /// Records put after the shard is first opened.
    Latest,
    /// Records that arrived at or after `start_timestamp`.
    AtTimestamp,
}

/// Kinesis settings, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisConfig {
    /// AWS region; unset means the AWS chain's (`AWS_REGION`, profile, instance metadata).
    pub region: Option<String>,
    /// Where a shard without progress starts.
    pub starting_position: StartingPosition,
    /// With `at_timestamp`: the time (Unix ms).
    pub start_timestamp_ms: Option<i64>,
    /// This task's share of the shards: shards whose number modulo `count` is `index`.
    pub assignment: ShardAssignment,
}

/// A static share of a stream's shards for one task of a service (`shard_index/shard_count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardAssignment {
    /// This task's index, from 0.
    pub index: u32,
    /// Tasks sharing the stream.
    pub count: u32,
}

impl ShardAssignment {
    /// One task reads every shard.
    pub const ALL: Self = Self { index: 0, count: 1 };

    /// True when the shard numbered `shard` is this task's.
    pub fn owns(&self, shard: i32) -> bool {
        shard.rem_euclid(self.count as i32) == self.index as i32
    }
}

impl KinesisFile {
    /// Checks the section: a timestamp exactly when `at_timestamp` asks for one, a shard index
    /// below the shard count.
    pub(crate) fn resolve(self) -> Result<KinesisConfig, ConfigError> {
        let start_timestamp_ms = match (self.starting_position, &self.start_timestamp) {
            (StartingPosition::AtTimestamp, Some(text)) => Some(
                DateTime::parse_from_rfc3339(text)
                    .map_err(|e| {
                        ConfigError::invalid(
                            "kinesis.start_timestamp",
                            format!("{text}: {e}; write an RFC 3339 time such as 2026-11-30T00:00:00Z"),
                        )
                    })?
                    .timestamp_millis(),
            ),
            (StartingPosition::AtTimestamp, None) => {
                return Err(ConfigError::invalid("kinesis.start_timestamp", "starting_position = \"at_timestamp\" needs start_timestamp"))
            }
            (_, Some(_)) => {
                return Err(ConfigError::invalid(
                    "kinesis.start_timestamp",
                    "only read with starting_position = \"at_timestamp\"; remove it",
                ))
            }
            (_, None) => None,
        };
        let assignment = match (self.shard_index, self.shard_count) {
            (None, None) => ShardAssignment::ALL,
            (Some(index), Some(count)) if count > 0 && index < count => ShardAssignment { index, count },
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid("kinesis.shard_index", "must be below shard_count (tasks are numbered from 0)"))
            }
            _ => {
                return Err(ConfigError::invalid(
                    "kinesis.shard_count",
                    "set shard_index and shard_count together (LAKEHOUSE_KINESIS_SHARD_INDEX / _COUNT), or neither",
                ))
            }
        };
        Ok(KinesisConfig { region: self.region, starting_position: self.starting_position, start_timestamp_ms, assignment })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_shared_by_number_modulo_the_task_count() {
        let second = ShardAssignment { index: 1, count: 3 };
        assert_eq!((0..7).filter(|s| second.owns(*s)).collect::<Vec<_>>(), [1, 4]);
        assert!((0..5).all(|s| ShardAssignment::ALL.owns(s)));
    }

    #[test]
    fn timestamps_and_assignments_are_checked() {
        let file = |pos, ts: Option<&str>, idx, count| KinesisFile {
            region: None,
            starting_position: pos,
            start_timestamp: ts.map(String::from),
            shard_index: idx,
            shard_count: count,
        };
        let at = file(StartingPosition::AtTimestamp, Some("2026-11-30T00:00:01Z"), None, None).resolve().unwrap();
        assert_eq!(at.start_timestamp_ms, Some(1_795_996_801_000));
        for (bad, key) in [
            (file(StartingPosition::AtTimestamp, None, None, None), "kinesis.start_timestamp"),
            (file(StartingPosition::Latest, Some("2026-11-30T00:00:00Z"), None, None), "kinesis.start_timestamp"),
            (file(StartingPosition::AtTimestamp, Some("yesterday"), None, None), "kinesis.start_timestamp"),
            (file(StartingPosition::TrimHorizon, None, Some(2), Some(2)), "kinesis.shard_index"),
            (file(StartingPosition::TrimHorizon, None, Some(0), None), "kinesis.shard_count"),
        ] {
            let message = bad.resolve().unwrap_err().to_string();
            assert!(message.starts_with(key), "{message}");
        }
        assert_eq!(
            file(StartingPosition::TrimHorizon, None, Some(1), Some(2)).resolve().unwrap().assignment,
            ShardAssignment { index: 1, count: 2 }
        );
    }
}
