//! The closed set of error codes every Sightline error maps to. One place maps a code to the
//! HTTP status, the gRPC status and whether a client should retry.

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

    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::TooManyRequests => 429,
            Self::Unavailable => 503,
            Self::Timeout => 504,
            Self::Internal => 500,
        }
    }

    /// The gRPC status code number (google.rpc.Code) for this error.
    pub fn grpc_code(self) -> i32 {
        match self {
            Self::BadRequest | Self::UnsupportedMediaType => 3, // INVALID_ARGUMENT
            Self::PayloadTooLarge => 8,                         // RESOURCE_EXHAUSTED
            Self::Unauthorized => 16,                           // UNAUTHENTICATED
            Self::Forbidden => 7,                               // PERMISSION_DENIED
            Self::NotFound => 5,                                // NOT_FOUND
            Self::TooManyRequests => 8,                         // RESOURCE_EXHAUSTED
            Self::Unavailable => 14,                            // UNAVAILABLE
            Self::Timeout => 4,                                 // DEADLINE_EXCEEDED
            Self::Internal => 13,                               // INTERNAL
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
