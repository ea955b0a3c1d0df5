//! `route = { ... }` of a raw-append source: one topic or stream split into many tables, the
//! table of each message named by its field values (AWS DMS: `{metadata.schema-name}_{metadata.table-name}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dms::SourceFormat;
use crate::tables::TableFile;
use crate::{checks, ColumnSpec, ColumnType, ConfigError, LakeConfig, PartitionSpec, TableConfig, TableSchema};

/// The section as the file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    schemas: Option<PathBuf>,
    #[serde(default)]
    infer: bool,
    path: String,
    #[serde(default)]
    partitions: Vec<PartitionSpec>,
    #[serde(default)]
    properties: BTreeMap<String, String>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    when: BTreeMap<String, String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    progress_path: Option<String>,
}

/// How a source's messages are routed into tables, validated.
#[derive(Debug, Clone)]
pub struct Routing {
    /// The table name of a message, from its field values.
    pub template: NameTemplate,
    /// Template results renamed before the table is looked up (an explicit map).
    pub rename: BTreeMap<String, String>,
    /// Field path → value every routed message must have; others go to `default`.
    pub when: Vec<(Vec<String>, String)>,
    /// The table for messages that match no table (unset: the dead-letter table).
    pub default: Option<String>,
    /// The tables messages may be routed to, by name: one per schema file of the folder.
    pub tables: BTreeMap<String, TableConfig>,
    /// `infer = true`: a name without a schema file is a table of its own, created from the
    /// fields of its first messages (schema evolution adds the rest).
    pub inferred: Option<InferredTables>,
}

/// How tables without a schema file are laid out (`route = { infer = true }`).
#[derive(Debug, Clone)]
pub struct InferredTables {
    /// `path` with `{table}` in it.
    pub path: String,
    /// Partitions (from ingestion time) of every inferred table.
    pub partitions: Vec<PartitionSpec>,
    /// Table properties of every inferred table.
    pub properties: BTreeMap<String, String>,
    /// Where tables live.
    pub lake: LakeConfig,
}

impl InferredTables {
    /// The table named `name` (a valid routed table name), with no columns of its own yet.
    pub fn table(&self, name: &str) -> TableConfig {
        let path = self.path.replace("{table}", name);
        TableConfig {
            name: name.to_string(),
            location: self.lake.location(&path),
            path,
            schema_file: PathBuf::from(crate::tables::INFER_SCHEMA),
            schema: TableSchema { columns: Vec::new() },
            partitions: self.partitions.clone(),
            properties: self.properties.clone(),
        }
    }
}

/// A table-name template: text and `{dotted.field.path}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    /// The template's pieces in order.
    pub parts: Vec<TemplatePart>,
}

/// A piece of a [`NameTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Literal text.
    Text(String),
    /// The value of the field at this path (object keys from the message's root).
    Field(Vec<String>),
}

/// The template DMS sources use when none is given.
pub const DMS_TABLE_TEMPLATE: &str = "{metadata.schema-name}_{metadata.table-name}";

/// The longest routed table name (it becomes a path component and a summary key).
pub const MAX_TABLE_NAME: usize = 128;

impl NameTemplate {
    /// Parses `"{a.b}_{c}"`; `key` names the setting in errors.
    pub fn parse(key: &str, text: &str) -> Result<Self, ConfigError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or_else(|| ConfigError::invalid(key, format!("'{text}': a '{{' is not closed")))?;
            let path: Vec<String> = rest[open + 1..open + close].split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(ConfigError::invalid(key, format!("'{text}': a placeholder names no field, e.g. {{metadata.table-name}}")));
            }
            parts.push(TemplatePart::Field(path));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(ConfigError::invalid(key, format!("'{text}': a '}}' is not opened")));
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, TemplatePart::Field(_))) {
            return Err(ConfigError::invalid(key, format!("'{text}' names no field: write e.g. \"{DMS_TABLE_TEMPLATE}\"")));
        }
        Ok(Self { parts })
    }
}

