//! What sets the bad requests apart: for a service (and optionally one route) over a window,
//! the requests that failed (or ran slower than a threshold) against the others, every
//! dimension of the requests ranked by how much more common its value is among the bad ones.
//!
//! Dimensions are the promoted columns (version, environment, route, method, status code,
//! exception type), span attributes and resource attributes (host, instance, region, tenant).
//! A value explains the bad requests when it covers a clearly larger share of them than of the
//! good ones: at least [`MIN_SUPPORT`] bad requests carry it, its share among them is at least
//! [`MIN_SHARE_GAIN`] above its share among the good ones, and a two-proportion z-test puts the
//! difference beyond chance after a Bonferroni correction for every value tried. Values are
//! ranked by that gain in share, then by risk ratio. When nothing passes, the answer has no
//! dimensions and its summary says so, rather than ranking noise.
//!
//! Keys with many distinct values (ids, paths, timestamps) are recognised as they are counted:
//! past [`MAX_VALUES`] values, or once most values are seen once, a key's values are grouped by
//! their pattern ([`crate::mask::pattern`]: `/api/orders/123` becomes `/api/orders/<num>`); a
//! key whose patterns are still many is left out and named in [`Explanation::left_out`].
//!
//! The same read takes the previous window of the same length, and [`Explanation::changes`]
//! lists the values that appeared or grew since then (a new version, a tenant's traffic).
//! Windows with more than [`MAX_ROWS`] requests are sampled (every bad request of an error
//! question kept), and the answer says so.

use std::borrow::Cow;
use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use serde::Serialize;
use serde_json::Value;
use sightline_model::TimeRange;
use sightline_model::request::{ROUTE_SQL, is_failure_sql, is_request_sql};

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::sql::{quote, time_conditions};

/// Bad requests a value must cover to be ranked: a value seen twice cannot win.
pub const MIN_SUPPORT: u64 = 10;
/// How much larger (in share, 0 to 1) a value's share among the bad requests must be than among
/// the good ones.
pub const MIN_SHARE_GAIN: f64 = 0.05;
/// The family-wise significance level, divided over every value tried.
pub const SIGNIFICANCE: f64 = 0.01;
/// Distinct values a key may have before its values are grouped by pattern (and, if the
/// patterns are as many, the key is left out).
pub const MAX_VALUES: usize = 200;
/// Requests read from the window and the one before it together; more are sampled.
pub const MAX_ROWS: u64 = 400_000;
/// The percentile of a route's latency that is its default threshold for "slow".
pub const DEFAULT_PERCENTILE: f64 = 0.95;

/// What makes a request bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum What {
    /// It failed (status error or HTTP 5xx).
    Errors,
    /// It ran slower than a threshold: a fixed one, or its route's p95 over the window.
    Latency,
}

impl What {
    /// Parses `errors` or `latency`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "errors" => Some(Self::Errors),
            "latency" => Some(Self::Latency),
            _ => None,
        }
    }

    /// What a bad request is called in words: failing or slow.
    pub fn bad_word(self) -> &'static str {
        match self {
            Self::Errors => "failing",
            Self::Latency => "slow",
        }
    }

    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Errors => "errors",
            Self::Latency => "latency",
        }
    }
}

/// The question.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The service whose requests are compared.
    pub service: String,
    /// Only this route's requests, when given.
    pub route: Option<String>,
    /// The window's first nanosecond.
    pub start_ns: i64,
    /// The first nanosecond after the window.
    pub end_ns: i64,
    /// What makes a request bad.
    pub what: What,
    /// For latency: slower than this is bad; `None`: each route's p95 over the window.
    pub threshold_ns: Option<i64>,
    /// Dimensions to return at most.
    pub limit: usize,
}

/// A group of requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cohort {
    /// How many requests it holds (estimated when sampled).
    pub requests: u64,
}

