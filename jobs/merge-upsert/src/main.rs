//! `merge-upsert`: merges a Delta table's new commits into a one-row-per-key target, exactly-once.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use job_runtime::{crash_points_from_env, exit_failed, init_logging, limit_malloc_arenas, ExitCode, Shutdown};
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
}

fn main() {
    limit_malloc_arenas();
    let _crash_points = crash_points_from_env();
    init_logging();
    let args = Args::parse();
    let started = Instant::now();
    let mut config = match PipelineConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => fail(&format!("configuration: {e}"), ExitCode::Config, started),
    };
    if let Some(root) = args.lake_root {
        config.lake.root = root;
    }
    let mut job = match MergeUpsert::new(&config) {
        Ok(j) => j,
        Err(e) => fail(&e.to_string(), ExitCode::Config, started),
    };
    if let Some(trigger) = args.trigger.as_deref() {
        job = job.with_trigger(trigger.parse::<Trigger>().unwrap_or_default());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => fail(&format!("tokio runtime: {e}"), ExitCode::Failure, started),
    };
    match runtime.block_on(async move { job.with_shutdown(Shutdown::install()).await }) {
        Ok(mut summary) => {
            summary.print();
            if summary.status == "no_new_data" { ExitCode::NoNewData } else { ExitCode::Success }.exit()
        }
        Err(e) => fail(&e.to_string(), ExitCode::Failure, started),
    }
}

fn fail(message: &str, code: ExitCode, started: Instant) -> ! {
    exit_failed("merge-upsert", message, code, started)
}
