//! `[stream_join]`: a watermarked interval join of two tables into a third.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::incremental::IncrementalFile;
use crate::tables::{lookup_declared, AddedColumns};
use crate::{checks, ColumnType, ConfigError, DurationStr, IncrementalOptions, SignedDuration, TableConfig};

/// The section as the file writes it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct StreamJoinFile {
    left: InputFile,
    right: InputFile,
    output: String,
    #[serde(default)]
    join_type: JoinType,
    #[serde(default)]
    lower: Option<SignedDuration>,
    upper: SignedDuration,
    #[serde(default)]
    watermark_policy: WatermarkPolicy,
    columns: Vec<JoinColumn>,
    #[serde(default)]
    late_table: Option<String>,
    #[serde(flatten)]
    incremental: IncrementalFile,
    #[serde(flatten)]
    unknown: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFile {
    table: String,
    key: Vec<String>,
    time: String,
    delay: DurationStr,
}

/// The stream-join job, validated.
#[derive(Debug, Clone)]
pub struct StreamJoinConfig {
    /// Identity, progress folder, trigger and batch limits.
    pub incremental: IncrementalOptions,
    /// The left input (every output row has one).
    pub left: JoinInput,
    /// The right input.
    pub right: JoinInput,
    /// Output table.
    pub output: TableConfig,
    /// `inner` or `left_outer`.
    pub join_type: JoinType,
    /// Rows match when `left.time BETWEEN right.time + lower AND right.time + upper`.
    pub lower: SignedDuration,
    /// See `lower`.
    pub upper: SignedDuration,
    /// How the job watermark follows the inputs' (`min`: the slower input; `max`).
    pub watermark_policy: WatermarkPolicy,
    /// Output columns in order, each from `left.<column>` or `right.<column>`.
    pub columns: Vec<JoinColumn>,
    /// Table path under the lake root for rows later than the watermark (unset: only counted).
    pub late_table: Option<String>,
}

/// One side of the join.
#[derive(Debug, Clone)]
pub struct JoinInput {
    /// Source table.
    pub table: TableConfig,
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

/// A side of the join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinSide {
    /// The left input.
    Left,
    /// The right input.
    Right,
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

impl StreamJoinFile {
    /// Checks the section and resolves its tables.
    /// `added` names the columns raw-append writes into its tables beyond their schemas (an
    /// input may join on or take them, e.g. `_kafka_timestamp` as its event time).
    pub(crate) fn resolve(self, tables: &BTreeMap<String, TableConfig>, added: &AddedColumns) -> Result<StreamJoinConfig, ConfigError> {
        checks::no_unknown_keys("stream_join", &self.unknown)?;
        let incremental = self.incremental.resolve("stream_join", "stream-join")?;
        let left = self.left.resolve("stream_join.left", tables, added)?;
        let right = self.right.resolve("stream_join.right", tables, added)?;
        if left.key.len() != right.key.len() {
            return Err(ConfigError::invalid("stream_join.right.key", "must list as many columns as stream_join.left.key"));
        }
        let lower = self.lower.unwrap_or(SignedDuration { micros: 0 });
        if lower.micros > self.upper.micros {
            return Err(ConfigError::invalid("stream_join.lower", "must not exceed stream_join.upper"));
        }
        let output = lookup_declared(tables, "stream_join.output", &self.output)?;
        check_columns(&self.columns, [&left, &right], &output, added)?;
        if let Some(late) = &self.late_table {
            checks::relative_path("stream_join.late_table", late)?;
        }
        Ok(StreamJoinConfig {
            incremental,
            left,
            right,
            output,
            join_type: self.join_type,
            lower,
            upper: self.upper,
            watermark_policy: self.watermark_policy,
            columns: self.columns,
            late_table: self.late_table,
        })
    }
}

impl InputFile {
    fn resolve(self, key: &str, tables: &BTreeMap<String, TableConfig>, added: &AddedColumns) -> Result<JoinInput, ConfigError> {
        let table = lookup_declared(tables, &format!("{key}.table"), &self.table)?;
        match table.column_type_with(&self.time, added) {
            Some(ColumnType::Timestamp) => {}
            _ => {
                let message = format!("'{}' is not a timestamp column of {}", self.time, table.name);
                return Err(ConfigError::invalid(format!("{key}.time"), message));
            }
        }
        if self.key.is_empty() {
            return Err(ConfigError::invalid(format!("{key}.key"), "name at least one key column"));
        }
        let columns = table.column_names_with(added);
        if let Some(k) = self.key.iter().find(|k| !columns.contains(k)) {
            return Err(ConfigError::invalid(format!("{key}.key"), format!("'{k}' is not a column of {}", table.name)));
        }
        Ok(JoinInput { table, key: self.key, time: self.time, delay: self.delay })
    }
}

/// Every output column comes from a column of one side, and every output schema column has one.
fn check_columns(columns: &[JoinColumn], sides: [&JoinInput; 2], output: &TableConfig, added: &AddedColumns) -> Result<(), ConfigError> {
    if columns.is_empty() {
        return Err(ConfigError::invalid(
            "stream_join.columns",
            "list the output columns: { name = \"order_id\", from = \"left.order_id\" }",
        ));
    }
    let side_columns = sides.map(|s| s.table.column_names_with(added));
    for (i, c) in columns.iter().enumerate() {
        let key = format!("stream_join.columns[{i}]");
        let Some((side, column)) = c.source() else {
            return Err(ConfigError::invalid(format!("{key}.from"), format!("'{}' must be left.<column> or right.<column>", c.from)));
        };
        let available = if side == JoinSide::Left { &side_columns[0] } else { &side_columns[1] };
        if !available.iter().any(|x| x == column) {
            return Err(ConfigError::invalid(format!("{key}.from"), format!("no column '{column}' on that side")));
        }
        if output.schema.column(&c.name).is_none() && !output.partitions.iter().any(|p| p.column == c.name) {
            let message = format!("'{}' is not a column of the output table {}", c.name, output.name);
            return Err(ConfigError::invalid(format!("{key}.name"), message));
        }
    }
    if let Some(col) = output.schema.columns.iter().find(|col| !columns.iter().any(|c| c.name == col.name)) {
        let message = format!("output column '{}' has no source: add {{ name = \"{}\", from = ... }}", col.name, col.name);
        return Err(ConfigError::invalid("stream_join.columns", message));
    }
    Ok(())
}
