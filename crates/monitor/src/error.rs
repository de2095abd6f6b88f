//! Why the monitor could not do something, in words an operator can act on.

use std::path::PathBuf;

use sightline_model::ErrorCode;

/// Why the monitor could not do something.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query over the stored telemetry failed.
    #[error(transparent)]
    Query(#[from] sightline_query::Error),
    /// The monitor's state (alert states, silences, notifications in flight) could not be
    /// read or written in the data folder.
    #[error(
        "the monitor's state at {} could not be {doing}: {source} (check the data folder's permissions and free space; evaluation goes on and retries the write)",
        path.display()
    )]
    State {
        /// The file.
        path: PathBuf,
        /// `read` or `written`.
        doing: &'static str,
        /// What the system said.
        source: std::io::Error,
    },
    /// The monitor's state file holds something else than its state.
    #[error(
        "the monitor's state at {} is not readable: {message} (move it aside to start with no alert state; the alert history in alert_events is kept)",
        path.display()
    )]
    StateFormat {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        message: String,
    },
    /// Something the request named does not exist (an alert or silence id, an SLO name).
    #[error("{what} was not found: {hint}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// Where the valid names are listed.
        hint: String,
    },
    /// The request is malformed (a silence without matchers, a bad duration).
    #[error("{message}")]
    Invalid {
        /// What is wrong and what is expected.
        message: String,
    },
    /// A bug: something the monitor itself should have prevented.
    #[error("internal monitor error: {message}")]
    Internal {
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// The kind of failure, for the HTTP status and the error body.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Query(e) => e.code(),
            Self::NotFound { .. } => ErrorCode::NotFound,
            Self::Invalid { .. } => ErrorCode::BadRequest,
            Self::State { .. } | Self::StateFormat { .. } | Self::Internal { .. } => {
                ErrorCode::Internal
            }
        }
    }
}
