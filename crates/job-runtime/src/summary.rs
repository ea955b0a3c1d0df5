//! The one-line JSON summary printed as the last stdout line of every run.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::instruments::*;
use crate::telemetry::{heartbeat, progressed};

/// What a run did; counters are filled by the job's events so logs and summary agree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Job name, e.g. `raw-append`.
    pub job: String,
    /// `once` or `continuous`.
    pub trigger: String,
    /// How the run ended.
    pub status: RunStatus,
    /// Messages or rows read.
    pub rows_in: u64,
    /// Rows written per table.
    pub rows_out: BTreeMap<String, u64>,
    /// Rows sent to the dead-letter table.
    pub dead_letters: u64,
    /// Rows later than the watermark (jobs with watermarks).
    pub late_rows: u64,
    /// Payload bytes read.
    pub bytes_in: u64,
    /// Batches committed.
    pub batches: u64,
    /// Last committed version per table.
    pub table_versions: BTreeMap<String, u64>,
    /// Wall time of the run.
    pub duration_ms: u64,
    /// rows_in per second of wall time.
    pub rows_per_sec: f64,
    /// Commit attempts that lost a race with another writer and were retried.
    pub commit_retries: u64,
    /// Object-store requests retried after a 5xx, 429, timeout or reset connection.
    pub store_retries: u64,
    /// Committed batches' wall time.
    pub batch_duration: BatchDurations,
    /// Messages between each Kafka partition's high watermark and what the run read, at its
    /// last batch (`topic[partition]` → messages).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub consumer_lag: BTreeMap<String, u64>,
    /// How far each Kinesis shard's last read was behind the stream's tip, in ms
    /// (`stream[shard number]` → MillisBehindLatest).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub millis_behind_latest: BTreeMap<String, u64>,
    /// Source reads the source throttled (Kinesis ProvisionedThroughputExceeded), backed off
    /// and retried.
    #[serde(skip_serializing_if = "is_zero")]
    pub source_throttles: u64,
    /// Commits of each source table not yet processed, at the last batch.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub source_version_lag: BTreeMap<String, u64>,
    /// Source offsets that were gone before they were read and skipped by configuration.
    #[serde(skip_serializing_if = "is_zero")]
    pub skipped_offsets: u64,
    /// Batches dropped because another task committed their partitions first (re-read).
    #[serde(skip_serializing_if = "is_zero")]
    pub batches_dropped: u64,
    /// Peak resident memory.
    pub peak_rss_bytes: Option<u64>,
    /// Job-specific figures (e.g. a maintenance operation's metrics).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Error text when status is `failed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Counters at the last EMF record (records carry what changed since).
    #[serde(skip)]
    emf_mark: EmfMark,
}

