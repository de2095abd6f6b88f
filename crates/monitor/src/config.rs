//! The monitor's part of `sightline.toml`: `[monitor]`, `[[slo]]`, `[[alert]]` and `[[notify]]`,
//! with defaults, and [`MonitorConfig::validate`], which refuses what cannot work — a duplicate or
//! malformed name, an objective outside (0, 100), a window shorter than the evaluation interval,
//! a latency SLO without its threshold, a rule without a bound or with two, a notify target
//! nobody configured — naming the key and what was expected. The server does not read these
//! tables yet.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use sightline_model::{ConfigError, HumanDuration};

/// `[monitor]`: how often everything is evaluated and where its links point.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorSection {
    /// SLOs and rules are evaluated this often. Above 0.
    pub evaluation_interval: HumanDuration,
    /// The base of the links in notifications (the UI's address as people reach it).
    pub external_url: String,
}

impl Default for MonitorSection {
    fn default() -> Self {
        Self {
            evaluation_interval: HumanDuration::from_secs(30),
            external_url: "http://127.0.0.1:4319".into(),
        }
    }
}

/// What an SLO counts as a good request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// A request that did not fail.
    Availability,
    /// A request that did not fail and took at most `threshold`.
    Latency,
}

/// `[[slo]]`: a service-level objective.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Unique among SLOs; lower-case letters, digits, `_`, `.` and `-`.
    pub name: String,
    /// The service whose requests count.
    pub service: String,
    /// Only this route (as `span_rollups.route`: `http.route`, else the span name).
    pub route: Option<String>,
    /// Only this HTTP method.
    pub method: Option<String>,
    /// What a good request is.
    pub indicator: Indicator,
    /// For `latency`: the slowest a good request may take.
    pub threshold: Option<HumanDuration>,
    /// Percent of requests that must be good, above 0 and below 100.
    pub objective: f64,
    /// The rolling window the objective is measured over (default 30 days).
    #[serde(default = "default_slo_window")]
    pub window: HumanDuration,
    /// Carried by the SLO's alerts.
    pub runbook_url: Option<String>,
    /// Where its alerts go (names of `[[notify]]`); default: every one.
    pub notify: Option<Vec<String>>,
    /// Fewer requests than this in an alert's long window: no page or ticket, so that one
    /// failure of a quiet route does not wake anyone.
    #[serde(default = "default_slo_min_requests")]
    pub min_requests: u64,
}

fn default_slo_min_requests() -> u64 {
    100
}

fn default_slo_window() -> HumanDuration {
    HumanDuration::from_secs(30 * 86_400)
}

/// What an alert rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// Failed requests over all requests, from 0 to 1.
    ErrorRate,
    /// Requests per second.
    RequestRate,
    /// The median latency, in seconds.
    P50,
    /// The 95th percentile latency, in seconds.
    P95,
    /// The 99th percentile latency, in seconds.
    P99,
    /// A read-only SQL query: its numeric column `value`, one instance per row.
    Sql,
}

/// What a rule does when it has no data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NoData {
    /// Say so: the instance is in `no_data`, neither firing nor resolved.
    #[default]
    NoData,
    /// Treat it as fine.
    Ok,
    /// Treat it as firing.
    Firing,
}

/// `[[alert]]`: a rule.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Unique among rules; lower-case letters, digits, `_`, `.` and `-`.
    pub name: String,
    /// Only this service; without it, one instance per service.
    pub service: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Only this HTTP method.
    pub method: Option<String>,
    /// What is measured.
    pub measure: Measure,
    /// For `sql`: the query.
    pub sql: Option<String>,
    /// The span of time measured.
    #[serde(default = "default_alert_window")]
    pub window: HumanDuration,
    /// Fires above this (a ratio to the baseline when `baseline` is set).
    pub above: Option<f64>,
    /// Fires below this (a ratio to the baseline when `baseline` is set).
    pub below: Option<f64>,
    /// Compare with the same window this long ago.
    pub baseline: Option<HumanDuration>,
    /// How long the condition must hold before the rule fires (pending until then).
    #[serde(rename = "for", default)]
    pub for_: HumanDuration,
    /// How long a resolved condition keeps firing, so a flapping value pages once.
    #[serde(default)]
    pub keep_firing_for: HumanDuration,
    /// Fewer requests in the window: no verdict.
    #[serde(default)]
    pub min_requests: u64,
    /// What no data means.
    #[serde(default)]
    pub no_data: NoData,
    /// Carried by its alerts.
    pub runbook_url: Option<String>,
    /// Added to its alerts' labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Where its alerts go (names of `[[notify]]`); default: every one.
    pub notify: Option<Vec<String>>,
}

