//! Checks several sections share, written once.

use crate::ConfigError;

/// A job id is part of `txn` app ids (`<job_id>:...`): non-empty, without ':'.
pub(crate) fn job_id(key: &str, id: &str) -> Result<(), ConfigError> {
    if id.is_empty() || id.contains(':') {
        return Err(ConfigError::invalid(key, "must be non-empty and contain no ':' (it is part of txn app ids)"));
    }
    Ok(())
}

/// A path under the lake root: relative, non-empty, no `..`.
pub(crate) fn relative_path(key: &str, path: &str) -> Result<(), ConfigError> {
    if path.trim().is_empty() || path.split('/').any(|p| p == "..") {
        return Err(ConfigError::invalid(key, "must be a relative path under the lake root, without '..'"));
    }
    Ok(())
}

/// A count that must be above zero.
pub(crate) fn positive(key: &str, n: u64) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::invalid(key, "must be positive"));
    }
    Ok(())
}

/// Keys a section does not know (collected by a flattened catch-all map, since serde cannot
/// deny unknown fields next to a flattened struct).
pub(crate) fn no_unknown_keys(section: &str, unknown: &std::collections::BTreeMap<String, toml::Value>) -> Result<(), ConfigError> {
    match unknown.keys().next() {
        Some(k) => Err(ConfigError::invalid(format!("{section}.{k}"), "unknown key (check its spelling against schemas/pipeline.toml)")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_checks_name_the_key() {
        assert!(job_id("a.job_id", "x:y").unwrap_err().to_string().starts_with("a.job_id:"));
        assert!(job_id("a.job_id", "x").is_ok());
        assert!(relative_path("a.path", "x/../y").is_err());
        assert!(relative_path("a.path", " ").is_err());
        assert!(relative_path("a.path", "x/y").is_ok());
        assert!(positive("a.n", 0).is_err());
    }
}
