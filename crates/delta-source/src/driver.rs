//! The batch loop of every job that reads Delta tables incrementally: stop on request, plan the
//! next batch (a pending batch's recorded versions first), run it, and under trigger once stop
//! when nothing is new, under continuous wait an interval. Jobs supply `plan` and `run_batch`.

use std::future::Future;
use std::time::{Duration, Instant};

use job_runtime::{RunOptions, RunStatus, RunSummary, Shutdown};
use pipeline_config::{IncrementalOptions, Trigger};

/// A job driven batch by batch over Delta sources.
pub trait IncrementalJob {
    /// What one batch reads (source versions and files).
    type Plan;
    /// The job's error.
    type Error;

    /// Refreshes the sources and plans the next batch; `None` when nothing is new.
    fn plan(&mut self) -> impl Future<Output = Result<Option<Self::Plan>, Self::Error>> + Send;

    /// Runs and commits one planned batch, counting it in `summary`.
    fn run_batch(&mut self, plan: Self::Plan, summary: &mut RunSummary) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// When the loop stops and how long it waits between empty polls.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Once: stop at the first empty plan; continuous: wait `interval` and plan again.
    pub trigger: Trigger,
    /// Continuous mode's pause after an empty plan.
    pub interval: Duration,
    /// Raised by SIGTERM/SIGINT; checked between batches.
    pub shutdown: Shutdown,
}

/// Runs batches until the schedule says stop; returns how the run ended.
pub async fn drive<J: IncrementalJob + Send>(job: &mut J, schedule: &Schedule, summary: &mut RunSummary) -> Result<RunStatus, J::Error>
where
    J::Plan: Send,
{
    let mut any = false;
    loop {
        if schedule.shutdown.requested() {
            return Ok(RunStatus::Stopped);
        }
        match job.plan().await? {
            Some(plan) => {
                any = true;
                let started = Instant::now();
                job.run_batch(plan, summary).await?;
                summary.batch_done(started.elapsed());
            }
            None if schedule.trigger == Trigger::Once => return Ok(finished(any)),
            None => schedule.shutdown.sleep(schedule.interval).await,
        }
    }
}

/// Runs an opened job to its summary under the command line's trigger (or the configured one)
/// and stop flag; `started` is when the run began (opening its tables included).
pub async fn run_to_end<J: IncrementalJob + Send>(
    name: &str,
    started: Instant,
    configured: &IncrementalOptions,
    options: RunOptions,
    job: &mut J,
) -> Result<RunSummary, J::Error>
where
    J::Plan: Send,
{
    let trigger = options.trigger_or(configured.trigger);
    let mut summary = RunSummary::new(name, trigger.name());
    let schedule = Schedule { trigger, interval: configured.interval.0, shutdown: options.shutdown };
    summary.status = drive(job, &schedule, &mut summary).await?;
    summary.duration_ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

/// A trigger-once run that committed nothing found no new data.
fn finished(any: bool) -> RunStatus {
    if any {
        RunStatus::Ok
    } else {
        RunStatus::NoNewData
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job with `batches` batches to run.
    struct Counting {
        batches: u32,
        ran: u32,
    }

    impl IncrementalJob for Counting {
        type Plan = u32;
        type Error = String;

        async fn plan(&mut self) -> Result<Option<u32>, String> {
            Ok((self.ran < self.batches).then_some(self.ran + 1))
        }

        async fn run_batch(&mut self, plan: u32, summary: &mut RunSummary) -> Result<(), String> {
            self.ran = plan;
            summary.read(1, 0);
            Ok(())
        }
    }

    fn once() -> Schedule {
        Schedule { trigger: Trigger::Once, interval: Duration::ZERO, shutdown: Shutdown::default() }
    }

    #[tokio::test]
    async fn once_runs_every_planned_batch_then_stops() {
        let mut job = Counting { batches: 3, ran: 0 };
        let mut summary = RunSummary::new("t", "once");
        assert_eq!(drive(&mut job, &once(), &mut summary).await, Ok(RunStatus::Ok));
        assert_eq!((job.ran, summary.batches, summary.rows_in), (3, 3, 3));
    }

    #[tokio::test]
    async fn once_with_nothing_new_is_no_new_data() {
        let mut job = Counting { batches: 0, ran: 0 };
        let mut summary = RunSummary::new("t", "once");
        assert_eq!(drive(&mut job, &once(), &mut summary).await, Ok(RunStatus::NoNewData));
    }

    #[tokio::test]
    async fn a_requested_stop_ends_continuous_mode() {
        let mut job = Counting { batches: 1, ran: 0 };
        let schedule = Schedule { trigger: Trigger::Continuous, interval: Duration::from_millis(5), shutdown: Shutdown::default() };
        schedule.shutdown.flag().store(true, std::sync::atomic::Ordering::SeqCst);
        let mut summary = RunSummary::new("t", "continuous");
        assert_eq!(drive(&mut job, &schedule, &mut summary).await, Ok(RunStatus::Stopped));
        assert_eq!(job.ran, 0);
    }
}
