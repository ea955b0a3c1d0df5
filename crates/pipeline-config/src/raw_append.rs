//! `[raw_append]`: Kafka topics and Kinesis streams routed into tables.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use std::path::Path;

use crate::dms::SourceFormat;
use crate::routing::{single_inferred, RouteContext, RouteFile, Routing};
use crate::schema::ColumnType;

use crate::incremental::DEFAULT_INTERVAL;
use crate::tables::{lookup, AddedColumns};
use crate::{checks, ByteSize, ConfigError, DurationStr, LakeConfig, TableConfig, Trigger};

/// The section as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppendFile {
    #[serde(default = "default_job_id")]
    job_id: String,
    sources: Vec<SourceFile>,
    #[serde(default = "default_dead_letter")]
    dead_letter_table: String,
    #[serde(default)]
    trigger: Trigger,
    #[serde(default = "default_interval")]
    interval: DurationStr,
    #[serde(default)]
    pub(crate) group_id: Option<String>,
    #[serde(default = "default_max_batch_rows")]
    max_batch_rows: u64,
    #[serde(default = "default_max_batch_bytes")]
    max_batch_bytes: ByteSize,
    #[serde(default = "default_target_file_size")]
    target_file_size: ByteSize,
    #[serde(default = "default_max_message_bytes")]
    max_message_bytes: ByteSize,
    #[serde(default = "default_shutdown_timeout")]
    shutdown_timeout: DurationStr,
    #[serde(default)]
    on_missing_offsets: OnMissingOffsets,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    route: Option<RouteFile>,
    #[serde(default)]
    metadata_columns: Vec<MetadataColumn>,
    #[serde(default)]
    unknown_fields: UnknownFields,
    #[serde(default)]
    flatten: Flatten,
    #[serde(default)]
    rescue_refused: bool,
    #[serde(default)]
    format: SourceFormat,
}

/// The raw-append job, validated.
#[derive(Debug, Clone)]
pub struct RawAppendConfig {
    /// Identifies the job in `txn` app ids (`<job_id>:<topic>:<partition>`); never change it
    /// for an existing table, or progress restarts from the earliest offsets.
    pub job_id: String,
    /// Topic or stream → table routes.
    pub sources: Vec<RawAppendSource>,
    /// Dead-letter table path under the lake root.
    pub dead_letter_table: String,
    /// Default trigger (the `--trigger` flag wins).
    pub trigger: Trigger,
    /// Continuous mode: a batch is committed at the latest this long after its first message
    /// (the trigger interval; row and byte limits may commit it sooner).
    pub interval: DurationStr,
    /// Continuous mode: consumer group shared by the tasks; unset means this one process
    /// reads every partition by manual assignment.
    pub group_id: Option<String>,
    /// A batch is committed at this many messages...
    pub max_batch_rows: u64,
    /// ...or this many payload bytes, whichever comes first.
    pub max_batch_bytes: ByteSize,
    /// Parquet files are split at about this size.
    pub target_file_size: ByteSize,
    /// Larger messages are dead letters.
    pub max_message_bytes: ByteSize,
    /// On SIGTERM, the batch in flight may take this long to commit before it is abandoned.
    pub shutdown_timeout: DurationStr,
    /// `fail` (default) or `skip` when offsets the job has not read are gone.
    pub on_missing_offsets: OnMissingOffsets,
}

/// One topic or stream written to one table, or routed into many.
#[derive(Debug, Clone)]
pub struct RawAppendSource {
    /// The Kafka topic or Kinesis stream name (unique across both: it names the progress).
    pub name: String,
    /// Kafka topic or Kinesis stream.
    pub kind: SourceKind,
    /// The table under `[tables]` it is written to; for a routed source, the table that keeps
    /// its read progress (no rows).
    pub table: TableConfig,
    /// Set when each message is routed to a table of its own (`route = { ... }`).
    pub routing: Option<Routing>,
    /// Source metadata columns to add.
    pub metadata_columns: Vec<MetadataColumn>,
    /// What happens to message fields the table's schema does not read.
    pub unknown_fields: UnknownFields,
    /// How `unknown_fields = "add_columns"` names the columns of nested fields.
    pub flatten: Flatten,
    /// With `add_columns`: fields that cannot become columns are kept in `_rescued_data`.
    pub rescue_refused: bool,
    /// How messages are laid out (plain JSON objects, AWS DMS records).
    pub format: SourceFormat,
}

