//! `lakebench merge-upsert`: upsert a batch of changes (10% new keys, 90% updates of keys
//! spread over a few of the target's hourly partitions) into a large target, against the same
//! merge done naively with the Python `deltalake` package on a copy, in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use clap::Args;
use delta_io::{open_or_create, AppendCommit, TableSpec, WithCommitParts};

use crate::common::median;
use crate::maintenance::{copy_dir, default_python, timed};

/// Options of the merge benchmark.
#[derive(Debug, Args)]
pub struct MergeBench {
    /// Rows in the target (one per key).
    #[arg(long, default_value_t = 50_000_000)]
    target_rows: u64,
    /// Hourly partitions the target spans.
    #[arg(long, default_value_t = 240)]
    partitions: u64,
    /// Changed rows in the batch.
    #[arg(long, default_value_t = 1_000_000)]
    changes: u64,
    /// Partitions whose keys the updates hit (spread evenly over the target).
    #[arg(long, default_value_t = 10)]
    touched: u64,
    /// Share of new keys among the changes.
    #[arg(long, default_value_t = 0.1)]
    new_fraction: f64,
    /// Runs per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the Python reference.
    #[arg(long)]
    no_python: bool,
    /// Python with the `deltalake` package (scripts/setup.sh --bench installs it).
    #[arg(long, default_value_os_t = default_python())]
    python: PathBuf,
    /// Scratch folder (removed at the end).
    #[arg(long, default_value = "target/bench-merge")]
    work_dir: PathBuf,
}

const PYTHON: &str = r#"
import sys, time, json
from deltalake import DeltaTable, QueryBuilder
target, source = sys.argv[1], sys.argv[2]
started = time.perf_counter()
changes = QueryBuilder().register("s", DeltaTable(source)).execute("SELECT * FROM s")
m = (DeltaTable(target)
     .merge(source=changes, predicate="t.order_id = s.order_id", source_alias="s", target_alias="t")
     .when_matched_update_all()
     .when_not_matched_insert_all()
     .execute())
out = {"seconds": time.perf_counter() - started, "files_scanned": m.get("num_target_files_scanned"),
       "files_rewritten": m.get("num_target_files_removed"), "updated": m.get("num_target_rows_updated"),
       "inserted": m.get("num_target_rows_inserted")}
with open("/proc/self/status") as f:
    out["peak_rss_bytes"] = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
print(json.dumps(out))
"#;

const HOUR: i64 = 3_600_000_000;
const BASE: i64 = 1_700_006_400_000_000;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, true),
        Field::new("order_owner", DataType::Utf8, true),
        Field::new("order_value", DataType::Int64, true),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
        Field::new("membership", DataType::Utf8, true),
        Field::new("hour", DataType::Utf8, true),
    ]))
}

const COLUMNS: &str = include_str!("../../tests/fixtures/curated.schema.toml");

const PIPELINE: &str = r#"
[lake]
root = "lake"
[tables.changes]
path = "changes"
schema = "columns.schema.toml"
partitions = [{ column = "hour", source = "field", field = "timestamp", format = "%Y%m%d%H" }]
[tables.processed]
path = "processed"
schema = "columns.schema.toml"
partitions = [{ column = "hour", source = "field", field = "timestamp", format = "%Y%m%d%H" }]
[merge_upsert]
source = "changes"
target = "processed"
key = ["order_id"]
sequence = "timestamp"
"#;

/// One run's figures.
struct Run {
    seconds: f64,
    peak_rss: u64,
    scanned: u64,
    rewritten: u64,
}

