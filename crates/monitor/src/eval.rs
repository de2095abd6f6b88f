//! One evaluation: every SLO's numbers (SLI, budget left, burn rates, time to exhaustion) and a
//! [`Verdict`] for every alert instance — the SLOs' page and ticket alerts by the workbook's
//! multi-window table, and the rules' instances (one per service when a rule names none, one
//! per row of a SQL rule) — from one read of `span_rollups` (and one per SQL rule).

use std::collections::{BTreeSet, HashMap};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use serde::Serialize;
use sightline_query::QueryEngine;
use sightline_query::explain::What;

use crate::alert::{Labels, Source, fingerprint};
use crate::budget::{
    self, BurnWindow, Counts, REPORT_WINDOWS, Severity, Verdict as Burn, alert_windows,
};
use crate::config::{AlertConfig, Indicator, Measure, MonitorConfig, NoData, SloConfig};
use crate::error::Error;
use crate::measure::{self, CountTable, Window, WindowCounts};
use crate::state::{Instance, Timing, Verdict};

const NS_PER_SECOND: i64 = 1_000_000_000;
const NS_PER_MINUTE: i64 = 60 * NS_PER_SECOND;

/// An SLO's numbers at one evaluation, as `GET /api/v1/slos` answers them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloStatus {
    /// Its name.
    pub name: String,
    /// The service whose requests count.
    pub service: String,
    /// Only this route, if set.
    pub route: Option<String>,
    /// Only this method, if set.
    pub method: Option<String>,
    /// `availability` or `latency`.
    pub indicator: Indicator,
    /// For latency: the threshold in milliseconds.
    pub threshold_ms: Option<f64>,
    /// Percent of requests that must be good.
    pub objective: f64,
    /// The rolling window, as configured (`30d`).
    pub window: String,
    /// Good requests over the window.
    pub good: u64,
    /// Requests over the window.
    pub total: u64,
    /// Of `total`, requests whose goodness was estimated from the latency sketch (stored
    /// before the threshold was configured); 0 when every count is exact.
    pub estimated: u64,
    /// Good over total, from 0 to 1; `None` without requests.
    pub sli: Option<f64>,
    /// The share of the window's error budget left (1 = untouched, below 0 = overspent).
    pub budget_remaining: Option<f64>,
    /// Burn rates over 5m, 30m, 1h, 6h, 1d and 3d (`None` without requests).
    pub burn_rates: BurnRates,
    /// Seconds until the budget is gone at the last hour's burn rate; `None` when nothing
    /// burns.
    pub exhaustion_s: Option<f64>,
    /// `ok`, `pending`, `firing` or `no_data`: the worst of its alerts.
    pub state: String,
    /// Its runbook.
    pub runbook_url: Option<String>,
}

/// Burn rates by report window, shortest first (`5m` … `3d`); as JSON, an object in that order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BurnRates(pub Vec<(String, Option<f64>)>);

impl BurnRates {
    /// The burn rate over `window` (`"1h"`), if it had requests.
    pub fn get(&self, window: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|(w, _)| w == window)
            .and_then(|(_, b)| *b)
    }

    /// Every window with its burn rate, shortest first.
    pub fn iter(&self) -> impl Iterator<Item = &(String, Option<f64>)> {
        self.0.iter()
    }
}

impl FromIterator<(String, Option<f64>)> for BurnRates {
    fn from_iter<I: IntoIterator<Item = (String, Option<f64>)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl std::ops::Index<&str> for BurnRates {
    type Output = Option<f64>;

    /// The burn rate over `window`; `None` for a window without requests or not reported.
    fn index(&self, window: &str) -> &Option<f64> {
        self.0
            .iter()
            .find(|(w, _)| w == window)
            .map_or(&None, |(_, b)| b)
    }
}

impl Serialize for BurnRates {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (window, burn) in &self.0 {
            map.serialize_entry(window, burn)?;
        }
        map.end()
    }
}

