//! `stream-join`: a watermarked interval join of two Delta tables into a third, exactly-once.

use std::ffi::OsString;

use clap::Parser;
use job_runtime::{run_pipeline_job, JobArgs};
use pipeline_config::ConfigOverrides;
use stream_join::StreamJoin;

const EXIT_CODES: &str = "\
Exit codes:
  0   batches committed
  1   failure (a rerun resumes from the checkpoint and the output's txn)
  2   usage error
  3   trigger once: no new data in either input (schedulers may skip downstream tasks)
  78  invalid configuration (the message names the key)

The last stdout line is a JSON summary of the run. Logs go to stderr (JSON when not a terminal).

Examples:
  stream-join --config schemas/pipeline.toml                 # trigger once
  stream-join --trigger continuous                           # loop until SIGTERM";

/// Watermarked interval join of two Delta tables (e.g. raw/order and raw/member) into a third.
#[derive(Debug, Parser)]
#[command(name = "stream-join", version, after_help = EXIT_CODES)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
}

/// Runs stream-join with `args` (the first is the program name).
pub fn main(args: Vec<OsString>) -> ! {
    run_pipeline_job::<StreamJoin>(Args::parse_from(args).job, ConfigOverrides::default())
}