/// A value that sets the bad requests apart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dimension {
    /// The dimension: a promoted column by its OpenTelemetry name, or an attribute's key.
    pub key: String,
    /// The value (or, for a grouped key, the pattern of the values).
    pub value: String,
    /// Share of the bad requests that carry the value (0 to 1).
    pub selection_share: f64,
    /// Share of the good requests that carry it.
    pub baseline_share: f64,
    /// How many bad requests carry it.
    pub selection_count: u64,
    /// How many good requests carry it (estimated when sampled).
    pub baseline_count: u64,
    /// The chance a request with the value is bad over the chance one without it is;
    /// `None` when no request without it is bad (the value covers every bad request).
    pub risk_ratio: Option<f64>,
    /// Two-sided p-value of the two-proportion z-test (before the correction for many values).
    pub p_value: f64,
    /// True when the key's values were grouped by pattern.
    pub grouped: bool,
}

/// A value that appeared or grew since the previous window of the same length.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The dimension.
    pub key: String,
    /// The value.
    pub value: String,
    /// Share of the window's requests that carry it.
    pub window_share: f64,
    /// Share of the previous window's requests that carried it.
    pub before_share: f64,
    /// How many of the window's requests carry it.
    pub window_count: u64,
    /// How many of the previous window's requests carried it.
    pub before_count: u64,
    /// True when no request of the previous window carried it.
    pub new: bool,
    /// Two-sided p-value of the two-proportion z-test.
    pub p_value: f64,
}

/// A key not ranked because its values are too many to be a cause (ids).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeftOut {
    /// The key.
    pub key: String,
    /// Distinct values (or patterns) seen before it was left out: at least this many.
    pub distinct_values: usize,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// What made a request bad.
    pub what: What,
    /// The service.
    pub service: String,
    /// The route, when the question named one.
    pub route: Option<String>,
    /// For latency: the fixed threshold in milliseconds, or `None` when each route's p95 was.
    pub threshold_ms: Option<f64>,
    /// The bad requests.
    pub selection: Cohort,
    /// The good requests.
    pub baseline: Cohort,
    /// The values that set the bad requests apart, best first.
    pub dimensions: Vec<Dimension>,
    /// Values that appeared or grew since the previous window, the largest growth first.
    pub changes: Vec<Change>,
    /// Keys left out for their many values.
    pub left_out: Vec<LeftOut>,
    /// True when the window's requests were sampled.
    pub sampled: bool,
    /// The answer in words.
    pub summary: String,
}