/// An alert instance to evaluate: who it is and what it says, besides its verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Its fingerprint.
    pub id: String,
    /// The rule's or SLO's name.
    pub name: String,
    /// Rule or SLO.
    pub source: Source,
    /// Identifying labels.
    pub labels: Labels,
    /// Its runbook.
    pub runbook_url: Option<String>,
    /// Where its notifications go (`None`: every target).
    pub notify: Option<Vec<String>>,
    /// What this evaluation says.
    pub verdict: Verdict,
    /// How verdicts become states.
    pub timing: Timing,
    /// The service and route it watches (for its page's requests and logs).
    pub service: Option<String>,
    /// What to explain when it begins firing; `None` when it watches no service.
    pub ask: Option<Ask>,
}

/// The explanation an alert asks for when it begins firing: which requests are bad, where.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    /// The service.
    pub service: String,
    /// Its route, when the alert watches one.
    pub route: Option<String>,
    /// Failing or slow requests.
    pub what: What,
    /// For latency: slower than this is bad (`None`: each route's p95).
    pub threshold_ns: Option<i64>,
    /// The window explained, ending at the firing.
    pub window_ns: i64,
}

/// The shortest window an alert's explanation looks at: enough requests to rank dimensions.
pub const MIN_EXPLAIN_WINDOW_NS: i64 = 15 * NS_PER_MINUTE;
/// The longest: older requests say little about what is failing now.
pub const MAX_EXPLAIN_WINDOW_NS: i64 = 60 * NS_PER_MINUTE;

impl Ask {
    /// An SLO's: its service and route, its bad requests by its indicator, over the last
    /// half hour.
    fn of_slo(slo: &SloConfig) -> Self {
        let (what, threshold_ns) = match slo.indicator {
            Indicator::Availability => (What::Errors, None),
            Indicator::Latency => (What::Latency, slo.threshold.map(|t| t.as_nanos())),
        };
        Self {
            service: slo.service.clone(),
            route: slo.route.clone(),
            what,
            threshold_ns,
            window_ns: 30 * NS_PER_MINUTE,
        }
    }

    /// A rule's on `service`: latency measures explain slow requests (slower than the rule's
    /// `above`, or than the route's p95 when it compares with a baseline), the others failing
    /// ones; over the rule's window, clamped.
    fn of_rule(rule: &AlertConfig, service: String) -> Self {
        let (what, threshold_ns) = match rule.measure {
            Measure::P50 | Measure::P95 | Measure::P99 => (
                What::Latency,
                rule.above
                    .filter(|_| rule.baseline.is_none())
                    .map(|s| (s * NS_PER_SECOND as f64) as i64),
            ),
            Measure::ErrorRate | Measure::RequestRate | Measure::Sql => (What::Errors, None),
        };
        Self {
            service,
            route: rule.route.clone(),
            what,
            threshold_ns,
            window_ns: rule
                .window
                .as_nanos()
                .clamp(MIN_EXPLAIN_WINDOW_NS, MAX_EXPLAIN_WINDOW_NS),
        }
    }
}

/// One evaluation's results.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    /// Every SLO (state filled in by the caller once its alerts have stepped).
    pub slos: Vec<SloStatus>,
    /// Every instance evaluated.
    pub found: Vec<Found>,
    /// Rules whose query failed, with why (their instances keep their state).
    pub failed_rules: Vec<(String, String)>,
}

/// Words for a selection: `orders POST /orders`.
pub fn selection(service: &str, route: Option<&str>, method: Option<&str>) -> String {
    let mut out = service.to_string();
    if let Some(method) = method {
        out.push(' ');
        out.push_str(&method.to_ascii_uppercase());
    }
    if let Some(route) = route {
        out.push(' ');
        out.push_str(route);
    }
    out
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 0.1 {
        format!("{p:.3}%")
    } else if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

fn times(ratio: f64) -> String {
    if !ratio.is_finite() {
        "∞×".into()
    } else if ratio < 10.0 {
        format!("{ratio:.1}×")
    } else {
        format!("{ratio:.0}×")
    }
}

fn millis(seconds: f64) -> String {
    let ms = seconds * 1000.0;
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else if ms < 10_000.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.1}s", seconds)
    }
}