/// What raw-append does with message fields its table's schema does not read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownFields {
    /// They are not stored (the schema decides what is kept).
    #[default]
    Ignore,
    /// They are kept, exactly as sent, as a JSON object in the string column `_rescued_data`
    /// (null when a message has none).
    Rescue,
    /// A new field becomes a new nullable column of the type its values show (nested objects
    /// flattened per `flatten`), committed to the table as a metadata change before any row
    /// that carries it; the table's schema, not the file, then holds the column.
    AddColumns,
}

impl UnknownFields {
    /// Whether fields the table does not read end in `_rescued_data`: all of them under
    /// `rescue`, those schema evolution cannot add under `add_columns` with `rescue_refused`.
    fn rescues(self, rescue_refused: bool) -> bool {
        self == UnknownFields::Rescue || rescue_refused
    }
}

/// How nested objects of new fields become columns (`unknown_fields = "add_columns"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flatten {
    /// Put between the keys of a nested field's column name (`address.city` → `address_city`).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Levels of nested objects that become columns (1: top-level fields only); deeper
    /// objects and arrays become columns as `nested` says.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// What arrays and objects deeper than `max_depth` become.
    #[serde(default)]
    pub nested: NestedAs,
}

/// What arrays and objects deeper than `flatten.max_depth` become when they are new columns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NestedAs {
    /// A `json` column: the value's text as sent (any shape fits, nothing is typed).
    #[default]
    Json,
    /// Delta `array` and `struct` columns of the types their values show; a field whose values
    /// disagree in shape is a `json` column instead.
    Typed,
}

impl Default for Flatten {
    fn default() -> Self {
        Self { separator: default_separator(), max_depth: default_max_depth(), nested: NestedAs::Json }
    }
}

fn default_separator() -> String {
    "_".into()
}

fn default_max_depth() -> usize {
    3
}

/// The column that holds rescued fields.
pub const RESCUED_DATA_COLUMN: &str = "_rescued_data";

/// What a raw-append source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A Kafka / MSK topic (`topic = ...`).
    Kafka,
    /// An Amazon Kinesis data stream (`stream = ...`).
    Kinesis,
}

