//! `maintenance`: compaction, vacuum, symlink manifests, Athena DDL and checkpoints.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use job_runtime::{run_job, ExitCode, ExitStatus, RunSummary, StartError, TelemetryArgs};
use maintenance::{
    athena_ddl, catalog_tables, Checkpoint, Compact, GlueCatalog, MaintenanceError, Manifests, SyncCatalog, Vacuum, DEFAULT_RETENTION_HOURS,
};
use pipeline_config::{ByteSize, ConfigOverrides, PipelineConfig};

const AFTER_HELP: &str = "\
TABLE is a table name from the pipeline configuration (raw_order, curated, processed ...) or a
location: a local folder or s3://bucket/prefix (AWS_ENDPOINT_URL for S3-compatible stores).

Exit codes:
  0   done
  1   failure
  2   usage error, or a request refused as unsafe (the message says what to change)
  78  invalid configuration (the message names the key)

The last stdout line is a JSON summary; `details` holds the operation's figures.";

/// Keeps the pipeline's Delta tables healthy for their readers.
#[derive(Debug, Parser)]
#[command(name = "maintenance", version, after_help = AFTER_HELP)]
struct Args {
    /// Pipeline configuration, used to resolve table names (not needed for locations).
    #[arg(long, short, env = "LAKEHOUSE_CONFIG", default_value = "schemas/pipeline.toml", global = true)]
    config: PathBuf,
    /// Lake root (local folder or s3://bucket/prefix); overrides the file and LAKEHOUSE_LAKE_ROOT.
    #[arg(long, global = true)]
    lake_root: Option<String>,
    #[command(flatten)]
    telemetry: TelemetryArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Bin-pack each partition's small files toward a target size (dataChange=false).
    #[command(
        after_help = "Examples:\n  maintenance compact raw_order\n  maintenance compact raw_order --partition year=2026 --partition month=11 --min-commit-interval 2m\n  maintenance compact curated --zorder order_owner"
    )]
    Compact {
        /// Table name or location.
        table: String,
        /// Target file size (bytes, or with a unit: 128MiB, 512MB).
        #[arg(long, default_value = "128MiB", value_parser = parse_size)]
        target_size: u64,
        /// Only this partition (column=value); repeat to narrow further.
        #[arg(long = "partition", value_parser = parse_filter)]
        partitions: Vec<(String, String)>,
        /// Z-order the rewritten files by these columns.
        #[arg(long, value_delimiter = ',')]
        zorder: Vec<String>,
        /// Commit finished partitions at least this often (e.g. 2m), so a conflict with a
        /// concurrent writer costs at most this much work.
        #[arg(long, value_parser = humantime::parse_duration)]
        min_commit_interval: Option<std::time::Duration>,
    },
    /// Delete files removed from the table longer ago than the retention.
    #[command(
        after_help = "Examples:\n  maintenance vacuum raw_order --dry-run\n  maintenance vacuum raw_order --retention-hours 336 --full"
    )]
    Vacuum {
        /// Table name or location.
        table: String,
        /// Keep files removed within this many hours (time travel and running readers need them).
        #[arg(long, default_value_t = DEFAULT_RETENTION_HOURS)]
        retention_hours: u64,
        /// Accept a retention below the table's minimum (delta.deletedFileRetentionDuration).
        #[arg(long)]
        allow_short_retention: bool,
        /// List the files and bytes that would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete files the log does not mention (left by failed writers).
        #[arg(long)]
        full: bool,
    },
    /// Write the symlink manifests (as Delta Spark's GENERATE symlink_format_manifest) and
    /// delete those of partitions without files.
    #[command(after_help = "Example:\n  maintenance manifest processed")]
    Manifest {
        /// Table name or location.
        table: String,
    },
    /// The Athena tables: native Delta table, symlink table and its partitions. Prints their
    /// DDL, or with --apply creates or updates them in the AWS Glue Data Catalog.
    #[command(
        after_help = "Examples:\n  maintenance catalog processed --database lakehouse > processed.sql\n  maintenance catalog processed --database lakehouse --apply\n\nWith --apply, region, credentials and endpoint come from the AWS chain (AWS_REGION,\nAWS_ENDPOINT_URL or AWS_ENDPOINT_URL_GLUE); the role needs glue:GetDatabase, GetTable,\nGetPartitions, CreateTable, UpdateTable, BatchCreatePartition, BatchUpdatePartition and\nBatchDeletePartition (CreateDatabase only when the database does not exist)."
    )]
    Catalog {
        /// Table name or location.
        table: String,
        /// Glue/Athena database.
        #[arg(long, default_value = "lakehouse")]
        database: String,
        /// Table name in the catalog (default: the configured name, or the folder's name).
        #[arg(long)]
        name: Option<String>,
        /// Create or update the tables and partitions in Glue instead of printing DDL:
        /// partitions without files are removed, schema changes applied; idempotent.
        #[arg(long)]
        apply: bool,
        /// With --apply: report what would change, change nothing.
        #[arg(long, requires = "apply")]
        dry_run: bool,
    },
    /// Write a checkpoint and delete expired log files.
    #[command(after_help = "Example:\n  maintenance checkpoint raw_order")]
    Checkpoint {
        /// Table name or location.
        table: String,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Self::Compact { .. } => "compact",
            Self::Vacuum { .. } => "vacuum",
            Self::Manifest { .. } => "manifest",
            Self::Catalog { .. } => "catalog",
            Self::Checkpoint { .. } => "checkpoint",
        }
    }

    fn table(&self) -> &str {
        match self {
            Self::Compact { table, .. }
            | Self::Vacuum { table, .. }
            | Self::Manifest { table }
            | Self::Catalog { table, .. }
            | Self::Checkpoint { table } => table,
        }
    }
}

