//! Release comparison: a service's requests in a baseline cohort against a candidate cohort —
//! two versions (`service.version`, the default), two environments, or the two values of any
//! attribute (a feature flag) — route by route: requests, error rate and p50/p95/p99, each with
//! a verdict a CI job can act on, and the error types the candidate raises that the baseline
//! never did.
//!
//! A difference counts only when it is both *significant* and *large enough to matter*:
//!
//! - Errors: a two-proportion z-test on the failed requests, and the candidate's error rate at
//!   least [`Floors::error_rate_points`] above (or below) the baseline's.
//! - Latency, for each of p50, p95 and p99: the share of each cohort's requests slower than the
//!   lower of the two cohorts' percentiles, compared by the same z-test (a test on the tail, not
//!   on one number), and the candidate's percentile at least [`Floors::latency_ratio`] above (or below)
//!   the baseline's and more than [`MIN_LATENCY_DELTA_MS`] apart. Durations are counted in the
//!   latency sketch's bins ([`sightline_model::sketch`], 1% relative accuracy), aggregated by
//!   the engine from the raw spans.
//! - A route (or a percentile) whose cohorts hold fewer requests than [`Floors::min_requests`]
//!   (for a percentile: fewer than ten requests expected past it) gets no verdict from it:
//!   `insufficient_data`, never a guess.
//! - The significance level is family-wise: divided over every test made (Bonferroni), so that
//!   twenty routes do not make a false alarm likely.
//!
//! The whole comparison is `worse` when a route is worse or the candidate raises a new error
//! type at least [`Floors::new_error_min`] times; `better` when a route is better and none is
//! worse; `same` when routes could be compared and none differs; `insufficient_data` when no
//! route had enough requests in both cohorts.

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use serde::Serialize;
use serde_json::Value;
use sightline_model::TimeRange;
use sightline_model::request::{ROUTE_SQL, is_failure_sql, is_request_sql};
use sightline_model::sketch::{LatencySketch, bin_sql};

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::explain::{count, int64, text, two_proportion_p};
use crate::sql::{quote, time_conditions};

/// Two percentiles closer than this (in milliseconds) are the same, whatever their ratio.
pub const MIN_LATENCY_DELTA_MS: f64 = 1.0;
/// Routes compared at most (the busiest).
pub const MAX_ROUTES: usize = 50;
/// Requests read when the cohorts are an attribute's values (folded here, not by the engine).
pub const MAX_ATTRIBUTE_ROWS: u64 = 1_000_000;
/// New error types listed at most.
pub const MAX_NEW_ERRORS: usize = 20;
/// The percentiles compared.
const PERCENTILES: [(f64, &str); 3] = [(0.50, "p50"), (0.95, "p95"), (0.99, "p99")];

/// What makes a difference matter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Floors {
    /// Requests each cohort of a route needs for a verdict.
    pub min_requests: u64,
    /// A percentile must move by at least this share of the baseline's (0.10: +10%).
    pub latency_ratio: f64,
    /// The error rate must move by at least this many points (0.5: from 1.0% to 1.5%).
    pub error_rate_points: f64,
    /// The family-wise significance level.
    pub significance: f64,
    /// A new error type seen this many times makes the candidate worse.
    pub new_error_min: u64,
}

impl Default for Floors {
    fn default() -> Self {
        Self {
            min_requests: 50,
            latency_ratio: 0.10,
            error_rate_points: 0.5,
            significance: 0.05,
            new_error_min: 10,
        }
    }
}

/// The question.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareQuestion {
    /// The service.
    pub service: String,
    /// What tells the cohorts apart: `service.version`, `deployment.environment`,
    /// `http.request.method`, or a span or resource attribute's key.
    pub by: String,
    /// The baseline cohort's value.
    pub baseline: String,
    /// The candidate cohort's value.
    pub candidate: String,
    /// Only this route.
    pub route: Option<String>,
    /// The window's first nanosecond.
    pub start_ns: i64,
    /// The first nanosecond after it.
    pub end_ns: i64,
    /// What makes a difference matter.
    pub floors: Floors,
}

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly and materially better, nothing worse.
    Better,
    /// Significantly and materially worse somewhere.
    Worse,
    /// Compared, and no difference that matters.
    Same,
    /// Too few requests to say.
    InsufficientData,
}

