//! `lakectl bench-raw-append`: raw-append throughput and peak memory against the consume-only
//! ceiling of a bare librdkafka consumer, measured in the same run on the same data.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use reference_data::{create_topics, produce, OrderGenerator, ProduceOptions};

/// Options of the raw-append benchmark.
#[derive(Debug, Args)]
pub struct RawAppendBench {
    /// Backlog sizes to measure (messages); several sizes show whether memory follows the backlog.
    #[arg(long, value_delimiter = ',', default_value = "5000000")]
    messages: Vec<u64>,
    /// Only time the consume-only ceiling on an existing topic (diagnostics).
    #[arg(long)]
    ceiling_only: Option<String>,
    /// Runs per size; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Partitions of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Folder with the schema files.
    #[arg(long, default_value = "schemas")]
    schemas: PathBuf,
    /// Scratch folder for lakes (removed after each run).
    #[arg(long, default_value = "target/bench")]
    work_dir: PathBuf,
}

struct Measure {
    seconds: f64,
    peak_rss: u64,
}

impl RawAppendBench {
    /// Runs the benchmark and prints a report.
    pub fn run(&self, brokers: &str) -> Result<(), String> {
        if let Some(topic) = &self.ceiling_only {
            for style in [ConsumeStyle::Poll, ConsumeStyle::Batch] {
                let m = consume_only(brokers, topic, self.messages[0], style)?;
                println!("consume-only ({style:?}) {:.2}s", m.seconds);
            }
            return Ok(());
        }
        std::fs::create_dir_all(&self.work_dir).map_err(|e| e.to_string())?;
        let schemas = std::fs::canonicalize(&self.schemas).map_err(|e| format!("{}: {e}", self.schemas.display()))?;
        println!("raw-append benchmark: reference orders, {} partitions, median of {} runs", self.partitions, self.runs);
        println!("{:>10} {:>14} {:>10} {:>12} {:>14} {:>10} {:>7} {:>12}", "messages", "ceiling msg/s", "MB/s", "ceiling RSS", "raw-append/s", "MB/s", "ratio", "peak RSS");
        for &n in &self.messages {
            let topic = format!("bench-orders-{}-{}", n, std::process::id());
            super::tokio_block(create_topics(brokers, &[&topic], self.partitions)).map_err(|e| e.to_string())?;
            let mut gen = OrderGenerator::reference(7);
            let produced = produce(brokers, &topic, &ProduceOptions { count: n, rate: 0, bad_fraction: 0.0 }, || gen.next_message()).map_err(|e| e.to_string())?;
            let mb = produced.bytes as f64 / 1e6;
            let mut ceiling = Vec::new();
            let mut job = Vec::new();
            for run in 0..self.runs {
                // The faster of the two consume styles is the ceiling of this run.
                let poll = consume_only(brokers, &topic, n, ConsumeStyle::Poll)?;
                let batch = consume_only(brokers, &topic, n, ConsumeStyle::Batch)?;
                println!("    run {}: consume-only poll {:.2}s, batched {:.2}s", run + 1, poll.seconds, batch.seconds);
                ceiling.push(if batch.seconds < poll.seconds { batch } else { poll });
                job.push(self.raw_append_once(brokers, &topic, &schemas, run)?);
            }
            let c = median(ceiling.iter().map(|m| m.seconds));
            let j = median(job.iter().map(|m| m.seconds));
            let rss = median(job.iter().map(|m| m.peak_rss as f64));
            let crss = median(ceiling.iter().map(|m| m.peak_rss as f64));
            println!(
                "{:>10} {:>14.0} {:>10.1} {:>10.0}MB {:>14.0} {:>10.1} {:>6.0}% {:>10.0}MB",
                n, n as f64 / c, mb / c, crss / 1e6, n as f64 / j, mb / j, 100.0 * c / j, rss / 1e6
            );
            for (i, (c, j)) in ceiling.iter().zip(&job).enumerate() {
                println!("    run {}: ceiling {:.2}s, raw-append {:.2}s, raw-append peak RSS {:.0} MB", i + 1, c.seconds, j.seconds, j.peak_rss as f64 / 1e6);
            }
        }
        Ok(())
    }

    fn raw_append_once(&self, brokers: &str, topic: &str, schemas: &Path, run: usize) -> Result<Measure, String> {
        let dir = self.work_dir.join(format!("run-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = dir.join("pipeline.toml");
        std::fs::write(
            &config,
            format!(
                r#"[lake]
root = "{lake}"
[kafka]
brokers = "{brokers}"
[tables.raw_order]
path = "raw/order"
schema = "{schema}"
partitions = [
  {{ column = "year", source = "ingestion_time", format = "%Y" }},
  {{ column = "month", source = "ingestion_time", format = "%m" }},
  {{ column = "day", source = "ingestion_time", format = "%d" }},
  {{ column = "hour", source = "ingestion_time", format = "%H" }},
]
[raw_append]
sources = [{{ topic = "{topic}", table = "raw_order" }}]
"#,
                lake = dir.join("lake").display(),
                schema = schemas.join("order.schema.toml").display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let child = Command::new(super::bin_dir().join("raw-append"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn,buoyant_kernel=off")
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start raw-append (build it first): {e}"))?;
        let (status, rss) = wait_with_rusage(child)?;
        let seconds = started.elapsed().as_secs_f64();
        let _ = std::fs::remove_dir_all(&dir);
        if !status.success() {
            return Err(format!("raw-append exited with {status}"));
        }
        Ok(Measure { seconds, peak_rss: rss })
    }
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

pub(crate) fn wait_with_rusage(child: std::process::Child) -> Result<(std::process::ExitStatus, u64), String> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok((std::process::ExitStatus::from_raw(status), usage.ru_maxrss as u64 * 1024))
}

/// The median (upper middle for an even count; 0 when empty).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
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