/// Why `name` cannot be a routed table's name (None: it can): it becomes a path component.
pub fn table_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_TABLE_NAME {
        return Some(format!("routed table name '{name}' must have 1 to {MAX_TABLE_NAME} characters"));
    }
    let bad = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'));
    bad.map(|c| format!("routed table name '{name}' has '{}': only letters, digits, '_' and '-' may name a table", c.escape_default()))
}

/// Where a routed source's read progress is committed when `progress_path` is not set.
fn default_progress_path(job_id: &str, source: &str) -> String {
    format!("_progress/{job_id}/{source}")
}

impl RouteFile {
    /// Loads every schema of the folder as a routed table and checks the rest; returns the
    /// routing and the table that keeps the source's progress.
    pub(crate) fn resolve(self, ctx: &RouteContext<'_>) -> Result<(Routing, TableConfig), ConfigError> {
        let key = &ctx.key;
        let template = match (&self.table, ctx.format) {
            (Some(t), _) => NameTemplate::parse(&format!("{key}.table"), t)?,
            (None, SourceFormat::Dms) => NameTemplate::parse(&format!("{key}.table"), DMS_TABLE_TEMPLATE)?,
            (None, SourceFormat::Json) => {
                return Err(ConfigError::invalid(format!("{key}.table"), "name the table of each message, e.g. \"{type}_events\""))
            }
        };
        if !self.path.contains("{table}") {
            return Err(ConfigError::invalid(format!("{key}.path"), "must contain {table}, e.g. \"raw/dms/{table}\""));
        }
        checks::relative_path(&format!("{key}.path"), &self.path)?;
        let tables = self.load_tables(ctx)?;
        let inferred = self.inferred(ctx)?;
        for (from, to) in &self.rename {
            if !tables.contains_key(to) && inferred.is_none() {
                return Err(ConfigError::invalid(format!("{key}.rename.{from}"), format!("no schema file {to}.schema.toml in the folder")));
            }
        }
        if let Some(d) = self.default.as_ref().filter(|d| !tables.contains_key(*d) && inferred.is_none()) {
            return Err(ConfigError::invalid(format!("{key}.default"), format!("no schema file {d}.schema.toml in the folder")));
        }
        let progress_path = self.progress_path.unwrap_or_else(|| default_progress_path(ctx.job_id, ctx.source));
        checks::relative_path(&format!("{key}.progress_path"), &progress_path)?;
        let when = self.when.into_iter().map(|(path, value)| (path.split('.').map(str::to_string).collect(), value)).collect();
        let routing = Routing { template, rename: self.rename, when, default: self.default, tables, inferred };
        Ok((routing, progress_table(ctx, progress_path)))
    }

    /// `infer = true`: how tables without a schema file are laid out. Their partitions can
    /// only come from ingestion time (no column is known before the first messages).
    fn inferred(&self, ctx: &RouteContext<'_>) -> Result<Option<InferredTables>, ConfigError> {
        if !self.infer {
            return Ok(None);
        }
        crate::tables::check_inferred_partitions(&ctx.key, "infer = true", &self.partitions)?;
        let (path, partitions, properties) = (self.path.clone(), self.partitions.clone(), self.properties.clone());
        Ok(Some(InferredTables { path, partitions, properties, lake: ctx.lake.clone() }))
    }

