//! The Kinesis reader of a run: it lists each stream's shards, opens this task's share of the
//! readable ones (parents read to their end first) at their committed positions, reads them
//! in passes within Kinesis's per-shard limits, and hands slices to the run loop like the
//! Kafka reader does, with each shard's position.
//!
//! Trigger once reads every shard up to the records that arrived before the run started
//! (a producer that keeps putting does not keep the run alive), re-listing after a parent
//! finishes so its children are read in the same run; continuous re-lists periodically.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delta_io::read_progress;
use kafka_source::{FillOutcome, PartitionChunk, PartitionKey, RawBatch};
use kinesis_source::{
    expired_unread, readable, shard_number, KinesisReader, KinesisRecord, ShardCursor, ShardInfo, ShardPosition, ShardState, StartAt,
    MAX_RECORDS_PER_CALL,
};
use pipeline_config::{OnMissingOffsets, ShardAssignment};
use tokio::sync::mpsc::Sender;

use crate::feed::{BatchLimits, ReaderMsg, SourceNotes};
use crate::handover::Resume;
use crate::shard_positions::ShardPositions;
use crate::RawAppendError;

/// Continuous runs look for new shards (a reshard, another task's parent finished) this often.
const RELIST_EVERY: Duration = Duration::from_secs(10);
/// With nothing to read, wait this long before the next pass.
const IDLE_PAUSE: Duration = Duration::from_millis(500);

/// How the feed reads.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Where shards without progress start.
    pub start: StartAt,
    /// This task's share of the shards.
    pub assignment: ShardAssignment,
    /// What to do about shards that expired before they were read to their end.
    pub on_expired: OnMissingOffsets,
    /// Batch boundaries.
    pub limits: BatchLimits,
    /// Trigger once: records that arrived after this time (Unix ms) are left for the next run.
    pub cutoff_ms: Option<i64>,
    /// The job id (progress app ids).
    pub job_id: String,
}

/// One stream of the feed.
pub struct StreamFeed {
    reader: KinesisReader,
    table: (String, BTreeMap<String, String>),
    positions: ShardPositions,
    cursors: BTreeMap<i32, ShardCursor>,
    /// Shards this run is done with (finished, or read to the cutoff).
    done: BTreeSet<i32>,
    /// Shards finished in this run (the table may not show it yet).
    finished: BTreeSet<String>,
    expired_reported: BTreeSet<String>,
    throttles_reported: u64,
}

impl StreamFeed {
    /// A feed of the stream `reader` reads into the table at `location`.
    pub fn new(reader: KinesisReader, location: String, storage: BTreeMap<String, String>, positions: ShardPositions) -> Self {
        Self {
            reader,
            table: (location, storage),
            positions,
            cursors: BTreeMap::new(),
            done: BTreeSet::new(),
            finished: BTreeSet::new(),
            expired_reported: BTreeSet::new(),
            throttles_reported: 0,
        }
    }

    fn key(&self, shard: i32) -> PartitionKey {
        PartitionKey::new(self.reader.stream(), shard)
    }

    fn number(&self, id: &str) -> Result<i32, RawAppendError> {
        shard_number(id).ok_or_else(|| RawAppendError::ShardId { stream: self.reader.stream().to_string(), shard: id.to_string() })
    }

    /// Lists the shards and opens cursors on this task's readable ones; returns how many opened.
    async fn open_shards(&mut self, settings: &FeedSettings, resume: &Resume) -> Result<usize, RawAppendError> {
        let shards = self.reader.list_shards().await?;
        let (states, committed) = self.committed_states(&shards, settings).await?;
        self.check_expired(&shards, &states, settings)?;
        let mut opened = 0;
        for id in readable(&shards, &states) {
            let n = self.number(&id)?;
            if !settings.assignment.owns(n) || self.cursors.contains_key(&n) || self.done.contains(&n) {
                continue;
            }
            let info = shards.iter().find(|s| s.id == id).ok_or_else(|| RawAppendError::Internal(format!("{id} left the listing")))?;
            let position = committed.get(&id);
            resume.resumed_at(&self.key(n), position.map(|p| p.counter));
            let start = start_for(info, position, &states, &settings.start);
            tracing::info!(stage = "resume", stream = self.reader.stream(), shard = %id, start = ?start, "kinesis shard opened");
            self.cursors.insert(n, ShardCursor::new(info, start));
            opened += 1;
        }
        Ok(opened)
    }

