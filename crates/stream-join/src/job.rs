//! The stream-join job: built from the configuration, then `.await`ed to its summary.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Instant;

use delta_source::{drive, Schedule};
use job_runtime::{PipelineJob, RunSummary, Shutdown};
use pipeline_config::{IncrementalOptions, PipelineConfig, Trigger};

use crate::error::StreamJoinError;
use crate::run::JoinRun;
use crate::spec::JoinSpec;

/// A stream-join run over a validated configuration: build it, then `.await` it.
pub struct StreamJoin {
    spec: JoinSpec,
    options: IncrementalOptions,
    trigger: Trigger,
    shutdown: Shutdown,
}

impl PipelineJob for StreamJoin {
    type Error = StreamJoinError;
    const NAME: &'static str = "stream-join";

    /// A run of the configuration's `[stream_join]` job.
    fn from_config(config: PipelineConfig) -> Result<Self, StreamJoinError> {
        let job = config.stream_join.as_ref().ok_or(StreamJoinError::NotConfigured)?;
        let options = job.incremental.clone();
        Ok(Self { spec: JoinSpec::resolve(&config, job), trigger: options.trigger, options, shutdown: Shutdown::default() })
    }

    fn with_trigger(mut self, trigger: Trigger) -> Self {
        self.trigger = trigger;
        self
    }

    fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }
}

impl StreamJoin {
    async fn execute(self) -> Result<RunSummary, StreamJoinError> {
        let started = Instant::now();
        let mut summary = RunSummary::new(Self::NAME, self.trigger.name());
        let mut run = JoinRun::open(&self.spec, &self.options).await?;
        let schedule = Schedule { trigger: self.trigger, interval: self.options.interval.0, shutdown: self.shutdown.clone() };
        summary.status = drive(&mut run, &schedule, &mut summary).await?;
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

impl IntoFuture for StreamJoin {
    type Output = Result<RunSummary, StreamJoinError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
