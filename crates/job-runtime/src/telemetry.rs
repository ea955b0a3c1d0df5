//! Operational outputs beside the logs: a Prometheus endpoint, CloudWatch Embedded Metric
//! Format records and a heartbeat file for container health checks. All are off unless asked
//! for; the counters themselves are kept by [`crate::RunSummary`], so the summary line, the
//! metrics and the EMF records always agree.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Command-line options every job binary takes (flattened into its clap arguments).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9464) at any path; meant for
    /// continuous runs.
    #[arg(long, env = "LAKEHOUSE_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Also write one CloudWatch Embedded Metric Format record per batch to stderr (CloudWatch
    /// Logs turns them into metrics, e.g. from an ECS task's awslogs stream).
    #[arg(long, env = "LAKEHOUSE_EMF")]
    pub emf: bool,
    /// CloudWatch namespace of the EMF metrics.
    #[arg(long, env = "LAKEHOUSE_EMF_NAMESPACE", default_value = "Lakehouse", value_name = "NAME")]
    pub emf_namespace: String,
    /// Keep this file's heartbeat current while the job runs (read by `lakectl healthcheck`).
    #[arg(long, env = "LAKEHOUSE_HEALTH_FILE", value_name = "PATH")]
    pub health_file: Option<PathBuf>,
}

/// Why telemetry could not start (reported as a configuration error, exit 78).
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The Prometheus exporter did not start (address in use, say).
    #[error("--metrics-addr / LAKEHOUSE_METRICS_ADDR {addr}: {message}")]
    Metrics { addr: SocketAddr, message: String },
    /// The heartbeat file cannot be written.
    #[error("--health-file / LAKEHOUSE_HEALTH_FILE {path}: {message} (point it at a writable path, e.g. /tmp/lakehouse/health.json)")]
    Health { path: String, message: String },
}

/// Batch durations are seconds to minutes; the default buckets stop at 10 s.
const BATCH_SECONDS_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0];

/// Where EMF records go, once enabled.
pub(crate) struct EmfSink {
    pub(crate) namespace: String,
}

static EMF: OnceLock<EmfSink> = OnceLock::new();

/// The EMF sink, when `--emf` was given.
pub(crate) fn emf() -> Option<&'static EmfSink> {
    EMF.get()
}

/// Unix milliseconds of the job loop's last sign of life (also while idle).
static HEARTBEAT_MS: AtomicU64 = AtomicU64::new(0);
/// Unix milliseconds of the job's last committed batch (0: none yet).
static PROGRESS_MS: AtomicU64 = AtomicU64::new(0);
/// The heartbeat writer, once `--health-file` was given.
static HEARTBEAT_WRITER: OnceLock<HeartbeatWriter> = OnceLock::new();
/// The run's summary once the process has printed it (a continuous job's at its stop).
static LAST_SUMMARY: Mutex<Option<serde_json::Value>> = Mutex::new(None);

/// Records the run's summary and writes the heartbeat file at once, so `lakectl status
/// --heartbeat` shows how a scheduled run ended (the file outlives the process).
pub(crate) fn finished(summary: serde_json::Value) {
    if let Ok(mut last) = LAST_SUMMARY.lock() {
        *last = Some(summary);
    }
    if let Some(writer) = HEARTBEAT_WRITER.get() {
        if let Err(e) = writer.write() {
            tracing::warn!(error = %e, "cannot write the heartbeat file");
        }
    }
}

/// Records that the job's loop is alive (cheap: one atomic store). Jobs call it between steps
/// and while waiting for input; the heartbeat file carries the latest time. Liveness is not
/// progress: see [`progressed`].
pub fn heartbeat() {
    HEARTBEAT_MS.store(now_ms(), Ordering::Relaxed);
}

/// Records that the job committed a batch (and is therefore alive).
pub fn progressed() {
    let now = now_ms();
    HEARTBEAT_MS.store(now, Ordering::Relaxed);
    PROGRESS_MS.store(now, Ordering::Relaxed);
}

/// The wall clock in Unix milliseconds (the heartbeat file's unit).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How often the heartbeat file is rewritten.
const HEARTBEAT_WRITE_EVERY: Duration = Duration::from_secs(5);

