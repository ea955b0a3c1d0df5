//! `[tables.<name>]`: the lake's Delta tables, their schema files and partitioning.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{checks, ColumnType, ConfigError, LakeConfig, TableSchema};

/// A table as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TableFile {
    path: String,
    schema: PathBuf,
    #[serde(default)]
    partitions: Vec<PartitionSpec>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

/// A Delta table of the lake, its schema loaded and its partitioning checked.
#[derive(Debug, Clone)]
pub struct TableConfig {
    /// The table's name under `[tables]`.
    pub name: String,
    /// Where it is: the lake root joined with `path`.
    pub location: String,
    /// Path under the lake root.
    pub path: String,
    /// The schema file it was loaded from.
    pub schema_file: PathBuf,
    /// The table's columns.
    pub schema: TableSchema,
    /// Partition columns in directory order.
    pub partitions: Vec<PartitionSpec>,
    /// Extra Delta table properties set when the table is created.
    pub properties: BTreeMap<String, String>,
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

impl TableFile {
    /// A table written by the program rather than the file (a routed table).
    pub(crate) fn new(path: String, schema: PathBuf, partitions: Vec<PartitionSpec>, properties: BTreeMap<String, String>) -> Self {
        Self { path, schema, partitions, properties }
    }

    /// Loads the schema (relative to `base`) and checks the path and partitions; `key` names
    /// the table's setting in errors.
    pub(crate) fn resolve(self, name: &str, key: &str, lake: &LakeConfig, base: &Path) -> Result<TableConfig, ConfigError> {
        checks::relative_path(&format!("{key}.path"), &self.path)?;
        let schema = if self.schema == Path::new(INFER_SCHEMA) {
            check_inferred_partitions(key, "schema = \"infer\"", &self.partitions)?;
            TableSchema { columns: Vec::new() }
        } else {
            let schema = TableSchema::load(&base.join(&self.schema), &format!("{key}.schema"))?;
            for (i, p) in self.partitions.iter().enumerate() {
                p.validate(&format!("{key}.partitions[{i}]"), &schema)?;
            }
            schema
        };
        let mut seen = HashSet::new();
        if let Some((i, p)) = self.partitions.iter().enumerate().find(|(_, p)| !seen.insert(&p.column)) {
            return Err(ConfigError::invalid(format!("{key}.partitions[{i}].column"), format!("'{}' is listed twice", p.column)));
        }
        Ok(TableConfig {
            name: name.to_string(),
            location: lake.location(&self.path),
            path: self.path,
            schema_file: self.schema,
            schema,
            partitions: self.partitions,
            properties: self.properties,
        })
    }
}

/// `schema = "infer"`: the table's columns come from its first messages (raw-append with
/// `unknown_fields = "add_columns"`).
pub const INFER_SCHEMA: &str = "infer";

impl TableConfig {
    /// True for `schema = "infer"` (no schema file: the columns are in the Delta table only).
    pub fn inferred(&self) -> bool {
        self.schema_file == Path::new(INFER_SCHEMA)
    }

    /// Partition column names in directory order.
    pub fn partition_columns(&self) -> Vec<String> {
        self.partitions.iter().map(|p| p.column.clone()).collect()
    }

    /// Column names the table holds: schema columns and derived partition columns (see
    /// [`TableConfig::column_names_with`] for the columns raw-append adds).
    pub fn column_names(&self) -> Vec<String> {
        let schema = self.schema.columns.iter().map(|c| c.name.clone());
        schema.chain(self.partitions.iter().map(|p| p.column.clone())).collect()
    }
}

/// Columns a job adds to tables beyond their schema files: table name → (column, type; None
/// for binary).
pub type AddedColumns = BTreeMap<String, Vec<(String, Option<ColumnType>)>>;

impl TableConfig {
    /// [`TableConfig::column_names`] plus the columns `added` to this table.
    pub(crate) fn column_names_with(&self, added: &AddedColumns) -> Vec<String> {
        let extra = added.get(&self.name).into_iter().flatten().map(|(c, _)| c.clone());
        self.column_names().into_iter().chain(extra).collect()
    }