/// The windows every SLO needs: the report windows, its own, and its alert table's.
fn slo_windows(config: &MonitorConfig) -> BTreeSet<Window> {
    let mut out = BTreeSet::new();
    for slo in &config.slos {
        out.extend(REPORT_WINDOWS.iter().map(|w| Window::last(w.as_nanos())));
        out.insert(Window::last(slo.window.as_nanos()));
        for row in alert_windows(slo.window) {
            out.insert(Window::last(row.long.as_nanos()));
            out.insert(Window::last(row.short.as_nanos()));
        }
    }
    out
}

fn rule_windows(rule: &AlertConfig) -> Vec<Window> {
    let mut out = vec![Window::last(rule.window.as_nanos())];
    if let Some(baseline) = rule.baseline {
        out.push(Window {
            length_ns: rule.window.as_nanos(),
            offset_ns: baseline.as_nanos(),
        });
    }
    out
}

/// How much time a window's minutes cover at `now_ns`: from the first whole minute in it to its
/// end (so a rate over a window is per second of what it holds).
fn covered_seconds(window: Window, now_ns: i64) -> f64 {
    let end = now_ns - window.offset_ns;
    let first = -(-(end - window.length_ns)).div_euclid(NS_PER_MINUTE) * NS_PER_MINUTE;
    ((end - first).max(NS_PER_SECOND)) as f64 / 1e9
}

/// Evaluates every SLO and rule of `config` at `now_ns`. `known` are the instances watched so
/// far: a rule's instance whose service stopped sending is still evaluated (to `no_data`).
pub async fn evaluate(
    engine: &QueryEngine,
    config: &MonitorConfig,
    now_ns: i64,
    known: &[Instance],
) -> Result<Evaluation, Error> {
    let mut windows = slo_windows(config);
    let mut percentile_windows = BTreeSet::new();
    for rule in &config.alerts {
        match rule.measure {
            Measure::ErrorRate | Measure::RequestRate => windows.extend(rule_windows(rule)),
            Measure::P50 | Measure::P95 | Measure::P99 => {
                // The request counts guard percentiles too.
                windows.extend(rule_windows(rule));
                percentile_windows.extend(rule_windows(rule));
            }
            Measure::Sql => {}
        }
    }
    let windows: Vec<Window> = windows.into_iter().collect();
    let percentile_windows: Vec<Window> = percentile_windows.into_iter().collect();
    let thresholds = config.latency_thresholds_ns();
    let every_service = config
        .alerts
        .iter()
        .any(|r| r.service.is_none() && r.measure != Measure::Sql);
    let services: Option<Vec<String>> = (!every_service).then(|| {
        let mut s: Vec<String> = config
            .slos
            .iter()
            .map(|s| s.service.clone())
            .chain(config.alerts.iter().filter_map(|r| r.service.clone()))
            .collect();
        s.sort();
        s.dedup();
        s
    });
    let table = measure::counts(engine, now_ns, &windows, &thresholds, services.as_deref()).await?;
    let sketches = if percentile_windows.is_empty() {
        Default::default()
    } else {
        measure::sketches(engine, now_ns, &percentile_windows, services.as_deref()).await?
    };

    let mut out = Evaluation::default();
    for slo in &config.slos {
        let (status, found) = evaluate_slo(slo, &table);
        out.slos.push(status);
        out.found.extend(found);
    }
    // Each distinct query once per cycle, the distinct ones side by side (the engine's gate
    // decides how many run at once).
    let mut texts: Vec<&str> = config
        .alerts
        .iter()
        .filter_map(|r| r.sql.as_deref())
        .collect();
    texts.sort_unstable();
    texts.dedup();
    let answers = futures::future::join_all(
        texts
            .iter()
            .map(|sql| async move { (*sql, engine.collect(sql, MAX_SQL_ROWS).await) }),
    )
    .await;
    let answers: HashMap<&str, SqlAnswer> = answers
        .into_iter()
        .map(|(sql, answer)| (sql, answer.map(|(schema, batches, _)| (schema, batches))))
        .collect();
    out.found
        .extend(crate::check::evaluate(engine, &config.checks, now_ns).await);
    for rule in &config.alerts {
        match rule.measure {
            Measure::Sql => match evaluate_sql(rule, &answers, known) {
                Ok(found) => out.found.extend(found),
                Err(e) => out.failed_rules.push((rule.name.clone(), e.to_string())),
            },
            _ => out.found.extend(evaluate_rule(
                rule,
                &table,
                &sketches,
                &percentile_windows,
                now_ns,
                known,
            )),
        }
    }
    Ok(out)
}