impl Verdict {
    /// The name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Better => "better",
            Self::Worse => "worse",
            Self::Same => "same",
            Self::InsufficientData => "insufficient_data",
        }
    }
}

/// One cohort's numbers on one route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed over all, 0 to 1.
    pub error_rate: f64,
    /// Median latency (ms).
    pub p50_ms: Option<f64>,
    /// 95th percentile (ms).
    pub p95_ms: Option<f64>,
    /// 99th percentile (ms).
    pub p99_ms: Option<f64>,
}

/// One measure's comparison on one route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// `error_rate`, `p50`, `p95` or `p99`.
    pub measure: String,
    /// This measure's verdict.
    pub verdict: Verdict,
    /// The test's p-value (`None` when not tested).
    pub p_value: Option<f64>,
}

/// One route compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteComparison {
    /// The route.
    pub route: String,
    /// The baseline cohort's numbers.
    pub baseline: Stats,
    /// The candidate's.
    pub candidate: Stats,
    /// The route's verdict.
    pub verdict: Verdict,
    /// Why, in words (one per measure that differs, or why there is no verdict).
    pub reasons: Vec<String>,
    /// Every measure's own verdict.
    pub checks: Vec<Check>,
}

/// An error type the candidate raised that the baseline never did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewError {
    /// The exception type, or the pattern of the status message when there is none.
    pub error: String,
    /// Failed requests of the candidate with it.
    pub count: u64,
    /// One such request's trace.
    pub example_trace_id: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The service.
    pub service: String,
    /// What told the cohorts apart.
    pub by: String,
    /// The baseline cohort's value.
    pub baseline: String,
    /// The candidate's.
    pub candidate: String,
    /// The whole comparison's verdict.
    pub verdict: Verdict,
    /// The answer in words.
    pub summary: String,
    /// Each regression in words (empty unless `worse`).
    pub regressions: Vec<String>,
    /// The routes, busiest first.
    pub routes: Vec<RouteComparison>,
    /// Error types new in the candidate, the most frequent first.
    pub new_errors: Vec<NewError>,
    /// Both cohorts' requests over all routes.
    pub baseline_requests: u64,
    /// The candidate's.
    pub candidate_requests: u64,
    /// The floors the verdicts used.
    pub floors: Floors,
    /// The significance level of each test after the correction for many tests.
    pub per_test_significance: f64,
    /// True when the cohorts' requests were sampled (attribute cohorts past
    /// [`MAX_ATTRIBUTE_ROWS`]).
    pub sampled: bool,
}

/// A promoted column that tells cohorts apart, by its OpenTelemetry name.
fn promoted(by: &str) -> Option<&'static str> {
    match by {
        "service.version" => Some("service_version"),
        "deployment.environment" | "deployment.environment.name" => Some("environment"),
        "http.request.method" | "http.method" => Some("http_method"),
        _ => None,
    }
}

#[derive(Default)]
struct Cohort {
    requests: u64,
    errors: u64,
    sketch: LatencySketch,
}

impl Cohort {
    fn stats(&self) -> Stats {
        let q = |p: f64| self.sketch.quantile(p).map(|ns| ns / 1e6);
        Stats {
            requests: self.requests,
            errors: self.errors,
            error_rate: if self.requests > 0 {
                self.errors as f64 / self.requests as f64
            } else {
                0.0
            },
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
        }
    }

    /// Requests slower than `ns`.
    fn slower_than(&self, ns: f64) -> u64 {
        (self.sketch.count() - self.sketch.count_at_most(ns as i64)).max(0) as u64
    }
}

/// Per route: (baseline, candidate).
type Cohorts = BTreeMap<String, [Cohort; 2]>;

