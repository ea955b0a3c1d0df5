//! The stream-join job: built from the configuration, then run to its summary.

use std::time::Instant;

use job_runtime::{PipelineJob, RunOptions, RunSummary};
use pipeline_config::{IncrementalOptions, PipelineConfig};

use crate::error::StreamJoinError;
use crate::run::JoinRun;
use crate::spec::JoinSpec;

/// A stream-join run over a validated configuration.
pub struct StreamJoin {
    spec: JoinSpec,
    options: IncrementalOptions,
}

impl PipelineJob for StreamJoin {
    type Error = StreamJoinError;
    const NAME: &'static str = "stream-join";

    /// A run of the configuration's `[stream_join]` job.
    fn from_config(config: PipelineConfig) -> Result<Self, StreamJoinError> {
        let job = config.stream_join.as_ref().ok_or(StreamJoinError::NotConfigured)?;
        Ok(Self { spec: JoinSpec::resolve(&config, job), options: job.incremental.clone() })
    }

    async fn run(self, options: RunOptions) -> Result<RunSummary, StreamJoinError> {
        let started = Instant::now();
        let mut run = JoinRun::open(&self.spec, &self.options).await?;
        delta_source::run_to_end(Self::NAME, started, &self.options, options, &mut run).await
    }
}
