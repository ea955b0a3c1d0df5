//! `[lake]`: where the tables live.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::values::DurationStr;
use crate::ConfigError;

/// Where tables live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// Local folder or `s3://bucket/prefix`; override with `LAKEHOUSE_LAKE_ROOT`.
    pub root: String,
    /// Extra object-store options (e.g. `AWS_REGION`); AWS credentials come from the
    /// standard chain, `AWS_ENDPOINT_URL` selects an S3-compatible endpoint.
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// Retries and timeouts of the object-store client (S3).
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[lake.store]`: how the object-store client retries and times out. A request that fails
/// with 5xx, 429, a timeout or a reset connection is retried with exponential backoff until
/// `max_retries` or `retry_timeout`; then the job fails (nothing partial is committed) and a
/// re-run continues. Defaults are object_store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Retries of one request after its first attempt.
    pub max_retries: u32,
    /// No retry starts after this long since the first attempt.
    pub retry_timeout: DurationStr,
    /// The first backoff (doubling, with jitter, up to `max_backoff`).
    pub init_backoff: DurationStr,
    /// The longest backoff.
    pub max_backoff: DurationStr,
    /// One HTTP request, its body included.
    pub request_timeout: DurationStr,
    /// Establishing a connection.
    pub connect_timeout: DurationStr,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let secs = |s| DurationStr(std::time::Duration::from_secs(s));
        Self {
            max_retries: 10,
            retry_timeout: secs(180),
            init_backoff: DurationStr(std::time::Duration::from_millis(100)),
            max_backoff: secs(15),
            request_timeout: secs(30),
            connect_timeout: secs(5),
        }
    }
}

impl StoreConfig {
    /// The delta-rs storage options that carry these settings to object_store.
    pub fn storage_options(&self) -> [(&'static str, String); 6] {
        let text = |d: DurationStr| humantime::format_duration(d.0).to_string();
        [
            ("max_retries", self.max_retries.to_string()),
            ("retry_timeout", text(self.retry_timeout)),
            ("backoff_config.init_backoff", text(self.init_backoff)),
            ("backoff_config.max_backoff", text(self.max_backoff)),
            ("timeout", text(self.request_timeout)),
            ("connect_timeout", text(self.connect_timeout)),
        ]
    }
}

impl LakeConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let root = &self.root;
        if root.trim().is_empty() {
            return Err(ConfigError::invalid("lake.root", "must be a local folder or s3://bucket/prefix"));
        }
        if root.contains("://") && !root.starts_with("s3://") && !root.starts_with("file://") {
            return Err(ConfigError::invalid(
                "lake.root",
                format!("'{root}' has an unsupported scheme: use a local path, file:// or s3://"),
            ));
        }
        Ok(())
    }

    /// Adds `[lake.store]` to the storage options the jobs pass to delta-rs; a key also set
    /// under `lake.storage_options` is an error (one place per setting).
    pub(crate) fn resolve_store(&mut self) -> Result<(), ConfigError> {
        for (key, value) in self.store.storage_options() {
            if self.storage_options.contains_key(key) {
                return Err(ConfigError::invalid(
                    format!("lake.storage_options.{key}"),
                    "is set by [lake.store]: remove it from storage_options and set it under [lake.store]",
                ));
            }
            self.storage_options.insert(key.to_string(), value);
        }
        Ok(())
    }

    /// The URL-ish location of a table path under the root.
    pub fn location(&self, path: &str) -> String {
        format!("{}/{}", self.root.trim_end_matches('/'), path.trim_start_matches('/'))
    }
}
