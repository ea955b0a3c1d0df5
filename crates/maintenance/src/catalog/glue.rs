//! The Glue Data Catalog through the AWS SDK: reading what it holds for a table, applying a
//! [`SyncPlan`], and [`SyncCatalog`], the operation that does both.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;

use aws_sdk_glue::types::{
    BatchUpdatePartitionRequestEntry, Column as GlueColumn, DatabaseInput, PartitionInput, PartitionValueList, SerDeInfo,
    StorageDescriptor, Table, TableInput,
};
use aws_sdk_glue::Client;
use serde::Serialize;

use super::model::CatalogTables;
use super::sync_plan::{plan_sync, CatalogState, DesiredCatalog, GluePartition, GlueTable, SyncPlan, TableAction};
use crate::MaintenanceError;

/// Glue's batch limits: BatchCreatePartition and BatchUpdatePartition take 100 entries,
/// BatchDeletePartition 25.
const CREATE_OR_UPDATE_BATCH: usize = 100;
const DELETE_BATCH: usize = 25;

/// A Glue Data Catalog client.
#[derive(Debug, Clone)]
pub struct GlueCatalog {
    client: Client,
}

impl GlueCatalog {
    /// A client configured from the AWS chain: region, credentials, and `AWS_ENDPOINT_URL` (or
    /// `AWS_ENDPOINT_URL_GLUE`) for a Glue-compatible endpoint.
    pub async fn from_env() -> Self {
        let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self { client: Client::new(&config) }
    }

