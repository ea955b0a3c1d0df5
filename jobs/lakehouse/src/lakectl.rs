//! `lakectl`: operator tool: create topics, produce the reference data, read watermarks, infer
//! a schema file from a topic or stream, and the container health check. (Benchmarks are `lakebench`, which the image does not ship.)

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use job_runtime::{BrokerArgs, ExitCode};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use reference_data::{create_topics, produce, MembershipGenerator, OrderGenerator, ProduceOptions};

/// Operator tool: topics, reference data, benchmarks.
#[derive(Debug, Parser)]
#[command(name = "lakectl", version)]
struct Args {
    #[command(flatten)]
    kafka: BrokerArgs,
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
        max_age: Duration,
    },
    /// The pipeline at a glance: per table its version, files, rows, size, partitions, small
    /// files and last commit (from the log, no data read); per job how far behind it is. Exit 1
    /// when a given limit is crossed (a gate for a scheduled task).
    ///
    /// Example: lakectl status --config schemas/pipeline.toml --max-lag 100000 --json
    Status {
        /// The pipeline configuration.
        #[arg(long, default_value = "schemas/pipeline.toml")]
        config: PathBuf,
        /// Only this table (jobs left out).
        #[arg(long)]
        table: Option<String>,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
        /// Fail when raw-append is more messages than this behind.
        #[arg(long)]
        max_lag: Option<u64>,
        /// Fail when stream-join or merge-upsert is more versions than this behind a source.
        #[arg(long)]
        max_versions_behind: Option<u64>,
        /// Fail when a table's share of files compaction would merge is above this (0 to 1).
        #[arg(long)]
        max_small_file_share: Option<f64>,
        /// Fail when stream-join's watermark trails the clock by more than this.
        #[arg(long, value_parser = humantime::parse_duration)]
        max_watermark_age: Option<Duration>,
        /// A running job's heartbeat file (its --health-file); shows its heartbeat and last
        /// commit. Repeat for several.
        #[arg(long = "heartbeat")]
        heartbeats: Vec<PathBuf>,
        /// Fail when a job with a --heartbeat file last committed longer ago than this (or never).
        #[arg(long, value_parser = humantime::parse_duration)]
        max_progress_age: Option<Duration>,
    },
    /// One self-contained HTML file (no script, no network): the status, the lag, and per table
    /// its rows and commits over time, file sizes now and around its last compaction, and its
    /// partition sizes, from the Delta logs.
    ///
    /// Example: lakectl report --config schemas/pipeline.toml --out report.html
    Report {
        /// The pipeline configuration.
        #[arg(long, default_value = "schemas/pipeline.toml")]
        config: PathBuf,
        /// Where to write the page.
        #[arg(long, default_value = "report.html")]
        out: PathBuf,
    },
    /// Soak: the whole pipeline at once (continuous raw-append fed by a producer, stream-join
    /// and merge-upsert in loops, compaction, vacuum and manifests on a schedule) while random
    /// processes are SIGKILLed at random times; then drained, and every table compared with
    /// what was produced. Prints a JSON report; exit 0 when every check held.
    ///
    /// Kafka and the lake are the configuration's (LAKEHOUSE_* overrides apply; the jobs inherit
    /// the environment). Example: lakectl soak --config schemas/pipeline.toml --duration 30m
    Soak {
        /// The pipeline configuration (the reference pipeline's shape).
        #[arg(long, default_value = "schemas/pipeline.toml")]
        config: PathBuf,
        /// How long the pipeline runs under kills before it is drained.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Shortest pause between two kills.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        kill_min: Duration,
        /// Longest pause between two kills.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        kill_max: Duration,
        /// The soak fails with fewer processes killed mid-run.
        #[arg(long, default_value_t = 100)]
        min_kills: u64,
        /// Orders produced per second (membership changes keep pace in event time).
        #[arg(long, default_value_t = 100)]
        orders_per_second: u64,
        /// Partitions of the topics (created when missing).
        #[arg(long, default_value_t = 2)]
        partitions: i32,
        /// Seed of the data and of the kills.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Propose a schema file from the first messages of a Kafka topic or a Kinesis stream, for
    /// review: types from the values seen, nested objects flattened into columns read through
    /// dotted json_name paths, `required` where every sample held a value; what cannot be a
    /// column yet (arrays, deeper objects, conflicting types) is a comment with the reason.
    /// Kinesis uses the AWS chain and AWS_ENDPOINT_URL.
    ///
    /// Example: lakectl infer-schema --topic orders --messages 1000 --out schemas/order.schema.toml
    InferSchema {
        /// Kafka topic to sample.
        #[arg(long, conflicts_with = "stream", required_unless_present = "stream")]
        topic: Option<String>,
        /// Kinesis stream to sample.
        #[arg(long)]
        stream: Option<String>,
        /// Messages to sample.
        #[arg(long, default_value_t = 1000)]
        messages: usize,
        /// Where to write the schema file (standard output when unset).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Between the keys of a flattened column's name.
        #[arg(long, default_value = "_")]
        separator: String,
        /// Levels of nested objects flattened into columns (1: top-level fields only).
        #[arg(long, default_value_t = 3)]
        max_depth: usize,
        /// What arrays and objects deeper than --max-depth become: json (their text) or typed
        /// (array and struct columns of the types their values show).
        #[arg(long, default_value = "json", value_parser = ["json", "typed"])]
        nested: String,
    },
}