fn slo_counts(slo: &SloConfig, table: &CountTable, window: Window) -> (Counts, u64) {
    let Some(w) = table.window_index(window) else {
        return (Counts::default(), 0);
    };
    let c: WindowCounts = table.sum(w, &slo.service, slo.route.as_deref(), slo.method.as_deref());
    let total = c.requests.max(0) as u64;
    match (slo.indicator, slo.threshold) {
        (Indicator::Latency, Some(threshold)) => {
            let Some(j) = table.threshold_index(threshold.as_nanos()) else {
                return (Counts { good: 0, total }, total);
            };
            let within = c.within[j];
            let good = (within.good + within.estimated_good).clamp(0, c.requests) as u64;
            (Counts { good, total }, within.uncounted.max(0) as u64)
        }
        _ => (
            Counts {
                good: (c.requests - c.errors).max(0) as u64,
                total,
            },
            0,
        ),
    }
}

fn bad_words(slo: &SloConfig) -> String {
    match (slo.indicator, slo.threshold) {
        (Indicator::Latency, Some(t)) => format!("were slower than {t} or failed"),
        _ => "failed".into(),
    }
}

fn evaluate_slo(slo: &SloConfig, table: &CountTable) -> (SloStatus, Vec<Found>) {
    let (whole, estimated) = slo_counts(slo, table, Window::last(slo.window.as_nanos()));
    let burn_rates: BurnRates = REPORT_WINDOWS
        .iter()
        .map(|w| {
            let (counts, _) = slo_counts(slo, table, Window::last(w.as_nanos()));
            (w.to_string(), budget::burn_rate(counts, slo.objective))
        })
        .collect();
    let remaining = budget::budget_remaining(whole, slo.objective);
    let hour_burn = burn_rates.get("1h");
    let exhaustion_s = match (remaining, hour_burn) {
        (Some(r), Some(b)) => {
            budget::time_to_exhaustion(r, b, slo.window).map(|d| d.as_nanos() as f64 / 1e9)
        }
        _ => None,
    };
    let status = SloStatus {
        name: slo.name.clone(),
        service: slo.service.clone(),
        route: slo.route.clone(),
        method: slo.method.clone(),
        indicator: slo.indicator,
        threshold_ms: slo.threshold.map(|t| t.as_nanos() as f64 / 1e6),
        objective: slo.objective,
        window: slo.window.to_string(),
        good: whole.good,
        total: whole.total,
        estimated,
        sli: whole.sli(),
        budget_remaining: remaining,
        burn_rates,
        exhaustion_s,
        state: "ok".into(),
        runbook_url: slo.runbook_url.clone(),
    };
    let rows = alert_windows(slo.window);
    let what = selection(&slo.service, slo.route.as_deref(), slo.method.as_deref());
    let mut found = Vec::new();
    for severity in [Severity::Page, Severity::Ticket] {
        let mine: Vec<&BurnWindow> = rows.iter().filter(|r| r.severity == severity).collect();
        let mut labels = Labels::new();
        labels.insert("alertname".into(), slo.name.clone());
        labels.insert("service".into(), slo.service.clone());
        if let Some(route) = &slo.route {
            labels.insert("route".into(), route.clone());
        }
        if let Some(method) = &slo.method {
            labels.insert("method".into(), method.to_ascii_uppercase());
        }
        labels.insert("severity".into(), severity.as_str().into());
        labels.insert("slo".into(), slo.name.clone());
        let verdict = slo_verdict(slo, table, &mine, &what);
        found.push(Found {
            id: fingerprint(&labels),
            name: slo.name.clone(),
            source: Source::Slo,
            labels,
            runbook_url: slo.runbook_url.clone(),
            notify: slo.notify.clone(),
            verdict,
            timing: Timing {
                for_ns: 0,
                keep_firing_for_ns: 0,
                no_data: NoData::NoData,
            },
            service: Some(slo.service.clone()),
            ask: Some(Ask::of_slo(slo)),
        });
    }
    (status, found)
}

