//! The pipeline configuration file (`schemas/pipeline.toml`) and its validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{ByteSize, ColumnType, ConfigError, TableSchema};

/// The whole pipeline: where the lake is, how to reach Kafka, the tables and the jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Lake location.
    pub lake: LakeConfig,
    /// Kafka / MSK connection.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Tables by logical name.
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    /// The raw-append job.
    #[serde(default)]
    pub raw_append: Option<RawAppendConfig>,
    /// The stream-join job.
    #[serde(default)]
    pub stream_join: Option<StreamJoinConfig>,
    /// The merge-upsert job.
    #[serde(default)]
    pub merge_upsert: Option<MergeUpsertConfig>,
    /// Folder holding the file, against which schema paths resolve.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// Where tables live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Local folder or `s3://bucket/prefix`; override with `LAKEHOUSE_LAKE_ROOT`.
    pub root: String,
    /// Extra object-store options (e.g. `AWS_REGION`); AWS credentials come from the
    /// standard chain, `AWS_ENDPOINT_URL` selects an S3-compatible endpoint.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
}

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

/// A Delta table of the lake.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// Path under the lake root.
    pub path: String,
    /// Schema file, relative to the configuration file.
    pub schema: PathBuf,
    /// Partition columns in directory order.
    #[serde(default)]
    pub partitions: Vec<PartitionSpec>,
    /// Extra Delta table properties set when the table is created.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// The loaded schema, filled by validation.
    #[serde(skip)]
    pub loaded_schema: Option<TableSchema>,
}

/// A partition column and where its value comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Partition column name.
    pub column: String,
    /// Where the value comes from.
    #[serde(default)]
    pub source: PartitionSource,
    /// For `field`: the timestamp column whose value is formatted.
    #[serde(default)]
    pub field: Option<String>,
    /// For `ingestion_time` and `field`: chrono format, e.g. `%Y`, `%y`, `%Y%m%d%H`.
    #[serde(default)]
    pub format: Option<String>,
}

/// Where a partition value comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartitionSource {
    /// A column of the message, used as is.
    #[default]
    Column,
    /// The time the batch was ingested (UTC), formatted.
    IngestionTime,
    /// A timestamp column of the message (event time), formatted in UTC.
    Field,
}

/// Trigger mode of a job run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Everything available at start, in bounded batches, then exit.
    #[default]
    Once,
    /// Batches in a loop at an interval until SIGTERM/SIGINT.
    Continuous,
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "once" => Ok(Self::Once),
            "continuous" => Ok(Self::Continuous),
            _ => Err(format!("'{s}' is not a trigger (once or continuous)")),
        }
    }
}

/// A duration written as humantime text: `"10s"`, `"2m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationStr(pub Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(DurationStr)
            .map_err(|e| serde::de::Error::custom(format!("'{s}' is not a duration like \"10s\" or \"5m\": {e}")))
    }
}

/// Kafka metadata columns raw-append can add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataColumn {
    /// `_kafka_topic` string.
    Topic,
    /// `_kafka_partition` integer.
    Partition,
    /// `_kafka_offset` long.
    Offset,
    /// `_kafka_timestamp` timestamp (message create/log-append time).
    Timestamp,
    /// `_kafka_key` string (lossy UTF-8).
    Key,
}

impl MetadataColumn {
    /// The column name in the table.
    pub fn column_name(self) -> &'static str {
        match self {
            Self::Topic => "_kafka_topic",
            Self::Partition => "_kafka_partition",
            Self::Offset => "_kafka_offset",
            Self::Timestamp => "_kafka_timestamp",
            Self::Key => "_kafka_key",
        }
    }
}

/// What raw-append does when offsets it has not read are gone from a partition (retention
/// deleted them, or the topic was recreated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingOffsets {
    /// Stop with exit code 4 and a message naming the partition and the offsets.
    #[default]
    Fail,
    /// Continue from the earliest available offset; the skipped range is counted in the
    /// summary and a metric, and marked by a row in the dead-letter table.
    Skip,
}

