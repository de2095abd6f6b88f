//! `GET /api/v1/quality?service=&since=24h` (or `start=&end=`): the telemetry-quality findings
//! of a window ([`sightline_query::quality`], from the monitor's hour summaries and ingest's
//! notes per service) and the data checks' latest state.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use sightline_query::quality::ReportWindow;

use super::ApiError;
use super::api::ApiState;
use super::changes_api::window;

/// The routes, over the API's state.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/quality", get(quality))
        .with_state(state)
}

/// Reads the report's window (default the last 24 hours) and service.
pub fn report_window(
    params: &HashMap<String, String>,
    now_ns: i64,
) -> Result<ReportWindow, ApiError> {
    let (start_ns, end_ns) = window(params, now_ns, "24h")?;
    Ok(ReportWindow {
        start_ns,
        end_ns,
        service: params.get("service").filter(|s| !s.is_empty()).cloned(),
    })
}

async fn quality(
    State(state): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let window = report_window(&params, state.clock.now_ns())?;
    let findings = state
        .monitor
        .quality_report(&window, &state.metrics.ingest_notes())
        .await?;
    let checks = state.monitor.checks(window.service.as_deref());
    let time = sightline_query::json::format_time_ns;
    Ok(axum::Json(json!({
        "findings": findings,
        "checks": checks,
        "start": time(window.start_ns),
        "end": time(window.end_ns),
    }))
    .into_response())
}
