//! The three kinds of telemetry Sightline receives, and the tables it stores them in (those three
//! and the span rollups derived from spans).

use serde::{Deserialize, Serialize};

/// A signal, and the SQL table that holds it. [`Signal::SpanRollups`] is not received: the store
/// derives it from spans (per-minute requests, errors and latency sketches per service and route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Spans,
    Logs,
    Metrics,
    SpanRollups,
}

impl Signal {
    /// The signals OTLP carries.
    pub const ALL: [Signal; 3] = [Signal::Spans, Signal::Logs, Signal::Metrics];
    /// Every stored table: the three signals and the span rollups.
    pub const TABLES: [Signal; 4] = [
        Signal::Spans,
        Signal::Logs,
        Signal::Metrics,
        Signal::SpanRollups,
    ];

    /// The SQL table name, also the folder name of its segments.
    pub fn table_name(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
            Self::SpanRollups => "span_rollups",
        }
    }

    /// The column that places a row in time (used for partitioning and pruning).
    pub fn time_column(self) -> &'static str {
        match self {
            Self::Spans => "start_time",
            Self::Logs | Self::Metrics | Self::SpanRollups => "time",
        }
    }

    /// A stable one-byte tag used in the write-ahead log.
    pub fn tag(self) -> u8 {
        match self {
            Self::Spans => 1,
            Self::Logs => 2,
            Self::Metrics => 3,
            // Never written to the log (rollups are derived again from replayed spans).
            Self::SpanRollups => 4,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(Self::Spans),
            2 => Some(Self::Logs),
            3 => Some(Self::Metrics),
            _ => None,
        }
    }

    pub fn from_table_name(name: &str) -> Option<Self> {
        Self::TABLES.into_iter().find(|s| s.table_name() == name)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.table_name())
    }
}
