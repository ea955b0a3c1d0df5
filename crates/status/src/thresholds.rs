//! Limits that make `lakectl status` fail (exit 1), so it can gate a scheduled task.

use std::time::Duration;

use serde::Serialize;

use crate::PipelineStatus;

/// The limits; each is off unless set.
#[derive(Debug, Clone, Default)]
pub struct Thresholds {
    /// raw-append: messages not in the tables yet, all partitions.
    pub max_lag: Option<u64>,
    /// stream-join, merge-upsert: source versions not read yet, per source.
    pub max_versions_behind: Option<u64>,
    /// Per table: the share of files compaction would merge.
    pub max_small_file_share: Option<f64>,
    /// stream-join: how far its watermark may trail the wall clock.
    pub max_watermark_age: Option<Duration>,
    /// A process with a heartbeat file: how long ago it may have committed last (a process
    /// that never committed, or whose file cannot be read, crosses it).
    pub max_progress_age: Option<Duration>,
}

/// A limit crossed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    /// What crossed it (a job, a table, a source).
    pub what: String,
    /// The figure.
    pub value: String,
    /// The limit.
    pub limit: String,
}

impl Thresholds {
    /// The limits `status` crosses.
    pub fn check(&self, status: &PipelineStatus) -> Vec<Breach> {
        let mut breaches = Vec::new();
        let mut breach = |what: String, value: String, limit: String| breaches.push(Breach { what, value, limit });
        if let (Some(limit), Some(raw)) = (self.max_lag, &status.raw_append) {
            if let Some(error) = &raw.error {
                breach(format!("{} lag (messages)", raw.job_id), format!("unknown ({error})"), limit.to_string());
            } else if raw.lag > limit {
                breach(format!("{} lag (messages)", raw.job_id), raw.lag.to_string(), limit.to_string());
            }
        }
        for job in &status.incremental {
            for source in job.sources.iter().filter(|s| self.max_versions_behind.is_some_and(|l| s.behind > l)) {
                let limit = self.max_versions_behind.unwrap_or_default();
                breach(format!("{} behind {} (versions)", job.job, source.table), source.behind.to_string(), limit.to_string());
            }
            let age = job
                .watermark
                .as_deref()
                .and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
                .map(|w| chrono::Utc::now() - w.to_utc());
            if let (Some(limit), Some(age)) = (self.max_watermark_age, age.and_then(|a| a.to_std().ok())) {
                if age > limit {
                    breach(format!("{} watermark age", job.job), format!("{}s", age.as_secs()), format!("{}s", limit.as_secs()));
                }
            }
        }
        if let Some(limit) = self.max_progress_age {
            for p in &status.processes {
                let what = format!("{} (pid {}, {}) last commit", p.job, p.pid, p.path.display());
                match (&p.error, p.last_progress_age_secs) {
                    (Some(e), _) => breach(what, format!("unknown ({e})"), format!("{}s", limit.as_secs())),
                    (None, None) => breach(what, "never".into(), format!("{}s", limit.as_secs())),
                    (None, Some(age)) if age > limit.as_secs() => breach(what, format!("{age}s"), format!("{}s", limit.as_secs())),
                    _ => {}
                }
            }
        }
        for table in status.tables.iter().filter(|t| self.max_small_file_share.is_some_and(|l| t.small_file_share > l)) {
            let limit = self.max_small_file_share.unwrap_or_default();
            breach(format!("{} small files", table.name), format!("{:.2}", table.small_file_share), format!("{limit:.2}"));
        }
        breaches
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::SourceLag;
    use crate::{IncrementalStatus, RawAppendStatus, TableStatus};

    fn status() -> PipelineStatus {
        let source = SourceLag { table: "raw_order".into(), read_to: Some(4), version: Some(9), behind: 5 };
        PipelineStatus {
            tables: vec![TableStatus { name: "raw_order".into(), files: 10, small_files: 6, small_file_share: 0.6, ..Default::default() }],
            raw_append: Some(RawAppendStatus { job_id: "raw-append".into(), partitions: Vec::new(), lag: 120, error: None }),
            incremental: vec![IncrementalStatus {
                job: "stream-join".into(),
                batch: 3,
                done: true,
                sources: vec![source],
                watermark: Some("2022-04-04T12:00:00+00:00".into()),
                tombstones: None,
            }],
            processes: Vec::new(),
            breaches: Vec::new(),
        }
    }

    #[test]
    fn only_set_limits_that_are_crossed_are_breaches() {
        assert!(Thresholds::default().check(&status()).is_empty(), "no limit set");
        let loose = Thresholds { max_lag: Some(120), max_versions_behind: Some(5), max_small_file_share: Some(0.6), ..Default::default() };
        assert!(loose.check(&status()).is_empty(), "limits are inclusive");
        let tight = Thresholds {
            max_lag: Some(100),
            max_versions_behind: Some(4),
            max_small_file_share: Some(0.5),
            max_watermark_age: Some(Duration::from_secs(3600)),
            max_progress_age: None,
        };
        let what: Vec<String> = tight.check(&status()).into_iter().map(|b| b.what).collect();
        assert_eq!(
            what,
            ["raw-append lag (messages)", "stream-join behind raw_order (versions)", "stream-join watermark age", "raw_order small files"]
        );
    }

    #[test]
    fn a_lag_that_cannot_be_measured_crosses_a_lag_limit() {
        let mut down = status();
        down.raw_append =
            Some(RawAppendStatus { job_id: "raw-append".into(), partitions: Vec::new(), lag: 0, error: Some("no broker".into()) });
        let limited = Thresholds { max_lag: Some(1_000_000), ..Default::default() };
        assert_eq!(limited.check(&down)[0].value, "unknown (no broker)");
        assert!(Thresholds::default().check(&down).is_empty(), "without a lag limit the tables still show");
    }

    #[test]
    fn a_process_that_has_not_committed_within_the_limit_crosses_it() {
        let process = |age: Option<u64>, error: Option<&str>| crate::ProcessStatus {
            path: "/tmp/h.json".into(),
            job: "raw-append".into(),
            pid: 7,
            heartbeat_age_secs: 1,
            last_progress_age_secs: age,
            last_summary: None,
            error: error.map(String::from),
        };
        let mut s = status();
        s.processes = vec![process(Some(60), None), process(Some(61), None), process(None, None), process(None, Some("gone"))];
        let limited = Thresholds { max_progress_age: Some(Duration::from_secs(60)), ..Default::default() };
        let values: Vec<String> = limited.check(&s).into_iter().map(|b| b.value).collect();
        assert_eq!(values, ["61s", "never", "unknown (gone)"]);
    }
}