fn default_alert_window() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// How a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyKind {
    /// Alertmanager's webhook payload (version "4").
    Webhook,
    /// A Slack incoming webhook.
    Slack,
}

/// `[[notify]]`: where alerts are sent, and how they are grouped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Unique among targets; what `notify = [...]` names.
    pub name: String,
    /// The payload.
    pub kind: NotifyKind,
    /// Where it is posted (http or https).
    pub url: String,
    /// Headers sent with every post.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Alerts sharing these labels' values go in one notification.
    #[serde(default = "default_group_by")]
    pub group_by: Vec<String>,
    /// How long a new group waits for more alerts before its first notification.
    #[serde(default = "default_group_wait")]
    pub group_wait: HumanDuration,
    /// How long a group waits before telling of alerts added to it.
    #[serde(default = "default_group_interval")]
    pub group_interval: HumanDuration,
    /// How long before a group still firing is told again.
    #[serde(default = "default_repeat_interval")]
    pub repeat_interval: HumanDuration,
    /// Whether resolved alerts are told too.
    #[serde(default = "yes")]
    pub send_resolved: bool,
}

fn default_group_by() -> Vec<String> {
    vec!["alertname".into(), "service".into()]
}
fn default_group_wait() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_group_interval() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn default_repeat_interval() -> HumanDuration {
    HumanDuration::from_secs(4 * 3600)
}
fn yes() -> bool {
    true
}

/// Everything the monitor reads from `sightline.toml`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MonitorConfig {
    /// `[monitor]`.
    pub monitor: MonitorSection,
    /// `[[slo]]`.
    pub slos: Vec<SloConfig>,
    /// `[[alert]]`.
    pub alerts: Vec<AlertConfig>,
    /// `[[notify]]`.
    pub notify: Vec<NotifyConfig>,
    /// `[[check]]`: data checks on what services emit.
    pub checks: Vec<crate::check::CheckConfig>,
}

