//! `lakebench maintenance`: manifest generation and compaction on a streaming-shaped table
//! (many append commits, one small file per partition each), against the Python `deltalake`
//! package's `generate()` and `optimize.compact()` on copies of the same table, in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::Args;

use crate::common::median;
use delta_io::{open_or_create, AppendCommit, TableSpec, WithCommitParts};

/// Options of the maintenance benchmark.
#[derive(Debug, Args)]
pub struct MaintenanceBench {
    /// Append commits in the table.
    #[arg(long, default_value_t = 1000)]
    commits: u64,
    /// Hourly partitions each commit writes one file to.
    #[arg(long, default_value_t = 100)]
    partitions: u64,
    /// Rows per file.
    #[arg(long, default_value_t = 10)]
    rows_per_file: u64,
    /// Runs per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Python with the `deltalake` package (scripts/setup.sh --bench installs it).
    #[arg(long, default_value_os_t = default_python())]
    python: PathBuf,
    /// Scratch folder (the table and its copies; removed at the end).
    #[arg(long, default_value = "target/bench-maintenance")]
    work_dir: PathBuf,
    /// Only build the table (at <work-dir>/source) and keep it, for profiling.
    #[arg(long)]
    build_only: bool,
    /// Reuse the table at <work-dir>/source from an earlier --build-only run.
    #[arg(long)]
    reuse: bool,
}

pub(crate) fn default_python() -> PathBuf {
    let cache = std::env::var_os("LAKEHOUSE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/lakehouse"));
    cache.join("venv/bin/python")
}

pub(crate) struct Timing {
    pub seconds: f64,
    pub peak_rss: u64,
}

const PYTHON: &str = r#"
import sys, time, json
from deltalake import DeltaTable
op, path = sys.argv[1], sys.argv[2]
started = time.perf_counter()
dt = DeltaTable(path)
if op == "manifest":
    dt.generate()
    out = {}
else:
    m = dt.optimize.compact()
    out = {"files_removed": m["numFilesRemoved"], "files_added": m["numFilesAdded"]}
out["seconds"] = time.perf_counter() - started
# VmHWM belongs to this process image (rusage's maxrss would include the parent's at fork).
with open("/proc/self/status") as f:
    out["peak_rss_bytes"] = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
print(json.dumps(out))
"#;

