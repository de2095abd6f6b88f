//! Why a request body could not be read at all. Record-level problems are not errors: they
//! become [`crate::Rejections`] and the rest of the request is kept.

use sightline_model::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unsupported content type {content_type:?}: expected application/x-protobuf or application/json; sending it again unchanged will fail again"
    )]
    UnsupportedContentType { content_type: String },
    #[error(
        "unsupported content encoding {encoding:?}: expected gzip or identity; sending it again unchanged will fail again"
    )]
    UnsupportedContentEncoding { encoding: String },
    #[error(
        "request body is {size_bytes} bytes or more, above the limit of {limit_bytes} bytes (max_body_bytes): send smaller batches (a retry of the same request fails again)"
    )]
    TooLarge { size_bytes: u64, limit_bytes: u64 },
    #[error(
        "request body inflates to more than {limit_bytes} bytes after gzip, the limit (max_body_bytes, applied after decompression): send smaller batches (a retry of the same request fails again)"
    )]
    InflatesTooLarge { limit_bytes: u64 },
    #[error(
        "request body is not valid gzip ({reason}): expected a gzip stream because Content-Encoding is gzip; a retry of the same body fails again"
    )]
    Gzip { reason: String },
    #[error(
        "request body is not a valid protobuf {message} ({reason}); a retry of the same body fails again"
    )]
    Protobuf {
        message: &'static str,
        reason: String,
    },
    #[error("request body is not valid OTLP/JSON: {reason}; a retry of the same body fails again")]
    Json { reason: String },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedContentType { .. } => ErrorCode::UnsupportedMediaType,
            Self::TooLarge { .. } | Self::InflatesTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::UnsupportedContentEncoding { .. }
            | Self::Gzip { .. }
            | Self::Protobuf { .. }
            | Self::Json { .. } => ErrorCode::BadRequest,
        }
    }
}