    /// What Glue holds now for the tables of `desired`.
    pub async fn state(&self, desired: &DesiredCatalog) -> Result<CatalogState, MaintenanceError> {
        let database = &desired.database;
        let database_exists = match self.client.get_database().name(database).send().await {
            Ok(_) => true,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_entity_not_found_exception()) => false,
            Err(e) => return Err(MaintenanceError::catalog("GetDatabase")(e)),
        };
        if !database_exists {
            return Ok(CatalogState::default());
        }
        let native = self.table(database, &desired.native.name).await?;
        let symlink = self.table(database, &desired.symlink.name).await?;
        let partitions = match &symlink {
            Some(_) => self.partitions(database, &desired.symlink.name).await?,
            None => Vec::new(),
        };
        Ok(CatalogState { database_exists, native, symlink, partitions })
    }

    async fn table(&self, database: &str, name: &str) -> Result<Option<GlueTable>, MaintenanceError> {
        match self.client.get_table().database_name(database).name(name).send().await {
            Ok(out) => Ok(out.table().map(glue_table)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_entity_not_found_exception()) => Ok(None),
            Err(e) => Err(MaintenanceError::catalog("GetTable")(e)),
        }
    }

    async fn partitions(&self, database: &str, table: &str) -> Result<Vec<GluePartition>, MaintenanceError> {
        let mut pages = self.client.get_partitions().database_name(database).table_name(table).into_paginator().send();
        let mut partitions = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(MaintenanceError::catalog("GetPartitions"))?;
            partitions.extend(page.partitions().iter().map(|p| {
                let sd = p.storage_descriptor();
                GluePartition {
                    values: p.values().to_vec(),
                    location: sd.and_then(|sd| sd.location()).unwrap_or_default().to_string(),
                    columns: sd.map(|sd| columns(sd.columns())).unwrap_or_default(),
                }
            }));
        }
        Ok(partitions)
    }

    /// Applies `plan` for `desired`: database, tables, then partitions (deleted before created,
    /// so new partition keys can reuse old values).
    pub async fn apply(&self, desired: &DesiredCatalog, plan: &SyncPlan) -> Result<(), MaintenanceError> {
        let database = desired.database.as_str();
        if plan.create_database {
            let input = DatabaseInput::builder().name(database).build().map_err(MaintenanceError::catalog("CreateDatabase"))?;
            self.client.create_database().database_input(input).send().await.map_err(MaintenanceError::catalog("CreateDatabase"))?;
        }
        for action in &plan.tables {
            let operation = match action {
                TableAction::Create(_) => "CreateTable",
                TableAction::Update { .. } => "UpdateTable",
            };
            let input = table_input(action.table()).map_err(MaintenanceError::catalog(operation))?;
            match action {
                TableAction::Create(_) => {
                    let call = self.client.create_table().database_name(database).table_input(input);
                    call.send().await.map_err(MaintenanceError::catalog(operation))?;
                }
                TableAction::Update { .. } => {
                    let call = self.client.update_table().database_name(database).table_input(input);
                    call.send().await.map_err(MaintenanceError::catalog(operation))?;
                }
            }
        }
        let symlink = &desired.symlink;
        self.delete_partitions(database, &symlink.name, &plan.delete_partitions).await?;
        self.create_partitions(database, symlink, &plan.create_partitions).await?;
        self.update_partitions(database, symlink, &plan.update_partitions).await
    }

    async fn delete_partitions(&self, database: &str, table: &str, values: &[Vec<String>]) -> Result<(), MaintenanceError> {
        for chunk in values.chunks(DELETE_BATCH) {
            let lists = chunk
                .iter()
                .map(|v| PartitionValueList::builder().set_values(Some(v.clone())).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(MaintenanceError::catalog("BatchDeletePartition"))?;
            let call = self.client.batch_delete_partition().database_name(database).table_name(table).set_partitions_to_delete(Some(lists));
            let out = call.send().await.map_err(MaintenanceError::catalog("BatchDeletePartition"))?;
            // Already gone is what was wanted.
            entry_errors(
                "BatchDeletePartition",
                out.errors().iter().map(|e| (e.partition_values(), e.error_detail())),
                "EntityNotFoundException",
            )?;
        }
        Ok(())
    }

    async fn create_partitions(&self, database: &str, table: &GlueTable, partitions: &[GluePartition]) -> Result<(), MaintenanceError> {
        for chunk in partitions.chunks(CREATE_OR_UPDATE_BATCH) {
            let inputs = chunk.iter().map(|p| partition_input(table, p)).collect::<Result<Vec<_>, _>>();
            let inputs = inputs.map_err(MaintenanceError::catalog("BatchCreatePartition"))?;
            let call =
                self.client.batch_create_partition().database_name(database).table_name(&table.name).set_partition_input_list(Some(inputs));
            let out = call.send().await.map_err(MaintenanceError::catalog("BatchCreatePartition"))?;
            // Created by a concurrent run: it holds the same values and location.
            entry_errors(
                "BatchCreatePartition",
                out.errors().iter().map(|e| (e.partition_values(), e.error_detail())),
                "AlreadyExistsException",
            )?;
        }
        Ok(())
    }

    async fn update_partitions(&self, database: &str, table: &GlueTable, partitions: &[GluePartition]) -> Result<(), MaintenanceError> {
        for chunk in partitions.chunks(CREATE_OR_UPDATE_BATCH) {
            let entries = chunk
                .iter()
                .map(|p| {
                    BatchUpdatePartitionRequestEntry::builder()
                        .set_partition_value_list(Some(p.values.clone()))
                        .partition_input(partition_input(table, p)?)
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(MaintenanceError::catalog("BatchUpdatePartition"))?;
            let call = self.client.batch_update_partition().database_name(database).table_name(&table.name).set_entries(Some(entries));
            let out = call.send().await.map_err(MaintenanceError::catalog("BatchUpdatePartition"))?;
            entry_errors("BatchUpdatePartition", out.errors().iter().map(|e| (e.partition_value_list(), e.error_detail())), "")?;
        }
        Ok(())
    }
}

/// A batch call's per-entry errors, except those with the `tolerated` code, as one error.
fn entry_errors<'a>(
    operation: &'static str,
    errors: impl Iterator<Item = (&'a [String], Option<&'a aws_sdk_glue::types::ErrorDetail>)>,
    tolerated: &str,
) -> Result<(), MaintenanceError> {
    let failed: Vec<String> = errors
        .filter(|(_, detail)| detail.and_then(|d| d.error_code()) != Some(tolerated))
        .map(|(values, detail)| {
            let code = detail.and_then(|d| d.error_code()).unwrap_or("unknown error");
            let message = detail.and_then(|d| d.error_message()).unwrap_or_default();
            format!("partition {values:?}: {code}: {message}")
        })
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(MaintenanceError::Catalog { operation, source: failed.join("; ").into() })
}

fn columns(list: &[GlueColumn]) -> Vec<(String, String)> {
    list.iter().map(|c| (c.name().to_string(), c.r#type().unwrap_or_default().to_string())).collect()
}

fn glue_columns(list: &[(String, String)]) -> Result<Vec<GlueColumn>, aws_sdk_glue::error::BuildError> {
    list.iter().map(|(name, t)| GlueColumn::builder().name(name).r#type(t).build()).collect()
}

/// The managed fields of a table Glue returned.
fn glue_table(table: &Table) -> GlueTable {
    let sd = table.storage_descriptor();
    let text = |s: Option<&str>| s.unwrap_or_default().to_string();
    GlueTable {
        name: table.name().to_string(),
        location: text(sd.and_then(|sd| sd.location())),
        columns: sd.map(|sd| columns(sd.columns())).unwrap_or_default(),
        partition_keys: columns(table.partition_keys()),
        parameters: table.parameters().map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default(),
        input_format: text(sd.and_then(|sd| sd.input_format())),
        output_format: text(sd.and_then(|sd| sd.output_format())),
        serde: text(sd.and_then(|sd| sd.serde_info()).and_then(|s| s.serialization_library())),
    }
}

fn storage_descriptor(
    table: &GlueTable,
    location: &str,
    columns: &[(String, String)],
) -> Result<StorageDescriptor, aws_sdk_glue::error::BuildError> {
    Ok(StorageDescriptor::builder()
        .set_columns(Some(glue_columns(columns)?))
        .location(location)
        .input_format(&table.input_format)
        .output_format(&table.output_format)
        .serde_info(SerDeInfo::builder().serialization_library(&table.serde).build())
        .build())
}

fn table_input(table: &GlueTable) -> Result<TableInput, aws_sdk_glue::error::BuildError> {
    let parameters: HashMap<String, String> = table.parameters.clone().into_iter().collect();
    TableInput::builder()
        .name(&table.name)
        .table_type("EXTERNAL_TABLE")
        .set_parameters(Some(parameters))
        .set_partition_keys(Some(glue_columns(&table.partition_keys)?))
        .storage_descriptor(storage_descriptor(table, &table.location, &table.columns)?)
        .build()
}

fn partition_input(table: &GlueTable, partition: &GluePartition) -> Result<PartitionInput, aws_sdk_glue::error::BuildError> {
    Ok(PartitionInput::builder()
        .set_values(Some(partition.values.clone()))
        .storage_descriptor(storage_descriptor(table, &partition.location, &partition.columns)?)
        .build())
}

/// What a catalog sync changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncMetrics {
    /// The database did not exist and was created.
    pub database_created: bool,
    /// Tables created.
    pub tables_created: Vec<String>,
    /// Tables whose columns, partition keys, location, formats or parameters were updated.
    pub tables_updated: Vec<String>,
    /// Partitions the symlink table has now.
    pub partitions: usize,
    /// Partitions added.
    pub partitions_created: usize,
    /// Partitions whose location or columns were updated.
    pub partitions_updated: usize,
    /// Partitions without files any more, removed.
    pub partitions_deleted: usize,
    /// Nothing differed (or, with a dry run, nothing would).
    pub unchanged: bool,
}

impl SyncMetrics {
    fn new(desired: &DesiredCatalog, plan: &SyncPlan) -> Self {
        let names = |create: bool| {
            plan.tables.iter().filter(|a| matches!(a, TableAction::Create(_)) == create).map(|a| a.table().name.clone()).collect()
        };
        Self {
            database_created: plan.create_database,
            tables_created: names(true),
            tables_updated: names(false),
            partitions: desired.partitions.len(),
            partitions_created: plan.create_partitions.len(),
            partitions_updated: plan.update_partitions.len(),
            partitions_deleted: plan.delete_partitions.len(),
            unchanged: plan.is_empty(),
        }
    }
}

/// Makes the Glue Data Catalog hold a table's Athena tables and partitions: reads what Glue
/// holds, plans the difference ([`plan_sync`]) and applies it. Running it twice changes
/// nothing the second time.
pub struct SyncCatalog {
    tables: CatalogTables,
    catalog: GlueCatalog,
    dry_run: bool,
}

impl SyncCatalog {
    /// Syncs `tables` into `catalog`.
    pub fn new(tables: CatalogTables, catalog: GlueCatalog) -> Self {
        Self { tables, catalog, dry_run: false }
    }

    /// Only report what would change.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    async fn execute(self) -> Result<SyncMetrics, MaintenanceError> {
        athena_name("database", &self.tables.database)?;
        athena_name("table", &self.tables.native.name)?;
        let desired = DesiredCatalog::new(&self.tables)?;
        let plan = plan_sync(&desired, &self.catalog.state(&desired).await?);
        for action in &plan.tables {
            if let TableAction::Update { table, changed } = action {
                tracing::info!(table = %table.name, ?changed, "catalog table differs from the Delta log");
            }
        }
        let metrics = SyncMetrics::new(&desired, &plan);
        if !self.dry_run && !plan.is_empty() {
            self.catalog.apply(&desired, &plan).await?;
        }
        tracing::info!(
            database = %desired.database,
            table = %desired.native.name,
            tables_created = metrics.tables_created.len(),
            tables_updated = metrics.tables_updated.len(),
            partitions_created = metrics.partitions_created,
            partitions_updated = metrics.partitions_updated,
            partitions_deleted = metrics.partitions_deleted,
            dry_run = self.dry_run,
            "catalog synced"
        );
        Ok(metrics)
    }
}

impl IntoFuture for SyncCatalog {
    type Output = Result<SyncMetrics, MaintenanceError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

/// Athena reads database and table names in lower case: a name Glue would fold is refused
/// rather than registered under a name the next run does not find.
fn athena_name(kind: &str, name: &str) -> Result<(), MaintenanceError> {
    let valid = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        return Ok(());
    }
    Err(MaintenanceError::Refused(format!(
        "{kind} name {name:?}: Athena names are lower-case letters, digits and underscores (at most 255); pass --{} with such a name",
        if kind == "database" { "database" } else { "name" }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn athena_names_are_lower_case_words() {
        assert!(athena_name("table", "raw_order_2").is_ok());
        for bad in ["Raw", "raw-order", "", "räw", "a b"] {
            let e = athena_name("table", bad).unwrap_err().to_string();
            assert!(e.contains("--name"), "{e}");
        }
        assert!(athena_name("database", "Lake").unwrap_err().to_string().contains("--database"));
    }

    #[test]
    fn tolerated_entry_errors_pass_and_others_name_the_partition() {
        let detail = |code: &str| aws_sdk_glue::types::ErrorDetail::builder().error_code(code).error_message("m").build();
        let (exists, denied) = (detail("AlreadyExistsException"), detail("AccessDeniedException"));
        let values = vec!["a".to_string()];
        assert!(entry_errors("X", [(values.as_slice(), Some(&exists))].into_iter(), "AlreadyExistsException").is_ok());
        let e = entry_errors("X", [(values.as_slice(), Some(&denied))].into_iter(), "AlreadyExistsException").unwrap_err().to_string();
        assert!(e.contains("AccessDeniedException") && e.contains("[\"a\"]"), "{e}");
    }
}
