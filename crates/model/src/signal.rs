//! What Sightline receives and what it stores: a [`Signal`] is one of the three kinds of
//! telemetry OTLP carries; a [`Table`] is one of the tables the store keeps and SQL reads, which
//! are the three signals and the tables derived from them.

use serde::{Deserialize, Serialize};

/// A kind of telemetry that OTLP carries and the receivers accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Trace spans (`/v1/traces`).
    Spans,
    /// Log records (`/v1/logs`).
    Logs,
    /// Metric data points (`/v1/metrics`).
    Metrics,
}

impl Signal {
    /// Every signal, in the order the receivers list them.
    pub const ALL: [Signal; 3] = [Signal::Spans, Signal::Logs, Signal::Metrics];

    /// The table that holds this signal's rows.
    pub fn table(self) -> Table {
        match self {
            Self::Spans => Table::Spans,
            Self::Logs => Table::Logs,
            Self::Metrics => Table::Metrics,
        }
    }

    /// The signal's name as the tables, metrics and logs spell it (`spans`, `logs`, `metrics`).
    pub fn name(self) -> &'static str {
        self.table().name()
    }

    /// A stable one-byte tag that marks the signal of a write-ahead log record.
    pub fn tag(self) -> u8 {
        match self {
            Self::Spans => 1,
            Self::Logs => 2,
            Self::Metrics => 3,
        }
    }

    /// The signal of a log record's tag; `None` for a tag no version ever wrote.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.tag() == tag)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A table the store keeps and SQL reads: a signal's own, or one derived from spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Received spans.
    Spans,
    /// Received log records.
    Logs,
    /// Received metric data points.
    Metrics,
    /// Per-minute requests, errors and latency sketches per service and route, derived from
    /// spans as they enter the store (never received, never written to the log).
    SpanRollups,
}

impl Table {
    /// Every stored table.
    pub const ALL: [Table; 4] = [
        Table::Spans,
        Table::Logs,
        Table::Metrics,
        Table::SpanRollups,
    ];

    /// The SQL table name, also the folder name of its segments.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
            Self::SpanRollups => "span_rollups",
        }
    }

    /// The table of a SQL table name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The column that places a row in time (used for partitioning and pruning).
    pub fn time_column(self) -> &'static str {
        match self {
            Self::Spans => "start_time",
            Self::Logs | Self::Metrics | Self::SpanRollups => "time",
        }
    }

    /// The signal whose rows this table holds as received; `None` for a derived table.
    pub fn signal(self) -> Option<Signal> {
        Signal::ALL.into_iter().find(|s| s.table() == self)
    }
}

impl From<Signal> for Table {
    fn from(signal: Signal) -> Self {
        signal.table()
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_and_tables_round_trip_and_only_signals_have_tags() {
        for signal in Signal::ALL {
            assert_eq!(Signal::from_tag(signal.tag()), Some(signal));
            assert_eq!(signal.table().signal(), Some(signal));
            assert_eq!(Table::from_name(signal.name()), Some(signal.table()));
        }
        assert_eq!(Table::SpanRollups.signal(), None);
        assert_eq!(Signal::from_tag(4), None);
        for table in Table::ALL {
            assert_eq!(Table::from_name(table.name()), Some(table));
        }
    }
}