/// Whether `name` is lower-case letters, digits, `_`, `.` and `-`, and not empty.
fn well_formed(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

impl MonitorConfig {
    /// The thresholds of the latency SLOs (ns), each once: span rollups count good requests
    /// within them.
    pub fn latency_thresholds_ns(&self) -> Vec<i64> {
        let mut out: Vec<i64> = self
            .slos
            .iter()
            .filter(|s| s.indicator == Indicator::Latency)
            .filter_map(|s| s.threshold.map(HumanDuration::as_nanos))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Whether anything is configured to be watched.
    pub fn is_empty(&self) -> bool {
        self.slos.is_empty() && self.alerts.is_empty() && self.checks.is_empty()
    }

    /// Refuses what cannot work, naming the key (`slo[2].objective`) and what was expected.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let interval = self.monitor.evaluation_interval;
        if interval.is_zero() {
            return Err(ConfigError::new(
                "monitor.evaluation_interval",
                "must be longer than 0s, e.g. \"30s\"",
            ));
        }
        let targets: HashSet<&str> = self.notify.iter().map(|n| n.name.as_str()).collect();
        let names = |table: &str, names: Vec<&str>| -> Result<(), ConfigError> {
            let mut seen = HashSet::new();
            for (i, name) in names.into_iter().enumerate() {
                if !well_formed(name) {
                    return Err(ConfigError::new(
                        format!("{table}[{i}].name"),
                        format!(
                            "must be lower-case letters, digits, '_', '.' or '-', not {name:?}"
                        ),
                    ));
                }
                if !seen.insert(name) {
                    return Err(ConfigError::new(
                        format!("{table}[{i}].name"),
                        format!("{name:?} is used twice; every {table} needs its own name"),
                    ));
                }
            }
            Ok(())
        };
        names("slo", self.slos.iter().map(|s| s.name.as_str()).collect())?;
        names(
            "alert",
            self.alerts.iter().map(|a| a.name.as_str()).collect(),
        )?;
        names(
            "notify",
            self.notify.iter().map(|n| n.name.as_str()).collect(),
        )?;
        names(
            "check",
            self.checks.iter().map(|c| c.name.as_str()).collect(),
        )?;
        let known = |key: String, notify: &Option<Vec<String>>| -> Result<(), ConfigError> {
            for target in notify.iter().flatten() {
                if !targets.contains(target.as_str()) {
                    let mut configured: Vec<&str> = targets.iter().copied().collect();
                    configured.sort_unstable();
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "names {target:?}, which no [[notify]] is called; configured: {}",
                            if configured.is_empty() {
                                "none".to_string()
                            } else {
                                configured.join(", ")
                            }
                        ),
                    ));
                }
            }
            Ok(())
        };
        let at_least_interval = |key: String, window: HumanDuration| {
            if window < interval {
                Err(ConfigError::new(
                    key,
                    format!("({window}) must be at least monitor.evaluation_interval ({interval})"),
                ))
            } else {
                Ok(())
            }
        };
        for (i, slo) in self.slos.iter().enumerate() {
            let key = |field: &str| format!("slo[{i}].{field}");
            if !(slo.objective > 0.0 && slo.objective < 100.0) {
                return Err(ConfigError::new(
                    key("objective"),
                    format!(
                        "must be a percentage above 0 and below 100, like 99.9, not {}",
                        slo.objective
                    ),
                ));
            }
            at_least_interval(key("window"), slo.window)?;
            match (slo.indicator, slo.threshold) {
                (Indicator::Latency, None) => {
                    return Err(ConfigError::new(
                        key("threshold"),
                        "is needed by indicator = \"latency\": the slowest a good request may take, like \"300ms\"",
                    ));
                }
                (Indicator::Latency, Some(t)) if t.is_zero() => {
                    return Err(ConfigError::new(key("threshold"), "must be longer than 0s"));
                }
                (Indicator::Availability, Some(_)) => {
                    return Err(ConfigError::new(
                        key("threshold"),
                        "belongs to indicator = \"latency\"; an availability SLO counts failures only",
                    ));
                }
                _ => {}
            }
            known(key("notify"), &slo.notify)?;
        }
        for (i, check) in self.checks.iter().enumerate() {
            check.validate(i)?;
            known(format!("check[{i}].notify"), &check.notify)?;
        }
        for (i, rule) in self.alerts.iter().enumerate() {
            let key = |field: &str| format!("alert[{i}].{field}");
            at_least_interval(key("window"), rule.window)?;
            match (rule.above, rule.below) {
                (None, None) => {
                    return Err(ConfigError::new(
                        key("above"),
                        "or below is needed: the bound the measure is compared with",
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        key("below"),
                        "and above cannot both be set; make two rules",
                    ));
                }
                _ => {}
            }
            match (rule.measure, rule.sql.as_deref()) {
                (Measure::Sql, None) => {
                    return Err(ConfigError::new(
                        key("sql"),
                        "is needed by measure = \"sql\": a read-only query with a numeric column `value`",
                    ));
                }
                (Measure::Sql, Some(_)) if rule.baseline.is_some() => {
                    return Err(ConfigError::new(
                        key("baseline"),
                        "belongs to the span measures (error_rate, request_rate, p50, p95, p99); a sql rule compares its value with above or below",
                    ));
                }
                (Measure::Sql, Some(_)) => {}
                (_, Some(_)) => {
                    return Err(ConfigError::new(key("sql"), "belongs to measure = \"sql\""));
                }
                _ => {}
            }
            if rule.baseline.is_some_and(HumanDuration::is_zero) {
                return Err(ConfigError::new(
                    key("baseline"),
                    "must be longer than 0s, like \"7d\" (the same window a week ago)",
                ));
            }
            known(key("notify"), &rule.notify)?;
        }
        let url = &self.monitor.external_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(
                "monitor.external_url",
                format!(
                    "must be an http:// or https:// URL (the UI as people reach it), not {url:?}"
                ),
            ));
        }
        for (i, target) in self.notify.iter().enumerate() {
            if !(target.url.starts_with("http://") || target.url.starts_with("https://")) {
                return Err(ConfigError::new(
                    format!("notify[{i}].url"),
                    format!("must be an http:// or https:// URL, not {:?}", target.url),
                ));
            }
            crate::notify::check_headers(i, target)?;
            if target.group_interval.is_zero() {
                return Err(ConfigError::new(
                    format!("notify[{i}].group_interval"),
                    "must be longer than 0s, like \"5m\"",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables as a file would hold them.
    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        monitor: MonitorSection,
        #[serde(default)]
        slo: Vec<SloConfig>,
        #[serde(default)]
        alert: Vec<AlertConfig>,
        #[serde(default)]
        notify: Vec<NotifyConfig>,
        #[serde(default)]
        check: Vec<crate::check::CheckConfig>,
    }

    fn parse(text: &str) -> MonitorConfig {
        let file: File = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        MonitorConfig {
            monitor: file.monitor,
            slos: file.slo,
            alerts: file.alert,
            notify: file.notify,
            checks: file.check,
        }
    }

    const GOOD: &str = r#"
[monitor]
evaluation_interval = "30s"

[[slo]]
name = "orders-availability"
service = "orders"
route = "/orders"
indicator = "availability"
objective = 99.9
notify = ["oncall"]

[[slo]]
name = "orders-latency"
service = "orders"
indicator = "latency"
threshold = "300ms"
objective = 99
window = "7d"

[[alert]]
name = "orders-errors"
service = "orders"
measure = "error_rate"
window = "5m"
above = 0.05
for = "2m"
keep_firing_for = "5m"
min_requests = 20
labels = { team = "payments" }
notify = ["oncall"]

[[alert]]
name = "error-logs"
measure = "sql"
sql = "SELECT service_name, count(*) AS value FROM logs GROUP BY 1"
above = 1.5

[[notify]]
name = "oncall"
kind = "webhook"
url = "http://127.0.0.1:9000/hook"
"#;

    #[test]
    fn a_full_config_reads_with_its_defaults() {
        let config = parse(GOOD);
        config.validate().expect("valid");
        assert_eq!(config.slos[0].window, HumanDuration::from_secs(30 * 86_400));
        assert_eq!(
            config.slos[1].threshold,
            Some(HumanDuration::from_nanos(300_000_000))
        );
        assert_eq!(config.alerts[0].for_, HumanDuration::from_secs(120));
        assert_eq!(config.alerts[1].window, HumanDuration::from_secs(300));
        assert_eq!(config.alerts[1].no_data, NoData::NoData);
        let oncall = &config.notify[0];
        assert_eq!(oncall.group_by, vec!["alertname", "service"]);
        assert_eq!(oncall.repeat_interval, HumanDuration::from_secs(4 * 3600));
        assert!(oncall.send_resolved);
    }

    #[test]
    fn what_cannot_work_is_refused_with_the_key_and_what_was_expected() {
        for (change, key, says) in [
            (
                ("objective = 99.9", "objective = 100"),
                "slo[0].objective",
                "below 100",
            ),
            (
                ("objective = 99.9", "objective = 0"),
                "slo[0].objective",
                "above 0",
            ),
            (
                ("window = \"7d\"", "window = \"10s\""),
                "slo[1].window",
                "evaluation_interval",
            ),
            (
                ("threshold = \"300ms\"\n", ""),
                "slo[1].threshold",
                "latency",
            ),
            (
                (
                    "name = \"orders-latency\"",
                    "name = \"orders-availability\"",
                ),
                "slo[1].name",
                "used twice",
            ),
            (
                ("name = \"orders-errors\"", "name = \"Orders Errors\""),
                "alert[0].name",
                "lower-case",
            ),
            (("above = 0.05\n", ""), "alert[0].above", "or below"),
            (
                ("above = 0.05", "above = 0.05\nbelow = 0.01"),
                "alert[0].below",
                "cannot both",
            ),
            (
                ("sql = \"SELECT", "# sql = \"SELECT"),
                "alert[1].sql",
                "read-only",
            ),
            (
                (
                    "notify = [\"oncall\"]\n\n[[alert]]",
                    "notify = [\"pager\"]\n\n[[alert]]",
                ),
                "alert[0].notify",
                "\"pager\"",
            ),
            (
                ("url = \"http://", "url = \"ftp://"),
                "notify[0].url",
                "http",
            ),
            (
                ("above = 1.5\n", "above = 1.5\nbaseline = \"7d\"\n"),
                "alert[1].baseline",
                "span measures",
            ),
            (
                (
                    "url = \"http://127.0.0.1:9000/hook\"",
                    "url = \"http://127.0.0.1:9000/hook\"\nheaders = { \"bad header\" = \"x\" }",
                ),
                "notify[0].headers",
                "HTTP header name",
            ),
            (
                (
                    "url = \"http://127.0.0.1:9000/hook\"",
                    "url = \"http://127.0.0.1:9000/hook\"\ngroup_interval = \"0s\"",
                ),
                "notify[0].group_interval",
                "longer than 0s",
            ),
        ] {
            let (from, to) = change;
            assert!(GOOD.contains(from), "{from}");
            let config = parse(&GOOD.replacen(from, to, 1));
            let err = config.validate().expect_err(key);
            assert_eq!(err.key, key, "{err}");
            assert!(err.message.contains(says), "{key}: {err}");
        }
    }
}
