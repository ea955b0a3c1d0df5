//! `raw-append`: Kafka/MSK JSON topics into Delta tables, exactly-once.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use job_runtime::{crash_points_from_env, exit_failed, init_logging, limit_malloc_arenas, ExitCode, Shutdown};
use pipeline_config::{PipelineConfig, Trigger};
use raw_append::RawAppend;

const EXIT_CODES: &str = "\
Exit codes:
  0   batches committed
  1   failure (nothing partial is ever committed; rerun resumes from the tables)
  2   usage error
  3   trigger once: no new data (schedulers may skip downstream tasks)
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
    /// Pipeline configuration file.
    #[arg(long, short, env = "LAKEHOUSE_CONFIG", default_value = "schemas/pipeline.toml")]
    config: PathBuf,
    /// `once`: everything available at start, then exit; `continuous`: until SIGTERM.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["once", "continuous"]))]
    trigger: Option<String>,
    /// Lake root (local folder or s3://bucket/prefix); overrides the file and LAKEHOUSE_LAKE_ROOT.
    #[arg(long)]
    lake_root: Option<String>,
    /// Kafka bootstrap servers; overrides the file and LAKEHOUSE_KAFKA_BROKERS.
    #[arg(long)]
    brokers: Option<String>,
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
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    let mut job = match RawAppend::new(config) {
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
    let result = runtime.block_on(async move { job.with_shutdown(Shutdown::install()).await });
    match result {
        Ok(mut summary) => {
            summary.print();
            let code = if summary.status == "no_new_data" { ExitCode::NoNewData } else { ExitCode::Success };
            code.exit()
        }
        Err(e) => fail(&e.to_string(), ExitCode::Failure, started),
    }
}

fn fail(message: &str, code: ExitCode, started: Instant) -> ! {
    exit_failed("raw-append", message, code, started)
}
