//! `lakebench raw-append`: raw-append throughput and peak memory against the consume-only
//! ceiling of a bare librdkafka consumer, measured in the same run on the same data.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{median, paired_share, RawRunArgs};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use reference_data::{create_topics, produce, MembershipGenerator, OrderGenerator, ProduceOptions};

/// Options of the raw-append benchmark.
#[derive(Debug, Args)]
pub struct RawAppendBench {
    /// Backlog sizes to measure (messages); several sizes show whether memory follows the backlog.
    #[arg(long, value_delimiter = ',', default_value = "5000000")]
    messages: Vec<u64>,
    /// Only time the consume-only ceiling on an existing topic (diagnostics); it reads the first
    /// `--messages` count, so pass the topic's size.
    #[arg(long)]
    ceiling_only: Option<String>,
    #[command(flatten)]
    run: RawRunArgs,
    /// Also measure a backlog with this fraction of malformed orders (0 to 1; 0 skips it).
    #[arg(long, default_value_t = 0.5)]
    bad_fraction: f64,
    /// `kafka`, or `kinesis`: the orders come from a Kinesis stream at `AWS_ENDPOINT_URL`
    /// (moto's), measured against a bare GetRecords loop (`--partitions` shards).
    #[arg(long, value_enum, default_value_t = Source::Kafka)]
    source: Source,
    #[command(flatten)]
    kafka: job_runtime::BrokerArgs,
}

/// Where the benchmark's orders come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// A Kafka topic.
    Kafka,
    /// A Kinesis stream.
    Kinesis,
}

/// The reference configuration's members-to-orders ratio (`lakectl produce` defaults: 50 per 1,000).
const MEMBERS_PER_ORDER: f64 = 0.05;

/// One backlog raw-append is measured on, with the shipped configuration's shape.
struct Case {
    name: &'static str,
    orders: String,
    members: String,
    /// Messages in both topics.
    messages: u64,
}

struct Measure {
    seconds: f64,
    peak_rss: u64,
}

impl RawAppendBench {
    /// Runs the benchmark and prints a report.
    pub fn run(&self) -> Result<(), String> {
        let brokers = self.kafka.brokers.as_str();
        if let Some(topic) = &self.ceiling_only {
            for style in [ConsumeStyle::Poll, ConsumeStyle::Batch] {
                let m = consume_only(brokers, topic, self.messages[0], style)?;
                println!("consume-only ({style:?}) {:.2}s", m.seconds);
            }
            return Ok(());
        }
        std::fs::create_dir_all(&self.run.work_dir).map_err(|e| e.to_string())?;
        let schemas = std::fs::canonicalize(&self.run.schemas).map_err(|e| format!("{}: {e}", self.run.schemas.display()))?;
        if self.source == Source::Kinesis {
            let work_dir = std::fs::canonicalize(&self.run.work_dir).map_err(|e| e.to_string())?;
            for &n in &self.messages {
                crate::raw_append_kinesis::run(brokers, &schemas, &work_dir, n, self.run.partitions, self.run.runs)?;
            }
            return Ok(());
        }
        println!(
            "raw-append benchmark: schemas/pipeline.toml on reference orders ({} partitions), median of {} runs",
            self.run.partitions, self.run.runs
        );
        for &n in &self.messages {
            let cases = self.produce_cases(brokers, n)?;
            let mut ceiling = Vec::new();
            let mut jobs: Vec<Vec<Measure>> = cases.iter().map(|_| Vec::new()).collect();
            for run in 0..self.run.runs {
                // The faster of the two consume styles is the ceiling of this run.
                let poll = consume_only(brokers, &cases[0].orders, n, ConsumeStyle::Poll)?;
                let batch = consume_only(brokers, &cases[0].orders, n, ConsumeStyle::Batch)?;
                println!("    run {}: consume-only poll {:.2}s, batched {:.2}s", run + 1, poll.seconds, batch.seconds);
                ceiling.push(if batch.seconds < poll.seconds { batch } else { poll });
                for (case, measures) in cases.iter().zip(jobs.iter_mut()) {
                    let m = self.raw_append_once(brokers, case, &schemas, run)?;
                    println!("    run {}: {} {:.2}s, peak RSS {:.0} MB", run + 1, case.name, m.seconds, m.peak_rss as f64 / 1e6);
                    measures.push(m);
                }
            }
            let c = median(ceiling.iter().map(|m| m.seconds));
            // Each run's messages/s, for the paired shares.
            let rates =
                |messages: u64, measures: &[Measure]| -> Vec<f64> { measures.iter().map(|m| messages as f64 / m.seconds).collect() };
            let ceiling_rates = rates(n, &ceiling);
            println!("{n} orders: consume-only ceiling {:.0} msg/s (median of {})", n as f64 / c, self.run.runs);
            println!("{:>34} {:>12} {:>14} {:>16} {:>16} {:>10}", "backlog", "messages", "msg/s", "% of ceiling", "% paired", "peak RSS");
            for (case, measures) in cases.iter().zip(&jobs) {
                let j = median(measures.iter().map(|m| m.seconds));
                let rss = median(measures.iter().map(|m| m.peak_rss as f64));
                let rate = case.messages as f64 / j;
                println!(
                    "{:>34} {:>12} {:>14.0} {:>15.0}% {:>15.0}% {:>8.0}MB",
                    case.name,
                    case.messages,
                    rate,
                    100.0 * rate / (n as f64 / c),
                    100.0 * paired_share(&rates(case.messages, measures), &ceiling_rates),
                    rss / 1e6
                );
            }
            if let [clean, _, dirty] = &jobs[..] {
                println!(
                    "malformed backlog: {:.0}% of the clean rate (ratio of medians), {:.0}% paired",
                    100.0 * median(clean.iter().map(|m| m.seconds)) / median(dirty.iter().map(|m| m.seconds)),
                    100.0 * paired_share(&rates(n, dirty), &rates(n, clean))
                );
            }
            println!("(paired: the median over runs of each run's own share, which cancels the machine's drift between runs)");
        }
        Ok(())
    }

