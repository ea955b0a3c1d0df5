//! The pipeline configuration file (`schemas/pipeline.toml`): reading it, deployment overrides
//! from the environment and the command line, and resolving every section.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::kinesis::KinesisFile;
use crate::merge_upsert::MergeUpsertFile;
use crate::raw_append::RawAppendFile;
use crate::stream_join::StreamJoinFile;
use crate::tables::TableFile;
use crate::{ConfigError, KafkaConfig, KinesisConfig, LakeConfig, MergeUpsertConfig, RawAppendConfig, StreamJoinConfig, TableConfig};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    lake: LakeConfig,
    #[serde(default)]
    kafka: KafkaConfig,
    #[serde(default)]
    kinesis: KinesisFile,
    #[serde(default)]
    tables: BTreeMap<String, TableFile>,
    #[serde(default)]
    raw_append: Option<RawAppendFile>,
    #[serde(default)]
    stream_join: Option<StreamJoinFile>,
    #[serde(default)]
    merge_upsert: Option<MergeUpsertFile>,
}

/// The whole pipeline, validated: where the lake is, how to reach Kafka, the tables (schemas
/// loaded) and the jobs (their tables resolved).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Lake location.
    pub lake: LakeConfig,
    /// Kafka / MSK connection.
    pub kafka: KafkaConfig,
    /// Kinesis Data Streams settings (used when a raw-append source is a stream).
    pub kinesis: KinesisConfig,
    /// Tables by logical name.
    pub tables: BTreeMap<String, TableConfig>,
    /// The raw-append job.
    pub raw_append: Option<RawAppendConfig>,
    /// The stream-join job.
    pub stream_join: Option<StreamJoinConfig>,
    /// The merge-upsert job.
    pub merge_upsert: Option<MergeUpsertConfig>,
}

/// Deployment values given on the command line; they win over the environment and the file.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// `--lake-root`.
    pub lake_root: Option<String>,
    /// `--brokers`.
    pub brokers: Option<String>,
}

/// Environment variables that override deployment values.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("LAKEHOUSE_LAKE_ROOT", "lake.root"),
    ("LAKEHOUSE_KAFKA_BROKERS", "kafka.brokers"),
    ("LAKEHOUSE_KAFKA_SECURITY_PROTOCOL", "kafka.security_protocol"),
    ("LAKEHOUSE_KAFKA_SASL_MECHANISM", "kafka.sasl_mechanism"),
    ("LAKEHOUSE_KAFKA_SASL_USERNAME", "kafka.sasl_username"),
    ("LAKEHOUSE_KAFKA_SASL_PASSWORD", "kafka.sasl_password"),
    ("LAKEHOUSE_KAFKA_AWS_REGION", "kafka.aws_region"),
    ("LAKEHOUSE_RAW_APPEND_GROUP_ID", "raw_append.group_id"),
    ("LAKEHOUSE_KINESIS_REGION", "kinesis.region"),
    ("LAKEHOUSE_KINESIS_SHARD_INDEX", "kinesis.shard_index"),
    ("LAKEHOUSE_KINESIS_SHARD_COUNT", "kinesis.shard_count"),
];

impl PipelineConfig {
    /// Reads the file, applies `LAKEHOUSE_*` environment overrides, loads the schema files
    /// and validates everything.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, ConfigOverrides::default())
    }

    /// [`PipelineConfig::load`] with command-line overrides, applied before validation.
    pub fn load_with(path: &Path, overrides: ConfigOverrides) -> Result<Self, ConfigError> {
        Self::load_with_env(path, overrides, |k| std::env::var(k).ok())
    }

    /// [`PipelineConfig::load_with`] with an explicit environment (for tests).
    pub fn load_with_env(path: &Path, overrides: ConfigOverrides, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut file: PipelineFile =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        file.apply_env(&env)?;
        file.lake.root = overrides.lake_root.unwrap_or(file.lake.root);
        file.kafka.brokers = overrides.brokers.unwrap_or(file.kafka.brokers);
        file.resolve(&path.parent().map(Path::to_path_buf).unwrap_or_default())
    }

    /// The table named `name`.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.get(name)
    }

    /// The URL-ish location of a path under the lake root.
    pub fn table_location(&self, path: &str) -> String {
        self.lake.location(path)
    }
}

impl PipelineFile {
    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, key) in ENV_OVERRIDES {
            let Some(s) = env(var) else { continue };
            match *key {
                "lake.root" => self.lake.root = s,
                "kafka.brokers" => self.kafka.brokers = s,
                "kafka.security_protocol" => self.kafka.security_protocol = enum_value(var, key, &s)?,
                "kafka.sasl_mechanism" => self.kafka.sasl_mechanism = Some(enum_value(var, key, &s)?),
                "kafka.sasl_username" => self.kafka.sasl_username = Some(s),
                "kafka.sasl_password" => self.kafka.sasl_password = Some(s),
                "kafka.aws_region" => self.kafka.aws_region = Some(s),
                "raw_append.group_id" => {
                    if let Some(ra) = self.raw_append.as_mut() {
                        ra.group_id = (!s.is_empty()).then_some(s);
                    }
                }
                "kinesis.region" => self.kinesis.region = Some(s),
                "kinesis.shard_index" => self.kinesis.shard_index = Some(number(var, key, &s)?),
                "kinesis.shard_count" => self.kinesis.shard_count = Some(number(var, key, &s)?),
                _ => unreachable!("every ENV_OVERRIDES key is handled"),
            }
        }
        Ok(())
    }

    fn resolve(mut self, base: &Path) -> Result<PipelineConfig, ConfigError> {
        self.lake.validate()?;
        self.lake.resolve_store()?;
        self.kafka.validate()?;
        let mut tables = BTreeMap::new();
        for (name, table) in self.tables {
            let resolved = table.resolve(&name, &format!("tables.{name}"), &self.lake, base)?;
            tables.insert(name, resolved);
        }
        let raw_append = self.raw_append.map(|s| s.resolve(&tables, &self.lake, base)).transpose()?;
        let added = raw_append.as_ref().map(RawAppendConfig::added_columns).unwrap_or_default();
        Ok(PipelineConfig {
            stream_join: self.stream_join.map(|s| s.resolve(&tables, &added)).transpose()?,
            merge_upsert: self.merge_upsert.map(|s| s.resolve(&tables, &added)).transpose()?,
            raw_append,
            lake: self.lake,
            kafka: self.kafka,
            kinesis: self.kinesis.resolve()?,
            tables,
        })
    }
}

/// A whole number from an environment variable.
fn number(var: &str, key: &str, s: &str) -> Result<u32, ConfigError> {
    s.trim().parse().map_err(|_| ConfigError::invalid(key, format!("from {var}: '{s}' is not a whole number")))
}

/// Enum-valued overrides go through serde so they accept exactly what the file accepts.
fn enum_value<T: serde::de::DeserializeOwned>(var: &str, key: &str, s: &str) -> Result<T, ConfigError> {
    toml::Value::String(s.to_string())
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::invalid(key, format!("from {var}: {}", e.message())))
}
