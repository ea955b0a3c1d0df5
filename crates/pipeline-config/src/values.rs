//! Value types the configuration file writes as text: triggers and durations.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Trigger mode of a job run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Everything available at start, in bounded batches, then exit.
    #[default]
    Once,
    /// Batches in a loop at an interval until SIGTERM/SIGINT.
    Continuous,
}

impl Trigger {
    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Self::Once => "once",
            Self::Continuous => "continuous",
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "once" => Ok(Self::Once),
            "continuous" => Ok(Self::Continuous),
            _ => Err(format!("'{s}' is not a trigger (once or continuous)")),
        }
    }
}

/// A duration written as humantime text: `"10s"`, `"2m 30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationStr(pub Duration);

impl<'de> Deserialize<'de> for DurationStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(DurationStr)
            .map_err(|e| serde::de::Error::custom(format!("'{s}' is not a duration like \"10s\" or \"5m\": {e}")))
    }
}

/// A duration that may be negative: `"-30m"`, `"1h"`, `"0s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedDuration {
    /// Microseconds (negative for `-`).
    pub micros: i64,
}

impl<'de> Deserialize<'de> for SignedDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (negative, body) = match s.trim().strip_prefix('-') {
            Some(rest) => (true, rest.trim()),
            None => (false, s.trim()),
        };
        let d = humantime::parse_duration(body)
            .map_err(|e| serde::de::Error::custom(format!("'{s}' is not a duration like \"1h\" or \"-30m\": {e}")))?;
        let micros = i64::try_from(d.as_micros()).map_err(|_| serde::de::Error::custom(format!("'{s}' is too long")))?;
        Ok(Self { micros: if negative { -micros } else { micros } })
    }
}
