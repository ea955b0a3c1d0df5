//! `lakectl`: operator tool for the local pipeline: create topics, produce the reference data,
//! and benchmark the jobs against their reference points.

mod bench;
mod bench_join;
mod bench_maintenance;
mod bench_merge;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use job_runtime::{init_logging, ExitCode};
use reference_data::{create_topics, produce, MembershipGenerator, OrderGenerator, ProduceOptions};

/// Operator tool: topics, reference data, benchmarks.
#[derive(Debug, Parser)]
#[command(name = "lakectl", version)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "LAKEHOUSE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create topics (existing ones are left alone).
    CreateTopics {
        /// Topic names.
        #[arg(required = true)]
        topics: Vec<String>,
        /// Partitions per topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
    /// Produce reference orders and membership changes.
    ///
    /// Example: lakectl produce --orders 10000 --members 200 --bad-fraction 0.01
    Produce {
        /// Orders topic.
        #[arg(long, default_value = "orders")]
        orders_topic: String,
        /// Members topic.
        #[arg(long, default_value = "members")]
        members_topic: String,
        /// Order messages to produce.
        #[arg(long, default_value_t = 1000)]
        orders: u64,
        /// Membership messages to produce.
        #[arg(long, default_value_t = 50)]
        members: u64,
        /// Messages per second per topic (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Seed of the generators.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Fraction of malformed messages (0 to 1).
        #[arg(long, default_value_t = 0.0)]
        bad_fraction: f64,
    },
    /// Print each partition's low and high watermarks (and, with --scan, the offsets actually held).
    Watermarks {
        /// Topic.
        topic: String,
        /// Also read every message and report the first and last offsets seen.
        #[arg(long)]
        scan: bool,
    },
    /// Container health check: exit 0 when the job writing the heartbeat file (a job run with
    /// --health-file / LAKEHOUSE_HEALTH_FILE) showed life within --max-age, 1 otherwise. An idle
    /// job stays healthy; alert on the file's last_progress_unix_ms for a stalled pipeline.
    ///
    /// Example (Dockerfile): HEALTHCHECK CMD ["lakectl", "healthcheck", "--max-age", "5m"]
    Healthcheck {
        /// The heartbeat file the job writes.
        #[arg(long, env = "LAKEHOUSE_HEALTH_FILE", default_value = "/tmp/lakehouse/health.json")]
        file: PathBuf,
        /// Longest time without a sign of life that is still healthy (longer than the slowest batch).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        max_age: std::time::Duration,
    },
    /// Benchmark raw-append against a bare librdkafka consumer on the same data.
    BenchRawAppend(bench::RawAppendBench),
    /// Benchmark manifest generation and compaction against the Python deltalake package.
    BenchMaintenance(bench_maintenance::MaintenanceBench),
    /// Benchmark stream-join against the reference query in PySpark.
    BenchStreamJoin(bench_join::JoinBench),
    /// Benchmark merge-upsert against the same merge done naively with Python deltalake.
    BenchMergeUpsert(bench_merge::MergeBench),
}

fn main() {
    init_logging();
    let args = Args::parse();
    let result = match args.command {
        Command::CreateTopics { topics, partitions } => tokio_block(async {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            create_topics(&args.brokers, &names, partitions).await.map_err(|e| e.to_string())
        }),
        Command::Produce { orders_topic, members_topic, orders, members, rate, seed, bad_fraction } => {
            (|| -> Result<(), String> {
                let mut gen = OrderGenerator::reference(seed);
                let opts = ProduceOptions { count: orders, rate, bad_fraction };
                let r = produce(&args.brokers, &orders_topic, &opts, || gen.next_message()).map_err(|e| e.to_string())?;
                println!("{}", serde_json::json!({"topic": orders_topic, "messages": r.messages, "malformed": r.malformed, "bytes": r.bytes, "seconds": r.elapsed.as_secs_f64()}));
                let mut gen = MembershipGenerator::reference(seed);
                let opts = ProduceOptions { count: members, rate, bad_fraction };
                let r = produce(&args.brokers, &members_topic, &opts, || gen.next_message()).map_err(|e| e.to_string())?;
                println!("{}", serde_json::json!({"topic": members_topic, "messages": r.messages, "malformed": r.malformed, "bytes": r.bytes, "seconds": r.elapsed.as_secs_f64()}));
                Ok(())
            })()
        }
        Command::Watermarks { topic, scan } => bench::print_watermarks(&args.brokers, &topic, scan),
        Command::Healthcheck { file, max_age } => match job_runtime::check_health(&file, max_age) {
            Ok(beat) => {
                println!("healthy: {} (pid {})", beat.job, beat.pid);
                Ok(())
            }
            Err(e) => Err(format!("unhealthy: {e}")),
        },
        Command::BenchRawAppend(b) => b.run(&args.brokers),
        Command::BenchMaintenance(b) => b.run(),
        Command::BenchStreamJoin(b) => b.run(),
        Command::BenchMergeUpsert(b) => b.run(),
    };
    if let Err(e) = result {
        eprintln!("lakectl: {e}");
        ExitCode::Failure.exit();
    }
}

fn tokio_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime").block_on(f)
}

/// The folder holding the job binaries (lakectl's own folder).
fn bin_dir() -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default()
}
