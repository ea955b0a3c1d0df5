//! `raw-append`: Kafka/MSK JSON topics into Delta tables, exactly-once.

use std::future::IntoFuture;
use std::path::PathBuf;

use clap::Parser;
use job_runtime::{crash_points_from_env, init_logging, limit_malloc_arenas, run_job, TelemetryArgs};
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
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

fn main() {
    limit_malloc_arenas();
    let _crash_points = crash_points_from_env();
    init_logging();
    let args = Args::parse();
    run_job(
        "raw-append",
        &args.telemetry,
        move || {
            let mut config = PipelineConfig::load(&args.config).map_err(|e| format!("configuration: {e}"))?;
            if let Some(root) = args.lake_root {
                config.lake.root = root;
            }
            if let Some(brokers) = args.brokers {
                config.kafka.brokers = brokers;
            }
            let job = RawAppend::new(config).map_err(|e| e.to_string())?;
            Ok(match args.trigger.as_deref() {
                Some(trigger) => job.with_trigger(trigger.parse::<Trigger>().unwrap_or_default()),
                None => job,
            })
        },
        |job, shutdown| job.with_shutdown(shutdown).into_future(),
    )
}
