//! The soak harness behind `lakectl soak`: the whole reference pipeline at once (continuous
//! raw-append fed by a producer, stream-join and merge-upsert in loops, compaction, vacuum and
//! manifests on a schedule) while random processes are SIGKILLed at random times; then the
//! pipeline is drained and every table compared with an expectation computed independently
//! from what was produced.

mod error;
mod killer;
mod producer;
mod report;
mod shape;
mod supervisor;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use error::SoakError;
pub use report::{Check, SoakReport};

use crate::killer::Killer;
use crate::producer::Producer;
use crate::shape::Shape;
use crate::supervisor::{Registry, Supervisor};

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// The pipeline configuration (the reference pipeline's shape).
    pub config: PathBuf,
    /// How long the pipeline runs under kills before it is drained.
    pub duration: Duration,
    /// The shortest and longest pause between two kills.
    pub kill_every: (Duration, Duration),
    /// The run fails with fewer kills than this.
    pub min_kills: u64,
    /// Orders produced per second (membership changes follow at the same event-time pace).
    pub orders_per_second: u64,
    /// Partitions of the topics the soak creates.
    pub partitions: i32,
    /// Seed of the generators and of the kills.
    pub seed: u64,
    /// The `lakehouse` executable the jobs run as.
    pub executable: PathBuf,
}

impl SoakOptions {
    fn validate(&self) -> Result<(), SoakError> {
        let (min, max) = self.kill_every;
        if min > max || max.is_zero() {
            return Err(SoakError::Options(format!("--kill-every: {min:?}..{max:?} is not a range of pauses like 1s..4s")));
        }
        if self.duration < max {
            return Err(SoakError::Options("--duration must be longer than the longest pause between kills".into()));
        }
        if self.orders_per_second == 0 || self.partitions < 1 {
            return Err(SoakError::Options("--orders-per-second and --partitions must be positive".into()));
        }
        Ok(())
    }
}

/// Runs a soak and checks the tables; the report says whether every check passed.
pub fn run(options: &SoakOptions) -> Result<SoakReport, SoakError> {
    options.validate()?;
    let started = Instant::now();
    let shape = Shape::load(&options.config)?;
    shape.create_topics(options.partitions)?;
    let producer = Producer::start(&shape, options.seed, options.orders_per_second);
    // Every table exists before anything runs beside anything else (a job whose source was
    // never created fails, as it should).
    bootstrap(&options.executable, &options.config)?;
    let registry = Arc::new(Registry::default());
    let supervisor = Supervisor::start(&registry, &options.executable, &options.config, &shape.maintenance_schedule());
    let killer = Killer::start(&registry, options.kill_every, options.seed);
    std::thread::sleep(options.duration);
    let kills = killer.stop();
    let produced = producer.stop();
    // The jobs stop before a producer failure is reported: none is left running.
    let runs = supervisor.stop();
    let produced = produced?;
    tracing::info!(kills = kills.total(), "soak: stopped killing; draining");
    let drained = drain(&options.executable, &options.config)?;
    let checks = verify::run(&shape, &produced)?;
    Ok(SoakReport::new(options, kills, runs, drained, produced, checks, started.elapsed()))
}

/// One run of each job in order, as the first scheduled run of the pipeline would.
fn bootstrap(executable: &Path, config: &Path) -> Result<(), SoakError> {
    std::thread::sleep(Duration::from_secs(2));
    for job in ["raw-append", "stream-join", "merge-upsert"] {
        let out = supervisor::run_once(executable, job, config)?;
        if !matches!(out.status.code(), Some(0 | 3)) {
            return Err(SoakError::Start(format!("{job} exited {:?}: {}", out.status.code(), supervisor::tail(&out.stderr))));
        }
    }
    Ok(())
}

/// Runs each job once more until it finds nothing new (exit 3): everything produced is in every
/// table. Returns the runs it took.
fn drain(executable: &Path, config: &Path) -> Result<u64, SoakError> {
    let mut runs = 0;
    for job in ["raw-append", "stream-join", "merge-upsert"] {
        for attempt in 0.. {
            if attempt == 10 {
                return Err(SoakError::Drain(format!("{job} still found new data after 10 runs")));
            }
            runs += 1;
            let out = supervisor::run_once(executable, job, config)?;
            match out.status.code() {
                Some(3) => break,
                Some(0) => continue,
                code => return Err(SoakError::Drain(format!("{job} exited {code:?} while draining: {}", supervisor::tail(&out.stderr)))),
            }
        }
    }
    Ok(runs)
}
