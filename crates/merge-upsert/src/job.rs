//! The merge-upsert job: built from the configuration, then run to its summary.

use std::time::Instant;

use job_runtime::{PipelineJob, RunOptions, RunSummary};
use pipeline_config::{IncrementalOptions, PipelineConfig};

use crate::error::MergeUpsertError;
use crate::run::MergeRun;
use crate::spec::MergeSpec;

/// A merge-upsert run over a validated configuration.
pub struct MergeUpsert {
    spec: MergeSpec,
    options: IncrementalOptions,
}

impl PipelineJob for MergeUpsert {
    type Error = MergeUpsertError;
    const NAME: &'static str = "merge-upsert";

    /// A run of the configuration's `[merge_upsert]` job.
    fn from_config(config: PipelineConfig) -> Result<Self, MergeUpsertError> {
        let job = config.merge_upsert.as_ref().ok_or(MergeUpsertError::NotConfigured)?;
        Ok(Self { spec: MergeSpec::resolve(&config, job), options: job.incremental.clone() })
    }

    /// Runs batches, then adds the run's merge figures to the summary.
    async fn run(self, options: RunOptions) -> Result<RunSummary, MergeUpsertError> {
        let started = Instant::now();
        let mut run = MergeRun::open(&self.spec, &self.options).await?;
        let mut summary = delta_source::run_to_end(Self::NAME, started, &self.options, options, &mut run).await?;
        if let serde_json::Value::Object(metrics) = serde_json::to_value(run.totals()).unwrap_or_default() {
            summary.details.extend(metrics);
        }
        Ok(summary)
    }
}
