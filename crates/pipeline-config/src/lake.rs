//! `[lake]`: where the tables live.

use std::collections::BTreeMap;

use serde::Deserialize;

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

    /// The URL-ish location of a table path under the root.
    pub fn location(&self, path: &str) -> String {
        format!("{}/{}", self.root.trim_end_matches('/'), path.trim_start_matches('/'))
    }
}
