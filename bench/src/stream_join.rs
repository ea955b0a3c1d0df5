//! `lakebench stream-join`: input rows/s and peak RSS of a trigger-once stream-join over
//! reference-shaped raw tables, and in the same run the reference job's query in PySpark
//! (local mode, file sources over the same Parquet files, same watermarks, `availableNow`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::Args;

use crate::common::median;
use delta_io::{open_or_create, AppendCommit, TableSpec, WithCommitParts};

/// Options of the stream-join benchmark.
#[derive(Debug, Args)]
pub struct JoinBench {
    /// Orders.
    #[arg(long, default_value_t = 10_000_000)]
    orders: u64,
    /// Membership changes.
    #[arg(long, default_value_t = 100_000)]
    members: u64,
    /// Owners (join keys).
    #[arg(long, default_value_t = 1000)]
    owners: u64,
    /// Hours the event times span.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    /// Commits each raw table is written in (the stream's batches).
    #[arg(long, default_value_t = 100)]
    commits: u64,
    /// Runs per measurement; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// stream-join's max_files_per_batch (each input commit is one file).
    #[arg(long, default_value_t = 1000)]
    max_files_per_batch: usize,
    /// Skip the PySpark reference.
    #[arg(long)]
    no_spark: bool,
    /// Python with `pyspark` (scripts/setup.sh --bench installs it; needs a JDK).
    #[arg(long, default_value_os_t = crate::maintenance::default_python())]
    python: PathBuf,
    /// Scratch folder (removed at the end unless `--keep`).
    #[arg(long, default_value = "target/bench-stream-join")]
    work_dir: PathBuf,
    /// Keep the scratch folder (the raw tables, and the last run's output and checkpoint).
    #[arg(long)]
    keep: bool,
    /// Folder with the schema files.
    #[arg(long, default_value = "schemas")]
    schemas: PathBuf,
}

