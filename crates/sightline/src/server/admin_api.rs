//! Administration (the `admin` scope, for reads too): `POST /api/v1/admin/maintenance` runs the
//! store's background work now — flush, then sampling, compaction and retention — and answers with what it
//! did (what tests and operators use instead of waiting for the schedule), and `GET
//! /api/v1/admin/redaction/scan` reports what stored data still matches the redaction rules
//! ([`crate::redact_scan`]).

use std::collections::HashMap;
use std::time::Instant;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use super::ApiError;
use super::api::{ApiState, time_range};

/// The routes, over the API's state.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/admin/maintenance", post(maintenance))
        .route("/api/v1/admin/redaction/scan", get(redaction_scan))
        .with_state(state)
}

async fn maintenance(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let started = Instant::now();
    let flushed = state.store.flush().await?;
    let maintained = state.store.maintain().await?;
    Ok(axum::Json(json!({
        "flush": {
            "segments_written": flushed.segments_written,
            "rows": flushed.rows,
            "bytes": flushed.bytes,
        },
        "compaction": {"segments_compacted": maintained.segments_compacted},
        "retention": {"segments_expired": maintained.segments_expired},
        "files_deleted": maintained.files_deleted,
        "sampling": maintained.sampling,
        "took_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
    .into_response())
}

async fn redaction_scan(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let now_ns = state.clock.now_ns();
    let range = time_range(&params, now_ns, Some("24h"))?;
    let start_ns = range.start_ns.unwrap_or(0);
    let end_ns = range.end_ns.unwrap_or(now_ns.saturating_add(1));
    if end_ns <= start_ns {
        return Err(ApiError::bad_request(
            "the window's end must be after its start (parameters start and end)",
        ));
    }
    let report = crate::redact_scan::scan(&state.engine, &state.redactor, start_ns, end_ns).await?;
    Ok(axum::Json(report).into_response())
}
