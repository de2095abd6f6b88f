//! The closed set of error codes every Sightline error maps to, and whether a client should
//! retry. The binary's `server::error` module maps a code to its HTTP status, its gRPC status and
//! OTLP's partial success.

use serde::Serialize;

/// What kind of failure an error is, as a client needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is wrong; sending it again unchanged fails again.
    BadRequest,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The request's content type is not one the endpoint accepts.
    UnsupportedMediaType,
    /// No valid token or session came with the request.
    Unauthorized,
    /// The token is valid but lacks the scope the route needs.
    Forbidden,
    /// The thing asked for does not exist.
    NotFound,
    /// The server is saturated; retry after a pause.
    TooManyRequests,
    /// The server cannot take the request now (disk, shutdown); retry later.
    Unavailable,
    /// The work took longer than its limit.
    Timeout,
    /// A fault inside Sightline; details are in the server's log.
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 10] = [
        Self::BadRequest,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::TooManyRequests,
        Self::Unavailable,
        Self::Timeout,
        Self::Internal,
    ];

    /// The code as errors' JSON spells it (`bad_request`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::TooManyRequests => "too_many_requests",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Internal => "internal",
        }
    }

    /// Whether sending the same request again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::TooManyRequests | Self::Unavailable | Self::Timeout
        )
    }
}
