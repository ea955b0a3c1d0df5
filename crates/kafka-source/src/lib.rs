//! Kafka / Amazon MSK: client settings and security, MSK IAM tokens, and the reader that turns
//! polled messages into per-partition chunks of contiguous payload bytes.

mod context;
mod msk_iam;
mod reader;
mod settings;

pub use context::{LakeContext, ProgressLookup, RevokeHook};
pub use msk_iam::MskTokenProvider;
pub use reader::{
    fetch_watermarks, position_exists, topic_partitions, FillOutcome, KafkaReader, PartitionChunk, PartitionKey, RawBatch,
    ReaderLimits, StartPosition,
};
pub use settings::{client_config, is_fatal, KafkaError};

/// librdkafka client settings, as [`client_config`] builds them.
pub use rdkafka::ClientConfig;