/// A table resolved from a configured name or a location.
struct Target {
    location: String,
    name: String,
    storage: BTreeMap<String, String>,
}

/// Compaction churns Arrow buffers on every core: capped arenas keep its RSS near what is
/// live. The listing operations allocate many small strings from a few threads, where the
/// cap only adds lock contention (manifest generation ran 1.7x slower with it).
pub fn wants_arena_limit(args: &[OsString]) -> bool {
    args.iter().any(|a| a == "compact")
}

/// Runs a maintenance operation with `args` (the first is the program name).
pub fn main(args: Vec<OsString>) -> ! {
    let args = Args::parse_from(args);
    let telemetry = args.telemetry.clone();
    run_job(
        "maintenance",
        &telemetry,
        move || {
            let target = resolve(&args)?;
            Ok((args.command, target))
        },
        |(command, target), _shutdown| operate(command, target),
    )
}

/// A failed operation; a request refused as unsafe exits 2 (the message says what to change).
struct OperationError {
    operation: &'static str,
    source: anyhow::Error,
}

impl std::fmt::Display for OperationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:#}", self.operation, self.source)
    }
}

impl ExitStatus for OperationError {
    fn exit_code(&self) -> ExitCode {
        match self.source.downcast_ref::<MaintenanceError>() {
            Some(MaintenanceError::Refused(_)) => ExitCode::Usage,
            _ => ExitCode::Failure,
        }
    }
}

