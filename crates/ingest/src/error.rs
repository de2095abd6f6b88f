//! Why a request body could not be read at all. Record-level problems are not errors: they
//! become [`crate::Rejections`] and the rest of the request is kept.

use sightline_model::ErrorCode;

/// Why a whole request body was refused. None is transient: the same body fails again.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// JSON log lines sent to a receiver of traces or metrics.
    #[error(
        "JSON lines (application/x-ndjson) are log records: POST them to /v1/logs; traces and metrics take OTLP protobuf or JSON"
    )]
    JsonLinesNotLogs,
    #[error(
        "unsupported content type {content_type:?}: expected application/x-protobuf or application/json (logs also take JSON lines, application/x-ndjson); sending it again unchanged will fail again"
    )]
    /// The `Content-Type` names neither protobuf nor JSON (or is missing).
    UnsupportedContentType {
        /// The header value as sent; empty when there was none.
        content_type: String,
    },
    #[error(
        "unsupported content encoding {encoding:?}: expected gzip or identity; sending it again unchanged will fail again"
    )]
    /// The `Content-Encoding` is neither gzip nor identity.
    UnsupportedContentEncoding {
        /// The encoding as sent, trimmed and lowercased.
        encoding: String,
    },
    #[error(
        "request body is {size_bytes} bytes or more, above the limit of {limit_bytes} bytes (max_body_bytes): send smaller batches (a retry of the same request fails again)"
    )]
    /// The body as received is larger than max_body_bytes.
    TooLarge {
        /// The size of the body as received (before decompression), in bytes.
        size_bytes: u64,
        /// The limit it broke (max_body_bytes), in bytes.
        limit_bytes: u64,
    },
    #[error(
        "request body inflates to more than {limit_bytes} bytes after gzip, the limit (max_body_bytes, applied after decompression): send smaller batches (a retry of the same request fails again)"
    )]
    /// The gzip body decompresses to more than max_body_bytes.
    InflatesTooLarge {
        /// The limit it broke (max_body_bytes), in bytes.
        limit_bytes: u64,
    },
    #[error(
        "request body is not valid gzip ({reason}): expected a gzip stream because Content-Encoding is gzip; a retry of the same body fails again"
    )]
    /// The `Content-Encoding` is gzip but the body is not a valid gzip stream.
    Gzip {
        /// The decompressor's description of the problem.
        reason: String,
    },
    #[error(
        "request body is not a valid protobuf {message} ({reason}); a retry of the same body fails again"
    )]
    /// The body does not decode as the protobuf export request of its signal.
    Protobuf {
        /// The name of the message expected (`ExportTraceServiceRequest` and so on).
        message: &'static str,
        /// The decoder's description of the problem, a long field path cut to its ends.
        reason: String,
    },
    #[error("request body is not valid OTLP/JSON: {reason}; a retry of the same body fails again")]
    /// The body is not valid JSON, or not valid OTLP/JSON (snake_case field names, an unknown
    /// enum name, a value of the wrong shape).
    Json {
        /// What is wrong and where.
        reason: String,
    },
}

impl Error {
    /// [`ErrorCode::UnsupportedMediaType`] for the content type, [`ErrorCode::PayloadTooLarge`]
    /// for size, [`ErrorCode::BadRequest`] for the rest.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedContentType { .. } | Self::JsonLinesNotLogs => {
                ErrorCode::UnsupportedMediaType
            }
            Self::TooLarge { .. } | Self::InflatesTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::UnsupportedContentEncoding { .. }
            | Self::Gzip { .. }
            | Self::Protobuf { .. }
            | Self::Json { .. } => ErrorCode::BadRequest,
        }
    }
}
