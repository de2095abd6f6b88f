//! The JSON API on the UI port: SQL, traces, logs, services, scrape targets, health and
//! self-metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use sightline_model::{Clock, TimeRange, parse_duration_ns};
use sightline_query::QueryEngine;
use sightline_query::views::{self, LogSearch};
use sightline_storage::Store;

use super::ApiError;
use crate::health::Level;
use crate::self_metrics::SelfMetrics;

/// What the API handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub engine: QueryEngine,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<SelfMetrics>,
    /// False until the log replay is done and the receivers listen.
    pub ready: Arc<AtomicBool>,
    /// Write-ahead log files the last start found cut short.
    pub torn_tails_at_start: usize,
    /// What the server's memory may take, by configuration.
    pub memory_budget: crate::health::MemoryBudget,
    /// SLOs, alerts and silences.
    pub monitor: sightline_monitor::Monitor,
    /// The redaction rules ingest applies (for scanning stored data with the same rules).
    pub redactor: sightline_ingest::Redactor,
    /// `[[scrape]]` targets and their last results.
    pub scrapes: crate::scrape::Scrapes,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/query", post(query))
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/logs", get(logs))
        .route("/api/v1/services", get(services))
        .route("/api/v1/targets", get(targets))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        sightline_model::ErrorCode::NotFound,
        format!(
            "no route {}: the API lives under /api/v1 (query, traces, logs, services, slos, alerts, silences)",
            uri.path()
        ),
    )
}

#[derive(Deserialize)]
struct QueryRequest {
    sql: String,
}

async fn query(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let request: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body must be JSON like {{\"sql\": \"SELECT ...\"}} ({e})"
        ))
    })?;
    let started = Instant::now();
    let result = state.engine.execute(&request.sql).await;
    state
        .metrics
        .record_query(started.elapsed().as_nanos() as u64, result.is_ok());
    Ok(axum::Json(result?).into_response())
}

async fn trace(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let view = views::trace(&state.engine, &trace_id).await?;
    Ok(axum::Json(view).into_response())
}

/// Reads `since` (a duration back from now) or `start`/`end` (RFC 3339 or nanoseconds).
pub fn time_range(
    params: &HashMap<String, String>,
    now_ns: i64,
    default_since: Option<&str>,
) -> Result<TimeRange, ApiError> {
    let start = params
        .get("start")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "start"))
        .transpose()?;
    let end = params
        .get("end")
        .filter(|s| !s.is_empty())
        .map(|s| parse_time(s, "end"))
        .transpose()?;
    let since = params
        .get("since")
        .filter(|s| !s.is_empty())
        .map(String::as_str);
    if let Some(since) = since.or(if start.is_none() && end.is_none() {
        default_since
    } else {
        None
    }) {
        let ns = parse_duration_ns(since)
            .map_err(|e| ApiError::bad_request(format!("parameter since: {e}")))?;
        return Ok(TimeRange::new(Some(now_ns.saturating_sub(ns)), end));
    }
    if let (Some(s), Some(e)) = (start, end)
        && s >= e
    {
        return Err(ApiError::bad_request("parameter start must be before end"));
    }
    Ok(TimeRange::new(start, end))
}

fn parse_time(text: &str, name: &str) -> Result<i64, ApiError> {
    if let Ok(ns) = text.parse::<i64>() {
        return Ok(ns);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter {name} {text:?} is not a time: expected RFC 3339 (2026-11-22T10:00:00Z) or nanoseconds since the epoch"
            ))
        })
}

async fn logs(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let range = time_range(&params, state.clock.now_ns(), None)?;
    let limit = match params.get("limit") {
        Some(text) => text.parse::<usize>().map_err(|_| {
            ApiError::bad_request(format!(
                "parameter limit {text:?} is not a positive integer"
            ))
        })?,
        None => 100,
    };
    let non_empty = |key: &str| params.get(key).filter(|v| !v.is_empty()).cloned();
    let search = LogSearch {
        service: non_empty("service"),
        severity: non_empty("severity"),
        text: non_empty("q"),
        trace_id: non_empty("trace_id"),
        attribute: non_empty("attr")
            .map(|a| views::parse_attribute_filter(&a))
            .transpose()?,
        range,
        limit,
        ascending: params.get("order").is_some_and(|o| o == "asc"),
    };
    let rows = views::logs(&state.engine, &search).await?;
    Ok(axum::Json(json!({"logs": rows})).into_response())
}

