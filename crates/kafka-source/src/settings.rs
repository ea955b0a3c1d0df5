//! librdkafka settings derived from the pipeline's Kafka configuration.

use pipeline_config::{KafkaConfig, SaslMechanism};
use rdkafka::ClientConfig;

/// Failures talking to Kafka.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka reported an error.
    #[error("kafka: {context}: {source}")]
    Client {
        /// What we were doing.
        context: String,
        /// librdkafka's error.
        source: rdkafka::error::KafkaError,
    },
    /// An MSK IAM token could not be produced.
    #[error("MSK IAM token: {0}")]
    Token(String),
    /// A topic named in the configuration does not exist on the cluster.
    #[error("topic '{0}' does not exist on the brokers (create it, or fix raw_append.sources)")]
    UnknownTopic(String),
    /// A rebalance assigned a partition whose progress could not be read from its table.
    #[error("cannot resume {0} after a rebalance: its progress could not be read from the table")]
    Rebalance(String),
    /// A client error retrying cannot fix (authentication, authorization, an unknown topic).
    #[error("kafka: {0} (fix the credentials, ACLs or topic names in the configuration; retrying does not help)")]
    Fatal(String),
    /// The brokers did not answer a metadata request in time.
    #[error(
        "kafka: no answer from the brokers about topic '{topic}' within {seconds} s; the client's last error: {last} \
         (check kafka.brokers, the network path to them and kafka.security_protocol)"
    )]
    Unreachable {
        /// The topic asked about.
        topic: String,
        /// How long the job asked.
        seconds: u64,
        /// librdkafka's last reported error, in its words.
        last: String,
    },
    /// Messages the job has not read are gone from a partition (retention, or a recreated
    /// topic): reading on would skip them silently.
    #[error(
        "{topic}[{partition}]: the next offset to read is {next}, but the partition holds offsets {low}..{high}: {cause}. \
         Nothing was skipped. To accept the loss and continue, set raw_append.on_missing_offsets = \"skip\" \
         (the skipped range is counted and marked in the dead-letter table)"
    )]
    OffsetsGone {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The offset the table's progress says to read next.
        next: i64,
        /// The partition's low watermark.
        low: i64,
        /// The partition's high watermark (confirmed by a fetch when the listing lags).
        high: i64,
        /// Why, in words.
        cause: String,
    },
    /// The broker no longer serves the offset being read (retention overtook the reader while
    /// it ran, or the topic was recreated).
    #[error(
        "{0}: the broker no longer holds the offset to read next (retention deleted it, or the topic was recreated). \
         Nothing was skipped; a restart checks the partition against the table's progress (set raw_append.on_missing_offsets = \"skip\" to accept the loss)"
    )]
    OffsetOutOfRange(String),
    /// An operation that only manual assignment supports was used on a group reader.
    #[error("{0} needs manual partition assignment")]
    ManualOnly(&'static str),
}

/// True for librdkafka errors that retrying cannot fix: the run must fail instead of spinning.
pub fn is_fatal(code: rdkafka::error::RDKafkaErrorCode) -> bool {
    use rdkafka::error::RDKafkaErrorCode as C;
    matches!(
        code,
        C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::UnknownTopic
            | C::UnknownPartition
            | C::InvalidSessionTimeout
            | C::UnsupportedSASLMechanism
            | C::IllegalSASLState
            | C::Fatal
    )
}

impl KafkaError {
    /// Wraps a librdkafka error with what we were doing.
    pub fn client(context: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> Self {
        let context = context.into();
        move |source| Self::Client { context, source }
    }
}

/// The librdkafka configuration for `kafka`: brokers, security, then pass-through properties
/// (which win, so an operator can override anything we derive).
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &kafka.brokers)
        .set("security.protocol", kafka.security_protocol.as_librdkafka())
        .set("client.id", "lakehouse-writer");
    if let Some(ca) = &kafka.ssl_ca_location {
        cfg.set("ssl.ca.location", ca);
    }
    match kafka.sasl_mechanism {
        Some(SaslMechanism::AwsMskIam) => {
            // Tokens come from LakeContext::generate_oauth_token (MskTokenProvider).
            cfg.set("sasl.mechanism", "OAUTHBEARER");
        }
        Some(m) => {
            let name = match m {
                SaslMechanism::Plain => "PLAIN",
                SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
                SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
                SaslMechanism::AwsMskIam => unreachable!("handled above"),
            };
            cfg.set("sasl.mechanism", name);
            if let Some(u) = &kafka.sasl_username {
                cfg.set("sasl.username", u);
            }
            if let Some(p) = &kafka.sasl_password {
                cfg.set("sasl.password", p);
            }
        }
        None => {}
    }
    for (k, v) in &kafka.properties {
        cfg.set(k, v);
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline_config::SecurityProtocol;

    #[test]
    fn scram_and_passthrough() {
        let mut k = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::ScramSha512),
            sasl_username: Some("u".into()),
            sasl_password: Some("p".into()),
            ..KafkaConfig::default()
        };
        k.properties.insert("fetch.max.bytes".into(), "1000".into());
        k.properties.insert("client.id".into(), "mine".into());
        let c = client_config(&k);
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("u"));
        assert_eq!(c.get("fetch.max.bytes"), Some("1000"));
        assert_eq!(c.get("client.id"), Some("mine"));
    }

    #[test]
    fn msk_iam_uses_oauthbearer() {
        let k = KafkaConfig {
            security_protocol: SecurityProtocol::SaslSsl,
            sasl_mechanism: Some(SaslMechanism::AwsMskIam),
            ..KafkaConfig::default()
        };
        assert_eq!(client_config(&k).get("sasl.mechanism"), Some("OAUTHBEARER"));
    }

    #[test]
    fn credentials_acls_and_missing_topics_are_fatal_broker_hiccups_are_not() {
        use rdkafka::error::RDKafkaErrorCode as C;
        for code in [C::SaslAuthenticationFailed, C::TopicAuthorizationFailed, C::UnknownTopic, C::Authentication] {
            assert!(is_fatal(code), "{code:?}");
        }
        for code in [C::BrokerTransportFailure, C::AllBrokersDown, C::RequestTimedOut, C::NotLeaderForPartition, C::UnknownTopicOrPartition]
        {
            assert!(!is_fatal(code), "{code:?}");
        }
    }
}
