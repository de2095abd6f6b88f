//! Storage failures, each saying what failed and carrying what is needed to act on it.

use std::path::PathBuf;

use sightline_model::{ErrorCode, Table};

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a log file failed.
    #[error("write-ahead log {path}: {source}")]
    WalIo {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A log file is not what the log writes.
    #[error("write-ahead log {path} at byte {offset}: {reason}")]
    WalCorrupt {
        /// The file or folder concerned.
        path: PathBuf,
        /// The byte offset in the file.
        offset: u64,
        /// Why, in words.
        reason: String,
    },
    /// Reading or writing a segment file failed.
    #[error("segment {path}: {source}")]
    SegmentIo {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A segment file is not readable Parquet.
    #[error("segment {path}: {source}")]
    SegmentFormat {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying failure.
        source: parquet::errors::ParquetError,
    },
    /// The catalog could not be read or changed.
    #[error("catalog {path}: {source}")]
    Catalog {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying failure.
        source: rusqlite::Error,
    },
    /// Rows could not be converted (a fault in Sightline).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Too many appends wait for the log writer.
    #[error(
        "the write-ahead log queue is full ({capacity} requests waiting, storage.queue_capacity): the server is saturated, retry after a short pause"
    )]
    Saturated {
        /// The queue's capacity.
        capacity: usize,
    },
    /// The buffer holds more than `storage.max_buffer_bytes`.
    #[error(
        "{buffered_bytes} bytes are waiting to be written to segments, above the limit of {limit_bytes}: retry after a short pause"
    )]
    BufferFull {
        /// Bytes buffered now.
        buffered_bytes: u64,
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// Writing the log failed (disk full, I/O error); nothing of the request was kept.
    #[error("the storage write failed ({reason}); nothing from this request was kept, retry later")]
    WriteFailed {
        /// Why, in words.
        reason: String,
    },
    /// The store is closing or closed.
    #[error("storage is shutting down; retry against the restarted server")]
    ShuttingDown,
    /// The data folder could not be created or read.
    #[error("data folder {path}: {source}")]
    DataDir {
        /// The file or folder concerned.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A caller handed the store rows whose columns are not its table's: a fault in Sightline,
    /// which a retry cannot mend.
    #[error("rows handed to the {table} table do not have its columns")]
    SchemaMismatch {
        /// The table concerned.
        table: Table,
    },
}

impl Error {
    /// What kind of failure this is for a client.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Saturated { .. } => ErrorCode::TooManyRequests,
            Self::BufferFull { .. } | Self::WriteFailed { .. } | Self::ShuttingDown => {
                ErrorCode::Unavailable
            }
            Self::WalIo { .. }
            | Self::WalCorrupt { .. }
            | Self::SegmentIo { .. }
            | Self::SegmentFormat { .. }
            | Self::Catalog { .. }
            | Self::Arrow(_)
            | Self::DataDir { .. }
            | Self::SchemaMismatch { .. } => ErrorCode::Internal,
        }
    }
}

/// A storage result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
