//! `lakehouse`: every job in one executable, so the code they share ships once. It runs the job
//! named by the name it is called by (`raw-append`, `stream-join`, `merge-upsert`,
//! `maintenance`, `lakectl`: links to this file) or by its first argument
//! (`lakehouse raw-append --config ...`).

mod lakectl;
mod maintenance;
mod pipeline_jobs;

use std::ffi::OsString;
use std::path::Path;

use job_runtime::{crash_points_from_env, init_logging, ExitCode};

/// The jobs by the name they are called by.
const JOBS: [&str; 5] = ["raw-append", "stream-join", "merge-upsert", "maintenance", "lakectl"];

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let Some(job) = job_name(&args) else {
        eprintln!("usage: lakehouse <{}> [ARGS]... (or call it through a link with the job's name)", JOBS.join("|"));
        ExitCode::Usage.exit()
    };
    if !called_as(&args, job) {
        args.remove(0);
    }
    // Before any thread starts (the allocator setting must precede them). Not raw-append: its
    // decoding and encoding threads run at a lower priority (`lower_cpu_work_priority`), and
    // one of them preempted while holding a shared arena's lock stalls librdkafka's threads
    // (with the cap, a 50% malformed backlog took 21% longer and a clean one 7%).
    let arena_capped = matches!(job, "stream-join" | "merge-upsert");
    if arena_capped || maintenance::wants_arena_limit(&args) {
        job_runtime::limit_malloc_arenas();
    }
    let _crash_points = crash_points_from_env();
    init_logging();
    match job {
        "raw-append" => pipeline_jobs::raw_append(args),
        "stream-join" => pipeline_jobs::stream_join(args),
        "merge-upsert" => pipeline_jobs::merge_upsert(args),
        "maintenance" => maintenance::main(args),
        _ => lakectl::main(args),
    }
}

/// The job to run: the program's own name when it is a job's, else the first argument.
fn job_name(args: &[OsString]) -> Option<&'static str> {
    let named = |s: Option<&OsString>| s.and_then(|s| JOBS.iter().find(|j| Path::new(s).file_name().is_some_and(|f| f == **j))).copied();
    named(args.first()).or_else(|| named(args.get(1)))
}

fn called_as(args: &[OsString], job: &str) -> bool {
    args.first().and_then(|a| Path::new(a).file_name()).is_some_and(|f| f == job)
}
