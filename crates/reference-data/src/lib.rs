//! The reference pipeline's messages: orders for a few order ids and owners, each message
//! updating an order's value and timestamp, and membership changes for the same owners.
//! Deterministic for a seed, so tests and benchmarks can compute expectations independently.

mod messages;
mod produce;

pub use messages::{malformed_message, MembershipGenerator, OrderGenerator, REFERENCE_OWNERS};
pub use produce::{create_topics, delete_topics, produce, ProduceError, ProduceOptions, ProduceReport};
