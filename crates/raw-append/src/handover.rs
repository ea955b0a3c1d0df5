//! Where each source partition resumes, shared by the run loop and the reader thread.
//!
//! A partition resumes from its table's `txn` progress (at start, on a group assignment, and
//! after a commit lost its compare-and-set), checked against the partition's watermarks so
//! data that is gone is never skipped silently. The progress a partition resumed from is what
//! the next batch's commit must still find in the table. A lost compare-and-set asks the reader
//! to re-read the partition; slices the reader started before it did so carry an older
//! generation and are dropped by the run loop.

use std::collections::HashMap;
use std::sync::Mutex;

use kafka_source::{KafkaError, PartitionKey};
use pipeline_config::OnMissingOffsets;

/// Offsets that were gone before this job read them, skipped because the configuration says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// The partition.
    pub key: PartitionKey,
    /// The table's progress for it (what the skip's commit replaces).
    pub progress: Option<i64>,
    /// The offset the progress said to read next.
    pub next: i64,
    /// Where reading resumes.
    pub resume_at: i64,
    /// Why, in words (for the dead-letter marker).
    pub reason: String,
}

impl SkippedRange {
    /// Offsets that were never read (0 when the topic was recreated: its old offsets are not
    /// counted, only marked).
    pub fn skipped(&self) -> u64 {
        (self.resume_at - self.next).max(0) as u64
    }
}

/// Decides where a partition resumes: the offset after its progress when the partition still
/// holds it, else an error or (`skip`) the earliest available offset and the skipped range.
pub fn resolve_start(
    key: &PartitionKey,
    progress: Option<i64>,
    (low, high): (i64, i64),
    policy: OnMissingOffsets,
) -> Result<(i64, Option<SkippedRange>), KafkaError> {
    let Some(next) = progress.map(|v| v + 1) else { return Ok((low.max(0), None)) };
    let cause = if next < low {
        format!("retention deleted offsets {next}..{low} before this job read them")
    } else if next > high {
        format!("the partition ends at {high}, before the recorded progress: the topic was recreated or truncated")
    } else {
        return Ok((next, None));
    };
    match policy {
        OnMissingOffsets::Fail => {
            Err(KafkaError::OffsetsGone { topic: key.topic.to_string(), partition: key.partition, next, low, high, cause })
        }
        OnMissingOffsets::Skip => {
            let resume_at = low.max(0);
            let reason = format!("offsets skipped by on_missing_offsets = \"skip\": {cause}; reading resumed at {resume_at}");
            Ok((resume_at, Some(SkippedRange { key: key.clone(), progress, next, resume_at, reason })))
        }
    }
}

#[derive(Default)]
struct State {
    /// The progress the next batch of each partition builds on.
    points: HashMap<PartitionKey, Option<i64>>,
    /// Partitions to re-read from their table progress.
    reseek: Vec<PartitionKey>,
    /// Bumped with every re-read request.
    generation: u64,
    /// Skips found on resume, for the run loop to record.
    skipped: Vec<SkippedRange>,
}

/// Resume points and re-read requests of one run.
pub struct Resume {
    policy: OnMissingOffsets,
    state: Mutex<State>,
}