impl MergeBench {
    /// Builds target and changes, then times both implementations and prints a report.
    pub fn run(&self) -> Result<(), String> {
        if !self.no_python {
            let probe = Command::new(&self.python)
                .args(["-c", "import deltalake"])
                .output()
                .map_err(|e| format!("{}: {e}", self.python.display()))?;
            if !probe.status.success() {
                return Err(format!("{} cannot import deltalake: run `bash scripts/setup.sh --bench` first", self.python.display()));
            }
        }
        let _ = std::fs::remove_dir_all(&self.work_dir);
        std::fs::create_dir_all(&self.work_dir).map_err(|e| e.to_string())?;
        let work = std::fs::canonicalize(&self.work_dir).map_err(|e| e.to_string())?;
        std::fs::write(work.join("columns.schema.toml"), COLUMNS).map_err(|e| e.to_string())?;
        std::fs::write(work.join("pipeline.toml"), PIPELINE).map_err(|e| e.to_string())?;
        let lake = work.join("built");
        let started = Instant::now();
        crate::common::tokio_block(self.build(&lake))?;
        let files_in_target = std::fs::read_dir(lake.join("processed")).map(|d| d.count()).unwrap_or(0);
        println!(
            "merge benchmark: {} changes ({:.0}% new keys, updates over {} of {} hourly partitions) into {} rows ({} partition folders), built in {:.0}s, median of {} runs",
            self.changes,
            self.new_fraction * 100.0,
            self.touched,
            self.partitions,
            self.target_rows,
            files_in_target.saturating_sub(1),
            started.elapsed().as_secs_f64(),
            self.runs
        );
        let (mut ours, mut python) = (Vec::new(), Vec::new());
        for run in 0..self.runs {
            let copy = work.join(format!("ours-{run}"));
            copy_dir(&lake, &copy)?;
            let mut cmd = crate::common::job_command("merge-upsert");
            cmd.arg("--config").arg(work.join("pipeline.toml")).arg("--lake-root").arg(&copy).env("RUST_LOG", "warn");
            let summary = run_json(cmd)?;
            let t = timed_summary(&summary)?;
            let _ = std::fs::remove_dir_all(&copy);
            let details = &summary["details"];
            let r = Run {
                seconds: t.0,
                peak_rss: t.1,
                scanned: details["files_scanned"].as_u64().unwrap_or(0),
                rewritten: details["files_rewritten"].as_u64().unwrap_or(0),
            };
            print!(
                "    run {}: merge-upsert {:.2}s, {} files scanned, {} rewritten, {:.0} MB",
                run + 1,
                r.seconds,
                r.scanned,
                r.rewritten,
                r.peak_rss as f64 / 1e6
            );
            ours.push(r);
            if !self.no_python {
                let copy = work.join(format!("python-{run}"));
                copy_dir(&lake, &copy)?;
                let mut cmd = Command::new(&self.python);
                cmd.args(["-c", PYTHON]).arg(copy.join("processed")).arg(copy.join("changes"));
                let t = timed(cmd, "python deltalake")?;
                let _ = std::fs::remove_dir_all(&copy);
                print!(" | python {:.2}s, {:.0} MB", t.seconds, t.peak_rss as f64 / 1e6);
                python.push(Run { seconds: t.seconds, peak_rss: t.peak_rss, scanned: 0, rewritten: 0 });
            }
            println!();
        }
        let secs = median(ours.iter().map(|r| r.seconds));
        let rss = median(ours.iter().map(|r| r.peak_rss as f64));
        println!("{:<14} {:>9} {:>12} {:>10} {:>10} {:>10}", "", "seconds", "changes/s", "scanned", "rewritten", "peak RSS");
        println!(
            "{:<14} {secs:>9.2} {:>12.0} {:>10} {:>10} {:>8.0}MB",
            "merge-upsert",
            self.changes as f64 / secs,
            ours[0].scanned,
            ours[0].rewritten,
            rss / 1e6
        );
        if !python.is_empty() {
            let (ps, prss) = (median(python.iter().map(|r| r.seconds)), median(python.iter().map(|r| r.peak_rss as f64)));
            println!("{:<14} {ps:>9.2} {:>12.0} {:>10} {:>10} {:>8.0}MB", "python naive", self.changes as f64 / ps, "-", "-", prss / 1e6);
            println!("ratio: {:.2}x the time, {:.2}x the memory of the naive Python merge", secs / ps, rss / prss);
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    /// The target (keys in time order, one file per hourly partition) and one commit of changes.
    async fn build(&self, lake: &Path) -> Result<(), String> {
        let schema = schema();
        let partition_columns = vec!["hour".to_string()];
        let spec = |name: &str| TableSpec {
            location: lake.join(name).display().to_string(),
            name: name.into(),
            schema: schema.clone(),
            partition_columns: partition_columns.clone(),
            properties: Default::default(),
            storage: Default::default(),
        };
        let per_hour = self.target_rows.div_ceil(self.partitions) as i64;
        let step = HOUR / per_hour.max(1);
        let row = |id: i64, ts: i64, value: i64| (id, format!("owner-{}", id % 1000), value, ts);
        let mut target = open_or_create(&spec("processed")).await.map_err(|e| e.to_string())?;
        for hour in 0..self.partitions as i64 {
            let ids = (hour * per_hour)..((hour + 1) * per_hour).min(self.target_rows as i64);
            let rows: Vec<_> = ids.map(|id| row(id, BASE + hour * HOUR + (id - hour * per_hour) * step, id % 1000)).collect();
            let batch = to_batch(&schema, &rows)?;
            let adds =
                delta_io::write_files(&target, schema.clone(), &partition_columns, &[batch], 512 << 20).await.map_err(|e| e.to_string())?;
            AppendCommit::new("bench", hour).with_adds(adds).commit(&mut target).await.map_err(|e| e.to_string())?;
        }
        // Updates: keys of `touched` partitions spread over the table, each a second newer;
        // new keys after the last one, in the following hour.
        let new = (self.changes as f64 * self.new_fraction) as i64;
        let updates = self.changes as i64 - new;
        let stride = (self.partitions / self.touched.max(1)).max(1) as i64;
        let per_touched = updates / self.touched.max(1) as i64;
        let mut rows = Vec::with_capacity(self.changes as usize);
        for t in 0..self.touched as i64 {
            let hour = t * stride;
            let spacing = (per_hour / per_touched.max(1)).max(1);
            for i in 0..per_touched.min(per_hour) {
                let id = hour * per_hour + i * spacing;
                rows.push(row(id, BASE + hour * HOUR + (id - hour * per_hour) * step + 1_000_000, id % 1000 + 1));
            }
        }
        let last = self.target_rows as i64;
        for i in 0..new {
            rows.push(row(last + i, BASE + self.partitions as i64 * HOUR + i, 7));
        }
        let mut changes = open_or_create(&spec("changes")).await.map_err(|e| e.to_string())?;
        let batch = to_batch(&schema, &rows)?;
        let adds =
            delta_io::write_files(&changes, schema.clone(), &partition_columns, &[batch], 512 << 20).await.map_err(|e| e.to_string())?;
        AppendCommit::new("bench", 0).with_adds(adds).commit(&mut changes).await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn to_batch(schema: &SchemaRef, rows: &[(i64, String, i64, i64)]) -> Result<RecordBatch, String> {
    let hours = delta_io::format_timestamps(&TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.3)), "%Y%m%d%H");
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1.as_str()))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.3)).with_timezone("UTC")),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| ["gold", "silver", "bronze"][(r.0 % 3) as usize]))),
            Arc::new(hours),
        ],
    )
    .map_err(|e| e.to_string())
}

/// Runs a job and returns its JSON summary.
fn run_json(mut cmd: Command) -> Result<serde_json::Value, String> {
    let out = cmd.output().map_err(|e| format!("merge-upsert: {e}"))?;
    if !out.status.success() {
        return Err(format!("merge-upsert exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).ok_or_else(|| "merge-upsert printed no summary".to_string())
}

/// Wall seconds and peak RSS from a job summary.
fn timed_summary(summary: &serde_json::Value) -> Result<(f64, u64), String> {
    let ms = summary["duration_ms"].as_u64().ok_or("summary without duration_ms")?;
    Ok((ms as f64 / 1000.0, summary["peak_rss_bytes"].as_u64().unwrap_or(0)))
}
