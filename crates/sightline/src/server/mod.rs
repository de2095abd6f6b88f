//! Network servers: OTLP over HTTP ([`otlp_http`]) and gRPC ([`otlp_grpc`]), and the JSON API
//! with health and self-metrics ([`api`]). Errors are answered in one shape, [`ApiError`].

pub mod api;
pub mod otlp_grpc;
pub mod otlp_http;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sightline_model::ErrorCode;

/// Seconds a client should wait before retrying a refused request.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// An error answer: `{"error": {"code": .., "message": ..}}` with the code's HTTP status, and
/// `Retry-After` when a retry can help.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The JSON body: `{"error": {"code": .., "message": ..}}`.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"code": self.code.as_str(), "message": self.message}})
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
        if self.code == ErrorCode::Internal {
            tracing::error!(message = %self.message, "internal error");
        }
        let code = self.code;
        let response = (self.status(), axum::Json(self.body())).into_response();
        with_retry_after(response, code)
    }
}

impl From<sightline_query::Error> for ApiError {
    fn from(e: sightline_query::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}