/// The raw-append job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppendConfig {
    /// Identifies the job in `txn` app ids (`<job_id>:<topic>:<partition>`); never change it
    /// for an existing table, or progress restarts from the earliest offsets.
    #[serde(default = "default_job_id")]
    pub job_id: String,
    /// Topic → table routes.
    pub sources: Vec<RawAppendSource>,
    /// Dead-letter table path under the lake root.
    #[serde(default = "default_dead_letter")]
    pub dead_letter_table: String,
    /// Default trigger (the `--trigger` flag wins).
    #[serde(default)]
    pub trigger: Trigger,
    /// Continuous mode: a batch is committed at the latest this long after its first message
    /// (the trigger interval; row and byte limits may commit it sooner).
    #[serde(default = "default_interval")]
    pub interval: DurationStr,
    /// Continuous mode: consumer group shared by the tasks; unset means this one process
    /// reads every partition by manual assignment.
    #[serde(default)]
    pub group_id: Option<String>,
    /// A batch is committed at this many messages...
    #[serde(default = "default_max_batch_rows")]
    pub max_batch_rows: u64,
    /// ...or this many payload bytes, whichever comes first.
    #[serde(default = "default_max_batch_bytes")]
    pub max_batch_bytes: ByteSize,
    /// Parquet files are split at about this size.
    #[serde(default = "default_target_file_size")]
    pub target_file_size: ByteSize,
    /// Larger messages are dead letters.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: ByteSize,
    /// On SIGTERM, the batch in flight may take this long to commit before it is abandoned.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: DurationStr,
    /// `fail` (default) or `skip` when offsets the job has not read are gone.
    #[serde(default)]
    pub on_missing_offsets: OnMissingOffsets,
}

fn default_job_id() -> String {
    "raw-append".into()
}
fn default_dead_letter() -> String {
    "raw/dead_letter".into()
}
fn default_interval() -> DurationStr {
    DurationStr(Duration::from_secs(10))
}
fn default_max_batch_rows() -> u64 {
    1_000_000
}
fn default_max_batch_bytes() -> ByteSize {
    ByteSize(128 << 20)
}
fn default_target_file_size() -> ByteSize {
    ByteSize(128 << 20)
}
fn default_max_message_bytes() -> ByteSize {
    ByteSize(1 << 20)
}
fn default_shutdown_timeout() -> DurationStr {
    DurationStr(Duration::from_secs(30))
}

/// One topic routed to one table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppendSource {
    /// Kafka topic.
    pub topic: String,
    /// Name of a table under `[tables]`.
    pub table: String,
    /// Kafka metadata columns to add.
    #[serde(default)]
    pub metadata_columns: Vec<MetadataColumn>,
}

/// The stream-join job: a watermarked interval join of two Delta tables into a third.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamJoinConfig {
    /// Identifies the job in the sink's `txn` app id; never change it for an existing output.
    #[serde(default = "default_join_job_id")]
    pub job_id: String,
    /// The left input (every output row has one).
    pub left: JoinInput,
    /// The right input.
    pub right: JoinInput,
    /// Output table (name under `[tables]`).
    pub output: String,
    /// `inner` or `left_outer`.
    #[serde(default)]
    pub join_type: JoinType,
    /// Rows match when `left.time BETWEEN right.time + lower AND right.time + upper`.
    #[serde(default = "zero_offset")]
    pub lower: SignedDuration,
    /// See `lower`.
    pub upper: SignedDuration,
    /// How the job watermark follows the inputs' (`min`: the slower input; `max`).
    #[serde(default)]
    pub watermark_policy: WatermarkPolicy,
    /// Output columns in order, each from `left.<column>` or `right.<column>`; partition
    /// columns derived from a timestamp field come from the output table's partitioning.
    pub columns: Vec<JoinColumn>,
    /// Table path under the lake root for rows later than the watermark (unset: only counted).
    #[serde(default)]
    pub late_table: Option<String>,
    /// Where state and progress live, under the lake root.
    #[serde(default = "default_join_checkpoint")]
    pub checkpoint: String,
    /// Default trigger (the `--trigger` flag wins).
    #[serde(default)]
    pub trigger: Trigger,
    /// Continuous mode: time between batches.
    #[serde(default = "default_interval")]
    pub interval: DurationStr,
    /// A batch reads at most this many new files per input...
    #[serde(default = "default_max_files")]
    pub max_files_per_batch: usize,
    /// ...and at most about this many bytes per input (at least one commit).
    #[serde(default = "default_max_source_bytes")]
    pub max_bytes_per_batch: ByteSize,
    /// Skip source commits that delete rows (`remove` with dataChange=true) instead of failing.
    #[serde(default)]
    pub ignore_deletes: bool,
}

