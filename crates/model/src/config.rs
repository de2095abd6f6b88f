//! How a config mistake is reported: every library crate's `validate()` answers with a
//! [`ConfigError`] that names the key (`storage.flush_rows`) and says what was expected, so the
//! server refuses to start with a message the operator can act on.

use std::fmt;

/// A config value that breaks its key's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key as written in `sightline.toml`, with its table (`retention.span_rollups`).
    pub key: String,
    /// What is wrong and what is expected, read after the key ("must be at least 1, not 0").
    pub message: String,
}

impl ConfigError {
    /// An error of `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config key {} {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}
