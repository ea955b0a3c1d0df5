//! The pipeline jobs' command lines: `raw-append`, `stream-join`, `merge-upsert`. Each takes the
//! shared job arguments (raw-append also `--brokers`) and runs through the shared harness.

use std::ffi::OsString;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use job_runtime::{run_pipeline_job, JobArgs, PipelineJob};
use merge_upsert::MergeUpsert;
use pipeline_config::ConfigOverrides;
use raw_append::RawAppend;
use stream_join::StreamJoin;

/// Arguments of the jobs that read Delta tables.
#[derive(Debug, Parser)]
#[command(version)]
struct DeltaJobArgs {
    #[command(flatten)]
    job: JobArgs,
}

/// Arguments of raw-append.
#[derive(Debug, Parser)]
#[command(version)]
struct RawAppendArgs {
    #[command(flatten)]
    job: JobArgs,
    /// Kafka bootstrap servers; overrides the file and LAKEHOUSE_KAFKA_BROKERS.
    #[arg(long)]
    brokers: Option<String>,
}

/// Runs raw-append with `args` (the first is the program name).
pub fn raw_append(args: Vec<OsString>) -> ! {
    let about = "Kafka/MSK JSON topics into Delta tables, exactly-once through per-partition txn actions.";
    let help = after_help(
        "nothing partial is ever committed; rerun resumes from the tables",
        "no new data",
        "  4   offsets not read yet are gone from Kafka (retention, recreated topic); see on_missing_offsets\n",
        "  raw-append --config schemas/pipeline.toml                    # trigger once\n  \
         raw-append --trigger continuous                              # loop until SIGTERM\n  \
         LAKEHOUSE_LAKE_ROOT=s3://bucket/lake LAKEHOUSE_KAFKA_BROKERS=b-1.msk:9098 raw-append",
    );
    let args: RawAppendArgs = parse::<RawAppend, RawAppendArgs>(args, about, help);
    run_pipeline_job::<RawAppend>(args.job, ConfigOverrides { brokers: args.brokers, ..Default::default() })
}

const STREAM_JOIN_CODES: &str =
    "  5   the checkpoint is behind the output (deleted, restored, moved): nothing committed; restore it or rebuild the output\n";

/// Runs stream-join with `args` (the first is the program name).
pub fn stream_join(args: Vec<OsString>) -> ! {
    let about = "Watermarked interval join of two Delta tables (e.g. raw/order and raw/member) into a third.";
    let help = after_help(
        "a rerun resumes from the checkpoint and the output's txn",
        "no new data in either input",
        STREAM_JOIN_CODES,
        &examples("stream-join"),
    );
    run_pipeline_job::<StreamJoin>(parse::<StreamJoin, DeltaJobArgs>(args, about, help).job, ConfigOverrides::default())
}

/// Runs merge-upsert with `args` (the first is the program name).
pub fn merge_upsert(args: Vec<OsString>) -> ! {
    let about = "Keeps a target Delta table (e.g. processed) at exactly one row per key: the latest change by sequence from \
                 a source table's new commits (e.g. curated), deletes and tombstones applied.";
    let help = after_help(
        "a rerun resumes from the checkpoint and the target's txn",
        "no new commits in the source",
        "  5   the checkpoint is behind the target and its commits cannot rebuild it: nothing committed; restore it\n",
        &examples("merge-upsert"),
    );
    run_pipeline_job::<MergeUpsert>(parse::<MergeUpsert, DeltaJobArgs>(args, about, help).job, ConfigOverrides::default())
}

/// Parses `args` as job `J`'s command line (usage errors exit 2).
fn parse<J: PipelineJob, A: CommandFactory + FromArgMatches>(args: Vec<OsString>, about: &'static str, help: String) -> A {
    let matches: ArgMatches = A::command().name(J::NAME).bin_name(J::NAME).about(about).after_help(help).get_matches_from(args);
    A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The exit codes and examples every pipeline job's help ends with.
fn after_help(failure: &str, no_new_data: &str, more_codes: &str, examples: &str) -> String {
    format!(
        "Exit codes:\n  0   batches committed\n  1   failure ({failure})\n  2   usage error\n  \
         3   trigger once: {no_new_data} (schedulers may skip downstream tasks)\n{more_codes}  \
         78  invalid configuration (the message names the key)\n\n\
         The last stdout line is a JSON summary of the run. Logs go to stderr (JSON when not a terminal).\n\n\
         Examples:\n{examples}"
    )
}

fn examples(job: &str) -> String {
    format!("  {job} --config schemas/pipeline.toml                 # trigger once\n  {job} --trigger continuous                           # loop until SIGTERM")
}