/// Runs lakectl with `args` (the first is the program name).
pub fn main(args: Vec<OsString>) -> ! {
    let args = Args::parse_from(args);
    let result = match args.command {
        Command::CreateTopics { topics, partitions } => tokio_block(async {
            let names: Vec<&str> = topics.iter().map(String::as_str).collect();
            create_topics(&args.kafka.brokers, &names, partitions).await.map_err(|e| e.to_string())
        }),
        Command::Produce { orders_topic, members_topic, orders, members, rate, seed, bad_fraction } => (|| -> Result<(), String> {
            let mut gen = OrderGenerator::reference(seed);
            let opts = ProduceOptions { count: orders, rate, bad_fraction };
            let r = produce(&args.kafka.brokers, &orders_topic, &opts, || gen.next_message()).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({"topic": orders_topic, "messages": r.messages, "malformed": r.malformed, "bytes": r.bytes, "seconds": r.elapsed.as_secs_f64()})
            );
            let mut gen = MembershipGenerator::reference(seed);
            let opts = ProduceOptions { count: members, rate, bad_fraction };
            let r = produce(&args.kafka.brokers, &members_topic, &opts, || gen.next_message()).map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::json!({"topic": members_topic, "messages": r.messages, "malformed": r.malformed, "bytes": r.bytes, "seconds": r.elapsed.as_secs_f64()})
            );
            Ok(())
        })(),
        Command::Watermarks { topic, scan } => print_watermarks(&args.kafka.brokers, &topic, scan),
        Command::Healthcheck { file, max_age } => match job_runtime::check_health(&file, max_age) {
            Ok(beat) => {
                println!("healthy: {} (pid {})", beat.job, beat.pid);
                Ok(())
            }
            Err(e) => Err(format!("unhealthy: {e}")),
        },
        Command::Status {
            config,
            table,
            json,
            max_lag,
            max_versions_behind,
            max_small_file_share,
            max_watermark_age,
            heartbeats,
            max_progress_age,
        } => {
            let thresholds = status::Thresholds { max_lag, max_versions_behind, max_small_file_share, max_watermark_age, max_progress_age };
            print_status(&config, table.as_deref(), &heartbeats, json, &thresholds)
        }
        Command::Report { config, out } => write_report(&config, &out),
        Command::InferSchema { topic, stream, messages, out, separator, max_depth, nested } => {
            let nested = if nested == "typed" { pipeline_config::NestedAs::Typed } else { pipeline_config::NestedAs::Json };
            let flatten = pipeline_config::Flatten { separator, max_depth, nested };
            infer_schema(&args.kafka.brokers, topic, stream, messages, out, &flatten)
        }
        Command::Soak { config, duration, kill_min, kill_max, min_kills, orders_per_second, partitions, seed } => {
            let executable = std::env::current_exe().map_err(|e| format!("the lakehouse executable: {e}"));
            executable.and_then(|executable| {
                let options = soak::SoakOptions {
                    config,
                    duration,
                    kill_every: (kill_min, kill_max),
                    min_kills,
                    orders_per_second,
                    partitions,
                    seed,
                    executable,
                };
                run_soak(&options)
            })
        }
    };
    if let Err(e) = result {
        eprintln!("lakectl: {e}");
        ExitCode::Failure.exit();
    }
    ExitCode::Success.exit()
}

