//! Why a query failed, in words a user can act on.

use sightline_model::ErrorCode;

/// Why a query failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the SQL endpoint is read-only: {statement} statements are not allowed; send a SELECT (or EXPLAIN SELECT) query instead"
    )]
    /// The statement is not a query (`SELECT`, or `EXPLAIN` of one): DDL, DML, `COPY`, `SET`
    /// and the like.
    ReadOnly {
        /// What was refused: the statement's leading keywords, or DataFusion's reason.
        statement: String,
    },
    #[error("invalid query: {message}")]
    /// The query or a parameter is wrong: bad SQL, an unknown table or column, a type error, a
    /// malformed trace id, severity or attribute filter.
    Invalid {
        /// What is wrong, for the user.
        message: String,
    },
    #[error(
        "the query needs more memory than the limit of {limit_bytes} bytes: narrow the time range, filter more, or aggregate (a retry of the same query fails again)"
    )]
    /// The query needed more memory than memory_limit_bytes (nothing spills to disk).
    MemoryLimit {
        /// The limit it broke (memory_limit_bytes), in bytes.
        limit_bytes: usize,
    },
    #[error(
        "the query ran longer than the limit of {limit_ms} ms and was stopped: narrow the time range or filter more"
    )]
    /// The query ran longer than the configured timeout and was stopped.
    Timeout {
        /// The timeout it broke, in milliseconds.
        limit_ms: u64,
    },
    #[error(
        "all {running} query slots are taken ([query] max_concurrent) and {queued} queries wait for one ([query] max_queued); this {class} query was not run ({why}): retry after a short pause"
    )]
    /// No query slot came free in time, or the queue of waiting queries was full.
    Busy {
        /// Query slots: queries that may run at once (max_concurrent).
        running: usize,
        /// Queries waiting when this one was refused.
        queued: usize,
        /// Who asked: `api`, `ui` or `monitor`.
        class: &'static str,
        /// Why it was refused, in words.
        why: String,
    },
    #[error(
        "the answer's first row alone is {row_bytes} bytes of JSON, above the answer limit of {limit_bytes} bytes ([query] max_result_bytes): select fewer or shorter columns, e.g. with substr() (a retry of the same query fails again)"
    )]
    /// Not even one row of the answer fits in max_result_bytes.
    RowTooLarge {
        /// The row's size as JSON, at least.
        row_bytes: usize,
        /// The limit it broke (max_result_bytes).
        limit_bytes: usize,
    },
    #[error("{what} was not found")]
    /// The thing asked for (a trace) has no rows.
    NotFound {
        /// What was looked for, as the message names it (`trace <id>`).
        what: String,
    },
    #[error("query failed inside Sightline: {message}")]
    /// A fault inside Sightline or DataFusion, not in the query.
    Internal {
        /// The underlying error's text.
        message: String,
    },
}

impl Error {
    /// [`ErrorCode::BadRequest`] for what the user can fix (memory included: a retry of the
    /// same query fails again), and the matching code for the rest.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::ReadOnly { .. }
            | Self::Invalid { .. }
            | Self::MemoryLimit { .. }
            | Self::RowTooLarge { .. } => ErrorCode::BadRequest,
            Self::Busy { .. } => ErrorCode::TooManyRequests,
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
