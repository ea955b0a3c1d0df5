//! `[kafka]`: how to reach the brokers.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ConfigError;

/// How to reach the brokers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers; override with `LAKEHOUSE_KAFKA_BROKERS`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[serde(default)]
    pub security_protocol: SecurityProtocol,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM (with sasl_ssl).
    #[serde(default)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user; override with `LAKEHOUSE_KAFKA_SASL_USERNAME`.
    #[serde(default)]
    pub sasl_username: Option<String>,
    /// SASL password; set it with `LAKEHOUSE_KAFKA_SASL_PASSWORD` rather than in the file.
    #[serde(default)]
    pub sasl_password: Option<String>,
    /// CA bundle for ssl / sasl_ssl.
    #[serde(default)]
    pub ssl_ca_location: Option<String>,
    /// AWS region for MSK IAM tokens; defaults to the AWS chain's region.
    #[serde(default)]
    pub aws_region: Option<String>,
    /// Any librdkafka setting, passed through as given (they win over derived settings).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            security_protocol: SecurityProtocol::default(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            aws_region: None,
            properties: BTreeMap::new(),
        }
    }
}

/// Kafka `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no SASL.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka value.
    pub fn as_librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
}

/// Kafka `sasl.mechanism`, plus AWS MSK IAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// SASL/PLAIN.
    #[serde(rename = "PLAIN")]
    Plain,
    /// SASL/SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SASL/SCRAM-SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    /// MSK IAM: OAUTHBEARER tokens signed with the AWS credential chain.
    #[serde(rename = "AWS_MSK_IAM")]
    AwsMskIam,
}

impl KafkaConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "set host:port[,host:port] or LAKEHOUSE_KAFKA_BROKERS"));
        }
        let sasl = matches!(self.security_protocol, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl);
        match (sasl, self.sasl_mechanism) {
            (true, None) => Err(ConfigError::invalid(
                "kafka.sasl_mechanism",
                "required with sasl_* security: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM",
            )),
            (false, Some(_)) => {
                Err(ConfigError::invalid("kafka.security_protocol", "a sasl_mechanism is set: use sasl_ssl (or sasl_plaintext)"))
            }
            (true, Some(SaslMechanism::AwsMskIam)) if self.security_protocol != SecurityProtocol::SaslSsl => {
                Err(ConfigError::invalid("kafka.security_protocol", "AWS_MSK_IAM needs sasl_ssl"))
            }
            (true, Some(SaslMechanism::AwsMskIam)) | (false, None) => Ok(()),
            (true, Some(_)) if self.sasl_username.is_none() || self.sasl_password.is_none() => Err(ConfigError::invalid(
                "kafka.sasl_username",
                "SCRAM/PLAIN need a username and password (LAKEHOUSE_KAFKA_SASL_USERNAME / LAKEHOUSE_KAFKA_SASL_PASSWORD)",
            )),
            (true, Some(_)) => Ok(()),
        }
    }
}