    /// Each shard's state and committed position from the table (shards open here count as
    /// started; shards finished here as finished).
    async fn committed_states(
        &self,
        shards: &[ShardInfo],
        settings: &FeedSettings,
    ) -> Result<(BTreeMap<String, ShardState>, BTreeMap<String, ShardPosition>), RawAppendError> {
        let table = delta_io::open_table(&self.table.0, &self.table.1).await?;
        let mut ids: BTreeSet<String> = shards.iter().map(|s| s.id.clone()).collect();
        ids.extend(self.positions.shards(self.reader.stream()).await?);
        let (mut states, mut committed) = (BTreeMap::new(), BTreeMap::new());
        for id in ids {
            let n = self.number(&id)?;
            if self.finished.contains(&id) {
                states.insert(id, ShardState::Finished);
                continue;
            }
            if self.cursors.contains_key(&n) {
                states.insert(id, ShardState::Started);
                continue;
            }
            let key = self.key(n);
            let app_id = key.txn_app_id(&settings.job_id);
            let Some(counter) = read_progress(&table, &app_id).await? else { continue };
            let position = committed_position(&self.positions, &self.table, &key, &app_id, counter).await?;
            states.insert(id.clone(), if position.finished { ShardState::Finished } else { ShardState::Started });
            committed.insert(id, position);
        }
        Ok((states, committed))
    }

    /// Fails on shards that expired while unread, unless configured to go on (logged once).
    fn check_expired(
        &mut self,
        shards: &[ShardInfo],
        states: &BTreeMap<String, ShardState>,
        settings: &FeedSettings,
    ) -> Result<(), RawAppendError> {
        let expired: Vec<String> = expired_unread(shards, states).into_iter().filter(|id| !self.expired_reported.contains(id)).collect();
        if expired.is_empty() {
            return Ok(());
        }
        if settings.on_expired == OnMissingOffsets::Fail {
            return Err(RawAppendError::ShardsExpired { stream: self.reader.stream().to_string(), shards: expired });
        }
        tracing::warn!(stage = "resume", error_code = "shards_expired", stream = self.reader.stream(), shards = ?expired, "shards expired out of the stream's retention before they were read to their end; going on without their unread records (on_missing_offsets = \"skip\")");
        self.expired_reported.extend(expired);
        Ok(())
    }

    /// Reads each open shard once into `slice`; returns true when a shard finished (its
    /// children may be readable now).
    async fn read_pass(
        &mut self,
        slice: &mut RawBatch,
        notes: &mut SourceNotes,
        room: usize,
        cutoff_ms: Option<i64>,
    ) -> Result<bool, RawAppendError> {
        let mut any_finished = false;
        let shards: Vec<i32> = self.cursors.keys().copied().filter(|n| !self.done.contains(n)).collect();
        let per_shard = (room / shards.len().max(1)).clamp(1, MAX_RECORDS_PER_CALL as usize) as i32;
        for n in shards {
            let Some(cursor) = self.cursors.get_mut(&n) else { continue };
            let records = self.reader.read(cursor, per_shard).await?;
            let key = PartitionKey::new(self.reader.stream(), n);
            let read = records.len();
            let (chunk, last) = take_until(records, cutoff_ms);
            // Records past the cutoff are left for the next run, and so is the shard's end.
            let cut = chunk.len() < read;
            if let Some(ms) = cursor.millis_behind {
                notes.millis_behind.push((key.clone(), ms));
            }
            if cursor.finished && !cut {
                any_finished = true;
                self.done.insert(n);
                self.finished.insert(cursor.shard.clone());
                let mut end = cursor.position.clone().unwrap_or(ShardPosition {
                    counter: -1,
                    sequence: String::new(),
                    sub_sequence: 0,
                    finished: true,
                });
                end.finished = true;
                tracing::info!(stage = "read", stream = self.reader.stream(), shard = %cursor.shard, last = end.counter, "kinesis shard finished");
                notes.positions.push((key.clone(), end));
            } else if let Some(p) = last {
                notes.positions.push((key.clone(), p));
            }
            if cutoff_ms.is_some() && (cut || cursor.caught_up(read)) {
                self.done.insert(n);
            }
            if !chunk.is_empty() {
                slice.messages += chunk.len();
                slice.bytes += chunk.bytes();
                slice.chunks.insert(key, chunk);
            }
        }
        notes.throttles += self.reader.stats.throttles - self.throttles_reported;
        self.throttles_reported = self.reader.stats.throttles;
        Ok(any_finished)
    }

