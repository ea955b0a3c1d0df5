//! What must change in the Glue Data Catalog to hold the catalog tables: a pure comparison of
//! the wanted tables and partitions with those Glue holds.

use std::collections::{BTreeMap, BTreeSet};

use super::ddl::{hive_type, TypeSyntax, IGNORE_KEY_OUTPUT_FORMAT, PARQUET_SERDE, SYMLINK_INPUT_FORMAT};
use super::model::{CatalogTables, Column, TableDef, TableFormat};
use crate::MaintenanceError;

/// Athena's native Delta tables are Parquet underneath (as Athena registers them).
const PARQUET_INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const PARQUET_OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";

/// A table in the fields of a Glue table this product manages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlueTable {
    /// Table name.
    pub name: String,
    /// Storage location (folder URI ending with `/`).
    pub location: String,
    /// Data columns: (name, Hive type).
    pub columns: Vec<(String, String)>,
    /// Partition keys: (name, Hive type).
    pub partition_keys: Vec<(String, String)>,
    /// Table parameters (`table_type`, `EXTERNAL`); Glue may hold more, which are kept.
    pub parameters: BTreeMap<String, String>,
    /// Hadoop input format class.
    pub input_format: String,
    /// Hadoop output format class.
    pub output_format: String,
    /// SerDe class.
    pub serde: String,
}

/// A partition of the symlink table as Glue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GluePartition {
    /// Values in partition-key order.
    pub values: Vec<String>,
    /// Manifest folder URI.
    pub location: String,
    /// The data columns its storage descriptor lists (the table's, so readers agree).
    pub columns: Vec<(String, String)>,
}

/// The wanted catalog in Glue's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCatalog {
    /// Database name.
    pub database: String,
    /// The native Delta table.
    pub native: GlueTable,
    /// The symlink-manifest table.
    pub symlink: GlueTable,
    /// The symlink table's partitions.
    pub partitions: Vec<GluePartition>,
}

impl DesiredCatalog {
    /// The Glue form of `tables` (types as Athena writes them).
    pub fn new(tables: &CatalogTables) -> Result<Self, MaintenanceError> {
        let symlink = glue_table(&tables.symlink)?;
        let partitions = tables
            .partitions
            .iter()
            .map(|p| GluePartition { values: p.values.clone(), location: p.location.clone(), columns: symlink.columns.clone() })
            .collect();
        Ok(Self { database: tables.database.clone(), native: glue_table(&tables.native)?, symlink, partitions })
    }
}

/// What Glue holds now for the wanted tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogState {
    /// Whether the database exists.
    pub database_exists: bool,
    /// The native table, if it exists.
    pub native: Option<GlueTable>,
    /// The symlink table, if it exists.
    pub symlink: Option<GlueTable>,
    /// The symlink table's partitions.
    pub partitions: Vec<GluePartition>,
}

/// A change to one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableAction {
    /// The table does not exist.
    Create(GlueTable),
    /// The table exists with other columns, location, formats or parameters.
    Update {
        /// The table as it will be.
        table: GlueTable,
        /// The managed fields that differed (for the log).
        changed: Vec<&'static str>,
    },
}

impl TableAction {
    /// The table as it will be.
    pub fn table(&self) -> &GlueTable {
        match self {
            Self::Create(table) | Self::Update { table, .. } => table,
        }
    }
}

/// The changes that make Glue hold the wanted catalog; empty when it already does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Create the database first.
    pub create_database: bool,
    /// Tables to create or update.
    pub tables: Vec<TableAction>,
    /// Partitions Glue lacks.
    pub create_partitions: Vec<GluePartition>,
    /// Partitions whose location or columns changed.
    pub update_partitions: Vec<GluePartition>,
    /// Values of partitions that no longer have files (or whose keys no longer exist).
    pub delete_partitions: Vec<Vec<String>>,
}