fn slo_verdict(slo: &SloConfig, table: &CountTable, rows: &[&BurnWindow], what: &str) -> Verdict {
    // No request in the shortest window: the burn cannot be "still happening", and it cannot
    // be over either; the alert freezes.
    let Some(shortest) = rows.iter().map(|r| r.short).min() else {
        return Verdict::NoData {
            summary: format!("{what}: no alert windows"),
        };
    };
    let (short_counts, _) = slo_counts(slo, table, Window::last(shortest.as_nanos()));
    if short_counts.total == 0 {
        return Verdict::NoData {
            summary: format!("{what}: no requests in the last {shortest}"),
        };
    }
    let mut worst: Option<(f64, &BurnWindow, Counts)> = None;
    let mut first: Option<(f64, &BurnWindow, Counts)> = None;
    let mut too_few = None;
    for row in rows {
        let (long, _) = slo_counts(slo, table, Window::last(row.long.as_nanos()));
        let (short, _) = slo_counts(slo, table, Window::last(row.short.as_nanos()));
        let long_burn = budget::burn_rate(long, slo.objective).unwrap_or(0.0);
        if first.is_none() {
            first = Some((long_burn, row, long));
        }
        match budget::judge(row, long, short, slo.objective, slo.min_requests) {
            Burn::Burning { long: b, .. } => {
                // The fastest row that burns speaks for the alert (the rows go from the
                // fastest burn to the slowest).
                if worst.is_none() {
                    worst = Some((b, row, long));
                }
            }
            Burn::TooFew { requests } => too_few = Some((requests, row.long)),
            Burn::Fine | Burn::NoData => {}
        }
    }
    let describe = |burn: f64, row: &BurnWindow, long: Counts| {
        let bad = long.sli().map_or(0.0, |s| 1.0 - s);
        format!(
            "{what}: {} of requests {} over the last {}, {} the budget rate (objective {}% over {})",
            percent(bad),
            bad_words(slo),
            row.long,
            times(burn),
            slo.objective,
            slo.window
        )
    };
    match (worst, first) {
        (Some((burn, row, long)), _) => Verdict::Breach {
            value: burn,
            threshold: row.burn_rate,
            summary: describe(burn, row, long),
        },
        (None, Some((burn, row, long))) => {
            let mut summary = describe(burn, row, long);
            if let Some((requests, window)) = too_few {
                summary.push_str(&format!(
                    "; only {requests} requests in the last {window}, fewer than min_requests = {}, so no alert",
                    slo.min_requests
                ));
            }
            Verdict::Fine {
                value: burn,
                threshold: row.burn_rate,
                summary,
            }
        }
        (None, None) => Verdict::NoData {
            summary: format!("{what}: no data"),
        },
    }
}

fn rule_labels(rule: &AlertConfig, service: Option<&str>) -> Labels {
    let mut labels = rule.labels.clone();
    labels.insert("alertname".into(), rule.name.clone());
    if let Some(service) = service {
        labels.insert("service".into(), service.to_string());
    }
    if let Some(route) = &rule.route {
        labels.insert("route".into(), route.clone());
    }
    if let Some(method) = &rule.method {
        labels.insert("method".into(), method.to_ascii_uppercase());
    }
    labels
}

