//! `raw-append`: Kafka/MSK JSON topics into Delta tables, exactly-once.

use std::ffi::OsString;

use clap::Parser;
use job_runtime::{run_pipeline_job, JobArgs};
use pipeline_config::ConfigOverrides;
use raw_append::RawAppend;

const EXIT_CODES: &str = "\
Exit codes:
  0   batches committed
  1   failure (nothing partial is ever committed; rerun resumes from the tables)
  2   usage error
  3   trigger once: no new data (schedulers may skip downstream tasks)
  4   offsets not read yet are gone from Kafka (retention, recreated topic); see on_missing_offsets
  78  invalid configuration (the message names the key)

The last stdout line is a JSON summary of the run. Logs go to stderr (JSON when not a terminal).

Examples:
  raw-append --config schemas/pipeline.toml                    # trigger once
  raw-append --trigger continuous                              # loop until SIGTERM
  LAKEHOUSE_LAKE_ROOT=s3://bucket/lake LAKEHOUSE_KAFKA_BROKERS=b-1.msk:9098 raw-append";

/// Kafka/MSK JSON topics into Delta tables, exactly-once through per-partition txn actions.
#[derive(Debug, Parser)]
#[command(name = "raw-append", version, after_help = EXIT_CODES)]
struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Kafka bootstrap servers; overrides the file and LAKEHOUSE_KAFKA_BROKERS.
    #[arg(long)]
    brokers: Option<String>,
}

/// Runs raw-append with `args` (the first is the program name).
pub fn main(args: Vec<OsString>) -> ! {
    let args = Args::parse_from(args);
    run_pipeline_job::<RawAppend>(args.job, ConfigOverrides { brokers: args.brokers, ..Default::default() })
}
