//! The monitor's routes: `GET /api/v1/slos` (and one by name), `GET /api/v1/alerts?state=` (and
//! one by id, with its timeline), and silences: `POST /api/v1/silences`, `GET /api/v1/silences`,
//! `DELETE /api/v1/silences/{id}` (writes need the `admin` scope; see [`crate::auth`]); deploys:
//! `POST /api/v1/deploys` (the `ingest` scope, for a CI job) and `GET /api/v1/deploys`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::Deserialize;
use serde_json::json;
use sightline_model::{ErrorCode, parse_duration_ns};
use sightline_monitor::alert::Labels;
use sightline_monitor::deploys::{Deploy, DeploySource};
use sightline_monitor::{AlertState, Monitor};

use crate::auth::Identity;
use crate::server::ApiError;

impl From<sightline_monitor::Error> for ApiError {
    fn from(e: sightline_monitor::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// The routes, over the server's monitor.
pub fn router(monitor: Monitor) -> Router {
    Router::new()
        .route("/api/v1/slos", get(slos))
        .route("/api/v1/slos/{name}", get(slo))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}", get(alert))
        .route("/api/v1/silences", get(silences).post(add_silence))
        .route("/api/v1/silences/{id}", delete(expire_silence))
        .route("/api/v1/deploys", get(deploys).post(add_deploy))
        .with_state(monitor)
}

async fn slos(State(monitor): State<Monitor>) -> Response {
    axum::Json(json!({
        "slos": monitor.slos(),
        "evaluated_at": monitor.evaluated_ns().map(sightline_query::json::format_time_ns),
    }))
    .into_response()
}

async fn slo(
    State(monitor): State<Monitor>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let slo = monitor.slo(&name).ok_or_else(|| {
        let names: Vec<String> = monitor
            .config()
            .slos
            .iter()
            .map(|s| s.name.clone())
            .collect();
        ApiError::new(
            ErrorCode::NotFound,
            format!(
                "no SLO named {name:?}; configured: {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            ),
        )
    })?;
    Ok(axum::Json(slo).into_response())
}

async fn alerts(
    State(monitor): State<Monitor>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let state = match params.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(AlertState::parse(text).ok_or_else(|| {
            ApiError::bad_request(format!(
                "parameter state {text:?} is not a state: expected pending, firing, resolved or no_data"
            ))
        })?),
    };
    Ok(axum::Json(json!({ "alerts": monitor.alerts(state) })).into_response())
}

async fn alert(
    State(monitor): State<Monitor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(monitor.alert(&id)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    matchers: Labels,
    duration: String,
    #[serde(default)]
    comment: String,
}

async fn add_silence(
    State(monitor): State<Monitor>,
    identity: Option<axum::Extension<Identity>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: SilenceRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body must be JSON like {{\"matchers\": {{\"service\": \"orders\"}}, \"duration\": \"2h\", \"comment\": \"deploying\"}} ({e})"
        ))
    })?;
    let duration_ns = parse_duration_ns(&request.duration)
        .map_err(|e| ApiError::bad_request(format!("field duration: {e}")))?;
    let silence = monitor
        .add_silence(
            request.matchers,
            duration_ns,
            request.comment,
            identity.map(|axum::Extension(i)| i.name),
        )
        .await?;
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(json!({ "id": silence.id, "silence": silence })),
    )
        .into_response())
}

async fn silences(State(monitor): State<Monitor>) -> Response {
    axum::Json(json!({ "silences": monitor.silences() })).into_response()
}

async fn expire_silence(
    State(monitor): State<Monitor>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    monitor.expire_silence(&id).await?;
    Ok(axum::Json(json!({ "id": id, "expired": true })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployRequest {
    service: String,
    version: String,
    environment: Option<String>,
    commit: Option<String>,
    /// RFC 3339 or nanoseconds since the epoch; default: now.
    time: Option<serde_json::Value>,
    description: Option<String>,
}

fn deploy_time(value: Option<&serde_json::Value>, now_ns: i64) -> Result<i64, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(now_ns),
        Some(serde_json::Value::Number(n)) => n.as_i64().ok_or_else(|| {
            ApiError::bad_request("field time: a number must be nanoseconds since the epoch")
        }),
        Some(serde_json::Value::String(text)) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|t| t.timestamp_nanos_opt())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "field time {text:?} is not a time: expected RFC 3339 (2026-12-02T10:00:00Z) or nanoseconds since the epoch"
                ))
            }),
        Some(other) => Err(ApiError::bad_request(format!(
            "field time must be RFC 3339 text or nanoseconds, not {other}"
        ))),
    }
}

async fn add_deploy(State(monitor): State<Monitor>, body: Bytes) -> Result<Response, ApiError> {
    let request: DeployRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "request body must be JSON like {{\"service\": \"orders\", \"version\": \"1.5.0\", \"commit\": \"abc123\"}} ({e})"
        ))
    })?;
    let time_ns = deploy_time(request.time.as_ref(), monitor.now_ns())?;
    let deploy = monitor.record_deploy(Deploy {
        time_ns,
        service_name: request.service,
        version: request.version,
        environment: request.environment,
        commit: request.commit,
        description: request.description,
        source: DeploySource::Api,
    })?;
    Ok((
        axum::http::StatusCode::CREATED,
        axum::Json(deploy_json(&deploy)),
    )
        .into_response())
}

fn deploy_json(d: &Deploy) -> serde_json::Value {
    json!({
        "time": sightline_query::json::format_time_ns(d.time_ns),
        "service": d.service_name,
        "version": d.version,
        "environment": d.environment,
        "commit": d.commit,
        "description": d.description,
        "source": d.source.as_str(),
    })
}

async fn deploys(
    State(monitor): State<Monitor>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let since_ns = match params.get("since").filter(|s| !s.is_empty()) {
        Some(text) => Some(
            monitor.now_ns()
                - parse_duration_ns(text)
                    .map_err(|e| ApiError::bad_request(format!("parameter since: {e}")))?,
        ),
        None => None,
    };
    let service = params
        .get("service")
        .map(String::as_str)
        .filter(|s| !s.is_empty());
    let list: Vec<serde_json::Value> = monitor
        .deploys(service, since_ns)
        .iter()
        .map(deploy_json)
        .collect();
    Ok(axum::Json(json!({ "deploys": list })).into_response())
}