    /// Forgets shard `n`'s cursor: it is reopened from the table's progress at the next listing.
    fn reread(&mut self, n: i32) {
        self.cursors.remove(&n);
        self.done.remove(&n);
    }

    fn open(&self) -> usize {
        self.cursors.keys().filter(|n| !self.done.contains(n)).count()
    }
}

/// Where shard `info` starts: after its committed position; else a child of a shard this job
/// read starts at its beginning (its parent's records continue in it: a configured `latest` or
/// `at_timestamp` would skip what arrived before the child was opened), and a shard of the
/// stream as first seen at the configured start.
fn start_for(info: &ShardInfo, committed: Option<&ShardPosition>, states: &BTreeMap<String, ShardState>, configured: &StartAt) -> StartAt {
    match committed {
        Some(position) => StartAt::After(position.clone()),
        None if info.parents().any(|p| states.contains_key(p)) => StartAt::TrimHorizon,
        None => configured.clone(),
    }
}

/// The records that arrived by `cutoff_ms` (all without a cutoff) as a chunk, and the position
/// of the last one taken.
fn take_until(records: Vec<KinesisRecord>, cutoff_ms: Option<i64>) -> (PartitionChunk, Option<ShardPosition>) {
    let bytes = records.iter().map(|r| r.data.len()).sum();
    let mut chunk = PartitionChunk::with_capacity(records.len(), bytes);
    let mut last = None;
    for r in records {
        if cutoff_ms.is_some_and(|c| r.arrival_ms.is_some_and(|a| a > c)) {
            break;
        }
        chunk.push_sequenced(r.counter, r.arrival_ms, &r.partition_key, (&r.sequence, r.sub_sequence), &r.data);
        last = Some(ShardPosition { counter: r.counter, sequence: r.sequence, sub_sequence: r.sub_sequence, finished: false });
    }
    (chunk, last)
}

/// The Kinesis reader of a run.
pub struct KinesisFeed {
    /// The streams read.
    pub streams: Vec<StreamFeed>,
    /// How.
    pub settings: FeedSettings,
    /// Resume points shared with the run loop.
    pub resume: Arc<Resume>,
    /// Raised on SIGTERM.
    pub stop: Arc<AtomicBool>,
}

impl KinesisFeed {
    /// Reads until caught up (trigger once), stopped, or the run loop is gone; failures are
    /// sent to the run loop.
    pub async fn run(mut self, tx: Sender<ReaderMsg>) {
        if let Err(e) = self.pump(&tx).await {
            let _ = tx.send(ReaderMsg::Failed(e)).await;
        }
    }

