//! `merge-upsert`: merges a Delta table's new commits into a one-row-per-key target, exactly-once.

use std::path::PathBuf;
use std::future::IntoFuture;

use clap::Parser;
use job_runtime::{crash_points_from_env, init_logging, limit_malloc_arenas, run_job, TelemetryArgs};
use pipeline_config::{PipelineConfig, Trigger};
use merge_upsert::MergeUpsert;

const EXIT_CODES: &str = "\
Exit codes:
  0   batches committed
  1   failure (a rerun resumes from the checkpoint and the target's txn)
  2   usage error
  3   trigger once: no new commits in the source (schedulers may skip downstream tasks)
  78  invalid configuration (the message names the key)

The last stdout line is a JSON summary of the run. Logs go to stderr (JSON when not a terminal).

Examples:
  merge-upsert --config schemas/pipeline.toml                 # trigger once
  merge-upsert --trigger continuous                           # loop until SIGTERM";

/// Keeps a target Delta table (e.g. processed) at exactly one row per key: the latest change by
/// sequence from a source table's new commits (e.g. curated), deletes and tombstones applied.
#[derive(Debug, Parser)]
#[command(name = "merge-upsert", version, after_help = EXIT_CODES)]
struct Args {
    /// Pipeline configuration file.
    #[arg(long, short, env = "LAKEHOUSE_CONFIG", default_value = "schemas/pipeline.toml")]
    config: PathBuf,
    /// `once`: everything available at start, then exit; `continuous`: until SIGTERM.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["once", "continuous"]))]
    trigger: Option<String>,
    /// Lake root (local folder or s3://bucket/prefix); overrides the file and LAKEHOUSE_LAKE_ROOT.
    #[arg(long)]
    lake_root: Option<String>,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn main() {
    limit_malloc_arenas();
    let _crash_points = crash_points_from_env();
    init_logging();
    let args = Args::parse();
    run_job(
        "merge-upsert",
        &args.telemetry,
        move || {
            let mut config = PipelineConfig::load(&args.config).map_err(|e| format!("configuration: {e}"))?;
            if let Some(root) = args.lake_root {
                config.lake.root = root;
            }
            let job = MergeUpsert::new(&config).map_err(|e| e.to_string())?;
            Ok(match args.trigger.as_deref() {
                Some(trigger) => job.with_trigger(trigger.parse::<Trigger>().unwrap_or_default()),
                None => job,
            })
        },
        |job, shutdown| job.with_shutdown(shutdown).into_future(),
    )
}
