//! The store's two tables of `sightline.toml`: `[storage]` (how rows are buffered, flushed,
//! compacted and deleted) and `[retention]` (how long each table keeps its rows). Each reads its
//! own keys, fills the rest with defaults, refuses unknown keys, and checks its own rules in
//! `validate()`.

use serde::{Deserialize, Serialize};
use sightline_model::{ConfigError, HumanDuration, Lifetime, Table};

/// `[storage]`: buffering, flushing, compaction and the deletion of replaced files.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Rows wait at most this long in memory before they are written to segments.
    pub flush_interval: HumanDuration,
    /// ...or until one table's buffer holds this many rows. At least 1.
    pub flush_rows: usize,
    /// Above this many buffered bytes, new writes are refused (503, retry later).
    pub max_buffer_bytes: u64,
    /// Requests that may wait for the log writer; more are refused (429, retry later). At least 1.
    pub queue_capacity: usize,
    /// Segments with fewer rows than this are merged by compaction. At least 1.
    pub compaction_target_rows: i64,
    /// How often compaction, retention and the deletion of replaced files run. Above 0.
    pub maintenance_interval: HumanDuration,
    /// How long a replaced segment file stays on disk for the queries still reading it.
    pub delete_grace: HumanDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            flush_interval: HumanDuration::from_secs(10),
            flush_rows: 250_000,
            max_buffer_bytes: 512 * 1024 * 1024,
            queue_capacity: 1024,
            compaction_target_rows: 1_000_000,
            maintenance_interval: HumanDuration::from_secs(60),
            delete_grace: HumanDuration::from_secs(60),
        }
    }
}

impl StorageConfig {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "storage";

    /// Refuses counts that would stop the store from working (zero rows per flush, no queue,
    /// no compaction target, maintenance that never waits).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{}.{name}", Self::SECTION);
        let at_least_one = [
            ("flush_rows", self.flush_rows as i64),
            ("queue_capacity", self.queue_capacity as i64),
            ("compaction_target_rows", self.compaction_target_rows),
        ];
        for (name, value) in at_least_one {
            if value < 1 {
                return Err(ConfigError::new(
                    key(name),
                    format!("must be at least 1, not {value}"),
                ));
            }
        }
        if self.maintenance_interval.is_zero() {
            return Err(ConfigError::new(
                key("maintenance_interval"),
                "must be longer than 0s, e.g. \"60s\"",
            ));
        }
        Ok(())
    }
}

/// `[retention]`: how long each table keeps rows, by the age of their time column; `"forever"`
/// (the default) keeps everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Spans.
    pub spans: Lifetime,
    /// Log records.
    pub logs: Lifetime,
    /// Metric data points.
    pub metrics: Lifetime,
    /// Per-minute request, error and latency rollups of spans: small, so kept forever by
    /// default, for trends longer than the spans' own retention. At least as long as `spans`.
    pub span_rollups: Lifetime,
}

impl RetentionConfig {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "retention";

    /// How long `table` keeps its rows.
    pub fn of(&self, table: Table) -> Lifetime {
        match table {
            Table::Spans => self.spans,
            Table::Logs => self.logs,
            Table::Metrics => self.metrics,
            Table::SpanRollups => self.span_rollups,
        }
    }

    /// Refuses rollups kept for less time than spans: the pages count requests from rollups
    /// wherever spans are kept.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.span_rollups.outlasts(self.spans) {
            return Err(ConfigError::new(
                format!("{}.span_rollups", Self::SECTION),
                format!(
                    "({}) is shorter than retention.spans ({}): rollups must be kept at least as \
                     long as spans, since the pages count requests from them; lengthen it or \
                     leave it unset (forever)",
                    self.span_rollups, self.spans
                ),
            ));
        }
        Ok(())
    }
}

/// What a [`crate::Store`] is opened with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreOptions {
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[retention]`.
    pub retention: RetentionConfig,
    /// The latency thresholds (ns) span rollups count good requests within
    /// (`latency_thresholds_ns`, `good_within_counts`): the server passes those of its latency
    /// SLOs. Not a key of its own.
    pub latency_thresholds_ns: Vec<i64>,
    /// `[sampling]`.
    pub sampling: crate::sampling::SamplingConfig,
}

impl StoreOptions {
    /// Both tables' rules.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.storage.validate()?;
        self.retention.validate()?;
        self.sampling.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_keys_default_and_zero_counts_are_refused_with_the_key() {
        let config: StorageConfig =
            toml::from_str("flush_interval = \"2s\"\nflush_rows = 10").expect("valid keys");
        assert_eq!(config.flush_interval, HumanDuration::from_secs(2));
        assert_eq!(config.flush_rows, 10);
        assert_eq!(
            config.queue_capacity,
            StorageConfig::default().queue_capacity
        );
        assert!(toml::from_str::<StorageConfig>("flush_every = \"2s\"").is_err());
        let none = StorageConfig {
            queue_capacity: 0,
            ..StorageConfig::default()
        };
        assert_eq!(
            none.validate().map_err(|e| e.key),
            Err("storage.queue_capacity".to_string())
        );
    }

    #[test]
    fn rollups_may_not_be_kept_for_less_time_than_spans() {
        let config: RetentionConfig =
            toml::from_str("spans = \"7d\"\nspan_rollups = \"3d\"").expect("valid keys");
        let err = config.validate().expect_err("rollups too short");
        assert_eq!(
            err.to_string(),
            "config key retention.span_rollups (3d) is shorter than retention.spans (7d): rollups \
             must be kept at least as long as spans, since the pages count requests from them; \
             lengthen it or leave it unset (forever)"
        );
        let forever_spans: RetentionConfig =
            toml::from_str("span_rollups = \"400d\"").expect("valid keys");
        assert!(
            forever_spans.validate().is_err(),
            "spans kept forever outlast 400d"
        );
        let fine: RetentionConfig =
            toml::from_str("spans = \"30d\"\nlogs = \"forever\"").expect("valid keys");
        assert!(fine.validate().is_ok());
        assert_eq!(fine.of(Table::Logs), Lifetime::Forever);
        assert!(toml::from_str::<RetentionConfig>("spans = \"7 days\"").is_err());
    }
}
