//! OTLP/HTTP receiver: `POST /v1/traces`, `/v1/logs`, `/v1/metrics` with protobuf or JSON
//! bodies, and `/v1/logs` also with JSON log lines (`application/x-ndjson`), optionally
//! gzip-compressed. Answers follow the OTLP specification: 200 with partial
//! success when some records were rejected, 400 for a malformed body, 413 above the size limit,
//! 415 for another content type, 429/503 with `Retry-After` when saturated.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use sightline_ingest::{BodyEncoding, Normalized};
use sightline_model::{ErrorCode, Signal};

use super::error::PartialSuccess;
use super::{ApiError, with_retry_after};
use crate::pipeline::{Accepted, Pipeline};

/// What the OTLP/HTTP handlers share.
#[derive(Debug, Clone)]
pub struct OtlpHttpState {
    pub pipeline: Pipeline,
    pub max_body_bytes: u64,
    /// The limits and the redaction rules every body goes through.
    pub intake: sightline_ingest::Intake,
    /// Bodies being inflated and decoded at once. A decoded body can take many times its size in
    /// memory (a 15 MB JSON export peaks near 500 MB), so memory stays bounded by this many
    /// bodies; further requests wait their turn rather than fail.
    pub decoding: Arc<tokio::sync::Semaphore>,
}

pub fn router(state: OtlpHttpState) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn traces(State(state): State<OtlpHttpState>, headers: HeaderMap, body: Body) -> Response {
    export(
        state,
        Signal::Spans,
        headers,
        body,
        sightline_ingest::ingest_traces,
    )
    .await
}

/// OTLP logs, or JSON log lines (`application/x-ndjson`; `?service=` names the lines' service
/// when they do not).
async fn logs(
    State(state): State<OtlpHttpState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let service = params.get("service").filter(|s| !s.is_empty()).cloned();
    export(
        state,
        Signal::Logs,
        headers,
        body,
        move |bytes: &[u8], encoding, received_ns, intake: &sightline_ingest::Intake| match encoding
        {
            BodyEncoding::JsonLines => Ok(sightline_ingest::ingest_json_lines(
                bytes,
                service.as_deref(),
                received_ns,
                intake,
            )),
            _ => sightline_ingest::ingest_logs(bytes, encoding, received_ns, intake),
        },
    )
    .await
}

async fn metrics(State(state): State<OtlpHttpState>, headers: HeaderMap, body: Body) -> Response {
    export(
        state,
        Signal::Metrics,
        headers,
        body,
        sightline_ingest::ingest_metrics,
    )
    .await
}

/// `google.rpc.Status`: the OTLP specification requires it as the body of an error answer to a
/// protobuf request.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error_response(error: ApiError, encoding: Option<BodyEncoding>) -> Response {
    match encoding {
        Some(BodyEncoding::Protobuf) => {
            let status = RpcStatus {
                code: error.grpc_code_number(),
                message: error.message.clone(),
            };
            let response = (
                error.status(),
                [(header::CONTENT_TYPE, BodyEncoding::Protobuf.content_type())],
                status.encode_to_vec(),
            )
                .into_response();
            with_retry_after(response, error.code)
        }
        _ => {
            // The JSON form of google.rpc.Status (`code`, `message`) beside the `error` object
            // every Sightline endpoint answers with, so OTLP clients and people both read it.
            let mut body = error.body();
            body["code"] = error.grpc_code_number().into();
            body["message"] = error.message.clone().into();
            with_retry_after(
                (error.status(), axum::Json(body)).into_response(),
                error.code,
            )
        }
    }
}

async fn read_body(body: Body, headers: &HeaderMap, limit_bytes: u64) -> Result<Bytes, ApiError> {
    let too_large = |size: u64| {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "request body is {size} bytes or more, above the limit of {limit_bytes} bytes: send smaller batches (a retry of the same request fails again)"
            ),
        )
    };
    if let Some(length) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit_bytes
    {
        return Err(too_large(length));
    }
    axum::body::to_bytes(body, limit_bytes as usize)
        .await
        .map_err(|e| {
            if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large(limit_bytes + 1)
            } else {
                ApiError::bad_request(format!(
                    "request body could not be read ({e}); retry the request"
                ))
            }
        })
}

async fn export<F>(
    state: OtlpHttpState,
    signal: Signal,
    headers: HeaderMap,
    body: Body,
    ingest: F,
) -> Response
where
    F: Fn(
            &[u8],
            BodyEncoding,
            i64,
            &sightline_ingest::Intake,
        ) -> Result<Normalized, sightline_ingest::Error>
        + Send
        + 'static,
{
    let metrics = state.pipeline.metrics();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let encoding = match BodyEncoding::from_content_type(content_type) {
        Ok(encoding) => encoding,
        Err(e) => {
            metrics.record_bad_request(signal, e.code());
            return error_response(ApiError::new(e.code(), e.to_string()), None);
        }
    };
    let fail = |error: ApiError| {
        metrics.record_bad_request(signal, error.code);
        error_response(error, Some(encoding))
    };
    let raw = match read_body(body, &headers, state.max_body_bytes).await {
        Ok(raw) => raw,
        Err(error) => return fail(error),
    };
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let received_ns = state.pipeline.now_ns();
    let limit = state.max_body_bytes;
    let intake = state.intake.clone();
    // Inflating and decoding a large body is CPU work: keep it off the async workers, and do
    // only a few at once.
    let Ok(permit) = state.decoding.clone().acquire_owned().await else {
        return fail(ApiError::new(
            ErrorCode::Unavailable,
            "the server is shutting down; retry against the restarted server",
        ));
    };
    let decoded = tokio::task::spawn_blocking(move || {
        let bytes = sightline_ingest::decode_body(&raw, content_encoding.as_deref(), limit)?;
        ingest(&bytes, encoding, received_ns, &intake)
    });
    let normalized = match decoded.await {
        Ok(Ok(normalized)) => normalized,
        Ok(Err(e)) => return fail(ApiError::new(e.code(), e.to_string())),
        Err(e) => {
            return fail(ApiError::new(
                ErrorCode::Internal,
                format!("decoding failed: {e}"),
            ));
        }
    };
    // Decoded: the permit goes to the next body. The rows wait for the log in its bounded
    // queue, which refuses with 429 when full.
    drop(permit);
    match state.pipeline.store(signal, normalized).await {
        Ok(accepted) => success(signal, encoding, &accepted),
        Err(e) => error_response(ApiError::new(e.code(), e.to_string()), Some(encoding)),
    }
}

fn success(signal: Signal, encoding: BodyEncoding, accepted: &Accepted) -> Response {
    let partial = PartialSuccess::of(&accepted.rejections);
    match encoding {
        BodyEncoding::Json | BodyEncoding::JsonLines => (
            StatusCode::OK,
            axum::Json(PartialSuccess::json_body(partial.as_ref(), signal)),
        )
            .into_response(),
        BodyEncoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, BodyEncoding::Protobuf.content_type())],
            PartialSuccess::protobuf_body(partial.as_ref(), signal),
        )
            .into_response(),
    }
}
