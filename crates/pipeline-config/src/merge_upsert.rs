//! `[merge_upsert]`: the latest row per key of a table's new commits, merged into a target.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::incremental::IncrementalFile;
use crate::tables::{lookup_declared, AddedColumns};
use crate::{checks, ConfigError, DurationStr, IncrementalOptions, TableConfig};

/// The section as the file writes it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MergeUpsertFile {
    source: String,
    target: String,
    key: Vec<String>,
    sequence: String,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default = "default_delete_values")]
    delete_values: Vec<String>,
    #[serde(default = "default_dead_letters")]
    dead_letter_table: String,
    #[serde(default = "default_tombstones")]
    tombstone_table: String,
    #[serde(default = "default_tombstone_retention")]
    tombstone_retention: DurationStr,
    #[serde(default)]
    schema_evolution: SchemaEvolution,
    #[serde(default)]
    ignore_columns: Vec<String>,
    #[serde(flatten)]
    incremental: IncrementalFile,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

/// The merge-upsert job, validated: the latest row per key of a Delta table's new commits,
/// merged into a target that holds exactly one row per key.
#[derive(Debug, Clone)]
pub struct MergeUpsertConfig {
    /// Identity, progress folder, trigger and batch limits.
    pub incremental: IncrementalOptions,
    /// Source table, read incrementally.
    pub source: TableConfig,
    /// Target table; created on the first run from its schema file.
    pub target: TableConfig,
    /// Key columns: the target keeps one row per distinct key.
    pub key: Vec<String>,
    /// Ordering column (e.g. an event timestamp or a CDC sequence): a row replaces the target's
    /// only when its value is greater or equal.
    pub sequence: String,
    /// Source column holding the change type (e.g. AWS DMS `metadata.operation`); unset: every
    /// row is an upsert.
    pub operation: Option<String>,
    /// Values of `operation` that delete the key.
    pub delete_values: Vec<String>,
    /// Table path under the lake root for rows with a null key or sequence.
    pub dead_letter_table: String,
    /// Table path under the lake root for delete tombstones (key, sequence), which stop an
    /// older change arriving late from resurrecting a deleted key.
    pub tombstone_table: String,
    /// How long a tombstone is kept after its delete was merged.
    pub tombstone_retention: DurationStr,
    /// `none`: a source column the target lacks is an error; `add_columns`: it is added to the
    /// target (nullable) and filled from then on.
    pub schema_evolution: SchemaEvolution,
    /// Source columns the target does not take (e.g. raw-append's `_kafka_*` metadata or
    /// ingestion-time partitions of a raw CDC table); never added by schema evolution.
    pub ignore_columns: Vec<String>,
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

fn default_delete_values() -> Vec<String> {
    vec!["delete".into()]
}
fn default_dead_letters() -> String {
    "processed_dead_letter".into()
}
fn default_tombstones() -> String {
    "processed_tombstones".into()
}
fn default_tombstone_retention() -> DurationStr {
    DurationStr(std::time::Duration::from_secs(7 * 24 * 3600))
}

impl MergeUpsertFile {
    /// Checks the section and resolves its tables.
    /// Validates the section; `added` names the columns raw-append writes into its tables
    /// beyond their schemas (the source's operation column may be one of them).
    pub(crate) fn resolve(self, tables: &BTreeMap<String, TableConfig>, added: &AddedColumns) -> Result<MergeUpsertConfig, ConfigError> {
        checks::no_unknown_keys("merge_upsert", &self.unknown)?;
        let incremental = self.incremental.clone().resolve("merge_upsert", "merge-upsert")?;
        let source = lookup_declared(tables, "merge_upsert.source", &self.source)?;
        let target = lookup_declared(tables, "merge_upsert.target", &self.target)?;
        if source.name == target.name {
            return Err(ConfigError::invalid("merge_upsert.target", "must differ from merge_upsert.source"));
        }
        self.check_columns(&source, &source.column_names_with(added), &target)?;
        for (key, path) in
            [("merge_upsert.dead_letter_table", &self.dead_letter_table), ("merge_upsert.tombstone_table", &self.tombstone_table)]
        {
            checks::relative_path(key, path)?;
        }
        Ok(MergeUpsertConfig {
            incremental,
            source,
            target,
            key: self.key,
            sequence: self.sequence,
            operation: self.operation,
            delete_values: self.delete_values,
            dead_letter_table: self.dead_letter_table,
            tombstone_table: self.tombstone_table,
            tombstone_retention: self.tombstone_retention,
            schema_evolution: self.schema_evolution,
            ignore_columns: self.ignore_columns,
        })
    }

    /// Key and sequence are target columns, the operation a source column, ignored columns
    /// none of the target's.
    fn check_columns(&self, source: &TableConfig, source_columns: &[String], target: &TableConfig) -> Result<(), ConfigError> {
        if self.key.is_empty() {
            return Err(ConfigError::invalid("merge_upsert.key", "name at least one key column, e.g. [\"order_id\"]"));
        }
        for k in self.key.iter().chain(std::iter::once(&self.sequence)) {
            let what = if *k == self.sequence { "merge_upsert.sequence" } else { "merge_upsert.key" };
            if target.schema.column(k).is_none() {
                return Err(ConfigError::invalid(what, format!("'{k}' is not a schema column of the target {}", target.name)));
            }
        }
        if let Some(op) = &self.operation {
            if !source_columns.contains(op) {
                return Err(ConfigError::invalid(
                    "merge_upsert.operation",
                    format!("'{op}' is not a column of the source {}", source.name),
                ));
            }
            if self.delete_values.is_empty() {
                return Err(ConfigError::invalid("merge_upsert.delete_values", "list the operation values that delete, e.g. [\"delete\"]"));
            }
        }
        let is_target_column = |c: &String| self.key.contains(c) || *c == self.sequence || target.schema.column(c).is_some();
        if let Some(c) = self.ignore_columns.iter().find(|c| is_target_column(c)) {
            let message = format!("'{c}' is a column of the target {}: it cannot be ignored", target.name);
            return Err(ConfigError::invalid("merge_upsert.ignore_columns", message));
        }
        Ok(())
    }
}
