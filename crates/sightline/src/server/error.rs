//! The one place an [`ErrorCode`] becomes what a client reads: its HTTP status, its gRPC
//! status, the JSON error body, and OTLP's partial success. An internal error reaches the
//! client as a generic message with a reference; its detail is logged once, with the same
//! reference, where the error is turned into an answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::json;
use sightline_model::{ErrorCode, Signal};

/// Seconds a client should wait before retrying a refused request.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// The HTTP status of a code.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The gRPC status code of a code. Too large and too many both say RESOURCE_EXHAUSTED, as OTLP
/// expects: exporters retry it only with a pause, and a client's fault is INVALID_ARGUMENT,
/// which they never retry.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::BadRequest | ErrorCode::UnsupportedMediaType => tonic::Code::InvalidArgument,
        ErrorCode::PayloadTooLarge | ErrorCode::TooManyRequests => tonic::Code::ResourceExhausted,
        ErrorCode::Unauthorized => tonic::Code::Unauthenticated,
        ErrorCode::Forbidden => tonic::Code::PermissionDenied,
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

/// The message a client may read for an error: the error's own words, except for an internal
/// error, whose detail is logged here (once) and replaced by a reference to that log line.
pub fn client_message(code: ErrorCode, detail: String) -> String {
    if code != ErrorCode::Internal {
        return detail;
    }
    let mut bytes = [0u8; 6];
    let reference = match getrandom::fill(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        Err(_) => "none".to_string(),
    };
    tracing::error!(%reference, detail = %detail, "internal error");
    format!(
        "an internal error stopped this request (reference {reference}); the server's log holds \
         the detail under that reference. Retrying will likely fail again until it is fixed"
    )
}

/// A gRPC status for a code, with the client's message.
pub fn grpc_status(code: ErrorCode, detail: String) -> tonic::Status {
    tonic::Status::new(grpc_code(code), client_message(code, detail))
}

/// An error answer: `{"error": {"code": .., "message": ..}}` with the code's HTTP status, and
/// `Retry-After` when a retry can help.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What the client reads (for an internal error, the generic message with its reference).
    pub message: String,
}

impl ApiError {
    /// An error of `code`; an internal one is logged with its detail now.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            message: client_message(code, detail.into()),
        }
    }

    /// The client's request is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// The code's HTTP status.
    pub fn status(&self) -> StatusCode {
        http_status(self.code)
    }

    /// The JSON body: `{"error": {"code": .., "message": ..}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code.as_str(), "message": self.message}})
    }

    /// The gRPC status code number (google.rpc.Code), for `google.rpc.Status` bodies.
    pub fn grpc_code_number(&self) -> i32 {
        grpc_code(self.code) as i32
    }
}

/// Adds `Retry-After` to answers whose code says a retry helps.
pub fn with_retry_after(mut response: Response, code: ErrorCode) -> Response {
    if code.is_retryable() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        let response = (self.status(), axum::Json(self.body())).into_response();
        with_retry_after(response, code)
    }
}

impl From<sightline_storage::Error> for ApiError {
    fn from(e: sightline_storage::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

impl From<sightline_query::Error> for ApiError {
    fn from(e: sightline_query::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

/// Records of an accepted export that were left out, and the first reason: OTLP's partial
/// success.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartialSuccess {
    /// Records rejected.
    pub rejected: i64,
    /// Why the first was.
    pub message: String,
}

impl PartialSuccess {
    /// The partial success of an export that kept `rejected` records out, `None` when it
    /// kept every record (OTLP: the field is then left unset).
    pub fn of(rejections: &sightline_ingest::Rejections) -> Option<Self> {
        (rejections.count > 0).then(|| Self {
            rejected: rejections.count as i64,
            message: rejections.first_reason.clone().unwrap_or_default(),
        })
    }

    /// The OTLP/JSON answer body of an export of `signal`.
    pub fn json_body(partial: Option<&Self>, signal: Signal) -> serde_json::Value {
        let field = match signal {
            Signal::Spans => "rejectedSpans",
            Signal::Logs => "rejectedLogRecords",
            Signal::Metrics => "rejectedDataPoints",
        };
        match partial {
            Some(p) => {
                json!({"partialSuccess": {field: p.rejected.to_string(), "errorMessage": p.message}})
            }
            None => json!({}),
        }
    }

    /// The OTLP protobuf answer body of an export of `signal`.
    pub fn protobuf_body(partial: Option<&Self>, signal: Signal) -> Vec<u8> {
        match signal {
            Signal::Spans => Self::trace_response(partial).encode_to_vec(),
            Signal::Logs => Self::logs_response(partial).encode_to_vec(),
            Signal::Metrics => Self::metrics_response(partial).encode_to_vec(),
        }
    }

    /// The answer to a trace export.
    pub fn trace_response(partial: Option<&Self>) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: partial.map(|p| ExportTracePartialSuccess {
                rejected_spans: p.rejected,
                error_message: p.message.clone(),
            }),
        }
    }

    /// The answer to a logs export.
    pub fn logs_response(partial: Option<&Self>) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: partial.map(|p| ExportLogsPartialSuccess {
                rejected_log_records: p.rejected,
                error_message: p.message.clone(),
            }),
        }
    }

    /// The answer to a metrics export.
    pub fn metrics_response(partial: Option<&Self>) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: partial.map(|p| ExportMetricsPartialSuccess {
                rejected_data_points: p.rejected,
                error_message: p.message.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_http_and_one_grpc_status_and_retryable_ones_say_when() {
        for code in ErrorCode::ALL {
            let status = http_status(code);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code:?}"
            );
            let response = ApiError::new(code, "x").into_response();
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                code.is_retryable(),
                "{code:?}"
            );
        }
        assert_eq!(
            http_status(ErrorCode::TooManyRequests),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            grpc_code(ErrorCode::PayloadTooLarge),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            grpc_code(ErrorCode::BadRequest),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn an_internal_error_reaches_the_client_as_a_reference_not_its_detail() {
        let error = ApiError::new(ErrorCode::Internal, "catalog /var/lib/x: disk I/O error");
        assert!(!error.message.contains("/var/lib"), "{}", error.message);
        assert!(error.message.contains("reference "), "{}", error.message);
        let status = grpc_status(ErrorCode::Internal, "secret detail".into());
        assert!(!status.message().contains("secret"), "{}", status.message());
        let bad = ApiError::bad_request("parameter since: invalid duration");
        assert_eq!(bad.message, "parameter since: invalid duration");
    }

    #[test]
    fn partial_success_names_the_signal_field_and_keeps_the_first_reason() {
        let rejections = sightline_ingest::Rejections {
            count: 2,
            first_reason: Some("span rejected: bad id".into()),
        };
        let partial = PartialSuccess::of(&rejections);
        let body = PartialSuccess::json_body(partial.as_ref(), Signal::Logs);
        assert_eq!(body["partialSuccess"]["rejectedLogRecords"], "2");
        assert_eq!(
            body["partialSuccess"]["errorMessage"],
            "span rejected: bad id"
        );
        assert_eq!(
            PartialSuccess::json_body(None, Signal::Spans),
            serde_json::json!({})
        );
        let bytes = PartialSuccess::protobuf_body(partial.as_ref(), Signal::Metrics);
        let decoded = ExportMetricsServiceResponse::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(
            decoded.partial_success.map(|p| p.rejected_data_points),
            Some(2)
        );
    }
}
