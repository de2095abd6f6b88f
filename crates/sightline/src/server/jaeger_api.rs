//! Jaeger's query API under `/jaeger/api/…` on the UI/API port, for Grafana's Jaeger data
//! source (its URL: `http://127.0.0.1:4319/jaeger`): `/api/services`,
//! `/api/services/{service}/operations`, `/api/operations`, `/api/traces` (search),
//! `/api/traces/{id}` and `/api/dependencies`. Answers and errors use Jaeger's envelope
//! (`{"data", "total", "limit", "offset", "errors"}`); the questions are answered by
//! [`sightline_query::jaeger`]. Times are Jaeger's: microseconds for search windows and spans,
//! milliseconds for dependencies' `endTs`/`lookback`.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use sightline_model::{ErrorCode, TimeRange};
use sightline_query::jaeger::{self, TraceSearch};

use super::ApiError;
use super::api::ApiState;

/// How far back a search looks when it names no `start` (Jaeger's query service: two days).
const DEFAULT_SEARCH_LOOKBACK_NS: i64 = 2 * 24 * 3_600 * 1_000_000_000;
/// How far back dependencies look when `lookback` is absent (Jaeger: one day).
const DEFAULT_DEPENDENCY_LOOKBACK_NS: i64 = 24 * 3_600 * 1_000_000_000;

/// The routes, over the API's state.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/jaeger/api/services", get(services))
        .route(
            "/jaeger/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/jaeger/api/operations", get(operations))
        .route("/jaeger/api/traces", get(find_traces))
        .route("/jaeger/api/traces/{trace_id}", get(trace))
        .route("/jaeger/api/dependencies", get(dependencies))
        .route("/jaeger/api/{*rest}", get(unknown))
        .with_state(state)
}

type Params = Query<Vec<(String, String)>>;

/// An error in Jaeger's envelope: `{"data": null, ..., "errors": [{"code", "msg"}]}` with the
/// matching HTTP status.
struct JaegerError(ApiError);

impl From<ApiError> for JaegerError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<sightline_query::Error> for JaegerError {
    fn from(e: sightline_query::Error) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let body = json!({
            "data": Value::Null,
            "total": 0,
            "limit": 0,
            "offset": 0,
            "errors": [{"code": status.as_u16(), "msg": self.0.message}],
        });
        super::error::with_retry_after((status, axum::Json(body)).into_response(), self.0.code)
    }
}

fn bad(message: String) -> JaegerError {
    JaegerError(ApiError::bad_request(message))
}

/// Jaeger's envelope around a list of names (services, operations): `total` is its length.
fn listing(data: Value) -> Response {
    let total = data.as_array().map_or(0, Vec::len);
    envelope(data, total, Value::Null)
}

/// Jaeger's envelope around traces or dependencies, whose `total` Jaeger leaves at 0.
fn answer(data: Value) -> Response {
    envelope(data, 0, Value::Null)
}

