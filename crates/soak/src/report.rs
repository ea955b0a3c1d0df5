//! The soak's result: what ran, what was killed, and every check.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::killer::Kills;
use crate::producer::Produced;
use crate::supervisor::LoopRuns;
use crate::SoakOptions;

/// One check of a table against its expectation.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The figures behind it.
    pub detail: String,
}

impl Check {
    pub(crate) fn new(name: &str, passed: bool, detail: String) -> Self {
        Self { name: name.to_string(), passed, detail }
    }
}

/// A soak's result (printed as JSON by `lakectl soak`).
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Whether every check held, no run ended unexpectedly and there were enough kills.
    pub passed: bool,
    /// Wall time, drain and checks included.
    pub duration_s: u64,
    /// Processes the soak SIGKILLed mid-run (seen dead by a signal), all loops.
    pub kills: u64,
    /// Kills sent, per loop.
    pub kills_sent: Kills,
    /// The kills the run needed.
    pub min_kills: u64,
    /// How each loop's runs ended.
    pub runs: BTreeMap<String, LoopRuns>,
    /// Job runs the drain took.
    pub drain_runs: u64,
    /// Messages produced.
    pub produced: Produced,
    /// The checks.
    pub checks: Vec<Check>,
}

impl SoakReport {
    pub(crate) fn new(
        options: &SoakOptions,
        kills_sent: Kills,
        runs: BTreeMap<String, LoopRuns>,
        drain_runs: u64,
        produced: Produced,
        checks: Vec<Check>,
        elapsed: Duration,
    ) -> Self {
        let kills = runs.values().map(|r| r.killed).sum();
        let clean = runs.values().all(|r| r.unexpected.is_empty());
        let passed = clean && kills >= options.min_kills && checks.iter().all(|c| c.passed);
        Self { passed, duration_s: elapsed.as_secs(), kills, kills_sent, min_kills: options.min_kills, runs, drain_runs, produced, checks }
    }
}
