//! What changed: `GET /api/v1/explain` (what sets a service's bad requests apart over a window;
//! see [`sightline_query::explain`]) and `GET /api/v1/logs/patterns` (log lines grouped by
//! pattern, against the window before; [`sightline_query::patterns`]) and `GET /api/v1/compare`
//! (a candidate release against its baseline; [`sightline_query::compare`]).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use sightline_query::compare::{self, CompareQuestion, Floors};
use sightline_query::explain::{self, Question, What};
use sightline_query::patterns::{self, PatternQuestion};

use super::ApiError;
use super::api::{ApiState, time_range};

/// Dimensions an answer lists unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 10;

/// The routes, over the API's state.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/explain", get(explain_route))
        .route("/api/v1/logs/patterns", get(patterns_route))
        .route("/api/v1/compare", get(compare_route))
        .with_state(state)
}

fn required<'a>(
    params: &'a HashMap<String, String>,
    name: &str,
    example: &str,
) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter {name} is required (e.g. {name}={example})"
            ))
        })
}

fn optional<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn limit(params: &HashMap<String, String>) -> Result<usize, ApiError> {
    optional(params, "limit")
        .map(|text| {
            text.parse::<usize>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "parameter limit {text:?} must be a whole number from 1 to 100"
                    ))
                })
        })
        .transpose()
        .map(|n| n.unwrap_or(DEFAULT_LIMIT))
}

/// The question's window: `since` (default `default` up to now) or `start`/`end`, ending after
/// it starts.
pub(crate) fn window(
    params: &HashMap<String, String>,
    now_ns: i64,
    default: &str,
) -> Result<(i64, i64), ApiError> {
    let range = time_range(params, now_ns, Some(default))?;
    let start_ns = range.start_ns.ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter start is required with end (or give since={default})"
        ))
    })?;
    let end_ns = range.end_ns.unwrap_or(now_ns);
    if end_ns <= start_ns {
        return Err(ApiError::bad_request(
            "the window must end after it starts (is start in the future?)",
        ));
    }
    Ok((start_ns, end_ns))
}

/// Reads an explanation's question from the query string (a window of 30 minutes up to now
/// unless `since` or `start`/`end` say otherwise).
pub fn question(params: &HashMap<String, String>, now_ns: i64) -> Result<Question, ApiError> {
    let service = required(params, "service", "orders")?.to_string();
    let (start_ns, end_ns) = window(params, now_ns, "30m")?;
    let what = match optional(params, "what") {
        None => What::Errors,
        Some(text) => What::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter what {text:?} is not known: expected errors or latency"
            ))
        })?,
    };
    let threshold_ns = optional(params, "threshold_ms")
        .map(|text| {
            text.parse::<f64>()
                .ok()
                .filter(|ms| ms.is_finite() && *ms > 0.0)
                .map(|ms| (ms * 1e6) as i64)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "parameter threshold_ms {text:?} must be a positive number of milliseconds"
                    ))
                })
        })
        .transpose()?;
    if threshold_ns.is_some() && what != What::Latency {
        return Err(ApiError::bad_request(
            "parameter threshold_ms goes with what=latency",
        ));
    }
    Ok(Question {
        service,
        route: optional(params, "route").map(str::to_string),
        start_ns,
        end_ns,
        what,
        threshold_ns,
        limit: limit(params)?,
    })
}

async fn explain_route(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let question = question(&params, state.clock.now_ns())?;
    let answer = explain::explain(&state.engine, &question).await?;
    with_window(&answer, question.start_ns, question.end_ns, None)
}

/// The answer as JSON with its window's `start` and `end` (and its baseline's `baseline_start`)
/// in RFC 3339.
fn with_window<T: Serialize>(
    answer: &T,
    start_ns: i64,
    end_ns: i64,
    baseline_start_ns: Option<i64>,
) -> Result<Response, ApiError> {
    let mut body = serde_json::to_value(answer)
        .map_err(|e| ApiError::new(sightline_model::ErrorCode::Internal, e.to_string()))?;
    if let Some(map) = body.as_object_mut() {
        let time = |ns| sightline_query::json::format_time_ns(ns).into();
        map.insert("start".into(), time(start_ns));
        map.insert("end".into(), time(end_ns));
        if let Some(ns) = baseline_start_ns {
            map.insert("baseline_start".into(), time(ns));
        }
    }
    Ok(axum::Json(body).into_response())
}

