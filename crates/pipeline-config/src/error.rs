use std::path::PathBuf;

/// A configuration problem, always naming the offending key and, where it helps, the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration or a schema file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the expected shape.
    #[error("{path}: {message}")]
    Parse {
        /// The file that failed to parse.
        path: PathBuf,
        /// The parser's message (it names the key and line).
        message: String,
    },
    /// A value is present but wrong.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `tables.raw_order.partitions[0].format`.
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { key: key.into(), message: message.into() }
    }
}