    async fn pump(&mut self, tx: &Sender<ReaderMsg>) -> Result<(), RawAppendError> {
        let limits = self.settings.limits;
        let (mut messages, mut bytes, mut opened): (usize, usize, Option<Instant>) = (0, 0, None);
        let mut listed: Option<Instant> = None;
        // Throttles and lag of quiet passes travel with the next slice sent.
        let mut notes = SourceNotes::default();
        loop {
            let generation = self.apply_rereads(&mut listed);
            if self.stop.load(Ordering::SeqCst) {
                let _ = tx.send(slice_msg(RawBatch::default(), notes, FillOutcome::Stopped, true, generation)).await;
                return Ok(());
            }
            if listed.is_none_or(|t| t.elapsed() >= RELIST_EVERY) {
                for stream in &mut self.streams {
                    stream.open_shards(&self.settings, &self.resume).await?;
                }
                listed = Some(Instant::now());
            }
            let open: usize = self.streams.iter().map(StreamFeed::open).sum();
            if self.settings.cutoff_ms.is_some() && open == 0 {
                let _ = tx.send(slice_msg(RawBatch::default(), notes, FillOutcome::CaughtUp, true, generation)).await;
                return Ok(());
            }
            let mut slice = RawBatch::default();
            let room = limits.messages.saturating_sub(messages).max(1);
            for stream in &mut self.streams {
                if stream.read_pass(&mut slice, &mut notes, room, self.settings.cutoff_ms).await? {
                    listed = None; // a parent finished: its children may be readable
                }
            }
            let quiet = slice.is_empty() && notes.positions.is_empty();
            if quiet {
                if open == 0 {
                    tokio::time::sleep(IDLE_PAUSE).await;
                }
                if matches!(tx.try_send(ReaderMsg::Idle(Vec::new())), Err(tokio::sync::mpsc::error::TrySendError::Closed(_))) {
                    return Ok(());
                }
            } else {
                opened.get_or_insert_with(Instant::now);
                (messages, bytes) = (messages + slice.messages, bytes + slice.bytes);
            }
            let full = messages >= limits.messages || bytes >= limits.bytes;
            let late = opened.is_some_and(|t| limits.interval.is_some_and(|i| t.elapsed() >= i));
            if quiet && !late {
                continue;
            }
            if full || late {
                (messages, bytes, opened) = (0, 0, None);
            }
            let outcome = if full { FillOutcome::Full } else { FillOutcome::LatencyReached };
            if tx.send(slice_msg(slice, std::mem::take(&mut notes), outcome, full || late, generation)).await.is_err() {
                return Ok(());
            }
        }
    }

    /// Drops the cursors of shards the run loop asked to re-read; returns the generation the
    /// next slice carries.
    fn apply_rereads(&mut self, listed: &mut Option<Instant>) -> u64 {
        let names: BTreeSet<String> = self.streams.iter().map(|s| s.reader.stream().to_string()).collect();
        let (keys, generation) = self.resume.take_rereads(|k| names.contains(k.topic.as_ref()));
        for key in keys {
            if let Some(stream) = self.streams.iter_mut().find(|s| s.reader.stream() == key.topic.as_ref()) {
                tracing::info!(stage = "reread", stream = %key.topic, shard = key.partition, "shard re-read from its table progress");
                stream.reread(key.partition);
                *listed = None;
            }
        }
        generation
    }
}

fn slice_msg(slice: RawBatch, notes: SourceNotes, outcome: FillOutcome, end_of_batch: bool, generation: u64) -> ReaderMsg {
    ReaderMsg::Slice { slice, outcome, end_of_batch, generation, notes }
}