/// Patterns an answer lists unless `limit` says otherwise.
const DEFAULT_PATTERNS: usize = 50;

/// Reads a log-pattern question: a window (default the last hour), and `baseline`, how long
/// before it to compare with (default as long as the window; `0` for none).
pub fn pattern_question(
    params: &HashMap<String, String>,
    now_ns: i64,
) -> Result<PatternQuestion, ApiError> {
    let (start_ns, end_ns) = window(params, now_ns, "1h")?;
    let baseline_ns = match optional(params, "baseline") {
        None => end_ns - start_ns,
        Some("0") => 0,
        Some(text) => sightline_model::parse_duration_ns(text).map_err(|_| {
            ApiError::bad_request(format!(
                "parameter baseline {text:?} is not a duration: expected e.g. baseline=1h, or 0 for none"
            ))
        })?,
    };
    let number = |name: &str, default: usize, max: usize| {
        optional(params, name)
            .map(|text| {
                text.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "parameter {name} {text:?} must be a whole number from 1 to {max}"
                        ))
                    })
            })
            .transpose()
            .map(|n| n.unwrap_or(default))
    };
    Ok(PatternQuestion {
        service: optional(params, "service").map(str::to_string),
        severity: optional(params, "severity").map(str::to_string),
        start_ns,
        end_ns,
        baseline_ns,
        limit: number("limit", DEFAULT_PATTERNS, 500)?,
        buckets: number("buckets", 30, 500)?,
    })
}

async fn patterns_route(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let question = pattern_question(&params, state.clock.now_ns())?;
    let answer = patterns::patterns(&state.engine, &question).await?;
    with_window(
        &answer,
        question.start_ns,
        question.end_ns,
        (question.baseline_ns > 0).then_some(question.start_ns - question.baseline_ns),
    )
}

/// Reads a comparison's question: the service, the two cohorts' values (`by` defaults to
/// `service.version`), a window (default the last hour), and the floors (`min_requests`,
/// `latency_floor` in percent, `error_floor` in points, `significance`).
pub fn compare_question(
    params: &HashMap<String, String>,
    now_ns: i64,
) -> Result<CompareQuestion, ApiError> {
    let service = required(params, "service", "orders")?.to_string();
    let baseline = required(params, "baseline", "1.4.2")?.to_string();
    let candidate = required(params, "candidate", "1.5.0")?.to_string();
    let (start_ns, end_ns) = window(params, now_ns, "1h")?;
    if baseline == candidate {
        return Err(ApiError::bad_request(format!(
            "baseline and candidate are both {baseline:?}: compare two different values"
        )));
    }
    let defaults = Floors::default();
    let number = |name: &str, what: &str, ok: &dyn Fn(f64) -> bool| {
        optional(params, name)
            .map(|text| {
                text.trim_end_matches('%')
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && ok(*v))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("parameter {name} {text:?} must be {what}"))
                    })
            })
            .transpose()
    };
    let min_requests = number(
        "min_requests",
        "a whole number of requests, at least 1",
        &|v| v >= 1.0 && v.fract() == 0.0,
    )?
    .map_or(defaults.min_requests, |v| v as u64);
    let latency_ratio = number(
        "latency_floor",
        "a percentage, 0 or more (10 for +10%)",
        &|v| v >= 0.0,
    )?
    .map_or(defaults.latency_ratio, |v| v / 100.0);
    let error_rate_points = number(
        "error_floor",
        "percentage points, 0 or more (0.5 for +0.5 points)",
        &|v| v >= 0.0,
    )?
    .unwrap_or(defaults.error_rate_points);
    let significance = number("significance", "above 0 and below 1 (0.05)", &|v| {
        v > 0.0 && v < 1.0
    })?
    .unwrap_or(defaults.significance);
    Ok(CompareQuestion {
        service,
        by: optional(params, "by")
            .unwrap_or("service.version")
            .to_string(),
        baseline,
        candidate,
        route: optional(params, "route").map(str::to_string),
        start_ns,
        end_ns,
        floors: Floors {
            min_requests,
            latency_ratio,
            error_rate_points,
            significance,
            ..defaults
        },
    })
}

async fn compare_route(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let question = compare_question(&params, state.clock.now_ns())?;
    let answer = compare::compare(&state.engine, &question).await?;
    with_window(&answer, question.start_ns, question.end_ns, None)
}
