//! The command line every pipeline job shares and the one `main` they all run: configuration
//! file, typed trigger, lake root (applied before validation), telemetry.

use std::fmt::Display;
use std::future::Future;
use std::path::PathBuf;

use pipeline_config::{ConfigOverrides, PipelineConfig, Trigger};

use crate::{run_job, ExitStatus, RunSummary, Shutdown, TelemetryArgs};

/// Arguments every pipeline job takes (flattened into its clap arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct JobArgs {
    /// Pipeline configuration file.
    #[arg(long, short, env = "LAKEHOUSE_CONFIG", default_value = "schemas/pipeline.toml")]
    pub config: PathBuf,
    /// `once`: everything available at start, then exit; `continuous`: until SIGTERM.
    #[arg(long, value_parser = parse_trigger, value_name = "once|continuous")]
    pub trigger: Option<Trigger>,
    /// Lake root (local folder or s3://bucket/prefix); overrides the file and LAKEHOUSE_LAKE_ROOT.
    #[arg(long)]
    pub lake_root: Option<String>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// `--brokers` of the operator tools (lakectl, lakebench).
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Kafka bootstrap servers.
    #[arg(long, global = true, env = "LAKEHOUSE_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
}

fn parse_trigger(s: &str) -> Result<Trigger, String> {
    s.parse()
}

impl JobArgs {
    /// Loads and validates the configuration with the command line's overrides applied first.
    pub fn load(&self, mut overrides: ConfigOverrides) -> Result<PipelineConfig, String> {
        overrides.lake_root = self.lake_root.clone().or(overrides.lake_root);
        PipelineConfig::load_with(&self.config, overrides).map_err(|e| format!("configuration: {e}"))
    }
}

/// How the command line runs a job: its trigger override and the stop flag.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--trigger`, when given (it wins over the configured trigger).
    pub trigger: Option<Trigger>,
    /// Raised by SIGTERM/SIGINT; jobs stop between batches.
    pub shutdown: Shutdown,
}

impl RunOptions {
    /// The trigger to run with: the command line's, else the configured one.
    pub fn trigger_or(&self, configured: Trigger) -> Trigger {
        self.trigger.unwrap_or(configured)
    }
}

/// A job that runs from the pipeline configuration until done or shut down.
pub trait PipelineJob: Sized + Send + 'static {
    /// The job's error (its [`ExitStatus`] picks the exit code).
    type Error: Display + ExitStatus;
    /// The job's name in logs, summaries and metrics.
    const NAME: &'static str;
    /// Builds the job from a validated configuration.
    fn from_config(config: PipelineConfig) -> Result<Self, Self::Error>;
    /// Runs the job to its summary.
    fn run(self, options: RunOptions) -> impl Future<Output = Result<RunSummary, Self::Error>> + Send;
}

/// The whole `main` of a pipeline job: load, build, run, summary, exit code.
pub fn run_pipeline_job<J: PipelineJob>(args: JobArgs, overrides: ConfigOverrides) -> ! {
    let telemetry = args.telemetry.clone();
    let trigger = args.trigger;
    run_job(
        J::NAME,
        &telemetry,
        move || Ok(J::from_config(args.load(overrides)?).map_err(|e| e.to_string())?),
        move |job, shutdown| job.run(RunOptions { trigger, shutdown }),
    )
}