impl SyncPlan {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The changes from `current` to `desired`. Partitions are compared by their values; when the
/// table's partition keys changed, every old partition is deleted (its values mean other keys).
pub fn plan_sync(desired: &DesiredCatalog, current: &CatalogState) -> SyncPlan {
    let tables = [(&desired.native, &current.native), (&desired.symlink, &current.symlink)]
        .into_iter()
        .filter_map(|(want, have)| table_action(want, have.as_ref()))
        .collect();
    let keys_changed = current.symlink.as_ref().is_some_and(|t| !same_columns(&t.partition_keys, &desired.symlink.partition_keys));
    let held: BTreeMap<&[String], &GluePartition> =
        if keys_changed { BTreeMap::new() } else { current.partitions.iter().map(|p| (p.values.as_slice(), p)).collect() };
    let wanted: BTreeSet<&[String]> = desired.partitions.iter().map(|p| p.values.as_slice()).collect();
    let mut plan = SyncPlan { create_database: !current.database_exists, tables, ..SyncPlan::default() };
    for partition in &desired.partitions {
        match held.get(partition.values.as_slice()) {
            None => plan.create_partitions.push(partition.clone()),
            Some(have) if !same_partition(have, partition) => plan.update_partitions.push(partition.clone()),
            Some(_) => {}
        }
    }
    plan.delete_partitions =
        current.partitions.iter().filter(|p| keys_changed || !wanted.contains(p.values.as_slice())).map(|p| p.values.clone()).collect();
    plan
}

/// Create when missing; update when a managed field differs (parameters Glue holds beyond ours
/// are kept).
fn table_action(want: &GlueTable, have: Option<&GlueTable>) -> Option<TableAction> {
    let Some(have) = have else { return Some(TableAction::Create(want.clone())) };
    let changed = table_differences(have, want);
    if changed.is_empty() {
        return None;
    }
    let mut table = want.clone();
    table.parameters = have.parameters.clone();
    table.parameters.extend(want.parameters.clone());
    Some(TableAction::Update { table, changed })
}

/// The managed fields in which `have` differs from `want`, by name.
fn table_differences(have: &GlueTable, want: &GlueTable) -> Vec<&'static str> {
    let parameters_held = want.parameters.iter().all(|(k, v)| have.parameters.get(k) == Some(v));
    [
        ("name", have.name.eq_ignore_ascii_case(&want.name)),
        ("location", have.location == want.location),
        ("columns", same_columns(&have.columns, &want.columns)),
        ("partition_keys", same_columns(&have.partition_keys, &want.partition_keys)),
        ("formats", (&have.input_format, &have.output_format, &have.serde) == (&want.input_format, &want.output_format, &want.serde)),
        ("parameters", parameters_held),
    ]
    .into_iter()
    .filter_map(|(field, same)| (!same).then_some(field))
    .collect()
}

fn same_partition(have: &GluePartition, want: &GluePartition) -> bool {
    have.location == want.location && same_columns(&have.columns, &want.columns)
}

/// Athena folds column names to lower case, so Glue may hold them so.
fn same_columns(a: &[(String, String)], b: &[(String, String)]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((an, at), (bn, bt))| an.eq_ignore_ascii_case(bn) && at == bt)
}