/// Runs the operation; its summary holds the operation, the table and the operation's figures.
async fn operate(command: Command, target: Target) -> Result<RunSummary, OperationError> {
    let started = Instant::now();
    let operation = command.name();
    let details = run(command, &target).await.map_err(|source| OperationError { operation, source })?;
    let mut summary = RunSummary::new("maintenance", "once");
    summary.details.insert("operation".into(), operation.into());
    summary.details.insert("table".into(), target.location.clone().into());
    if let serde_json::Value::Object(map) = details {
        summary.details.extend(map);
    }
    // The operation is the run's one batch (its EMF record and duration metric).
    summary.batch_done(started.elapsed());
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// A configured table name resolves through the configuration; anything else is a location.
fn resolve(args: &Args) -> Result<Target, StartError> {
    let table = args.command.table();
    let looks_like_location = table.contains('/') || table.contains("://") || table.starts_with('.');
    if !looks_like_location {
        let overrides = ConfigOverrides { lake_root: args.lake_root.clone(), ..Default::default() };
        let config = PipelineConfig::load_with(&args.config, overrides).map_err(|e| format!("configuration: {e}"))?;
        let Some(t) = config.table(table) else {
            let known: Vec<&String> = config.tables.keys().collect();
            let message =
                format!("table {table}: not in {} (known: {known:?}); pass a configured name or a location", args.config.display());
            return Err(StartError { message, code: ExitCode::Usage });
        };
        return Ok(Target { location: t.location.clone(), name: table.to_string(), storage: config.lake.storage_options.clone() });
    }
    let name = table.trim_end_matches('/').rsplit('/').next().unwrap_or(table).to_string();
    Ok(Target { location: table.to_string(), name, storage: BTreeMap::new() })
}

async fn run(command: Command, target: &Target) -> anyhow::Result<serde_json::Value> {
    if let Command::Manifest { .. } = command {
        // Not loaded: the manifest writer lists files itself, without their statistics.
        let table = delta_io::table_handle(&target.location, &target.storage)?;
        return Ok(serde_json::to_value(Manifests::new(table).await?)?);
    }
    let table = delta_io::open_table(&target.location, &target.storage).await?;
    Ok(match command {
        Command::Compact { target_size, partitions, zorder, min_commit_interval, .. } => {
            let mut compact = Compact::new(table).with_target_size(target_size).with_zorder(zorder);
            for (column, value) in partitions {
                compact = compact.with_partition_filter(column, value);
            }
            if let Some(interval) = min_commit_interval {
                compact = compact.with_min_commit_interval(interval);
            }
            let (_, metrics) = compact.await?;
            tracing::info!(files_removed = metrics.files_removed, files_added = metrics.files_added, "compacted");
            serde_json::to_value(metrics)?
        }
        Command::Vacuum { retention_hours, allow_short_retention, dry_run, full, .. } => {
            let (_, metrics) = Vacuum::new(table)
                .with_retention_hours(retention_hours)
                .with_allow_short_retention(allow_short_retention)
                .with_dry_run(dry_run)
                .with_full(full)
                .await?;
            if dry_run {
                for file in &metrics.files {
                    eprintln!("would delete {file}");
                }
            }
            let mut value = serde_json::to_value(&metrics)?;
            value["files_count"] = metrics.files.len().into();
            value
        }
        Command::Manifest { .. } => unreachable!("handled above"),
        Command::Catalog { database, name, apply: true, dry_run, .. } => {
            let tables = catalog_tables(&table, &database, name.as_deref().unwrap_or(&target.name))?;
            let metrics = SyncCatalog::new(tables, GlueCatalog::from_env().await).with_dry_run(dry_run).await?;
            serde_json::to_value(metrics)?
        }
        Command::Catalog { database, name, .. } => {
            let ddl = athena_ddl(&table, &database, name.as_deref().unwrap_or(&target.name))?;
            // The DDL goes to stdout before the summary line, ready for a SQL client.
            print!("{}", ddl.script());
            serde_json::json!({"statements": 2 + ddl.add_partitions.len(), "partitions": ddl.add_partitions.len()})
        }
        Command::Checkpoint { .. } => serde_json::to_value(Checkpoint::new(table).await?)?,
    })
}

fn parse_size(s: &str) -> Result<u64, String> {
    let size: ByteSize = s.parse()?;
    (size.0 > 0).then_some(size.0).ok_or_else(|| format!("{s}: size must be above 0"))
}

fn parse_filter(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(c, v)| (c.trim().to_string(), v.to_string()))
        .filter(|(c, _)| !c.is_empty())
        .ok_or_else(|| format!("{s}: expected column=value"))
}