impl Resume {
    /// An empty set of resume points.
    pub fn new(policy: OnMissingOffsets) -> Self {
        Self { policy, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the maps half-updated: every change is one insert.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A partition resumed from `progress` (read from its table just now): returns the offset
    /// to read next.
    pub fn resumed(&self, key: &PartitionKey, progress: Option<i64>, watermarks: (i64, i64)) -> Result<i64, KafkaError> {
        let (next, skipped) = resolve_start(key, progress, watermarks, self.policy)?;
        let mut state = self.state();
        state.points.insert(key.clone(), progress);
        if let Some(range) = skipped {
            tracing::warn!(stage = "resume", error_code = "offsets_skipped", topic = %key.topic, partition = key.partition, reason = %range.reason, "offsets skipped");
            state.skipped.push(range);
        }
        Ok(next)
    }

    /// A source partition without watermarks (a Kinesis shard) resumed from `progress`.
    pub fn resumed_at(&self, key: &PartitionKey, progress: Option<i64>) {
        self.state().points.insert(key.clone(), progress);
    }

    /// The progress the next batch of `key` builds on.
    pub fn point(&self, key: &PartitionKey) -> Option<i64> {
        self.state().points.get(key).copied().flatten()
    }

    /// Records a landed commit of `key` up to `version`.
    pub fn committed(&self, key: &PartitionKey, version: i64) {
        self.state().points.insert(key.clone(), Some(version));
    }

    /// Asks the reader to re-read `keys` from their table progress; returns the generation
    /// from which slices hold the re-read messages.
    pub fn request_reread(&self, keys: &[PartitionKey]) -> u64 {
        let mut state = self.state();
        state.generation += 1;
        state.reseek.extend(keys.iter().cloned());
        state.generation
    }

    /// A reader takes the pending re-reads of the partitions it reads (`mine`) and the
    /// generation its next slice carries.
    pub fn take_rereads(&self, mine: impl Fn(&PartitionKey) -> bool) -> (Vec<PartitionKey>, u64) {
        let mut state = self.state();
        let (taken, left) = std::mem::take(&mut state.reseek).into_iter().partition(|k| mine(k));
        state.reseek = left;
        (taken, state.generation)
    }

    /// True when skips wait to be recorded.
    pub fn has_skipped(&self) -> bool {
        !self.state().skipped.is_empty()
    }

    /// Skips found since the last call.
    pub fn take_skipped(&self) -> Vec<SkippedRange> {
        std::mem::take(&mut self.state().skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PartitionKey {
        PartitionKey::new("orders", 2)
    }

    #[test]
    fn progress_inside_the_partition_resumes_after_it() {
        assert_eq!(resolve_start(&key(), Some(41), (0, 100), OnMissingOffsets::Fail).unwrap(), (42, None));
        assert_eq!(resolve_start(&key(), Some(99), (0, 100), OnMissingOffsets::Fail).unwrap(), (100, None));
        assert_eq!(resolve_start(&key(), None, (7, 100), OnMissingOffsets::Fail).unwrap(), (7, None));
    }

    #[test]
    fn gone_offsets_fail_naming_the_range_or_are_skipped_and_counted() {
        let below = resolve_start(&key(), Some(9), (50, 100), OnMissingOffsets::Fail).unwrap_err().to_string();
        assert!(below.contains("orders[2]") && below.contains("10..50") && below.contains("on_missing_offsets"), "{below}");
        let above = resolve_start(&key(), Some(499), (0, 100), OnMissingOffsets::Fail).unwrap_err().to_string();
        assert!(above.contains("recreated") && above.contains("500"), "{above}");

        let (start, skipped) = resolve_start(&key(), Some(9), (50, 100), OnMissingOffsets::Skip).unwrap();
        let skipped = skipped.unwrap();
        assert_eq!((start, skipped.next, skipped.resume_at, skipped.skipped(), skipped.progress), (50, 10, 50, 40, Some(9)));
        let (start, recreated) = resolve_start(&key(), Some(499), (0, 100), OnMissingOffsets::Skip).unwrap();
        assert_eq!((start, recreated.unwrap().skipped()), (0, 0));
    }

    #[test]
    fn rereads_carry_a_new_generation() {
        let resume = Resume::new(OnMissingOffsets::Fail);
        let all = |_: &PartitionKey| true;
        assert_eq!(resume.take_rereads(all), (vec![], 0));
        let shard = PartitionKey::new("clicks", 4);
        let g = resume.request_reread(&[key(), shard.clone()]);
        assert_eq!(resume.take_rereads(|k| k.topic.as_ref() == "orders"), (vec![key()], g), "each reader takes its own");
        assert_eq!(resume.take_rereads(all), (vec![shard], g));
        assert_eq!(resume.take_rereads(all), (vec![], g));
        resume.resumed(&key(), Some(3), (0, 10)).unwrap();
        assert_eq!(resume.point(&key()), Some(3));
        resume.committed(&key(), 8);
        assert_eq!(resume.point(&key()), Some(8));
    }
}
