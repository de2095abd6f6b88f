//! What changed: `GET /api/v1/explain` (what sets a service's bad requests apart over a window;
//! see [`sightline_query::explain`]).

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sightline_query::explain::{self, Question, What};

use super::ApiError;
use super::api::{ApiState, time_range};

/// Dimensions an answer lists unless `limit` says otherwise.
const DEFAULT_LIMIT: usize = 10;

/// The routes, over the API's state.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/explain", get(explain_route))
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

/// Reads an explanation's question from the query string (a window of 30 minutes up to now
/// unless `since` or `start`/`end` say otherwise).
pub fn question(params: &HashMap<String, String>, now_ns: i64) -> Result<Question, ApiError> {
    let service = required(params, "service", "orders")?.to_string();
    let range = time_range(params, now_ns, Some("30m"))?;
    let start_ns = range.start_ns.ok_or_else(|| {
        ApiError::bad_request("parameter start is required with end (or give since=30m)")
    })?;
    let end_ns = range.end_ns.unwrap_or(now_ns);
    if end_ns <= start_ns {
        return Err(ApiError::bad_request(
            "the window must end after it starts (is start in the future?)",
        ));
    }
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
    let mut body = serde_json::to_value(&answer)
        .map_err(|e| ApiError::new(sightline_model::ErrorCode::Internal, e.to_string()))?;
    if let Some(map) = body.as_object_mut() {
        map.insert(
            "start".into(),
            sightline_query::json::format_time_ns(question.start_ns).into(),
        );
        map.insert(
            "end".into(),
            sightline_query::json::format_time_ns(question.end_ns).into(),
        );
    }
    Ok(axum::Json(body).into_response())
}