/// The committed position of shard `key`, whose progress `app_id` read as `counter`.
///
/// When the object `counter` names is gone, another task reading the shard (a rolling deploy)
/// may have committed past it and deleted it since the progress was read: the progress is read
/// again from the table's latest version. The error stands when that still names a missing
/// object (a lost `_lakehouse` folder).
async fn committed_position(
    positions: &ShardPositions,
    table: &(String, BTreeMap<String, String>),
    key: &PartitionKey,
    app_id: &str,
    counter: i64,
) -> Result<ShardPosition, RawAppendError> {
    match positions.read(key, counter).await {
        Err(RawAppendError::PositionMissing { .. }) => {
            let table = delta_io::open_table(&table.0, &table.1).await?;
            let latest = read_progress(&table, app_id).await?.unwrap_or(counter);
            positions.read(key, latest).await
        }
        read => read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>) -> ShardInfo {
        ShardInfo { id: id.into(), parent: parent.map(String::from), adjacent_parent: None, closed: false }
    }

    #[test]
    fn children_of_read_shards_start_at_their_beginning_whatever_the_configured_start() {
        let read = BTreeMap::from([("shardId-0".to_string(), ShardState::Finished)]);
        let child = shard("shardId-2", Some("shardId-0"));
        assert_eq!(start_for(&child, None, &read, &StartAt::Latest), StartAt::TrimHorizon);
        assert_eq!(
            start_for(&shard("shardId-1", None), None, &read, &StartAt::Latest),
            StartAt::Latest,
            "a shard of the stream as first seen"
        );
        let orphan = shard("shardId-5", Some("shardId-4"));
        assert_eq!(start_for(&orphan, None, &read, &StartAt::AtTimestamp(7)), StartAt::AtTimestamp(7), "its parent was never read here");
        let at = ShardPosition { counter: 3, sequence: "9".into(), sub_sequence: 0, finished: false };
        assert_eq!(start_for(&child, Some(&at), &read, &StartAt::Latest), StartAt::After(at.clone()));
    }

    #[test]
    fn a_cutoff_leaves_later_records_and_their_position_for_the_next_run() {
        let record = |counter: i64, arrival: i64| KinesisRecord {
            counter,
            sequence: format!("{}", 100 + counter),
            sub_sequence: 0,
            partition_key: "k".into(),
            arrival_ms: Some(arrival),
            data: b"{}".to_vec(),
        };
        let (chunk, last) = take_until(vec![record(0, 10), record(1, 20), record(2, 30)], Some(20));
        assert_eq!((chunk.len(), chunk.sequence(1)), (2, Some(("101", 0))));
        assert_eq!(last.map(|p| (p.counter, p.sequence)), Some((1, "101".to_string())));
        let (all, _) = take_until(vec![record(0, 10), record(1, 20)], None);
        assert_eq!(all.len(), 2);
    }

    /// A table whose progress for `app_id` is `counter`, with that counter's position written.
    async fn commit_position(table: &mut delta_io::DeltaTable, positions: &ShardPositions, key: &PartitionKey, app_id: &str, counter: i64) {
        let position = ShardPosition { counter, sequence: format!("{}", 1000 + counter), sub_sequence: 0, finished: false };
        positions.write(key, &position).await.expect("position written");
        delta_io::AppendCommit::new(app_id, counter).with_batch_progress().commit(table).await.expect("progress committed");
    }

    #[tokio::test]
    async fn a_position_superseded_and_deleted_after_the_progress_was_read_is_read_from_the_latest_progress() {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = dir.path().join("raw_click").to_string_lossy().into_owned();
        let schema =
            Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new("v", arrow::datatypes::DataType::Int64, true)]));
        let spec = delta_io::TableSpec {
            location: location.clone(),
            name: "raw_click".into(),
            schema,
            partition_columns: vec![],
            properties: BTreeMap::new(),
            storage: BTreeMap::new(),
        };
        let mut table = delta_io::open_or_create(&spec).await.expect("table");
        let positions = ShardPositions::new(&table, "raw-append");
        let key = PartitionKey::new("clicks", 2);
        let app_id = key.txn_app_id("raw-append");
        commit_position(&mut table, &positions, &key, &app_id, 10).await;
        let counter = read_progress(&table, &app_id).await.expect("progress").expect("recorded");
        // Between this task's read of the progress and its read of the position, the task that
        // reads the shard now commits further and deletes the position it superseded.
        commit_position(&mut table, &positions, &key, &app_id, 20).await;
        positions.forget(&key, counter).await.expect("superseded position deleted");

        let location = (location, BTreeMap::new());
        let position = committed_position(&positions, &location, &key, &app_id, counter).await.expect("the latest position");
        assert_eq!((position.counter, position.sequence.as_str()), (20, "1020"));

        // The latest progress's object gone too (a lost `_lakehouse` folder): the error stands.
        positions.forget(&key, 20).await.expect("deleted");
        let lost = committed_position(&positions, &location, &key, &app_id, counter).await;
        assert!(
            matches!(lost, Err(RawAppendError::PositionMissing { ref object, .. }) if object.ends_with("00000000000000000020.json")),
            "{lost:?}"
        );
    }
}
