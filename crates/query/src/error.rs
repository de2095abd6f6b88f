//! Why a query failed, in words a user can act on.

use sightline_model::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the SQL endpoint is read-only: {statement} statements are not allowed; send a SELECT (or EXPLAIN SELECT) query instead"
    )]
    ReadOnly { statement: String },
    #[error("invalid query: {message}")]
    Invalid { message: String },
    #[error(
        "the query needs more memory than the limit of {limit_bytes} bytes: narrow the time range, filter more, or aggregate (a retry of the same query fails again)"
    )]
    MemoryLimit { limit_bytes: usize },
    #[error(
        "the query ran longer than the limit of {limit_ms} ms and was stopped: narrow the time range or filter more"
    )]
    Timeout { limit_ms: u64 },
    #[error("{what} was not found")]
    NotFound { what: String },
    #[error("query failed inside Sightline: {message}")]
    Internal { message: String },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::ReadOnly { .. } | Self::Invalid { .. } | Self::MemoryLimit { .. } => {
                ErrorCode::BadRequest
            }
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// Sorts a DataFusion error into what the user did wrong and what went wrong inside.
    pub fn from_datafusion(
        error: datafusion::error::DataFusionError,
        memory_limit_bytes: usize,
    ) -> Self {
        use datafusion::error::DataFusionError as E;
        match error.find_root() {
            E::ResourcesExhausted(_) => Self::MemoryLimit {
                limit_bytes: memory_limit_bytes,
            },
            E::SQL(..) | E::Plan(_) | E::SchemaError(..) | E::NotImplemented(_) => Self::Invalid {
                message: error.message().to_string(),
            },
            E::ArrowError(..) | E::Execution(_) => Self::Invalid {
                message: error.message().to_string(),
            },
            _ => Self::Internal {
                message: error.to_string(),
            },
        }
    }
}
