//! Producing generated messages to Kafka.

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientConfig;

/// Counts delivery failures so a report never claims messages the broker did not take.
#[derive(Clone, Default)]
struct DeliveryCounter {
    failed: Arc<AtomicU64>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// librdkafka error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker did not acknowledge some messages.
    #[error("{0} messages were not delivered")]
    Undelivered(u64),
    /// Topic deletion failed.
    #[error("delete topic {topic}: {message}")]
    DeleteTopic {
        /// Topic.
        topic: String,
        /// Broker's answer.
        message: String,
    },
    /// Topic creation failed.
    #[error("create topic {topic}: {message}")]
    CreateTopic {
        /// Topic.
        topic: String,
        /// Broker's answer.
        message: String,
    },
}

/// What to produce.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Messages to produce.
    pub count: u64,
    /// Messages per second; 0 = as fast as possible.
    pub rate: u64,
    /// Fraction (0..1) of messages replaced by malformed ones.
    pub bad_fraction: f64,
}

/// What was produced.
#[derive(Debug, Clone, Default)]
pub struct ProduceReport {
    /// Messages delivered.
    pub messages: u64,
    /// Of which malformed.
    pub malformed: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Creates topics with `partitions` partitions (existing topics are left as they are).
pub async fn create_topics(brokers: &str, topics: &[&str], partitions: i32) -> Result<(), ProduceError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
    let results = admin.create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?;
    for r in results {
        if let Err((topic, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists {
                return Err(ProduceError::CreateTopic { topic, message: code.to_string() });
            }
        }
    }
    Ok(())
}

/// Deletes topics (tests: a topic deleted and created again).
pub async fn delete_topics(brokers: &str, topics: &[&str]) -> Result<(), ProduceError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let results = admin.delete_topics(topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))).await?;
    for r in results {
        if let Err((topic, code)) = r {
            return Err(ProduceError::DeleteTopic { topic, message: code.to_string() });
        }
    }
    Ok(())
}

/// Produces `options.count` messages from `next` (key, payload) to `topic`, replacing a
/// deterministic fraction with malformed ones, and waits until all are acknowledged.
pub fn produce(
    brokers: &str,
    topic: &str,
    options: &ProduceOptions,
    mut next: impl FnMut() -> (String, String),
) -> Result<ProduceReport, ProduceError> {
    let context = DeliveryCounter::default();
    let producer: ThreadedProducer<DeliveryCounter> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("acks", "all")
        .create_with_context(context.clone())?;
    let started = Instant::now();
    let mut report = ProduceReport::default();
    let bad_every = if options.bad_fraction > 0.0 { (1.0 / options.bad_fraction).round().max(1.0) as u64 } else { 0 };
    for i in 0..options.count {
        let (key, mut payload) = next();
        if bad_every > 0 && i % bad_every == bad_every - 1 {
            payload = crate::malformed_message(report.malformed);
            report.malformed += 1;
        }
        report.bytes += payload.len() as u64;
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        report.messages += 1;
        if options.rate > 0 {
            let due = Duration::from_secs_f64(report.messages as f64 / options.rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(ProduceError::Undelivered(failed));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}
