//! Reading shards with GetRecords within Kinesis's limits: at most 5 calls per second per shard,
//! throttling answered with back-off (counted), expired iterators renewed from the last
//! position, KPL aggregates expanded, and each user record numbered in its shard.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::config::retry::RetryConfig;
use aws_sdk_kinesis::error::{DisplayErrorContext, SdkError};
use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;

use crate::kpl::{deaggregate, Deaggregated, UserRecord};
use crate::position::{ShardPosition, StartAt};
use crate::shards::ShardInfo;

/// GetRecords takes at most 10,000 records per call.
pub const MAX_RECORDS_PER_CALL: i32 = 10_000;
/// Five GetRecords calls per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// Transient failures (5xx, timeouts) retried this many times before the run fails.
const TRANSIENT_ATTEMPTS: u32 = 5;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A Kinesis call failed.
#[derive(Debug, thiserror::Error)]
#[error("kinesis {operation} on stream {stream}: {}", DisplayErrorContext(source.as_ref()))]
pub struct KinesisError {
    /// The API operation (as named in IAM).
    pub operation: &'static str,
    /// The stream.
    pub stream: String,
    /// The SDK's error.
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Counters of what reading met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// GetRecords calls answered with ProvisionedThroughputExceeded (and retried).
    pub throttles: u64,
    /// Shard iterators that expired and were renewed from the last position.
    pub iterator_renewals: u64,
    /// Records that began like a KPL aggregate but did not check out (kept whole).
    pub malformed_aggregates: u64,
}

/// A user record read from a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    /// Its number in the shard (the progress counter).
    pub counter: i64,
    /// Sequence number of the Kinesis record holding it.
    pub sequence: String,
    /// Its index within that record (0 unless KPL-aggregated).
    pub sub_sequence: u64,
    /// Partition key.
    pub partition_key: String,
    /// Approximate arrival time (Unix ms).
    pub arrival_ms: Option<i64>,
    /// Payload.
    pub data: Vec<u8>,
}

/// Reading state of one shard.
#[derive(Debug)]
pub struct ShardCursor {
    /// Shard id.
    pub shard: String,
    /// ListShards showed the shard closed (split or merged away): no record will arrive.
    closed: bool,
    start: StartAt,
    iterator: Option<String>,
    skip_through: Option<(String, u64)>,
    next_counter: i64,
    last_call: Option<Instant>,
    /// The last user record handed out.
    pub position: Option<ShardPosition>,
    /// The shard is closed and has been read to its end.
    pub finished: bool,
    /// How far the last answer was behind the stream's tip (ms).
    pub millis_behind: Option<i64>,
}

impl ShardCursor {
    /// A cursor on `shard` starting at `start`.
    pub fn new(shard: &ShardInfo, start: StartAt) -> Self {
        let skip_through = start.skip_through().map(|(s, i)| (s.to_string(), i));
        let position = match &start {
            StartAt::After(p) => Some(p.clone()),
            _ => None,
        };
        Self {
            shard: shard.id.clone(),
            closed: shard.closed,
            next_counter: start.next_counter(),
            finished: position.as_ref().is_some_and(|p| p.finished),
            start,
            iterator: None,
            skip_through,
            last_call: None,
            position,
            millis_behind: None,
        }
    }

    /// Nothing left to read now: the shard is finished, or the last answer was empty at the tip.
    pub fn caught_up(&self, last_read: usize) -> bool {
        self.finished || (last_read == 0 && self.millis_behind == Some(0))
    }

    /// Where a new iterator starts: after the last record handed out, else the configured start.
    fn restart(&mut self) -> StartAt {
        match &self.position {
            Some(p) => {
                self.skip_through = Some((p.sequence.clone(), p.sub_sequence));
                StartAt::After(p.clone())
            }
            None => self.start.clone(),
        }
    }

    async fn pace(&mut self) {
        if let Some(wait) = self.last_call.and_then(|t| MIN_CALL_INTERVAL.checked_sub(t.elapsed())) {
            tokio::time::sleep(wait).await;
        }
        self.last_call = Some(Instant::now());
    }
}

/// Reads one stream.
#[derive(Debug, Clone)]
pub struct KinesisReader {
    client: Client,
    stream: String,
    /// What reading met so far.
    pub stats: ReadStats,
}

