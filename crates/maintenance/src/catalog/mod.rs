//! The Athena view of a Delta table: the native Delta table and the symlink-manifest table with
//! its partitions, as DDL for a SQL client or applied to the AWS Glue Data Catalog.
//!
//! [`CatalogTables`] is what the catalog should hold (read from the Delta log); [`athena_ddl`]
//! prints it, [`SyncCatalog`] compares it with Glue and applies the difference.

mod ddl;
mod glue;
mod model;
mod sync_plan;

pub use ddl::{athena_ddl, AthenaDdl};
pub use glue::{GlueCatalog, SyncCatalog, SyncMetrics};
pub use model::{catalog_tables, CatalogTables, Column, PartitionDef, TableDef, TableFormat};
pub use sync_plan::{plan_sync, CatalogState, DesiredCatalog, GluePartition, GlueTable, SyncPlan, TableAction};
