//! The merge-upsert job: built from the configuration, then `.await`ed to its summary.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Instant;

use delta_source::{drive, Schedule};
use job_runtime::{PipelineJob, RunSummary, Shutdown};
use pipeline_config::{IncrementalOptions, PipelineConfig, Trigger};

use crate::error::MergeUpsertError;
use crate::run::MergeRun;
use crate::spec::MergeSpec;

/// A merge-upsert run over a validated configuration: build it, then `.await` it.
pub struct MergeUpsert {
    spec: MergeSpec,
    options: IncrementalOptions,
    trigger: Trigger,
    shutdown: Shutdown,
}

impl PipelineJob for MergeUpsert {
    type Error = MergeUpsertError;
    const NAME: &'static str = "merge-upsert";

    /// A run of the configuration's `[merge_upsert]` job.
    fn from_config(config: PipelineConfig) -> Result<Self, MergeUpsertError> {
        let job = config.merge_upsert.as_ref().ok_or(MergeUpsertError::NotConfigured)?;
        let options = job.incremental.clone();
        Ok(Self { spec: MergeSpec::resolve(&config, job), trigger: options.trigger, options, shutdown: Shutdown::default() })
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

impl MergeUpsert {
    async fn execute(self) -> Result<RunSummary, MergeUpsertError> {
        let started = Instant::now();
        let mut summary = RunSummary::new(Self::NAME, self.trigger.name());
        let mut run = MergeRun::open(&self.spec, &self.options).await?;
        let schedule = Schedule { trigger: self.trigger, interval: self.options.interval.0, shutdown: self.shutdown.clone() };
        summary.status = drive(&mut run, &schedule, &mut summary).await?;
        if let serde_json::Value::Object(metrics) = serde_json::to_value(run.totals()).unwrap_or_default() {
            summary.details.extend(metrics);
        }
        summary.duration_ms = started.elapsed().as_millis() as u64;
        Ok(summary)
    }
}

impl IntoFuture for MergeUpsert {
    type Output = Result<RunSummary, MergeUpsertError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}