/// One side of the join.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinInput {
    /// Source table (name under `[tables]`).
    pub table: String,
    /// Equi-join key columns (same count and order on both sides).
    pub key: Vec<String>,
    /// Event-time column (a timestamp).
    pub time: String,
    /// Watermark delay: how late this input's rows may arrive.
    pub delay: DurationStr,
}

/// Join type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinType {
    /// Pairs only.
    #[default]
    Inner,
    /// Pairs, plus each left row that never matched, null-padded, once the watermark passes it.
    LeftOuter,
}

/// How the job watermark is derived from the inputs' watermarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatermarkPolicy {
    /// The slower input's (safe: no on-time row is dropped).
    #[default]
    Min,
    /// The faster input's (less state, more late rows).
    Max,
}

/// An output column of the join.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinColumn {
    /// Output column name.
    pub name: String,
    /// `left.<column>` or `right.<column>`.
    pub from: String,
}

impl JoinColumn {
    /// The side (`left`/`right`) and column this output column comes from.
    pub fn source(&self) -> Option<(JoinSide, &str)> {
        let (side, column) = self.from.split_once('.')?;
        let side = match side {
            "left" => JoinSide::Left,
            "right" => JoinSide::Right,
            _ => return None,
        };
        (!column.is_empty()).then_some((side, column))
    }
}

/// A side of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinSide {
    /// The left input.
    Left,
    /// The right input.
    Right,
}

/// A duration that may be negative: `"-30m"`, `"1h"`, `"0s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDuration {
    /// Microseconds (negative for `-`).
    pub micros: i64,
}

impl<'de> Deserialize<'de> for SignedDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (negative, body) = match s.trim().strip_prefix('-') {
            Some(rest) => (true, rest.trim()),
            None => (false, s.trim()),
        };
        let d = humantime::parse_duration(body).map_err(|e| serde::de::Error::custom(format!("'{s}' is not a duration like \"1h\" or \"-30m\": {e}")))?;
        let micros = i64::try_from(d.as_micros()).map_err(|_| serde::de::Error::custom(format!("'{s}' is too long")))?;
        Ok(Self { micros: if negative { -micros } else { micros } })
    }
}

/// The merge-upsert job: the latest row per key of a Delta table's new commits, merged into a
/// target that holds exactly one row per key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeUpsertConfig {
    /// Identifies the job in the target's `txn` app id; never change it for an existing target.
    #[serde(default = "default_merge_job_id")]
    pub job_id: String,
    /// Source table (name under `[tables]`), read incrementally.
    pub source: String,
    /// Target table (name under `[tables]`); created on the first run from its schema file.
    pub target: String,
    /// Key columns: the target keeps one row per distinct key.
    pub key: Vec<String>,
    /// Ordering column (e.g. an event timestamp or a CDC sequence): a row replaces the target's
    /// only when its value is greater or equal.
    pub sequence: String,
    /// Source column holding the change type (e.g. AWS DMS `metadata.operation`); unset: every
    /// row is an upsert.
    #[serde(default)]
    pub operation: Option<String>,
    /// Values of `operation` that delete the key.
    #[serde(default = "default_delete_values")]
    pub delete_values: Vec<String>,
    /// Table path under the lake root for rows with a null key or sequence.
    #[serde(default = "default_merge_dead_letters")]
    pub dead_letter_table: String,
    /// Table path under the lake root for delete tombstones (key, sequence), which stop an
    /// older change arriving late from resurrecting a deleted key.
    #[serde(default = "default_tombstones")]
    pub tombstone_table: String,
    /// How long a tombstone is kept after its delete was merged.
    #[serde(default = "default_tombstone_retention")]
    pub tombstone_retention: DurationStr,
    /// `none`: a source column the target lacks is an error; `add_columns`: it is added to the
    /// target (nullable) and filled from then on.
    #[serde(default)]
    pub schema_evolution: SchemaEvolution,
    /// Source columns the target does not take (e.g. raw-append's `_kafka_*` metadata or
    /// ingestion-time partitions of a raw CDC table); never added by schema evolution.
    #[serde(default)]
    pub ignore_columns: Vec<String>,
    /// Where progress lives, under the lake root.
    #[serde(default = "default_merge_checkpoint")]
    pub checkpoint: String,
    /// Default trigger (the `--trigger` flag wins).
    #[serde(default)]
    pub trigger: Trigger,
    /// Continuous mode: time between batches.
    #[serde(default = "default_interval")]
    pub interval: DurationStr,
    /// A batch reads at most this many new source files...
    #[serde(default = "default_max_files")]
    pub max_files_per_batch: usize,
    /// ...and at most about this many bytes (at least one commit).
    #[serde(default = "default_max_source_bytes")]
    pub max_bytes_per_batch: ByteSize,
    /// Skip source commits that delete rows instead of failing.
    #[serde(default)]
    pub ignore_deletes: bool,
}