fn envelope(data: Value, total: usize, errors: Value) -> Response {
    axum::Json(json!({
        "data": data,
        "total": total,
        "limit": 0,
        "offset": 0,
        "errors": errors,
    }))
    .into_response()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

fn integer(
    params: &[(String, String)],
    name: &str,
    unit: &str,
) -> Result<Option<i64>, JaegerError> {
    param(params, name)
        .map(|text| {
            text.trim().parse::<i64>().map_err(|_| {
                bad(format!(
                    "unable to parse param '{name}': {text:?} is not a whole number of {unit}"
                ))
            })
        })
        .transpose()
}

/// A time parameter in microseconds since the epoch, as nanoseconds.
fn micros(params: &[(String, String)], name: &str) -> Result<Option<i64>, JaegerError> {
    Ok(integer(params, name, "microseconds since the epoch")?.map(|us| us.saturating_mul(1_000)))
}

async fn services(State(state): State<ApiState>) -> Result<Response, JaegerError> {
    let names = jaeger::services(&state.engine, TimeRange::default()).await?;
    Ok(listing(json!(names)))
}

async fn service_operations(
    State(state): State<ApiState>,
    Path(service): Path<String>,
) -> Result<Response, JaegerError> {
    let operations =
        jaeger::operations(&state.engine, &service, None, TimeRange::default()).await?;
    let mut names: Vec<String> = operations.into_iter().map(|o| o.name).collect();
    names.dedup();
    Ok(listing(json!(names)))
}

async fn operations(
    State(state): State<ApiState>,
    Query(params): Params,
) -> Result<Response, JaegerError> {
    let service = param(&params, "service")
        .ok_or_else(|| bad("parameter 'service' is required (e.g. service=orders)".to_string()))?;
    let kind = param(&params, "spanKind")
        .map(|text| {
            let lower = text.to_ascii_lowercase();
            jaeger::SPAN_KINDS
                .contains(&lower.as_str())
                .then_some(lower)
                .ok_or_else(|| {
                    bad(format!(
                        "unable to parse param 'spanKind': {text:?} is not one of server, client, \
                         producer, consumer, internal"
                    ))
                })
        })
        .transpose()?;
    let operations = jaeger::operations(
        &state.engine,
        service,
        kind.as_deref(),
        TimeRange::default(),
    )
    .await?;
    Ok(listing(json!(operations)))
}

/// Reads a search's parameters as Jaeger's query service does.
pub fn trace_search(params: &[(String, String)], now_ns: i64) -> Result<TraceSearch, String> {
    let failed = |e: JaegerError| e.0.message;
    let service = param(params, "service").map(str::to_string);
    let end_ns = micros(params, "end").map_err(failed)?.unwrap_or(now_ns);
    let start_ns = micros(params, "start")
        .map_err(failed)?
        .unwrap_or(end_ns.saturating_sub(DEFAULT_SEARCH_LOOKBACK_NS));
    if start_ns > end_ns {
        return Err("parameter 'start' must not be after 'end'".into());
    }
    let duration = |name: &str| {
        param(params, name)
            .map(|text| {
                jaeger::parse_go_duration(text)
                    .map_err(|e| format!("unable to parse param '{name}': {e}"))
            })
            .transpose()
    };
    let min_duration_ns = duration("minDuration")?;
    let max_duration_ns = duration("maxDuration")?;
    if let (Some(min), Some(max)) = (min_duration_ns, max_duration_ns)
        && max < min
    {
        return Err("'maxDuration' should be greater than 'minDuration'".into());
    }
    let limit = match param(params, "limit") {
        None => jaeger::DEFAULT_SEARCH_TRACES,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(0) => jaeger::DEFAULT_SEARCH_TRACES,
            Ok(n) if n > 0 => (n as usize).min(jaeger::MAX_SEARCH_TRACES),
            _ => {
                return Err(format!(
                    "unable to parse param 'limit': {text:?} is not a whole number of traces"
                ));
            }
        },
    };
    let mut tags = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "tags" if !value.is_empty() => {
                let map: serde_json::Map<String, Value> =
                    serde_json::from_str(value).map_err(|e| {
                        format!(
                            "malformed 'tags' parameter, expecting JSON of string keys and \
                             values (e.g. tags={{\"http.status_code\":\"500\"}}): {e}"
                        )
                    })?;
                for (k, v) in map {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    tags.push((k, v));
                }
            }
            "tag" => match value.split_once(':') {
                Some((k, v)) if !k.is_empty() => tags.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(format!(
                        "malformed 'tag' parameter {value:?}, expecting key:value"
                    ));
                }
            },
            _ => {}
        }
    }
    Ok(TraceSearch {
        service,
        operation: param(params, "operation").map(str::to_string),
        tags,
        min_duration_ns,
        max_duration_ns,
        range: TimeRange::new(Some(start_ns), Some(end_ns.saturating_add(1))),
        limit,
    })
}

async fn find_traces(
    State(state): State<ApiState>,
    Query(params): Params,
) -> Result<Response, JaegerError> {
    // Jaeger answers a list of ids as those traces, whatever else is asked.
    let ids: Vec<&str> = params
        .iter()
        .filter(|(k, v)| k == "traceID" && !v.is_empty())
        .map(|(_, v)| v.as_str())
        .collect();
    if !ids.is_empty() {
        let mut traces = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match jaeger::trace(&state.engine, id).await? {
                Some(trace) => traces.push(trace),
                None => missing.push(json!({"msg": "trace not found", "traceID": id})),
            }
        }
        let errors = if missing.is_empty() {
            Value::Null
        } else {
            Value::Array(missing)
        };
        return Ok(envelope(Value::Array(traces), 0, errors));
    }
    let search = trace_search(&params, state.clock.now_ns()).map_err(bad)?;
    let traces = jaeger::find_traces(&state.engine, &search).await?;
    Ok(answer(Value::Array(traces)))
}

