//! Process exit codes: distinct for "no new data" so schedulers can skip downstream work.

/// How a job run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Work was done and committed.
    Success = 0,
    /// The run failed; nothing partial was committed.
    Failure = 1,
    /// Bad command line.
    Usage = 2,
    /// Trigger-once found nothing new to process (Airflow: map to a skip).
    NoNewData = 3,
    /// Source data the job has not read is gone or replaced (Kafka retention, a recreated topic;
    /// a Delta source's log cleanup, vacuum or recreation): nothing was skipped; the message
    /// names what is gone and the fix.
    SourceDataGone = 4,
    /// The job's checkpoint is behind its output (deleted, restored from an older copy, moved)
    /// and cannot be rebuilt from it: nothing was committed; the message names the fix.
    CheckpointBehind = 5,
    /// The configuration is invalid (the message names the key).
    Config = 78,
}

impl ExitCode {
    /// The numeric code.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// Ends the process with this code.
    pub fn exit(self) -> ! {
        std::process::exit(self.code())
    }
}

/// The exit code a job's error maps to (1, "failure", unless the error says otherwise).
pub trait ExitStatus {
    /// The code the process exits with for this error.
    fn exit_code(&self) -> ExitCode {
        ExitCode::Failure
    }
}
