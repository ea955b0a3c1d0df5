//! The pipeline's processes during a soak: continuous raw-append, stream-join and merge-upsert
//! run again and again, and maintenance on its schedule; each restarted whenever it ends
//! (killed or not). Every run's end is recorded: killed, finished, or an unexpected exit.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::shape::Scheduled;
use crate::SoakError;

/// The processes running now, by loop name (what the killer picks from).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    running: Mutex<HashMap<String, u32>>,
    /// How long each loop's last run took (how far into a run a kill may land).
    last_run: Mutex<HashMap<String, Duration>>,
}

impl Registry {
    /// How long the last run of `name` took (None before its first).
    pub fn last_run(&self, name: &str) -> Option<Duration> {
        self.last_run.lock().unwrap_or_else(PoisonError::into_inner).get(name).copied()
    }

    fn ran(&self, name: &str, took: Duration) {
        self.last_run.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string(), took);
    }

    fn set(&self, name: &str, pid: Option<u32>) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        match pid {
            Some(pid) => running.insert(name.to_string(), pid),
            None => running.remove(name),
        };
    }

    /// The running processes.
    pub fn running(&self) -> Vec<(String, u32)> {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<(String, u32)> = running.iter().map(|(n, p)| (n.clone(), *p)).collect();
        all.sort();
        all
    }
}

/// How the runs of one loop ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoopRuns {
    /// Ended with 0 or 3.
    pub finished: u64,
    /// SIGKILLed by the soak.
    pub killed: u64,
    /// Maintenance that lost a race with a concurrent commit on the same files (exit 1,
    /// nothing committed): expected beside running jobs.
    pub conflicts: u64,
    /// Anything else: each is a failure of the soak (exit code and the last lines of stderr).
    pub unexpected: Vec<String>,
}

/// What a loop runs, and how often.
struct LoopSpec {
    name: String,
    args: Vec<String>,
    /// Pause between the end of a run and the next.
    pause: Duration,
}

/// The running loops.
pub(crate) struct Supervisor {
    stop: Arc<AtomicBool>,
    registry: Arc<Registry>,
    loops: Vec<(String, JoinHandle<LoopRuns>)>,
}

impl Supervisor {
    /// Starts every loop.
    pub fn start(registry: &Arc<Registry>, executable: &Path, config: &Path, maintenance: &[Scheduled]) -> Self {
        let config = config.display().to_string();
        let job = |name: &str, extra: &[&str], pause_ms| LoopSpec {
            name: name.to_string(),
            args: [name, "--config", &config].iter().chain(extra).map(|s| s.to_string()).collect(),
            pause: Duration::from_millis(pause_ms),
        };
        let mut specs =
            vec![job("raw-append", &["--trigger", "continuous"], 200), job("stream-join", &[], 500), job("merge-upsert", &[], 500)];
        for m in maintenance {
            let extra: Vec<&str> = m.args.iter().map(String::as_str).collect();
            let name = format!("maintenance {}", m.args[..2].join(" "));
            specs.push(LoopSpec { name, ..job("maintenance", &extra, m.every.as_millis() as u64) });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let loops = specs
            .into_iter()
            .map(|spec| {
                let (stop, registry, executable) = (stop.clone(), registry.clone(), executable.to_path_buf());
                (spec.name.clone(), std::thread::spawn(move || run_loop(&spec, &executable, &registry, &stop)))
            })
            .collect();
        Self { stop, registry: registry.clone(), loops }
    }

    /// Stops the loops: running one-off runs finish, the continuous raw-append gets SIGTERM.
    pub fn stop(self) -> BTreeMap<String, LoopRuns> {
        self.stop.store(true, Ordering::Relaxed);
        for (name, pid) in self.registry.running() {
            if name == "raw-append" {
                // SAFETY: kill(2) on a child this process started and has not reaped.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
        self.loops.into_iter().map(|(name, thread)| (name, thread.join().unwrap_or_default())).collect()
    }
}

fn run_loop(spec: &LoopSpec, executable: &PathBuf, registry: &Registry, stop: &AtomicBool) -> LoopRuns {
    let mut runs = LoopRuns::default();
    while !stop.load(Ordering::Relaxed) {
        let child = Command::new(executable).args(&spec.args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let Ok(child) = child else {
            runs.unexpected.push(format!("{} could not start", spec.name));
            break;
        };
        let started = Instant::now();
        registry.set(&spec.name, Some(child.id()));
        let out = child.wait_with_output();
        registry.set(&spec.name, None);
        registry.ran(&spec.name, started.elapsed());
        match out {
            Ok(out) => record(&mut runs, &spec.name, &out),
            Err(e) => runs.unexpected.push(format!("{}: {e}", spec.name)),
        }
        let resume = Instant::now() + spec.pause;
        while Instant::now() < resume && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    runs
}

/// Files a run's end under its kind.
fn record(runs: &mut LoopRuns, name: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    match (out.status.code(), out.status.signal()) {
        (Some(0 | 3), _) => runs.finished += 1,
        (_, Some(libc::SIGKILL)) => runs.killed += 1,
        (Some(1), _) if name.starts_with("maintenance") && stderr.contains("nothing of it was committed") => runs.conflicts += 1,
        (code, signal) => runs.unexpected.push(format!("{name}: exit {code:?} signal {signal:?}: {}", tail(&out.stderr))),
    }
}

/// A run of `job` to its end (the drain).
pub(crate) fn run_once(executable: &Path, job: &str, config: &Path) -> Result<Output, SoakError> {
    Command::new(executable)
        .args([job, "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SoakError::Spawn { job: job.to_string(), source })
}

/// The last lines of a run's stderr.
pub(crate) fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("\n")
}