async fn services(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let now_ns = state.clock.now_ns();
    let range = time_range(&params, now_ns, Some("1h"))?;
    let window_s = match (range.start_ns, range.end_ns) {
        (Some(s), Some(e)) => (e - s) as f64 / 1e9,
        (Some(s), None) => (now_ns - s) as f64 / 1e9,
        _ => 0.0,
    };
    let services = views::services(&state.engine, range, window_s, None).await?;
    let sampled_before = state.engine.sampled_before_ns();
    let sampling = state.store.sampling_stats().unwrap_or_default();
    Ok(axum::Json(json!({
        "start": range.start_ns.map(views::format_time),
        "end": range.end_ns.map(views::format_time),
        // Counts come from the rollups of every span wherever spans are sampled, so they are
        // exact; spans before this time are a sample (weigh them by 1 / sample_rate).
        "counts_from": if counts_from_rollups(&state, range) { "span_rollups" } else { "spans" },
        "spans_sampled_before": sampled_before.map(views::format_time),
        "sampling": sampling.iter().map(|(service, (seen, kept))| (service.clone(), json!({
            "traces_seen": seen,
            "traces_kept": kept,
            "kept_share": if *seen == 0 { 1.0 } else { *kept as f64 / *seen as f64 },
        }))).collect::<serde_json::Map<_, _>>(),
        "services": services,
    }))
    .into_response())
}

fn counts_from_rollups(state: &ApiState, range: TimeRange) -> bool {
    sightline_query::red::use_rollups(&state.engine, range)
}

/// Readiness and what is wrong, if anything: `status` is `ok`, `degraded` (a check warns) or
/// `failing` (a check fails); `checks` say why in words.
/// `GET /api/v1/targets`: every `[[scrape]]` target and its last scrape, as Prometheus's
/// targets page shows them.
async fn targets(State(state): State<ApiState>) -> Response {
    axum::Json(json!({"targets": state.scrapes.statuses()})).into_response()
}

async fn healthz(State(state): State<ApiState>) -> Response {
    let ready = state.ready.load(Ordering::SeqCst);
    let stats = state.store.stats();
    let mut checks = crate::health::checks(
        &state.store,
        state.torn_tails_at_start,
        &state.memory_budget,
    );
    checks.extend(crate::health::monitor_check(&state.monitor));
    checks.extend(crate::health::scrape_checks(&state.scrapes));
    let worst = checks
        .iter()
        .map(|c| c.level)
        .max_by_key(|l| match l {
            Level::Ok => 0,
            Level::Warn => 1,
            Level::Fail => 2,
        })
        .unwrap_or(Level::Ok);
    let body = json!({
        "status": if !ready { "starting" } else { match worst {
            Level::Ok => "ok",
            Level::Warn => "degraded",
            Level::Fail => "failing",
        } },
        "ready": ready,
        "now": sightline_query::json::format_time_ns(state.clock.now_ns()),
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": state.store.data_dir().display().to_string(),
        "buffered_rows": stats.buffered_rows.values().sum::<u64>(),
        "segments": stats.segments.values().map(|s| s.0).sum::<u64>(),
        "wal_write_errors": stats.wal_write_errors,
        "checks": checks,
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let stats = state.store.stats();
    let process = crate::self_metrics::ProcessGauges {
        queries: state.engine.admission().stats(),
        query_memory_bytes: state.engine.memory_reserved(),
        resident_bytes: crate::health::resident_bytes(),
        memory_budget_bytes: state.memory_budget.total(stats.trace_index_bytes),
    };
    let mut text = state.metrics.render(&stats, &process);
    text.push_str(&crate::self_metrics::render_monitor(&state.monitor.stats()));
    if let Ok(sampling) = state.store.sampling_stats() {
        text.push_str(&crate::self_metrics::render_sampling(&sampling));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