/// Source metadata columns raw-append can add.
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
    /// `_kinesis_stream` string.
    Stream,
    /// `_kinesis_shard_id` string (`shardId-000000000003`).
    ShardId,
    /// `_kinesis_sequence_number` string (decimal, up to 128 bits).
    SequenceNumber,
    /// `_kinesis_sub_sequence_number` long: the user record's index in a KPL aggregate (0 otherwise).
    SubSequenceNumber,
    /// `_kinesis_arrival_time` timestamp (approximate arrival time).
    ArrivalTime,
    /// `_kinesis_partition_key` string.
    PartitionKey,
    /// `_raw_message` binary: the message's payload bytes as received (Kafka value, Kinesis
    /// user record), for replay; any source.
    RawMessage,
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
            Self::Stream => "_kinesis_stream",
            Self::ShardId => "_kinesis_shard_id",
            Self::SequenceNumber => "_kinesis_sequence_number",
            Self::SubSequenceNumber => "_kinesis_sub_sequence_number",
            Self::ArrivalTime => "_kinesis_arrival_time",
            Self::PartitionKey => "_kinesis_partition_key",
            Self::RawMessage => "_raw_message",
        }
    }

    /// The column's type (None for `_raw_message`, which is binary).
    pub fn column_type(self) -> Option<ColumnType> {
        Some(match self {
            Self::Partition => ColumnType::Integer,
            Self::Offset | Self::SubSequenceNumber => ColumnType::Long,
            Self::Timestamp | Self::ArrivalTime => ColumnType::Timestamp,
            Self::RawMessage => return None,
            _ => ColumnType::String,
        })
    }

    /// Whether a source of `kind` has this column.
    pub fn fits(self, kind: SourceKind) -> bool {
        match self {
            Self::Topic | Self::Partition | Self::Offset | Self::Timestamp | Self::Key => kind == SourceKind::Kafka,
            Self::RawMessage => true,
            _ => kind == SourceKind::Kinesis,
        }
    }

    /// The name the configuration writes (for messages).
    fn config_name(self) -> &'static str {
        match self {
            Self::RawMessage => "raw_message",
            _ => self.column_name().split_once('_').map_or("", |(_, rest)| rest.split_once('_').map_or(rest, |(_, name)| name)),
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

fn default_job_id() -> String {
    "raw-append".into()
}
fn default_dead_letter() -> String {
    "raw/dead_letter".into()
}
fn default_interval() -> DurationStr {
    DEFAULT_INTERVAL
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
    DurationStr(std::time::Duration::from_secs(30))
}

impl RawAppendFile {
    /// Checks the section and resolves its routes' tables.
    pub(crate) fn resolve(
        self,
        tables: &BTreeMap<String, TableConfig>,
        lake: &LakeConfig,
        base: &Path,
    ) -> Result<RawAppendConfig, ConfigError> {
        if self.sources.is_empty() {
            return Err(ConfigError::invalid("raw_append.sources", "add at least one { topic, table } or { stream, table } route"));
        }
        checks::job_id("raw_append.job_id", &self.job_id)?;
        checks::relative_path("raw_append.dead_letter_table", &self.dead_letter_table)?;
        if self.max_batch_rows == 0 || self.max_batch_bytes.0 == 0 {
            return Err(ConfigError::invalid("raw_append.max_batch_rows", "max_batch_rows and max_batch_bytes must be positive"));
        }
        if self.target_file_size.0 < (1 << 20) {
            return Err(ConfigError::invalid("raw_append.target_file_size", "must be at least 1 MiB"));
        }
        let mut names = HashSet::new();
        let mut sources = Vec::with_capacity(self.sources.len());
        for (i, src) in self.sources.into_iter().enumerate() {
            let key = format!("raw_append.sources[{i}]");
            let src = src.resolve(&key, &self.job_id, tables, (lake, base))?;
            if !names.insert(src.name.clone()) {
                // Progress is named by the source's name: a topic and a stream may not share one.
                return Err(ConfigError::invalid(key, format!("'{}' is routed twice (topics and streams share one namespace)", src.name)));
            }
            sources.push(src);
        }
        Ok(RawAppendConfig {
            job_id: self.job_id,
            sources,
            dead_letter_table: self.dead_letter_table,
            trigger: self.trigger,
            interval: self.interval,
            group_id: self.group_id,
            max_batch_rows: self.max_batch_rows,
            max_batch_bytes: self.max_batch_bytes,
            target_file_size: self.target_file_size,
            max_message_bytes: self.max_message_bytes,
            shutdown_timeout: self.shutdown_timeout,
            on_missing_offsets: self.on_missing_offsets,
        })
    }
}

impl RawAppendConfig {
    /// The columns raw-append writes into each of its tables beyond the table's own (the
    /// format's, source metadata, `_rescued_data`) with their types, by table name: jobs
    /// reading those tables may name them.
    pub fn added_columns(&self) -> AddedColumns {
        let mut out = AddedColumns::new();
        for src in &self.sources {
            for table in src.tables() {
                let columns = out.entry(table.name.clone()).or_default();
                columns.extend(src.format.added_columns().iter().map(|(c, t)| (c.to_string(), Some(t.clone()))));
                columns.extend(src.appended_columns());
            }
        }
        out
    }
}

impl RawAppendSource {
    /// The columns written after the message's (source metadata, then `_rescued_data`), with
    /// their types (None: binary).
    pub fn appended_columns(&self) -> Vec<(String, Option<ColumnType>)> {
        let metadata = self.metadata_columns.iter().map(|m| (m.column_name().to_string(), m.column_type()));
        let rescued = self.rescues().then(|| (RESCUED_DATA_COLUMN.to_string(), Some(ColumnType::String)));
        metadata.chain(rescued).collect()
    }
}

impl RawAppendSource {
    /// Whether fields the table does not read end in `_rescued_data` (`rescue`, or under
    /// `add_columns` with `rescue_refused` those that cannot become columns).
    pub fn rescues(&self) -> bool {
        self.unknown_fields.rescues(self.rescue_refused)
    }

    /// The tables the source's rows are written to (the routed ones, or its one table).
    pub fn tables(&self) -> Vec<&TableConfig> {
        match &self.routing {
            Some(routing) => routing.tables.values().collect(),
            None => vec![&self.table],
        }
    }
}

impl SourceFile {
    fn resolve(
        self,
        key: &str,
        job_id: &str,
        tables: &BTreeMap<String, TableConfig>,
        (lake, base): (&LakeConfig, &Path),
    ) -> Result<RawAppendSource, ConfigError> {
        let (name, kind) = match (self.topic.clone(), self.stream.clone()) {
            (Some(topic), None) => (topic, SourceKind::Kafka),
            (None, Some(stream)) => (stream, SourceKind::Kinesis),
            _ => return Err(ConfigError::invalid(key, "give exactly one of topic = \"...\" (Kafka) or stream = \"...\" (Kinesis)")),
        };
        if name.is_empty() || name.contains(':') {
            return Err(ConfigError::invalid(
                key,
                format!("'{name}': a source name must be non-empty and without ':' (it names the progress)"),
            ));
        }
        if let Some(m) = self.metadata_columns.iter().find(|m| !m.fits(kind)) {
            let other = match kind {
                SourceKind::Kafka => {
                    "stream, shard_id, sequence_number, sub_sequence_number, arrival_time, partition_key are Kinesis columns"
                }
                SourceKind::Kinesis => "topic, partition, offset, timestamp, key are Kafka columns",
            };
            return Err(ConfigError::invalid(format!("{key}.metadata_columns"), format!("{}: {other}", m.config_name())));
        }
        let ctx = RouteContext { key: key.to_string(), source: &name, job_id, format: self.format, lake, base };
        let (table, routing) = self.target(&ctx, tables)?;
        self.check_flatten(key)?;
        if self.rescue_refused && self.unknown_fields != UnknownFields::AddColumns {
            return Err(ConfigError::invalid(
                format!("{key}.rescue_refused"),
                "keeps the fields schema evolution cannot add: it goes with unknown_fields = \"add_columns\" (\"rescue\" keeps every unknown field already)",
            ));
        }
        if routing.as_ref().is_some_and(|r| r.inferred.is_some()) && self.unknown_fields != UnknownFields::AddColumns {
            let setting = if self.route.is_some() { "route.infer" } else { "table" };
            return Err(ConfigError::invalid(
                format!("{key}.{setting}"),
                "inferred tables get their columns from schema evolution: set unknown_fields = \"add_columns\" on the source",
            ));
        }
        for t in routing.as_ref().map_or_else(|| vec![&table], |r| r.tables.values().collect()) {
            self.check_added_columns(key, t)?;
        }
        Ok(RawAppendSource {
            name,
            kind,
            table,
            routing,
            metadata_columns: self.metadata_columns,
            unknown_fields: self.unknown_fields,
            flatten: self.flatten,
            rescue_refused: self.rescue_refused,
            format: self.format,
        })
    }

    /// The table the source's rows go to and, for a routed or inferred source, its routing
    /// (the table then keeps the source's progress).
    fn target(
        &self,
        ctx: &RouteContext<'_>,
        tables: &BTreeMap<String, TableConfig>,
    ) -> Result<(TableConfig, Option<Routing>), ConfigError> {
        let at = |setting: &str| RouteContext { key: format!("{}.{setting}", ctx.key), ..*ctx };
        match (self.table.as_deref(), self.route.clone()) {
            (Some(table), None) => {
                let table = lookup(tables, &format!("{}.table", ctx.key), table)?;
                if !table.inferred() {
                    return Ok((table, None));
                }
                let (routing, progress) = single_inferred(&at("table"), &table);
                Ok((progress, Some(routing)))
            }
            (None, Some(route)) => {
                let (routing, progress) = route.resolve(&at("route"))?;
                Ok((progress, Some(routing)))
            }
            _ => Err(ConfigError::invalid(&ctx.key, "give exactly one of table = \"...\" or route = { ... }")),
        }
    }

    /// Flattened names must be column names: a separator that a key could hold (`.`) or none
    /// at all would make two fields one column.
    fn check_flatten(&self, key: &str) -> Result<(), ConfigError> {
        let Flatten { separator, max_depth, .. } = &self.flatten;
        if separator.is_empty() || separator.contains('.') || separator.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                format!("{key}.flatten.separator"),
                format!("'{separator}': give a non-empty separator without '.' or control characters, such as \"_\""),
            ));
        }
        if *max_depth == 0 {
            return Err(ConfigError::invalid(format!("{key}.flatten.max_depth"), "give 1 (top-level fields only) or more"));
        }
        Ok(())
    }

    /// The columns the source adds must not clash with the table's own.
    fn check_added_columns(&self, key: &str, table: &TableConfig) -> Result<(), ConfigError> {
        let clash = |setting: &str, column: &str, what: &str| {
            let of = if self.route.is_some() { format!(" of routed table {}", table.name) } else { String::new() };
            Err(ConfigError::invalid(format!("{key}.{setting}"), format!("{column}{what} clashes with a schema column{of}")))
        };
        if let Some(m) = self.metadata_columns.iter().find(|m| table.schema.column(m.column_name()).is_some()) {
            return clash("metadata_columns", m.column_name(), "");
        }
        if let Some((added, _)) = self.format.added_columns().iter().find(|(c, _)| table.schema.column(c).is_some()) {
            return clash("format", added, " (added by the format)");
        }
        if self.unknown_fields.rescues(self.rescue_refused) && table.schema.column(RESCUED_DATA_COLUMN).is_some() {
            return clash("unknown_fields", RESCUED_DATA_COLUMN, "");
        }
        Ok(())
    }
}