fn rule_timing(rule: &AlertConfig) -> Timing {
    Timing {
        for_ns: rule.for_.as_nanos(),
        keep_firing_for_ns: rule.keep_firing_for.as_nanos(),
        no_data: rule.no_data,
    }
}

fn measure_name(measure: Measure) -> &'static str {
    match measure {
        Measure::ErrorRate => "error rate",
        Measure::RequestRate => "request rate",
        Measure::P50 => "p50",
        Measure::P95 => "p95",
        Measure::P99 => "p99",
        Measure::Sql => "value",
    }
}

fn show(measure: Measure, value: f64) -> String {
    match measure {
        Measure::ErrorRate => percent(value),
        Measure::RequestRate => format!("{value:.2}/s"),
        Measure::P50 | Measure::P95 | Measure::P99 => millis(value),
        Measure::Sql => format!("{value}"),
    }
}

fn quantile(measure: Measure) -> f64 {
    match measure {
        Measure::P50 => 0.5,
        Measure::P95 => 0.95,
        _ => 0.99,
    }
}

/// The measured value of one window, and its requests; `None` value when it has none.
fn rule_value(
    rule: &AlertConfig,
    table: &CountTable,
    sketches: &std::collections::HashMap<
        measure::Group,
        Vec<sightline_model::sketch::LatencySketch>,
    >,
    percentile_windows: &[Window],
    service: &str,
    window: Window,
    now_ns: i64,
) -> (Option<f64>, i64, i64) {
    let Some(w) = table.window_index(window) else {
        return (None, 0, 0);
    };
    let c = table.sum(w, service, rule.route.as_deref(), rule.method.as_deref());
    let value = match rule.measure {
        Measure::ErrorRate => (c.requests > 0).then(|| c.errors as f64 / c.requests as f64),
        Measure::RequestRate => Some(c.requests as f64 / covered_seconds(window, now_ns)),
        Measure::P50 | Measure::P95 | Measure::P99 => {
            let mut merged = sightline_model::sketch::LatencySketch::default();
            if let Some(i) = percentile_windows.iter().position(|x| *x == window) {
                for (group, per_window) in sketches {
                    if group.matches(service, rule.route.as_deref(), rule.method.as_deref()) {
                        merged.merge(&per_window[i]);
                    }
                }
            }
            merged.quantile(quantile(rule.measure)).map(|ns| ns / 1e9)
        }
        Measure::Sql => None,
    };
    (value, c.requests, c.errors)
}

/// A rule's bound and which side of it breaches (`above` or `below`).
fn bound(rule: &AlertConfig) -> (f64, &'static str) {
    match (rule.above, rule.below) {
        (Some(a), _) => (a, "above"),
        (None, b) => (b.unwrap_or(0.0), "below"),
    }
}

/// Whether `value` lies on the breaching side of the rule's bound.
fn breaches(rule: &AlertConfig, value: f64) -> bool {
    match (rule.above, rule.below) {
        (Some(a), _) => value > a,
        (None, Some(b)) => value < b,
        (None, None) => false,
    }
}