/// Answers the question.
pub async fn compare(engine: &QueryEngine, q: &CompareQuestion) -> Result<Comparison, Error> {
    if q.end_ns <= q.start_ns {
        return Err(Error::Invalid {
            message: "the window's end must be after its start".into(),
        });
    }
    if q.baseline == q.candidate {
        return Err(Error::Invalid {
            message: format!(
                "the baseline and the candidate are both {:?}: compare two different values",
                q.baseline
            ),
        });
    }
    let mut conditions = time_conditions(
        "start_time",
        TimeRange::new(Some(q.start_ns), Some(q.end_ns)),
    );
    conditions.push(is_request_sql().into());
    conditions.push(format!("service_name = {}", quote(&q.service)));
    if let Some(route) = &q.route {
        conditions.push(format!("{ROUTE_SQL} = {}", quote(route)));
    }
    let (cohorts, sampled, errors_sql) = match promoted(&q.by) {
        Some(column) => {
            conditions.push(format!(
                "{column} IN ({}, {})",
                quote(&q.baseline),
                quote(&q.candidate)
            ));
            let filter = conditions.join(" AND ");
            let sql = format!(
                "SELECT {ROUTE_SQL} AS route, {column} AS cohort, {bin} AS bin, count(*) AS requests, \
                 sum(CASE WHEN {failed} THEN 1 ELSE 0 END) AS errors, min(duration_ns) AS least, \
                 max(duration_ns) AS most FROM spans WHERE {filter} GROUP BY 1, 2, 3",
                bin = bin_sql("duration_ns"),
                failed = is_failure_sql(),
            );
            let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
            let cohorts = fold_bins(&batches, q)?;
            let errors_sql = format!(
                "SELECT {column} AS cohort, exception_type, status_message, trace_id FROM spans \
                 WHERE {filter} AND {failed}",
                failed = is_failure_sql()
            );
            (cohorts, false, errors_sql)
        }
        None => {
            let needle = format!("%{}%", serde_json::to_string(&q.by).unwrap_or_default());
            conditions.push(format!(
                "(attributes LIKE {n} OR resource_attributes LIKE {n})",
                n = quote(&needle)
            ));
            let filter = conditions.join(" AND ");
            let total = count(engine, &filter).await?;
            let sampling = if total > MAX_ATTRIBUTE_ROWS {
                format!(
                    " AND random() < {}",
                    MAX_ATTRIBUTE_ROWS as f64 / total as f64
                )
            } else {
                String::new()
            };
            let sql = format!(
                "SELECT {ROUTE_SQL} AS route, duration_ns, {failed} AS failed, exception_type, \
                 status_message, trace_id, attributes, resource_attributes FROM spans \
                 WHERE {filter}{sampling}",
                failed = is_failure_sql()
            );
            let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
            let (cohorts, errors) = fold_attributes(&batches, q);
            let mut answer = judge(q, cohorts, total > MAX_ATTRIBUTE_ROWS);
            answer.new_errors = new_errors(errors);
            finish(&mut answer, q);
            return Ok(answer);
        }
    };
    let mut answer = judge(q, cohorts, sampled);
    let (_, batches, _) = engine.collect(&errors_sql, usize::MAX).await?;
    let mut errors = ErrorKinds::default();
    for batch in &batches {
        for i in 0..batch.num_rows() {
            let Some(cohort) = text(batch, "cohort", i) else {
                continue;
            };
            let side = if cohort == q.baseline { 0 } else { 1 };
            errors.add(side, error_kind(batch, i), text(batch, "trace_id", i));
        }
    }
    answer.new_errors = new_errors(errors);
    finish(&mut answer, q);
    Ok(answer)
}

fn fold_bins(batches: &[RecordBatch], q: &CompareQuestion) -> Result<Cohorts, Error> {
    let mut out = Cohorts::new();
    for batch in batches {
        let bins = batch
            .column_by_name("bin")
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .ok_or_else(|| Error::Internal {
                message: "the comparison's bins are not 32-bit integers".into(),
            })?;
        for i in 0..batch.num_rows() {
            let (Some(route), Some(cohort)) = (text(batch, "route", i), text(batch, "cohort", i))
            else {
                continue;
            };
            let side = usize::from(cohort != q.baseline);
            let entry = out.entry(route.to_string()).or_default();
            let c = &mut entry[side];
            let requests = int64(batch, "requests", i);
            c.requests += requests.max(0) as u64;
            c.errors += int64(batch, "errors", i).max(0) as u64;
            c.sketch.add_bin(
                bins.value(i),
                requests,
                int64(batch, "least", i),
                int64(batch, "most", i),
            );
        }
    }
    Ok(out)
}