impl TelemetryArgs {
    /// Starts what was asked for: the Prometheus exporter (on its own thread and runtime, so a
    /// busy job still answers scrapes), EMF output and the heartbeat writer.
    pub fn install(&self, job: &str) -> Result<(), TelemetryError> {
        if let Some(addr) = self.metrics_addr {
            PrometheusBuilder::new()
                .with_http_listener(addr)
                .add_global_label("job", job)
                .set_buckets_for_metric(Matcher::Full("lakehouse_batch_duration_seconds".into()), BATCH_SECONDS_BUCKETS)
                .and_then(|b| b.install())
                .map_err(|e| TelemetryError::Metrics { addr, message: e.to_string() })?;
            crate::instruments::describe_metrics();
            tracing::info!(%addr, "serving Prometheus metrics");
        }
        if self.emf {
            let _ = EMF.set(EmfSink { namespace: self.emf_namespace.clone() });
        }
        if let Some(path) = &self.health_file {
            heartbeat();
            let writer = HeartbeatWriter { path: path.clone(), job: job.to_string(), pid: std::process::id(), started_ms: now_ms() };
            writer.write().map_err(|message| TelemetryError::Health { path: path.display().to_string(), message })?;
            let writer = HEARTBEAT_WRITER.get_or_init(|| writer);
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || loop {
                    std::thread::sleep(HEARTBEAT_WRITE_EVERY);
                    if let Err(e) = writer.write() {
                        tracing::warn!(error = %e, "cannot write the heartbeat file");
                    }
                })
                .map_err(|e| TelemetryError::Health { path: path.display().to_string(), message: e.to_string() })?;
        }
        Ok(())
    }
}

/// Writes the heartbeat file: the job, its pid and the time of its last progress.
struct HeartbeatWriter {
    path: PathBuf,
    job: String,
    pid: u32,
    started_ms: u64,
}

impl HeartbeatWriter {
    fn write(&self) -> Result<(), String> {
        let progress = PROGRESS_MS.load(Ordering::Relaxed);
        let beat = Heartbeat {
            job: self.job.clone(),
            pid: self.pid,
            started_unix_ms: self.started_ms,
            heartbeat_unix_ms: HEARTBEAT_MS.load(Ordering::Relaxed),
            last_progress_unix_ms: (progress > 0).then_some(progress),
            last_summary: LAST_SUMMARY.lock().ok().and_then(|s| s.clone()),
        };
        let body = serde_json::to_vec(&beat).map_err(|e| e.to_string())?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        // Written aside and renamed, so a health check never reads half a file.
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, body).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &self.path).map_err(|e| e.to_string())
    }
}

/// The heartbeat file's content.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Heartbeat {
    /// Job name.
    pub job: String,
    /// Process id of the job.
    pub pid: u32,
    /// When the process started (Unix ms).
    pub started_unix_ms: u64,
    /// The job loop's last sign of life (Unix ms): current while the loop runs, also idle.
    pub heartbeat_unix_ms: u64,
    /// The job's last committed batch (Unix ms); absent before the first. Alert on its age
    /// for a stalled pipeline; the health check uses the heartbeat.
    #[serde(default)]
    pub last_progress_unix_ms: Option<u64>,
    /// The summary line of the run, written as the process ends (absent while it runs; the
    /// next run of the job starts the file afresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_summary: Option<serde_json::Value>,
}

/// The heartbeat file at `path`.
pub fn read_heartbeat(path: &std::path::Path) -> Result<Heartbeat, Unhealthy> {
    let missing = |message: String| Unhealthy::Missing { path: path.display().to_string(), message };
    let body = std::fs::read(path).map_err(|e| missing(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| missing(format!("not a heartbeat file: {e}")))
}

/// Why a health check failed.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    /// No readable heartbeat file.
    #[error("no heartbeat at {path}: {message} (is a job running with --health-file / LAKEHOUSE_HEALTH_FILE set to this path?)")]
    Missing { path: String, message: String },
    /// The job's loop has not shown life for too long (stuck or stopped).
    #[error("{job} (pid {pid}) last showed life {age_secs} s ago, more than the allowed {max_age_secs} s: its loop is stuck or stopped")]
    Stale { job: String, pid: u32, age_secs: u64, max_age_secs: u64 },
}

/// Checks the heartbeat at `path`: healthy when the job's loop showed life within `max_age`
/// (an idle job stays healthy; progress is reported separately).
pub fn check_health(path: &std::path::Path, max_age: Duration) -> Result<Heartbeat, Unhealthy> {
    let beat = read_heartbeat(path)?;
    let age = Duration::from_millis(now_ms().saturating_sub(beat.heartbeat_unix_ms));
    if age > max_age {
        return Err(Unhealthy::Stale { job: beat.job, pid: beat.pid, age_secs: age.as_secs(), max_age_secs: max_age.as_secs() });
    }
    Ok(beat)
}