impl KinesisReader {
    /// A reader of `stream` configured from the AWS chain (region, credentials,
    /// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_KINESIS`).
    pub async fn from_env(stream: &str) -> Self {
        Self::new(&aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await, stream)
    }

    /// A reader of `stream` with `config`. The SDK's own retries are off: this reader backs off
    /// on throttling itself, so it can count it.
    pub fn new(config: &aws_config::SdkConfig, stream: &str) -> Self {
        let kinesis = aws_sdk_kinesis::config::Builder::from(config).retry_config(RetryConfig::standard().with_max_attempts(1)).build();
        Self { client: Client::from_conf(kinesis), stream: stream.to_string(), stats: ReadStats::default() }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    fn failed<E: std::error::Error + Send + Sync + 'static>(&self, operation: &'static str) -> impl FnOnce(E) -> KinesisError + '_ {
        move |e| KinesisError { operation, stream: self.stream.clone(), source: Box::new(e) }
    }

    /// Every shard the stream lists (open, and closed ones still in retention).
    pub async fn list_shards(&self) -> Result<Vec<ShardInfo>, KinesisError> {
        let mut shards = Vec::new();
        let mut next: Option<String> = None;
        loop {
            // ListShards takes the stream name or a token, never both.
            let call = match &next {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let out = call.send().await.map_err(self.failed("ListShards"))?;
            shards.extend(out.shards().iter().map(|s| ShardInfo {
                id: s.shard_id().to_string(),
                parent: s.parent_shard_id().map(String::from),
                adjacent_parent: s.adjacent_parent_shard_id().map(String::from),
                closed: s.sequence_number_range().is_some_and(|r| r.ending_sequence_number().is_some()),
            }));
            match out.next_token() {
                Some(token) => next = Some(token.to_string()),
                None => return Ok(shards),
            }
        }
    }

    async fn iterator(&self, shard: &str, start: &StartAt) -> Result<Option<String>, KinesisError> {
        let call = self.client.get_shard_iterator().stream_name(&self.stream).shard_id(shard);
        let call = match start {
            StartAt::TrimHorizon => call.shard_iterator_type(ShardIteratorType::TrimHorizon),
            StartAt::Latest => call.shard_iterator_type(ShardIteratorType::Latest),
            StartAt::AtTimestamp(ms) => call.shard_iterator_type(ShardIteratorType::AtTimestamp).timestamp(DateTime::from_millis(*ms)),
            StartAt::After(p) => call.shard_iterator_type(ShardIteratorType::AtSequenceNumber).starting_sequence_number(&p.sequence),
        };
        let out = call.send().await.map_err(self.failed("GetShardIterator"))?;
        Ok(out.shard_iterator().map(String::from))
    }

    /// The next user records of `cursor`'s shard (at most `limit` Kinesis records per call);
    /// empty when there is nothing new or the shard is finished.
    pub async fn read(&mut self, cursor: &mut ShardCursor, limit: i32) -> Result<Vec<KinesisRecord>, KinesisError> {
        let mut attempt = 0u32;
        while !cursor.finished {
            cursor.pace().await;
            if cursor.iterator.is_none() {
                let start = cursor.restart();
                cursor.iterator = self.iterator(&cursor.shard, &start).await?;
                if cursor.iterator.is_none() {
                    cursor.finished = true;
                    break;
                }
            }
            let iterator = cursor.iterator.clone().unwrap_or_default();
            let answer = self.client.get_records().shard_iterator(iterator).limit(limit.clamp(1, MAX_RECORDS_PER_CALL)).send().await;
            let error = match answer {
                Ok(out) => return Ok(self.take(cursor, out)),
                Err(e) => e,
            };
            let service = error.as_service_error();
            if service.is_some_and(|e| e.is_provisioned_throughput_exceeded_exception()) {
                self.stats.throttles += 1;
                tracing::debug!(stream = %self.stream, shard = %cursor.shard, attempt, "GetRecords throttled; backing off");
            } else if service.is_some_and(|e| e.is_expired_iterator_exception()) {
                self.stats.iterator_renewals += 1;
                cursor.iterator = None;
                continue;
            } else if !transient(&error) || attempt >= TRANSIENT_ATTEMPTS {
                return Err(self.failed("GetRecords")(error));
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt = attempt.saturating_add(1);
        }
        Ok(Vec::new())
    }

    /// Up to `limit` user records from the start of the stream's shards (in shard order, each
    /// read to its tip before the next), for schema inference.
    pub async fn sample(&mut self, limit: usize) -> Result<Vec<KinesisRecord>, KinesisError> {
        let mut out = Vec::new();
        for shard in self.list_shards().await? {
            let mut cursor = ShardCursor::new(&shard, StartAt::TrimHorizon);
            while out.len() < limit {
                let records = self.read(&mut cursor, MAX_RECORDS_PER_CALL).await?;
                let read = records.len();
                out.extend(records.into_iter().take(limit - out.len()));
                if cursor.caught_up(read) {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Numbers the answer's user records, drops those committed before a restart, and moves
    /// the cursor on.
    fn take(&mut self, cursor: &mut ShardCursor, out: GetRecordsOutput) -> Vec<KinesisRecord> {
        cursor.millis_behind = out.millis_behind_latest();
        cursor.iterator = out.next_shard_iterator().map(String::from);
        let mut read = Vec::with_capacity(out.records().len());
        for record in out.records() {
            let sequence = record.sequence_number();
            let arrival_ms = record.approximate_arrival_timestamp().and_then(|t| t.to_millis().ok());
            let data = record.data().as_ref();
            let users = match deaggregate(data) {
                Deaggregated::Aggregated(users) => users,
                other => {
                    if let Deaggregated::Malformed(reason) = other {
                        self.stats.malformed_aggregates += 1;
                        tracing::warn!(stream = %self.stream, shard = %cursor.shard, sequence, reason, "KPL magic without a valid aggregate: kept as one record");
                    }
                    vec![UserRecord { partition_key: record.partition_key().unwrap_or_default().to_string(), data: data.to_vec() }]
                }
            };
            let skip = cursor.skip_through.take_if(|(s, _)| s == sequence).map(|(_, through)| through);
            for (index, user) in users.into_iter().enumerate() {
                let index = index as u64;
                if skip.is_some_and(|through| index <= through) {
                    continue;
                }
                let counter = cursor.next_counter;
                cursor.next_counter += 1;
                read.push(KinesisRecord {
                    counter,
                    sequence: sequence.to_string(),
                    sub_sequence: index,
                    partition_key: user.partition_key,
                    arrival_ms,
                    data: user.data,
                });
            }
        }
        if let Some(last) = read.last() {
            cursor.position = Some(ShardPosition {
                counter: last.counter,
                sequence: last.sequence.clone(),
                sub_sequence: last.sub_sequence,
                finished: false,
            });
        }
        // A closed shard read to its end: AWS ends the iterator; an empty answer at the tip
        // of a closed shard means the same (moto never ends the iterator).
        let at_closed_end = cursor.closed && read.is_empty() && out.records().is_empty() && cursor.millis_behind == Some(0);
        if cursor.iterator.is_none() || at_closed_end {
            cursor.finished = true;
            if let Some(p) = cursor.position.as_mut() {
                p.finished = true;
            }
        }
        read
    }
}

fn transient<E>(error: &SdkError<E, aws_sdk_kinesis::config::http::HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(e) => e.raw().status().is_server_error(),
        _ => false,
    }
}

/// 100 ms doubling per attempt, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.min(6))).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_ceiling() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(3), Duration::from_millis(800));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn a_resumed_cursor_continues_the_counter_and_a_finished_one_reads_nothing() {
        let done = ShardPosition { counter: 9, sequence: "5".into(), sub_sequence: 0, finished: true };
        let shard = |id: &str| ShardInfo { id: id.into(), parent: None, adjacent_parent: None, closed: false };
        let cursor = ShardCursor::new(&shard("shardId-1"), StartAt::After(done));
        assert!(cursor.finished && cursor.caught_up(0));
        let fresh = ShardCursor::new(&shard("shardId-2"), StartAt::TrimHorizon);
        assert_eq!(fresh.next_counter, 0);
        assert!(!fresh.caught_up(0), "an empty answer is the tip only when millis_behind says 0");
    }
}