/// What merge-upsert does with source columns the target does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaEvolution {
    /// Fail with an error naming the column.
    #[default]
    None,
    /// Add them to the target as nullable columns.
    AddColumns,
}

fn default_merge_job_id() -> String {
    "merge-upsert".into()
}
fn default_delete_values() -> Vec<String> {
    vec!["delete".into()]
}
fn default_merge_dead_letters() -> String {
    "processed_dead_letter".into()
}
fn default_tombstones() -> String {
    "processed_tombstones".into()
}
fn default_tombstone_retention() -> DurationStr {
    DurationStr(Duration::from_secs(7 * 24 * 3600))
}
fn default_merge_checkpoint() -> String {
    "_checkpoints/merge-upsert".into()
}

fn zero_offset() -> SignedDuration {
    SignedDuration { micros: 0 }
}
fn default_join_job_id() -> String {
    "stream-join".into()
}
fn default_join_checkpoint() -> String {
    "_checkpoints/stream-join".into()
}
fn default_max_files() -> usize {
    1000
}
fn default_max_source_bytes() -> ByteSize {
    ByteSize(1 << 30)
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
];

impl PipelineConfig {
    /// Reads the file, applies `LAKEHOUSE_*` environment overrides, loads the schema files
    /// and validates everything.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with_env(path, |k| std::env::var(k).ok())
    }

    /// [`PipelineConfig::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: PipelineConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        config.apply_env(&env)?;
        config.validate()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        // Enum-valued overrides go through serde so they accept exactly what the file accepts.
        fn enum_value<T: serde::de::DeserializeOwned>(var: &str, key: &str, s: &str) -> Result<T, ConfigError> {
            toml::Value::String(s.to_string())
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::invalid(key, format!("from {var}: {}", e.message())))
        }
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
                _ => unreachable!("every ENV_OVERRIDES key is handled"),
            }
        }
        Ok(())
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        if self.lake.root.trim().is_empty() {
            return Err(ConfigError::invalid("lake.root", "must be a local folder or s3://bucket/prefix"));
        }
        if self.lake.root.contains("://") && !self.lake.root.starts_with("s3://") && !self.lake.root.starts_with("file://") {
            return Err(ConfigError::invalid(
                "lake.root",
                format!("'{}' has an unsupported scheme: use a local path, file:// or s3://", self.lake.root),
            ));
        }
        self.validate_kafka()?;
        let base = self.base_dir.clone();
        for (name, table) in self.tables.iter_mut() {
            let key = format!("tables.{name}");
            if table.path.trim().is_empty() || table.path.split('/').any(|p| p == "..") {
                return Err(ConfigError::invalid(format!("{key}.path"), "must be a relative path under the lake root, without '..'"));
            }
            let schema = TableSchema::load(&base.join(&table.schema), &format!("{key}.schema"))?;
            validate_partitions(&key, &table.partitions, &schema)?;
            table.loaded_schema = Some(schema);
        }
        if let Some(sj) = &self.stream_join {
            self.validate_stream_join(sj)?;
        }
        if let Some(mu) = &self.merge_upsert {
            self.validate_merge_upsert(mu)?;
        }
        if let Some(ra) = &self.raw_append {
            if ra.sources.is_empty() {
                return Err(ConfigError::invalid("raw_append.sources", "add at least one { topic, table } route"));
            }
            if ra.job_id.is_empty() || ra.job_id.contains(':') {
                return Err(ConfigError::invalid("raw_append.job_id", "must be non-empty and contain no ':' (it is part of txn app ids)"));
            }
            let mut topics = std::collections::HashSet::new();
            for (i, src) in ra.sources.iter().enumerate() {
                let key = format!("raw_append.sources[{i}]");
                if !topics.insert(&src.topic) {
                    return Err(ConfigError::invalid(format!("{key}.topic"), format!("topic '{}' is routed twice", src.topic)));
                }
                let table = self.tables.get(&src.table).ok_or_else(|| {
                    ConfigError::invalid(format!("{key}.table"), format!("no table '{}' under [tables]", src.table))
                })?;
                let schema = table.loaded_schema.as_ref().expect("validated above");
                for m in &src.metadata_columns {
                    if schema.column(m.column_name()).is_some() {
                        return Err(ConfigError::invalid(format!("{key}.metadata_columns"), format!("{} clashes with a schema column", m.column_name())));
                    }
                }
            }
            if ra.max_batch_rows == 0 || ra.max_batch_bytes.0 == 0 {
                return Err(ConfigError::invalid("raw_append.max_batch_rows", "max_batch_rows and max_batch_bytes must be positive"));
            }
            if ra.target_file_size.0 < (1 << 20) {
                return Err(ConfigError::invalid("raw_append.target_file_size", "must be at least 1 MiB"));
            }
        }
        Ok(())
    }

    fn validate_stream_join(&self, sj: &StreamJoinConfig) -> Result<(), ConfigError> {
        if sj.job_id.is_empty() || sj.job_id.contains(':') {
            return Err(ConfigError::invalid("stream_join.job_id", "must be non-empty and contain no ':'"));
        }
        let mut sides = Vec::new();
        for (name, input) in [("left", &sj.left), ("right", &sj.right)] {
            let key = format!("stream_join.{name}");
            let table = self.tables.get(&input.table).ok_or_else(|| ConfigError::invalid(format!("{key}.table"), format!("no table '{}' under [tables]", input.table)))?;
            let schema = table.loaded_schema.as_ref().expect("tables are validated first");
            let columns = table_columns(table);
            match schema.column(&input.time) {
                Some(c) if c.kind() == ColumnType::Timestamp => {}
                _ => return Err(ConfigError::invalid(format!("{key}.time"), format!("'{}' is not a timestamp column of {}", input.time, input.table))),
            }
            if input.key.is_empty() {
                return Err(ConfigError::invalid(format!("{key}.key"), "name at least one key column"));
            }
            for k in &input.key {
                if !columns.contains(k) {
                    return Err(ConfigError::invalid(format!("{key}.key"), format!("'{k}' is not a column of {}", input.table)));
                }
            }
            sides.push(columns);
        }
        if sj.left.key.len() != sj.right.key.len() {
            return Err(ConfigError::invalid("stream_join.right.key", "must list as many columns as stream_join.left.key"));
        }
        if sj.lower.micros > sj.upper.micros {
            return Err(ConfigError::invalid("stream_join.lower", "must not exceed stream_join.upper"));
        }
        let output = self.tables.get(&sj.output).ok_or_else(|| ConfigError::invalid("stream_join.output", format!("no table '{}' under [tables]", sj.output)))?;
        let out_schema = output.loaded_schema.as_ref().expect("tables are validated first");
        if sj.columns.is_empty() {
            return Err(ConfigError::invalid("stream_join.columns", "list the output columns: { name = \"order_id\", from = \"left.order_id\" }"));
        }
        for (i, c) in sj.columns.iter().enumerate() {
            let key = format!("stream_join.columns[{i}]");
            let Some((side, column)) = c.source() else {
                return Err(ConfigError::invalid(format!("{key}.from"), format!("'{}' must be left.<column> or right.<column>", c.from)));
            };
            let columns = if side == JoinSide::Left { &sides[0] } else { &sides[1] };
            if !columns.iter().any(|x| x == column) {
                return Err(ConfigError::invalid(format!("{key}.from"), format!("no column '{column}' on that side")));
            }
            if out_schema.column(&c.name).is_none() && !output.partitions.iter().any(|p| p.column == c.name) {
                return Err(ConfigError::invalid(format!("{key}.name"), format!("'{}' is not a column of the output table {}", c.name, sj.output)));
            }
        }
        for col in &out_schema.columns {
            if !sj.columns.iter().any(|c| c.name == col.name) {
                return Err(ConfigError::invalid("stream_join.columns", format!("output column '{}' has no source: add {{ name = \"{}\", from = ... }}", col.name, col.name)));
            }
        }
        if sj.max_files_per_batch == 0 {
            return Err(ConfigError::invalid("stream_join.max_files_per_batch", "must be positive"));
        }
        if sj.checkpoint.trim().is_empty() || sj.checkpoint.split('/').any(|p| p == "..") {
            return Err(ConfigError::invalid("stream_join.checkpoint", "must be a relative path under the lake root, without '..'"));
        }
        Ok(())
    }

    fn validate_merge_upsert(&self, mu: &MergeUpsertConfig) -> Result<(), ConfigError> {
        if mu.job_id.is_empty() || mu.job_id.contains(':') {
            return Err(ConfigError::invalid("merge_upsert.job_id", "must be non-empty and contain no ':'"));
        }
        let source = self.tables.get(&mu.source).ok_or_else(|| ConfigError::invalid("merge_upsert.source", format!("no table '{}' under [tables]", mu.source)))?;
        let target = self.tables.get(&mu.target).ok_or_else(|| ConfigError::invalid("merge_upsert.target", format!("no table '{}' under [tables]", mu.target)))?;
        if mu.source == mu.target {
            return Err(ConfigError::invalid("merge_upsert.target", "must differ from merge_upsert.source"));
        }
        let target_schema = target.loaded_schema.as_ref().expect("tables are validated first");
        let source_columns = table_columns(source);
        if mu.key.is_empty() {
            return Err(ConfigError::invalid("merge_upsert.key", "name at least one key column, e.g. [\"order_id\"]"));
        }
        for k in mu.key.iter().chain(std::iter::once(&mu.sequence)) {
            let what = if *k == mu.sequence { "merge_upsert.sequence" } else { "merge_upsert.key" };
            if target_schema.column(k).is_none() {
                return Err(ConfigError::invalid(what, format!("'{k}' is not a schema column of the target {}", mu.target)));
            }
        }
        if let Some(op) = &mu.operation {
            if !source_columns.contains(op) {
                return Err(ConfigError::invalid("merge_upsert.operation", format!("'{op}' is not a column of the source {}", mu.source)));
            }
            if mu.delete_values.is_empty() {
                return Err(ConfigError::invalid("merge_upsert.delete_values", "list the operation values that delete, e.g. [\"delete\"]"));
            }
        }
        for c in &mu.ignore_columns {
            if mu.key.contains(c) || *c == mu.sequence || target_schema.column(c).is_some() {
                return Err(ConfigError::invalid("merge_upsert.ignore_columns", format!("'{c}' is a column of the target {}: it cannot be ignored", mu.target)));
            }
        }
        for (key, path) in [("merge_upsert.dead_letter_table", &mu.dead_letter_table), ("merge_upsert.tombstone_table", &mu.tombstone_table), ("merge_upsert.checkpoint", &mu.checkpoint)] {
            if path.trim().is_empty() || path.split('/').any(|p| p == "..") {
                return Err(ConfigError::invalid(key, "must be a relative path under the lake root, without '..'"));
            }
        }
        if mu.max_files_per_batch == 0 {
            return Err(ConfigError::invalid("merge_upsert.max_files_per_batch", "must be positive"));
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "set host:port[,host:port] or LAKEHOUSE_KAFKA_BROKERS"));
        }
        let sasl = matches!(k.security_protocol, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl);
        match (sasl, k.sasl_mechanism) {
            (true, None) => return Err(ConfigError::invalid("kafka.sasl_mechanism", "required with sasl_* security: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM")),
            (false, Some(_)) => return Err(ConfigError::invalid("kafka.security_protocol", "a sasl_mechanism is set: use sasl_ssl (or sasl_plaintext)")),
            (true, Some(SaslMechanism::AwsMskIam)) if k.security_protocol != SecurityProtocol::SaslSsl => {
                return Err(ConfigError::invalid("kafka.security_protocol", "AWS_MSK_IAM needs sasl_ssl"))
            }
            (true, Some(SaslMechanism::AwsMskIam)) => {}
            (true, Some(_)) => {
                if k.sasl_username.is_none() || k.sasl_password.is_none() {
                    return Err(ConfigError::invalid("kafka.sasl_username", "SCRAM/PLAIN need a username and password (LAKEHOUSE_KAFKA_SASL_USERNAME / LAKEHOUSE_KAFKA_SASL_PASSWORD)"));
                }
            }
            (false, None) => {}
        }
        Ok(())
    }

    /// The table named `name` with its loaded schema.
    pub fn table(&self, name: &str) -> Option<&TableConfig> {
        self.tables.get(name)
    }

    /// The URL-ish location of a table path under the lake root.
    pub fn table_location(&self, path: &str) -> String {
        let root = self.lake.root.trim_end_matches('/');
        format!("{root}/{}", path.trim_start_matches('/'))
    }
}

