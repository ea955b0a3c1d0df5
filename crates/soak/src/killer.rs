//! SIGKILLs a random running process of the pipeline at random times.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::supervisor::Registry;

/// Kills per loop.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Kills(pub BTreeMap<String, u64>);

impl Kills {
    /// All kills.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// The killer thread.
pub(crate) struct Killer {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Kills>,
}

impl Killer {
    /// Starts killing, pausing a random time within `every` between kills.
    pub fn start(registry: &Arc<Registry>, every: (Duration, Duration), seed: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, registry) = (stop.clone(), registry.clone());
        let thread = std::thread::spawn(move || kill_until(&registry, every, seed, &flag));
        Self { stop, thread }
    }

    /// Stops killing; returns the kills.
    pub fn stop(self) -> Kills {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The kinds of process a kill picks from, each as likely (whatever their runs' lengths).
const GROUPS: [&str; 4] = ["raw-append", "stream-join", "merge-upsert", "maintenance"];
/// How long a kill waits for a process of its kind to run.
const WAIT_FOR_RUN: Duration = Duration::from_secs(5);
/// How far into a run a kill may land before the loop's first run ended.
const FIRST_RUN: Duration = Duration::from_millis(300);

fn kill_until(registry: &Registry, (min, max): (Duration, Duration), seed: u64, stop: &AtomicBool) -> Kills {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x6b69_6c6c);
    let mut kills = Kills::default();
    while pause(rng.gen_range(min..=max), stop) {
        // Attempts that find no run, or whose run ends first, are tried again at once.
        while !stop.load(Ordering::Relaxed) {
            let group = GROUPS[rng.gen_range(0..GROUPS.len())];
            let Some((name, pid)) = wait_for_run(registry, group, stop) else { continue };
            // Anywhere in a run as long as the loop's last one: startup, reading, writing, commit.
            let into_run = registry.last_run(&name).unwrap_or(FIRST_RUN);
            if !pause(rng.gen_range(Duration::ZERO..=into_run), stop) {
                break;
            }
            // SAFETY: kill(2) on a child the supervisor started and has not reaped yet.
            if registry.running().contains(&(name.clone(), pid)) && unsafe { libc::kill(pid as i32, libc::SIGKILL) } == 0 {
                *kills.0.entry(name.clone()).or_default() += 1;
                tracing::info!(process = name, pid, "soak: SIGKILL");
                break;
            }
        }
    }
    kills
}

/// Sleeps `time`; false when the soak stops meanwhile.
fn pause(time: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + time;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    !stop.load(Ordering::Relaxed)
}

/// A running process of `group` (the first seen within [`WAIT_FOR_RUN`]).
fn wait_for_run(registry: &Registry, group: &str, stop: &AtomicBool) -> Option<(String, u32)> {
    let until = Instant::now() + WAIT_FOR_RUN;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        if let Some(found) = registry.running().into_iter().find(|(name, _)| name.starts_with(group)) {
            return Some(found);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}