    /// Produces the backlogs: reference orders with an empty members topic, with members at
    /// the reference ratio, and (with `--bad-fraction`) orders with malformed messages.
    fn produce_cases(&self, brokers: &str, n: u64) -> Result<Vec<Case>, String> {
        let name = |what: &str| format!("bench-{what}-{n}-{}", std::process::id());
        let (orders, bad_orders, no_members, members) = (name("orders"), name("bad-orders"), name("no-members"), name("members"));
        crate::common::tokio_block(create_topics(brokers, &[&orders, &bad_orders], self.run.partitions)).map_err(|e| e.to_string())?;
        crate::common::tokio_block(create_topics(brokers, &[&no_members, &members], 2)).map_err(|e| e.to_string())?;
        let mut gen = OrderGenerator::reference(7);
        produce(brokers, &orders, &ProduceOptions { count: n, rate: 0, bad_fraction: 0.0 }, || gen.next_message())
            .map_err(|e| e.to_string())?;
        let member_count = (n as f64 * MEMBERS_PER_ORDER) as u64;
        let mut gen = MembershipGenerator::reference(7);
        produce(brokers, &members, &ProduceOptions { count: member_count, rate: 0, bad_fraction: 0.0 }, || gen.next_message())
            .map_err(|e| e.to_string())?;
        let mut cases = vec![
            Case { name: "reference shape, members empty", orders: orders.clone(), members: no_members.clone(), messages: n },
            Case { name: "reference shape, members at 5%", orders, members, messages: n + member_count },
        ];
        if self.bad_fraction > 0.0 {
            let mut gen = OrderGenerator::reference(7);
            let opts = ProduceOptions { count: n, rate: 0, bad_fraction: self.bad_fraction };
            produce(brokers, &bad_orders, &opts, || gen.next_message()).map_err(|e| e.to_string())?;
            let label = if self.bad_fraction == 0.5 { "reference shape, 50% malformed" } else { "reference shape, malformed orders" };
            cases.push(Case { name: label, orders: bad_orders, members: no_members, messages: n });
        }
        Ok(cases)
    }

    /// One trigger-once run of the shipped `schemas/pipeline.toml` (its topics, lake and
    /// brokers replaced) on `case`'s backlog.
    fn raw_append_once(&self, brokers: &str, case: &Case, schemas: &Path, run: usize) -> Result<Measure, String> {
        let replaced = [
            ("topic = \"orders\"".to_string(), format!("topic = \"{}\"", case.orders)),
            ("topic = \"members\"".to_string(), format!("topic = \"{}\"", case.members)),
        ];
        let (seconds, peak_rss) = shipped_run(&self.run.work_dir, schemas, &format!("run-{run}"), brokers, (&replaced, &[]))?;
        Ok(Measure { seconds, peak_rss })
    }
}

/// `(from, to)` text edits, or `(path, text)` files.
pub(crate) type Edits = [(String, String)];