async fn trace(
    State(state): State<ApiState>,
    Path(trace_id): Path<String>,
    Query(params): Params,
) -> Result<Response, JaegerError> {
    // Jaeger takes start/end here in microseconds and Grafana sends milliseconds; both are
    // read (the trace-id index finds the trace without them), and a malformed one is refused.
    for name in ["start", "end"] {
        integer(
            &params,
            name,
            "milliseconds or microseconds since the epoch",
        )?;
    }
    match jaeger::trace(&state.engine, &trace_id).await? {
        Some(trace) => Ok(answer(json!([trace]))),
        None => Err(JaegerError(ApiError::new(
            ErrorCode::NotFound,
            "trace not found",
        ))),
    }
}

async fn dependencies(
    State(state): State<ApiState>,
    Query(params): Params,
) -> Result<Response, JaegerError> {
    let ms = |name: &str| -> Result<Option<i64>, JaegerError> {
        Ok(integer(&params, name, "milliseconds")?.map(|v| v.saturating_mul(1_000_000)))
    };
    let end_ns = ms("endTs")?.unwrap_or_else(|| state.clock.now_ns());
    let lookback_ns = ms("lookback")?.unwrap_or(DEFAULT_DEPENDENCY_LOOKBACK_NS);
    if lookback_ns <= 0 {
        return Err(bad(
            "unable to parse param 'lookback': it must be a positive number of milliseconds".into(),
        ));
    }
    let range = TimeRange::new(
        Some(end_ns.saturating_sub(lookback_ns)),
        Some(end_ns.saturating_add(1)),
    );
    let calls = jaeger::dependencies(&state.engine, range, param(&params, "service")).await?;
    Ok(answer(json!(calls)))
}

async fn unknown(Path(rest): Path<String>) -> JaegerError {
    JaegerError(ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no Jaeger route /api/{rest}: served are /api/services, /api/services/{{service}}/operations, \
             /api/operations, /api/traces, /api/traces/{{id}} and /api/dependencies"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_search_reads_jaegers_parameters() {
        let search = trace_search(
            &pairs(&[
                ("service", "orders"),
                ("operation", "GET /orders"),
                ("tags", r#"{"http.status_code":"500","error":"true"}"#),
                ("tag", "host.name:web-1"),
                ("minDuration", "1.5ms"),
                ("maxDuration", "2s"),
                ("limit", "20"),
                ("start", "1700000000000000"),
                ("end", "1700000060000000"),
            ]),
            0,
        )
        .expect("a valid search");
        assert_eq!(search.service.as_deref(), Some("orders"));
        assert_eq!(search.operation.as_deref(), Some("GET /orders"));
        assert_eq!(search.tags.len(), 3);
        assert!(search.tags.contains(&("host.name".into(), "web-1".into())));
        assert_eq!(search.min_duration_ns, Some(1_500_000));
        assert_eq!(search.max_duration_ns, Some(2_000_000_000));
        assert_eq!(search.limit, 20);
        assert_eq!(search.range.start_ns, Some(1_700_000_000_000_000_000));
    }

    #[test]
    fn a_bad_search_names_its_parameter() {
        let now = 1_700_000_000_000_000_000;
        for (params, word) in [
            (vec![("service", "a"), ("limit", "abc")], "limit"),
            (
                vec![("service", "a"), ("minDuration", "banana")],
                "minDuration",
            ),
            (vec![("service", "a"), ("tags", "{not json")], "tags"),
            (vec![("service", "a"), ("tag", "nocolon")], "tag"),
            (vec![("service", "a"), ("start", "soon")], "start"),
            (
                vec![
                    ("service", "a"),
                    ("minDuration", "2s"),
                    ("maxDuration", "1s"),
                ],
                "maxDuration",
            ),
        ] {
            let error = trace_search(&pairs(&params), now).expect_err(word);
            assert!(error.contains(word), "{params:?}: {error}");
        }
    }
}