fn evaluate_rule(
    rule: &AlertConfig,
    table: &CountTable,
    sketches: &std::collections::HashMap<
        measure::Group,
        Vec<sightline_model::sketch::LatencySketch>,
    >,
    percentile_windows: &[Window],
    now_ns: i64,
    known: &[Instance],
) -> Vec<Found> {
    let services: Vec<String> = match &rule.service {
        Some(s) => vec![s.clone()],
        None => {
            let mut s: BTreeSet<String> = table
                .groups
                .iter()
                .filter(|(g, counts)| {
                    g.matches(&g.service, rule.route.as_deref(), rule.method.as_deref())
                        && counts.iter().any(|c| c.requests > 0)
                })
                .map(|(g, _)| g.service.clone())
                .collect();
            s.extend(
                known
                    .iter()
                    .filter(|i| i.source == Source::Rule && i.name == rule.name)
                    .filter_map(|i| i.labels.get("service").cloned()),
            );
            s.into_iter().collect()
        }
    };
    let current = Window::last(rule.window.as_nanos());
    let (bound, side) = bound(rule);
    let name = measure_name(rule.measure);
    services
        .into_iter()
        .map(|service| {
            let labels = rule_labels(rule, Some(&service));
            let what = selection(&service, rule.route.as_deref(), rule.method.as_deref());
            let (value, requests, _) =
                rule_value(rule, table, sketches, percentile_windows, &service, current, now_ns);
            let verdict = if requests < rule.min_requests as i64 {
                Verdict::NoData {
                    summary: format!(
                        "{what}: {requests} requests over the last {}, fewer than min_requests = {}",
                        rule.window, rule.min_requests
                    ),
                }
            } else if let Some(value) = value {
                match rule.baseline {
                    None => {
                        let summary = format!(
                            "{what}: {name} {} over the last {}, {side} {}",
                            show(rule.measure, value),
                            rule.window,
                            show(rule.measure, bound)
                        );
                        Verdict::compared(breaches(rule, value), value, bound, summary)
                    }
                    Some(baseline) => {
                        let then = Window {
                            length_ns: rule.window.as_nanos(),
                            offset_ns: baseline.as_nanos(),
                        };
                        let (base, base_requests, _) = rule_value(
                            rule,
                            table,
                            sketches,
                            percentile_windows,
                            &service,
                            then,
                            now_ns,
                        );
                        // A baseline without failures counts as one failure in its requests,
                        // so that the first error after a clean week is not "infinitely worse".
                        let base = match (rule.measure, base) {
                            (Measure::ErrorRate, Some(b)) if base_requests > 0 => {
                                Some(b.max(1.0 / base_requests as f64))
                            }
                            (_, b) => b.filter(|b| *b > 0.0),
                        };
                        match base {
                            None => Verdict::NoData {
                                summary: format!(
                                    "{what}: no baseline: no requests in the same {} {baseline} ago",
                                    rule.window
                                ),
                            },
                            Some(base) => {
                                let ratio = value / base;
                                let summary = format!(
                                    "{what}: {name} {} over the last {}, {} the same window {baseline} ago ({}), {side} {}",
                                    show(rule.measure, value),
                                    rule.window,
                                    times(ratio),
                                    show(rule.measure, base),
                                    times(bound)
                                );
                                Verdict::compared(breaches(rule, ratio), ratio, bound, summary)
                            }
                        }
                    }
                }
            } else {
                Verdict::NoData {
                    summary: format!("{what}: no requests over the last {}", rule.window),
                }
            };
            Found {
                id: fingerprint(&labels),
                name: rule.name.clone(),
                source: Source::Rule,
                labels,
                runbook_url: rule.runbook_url.clone(),
                notify: rule.notify.clone(),
                verdict,
                timing: rule_timing(rule),
                ask: Some(Ask::of_rule(rule, service.clone())),
                service: Some(service),
            }
        })
        .collect()
}

/// The most rows a SQL rule may answer: more instances than anyone can read.
pub const MAX_SQL_ROWS: usize = 1000;

/// A numeric column as floats, once per batch (NULL where it cannot be one).
fn as_floats(array: &dyn Array) -> Option<arrow::array::ArrayRef> {
    arrow::compute::cast(array, &DataType::Float64).ok()
}

fn float_at(floats: Option<&arrow::array::ArrayRef>, row: usize) -> Option<f64> {
    let f = floats?.as_primitive_opt::<Float64Type>()?;
    f.is_valid(row).then(|| f.value(row))
}

/// A SQL rule's answer: its columns and rows, or why it failed.
type SqlAnswer =
    Result<(arrow::datatypes::SchemaRef, Vec<arrow::array::RecordBatch>), sightline_query::Error>;

