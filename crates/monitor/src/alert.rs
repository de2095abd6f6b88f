//! An alert as everything past evaluation sees it: its identity (labels and the fingerprint made
//! of them), its state, its words (annotations) and where it is sent. Evaluation produces these;
//! notifications, silences, the API and the pages read them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where an alert comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An SLO's burn-rate alert.
    Slo,
    /// An `[[alert]]` rule.
    Rule,
    /// A data check.
    Check,
}

impl Source {
    /// `slo`, `rule` or `check`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slo => "slo",
            Self::Rule => "rule",
            Self::Check => "check",
        }
    }
}

/// The state of one alert instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds but not yet for the rule's `for`.
    Pending,
    /// The condition held long enough: people are told.
    Firing,
    /// The condition stopped holding (after `keep_firing_for`).
    Resolved,
    /// Too little data to say either way: neither fires nor resolves.
    NoData,
}

impl AlertState {
    /// `pending`, `firing`, `resolved` or `no_data`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::NoData => "no_data",
        }
    }

    /// The state named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Firing, Self::Resolved, Self::NoData]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// Labels: what identifies an alert and what groups and silences match.
pub type Labels = BTreeMap<String, String>;

/// Alertmanager's fingerprint of a label set: FNV-1a (64 bit) over the labels sorted by name,
/// each name and value followed by the byte 0xFF, as 16 lower-case hex digits. Equal label sets
/// have equal fingerprints, so the id of an alert is stable across restarts and versions.
pub fn fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{hash:016x}")
}

/// One alert instance as notifications, silences and the API see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// [`fingerprint`] of `labels`.
    pub id: String,
    /// Identifying labels; always `alertname`, and `service` when it has one, `severity` for
    /// SLO alerts, plus a rule's own `labels`.
    pub labels: Labels,
    /// Words for people: `summary` (one sentence with the numbers), `description`,
    /// `runbook_url` when configured.
    pub annotations: Labels,
    /// Where it is now.
    pub state: AlertState,
    /// When it began firing (or pending, while pending), ns since the epoch.
    pub starts_at_ns: i64,
    /// When it resolved; `None` while it has not.
    pub ends_at_ns: Option<i64>,
    /// The alert's page (`{external_url}/alerts/{id}`).
    pub generator_url: String,
    /// The `[[notify]]` targets it goes to.
    pub notify: Vec<String>,
}

/// One value that set an alert's bad requests apart when it began firing (a ranked
/// dimension of [`sightline_query::explain`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    /// The dimension: a promoted column by its OpenTelemetry name, or an attribute's key.
    pub key: String,
    /// The value (or the pattern of grouped values).
    pub value: String,
    /// Share of the bad requests that carry it (0 to 1).
    pub selection_share: f64,
    /// Share of the other requests that carry it.
    pub baseline_share: f64,
    /// How many times likelier a request with it is bad; `None` when every bad request has it.
    pub risk_ratio: Option<f64>,
    /// The test's p-value.
    pub p_value: f64,
    /// True when `value` is the pattern of the key's many values.
    #[serde(default)]
    pub grouped: bool,
    /// The cause in words: "91% of failing requests have service.version=1.5.0 (vs 15% of the
    /// others)".
    pub summary: String,
}

/// What was asked and found when an alert began firing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explained {
    /// The window's start (ns).
    pub start_ns: i64,
    /// The window's end (ns): when it fired.
    pub end_ns: i64,
    /// `errors` or `latency`.
    pub what: String,
    /// The service asked about.
    pub service: String,
    /// The route, when the alert watches one.
    pub route: Option<String>,
    /// For latency: the threshold in milliseconds (`None`: each route's p95).
    pub threshold_ms: Option<f64>,
    /// Bad requests in the window.
    pub bad_requests: u64,
    /// The others.
    pub other_requests: u64,
    /// The top causes, best first (at most three).
    pub causes: Vec<Cause>,
    /// The answer in words.
    pub summary: String,
}
