//! Opening, creating and writing tables.

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::StructType;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};

use crate::{storage_options, table_url, DeltaIoError};

/// Delta Spark table properties delta-rs does not know but accepts when asked to, because a
/// job of ours acts on them.
const SPARK_ONLY_PROPERTIES: &[&str] = &["delta.compatibility.symlinkFormatManifest.enabled"];

/// What a job expects of a table it writes: location, schema, partitioning, properties.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Local path or `s3://` URL.
    pub location: String,
    /// Table name recorded in metadata.
    pub name: String,
    /// Full schema, partition columns included.
    pub schema: SchemaRef,
    /// Partition columns in directory order.
    pub partition_columns: Vec<String>,
    /// Table properties set at creation.
    pub properties: BTreeMap<String, String>,
    /// Object-store options from the configuration.
    pub storage: BTreeMap<String, String>,
}

impl TableSpec {
    /// The table configured as `[tables.<name>]`: its schema file's columns followed by its
    /// derived partition columns (strings).
    pub fn configured(table: &pipeline_config::TableConfig, storage: &BTreeMap<String, String>) -> Self {
        let mut fields: Vec<arrow::datatypes::Field> = table.schema.arrow_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(
            table
                .partitions
                .iter()
                .filter(|p| p.source != pipeline_config::PartitionSource::Column)
                .map(|p| arrow::datatypes::Field::new(&p.column, arrow::datatypes::DataType::Utf8, true)),
        );
        Self {
            location: table.location.clone(),
            name: table.name.clone(),
            schema: std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            partition_columns: table.partition_columns(),
            properties: table.properties.clone(),
            storage: storage.clone(),
        }
    }
}

/// Opens an existing table (error if there is none).
pub async fn open_table(location: &str, storage: &BTreeMap<String, String>) -> Result<DeltaTable, DeltaIoError> {
    let url = table_url(location)?;
    deltalake::open_table_with_storage_options(url, storage_options(storage)).await.map_err(DeltaIoError::delta(location))
}

/// The table at `location`, or None before its first commit (nothing is created).
pub async fn open_if_exists(location: &str, storage: &BTreeMap<String, String>) -> Result<Option<DeltaTable>, DeltaIoError> {
    let url = table_url(location)?;
    let table =
        DeltaTable::try_from_url_with_storage_options(url, storage_options(storage)).await.map_err(DeltaIoError::delta(location))?;
    Ok(table.version().is_some().then_some(table))
}

/// The table `spec` describes if it exists, checked like [`open_or_create`] checks it; None
/// before its first commit (nothing is created).
pub async fn open_existing(spec: &TableSpec) -> Result<Option<DeltaTable>, DeltaIoError> {
    let table = open_if_exists(&spec.location, &spec.storage).await?;
    if let Some(table) = &table {
        check_schema(table, spec)?;
    }
    Ok(table)
}

/// A handle on the table at `location` without reading its log (for operations that read the
/// log their own way).
pub fn table_handle(location: &str, storage: &BTreeMap<String, String>) -> Result<DeltaTable, DeltaIoError> {
    let url = table_url(location)?;
    deltalake::DeltaTableBuilder::from_url(url)
        .and_then(|b| b.with_storage_options(storage_options(storage)).build())
        .map_err(DeltaIoError::delta(location))
}

/// Opens the table, creating it on first use; an existing table must have the same columns
/// (names, types) and partitioning.
pub async fn open_or_create(spec: &TableSpec) -> Result<DeltaTable, DeltaIoError> {
    let url = table_url(&spec.location)?;
    let opts = storage_options(&spec.storage);
    let mut table =
        DeltaTable::try_from_url_with_storage_options(url.clone(), opts.clone()).await.map_err(DeltaIoError::delta(&spec.location))?;
    if table.version().is_none() {
        let delta_schema: StructType = spec.schema.as_ref().try_into_kernel().map_err(|e| DeltaIoError::delta(&spec.location)(e.into()))?;
        let created = table
            .create()
            .with_table_name(&spec.name)
            .with_columns(delta_schema.fields().cloned())
            .with_partition_columns(spec.partition_columns.clone())
            .with_configuration(spec.properties.iter().map(|(k, v)| (k.clone(), Some(v.clone()))))
            .with_save_mode(SaveMode::Ignore)
            // Unknown `delta.*` keys are refused (typos), except Delta Spark properties that
            // delta-rs does not model but our jobs honour.
            .with_raise_if_key_not_exists(!spec.properties.keys().any(|k| SPARK_ONLY_PROPERTIES.contains(&k.as_str())))
            // A losing concurrent create must fail, not be retried as a second metadata commit.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        let create_error = match created {
            Ok(t) => {
                table = t;
                None
            }
            // Another process may have created it between our load and our create.
            Err(e) => {
                table = DeltaTable::try_from_url_with_storage_options(url, opts).await.map_err(DeltaIoError::delta(&spec.location))?;
                Some(e)
            }
        };
        if table.version().is_none() {
            let source =
                create_error.unwrap_or_else(|| DeltaTableError::Generic("the create reported success but no version exists".into()));
            return Err(DeltaIoError::NotCreated { table: spec.location.clone(), source: Box::new(source) });
        }
        tracing::info!(table = %spec.location, "created table");
    }
    check_schema(&table, spec)?;
    Ok(table)
}

fn check_schema(table: &DeltaTable, spec: &TableSpec) -> Result<(), DeltaIoError> {
    let mismatch = |detail: String| DeltaIoError::SchemaMismatch { table: spec.location.clone(), detail };
    let snapshot = table.snapshot().map_err(DeltaIoError::delta(&spec.location))?;
    let existing = snapshot.snapshot().arrow_schema();
    let partitions: Vec<String> = snapshot.metadata().partition_columns().to_vec();
    if partitions != spec.partition_columns {
        return Err(mismatch(format!("partitioned by {partitions:?}, configured {:?}", spec.partition_columns)));
    }
    for field in spec.schema.fields() {
        match existing.field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(mismatch(format!(
                    "column {} is {} in the table, {} in the configuration",
                    field.name(),
                    f.data_type(),
                    field.data_type()
                )))
            }
            Err(_) => return Err(mismatch(format!("column {} is missing from the table", field.name()))),
        }
    }
    Ok(())
}

/// Adds `fields` to the table's schema as nullable columns (a metadata-only commit).
pub async fn add_nullable_columns(table: &mut DeltaTable, fields: &[arrow::datatypes::Field]) -> Result<(), DeltaIoError> {
    let location = table.table_url().to_string();
    let columns = fields
        .iter()
        .map(|f| f.clone().with_nullable(true))
        .map(|f| (&f).try_into_kernel().map_err(|e| DeltaIoError::delta(&location)(e.into())))
        .collect::<Result<Vec<deltalake::kernel::StructField>, _>>()?;
    *table = table.clone().add_columns().with_fields(columns).await.map_err(DeltaIoError::delta(&location))?;
    Ok(())
}
