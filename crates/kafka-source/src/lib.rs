//! Kafka / Amazon MSK: client settings and security, MSK IAM tokens, and the reader that turns
//! polled messages into per-partition chunks of contiguous payload bytes.

mod chunk;
mod context;
mod msk_iam;
mod offsets;
mod queue;
mod reader;
mod sample;
mod settings;
mod watermarks;

pub use chunk::{PartitionChunk, PartitionKey, RawBatch, StartPosition};
pub use context::{LakeContext, ProgressLookup, RevokeHook};
pub use msk_iam::MskTokenProvider;
pub use offsets::{fetch_watermarks, messages_behind, probe_position, topic_partitions, Position};
pub use reader::{FillOutcome, KafkaReader, ReaderLimits};
pub use sample::sample_messages;
pub use settings::{client_config, is_fatal, KafkaError};

/// librdkafka client settings, as [`client_config`] builds them.
pub use rdkafka::ClientConfig;
