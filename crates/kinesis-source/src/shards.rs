//! The shard graph of a stream: which shards may be read now (every parent read to its end
//! first, so records of a partition key stay in order across splits and merges), and which
//! unread parents have expired out of the stream's retention.

use std::collections::{BTreeMap, BTreeSet};

/// A shard as ListShards describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Shard id (`shardId-000000000012`).
    pub id: String,
    /// The shard it was split from, or the first of the two it was merged from.
    pub parent: Option<String>,
    /// The second shard of a merge.
    pub adjacent_parent: Option<String>,
    /// Closed shards (split or merged away) have an ending sequence number.
    pub closed: bool,
}

impl ShardInfo {
    /// The shard's parents (none, one after a split, two after a merge).
    pub fn parents(&self) -> impl Iterator<Item = &str> {
        self.parent.iter().chain(self.adjacent_parent.iter()).map(String::as_str)
    }
}

/// How far a shard has been read, from the job's recorded progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardState {
    /// Read to its end (a closed shard whose last record is committed).
    Finished,
    /// Read part of the way.
    Started,
}

/// The shards to read now, in id order: listed, not finished, and every parent either finished
/// or not listed (a parent that left the listing was trimmed; see [`expired_unread`]).
pub fn readable(shards: &[ShardInfo], states: &BTreeMap<String, ShardState>) -> Vec<String> {
    let listed: BTreeSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let finished = |id: &str| states.get(id) == Some(&ShardState::Finished);
    let mut ready: Vec<String> = shards
        .iter()
        .filter(|s| !finished(&s.id))
        .filter(|s| s.parents().all(|p| finished(p) || !listed.contains(p)))
        .map(|s| s.id.clone())
        .collect();
    ready.sort();
    ready
}

/// Shards the job started but did not finish that are no longer listed: their unread records
/// expired out of the stream's retention.
pub fn expired_unread(shards: &[ShardInfo], states: &BTreeMap<String, ShardState>) -> Vec<String> {
    let listed: BTreeSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    states.iter().filter(|(id, state)| **state == ShardState::Started && !listed.contains(id.as_str())).map(|(id, _)| id.clone()).collect()
}

/// The number in a shard id (`shardId-000000000012` → 12): the partition number the shard's
/// rows and progress are keyed by, as a Kafka partition's would be.
pub fn shard_number(id: &str) -> Option<i32> {
    let digits = id.rsplit('-').next()?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// The shard id of shard number `n` (`shardId-000000000012`), as Kinesis writes it.
pub fn shard_id(n: i32) -> String {
    format!("shardId-{n:012}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>, closed: bool) -> ShardInfo {
        ShardInfo { id: id.into(), parent: parent.map(String::from), adjacent_parent: adjacent.map(String::from), closed }
    }

    fn states(entries: &[(&str, ShardState)]) -> BTreeMap<String, ShardState> {
        entries.iter().map(|(id, s)| (id.to_string(), *s)).collect()
    }

    /// 0 split into 2 and 3; 1 and 3 merged into 4.
    fn graph() -> Vec<ShardInfo> {
        vec![
            shard("shardId-0", None, None, true),
            shard("shardId-1", None, None, true),
            shard("shardId-2", Some("shardId-0"), None, false),
            shard("shardId-3", Some("shardId-0"), None, true),
            shard("shardId-4", Some("shardId-1"), Some("shardId-3"), false),
        ]
    }

    #[test]
    fn children_wait_for_every_parent() {
        let g = graph();
        assert_eq!(readable(&g, &BTreeMap::new()), ["shardId-0", "shardId-1"]);
        let split_done = states(&[("shardId-0", ShardState::Finished), ("shardId-1", ShardState::Started)]);
        assert_eq!(readable(&g, &split_done), ["shardId-1", "shardId-2", "shardId-3"], "the merge child waits for both parents");
        let one_merge_parent = states(&[("shardId-0", ShardState::Finished), ("shardId-1", ShardState::Finished)]);
        assert_eq!(readable(&g, &one_merge_parent), ["shardId-2", "shardId-3"]);
        let all_parents =
            states(&[("shardId-0", ShardState::Finished), ("shardId-1", ShardState::Finished), ("shardId-3", ShardState::Finished)]);
        assert_eq!(readable(&g, &all_parents), ["shardId-2", "shardId-4"]);
    }

    #[test]
    fn trimmed_parents_do_not_block_their_children_but_unread_ones_are_reported() {
        let g: Vec<ShardInfo> = graph().into_iter().filter(|s| s.id != "shardId-0").collect();
        assert_eq!(readable(&g, &BTreeMap::new()), ["shardId-1", "shardId-2", "shardId-3"]);
        assert!(expired_unread(&g, &states(&[("shardId-0", ShardState::Finished)])).is_empty());
        assert_eq!(expired_unread(&g, &states(&[("shardId-0", ShardState::Started)])), ["shardId-0"]);
    }

    #[test]
    fn shard_numbers() {
        assert_eq!(shard_number("shardId-000000000012"), Some(12));
        assert_eq!(shard_number("shardId-"), None);
        assert_eq!(shard_number("shardId-99999999999"), None, "beyond i32");
        assert_eq!(shard_id(12), "shardId-000000000012");
    }
}
