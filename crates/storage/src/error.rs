//! Storage failures, each saying what failed and carrying what is needed to act on it.

use std::path::PathBuf;

use sightline_model::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("write-ahead log {path}: {source}")]
    WalIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write-ahead log {path} at byte {offset}: {reason}")]
    WalCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("segment {path}: {source}")]
    SegmentIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("segment {path}: {source}")]
    SegmentFormat {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("catalog {path}: {source}")]
    Catalog {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error(
        "the write-ahead log queue is full ({capacity} requests waiting): the server is saturated, retry after a short pause"
    )]
    Saturated { capacity: usize },
    #[error(
        "{buffered_bytes} bytes are waiting to be written to segments, above the limit of {limit_bytes}: retry after a short pause"
    )]
    BufferFull {
        buffered_bytes: u64,
        limit_bytes: u64,
    },
    #[error("the storage write failed ({reason}); nothing from this request was kept, retry later")]
    WriteFailed { reason: String },
    #[error("storage is shutting down; retry against the restarted server")]
    ShuttingDown,
    #[error("data folder {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Saturated { .. } => ErrorCode::TooManyRequests,
            Self::BufferFull { .. } | Self::WriteFailed { .. } | Self::ShuttingDown => {
                ErrorCode::Unavailable
            }
            _ => ErrorCode::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
