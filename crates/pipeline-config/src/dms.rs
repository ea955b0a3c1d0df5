//! AWS DMS change records as a source format: `{"data": {...}, "metadata": {"record-type",
//! "operation", "timestamp", "schema-name", "table-name", ...}}`. The table's schema names the
//! source table's columns; they are read under `data`, and the operation and commit time come
//! from `metadata` into two added columns, which merge-upsert takes as its `operation` and
//! `sequence`.

use serde::Deserialize;

use crate::schema::{ColumnSpec, ColumnType, TableSchema};

/// How a source's messages are laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// One JSON object per message, read by the table's schema as it is.
    #[default]
    Json,
    /// AWS DMS records: control records and records without `data` are counted and skipped.
    Dms,
}

/// Column holding a DMS record's `metadata.operation` (`load`, `insert`, `update`, `delete`).
pub const DMS_OPERATION_COLUMN: &str = "_dms_operation";
/// Column holding a DMS record's `metadata.timestamp` (the source commit time; load rows: the
/// time they were read).
pub const DMS_TIMESTAMP_COLUMN: &str = "_dms_timestamp";

impl SourceFormat {
    /// The schema messages are decoded with: for DMS, the table's columns read under `data`
    /// (unless a column names its own `json_name`) and the two metadata columns.
    pub fn message_schema(self, table: &TableSchema) -> TableSchema {
        match self {
            Self::Json => table.clone(),
            Self::Dms => {
                let mut columns: Vec<ColumnSpec> = table
                    .columns
                    .iter()
                    .map(|c| ColumnSpec { json_name: Some(c.json_name.clone().unwrap_or_else(|| format!("data.{}", c.name))), ..c.clone() })
                    .collect();
                columns.push(metadata_column(DMS_OPERATION_COLUMN, "metadata.operation", ColumnType::String));
                columns.push(metadata_column(DMS_TIMESTAMP_COLUMN, "metadata.timestamp", ColumnType::Timestamp));
                TableSchema { columns }
            }
        }
    }

    /// Columns the format adds to the table's, with their types.
    pub fn added_columns(self) -> &'static [(&'static str, ColumnType)] {
        match self {
            Self::Json => &[],
            Self::Dms => &[(DMS_OPERATION_COLUMN, ColumnType::String), (DMS_TIMESTAMP_COLUMN, ColumnType::Timestamp)],
        }
    }
}

fn metadata_column(name: &str, path: &str, ty: ColumnType) -> ColumnSpec {
    let type_name = match ty {
        ColumnType::Timestamp => "timestamp",
        _ => "string",
    };
    ColumnSpec {
        name: name.into(),
        json_name: Some(path.into()),
        type_name: type_name.into(),
        required: true,
        timestamp: Default::default(),
        column_type: Some(ty),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dms_reads_the_columns_under_data_and_adds_operation_and_time() {
        let column = |name: &str, json_name: Option<&str>| ColumnSpec {
            name: name.into(),
            json_name: json_name.map(str::to_string),
            type_name: "long".into(),
            required: true,
            timestamp: Default::default(),
            column_type: Some(ColumnType::Long),
        };
        let table = TableSchema { columns: vec![column("order_id", None), column("shard", Some("metadata.partition"))] };
        assert_eq!(SourceFormat::Json.message_schema(&table).columns.len(), 2);
        let dms = SourceFormat::Dms.message_schema(&table);
        let keys: Vec<(&str, &str)> = dms.columns.iter().map(|c| (c.name.as_str(), c.json_key())).collect();
        assert_eq!(
            keys,
            [
                ("order_id", "data.order_id"),
                ("shard", "metadata.partition"),
                ("_dms_operation", "metadata.operation"),
                ("_dms_timestamp", "metadata.timestamp"),
            ]
        );
        assert_eq!(dms.columns[3].kind(), ColumnType::Timestamp);
        assert!(dms.columns[2].required && dms.columns[3].required);
    }
}