fn evaluate_sql(
    rule: &AlertConfig,
    answers: &HashMap<&str, SqlAnswer>,
    known: &[Instance],
) -> Result<Vec<Found>, Error> {
    let sql = rule.sql.as_deref().unwrap_or_default();
    let (schema, batches) = match answers.get(sql) {
        Some(Ok(answer)) => answer,
        Some(Err(e)) => {
            return Err(Error::Invalid {
                message: e.to_string(),
            });
        }
        None => {
            return Err(Error::Internal {
                message: format!("rule {}: its query was not run", rule.name),
            });
        }
    };
    let value_index = schema.index_of("value").map_err(|_| Error::Invalid {
        message: format!("rule {}: the query has no column named value", rule.name),
    })?;
    let (bound, side) = bound(rule);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for batch in batches {
        let values = as_floats(batch.column(value_index).as_ref());
        for row in 0..batch.num_rows() {
            let mut labels = rule.labels.clone();
            for (i, field) in schema.fields().iter().enumerate() {
                if i == value_index {
                    continue;
                }
                let cell = sightline_query::json::cell(batch.column(i), row);
                let text = match cell {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                labels.insert(field.name().clone(), text);
            }
            labels.insert("alertname".into(), rule.name.clone());
            let id = fingerprint(&labels);
            seen.insert(id.clone());
            let what = labels
                .iter()
                .filter(|(k, _)| k.as_str() != "alertname" && !rule.labels.contains_key(*k))
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            let what = if what.is_empty() {
                rule.name.clone()
            } else {
                what
            };
            let verdict = match float_at(values.as_ref(), row) {
                None => Verdict::NoData {
                    summary: format!("{what}: the query's value is NULL"),
                },
                Some(value) => {
                    let summary = format!("{what}: {} is {value}, {side} {bound}", rule.name);
                    Verdict::compared(breaches(rule, value), value, bound, summary)
                }
            };
            let service = labels
                .get("service")
                .or(labels.get("service_name"))
                .cloned();
            out.push(Found {
                id,
                name: rule.name.clone(),
                source: Source::Rule,
                labels,
                runbook_url: rule.runbook_url.clone(),
                notify: rule.notify.clone(),
                verdict,
                timing: rule_timing(rule),
                ask: service.clone().map(|s| Ask::of_rule(rule, s)),
                service,
            });
        }
    }
    // Instances whose row is gone have no data now.
    for instance in known {
        if instance.source == Source::Rule
            && instance.name == rule.name
            && !seen.contains(&instance.id)
        {
            out.push(Found {
                id: instance.id.clone(),
                name: rule.name.clone(),
                source: Source::Rule,
                labels: instance.labels.clone(),
                runbook_url: rule.runbook_url.clone(),
                notify: rule.notify.clone(),
                verdict: Verdict::NoData {
                    summary: format!("{}: the query returned no row for these labels", rule.name),
                },
                timing: rule_timing(rule),
                service: instance.labels.get("service").cloned(),
                ask: None,
            });
        }
    }
    Ok(out)
}

/// Checks the SQL rules against the engine at start: each must be a read-only query whose
/// columns include a numeric `value`. The error names the key.
pub async fn check_sql_rules(
    engine: &QueryEngine,
    config: &MonitorConfig,
) -> Result<(), sightline_model::ConfigError> {
    for (i, rule) in config.alerts.iter().enumerate() {
        let Some(sql) = rule.sql.as_deref() else {
            continue;
        };
        let key = format!("alert[{i}].sql");
        let schema = engine.plan_columns(sql).await.map_err(|e| {
            sightline_model::ConfigError::new(
                key.clone(),
                format!("is not a query Sightline can run: {e}"),
            )
        })?;
        match schema.field_with_name("value") {
            Ok(field) if field.data_type().is_numeric() => {}
            Ok(field) => {
                return Err(sightline_model::ConfigError::new(
                    key,
                    format!(
                        "must return a numeric column named value; its value is {}",
                        sightline_query::engine::sql_type_name(field.data_type())
                    ),
                ));
            }
            Err(_) => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(sightline_model::ConfigError::new(
                    key,
                    format!(
                        "must return a numeric column named value (as in SELECT service_name, count(*) AS value …); it returns {}",
                        names.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}