impl Explanation {
    /// The top dimension as a sentence: "93% of failing requests have service.version=1.5.0
    /// (vs 12% of the others)".
    pub fn describe(dimension: &Dimension, what: What) -> String {
        let bad = what.bad_word();
        format!(
            "{} of {bad} requests have {}={} (vs {} of the others)",
            percent(dimension.selection_share),
            dimension.key,
            dimension.value,
            percent(dimension.baseline_share)
        )
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p >= 10.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Resource attributes that are the same for every request of a service or are promoted.
const SKIPPED_RESOURCE_KEYS: &[&str] = &[
    "service.name",
    "service.version",
    "deployment.environment",
    "deployment.environment.name",
];
/// Span attributes that fill promoted columns (ranked under the promoted name).
const SKIPPED_SPAN_KEYS: &[&str] = &[
    "http.route",
    "http.request.method",
    "http.method",
    "http.response.status_code",
    "http.status_code",
];
/// Keys that describe a failure itself: for an error question they are symptoms, not causes.
const FAILURE_KEYS: &[&str] = &[
    "http.response.status_code",
    "exception.type",
    "exception.message",
    "exception.stacktrace",
    "exception.escaped",
    "error.type",
    "otel.status_code",
    "otel.status_description",
    "rpc.grpc.status_code",
];

fn skipped_prefix(key: &str) -> bool {
    key.starts_with("telemetry.") || key.starts_with("otel.") || key.starts_with("process.")
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    /// Bad requests in the window (unweighted: sampling keeps each cohort's shares).
    bad: u64,
    /// Good requests in the window (unweighted).
    good: u64,
    /// Requests in the window, weighted.
    window: f64,
    /// Requests in the previous window, weighted.
    before: f64,
}

#[derive(Debug, Default)]
struct KeyStats {
    values: HashMap<String, Counts>,
    /// Rows that carried the key.
    rows: u64,
    grouped: bool,
    left_out: bool,
}

/// Where a row falls.
#[derive(Clone, Copy)]
enum Side {
    Bad,
    Good,
    Before,
}

#[derive(Default)]
struct Tally {
    keys: HashMap<String, KeyStats>,
    bad: u64,
    good: u64,
    window: f64,
    before: f64,
}

impl Tally {
    fn add(&mut self, key: &str, value: &str, side: Side, weight: f64) {
        let stats = match self.keys.get_mut(key) {
            Some(stats) => stats,
            None => self.keys.entry(key.to_string()).or_default(),
        };
        if stats.left_out {
            return;
        }
        stats.rows += 1;
        let pattern;
        let value = if stats.grouped {
            pattern = crate::mask::pattern(value);
            pattern.as_str()
        } else {
            value
        };
        if !stats.values.contains_key(value) {
            if stats.values.len() >= MAX_VALUES {
                if stats.grouped {
                    stats.left_out = true;
                    return;
                }
                group(stats);
                return self.add(key, value, side, weight);
            }
            stats.values.insert(value.to_string(), Counts::default());
        }
        let counts = stats.values.get_mut(value).expect("inserted above");
        match side {
            Side::Bad => {
                counts.bad += 1;
                counts.window += weight;
            }
            Side::Good => {
                counts.good += 1;
                counts.window += weight;
            }
            Side::Before => counts.before += weight,
        }
    }
}

/// Merges a key's values by their pattern.
fn group(stats: &mut KeyStats) {
    let mut grouped: HashMap<String, Counts> = HashMap::new();
    for (value, counts) in stats.values.drain() {
        let entry = grouped.entry(crate::mask::pattern(&value)).or_default();
        entry.bad += counts.bad;
        entry.good += counts.good;
        entry.window += counts.window;
        entry.before += counts.before;
    }
    stats.values = grouped;
    stats.grouped = true;
    if stats.values.len() >= MAX_VALUES {
        stats.left_out = true;
    }
}

/// Keys most of whose values were seen once are ids even below [`MAX_VALUES`]: group them.
fn group_id_like(tally: &mut Tally) {
    for stats in tally.keys.values_mut() {
        if stats.grouped || stats.left_out || stats.rows < 20 {
            continue;
        }
        let once = stats
            .values
            .values()
            .filter(|c| c.bad + c.good + (c.before > 0.0) as u64 <= 1)
            .count();
        if once * 2 > stats.values.len() && stats.values.len() * 4 > stats.rows as usize {
            group(stats);
            let once = stats
                .values
                .values()
                .filter(|c| c.bad + c.good + (c.before > 0.0) as u64 <= 1)
                .count();
            if once * 2 > stats.values.len() && stats.values.len() > 20 {
                stats.left_out = true;
            }
        }
    }
}

/// Two-sided p-value that `x1/n1` and `x2/n2` come from the same proportion (z-test with the
/// pooled proportion).
pub fn two_proportion_p(x1: f64, n1: f64, x2: f64, n2: f64) -> f64 {
    if n1 <= 0.0 || n2 <= 0.0 {
        return 1.0;
    }
    let pooled = (x1 + x2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    if se <= 0.0 || !se.is_finite() {
        return 1.0;
    }
    let z = ((x1 / n1) - (x2 / n2)).abs() / se;
    libm::erfc(z / std::f64::consts::SQRT_2).clamp(0.0, 1.0)
}

/// Answers the question.
pub async fn explain(engine: &QueryEngine, question: &Question) -> Result<Explanation, Error> {
    if question.end_ns <= question.start_ns {
        return Err(Error::Invalid {
            message: "the window's end must be after its start".into(),
        });
    }
    let length = question.end_ns - question.start_ns;
    let read = TimeRange::new(Some(question.start_ns - length), Some(question.end_ns));
    let mut conditions = time_conditions("start_time", read);
    conditions.push(is_request_sql().into());
    conditions.push(format!("service_name = {}", quote(&question.service)));
    if let Some(route) = &question.route {
        conditions.push(format!("{ROUTE_SQL} = {}", quote(route)));
    }
    let filter = conditions.join(" AND ");
    let total = count(engine, &filter).await?;
    // Over the cap, rows are sampled: an error question keeps every failure.
    let keep = if total > MAX_ROWS {
        MAX_ROWS as f64 / total as f64
    } else {
        1.0
    };
    let sampling = if keep < 1.0 {
        match question.what {
            What::Errors => format!(" AND ({} OR random() < {keep})", is_failure_sql()),
            What::Latency => format!(" AND random() < {keep}"),
        }
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT CAST(start_time AS BIGINT) AS start_ns, duration_ns, {} AS failed, {ROUTE_SQL} AS route, \
         service_version, environment, http_method, http_status_code, exception_type, attributes, \
         resource_attributes FROM spans WHERE {filter}{sampling}",
        is_failure_sql()
    );
    let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
    let rows = Rows { batches: &batches };

    let thresholds = match (question.what, question.threshold_ns) {
        (What::Latency, Some(threshold)) => Thresholds::Fixed(threshold),
        (What::Latency, None) => Thresholds::PerRoute(route_percentiles(
            &rows,
            question.start_ns,
            DEFAULT_PERCENTILE,
        )),
        (What::Errors, _) => Thresholds::Fixed(i64::MAX),
    };

    let mut tally = Tally::default();
    let mut pairs: Vec<(Cow<'_, str>, String)> = Vec::new();
    for row in rows.iter() {
        let before = row.start_ns < question.start_ns;
        let bad = match question.what {
            What::Errors => row.failed,
            What::Latency => row.duration_ns > thresholds.of(row.route),
        };
        let weight = if question.what == What::Errors && row.failed {
            1.0
        } else {
            1.0 / keep
        };
        let side = if before {
            tally.before += weight;
            Side::Before
        } else if bad {
            tally.bad += 1;
            tally.window += weight;
            Side::Bad
        } else {
            tally.good += 1;
            tally.window += weight;
            Side::Good
        };
        pairs.clear();
        row.dimensions(question.route.is_none(), &mut pairs);
        for (key, value) in &pairs {
            if question.what == What::Errors && FAILURE_KEYS.contains(&key.as_ref()) {
                continue;
            }
            tally.add(key, value, side, weight);
        }
    }
    group_id_like(&mut tally);
    Ok(answer(question, tally, keep < 1.0, 1.0 / keep))
}

fn answer(question: &Question, tally: Tally, sampled: bool, good_weight: f64) -> Explanation {
    let tried: usize = tally
        .keys
        .values()
        .filter(|s| !s.left_out)
        .map(|s| s.values.len())
        .sum();
    let alpha = SIGNIFICANCE / tried.max(1) as f64;
    let bad_total = tally.bad as f64;
    let good_total = tally.good as f64;
    let mut dimensions = Vec::new();
    let mut changes = Vec::new();
    let mut left_out = Vec::new();
    for (key, stats) in &tally.keys {
        if stats.left_out {
            left_out.push(LeftOut {
                key: key.clone(),
                distinct_values: stats.values.len().max(MAX_VALUES),
            });
            continue;
        }
        for (value, counts) in &stats.values {
            let totals = (bad_total, good_total, good_weight);
            if let Some(dimension) = dimension(key, value, counts, totals, alpha) {
                dimensions.push(Dimension {
                    grouped: stats.grouped,
                    ..dimension
                });
            }
            if let Some(change) = change(key, value, counts, tally.window, tally.before, alpha) {
                changes.push(change);
            }
        }
    }
    dimensions.sort_by(|a, b| {
        let gain = |d: &Dimension| d.selection_share - d.baseline_share;
        gain(b)
            .total_cmp(&gain(a))
            .then_with(|| {
                b.risk_ratio
                    .unwrap_or(f64::INFINITY)
                    .total_cmp(&a.risk_ratio.unwrap_or(f64::INFINITY))
            })
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.value.cmp(&b.value))
    });
    dimensions.truncate(question.limit);
    changes.sort_by(|a, b| {
        (b.window_share - b.before_share)
            .total_cmp(&(a.window_share - a.before_share))
            .then_with(|| a.key.cmp(&b.key))
            .then_with(|| a.value.cmp(&b.value))
    });
    changes.truncate(question.limit);
    left_out.sort_by(|a, b| a.key.cmp(&b.key));

    let weight = |n: u64| (n as f64 * good_weight).round() as u64;
    let (selection, baseline) = match question.what {
        What::Errors => (tally.bad, weight(tally.good)),
        What::Latency => (weight(tally.bad), weight(tally.good)),
    };
    let bad_words = question.what.bad_word();
    let summary = if tally.bad == 0 {
        format!("no {bad_words} requests in the window: nothing to explain")
    } else if let Some(top) = dimensions.first() {
        Explanation::describe(top, question.what)
    } else if tally.bad < MIN_SUPPORT {
        format!(
            "only {} {bad_words} requests: too few to tell what sets them apart (at least {MIN_SUPPORT} are needed)",
            tally.bad
        )
    } else {
        format!(
            "no dimension sets the {selection} {bad_words} requests apart from the {baseline} others: they look alike"
        )
    };
    Explanation {
        what: question.what,
        service: question.service.clone(),
        route: question.route.clone(),
        threshold_ms: match (question.what, question.threshold_ns) {
            (What::Latency, Some(ns)) => Some(ns as f64 / 1e6),
            _ => None,
        },
        selection: Cohort {
            requests: selection,
        },
        baseline: Cohort { requests: baseline },
        dimensions,
        changes,
        left_out,
        sampled,
        summary,
    }
}

fn dimension(
    key: &str,
    value: &str,
    counts: &Counts,
    (bad_total, good_total, good_weight): (f64, f64, f64),
    alpha: f64,
) -> Option<Dimension> {
    if counts.bad < MIN_SUPPORT || bad_total <= 0.0 {
        return None;
    }
    let a = counts.bad as f64;
    let c = counts.good as f64;
    let selection_share = a / bad_total;
    let baseline_share = if good_total > 0.0 {
        c / good_total
    } else {
        0.0
    };
    if selection_share - baseline_share < MIN_SHARE_GAIN {
        return None;
    }
    let p_value = two_proportion_p(a, bad_total, c, good_total);
    if p_value >= alpha {
        return None;
    }
    // Risk among requests with the value over risk among those without it (in sample counts,
    // which is exact for an error question's kept failures only up to the sampling rate; the
    // ratio is a ranking aid).
    let with = a / (a + c).max(1.0);
    let without_bad = bad_total - a;
    let without_all = without_bad + (good_total - c);
    let risk_ratio = if without_bad <= 0.0 {
        None
    } else {
        Some(with / (without_bad / without_all.max(1.0)))
    };
    Some(Dimension {
        key: key.to_string(),
        value: value.to_string(),
        selection_share,
        baseline_share,
        selection_count: counts.bad,
        baseline_count: (counts.good as f64 * good_weight).round() as u64,
        risk_ratio,
        p_value,
        grouped: false,
    })
}

fn change(
    key: &str,
    value: &str,
    counts: &Counts,
    window_total: f64,
    before_total: f64,
    alpha: f64,
) -> Option<Change> {
    if window_total <= 0.0 || counts.window < MIN_SUPPORT as f64 {
        return None;
    }
    let window_share = counts.window / window_total;
    let before_share = if before_total > 0.0 {
        counts.before / before_total
    } else {
        0.0
    };
    if window_share - before_share < MIN_SHARE_GAIN || before_total <= 0.0 {
        return None;
    }
    let p_value = two_proportion_p(counts.window, window_total, counts.before, before_total);
    if p_value >= alpha {
        return None;
    }
    Some(Change {
        key: key.to_string(),
        value: value.to_string(),
        window_share,
        before_share,
        window_count: counts.window.round() as u64,
        before_count: counts.before.round() as u64,
        new: counts.before == 0.0,
        p_value,
    })
}

/// Requests of `spans` matching `filter`.
pub(crate) async fn count(engine: &QueryEngine, filter: &str) -> Result<u64, Error> {
    let (_, batches, _) = engine
        .collect(
            &format!("SELECT count(*) AS n FROM spans WHERE {filter}"),
            1,
        )
        .await?;
    Ok(batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| b.column(0).as_primitive::<Int64Type>().value(0).max(0) as u64)
        .unwrap_or(0))
}

enum Thresholds {
    Fixed(i64),
    PerRoute(HashMap<String, i64>),
}

impl Thresholds {
    fn of(&self, route: &str) -> i64 {
        match self {
            Self::Fixed(ns) => *ns,
            Self::PerRoute(map) => map.get(route).copied().unwrap_or(i64::MAX),
        }
    }
}

/// Each route's latency percentile over the window's rows (rows before `start_ns` are the
/// previous window's).
fn route_percentiles(rows: &Rows<'_>, start_ns: i64, q: f64) -> HashMap<String, i64> {
    let mut durations: HashMap<&str, Vec<i64>> = HashMap::new();
    for row in rows.iter().filter(|r| r.start_ns >= start_ns) {
        durations
            .entry(row.route)
            .or_default()
            .push(row.duration_ns);
    }
    durations
        .into_iter()
        .map(|(route, mut values)| {
            let rank = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
            let (_, nth, _) = values.select_nth_unstable(rank);
            (route.to_string(), *nth)
        })
        .collect()
}

/// The read's columns, batch by batch.
struct Rows<'a> {
    batches: &'a [RecordBatch],
}

/// One request.
struct Row<'a> {
    start_ns: i64,
    duration_ns: i64,
    failed: bool,
    route: &'a str,
    version: Option<&'a str>,
    environment: Option<&'a str>,
    method: Option<&'a str>,
    status_code: Option<i32>,
    exception_type: Option<&'a str>,
    attributes: &'a str,
    resource_attributes: &'a str,
}

