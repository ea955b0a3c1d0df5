//! `lakebench`: benchmarks of the jobs against their reference points, on the shipped
//! configuration's shape. Built beside the jobs (it runs them from its own folder) but not
//! shipped in the image.

mod common;
mod maintenance;
mod merge_upsert;
mod raw_append;
mod raw_append_kinesis;
mod raw_append_routed;
mod stream_join;

use clap::{Parser, Subcommand};
use job_runtime::{init_logging, ExitCode};

/// Benchmarks of the lakehouse jobs.
#[derive(Debug, Parser)]
#[command(name = "lakebench", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark raw-append against a bare librdkafka consumer (or GetRecords loop) on the same data.
    RawAppend(raw_append::RawAppendBench),
    /// Benchmark raw-append routing one DMS topic into many tables against one table of the same bytes.
    RawAppendRouted(raw_append_routed::RoutedBench),
    /// Benchmark manifest generation and compaction against the Python deltalake package.
    Maintenance(maintenance::MaintenanceBench),
    /// Benchmark stream-join against the reference query in PySpark.
    StreamJoin(stream_join::JoinBench),
    /// Benchmark merge-upsert against the same merge done naively with Python deltalake.
    MergeUpsert(merge_upsert::MergeBench),
}

fn main() {
    init_logging();
    let args = Args::parse();
    let result = match args.command {
        Command::RawAppend(b) => b.run(),
        Command::RawAppendRouted(b) => b.run(),
        Command::Maintenance(b) => b.run(),
        Command::StreamJoin(b) => b.run(),
        Command::MergeUpsert(b) => b.run(),
    };
    if let Err(e) = result {
        eprintln!("lakebench: {e}");
        ExitCode::Failure.exit();
    }
}