    /// The type of schema or `added` column `name` (None when there is none, or it is binary).
    pub(crate) fn column_type_with(&self, name: &str, added: &AddedColumns) -> Option<ColumnType> {
        match self.schema.column(name) {
            Some(c) => Some(c.kind()),
            None => added.get(&self.name)?.iter().find(|(c, _)| c == name).and_then(|(_, t)| t.clone()),
        }
    }
}

/// The table `name` under `[tables]`, or an error naming `key` (the setting that refers to it).
pub(crate) fn lookup(tables: &BTreeMap<String, TableConfig>, key: &str, name: &str) -> Result<TableConfig, ConfigError> {
    tables.get(name).cloned().ok_or_else(|| ConfigError::invalid(key, format!("no table '{name}' under [tables]")))
}

/// Partitions of tables whose columns are inferred (`setting` names how, for errors): they can
/// only come from ingestion time, since no column is known before the first messages.
pub(crate) fn check_inferred_partitions(key: &str, setting: &str, partitions: &[PartitionSpec]) -> Result<(), ConfigError> {
    let no_columns = TableSchema { columns: Vec::new() };
    for (i, p) in partitions.iter().enumerate() {
        let key = format!("{key}.partitions[{i}]");
        if p.source != PartitionSource::IngestionTime {
            return Err(ConfigError::invalid(
                key,
                format!("with {setting} partitions come from ingestion time (source = \"ingestion_time\"): no column is known before the first messages"),
            ));
        }
        p.validate(&key, &no_columns)?;
    }
    Ok(())
}

/// [`lookup`] for jobs that read a table's columns by name: its schema must be written down.
pub(crate) fn lookup_declared(tables: &BTreeMap<String, TableConfig>, key: &str, name: &str) -> Result<TableConfig, ConfigError> {
    let table = lookup(tables, key, name)?;
    if table.inferred() {
        return Err(ConfigError::invalid(
            key,
            format!(
                "table '{name}' has schema = \"infer\": this job names its columns, so give it a schema file \
                 (`lakectl infer-schema` writes one to review)"
            ),
        ));
    }
    Ok(table)
}

impl PartitionSpec {
    /// Checks the partition against the table's schema; `key` names it in errors.
    pub(crate) fn validate(&self, key: &str, schema: &TableSchema) -> Result<(), ConfigError> {
        let derived_clash = || ConfigError::invalid(format!("{key}.column"), "a derived partition column must not also be a schema column");
        match self.source {
            PartitionSource::Column => {
                let Some(column) = schema.column(&self.column) else {
                    return Err(ConfigError::invalid(
                        format!("{key}.column"),
                        format!(
                            "'{}' is not a schema column; for derived values set source = \"ingestion_time\" or \"field\"",
                            self.column
                        ),
                    ));
                };
                if column.kind().is_nested() {
                    return Err(ConfigError::invalid(
                        format!("{key}.column"),
                        format!("'{}' is an array or struct column, which cannot be a partition value", self.column),
                    ));
                }
                if self.format.is_some() || self.field.is_some() {
                    return Err(ConfigError::invalid(key, "format and field apply to ingestion_time / field partitions only"));
                }
            }
            PartitionSource::IngestionTime => {
                self.check_format(key)?;
                if schema.column(&self.column).is_some() {
                    return Err(derived_clash());
                }
            }
            PartitionSource::Field => {
                self.check_format(key)?;
                self.check_field(key, schema)?;
                if schema.column(&self.column).is_some() {
                    return Err(derived_clash());
                }
            }
        }
        Ok(())
    }

    fn check_format(&self, key: &str) -> Result<(), ConfigError> {
        let f = self.format.as_deref().ok_or_else(|| {
            ConfigError::invalid(format!("{key}.format"), "required for ingestion_time and field partitions, e.g. \"%Y\"")
        })?;
        if f.is_empty() || chrono::format::StrftimeItems::new(f).any(|it| matches!(it, chrono::format::Item::Error)) {
            return Err(ConfigError::invalid(format!("{key}.format"), format!("'{f}' is not a valid chrono format")));
        }
        Ok(())
    }

    fn check_field(&self, key: &str, schema: &TableSchema) -> Result<(), ConfigError> {
        let field = self
            .field
            .as_deref()
            .ok_or_else(|| ConfigError::invalid(format!("{key}.field"), "name the timestamp column to derive from"))?;
        match schema.column(field) {
            Some(c) if c.kind() == ColumnType::Timestamp => Ok(()),
            _ => Err(ConfigError::invalid(format!("{key}.field"), format!("'{field}' is not a timestamp column of the schema"))),
        }
    }
}