/// How a run ended (the summary's `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Batches were committed, or a continuous run ran until stopped with nothing left over.
    #[default]
    Ok,
    /// Trigger once found nothing new (exit 3).
    NoNewData,
    /// Stopped by SIGTERM/SIGINT between batches.
    Stopped,
    /// The run failed.
    Failed,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Wall time of committed batches.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BatchDurations {
    /// Sum over batches, in milliseconds.
    pub total_ms: u64,
    /// Slowest batch, in milliseconds.
    pub max_ms: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct EmfMark {
    rows_in: u64,
    rows_out: u64,
    dead_letters: u64,
    late_rows: u64,
    commit_retries: u64,
}

impl RunSummary {
    /// A summary for `job` run with `trigger`.
    pub fn new(job: &str, trigger: &str) -> Self {
        Self { job: job.into(), trigger: trigger.into(), ..Default::default() }
    }

    /// Counts rows (messages) and payload bytes read.
    pub fn read(&mut self, rows: u64, bytes: u64) {
        self.rows_in += rows;
        self.bytes_in += bytes;
        heartbeat();
        metrics::counter!(ROWS_IN).increment(rows);
        metrics::counter!(BYTES_IN).increment(bytes);
    }

    /// Counts rows written to `table` (committed or about to be, in the same batch).
    pub fn wrote(&mut self, table: &str, rows: u64) {
        *self.rows_out.entry(table.to_string()).or_default() += rows;
        metrics::counter!(ROWS_OUT, "table" => table.to_string()).increment(rows);
    }

    /// Counts rows rejected to a dead-letter table.
    pub fn dead_lettered(&mut self, rows: u64) {
        self.dead_letters += rows;
        metrics::counter!(DEAD_LETTERS).increment(rows);
    }

    /// Counts rows dropped as later than the watermark.
    pub fn late(&mut self, rows: u64) {
        self.late_rows += rows;
        metrics::counter!(LATE_ROWS).increment(rows);
    }

    /// Records a commit to `table`: its new version and how many times it was retried.
    pub fn committed(&mut self, table: &str, version: u64, retries: u64) {
        self.table_versions.insert(table.to_string(), version);
        self.commit_retries += retries;
        heartbeat();
        metrics::counter!(COMMIT_RETRIES, "table" => table.to_string()).increment(retries);
        metrics::gauge!(TABLE_VERSION, "table" => table.to_string()).set(version as f64);
    }

    /// Adds `count` to the counter `name` of the summary's details (job-specific figures).
    pub fn count_detail(&mut self, name: &str, count: u64) {
        let total = self.details.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0) + count;
        self.details.insert(name.into(), total.into());
    }

    /// Records the memory the job's state holds after a batch.
    pub fn state_size(&mut self, bytes: u64) {
        self.details.insert("state_bytes".into(), bytes.into());
        metrics::gauge!(STATE_BYTES).set(bytes as f64);
    }

    /// Counts source offsets skipped because they were gone (configured to skip).
    pub fn skipped(&mut self, offsets: u64) {
        self.skipped_offsets += offsets;
        metrics::counter!(SKIPPED_OFFSETS).increment(offsets);
    }

    /// Counts a batch dropped because another task committed its partitions first.
    pub fn batch_dropped(&mut self) {
        self.batches_dropped += 1;
        metrics::counter!(BATCHES_DROPPED).increment(1);
    }

    /// Records a Kafka partition's lag behind its high watermark.
    pub fn consumer_lag(&mut self, topic: &str, partition: i32, messages: u64) {
        self.consumer_lag.insert(format!("{topic}[{partition}]"), messages);
        metrics::gauge!(CONSUMER_LAG, "topic" => topic.to_string(), "partition" => partition.to_string()).set(messages as f64);
    }

    /// Records how far a Kinesis shard's last read was behind the stream's tip.
    pub fn millis_behind(&mut self, stream: &str, shard: i32, millis: u64) {
        self.millis_behind_latest.insert(format!("{stream}[{shard}]"), millis);
        metrics::gauge!(MILLIS_BEHIND_LATEST, "stream" => stream.to_string(), "shard" => shard.to_string()).set(millis as f64);
    }

    /// Counts source reads that were throttled and retried.
    pub fn throttled(&mut self, reads: u64) {
        self.source_throttles += reads;
        metrics::counter!(SOURCE_THROTTLES).increment(reads);
    }

    /// Records how many commits of source `table` are not processed yet.
    pub fn source_version_lag(&mut self, table: &str, versions: u64) {
        self.source_version_lag.insert(table.to_string(), versions);
        metrics::gauge!(SOURCE_VERSION_LAG, "table" => table.to_string()).set(versions as f64);
    }

    /// Closes a committed batch: counts it and its duration, and writes an EMF record when
    /// enabled.
    pub fn batch_done(&mut self, took: std::time::Duration) {
        self.batches += 1;
        let ms = took.as_millis() as u64;
        self.batch_duration.total_ms += ms;
        self.batch_duration.max_ms = self.batch_duration.max_ms.max(ms);
        progressed();
        metrics::counter!(BATCHES).increment(1);
        metrics::histogram!(BATCH_SECONDS).record(took.as_secs_f64());
        metrics::gauge!(LAST_BATCH_TIME)
            .set(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
        if let Some(sink) = crate::telemetry::emf() {
            self.emit_emf(sink, ms);
        }
    }

    /// One EMF record on stderr with what changed since the previous one.
    fn emit_emf(&mut self, sink: &crate::telemetry::EmfSink, batch_ms: u64) {
        let rows_out: u64 = self.rows_out.values().sum();
        let now = EmfMark {
            rows_in: self.rows_in,
            rows_out,
            dead_letters: self.dead_letters,
            late_rows: self.late_rows,
            commit_retries: self.commit_retries,
        };
        let mark = std::mem::replace(&mut self.emf_mark, now);
        let max_lag = self.consumer_lag.values().chain(self.source_version_lag.values()).copied().max().unwrap_or(0);
        let values: [(&str, &str, f64); 7] = [
            ("RowsIn", "Count", (now.rows_in - mark.rows_in) as f64),
            ("RowsOut", "Count", (now.rows_out - mark.rows_out) as f64),
            ("DeadLetters", "Count", (now.dead_letters - mark.dead_letters) as f64),
            ("LateRows", "Count", (now.late_rows - mark.late_rows) as f64),
            ("CommitRetries", "Count", (now.commit_retries - mark.commit_retries) as f64),
            ("BatchDuration", "Milliseconds", batch_ms as f64),
            ("MaxLag", "Count", max_lag as f64),
        ];
        let mut record = serde_json::Map::new();
        record.insert(
            "_aws".into(),
            serde_json::json!({
                "Timestamp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "CloudWatchMetrics": [{
                    "Namespace": sink.namespace,
                    "Dimensions": [["Job"]],
                    "Metrics": values.iter().map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit})).collect::<Vec<_>>(),
                }],
            }),
        );
        record.insert("Job".into(), self.job.clone().into());
        record.insert("Trigger".into(), self.trigger.clone().into());
        for (name, _, value) in values {
            record.insert(name.into(), value.into());
        }
        // One line, written whole, so it never interleaves with a log line.
        use std::io::Write;
        if let Ok(mut line) = serde_json::to_vec(&record) {
            line.push(b'\n');
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }

    /// Prints the summary as one JSON line on stdout (`duration_ms` set by the job).
    pub fn print(&mut self) {
        let secs = (self.duration_ms as f64 / 1000.0).max(1e-3);
        self.rows_per_sec = (self.rows_in as f64 / secs * 10.0).round() / 10.0;
        self.peak_rss_bytes = crate::peak_rss_bytes();
        self.store_retries = crate::store_retries();
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => println!("{{\"status\":\"failed\",\"error\":\"summary: {e}\"}}"),
        }
        if let Ok(value) = serde_json::to_value(&*self) {
            crate::telemetry::finished(value);
        }
    }
}

/// Logs the failure, prints a `failed` summary as the last stdout line and exits with `code`.
pub fn exit_failed(job: &str, message: &str, code: crate::ExitCode, started: std::time::Instant) -> ! {
    tracing::error!(error = message, job, "run failed");
    let mut summary = RunSummary::new(job, "");
    summary.status = RunStatus::Failed;
    summary.error = Some(message.to_string());
    summary.duration_ms = started.elapsed().as_millis() as u64;
    summary.print();
    code.exit()
}