const SPARK: &str = r#"
import sys, time
from pyspark.sql import SparkSession
from pyspark.sql.functions import expr
orders, members, out, ckpt = sys.argv[1:5]
spark = (SparkSession.builder.master("local[2]").appName("bench")
         .config("spark.sql.shuffle.partitions", "4").config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
o_schema = spark.read.parquet(orders).schema
m_schema = spark.read.parquet(members).schema
started = time.perf_counter()
o = (spark.readStream.schema(o_schema).parquet(orders).withWatermark("timestamp", "3 hours").alias("o"))
m = (spark.readStream.schema(m_schema).parquet(members)
     .selectExpr("order_owner AS m_owner", "membership", "timestamp AS m_ts").withWatermark("m_ts", "2 hours"))
j = o.join(m, expr("o.order_owner = m_owner AND o.timestamp >= m_ts AND o.timestamp <= m_ts + interval 1 hour"))
q = (j.select("order_id", "order_owner", "order_value", "timestamp", "membership").writeStream
     .format("parquet").option("path", out).option("checkpointLocation", ckpt).trigger(availableNow=True).start())
q.awaitTermination()
print('{"seconds": %f}' % (time.perf_counter() - started))
"#;

impl JoinBench {
    /// Builds the inputs, then times stream-join (and PySpark) and prints a report.
    pub fn run(&self) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(&self.work_dir);
        std::fs::create_dir_all(&self.work_dir).map_err(|e| e.to_string())?;
        let work = std::fs::canonicalize(&self.work_dir).map_err(|e| e.to_string())?;
        let started = Instant::now();
        crate::common::tokio_block(self.build(&work.join("lake")))?;
        let rows_in = self.orders + self.members;
        println!(
            "stream-join benchmark: {} orders, {} membership changes, {} owners over {} h, {} commits per table (built in {:.0}s), median of {} runs",
            self.orders,
            self.members,
            self.owners,
            self.hours,
            self.commits,
            started.elapsed().as_secs_f64(),
            self.runs
        );
        for f in ["order.schema.toml", "member.schema.toml", "curated.schema.toml"] {
            std::fs::copy(self.schemas.join(f), work.join(f)).map_err(|e| format!("{}: {e}", self.schemas.join(f).display()))?;
        }
        let config = work.join("pipeline.toml");
        std::fs::write(&config, config_text(&work.join("lake"), self.max_files_per_batch)).map_err(|e| e.to_string())?;
        let mut ours = Vec::new();
        let mut spark = Vec::new();
        for run in 0..self.runs {
            let _ = std::fs::remove_dir_all(work.join("lake/curated"));
            let _ = std::fs::remove_dir_all(work.join("lake/_checkpoints"));
            let t = Instant::now();
            let out = crate::common::job_command("stream-join")
                .arg("--config")
                .arg(&config)
                .env("RUST_LOG", "warn")
                .output()
                .map_err(|e| format!("stream-join: {e}"))?;
            let seconds = t.elapsed().as_secs_f64();
            if !out.status.success() {
                return Err(format!("stream-join failed: {}", String::from_utf8_lossy(&out.stderr)));
            }
            let summary: serde_json::Value =
                String::from_utf8_lossy(&out.stdout).lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
            let rss = summary["peak_rss_bytes"].as_u64().unwrap_or(0);
            let rows_out = summary["rows_out"]["curated"].as_u64().unwrap_or(0);
            let state = |side: &str| summary["details"][format!("state_rows_{side}")].as_u64().unwrap_or(0);
            let mut line = format!(
                "    run {}: stream-join {seconds:.2}s, {rows_out} rows out ({:.0} MB), state at the end {} + {} rows, peak RSS {:.0} MB",
                run + 1,
                folder_bytes(&work.join("lake/curated")) as f64 / 1e6,
                state("left"),
                state("right"),
                rss as f64 / 1e6
            );
            ours.push((seconds, rss));
            if !self.no_spark {
                let s = self.spark_once(&work, run)?;
                line.push_str(&format!("; PySpark {s:.2}s"));
                spark.push(s);
            }
            println!("{line}");
        }
        let secs = median(ours.iter().map(|o| o.0));
        let rss = median(ours.iter().map(|o| o.1 as f64));
        println!("stream-join: {:.0} input rows/s, peak RSS {:.0} MB", rows_in as f64 / secs, rss / 1e6);
        if !spark.is_empty() {
            let s = median(spark.iter().copied());
            println!("PySpark:     {:.0} input rows/s; stream-join is {:.1}x faster", rows_in as f64 / s, s / secs);
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(())
    }

    fn spark_once(&self, work: &Path, run: usize) -> Result<f64, String> {
        let out = work.join(format!("spark-out-{run}"));
        let ckpt = work.join(format!("spark-ckpt-{run}"));
        let result = Command::new(&self.python)
            .args(["-c", SPARK])
            .arg(work.join("lake/raw/order"))
            .arg(work.join("lake/raw/member"))
            .arg(&out)
            .arg(&ckpt)
            .output()
            .map_err(|e| format!("{}: {e}", self.python.display()))?;
        let _ = std::fs::remove_dir_all(&out);
        let _ = std::fs::remove_dir_all(&ckpt);
        if !result.status.success() {
            return Err(format!(
                "PySpark failed (pyspark and a JDK needed; scripts/setup.sh --bench): {}",
                String::from_utf8_lossy(&result.stderr)
            ));
        }
        String::from_utf8_lossy(&result.stdout)
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|v| v["seconds"].as_f64())
            .ok_or_else(|| "PySpark printed no timing".to_string())
    }

    /// Unpartitioned raw tables (so Spark's file source reads the same Parquet files), written
    /// in `commits` interleaved commits with event times advancing across them.
    async fn build(&self, lake: &Path) -> Result<(), String> {
        let ts = || Field::new("timestamp", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true);
        let order_schema = Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Int64, true),
            Field::new("order_owner", DataType::Utf8, true),
            Field::new("order_value", DataType::Int64, true),
            ts(),
        ]));
        let member_schema = Arc::new(Schema::new(vec![
            Field::new("order_owner", DataType::Utf8, true),
            Field::new("membership", DataType::Utf8, true),
            ts(),
        ]));
        let spec = |path: &str, schema: &Arc<Schema>| TableSpec {
            location: lake.join(path).display().to_string(),
            name: path.replace('/', "_"),
            schema: schema.clone(),
            partition_columns: Vec::new(),
            properties: Default::default(),
            storage: Default::default(),
        };
        let mut orders = open_or_create(&spec("raw/order", &order_schema)).await.map_err(|e| e.to_string())?;
        let mut members = open_or_create(&spec("raw/member", &member_schema)).await.map_err(|e| e.to_string())?;
        let start = 1_649_073_600_000_000i64; // 2022-04-04 12:00 UTC
        let span = (self.hours * 3_600_000_000) as i64;
        let owner = |i: u64| format!("owner-{:04}", (i * 7919) % self.owners);
        let tiers = ["bronze", "silver", "gold", "platinum"];
        for c in 0..self.commits {
            let (o0, o1) = (self.orders * c / self.commits, self.orders * (c + 1) / self.commits);
            let (m0, m1) = (self.members * c / self.commits, self.members * (c + 1) / self.commits);
            let at = |i: u64, n: u64| start + (span as f64 * i as f64 / n.max(1) as f64) as i64;
            let o = RecordBatch::try_new(
                order_schema.clone(),
                vec![
                    Arc::new(Int64Array::from_iter_values((o0..o1).map(|i| i as i64))),
                    Arc::new(StringArray::from_iter_values((o0..o1).map(owner))),
                    Arc::new(Int64Array::from_iter_values((o0..o1).map(|i| (i % 1000) as i64))),
                    Arc::new(TimestampMicrosecondArray::from_iter_values((o0..o1).map(|i| at(i, self.orders))).with_timezone("UTC")),
                ],
            )
            .map_err(|e| e.to_string())?;
            let m = RecordBatch::try_new(
                member_schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values((m0..m1).map(owner))),
                    Arc::new(StringArray::from_iter_values((m0..m1).map(|i| tiers[(i % 4) as usize]))),
                    Arc::new(TimestampMicrosecondArray::from_iter_values((m0..m1).map(|i| at(i, self.members))).with_timezone("UTC")),
                ],
            )
            .map_err(|e| e.to_string())?;
            for (table, schema, batch) in [(&mut orders, &order_schema, o), (&mut members, &member_schema, m)] {
                let adds = delta_io::write_files(table, schema.clone(), &[], &[batch], 128 << 20).await.map_err(|e| e.to_string())?;
                AppendCommit::new("bench", c as i64).with_adds(adds).commit(table).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

fn config_text(lake: &Path, max_files: usize) -> String {
    format!(
        r#"[lake]
root = "{lake}"
[kafka]
brokers = "127.0.0.1:9092"
[tables.raw_order]
path = "raw/order"
schema = "order.schema.toml"
[tables.raw_member]
path = "raw/member"
schema = "member.schema.toml"
{curated}
{join}max_files_per_batch = {max_files}
"#,
        lake = lake.display(),
        curated = include_str!("../../tests/fixtures/curated_hourly.tables.toml"),
        join = include_str!("../../tests/fixtures/reference_join.toml"),
        max_files = max_files
    )
}

/// Bytes of the files under `path`.
fn folder_bytes(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => folder_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}
