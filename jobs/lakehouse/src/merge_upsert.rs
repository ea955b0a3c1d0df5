//! `merge-upsert`: merges a Delta table's new commits into a one-row-per-key target, exactly-once.

use std::ffi::OsString;

use clap::Parser;
use job_runtime::{run_pipeline_job, JobArgs};
use merge_upsert::MergeUpsert;
use pipeline_config::ConfigOverrides;

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
    #[command(flatten)]
    job: JobArgs,
}

/// Runs merge-upsert with `args` (the first is the program name).
pub fn main(args: Vec<OsString>) -> ! {
    run_pipeline_job::<MergeUpsert>(Args::parse_from(args).job, ConfigOverrides::default())
}