/// The value of `key` in a JSON object of attributes, as text.
fn attribute_value(json: &str, key: &str) -> Option<String> {
    if json.len() <= 2 {
        return None;
    }
    let map: serde_json::Map<String, Value> = serde_json::from_str(json).ok()?;
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn fold_attributes(batches: &[RecordBatch], q: &CompareQuestion) -> (Cohorts, ErrorKinds) {
    let mut out = Cohorts::new();
    let mut errors = ErrorKinds::default();
    for batch in batches {
        let failed = batch.column_by_name("failed").map(|c| c.as_boolean());
        for i in 0..batch.num_rows() {
            let value = text(batch, "attributes", i)
                .and_then(|j| attribute_value(j, &q.by))
                .or_else(|| {
                    text(batch, "resource_attributes", i).and_then(|j| attribute_value(j, &q.by))
                });
            let side = match value {
                Some(v) if v == q.baseline => 0,
                Some(v) if v == q.candidate => 1,
                _ => continue,
            };
            let Some(route) = text(batch, "route", i) else {
                continue;
            };
            let bad = failed.is_some_and(|f| !f.is_null(i) && f.value(i));
            let c = &mut out.entry(route.to_string()).or_default()[side];
            c.requests += 1;
            c.sketch.add(int64(batch, "duration_ns", i));
            if bad {
                c.errors += 1;
                errors.add(side, error_kind(batch, i), text(batch, "trace_id", i));
            }
        }
    }
    (out, errors)
}

/// A failed request's error: its exception type, else its status message's pattern.
fn error_kind(batch: &RecordBatch, i: usize) -> Option<String> {
    text(batch, "exception_type", i)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .or_else(|| {
            text(batch, "status_message", i)
                .filter(|s| !s.is_empty())
                .map(crate::mask::pattern)
        })
}

#[derive(Default)]
struct ErrorKinds {
    /// Per side: error → (count, an example trace).
    sides: [HashMap<String, (u64, String)>; 2],
}

impl ErrorKinds {
    fn add(&mut self, side: usize, kind: Option<String>, trace_id: Option<&str>) {
        let Some(kind) = kind else { return };
        let entry = self.sides[side]
            .entry(kind)
            .or_insert_with(|| (0, trace_id.unwrap_or_default().to_string()));
        entry.0 += 1;
    }
}

fn new_errors(kinds: ErrorKinds) -> Vec<NewError> {
    let [baseline, candidate] = kinds.sides;
    let mut out: Vec<NewError> = candidate
        .into_iter()
        .filter(|(kind, _)| !baseline.contains_key(kind))
        .map(|(error, (count, example_trace_id))| NewError {
            error,
            count,
            example_trace_id,
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.error.cmp(&b.error)));
    out.truncate(MAX_NEW_ERRORS);
    out
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0} ms"),
        Some(v) => format!("{v:.1} ms"),
        None => "–".into(),
    }
}

