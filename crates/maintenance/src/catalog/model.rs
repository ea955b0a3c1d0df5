//! What the catalog should hold for one Delta table, read from its log (no data files read).

use std::collections::{BTreeMap, HashMap};

use deltalake::kernel::{DataType, StructType};
use deltalake::DeltaTable;

use crate::manifest::{hive_value, partition_directory, plain_root_uri, MANIFEST_DIR};
use crate::MaintenanceError;

/// A column as the catalog lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column name, as in the Delta schema.
    pub name: String,
    /// Delta type (rendered as a Hive type by the DDL and by the Glue client).
    pub data_type: DataType,
}

/// How a catalog table's rows are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    /// Athena's native Delta table: the reader follows the Delta log at the location.
    Delta,
    /// Parquet files listed by the symlink manifests under the location.
    SymlinkManifest,
}

/// One catalog table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableDef {
    /// Table name in the database.
    pub name: String,
    /// Folder URI, ending with `/`.
    pub location: String,
    /// Data columns in schema order (partition columns excluded).
    pub columns: Vec<Column>,
    /// Partition columns in the table's partition order.
    pub partition_keys: Vec<Column>,
    /// How the rows are found.
    pub format: TableFormat,
}

/// One partition of the symlink table: its values (in partition-key order, Hive's default
/// partition name for null) and its manifest folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PartitionDef {
    /// Values in partition-key order.
    pub values: Vec<String>,
    /// Manifest folder URI, ending with `/`.
    pub location: String,
}

/// Everything the catalog should hold for one Delta table.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogTables {
    /// Database (Glue) / schema (Athena).
    pub database: String,
    /// The native Delta table, `name`.
    pub native: TableDef,
    /// The symlink-manifest table, `name_symlink`.
    pub symlink: TableDef,
    /// The symlink table's partitions: those with active files at the loaded version.
    pub partitions: Vec<PartitionDef>,
}

/// The catalog tables for `table` registered as `database.name` (native) and
/// `database.name_symlink` (manifests).
pub fn catalog_tables(table: &DeltaTable, database: &str, name: &str) -> Result<CatalogTables, MaintenanceError> {
    let location = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(MaintenanceError::delta(&location))?;
    let root = plain_root_uri(table.table_url());
    let schema: StructType = snapshot.schema().as_ref().clone();
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let (partition_keys, columns) = split_columns(&schema, &partition_columns);

    let mut by_directory: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !partition_columns.is_empty() {
        for file in snapshot.log_data() {
            let values: HashMap<String, Option<String>> = file.partition_values_map();
            by_directory
                .entry(partition_directory(&partition_columns, &values))
                .or_insert_with(|| partition_columns.iter().map(|c| hive_value(&values, c).to_string()).collect());
        }
    }
    let partitions = by_directory
        .into_iter()
        .map(|(directory, values)| PartitionDef { values, location: format!("{root}/{MANIFEST_DIR}/{directory}/") })
        .collect();
    let table_def = |name: String, location: String, format| TableDef {
        name,
        location,
        columns: columns.clone(),
        partition_keys: partition_keys.clone(),
        format,
    };
    Ok(CatalogTables {
        database: database.to_string(),
        native: table_def(name.to_string(), format!("{root}/"), TableFormat::Delta),
        symlink: table_def(format!("{name}_symlink"), format!("{root}/{MANIFEST_DIR}/"), TableFormat::SymlinkManifest),
        partitions,
    })
}

/// (partition columns in partition order, data columns in schema order).
fn split_columns(schema: &StructType, partition_columns: &[String]) -> (Vec<Column>, Vec<Column>) {
    let column = |name: &str, data_type: &DataType| Column { name: name.to_string(), data_type: data_type.clone() };
    let data = schema.fields().filter(|f| !partition_columns.contains(f.name())).map(|f| column(f.name(), f.data_type())).collect();
    let partition =
        partition_columns.iter().filter_map(|p| schema.fields().find(|f| f.name() == p).map(|f| column(f.name(), f.data_type()))).collect();
    (partition, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::StructField;

    #[test]
    fn partition_columns_follow_the_partition_order_and_leave_the_data_columns() {
        let schema = StructType::try_new(vec![
            StructField::new("id", DataType::LONG, true),
            StructField::new("day", DataType::STRING, true),
            StructField::new("owner", DataType::STRING, true),
            StructField::new("value", DataType::DOUBLE, true),
        ])
        .unwrap();
        let (partition, data) = split_columns(&schema, &["owner".into(), "day".into()]);
        let names = |c: &[Column]| c.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&partition), ["owner", "day"]);
        assert_eq!(names(&data), ["id", "value"]);
    }
}