    /// One table per `<name>.schema.toml` of the folder (relative to the configuration).
    fn load_tables(&self, ctx: &RouteContext<'_>) -> Result<BTreeMap<String, TableConfig>, ConfigError> {
        let key = &format!("{}.schemas", ctx.key);
        let Some(schemas) = &self.schemas else {
            return match self.infer {
                true => Ok(BTreeMap::new()),
                false => Err(ConfigError::invalid(key, "name the folder of <table>.schema.toml files, or set infer = true")),
            };
        };
        let folder = ctx.base.join(schemas);
        let unreadable = |e: std::io::Error| ConfigError::invalid(key, format!("cannot read the folder {}: {e}", folder.display()));
        let mut tables = BTreeMap::new();
        for entry in std::fs::read_dir(&folder).map_err(unreadable)? {
            let path = entry.map_err(unreadable)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".schema.toml")) else { continue };
            if let Some(problem) = table_name_problem(name) {
                return Err(ConfigError::invalid(key, format!("{}: {problem}", path.display())));
            }
            let file = TableFile::new(self.path.replace("{table}", name), path.clone(), self.partitions.clone(), self.properties.clone());
            tables.insert(name.to_string(), file.resolve(name, &format!("{}[{name}]", ctx.key), ctx.lake, Path::new(""))?);
        }
        if tables.is_empty() && !self.infer {
            return Err(ConfigError::invalid(key, format!("no <table>.schema.toml file in {}", folder.display())));
        }
        Ok(tables)
    }
}

/// A source written to one table with `schema = "infer"`: routed to that one table, inferred
/// and created with its first messages, its progress kept apart (as for any routed source).
pub(crate) fn single_inferred(ctx: &RouteContext<'_>, table: &TableConfig) -> (Routing, TableConfig) {
    let inferred = InferredTables {
        path: table.path.clone(),
        partitions: table.partitions.clone(),
        properties: table.properties.clone(),
        lake: ctx.lake.clone(),
    };
    let routing = Routing {
        template: NameTemplate { parts: vec![TemplatePart::Text(table.name.clone())] },
        rename: BTreeMap::new(),
        when: Vec::new(),
        default: None,
        tables: BTreeMap::new(),
        inferred: Some(inferred),
    };
    (routing, progress_table(ctx, default_progress_path(ctx.job_id, ctx.source)))
}

/// What resolving a route needs from around it.
pub(crate) struct RouteContext<'a> {
    /// The source's setting, for errors (`raw_append.sources[0].route`).
    pub key: String,
    pub source: &'a str,
    pub job_id: &'a str,
    pub format: SourceFormat,
    pub lake: &'a LakeConfig,
    /// The configuration file's folder.
    pub base: &'a Path,
}

/// The table a routed source's progress is committed to (no rows: only `txn` actions).
fn progress_table(ctx: &RouteContext<'_>, path: String) -> TableConfig {
    let column = ColumnSpec {
        name: "routed_to".into(),
        json_name: None,
        type_name: "string".into(),
        required: false,
        timestamp: Default::default(),
        column_type: Some(ColumnType::String),
    };
    TableConfig {
        name: format!("{}:progress", ctx.source),
        location: ctx.lake.location(&path),
        path,
        schema_file: PathBuf::new(),
        schema: TableSchema { columns: vec![column] },
        partitions: Vec::new(),
        properties: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_into_text_and_field_paths() {
        let t = NameTemplate::parse("k", DMS_TABLE_TEMPLATE).unwrap();
        let field = |p: &[&str]| TemplatePart::Field(p.iter().map(|s| s.to_string()).collect());
        assert_eq!(t.parts, vec![field(&["metadata", "schema-name"]), TemplatePart::Text("_".into()), field(&["metadata", "table-name"])]);
        assert_eq!(NameTemplate::parse("k", "raw_{type}").unwrap().parts, vec![TemplatePart::Text("raw_".into()), field(&["type"])]);
        for bad in ["plain", "{a", "a}", "{}", "{a..b}"] {
            assert!(NameTemplate::parse("k", bad).unwrap_err().to_string().starts_with("k:"), "{bad}");
        }
    }

    #[test]
    fn routed_names_must_be_path_safe() {
        assert_eq!(table_name_problem("public_orders-2"), None);
        assert!(table_name_problem("").is_some());
        assert!(table_name_problem("../etc").unwrap().contains("'.'"));
        assert!(table_name_problem("a/b").is_some());
        assert!(table_name_problem("é").is_some());
        assert!(table_name_problem(&"x".repeat(MAX_TABLE_NAME + 1)).is_some());
    }
}