/// Prints the pipeline's status; a crossed limit is a failure.
fn print_status(
    config: &std::path::Path,
    table: Option<&str>,
    heartbeats: &[PathBuf],
    json: bool,
    thresholds: &status::Thresholds,
) -> Result<(), String> {
    let config = pipeline_config::PipelineConfig::load(config).map_err(|e| format!("configuration: {e}"))?;
    let status = tokio_block(status::gather(&config, table, heartbeats, thresholds)).map_err(|e| format!("status: {e}"))?;
    if json {
        println!("{}", serde_json::to_string(&status).map_err(|e| e.to_string())?);
    } else {
        print!("{}", status::render(&status));
    }
    match status.breaches.len() {
        0 => Ok(()),
        n => Err(format!("status: {n} limit(s) crossed")),
    }
}

/// Writes the HTML report of the pipeline.
fn write_report(config: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let config = pipeline_config::PipelineConfig::load(config).map_err(|e| format!("configuration: {e}"))?;
    let page = tokio_block(async {
        let status = status::gather(&config, None, &[], &status::Thresholds::default()).await?;
        status::report_html(&config, &status).await
    })
    .map_err(|e| format!("report: {e}"))?;
    std::fs::write(out, page).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}

/// Runs a soak and prints its report; a failed check is a failure.
fn run_soak(options: &soak::SoakOptions) -> Result<(), String> {
    let report = soak::run(options).map_err(|e| format!("soak: {e}"))?;
    println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    match report.passed {
        true => Ok(()),
        false => Err("soak: a check failed, a run ended unexpectedly or too few processes were killed (see the report)".into()),
    }
}

/// Samples the source, infers its schema and writes the file.
fn infer_schema(
    brokers: &str,
    topic: Option<String>,
    stream: Option<String>,
    limit: usize,
    out: Option<PathBuf>,
    flatten: &pipeline_config::Flatten,
) -> Result<(), String> {
    let (origin, samples) = match (topic, stream) {
        (Some(topic), _) => {
            let kafka = pipeline_config::KafkaConfig { brokers: brokers.to_string(), ..Default::default() };
            let context = kafka_source::LakeContext::new(None);
            let samples =
                kafka_source::sample_messages(&kafka_source::client_config(&kafka), context, &topic, limit).map_err(|e| e.to_string())?;
            (format!("topic {topic}"), samples)
        }
        (None, Some(stream)) => {
            let records = tokio_block(async { kinesis_source::KinesisReader::from_env(&stream).await.sample(limit).await })
                .map_err(|e| e.to_string())?;
            (format!("stream {stream}"), records.into_iter().map(|r| r.data).collect())
        }
        (None, None) => return Err("give --topic or --stream".into()),
    };
    if samples.is_empty() {
        return Err(format!("{origin} holds no message to infer a schema from"));
    }
    let mut inference = json_arrow::SchemaInference::for_flatten(flatten);
    for message in &samples {
        inference.observe(message);
    }
    let text = inference.render(&origin);
    match out {
        Some(path) => std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

fn tokio_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime").block_on(f)
}

/// Prints low/high watermarks per partition; with `scan`, also the offsets really read.
pub fn print_watermarks(brokers: &str, topic: &str, scan: bool) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "lakectl-watermarks")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let partitions: Vec<i32> = md.topics().first().map(|t| t.partitions().iter().map(|p| p.id()).collect()).unwrap_or_default();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        let mut line = serde_json::json!({"topic": topic, "partition": p, "low": low, "high": high});
        if scan {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| e.to_string())?;
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
            let (mut first, mut last, mut count) = (None, None, 0u64);
            while let Some(Ok(m)) = consumer.poll(Duration::from_secs(2)) {
                first.get_or_insert(m.offset());
                last = Some(m.offset());
                count += 1;
            }
            line["first_offset"] = serde_json::json!(first);
            line["last_offset"] = serde_json::json!(last);
            line["messages"] = serde_json::json!(count);
        }
        println!("{line}");
    }
    Ok(())
}