fn p_words(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// Each route's verdict, from its cohorts.
fn judge(q: &CompareQuestion, cohorts: Cohorts, sampled: bool) -> Comparison {
    let floors = q.floors;
    let mut routes: Vec<(String, [Cohort; 2])> = cohorts.into_iter().collect();
    routes.sort_by(|a, b| {
        (b.1[0].requests + b.1[1].requests)
            .cmp(&(a.1[0].requests + a.1[1].requests))
            .then(a.0.cmp(&b.0))
    });
    routes.truncate(MAX_ROUTES);
    let baseline_requests = routes.iter().map(|r| r.1[0].requests).sum();
    let candidate_requests = routes.iter().map(|r| r.1[1].requests).sum();
    let enough = |c: &[Cohort; 2]| c.iter().all(|c| c.requests >= floors.min_requests.max(1));
    let tests = routes.iter().filter(|r| enough(&r.1)).count().max(1) * (1 + PERCENTILES.len());
    let alpha = floors.significance / tests as f64;
    let mut out = Vec::new();
    for (route, [base, cand]) in routes {
        let (b, c) = (base.stats(), cand.stats());
        let mut reasons = Vec::new();
        let mut checks = Vec::new();
        if base.requests < floors.min_requests.max(1) || cand.requests < floors.min_requests.max(1)
        {
            reasons.push(format!(
                "{} baseline and {} candidate requests: each needs at least {} (min_requests)",
                base.requests, cand.requests, floors.min_requests
            ));
            out.push(RouteComparison {
                route,
                baseline: b,
                candidate: c,
                verdict: Verdict::InsufficientData,
                reasons,
                checks,
            });
            continue;
        }
        // Errors.
        let p = two_proportion_p(
            cand.errors as f64,
            cand.requests as f64,
            base.errors as f64,
            base.requests as f64,
        );
        let delta_points = (c.error_rate - b.error_rate) * 100.0;
        let verdict = if p < alpha && delta_points >= floors.error_rate_points {
            Verdict::Worse
        } else if p < alpha && -delta_points >= floors.error_rate_points {
            Verdict::Better
        } else {
            Verdict::Same
        };
        if verdict != Verdict::Same {
            reasons.push(format!(
                "error rate {:.2}% vs {:.2}% ({:+.2} points, {})",
                c.error_rate * 100.0,
                b.error_rate * 100.0,
                delta_points,
                p_words(p)
            ));
        }
        checks.push(Check {
            measure: "error_rate".into(),
            verdict,
            p_value: Some(p),
        });
        // Latency: the share past the baseline's percentile, cohort against cohort.
        for (quantile, name) in PERCENTILES {
            let expected_tail = |n: u64| n as f64 * (1.0 - quantile);
            let (Some(bq), Some(cq)) = (
                base.sketch.quantile(quantile),
                cand.sketch.quantile(quantile),
            ) else {
                continue;
            };
            if expected_tail(base.requests) < 10.0 || expected_tail(cand.requests) < 10.0 {
                checks.push(Check {
                    measure: name.into(),
                    verdict: Verdict::InsufficientData,
                    p_value: None,
                });
                continue;
            }
            // The share of each cohort past the lower of the two percentiles (past its bin: a
            // duration in the same bin is not slower): a slower candidate has more requests
            // past the baseline's, a faster one leaves more of the baseline's past its own.
            let cut = bq.min(cq);
            let p = two_proportion_p(
                cand.slower_than(cut) as f64,
                cand.requests as f64,
                base.slower_than(cut) as f64,
                base.requests as f64,
            );
            let (bms, cms) = (bq / 1e6, cq / 1e6);
            let apart = (cms - bms).abs() > MIN_LATENCY_DELTA_MS;
            let verdict = if p < alpha && apart && cms >= bms * (1.0 + floors.latency_ratio) {
                Verdict::Worse
            } else if p < alpha && apart && cms <= bms * (1.0 - floors.latency_ratio) {
                Verdict::Better
            } else {
                Verdict::Same
            };
            if verdict != Verdict::Same {
                reasons.push(format!(
                    "{name} {} vs {} ({:+.0}%, {})",
                    ms(Some(cms)),
                    ms(Some(bms)),
                    (cms / bms - 1.0) * 100.0,
                    p_words(p)
                ));
            }
            checks.push(Check {
                measure: name.into(),
                verdict,
                p_value: Some(p),
            });
        }
        let verdict = if checks.iter().any(|c| c.verdict == Verdict::Worse) {
            Verdict::Worse
        } else if checks.iter().any(|c| c.verdict == Verdict::Better) {
            Verdict::Better
        } else {
            Verdict::Same
        };
        out.push(RouteComparison {
            route,
            baseline: b,
            candidate: c,
            verdict,
            reasons,
            checks,
        });
    }
    Comparison {
        service: q.service.clone(),
        by: q.by.clone(),
        baseline: q.baseline.clone(),
        candidate: q.candidate.clone(),
        verdict: Verdict::InsufficientData,
        summary: String::new(),
        regressions: Vec::new(),
        routes: out,
        new_errors: Vec::new(),
        baseline_requests,
        candidate_requests,
        floors,
        per_test_significance: alpha,
        sampled,
    }
}

/// The whole verdict, its regressions and its words.
fn finish(answer: &mut Comparison, q: &CompareQuestion) {
    let cohort = |v: &str| format!("{}={v}", q.by);
    let mut regressions: Vec<String> = answer
        .routes
        .iter()
        .filter(|r| r.verdict == Verdict::Worse)
        .map(|r| format!("{}: {}", r.route, r.reasons.join("; ")))
        .collect();
    // "Never seen in the baseline" says something only of a baseline that served enough requests:
    // a misspelt or absent baseline is insufficient data, not a regression.
    let baseline_seen = answer.baseline_requests >= q.floors.min_requests;
    for e in &answer.new_errors {
        if baseline_seen && e.count >= q.floors.new_error_min {
            regressions.push(format!(
                "new error {} in {} requests, never seen in {}",
                e.error,
                e.count,
                cohort(&q.baseline)
            ));
        }
    }
    let compared = answer
        .routes
        .iter()
        .any(|r| r.verdict != Verdict::InsufficientData);
    answer.verdict = if !regressions.is_empty() {
        Verdict::Worse
    } else if !compared {
        Verdict::InsufficientData
    } else if answer.routes.iter().any(|r| r.verdict == Verdict::Better) {
        Verdict::Better
    } else {
        Verdict::Same
    };
    answer.summary = match answer.verdict {
        Verdict::Worse => format!(
            "{} is worse than {}: {}",
            cohort(&q.candidate),
            cohort(&q.baseline),
            regressions.join("; ")
        ),
        Verdict::InsufficientData if answer.baseline_requests == 0 => format!(
            "no requests of {} with {} in the window: is the baseline right?",
            q.service,
            cohort(&q.baseline)
        ),
        Verdict::InsufficientData if answer.candidate_requests == 0 => format!(
            "no requests of {} with {} in the window: is the candidate deployed and serving?",
            q.service,
            cohort(&q.candidate)
        ),
        Verdict::InsufficientData => format!(
            "too few requests to compare ({} baseline, {} candidate; each route needs {} in both): wait longer or widen the window",
            answer.baseline_requests, answer.candidate_requests, q.floors.min_requests
        ),
        Verdict::Better => {
            let better: Vec<String> = answer
                .routes
                .iter()
                .filter(|r| r.verdict == Verdict::Better)
                .map(|r| format!("{}: {}", r.route, r.reasons.join("; ")))
                .collect();
            format!(
                "{} is better than {}: {}",
                cohort(&q.candidate),
                cohort(&q.baseline),
                better.join("; ")
            )
        }
        Verdict::Same => format!(
            "no difference that matters between {} and {} on {} routes",
            cohort(&q.baseline),
            cohort(&q.candidate),
            answer
                .routes
                .iter()
                .filter(|r| r.verdict != Verdict::InsufficientData)
                .count()
        ),
    };
    answer.regressions = regressions;
}

/// The versions a service served in `range` (when `by` is a promoted column: its values), with
/// their requests, the one first seen first: what the comparison page offers to compare.
pub async fn cohort_values(
    engine: &QueryEngine,
    service: &str,
    by: &str,
    range: TimeRange,
) -> Result<Vec<(String, u64)>, Error> {
    let Some(column) = promoted(by) else {
        return Ok(Vec::new());
    };
    let mut conditions = time_conditions("start_time", range);
    conditions.push(is_request_sql().into());
    conditions.push(format!("service_name = {}", quote(service)));
    conditions.push(format!("{column} IS NOT NULL"));
    let sql = format!(
        "SELECT {column} AS value, count(*) AS requests, min(start_time) AS first FROM spans \
         WHERE {} GROUP BY 1 ORDER BY 3 LIMIT 100",
        conditions.join(" AND ")
    );
    let (_, batches, _) = engine.collect(&sql, 100).await?;
    let mut out = Vec::new();
    for batch in &batches {
        for i in 0..batch.num_rows() {
            if let Some(value) = text(batch, "value", i) {
                out.push((value.to_string(), int64(batch, "requests", i).max(0) as u64));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(requests: u64, errors: u64, duration_ms: f64, slow_share: f64) -> Cohort {
        let mut c = Cohort {
            requests,
            errors,
            ..Cohort::default()
        };
        for i in 0..requests {
            let slow = (i as f64) < requests as f64 * slow_share;
            let ms = if slow { duration_ms * 5.0 } else { duration_ms };
            c.sketch.add((ms * 1e6) as i64 + (i % 7) as i64 * 100_000);
        }
        c
    }

    fn question() -> CompareQuestion {
        CompareQuestion {
            service: "orders".into(),
            by: "service.version".into(),
            baseline: "1.4.2".into(),
            candidate: "1.5.0".into(),
            route: None,
            start_ns: 0,
            end_ns: 1,
            floors: Floors::default(),
        }
    }

    fn verdict(base: Cohort, cand: Cohort) -> Comparison {
        let q = question();
        let mut cohorts = Cohorts::new();
        cohorts.insert("/api/orders".into(), [base, cand]);
        let mut answer = judge(&q, cohorts, false);
        finish(&mut answer, &q);
        answer
    }

    #[test]
    fn a_real_error_regression_is_worse_and_named() {
        let answer = verdict(cohort(5000, 25, 20.0, 0.0), cohort(5000, 400, 20.0, 0.0));
        assert_eq!(answer.verdict, Verdict::Worse, "{answer:#?}");
        assert!(
            answer.regressions[0].contains("error rate 8.00% vs 0.50%"),
            "{:?}",
            answer.regressions
        );
    }

    #[test]
    fn a_significant_but_tiny_error_change_is_the_same() {
        // 0.5% → 0.8%: significant at this volume, under the 0.5-point floor.
        let answer = verdict(
            cohort(200_000, 1000, 20.0, 0.0),
            cohort(200_000, 1600, 20.0, 0.0),
        );
        assert_eq!(
            answer.routes[0].checks[0].verdict,
            Verdict::Same,
            "{answer:#?}"
        );
        assert!(answer.routes[0].checks[0].p_value.unwrap() < 1e-6);
        assert_eq!(answer.verdict, Verdict::Same);
    }

    #[test]
    fn a_slower_tail_is_worse_at_p95_and_p99() {
        let answer = verdict(cohort(5000, 0, 20.0, 0.01), cohort(5000, 0, 20.0, 0.20));
        assert_eq!(answer.verdict, Verdict::Worse, "{answer:#?}");
        let p95 = answer.routes[0]
            .checks
            .iter()
            .find(|c| c.measure == "p95")
            .unwrap();
        assert_eq!(p95.verdict, Verdict::Worse);
        let p50 = answer.routes[0]
            .checks
            .iter()
            .find(|c| c.measure == "p50")
            .unwrap();
        assert_eq!(p50.verdict, Verdict::Same);
    }

    #[test]
    fn too_few_requests_give_no_verdict() {
        let answer = verdict(cohort(20, 0, 20.0, 0.0), cohort(5000, 2000, 20.0, 0.0));
        assert_eq!(answer.verdict, Verdict::InsufficientData, "{answer:#?}");
        assert!(answer.routes[0].reasons[0].contains("min_requests"));
    }

    #[test]
    fn a_faster_release_is_better() {
        let answer = verdict(cohort(5000, 0, 40.0, 0.0), cohort(5000, 0, 20.0, 0.0));
        assert_eq!(answer.verdict, Verdict::Better, "{answer:#?}");
    }

    #[test]
    fn new_errors_above_their_floor_make_it_worse() {
        let mut kinds = ErrorKinds::default();
        kinds.add(0, Some("ValueError".into()), Some("a"));
        for _ in 0..12 {
            kinds.add(1, Some("httpx.ReadTimeout".into()), Some("b"));
            kinds.add(1, Some("ValueError".into()), Some("c"));
        }
        let q = question();
        let mut cohorts = Cohorts::new();
        cohorts.insert(
            "/a".into(),
            [cohort(500, 1, 20.0, 0.0), cohort(500, 1, 20.0, 0.0)],
        );
        let mut answer = judge(&q, cohorts, false);
        answer.new_errors = new_errors(kinds);
        finish(&mut answer, &q);
        assert_eq!(answer.new_errors.len(), 1);
        assert_eq!(answer.new_errors[0].error, "httpx.ReadTimeout");
        assert_eq!(answer.verdict, Verdict::Worse);
        assert!(
            answer
                .summary
                .contains("new error httpx.ReadTimeout in 12 requests"),
            "{}",
            answer.summary
        );
    }
}