impl TableConfig {
    /// The loaded schema (present after validation).
    pub fn schema(&self) -> &TableSchema {
        self.loaded_schema.as_ref().expect("PipelineConfig::load validates and loads every schema")
    }

    /// Partition column names in directory order.
    pub fn partition_columns(&self) -> Vec<String> {
        self.partitions.iter().map(|p| p.column.clone()).collect()
    }
}

/// Column names a table holds: schema columns and derived partition columns. (Kafka metadata
/// columns added by raw-append are not known here; they are checked against the table itself
/// at run time.)
fn table_columns(table: &TableConfig) -> Vec<String> {
    let mut out: Vec<String> = table.loaded_schema.as_ref().map(|s| s.columns.iter().map(|c| c.name.clone()).collect()).unwrap_or_default();
    out.extend(table.partitions.iter().map(|p| p.column.clone()));
    out
}

fn validate_partitions(key: &str, parts: &[PartitionSpec], schema: &TableSchema) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, p) in parts.iter().enumerate() {
        let pkey = format!("{key}.partitions[{i}]");
        if !seen.insert(&p.column) {
            return Err(ConfigError::invalid(format!("{pkey}.column"), format!("'{}' is listed twice", p.column)));
        }
        let fmt_ok = |f: &Option<String>| -> Result<(), ConfigError> {
            let f = f.as_deref().ok_or_else(|| ConfigError::invalid(format!("{pkey}.format"), "required for ingestion_time and field partitions, e.g. \"%Y\""))?;
            if f.is_empty() || chrono::format::StrftimeItems::new(f).any(|it| matches!(it, chrono::format::Item::Error)) {
                return Err(ConfigError::invalid(format!("{pkey}.format"), format!("'{f}' is not a valid chrono format")));
            }
            Ok(())
        };
        match p.source {
            PartitionSource::Column => {
                if schema.column(&p.column).is_none() {
                    return Err(ConfigError::invalid(format!("{pkey}.column"), format!("'{}' is not a schema column; for derived values set source = \"ingestion_time\" or \"field\"", p.column)));
                }
                if p.format.is_some() || p.field.is_some() {
                    return Err(ConfigError::invalid(&pkey, "format and field apply to ingestion_time / field partitions only"));
                }
            }
            PartitionSource::IngestionTime => {
                fmt_ok(&p.format)?;
                if schema.column(&p.column).is_some() {
                    return Err(ConfigError::invalid(format!("{pkey}.column"), "a derived partition column must not also be a schema column"));
                }
            }
            PartitionSource::Field => {
                fmt_ok(&p.format)?;
                let field = p.field.as_deref().ok_or_else(|| ConfigError::invalid(format!("{pkey}.field"), "name the timestamp column to derive from"))?;
                match schema.column(field) {
                    Some(c) if c.kind() == ColumnType::Timestamp => {}
                    _ => return Err(ConfigError::invalid(format!("{pkey}.field"), format!("'{field}' is not a timestamp column of the schema"))),
                }
                if schema.column(&p.column).is_some() {
                    return Err(ConfigError::invalid(format!("{pkey}.column"), "a derived partition column must not also be a schema column"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        // Read at run time: a shared target directory may hold a test binary built from
        // another checkout of the same sources.
        let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR");
        Path::new(&crate_dir).join("../../schemas/pipeline.toml")
    }

    #[test]
    fn the_shipped_pipeline_is_valid() {
        let c = PipelineConfig::load_with_env(&shipped(), |_| None).unwrap();
        let ra = c.raw_append.as_ref().unwrap();
        assert_eq!(ra.sources.len(), 2);
        assert_eq!(c.table("raw_order").unwrap().partition_columns(), ["year", "month", "day", "hour"]);
        assert_eq!(c.table("raw_member").unwrap().schema().columns.len(), 3);
        assert_eq!(c.table_location("raw/order"), "lake/raw/order");
        let mu = c.merge_upsert.as_ref().unwrap();
        assert_eq!((mu.source.as_str(), mu.target.as_str(), mu.key.as_slice()), ("curated", "processed", &["order_id".to_string()][..]));
    }

    #[test]
    fn environment_overrides_deployment_values() {
        let env = |k: &str| match k {
            "LAKEHOUSE_LAKE_ROOT" => Some("s3://bucket/lake/".to_string()),
            "LAKEHOUSE_KAFKA_SECURITY_PROTOCOL" => Some("sasl_ssl".to_string()),
            "LAKEHOUSE_KAFKA_SASL_MECHANISM" => Some("AWS_MSK_IAM".to_string()),
            _ => None,
        };
        let c = PipelineConfig::load_with_env(&shipped(), env).unwrap();
        assert_eq!(c.table_location("raw/order"), "s3://bucket/lake/raw/order");
        assert_eq!(c.kafka.sasl_mechanism, Some(SaslMechanism::AwsMskIam));
    }

    fn error_for(body: &str, env: &[(&str, &str)]) -> String {
        let dir = std::env::temp_dir().join(format!("pcfg-{}-{}", std::process::id(), body.len()));
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["order.schema.toml", "member.schema.toml"] {
            std::fs::copy(shipped().parent().unwrap().join(f), dir.join(f)).unwrap();
        }
        let path = dir.join("p.toml");
        std::fs::write(&path, body).unwrap();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let err = PipelineConfig::load_with_env(&path, |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap_err();
        err.to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let base = "[lake]\nroot = \"lake\"\n[tables.t]\npath = \"t\"\nschema = \"order.schema.toml\"\n";
        let e = error_for(&format!("{base}partitions = [{{ column = \"nope\" }}]\n"), &[]);
        assert!(e.starts_with("tables.t.partitions[0].column:"), "{e}");
        let e = error_for(&format!("{base}[raw_append]\nsources = [{{ topic = \"x\", table = \"missing\" }}]\n"), &[]);
        assert!(e.starts_with("raw_append.sources[0].table:"), "{e}");
        let e = error_for(base, &[("LAKEHOUSE_KAFKA_SECURITY_PROTOCOL", "tls")]);
        assert!(e.starts_with("kafka.security_protocol: from LAKEHOUSE_KAFKA_SECURITY_PROTOCOL"), "{e}");
        let e = error_for(base, &[("LAKEHOUSE_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")]);
        assert!(e.starts_with("kafka.sasl_mechanism:"), "{e}");
        let e = error_for(&format!("{base}[raw_append]\nmax_batch_bytes = \"12 parsecs\"\nsources = []\n"), &[]);
        assert!(e.contains("max_batch_bytes") || e.contains("parsecs"), "{e}");
        let e = error_for(&base.replace("path = \"t\"", "path = \"../t\""), &[]);
        assert!(e.starts_with("tables.t.path:"), "{e}");
        let merge = |extra: &str| format!("{base}[tables.u]\npath = \"u\"\nschema = \"order.schema.toml\"\n[merge_upsert]\nsource = \"t\"\ntarget = \"u\"\n{extra}");
        let e = error_for(&merge("key = [\"id\"]\nsequence = \"timestamp\"\n"), &[]);
        assert!(e.starts_with("merge_upsert.key: 'id' is not a schema column of the target u"), "{e}");
        let e = error_for(&merge("key = [\"order_id\"]\nsequence = \"ts\"\n"), &[]);
        assert!(e.starts_with("merge_upsert.sequence:"), "{e}");
        let e = error_for(&merge("key = [\"order_id\"]\nsequence = \"timestamp\"\noperation = \"op\"\n"), &[]);
        assert!(e.starts_with("merge_upsert.operation: 'op' is not a column of the source t"), "{e}");
        let e = error_for(&merge("key = []\nsequence = \"timestamp\"\n"), &[]);
        assert!(e.starts_with("merge_upsert.key:"), "{e}");
    }
}
