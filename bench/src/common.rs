//! Helpers every benchmark shares: timing child processes, medians, folders, runtimes.

use std::path::PathBuf;
use std::process::Command;

/// Waits for a child and returns its exit status and peak resident memory.
pub(crate) fn wait_with_rusage(child: std::process::Child) -> Result<(std::process::ExitStatus, u64), String> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok((std::process::ExitStatus::from_raw(status), usage.ru_maxrss as u64 * 1024))
}

/// The median over runs of `rates[i] / references[i]`: each run measured against the
/// reference measured in the same run, so a machine that speeds up or slows down between runs
/// moves both sides of a pair alike.
pub(crate) fn paired_share(rates: &[f64], references: &[f64]) -> f64 {
    median(rates.iter().zip(references).filter(|(_, r)| **r > 0.0).map(|(rate, r)| rate / r))
}

/// The median (upper middle for an even count; 0 when empty).
pub(crate) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Blocks on a future with a current-thread runtime.
pub(crate) fn tokio_block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime").block_on(f)
}

/// A command running `job` through the `lakehouse` executable built beside the benchmark
/// (`lakehouse <job> ...`, so no job links are needed).
pub(crate) fn job_command(job: &str) -> Command {
    let dir = std::env::current_exe().ok().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
    let mut command = Command::new(dir.join("lakehouse"));
    command.arg(job);
    command
}

/// Options every raw-append benchmark shares: runs, topic partitions and folders.
#[derive(Debug, clap::Args)]
pub(crate) struct RawRunArgs {
    /// Runs per case; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Partitions (or shards) of the benchmark topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Folder with the schema files.
    #[arg(long, default_value = "schemas")]
    pub schemas: PathBuf,
    /// Scratch folder for lakes (removed after each run).
    #[arg(long, default_value = "target/bench")]
    pub work_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_shares_cancel_drift_between_runs() {
        // The machine slowed in the third run: both sides of that pair moved.
        let (rates, references) = ([0.9, 1.8, 0.85], [1.0, 2.0, 1.2]);
        assert!((paired_share(&rates, &references) - 0.9).abs() < 1e-9);
        assert!((median(rates.into_iter()) / median(references.into_iter()) - 0.75).abs() < 1e-9, "the ratio of medians mixes runs");
        assert_eq!(paired_share(&[1.0], &[0.0]), 0.0, "a reference that measured nothing is left out");
    }
}