impl MaintenanceBench {
    /// Builds the table, then times both implementations and prints a report.
    pub fn run(&self) -> Result<(), String> {
        if self.build_only {
            let _ = std::fs::remove_dir_all(&self.work_dir);
            return crate::common::tokio_block(self.build_table(&self.work_dir.join("source")));
        }
        let probe =
            Command::new(&self.python).args(["-c", "import deltalake"]).output().map_err(|e| format!("{}: {e}", self.python.display()))?;
        if !probe.status.success() {
            return Err(format!("{} cannot import deltalake: run `bash scripts/setup.sh --bench` first", self.python.display()));
        }
        if !self.reuse {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
        std::fs::create_dir_all(&self.work_dir).map_err(|e| e.to_string())?;
        let work = std::fs::canonicalize(&self.work_dir).map_err(|e| e.to_string())?;
        let source = work.join("source");
        let started = Instant::now();
        if !self.reuse {
            crate::common::tokio_block(self.build_table(&source))?;
        }
        let files = self.commits * self.partitions;
        println!(
            "maintenance benchmark: {} commits x {} partitions = {files} files, {} rows (built in {:.0}s), median of {} runs",
            self.commits,
            self.partitions,
            files * self.rows_per_file,
            started.elapsed().as_secs_f64(),
            self.runs
        );

        let mut ours = (Vec::new(), Vec::new());
        let mut python = (Vec::new(), Vec::new());
        for run in 0..self.runs {
            for (op, slot_ours, slot_python) in [("manifest", &mut ours.0, &mut python.0), ("compact", &mut ours.1, &mut python.1)] {
                let copy = work.join(format!("ours-{op}-{run}"));
                copy_dir(&source, &copy)?;
                let mut cmd = crate::common::job_command("maintenance");
                cmd.arg(op).arg(&copy).env("RUST_LOG", "warn");
                slot_ours.push(timed(cmd, "maintenance")?);
                let _ = std::fs::remove_dir_all(&copy);

                let copy = work.join(format!("python-{op}-{run}"));
                copy_dir(&source, &copy)?;
                let mut cmd = Command::new(&self.python);
                cmd.args(["-c", PYTHON, op]).arg(&copy);
                slot_python.push(timed(cmd, "python deltalake")?);
                let _ = std::fs::remove_dir_all(&copy);
            }
            println!(
                "    run {}: manifest {:.2}s (python generate {:.2}s), compact {:.2}s (python {:.2}s)",
                run + 1,
                ours.0[run].seconds,
                python.0[run].seconds,
                ours.1[run].seconds,
                python.1[run].seconds
            );
        }
        println!(
            "{:<10} {:>10} {:>12} {:>14} {:>12} {:>12} {:>12}",
            "operation", "seconds", "files/s", "python secs", "speed-up", "peak RSS", "python RSS"
        );
        for (name, o, p) in [("manifest", &ours.0, &python.0), ("compact", &ours.1, &python.1)] {
            let (os, ps) = (median(o.iter().map(|t| t.seconds)), median(p.iter().map(|t| t.seconds)));
            let (orss, prss) = (median(o.iter().map(|t| t.peak_rss as f64)), median(p.iter().map(|t| t.peak_rss as f64)));
            println!(
                "{name:<10} {os:>10.2} {:>12.0} {ps:>14.2} {:>11.1}x {:>10.0}MB {:>10.0}MB",
                files as f64 / os,
                ps / os,
                orss / 1e6,
                prss / 1e6
            );
        }
        if !self.reuse {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(())
    }

    /// The streaming-shaped table: each commit appends one small file to every partition.
    async fn build_table(&self, location: &Path) -> Result<(), String> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("order_owner", DataType::Utf8, true),
            Field::new("order_value", DataType::Int64, true),
            Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("hour", DataType::Utf8, true),
        ]));
        let partition_columns = vec!["hour".to_string()];
        let spec = TableSpec {
            location: location.display().to_string(),
            name: "bench".into(),
            schema: schema.clone(),
            partition_columns: partition_columns.clone(),
            properties: Default::default(),
            storage: Default::default(),
        };
        let mut table = open_or_create(&spec).await.map_err(|e| e.to_string())?;
        let base = 1_700_000_000_000_000i64;
        let hours: Vec<String> = (0..self.partitions).map(|h| format!("2026-11-{:02}-{:02}", 1 + h / 24, h % 24)).collect();
        for commit in 0..self.commits {
            let rows = (self.partitions * self.rows_per_file) as usize;
            let id = |i: usize| (commit as usize * rows + i) as i64;
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values((0..rows).map(id))),
                    Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("owner-{}", i % 6)))),
                    Arc::new(Int64Array::from_iter_values((0..rows).map(|i| id(i) % 1000))),
                    Arc::new(TimestampMicrosecondArray::from_iter_values((0..rows).map(|i| base + id(i))).with_timezone("UTC")),
                    Arc::new(StringArray::from_iter_values((0..rows).map(|i| hours[i % hours.len()].as_str()))),
                ],
            )
            .map_err(|e| e.to_string())?;
            let adds =
                delta_io::write_files(&table, schema.clone(), &partition_columns, &[batch], 128 << 20).await.map_err(|e| e.to_string())?;
            AppendCommit::new("bench", commit as i64).with_adds(adds).commit(&mut table).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// Runs `cmd`; the time is the wall time of the process, or, when its last stdout line is JSON
/// with `seconds` (the Python side), that in-process figure, so interpreter start-up and imports
/// are not counted against the reference.
pub(crate) fn timed(mut cmd: Command, what: &str) -> Result<Timing, String> {
    use std::io::Read;
    let started = Instant::now();
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().map_err(|e| format!("{what}: {e}"))?;
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout).map_err(|e| e.to_string())?;
    }
    let (status, rss) = crate::common::wait_with_rusage(child)?;
    let wall = started.elapsed().as_secs_f64();
    if !status.success() {
        return Err(format!("{what} exited with {status}"));
    }
    let last = stdout.lines().last().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok());
    let seconds = last.as_ref().and_then(|v| v["seconds"].as_f64()).unwrap_or(wall);
    // Both sides report their own high-water mark (VmHWM): wait4's maxrss of a child forked
    // from this process starts at this process's size, which building the table inflates.
    let peak_rss = last.as_ref().and_then(|v| v["peak_rss_bytes"].as_u64()).unwrap_or(rss);
    Ok(Timing { seconds, peak_rss })
}

pub(crate) fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cp -a {} {} failed", from.display(), to.display()))
    }
}