/// A text column's value in one row (any of Arrow's string layouts), `None` when null.
pub(crate) fn text<'a>(batch: &'a RecordBatch, name: &str, row: usize) -> Option<&'a str> {
    let column = batch.column_by_name(name)?;
    if column.is_null(row) {
        return None;
    }
    match column.data_type() {
        arrow::datatypes::DataType::Utf8 => Some(column.as_string::<i32>().value(row)),
        arrow::datatypes::DataType::LargeUtf8 => Some(column.as_string::<i64>().value(row)),
        arrow::datatypes::DataType::Utf8View => Some(column.as_string_view().value(row)),
        _ => None,
    }
}

/// A 64-bit integer column's value in one row, 0 when null or missing.
pub(crate) fn int64(batch: &RecordBatch, name: &str, row: usize) -> i64 {
    batch
        .column_by_name(name)
        .filter(|c| !c.is_null(row))
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .map_or(0, |c| c.value(row))
}

impl<'a> Rows<'a> {
    fn iter(&self) -> impl Iterator<Item = Row<'a>> + '_ {
        self.batches
            .iter()
            .flat_map(|batch| (0..batch.num_rows()).map(move |i| Self::row(batch, i)))
    }

    fn row(batch: &'a RecordBatch, i: usize) -> Row<'a> {
        Row {
            start_ns: int64(batch, "start_ns", i),
            duration_ns: int64(batch, "duration_ns", i),
            failed: batch
                .column_by_name("failed")
                .map(|c| !c.is_null(i) && c.as_boolean().value(i))
                .unwrap_or(false),
            route: text(batch, "route", i).unwrap_or_default(),
            version: text(batch, "service_version", i),
            environment: text(batch, "environment", i),
            method: text(batch, "http_method", i),
            status_code: batch
                .column_by_name("http_status_code")
                .filter(|c| !c.is_null(i))
                .and_then(|c| c.as_primitive_opt::<Int32Type>())
                .map(|c| c.value(i)),
            exception_type: text(batch, "exception_type", i),
            attributes: text(batch, "attributes", i).unwrap_or("{}"),
            resource_attributes: text(batch, "resource_attributes", i).unwrap_or("{}"),
        }
    }
}

impl<'a> Row<'a> {
    /// The row's (key, value) pairs: promoted columns first, then span and resource attributes.
    fn dimensions(&self, with_route: bool, out: &mut Vec<(Cow<'a, str>, String)>) {
        if let Some(v) = self.version {
            out.push((Cow::Borrowed("service.version"), v.to_string()));
        }
        if let Some(v) = self.environment {
            out.push((Cow::Borrowed("deployment.environment"), v.to_string()));
        }
        if with_route {
            out.push((Cow::Borrowed("http.route"), self.route.to_string()));
        }
        if let Some(v) = self.method {
            out.push((Cow::Borrowed("http.request.method"), v.to_string()));
        }
        if let Some(v) = self.status_code {
            out.push((Cow::Borrowed("http.response.status_code"), v.to_string()));
        }
        if let Some(v) = self.exception_type {
            out.push((Cow::Borrowed("exception.type"), v.to_string()));
        }
        attributes(self.attributes, SKIPPED_SPAN_KEYS, out);
        attributes(self.resource_attributes, SKIPPED_RESOURCE_KEYS, out);
    }
}

/// A JSON object's scalar values as text; arrays, objects and the skipped keys are left out.
/// Keys are borrowed from the text unless they hold escapes.
fn attributes<'a>(json: &'a str, skipped: &[&str], out: &mut Vec<(Cow<'a, str>, String)>) {
    if json.len() <= 2 {
        return;
    }
    if let Ok(map) = serde_json::from_str::<HashMap<&'a str, Value>>(json) {
        for (key, value) in map {
            push_scalar(Cow::Borrowed(key), value, skipped, out);
        }
    } else if let Ok(map) = serde_json::from_str::<HashMap<String, Value>>(json) {
        for (key, value) in map {
            push_scalar(Cow::Owned(key), value, skipped, out);
        }
    }
}

fn push_scalar<'a>(
    key: Cow<'a, str>,
    value: Value,
    skipped: &[&str],
    out: &mut Vec<(Cow<'a, str>, String)>,
) {
    if skipped.contains(&key.as_ref()) || skipped_prefix(&key) {
        return;
    }
    let text = match value {
        Value::String(s) => s,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => return,
    };
    out.push((key, text));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_z_test_agrees_with_known_values() {
        // 50/100 vs 30/100: z = 2.89, p = 0.0039.
        let p = two_proportion_p(50.0, 100.0, 30.0, 100.0);
        assert!((p - 0.0039).abs() < 0.0002, "{p}");
        // Equal proportions: no evidence.
        assert!((two_proportion_p(10.0, 100.0, 10.0, 100.0) - 1.0).abs() < 1e-9);
        // Everything or nothing in both: no variance, no evidence.
        assert_eq!(two_proportion_p(100.0, 100.0, 50.0, 50.0), 1.0);
        assert_eq!(two_proportion_p(1.0, 0.0, 1.0, 10.0), 1.0);
    }

    #[test]
    fn keys_with_many_values_are_grouped_by_pattern_then_left_out() {
        let mut tally = Tally::default();
        for i in 0..(MAX_VALUES + 50) {
            tally.add("url.path", &format!("/api/orders/{i}"), Side::Good, 1.0);
            tally.add(
                "request.id",
                &format!("req-{i:08x}-{}", i * 7919),
                Side::Bad,
                1.0,
            );
        }
        let path = &tally.keys["url.path"];
        assert!(path.grouped && !path.left_out);
        assert_eq!(path.values.len(), 1, "{:?}", path.values.keys());
        assert_eq!(
            path.values["/api/orders/<num>"].good,
            (MAX_VALUES + 50) as u64
        );
        assert!(tally.keys["request.id"].grouped);
    }

    #[test]
    fn a_value_seen_twice_cannot_win() {
        let counts = Counts {
            bad: 2,
            good: 0,
            window: 2.0,
            before: 0.0,
        };
        assert!(dimension("k", "v", &counts, (2.0, 1000.0, 1.0), 0.01).is_none());
        let counts = Counts {
            bad: 40,
            good: 10,
            window: 50.0,
            before: 0.0,
        };
        let d = dimension("k", "v", &counts, (50.0, 1000.0, 1.0), 0.01).expect("clear cause");
        assert!((d.selection_share - 0.8).abs() < 1e-9);
        assert!((d.baseline_share - 0.01).abs() < 1e-9);
        assert!(d.risk_ratio.unwrap() > 10.0);
    }
}

/// Bad requests read to find [`examples`] of a value: the newest failures (or the slowest).
const EXAMPLE_CANDIDATES: usize = 5_000;

/// Requests of the question's window that are bad and carry `key=value` (for a grouped key,
/// whose value has the pattern `value`): the newest failures for an error question, the
/// slowest requests for a latency one (slower than its threshold when it has one). For an
/// incident's "example traces of the top explanation".
pub async fn examples(
    engine: &QueryEngine,
    question: &Question,
    key: &str,
    value: &str,
    grouped: bool,
    limit: usize,
) -> Result<Vec<crate::overview::RequestSpan>, Error> {
    let mut conditions = time_conditions(
        "start_time",
        TimeRange::new(Some(question.start_ns), Some(question.end_ns)),
    );
    conditions.push(is_request_sql().into());
    conditions.push(format!("service_name = {}", quote(&question.service)));
    if let Some(route) = &question.route {
        conditions.push(format!("{ROUTE_SQL} = {}", quote(route)));
    }
    let order = match (question.what, question.threshold_ns) {
        (What::Errors, _) => {
            conditions.push(is_failure_sql().into());
            "start_time DESC"
        }
        (What::Latency, Some(threshold)) => {
            conditions.push(format!("duration_ns > {threshold}"));
            "duration_ns DESC"
        }
        (What::Latency, None) => "duration_ns DESC",
    };
    let sql = format!(
        "SELECT trace_id, span_id, name, CAST(start_time AS BIGINT) AS start_ns, duration_ns, \
         {} AS failed, {ROUTE_SQL} AS route, status, service_version, environment, http_method, \
         http_status_code, exception_type, coalesce(status_message, exception_message, \
         exception_type) AS reason, attributes, resource_attributes FROM spans WHERE {} \
         ORDER BY {order} LIMIT {EXAMPLE_CANDIDATES}",
        is_failure_sql(),
        conditions.join(" AND ")
    );
    let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
    let mut out = Vec::new();
    let mut pairs = Vec::new();
    for (batch, i) in batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i)))
    {
        let row = Rows::row(batch, i);
        pairs.clear();
        row.dimensions(true, &mut pairs);
        let carries = pairs.iter().any(|(k, v)| {
            k.as_ref() == key
                && if grouped {
                    crate::mask::pattern(v) == value
                } else {
                    v == value
                }
        });
        if !carries {
            continue;
        }
        out.push(crate::overview::RequestSpan {
            trace_id: text(batch, "trace_id", i).unwrap_or_default().to_string(),
            span_id: text(batch, "span_id", i).unwrap_or_default().to_string(),
            name: text(batch, "name", i).unwrap_or_default().to_string(),
            start_ns: row.start_ns,
            duration_ms: row.duration_ns as f64 / 1e6,
            status: text(batch, "status", i).unwrap_or_default().to_string(),
            http_status_code: row.status_code.map(i64::from),
            reason: text(batch, "reason", i)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            service_version: row.version.map(str::to_string),
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}