/// One trigger-once raw-append of the shipped `schemas/pipeline.toml` in a scratch folder under
/// `work_dir`, its lake and brokers replaced, the `(from, to)` edits applied and the extra
/// `(path, text)` files written beside it; returns the wall time and the peak RSS.
pub(crate) fn shipped_run(
    work_dir: &Path,
    schemas: &Path,
    tag: &str,
    brokers: &str,
    (edits, files): (&Edits, &Edits),
) -> Result<(f64, u64), String> {
    let dir = work_dir.join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(schemas).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::copy(entry.path(), dir.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    let config = dir.join("pipeline.toml");
    let mut body = std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let deployment = [
        ("root = \"lake\"".to_string(), format!("root = \"{}\"", dir.join("lake").display())),
        ("brokers = \"127.0.0.1:9092\"".to_string(), format!("brokers = \"{brokers}\"")),
    ];
    for (from, to) in edits.iter().chain(&deployment) {
        if !body.contains(from.as_str()) {
            return Err(format!("schemas/pipeline.toml no longer holds {from}: update the benchmark"));
        }
        body = body.replacen(from.as_str(), to, 1);
    }
    std::fs::write(&config, body).map_err(|e| e.to_string())?;
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    let started = Instant::now();
    let child = crate::common::job_command("raw-append")
        .arg("--config")
        .arg(&config)
        .arg("--trigger")
        .arg("once")
        .env("RUST_LOG", "warn,buoyant_kernel=off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start raw-append (build it first): {e}"))?;
    let (status, rss) = crate::common::wait_with_rusage(child)?;
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(format!("raw-append exited with {status}"));
    }
    Ok((seconds, rss))
}

/// How the bare consumer takes messages from librdkafka.
#[derive(Debug, Clone, Copy)]
enum ConsumeStyle {
    /// rust-rdkafka's `poll`, one message per call.
    Poll,
    /// `rd_kafka_consume_batch_queue`, up to 1024 messages per call.
    Batch,
}

/// Reads the whole topic with a bare consumer (no decoding, no writing), tuned for throughput
/// like raw-append's: the ceiling. Both styles are measured and the faster one counts.
fn consume_only(brokers: &str, topic: &str, expected: u64, style: ConsumeStyle) -> Result<Measure, String> {
    let started = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-consume-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "65536")
        .set("queued.min.messages", "1000000")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(30)).map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in md.topics()[0].partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let (mut count, mut bytes) = (0u64, 0u64);
    let timed_out = || started.elapsed() > Duration::from_secs(600);
    match style {
        ConsumeStyle::Poll => {
            while count < expected {
                match consumer.poll(Duration::from_millis(500)) {
                    Some(Ok(m)) => {
                        count += 1;
                        bytes += m.payload().map_or(0, |p| p.len() as u64);
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None if timed_out() => return Err("consume-only timed out".into()),
                    None => {}
                }
            }
        }
        ConsumeStyle::Batch => {
            use rdkafka::bindings as rdsys;
            // SAFETY: the queue reference is taken from a live client and destroyed before it.
            let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
            if queue.is_null() {
                return Err("no consumer queue".into());
            }
            let mut buffer: Vec<*mut rdsys::rd_kafka_message_t> = Vec::with_capacity(1024);
            let mut failure = None;
            while count < expected && failure.is_none() {
                // SAFETY: the buffer has room for its capacity; librdkafka writes at most that.
                let read = unsafe { rdsys::rd_kafka_consume_batch_queue(queue, 500, buffer.as_mut_ptr(), buffer.capacity()) };
                let read = usize::try_from(read).unwrap_or(0);
                // SAFETY: librdkafka initialised `read` entries; each is destroyed once.
                unsafe { buffer.set_len(read) };
                for &m in &buffer {
                    let message = unsafe { &*m };
                    if message.err == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        count += 1;
                        bytes += message.len as u64;
                    } else {
                        failure = Some(format!("{:?}", message.err));
                    }
                    unsafe { rdsys::rd_kafka_message_destroy(m) };
                }
                buffer.clear();
                if read == 0 && timed_out() {
                    failure = Some("consume-only timed out".into());
                }
            }
            // SAFETY: destroyed once, before the consumer.
            unsafe { rdsys::rd_kafka_queue_destroy(queue) };
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
    }
    std::hint::black_box(bytes);
    Ok(Measure { seconds: started.elapsed().as_secs_f64(), peak_rss: job_runtime::peak_rss_bytes().unwrap_or(0) })
}