fn glue_table(table: &TableDef) -> Result<GlueTable, MaintenanceError> {
    let columns = |c: &[Column]| {
        c.iter().map(|c| Ok((c.name.clone(), hive_type(&c.data_type, TypeSyntax::Glue)?))).collect::<Result<Vec<_>, MaintenanceError>>()
    };
    let mut parameters = BTreeMap::from([("EXTERNAL".to_string(), "TRUE".to_string())]);
    let input_format = match table.format {
        TableFormat::Delta => {
            parameters.insert("table_type".into(), "DELTA".into());
            PARQUET_INPUT_FORMAT
        }
        TableFormat::SymlinkManifest => SYMLINK_INPUT_FORMAT,
    };
    let output_format = match table.format {
        TableFormat::Delta => PARQUET_OUTPUT_FORMAT,
        TableFormat::SymlinkManifest => IGNORE_KEY_OUTPUT_FORMAT,
    };
    Ok(GlueTable {
        name: table.name.clone(),
        location: table.location.clone(),
        columns: columns(&table.columns)?,
        partition_keys: columns(&table.partition_keys)?,
        parameters,
        input_format: input_format.into(),
        output_format: output_format.into(),
        serde: PARQUET_SERDE.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str, columns: &[(&str, &str)], keys: &[&str]) -> GlueTable {
        let pairs = |c: &[(&str, &str)]| c.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
        GlueTable {
            name: name.into(),
            location: format!("s3://b/{name}/"),
            columns: pairs(columns),
            partition_keys: keys.iter().map(|k| (k.to_string(), "string".to_string())).collect(),
            parameters: BTreeMap::from([("EXTERNAL".into(), "TRUE".into())]),
            input_format: "in".into(),
            output_format: "out".into(),
            serde: "serde".into(),
        }
    }

    fn partition(values: &[&str], columns: &[(String, String)]) -> GluePartition {
        GluePartition {
            values: values.iter().map(|v| v.to_string()).collect(),
            location: format!("s3://b/m/{}/", values.join("/")),
            columns: columns.to_vec(),
        }
    }

    fn desired(columns: &[(&str, &str)], keys: &[&str], partitions: &[&[&str]]) -> DesiredCatalog {
        let symlink = table("t_symlink", columns, keys);
        let partitions = partitions.iter().map(|v| partition(v, &symlink.columns)).collect();
        DesiredCatalog { database: "db".into(), native: table("t", columns, keys), symlink, partitions }
    }

    fn held(d: &DesiredCatalog) -> CatalogState {
        CatalogState {
            database_exists: true,
            native: Some(d.native.clone()),
            symlink: Some(d.symlink.clone()),
            partitions: d.partitions.clone(),
        }
    }

    #[test]
    fn an_empty_catalog_gets_everything_and_a_synced_one_nothing() {
        let want = desired(&[("id", "bigint")], &["owner"], &[&["a"], &["b"]]);
        let plan = plan_sync(&want, &CatalogState::default());
        assert!(plan.create_database);
        assert_eq!(plan.tables, vec![TableAction::Create(want.native.clone()), TableAction::Create(want.symlink.clone())]);
        assert_eq!(plan.create_partitions, want.partitions);
        assert!(plan_sync(&want, &held(&want)).is_empty());
    }

    #[test]
    fn names_differing_in_case_and_parameters_glue_added_are_no_change() {
        let want = desired(&[("id", "bigint")], &["owner"], &[]);
        let mut have = held(&want);
        let native = have.native.as_mut().unwrap();
        native.columns[0].0 = "ID".into();
        native.parameters.insert("last_modified_by".into(), "someone".into());
        assert!(plan_sync(&want, &have).is_empty());
    }

    #[test]
    fn a_removed_partition_is_deleted_and_a_new_one_created() {
        let before = desired(&[("id", "bigint")], &["owner"], &[&["a"], &["b"]]);
        let after = desired(&[("id", "bigint")], &["owner"], &[&["b"], &["c"]]);
        let plan = plan_sync(&after, &held(&before));
        assert!(plan.tables.is_empty());
        assert_eq!(plan.create_partitions, vec![after.partitions[1].clone()]);
        assert_eq!(plan.delete_partitions, vec![vec!["a".to_string()]]);
        assert!(plan.update_partitions.is_empty());
    }

    #[test]
    fn an_added_column_updates_both_tables_and_every_partition_keeping_foreign_parameters() {
        let before = desired(&[("id", "bigint")], &["owner"], &[&["a"]]);
        let after = desired(&[("id", "bigint"), ("tier", "string")], &["owner"], &[&["a"]]);
        let mut have = held(&before);
        have.symlink.as_mut().unwrap().parameters.insert("comment".into(), "kept".into());
        let plan = plan_sync(&after, &have);
        assert_eq!(plan.tables.len(), 2);
        let TableAction::Update { table: symlink, .. } = &plan.tables[1] else { panic!("{:?}", plan.tables) };
        assert_eq!(symlink.columns, after.symlink.columns);
        assert_eq!(symlink.parameters.get("comment").map(String::as_str), Some("kept"));
        assert_eq!(plan.update_partitions, after.partitions);
        assert!(plan.create_partitions.is_empty() && plan.delete_partitions.is_empty());
    }

    #[test]
    fn new_partition_keys_replace_every_partition() {
        let before = desired(&[("id", "bigint")], &["owner"], &[&["a"]]);
        let after = desired(&[("id", "bigint")], &["day"], &[&["a"]]);
        let plan = plan_sync(&after, &held(&before));
        assert_eq!(plan.delete_partitions, vec![vec!["a".to_string()]]);
        assert_eq!(plan.create_partitions, after.partitions);
    }
}
