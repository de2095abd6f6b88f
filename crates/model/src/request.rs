//! What a request and a failure are: the one definition behind every rate and error count the
//! pages, the API and the CLI show. A request is a span a service serves (`server`) or a task
//! a worker takes from a queue (`consumer`); it failed when its status is `error` or it answered
//! with an HTTP 5xx; its route is `http_route`, else the span name.
//!
//! The Rust form ([`SpanKind::is_request`], [`is_failure`], [`route`]) judges rows in memory (the
//! rollups, the trace page, the CLI); the SQL form ([`is_request_sql`], [`is_failure_sql`],
//! [`ROUTE_SQL`]) is generated from the same names and numbers and judges rows in queries. A
//! test in the query crate runs both over a table of cases.

use std::sync::OnceLock;

/// The role of a span, as OTLP's `SpanKind` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanKind {
    /// Work inside a service (also OTLP's unspecified kind).
    #[default]
    Internal,
    /// A request a service served.
    Server,
    /// A call a service made to another.
    Client,
    /// A message a service put on a queue.
    Producer,
    /// A message or task a worker took from a queue.
    Consumer,
}

impl SpanKind {
    /// Every kind.
    pub const ALL: [SpanKind; 5] = [
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    /// The name stored in the `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Server => "server",
            Self::Client => "client",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }

    /// The kind of an OTLP `SpanKind` number (unspecified and unknown numbers are internal).
    pub fn from_otlp(kind: i32) -> Self {
        match kind {
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Internal,
        }
    }

    /// The kind a `kind` column value names.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Whether spans of this kind are requests: what a service serves and what a worker takes
    /// from a queue.
    pub fn is_request(self) -> bool {
        matches!(self, Self::Server | Self::Consumer)
    }
}

/// A span's status, as OTLP's `Status.code` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanStatus {
    /// No status was set.
    #[default]
    Unset,
    /// The span said it succeeded.
    Ok,
    /// The span said it failed.
    Error,
}

impl SpanStatus {
    /// Every status.
    pub const ALL: [SpanStatus; 3] = [SpanStatus::Unset, SpanStatus::Ok, SpanStatus::Error];

    /// The name stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }

    /// The status of an OTLP `Status.code` (unknown codes are unset).
    pub fn from_otlp(code: i32) -> Self {
        match code {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// The status a `status` column value names.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// HTTP status codes from this one up mark a failed request (the server's fault); 4xx answers
/// are the client's and count as served.
pub const FIRST_FAILING_HTTP_STATUS: i64 = 500;

/// Whether a request failed: its status is `error`, or it answered with an HTTP 5xx.
pub fn is_failure(status: SpanStatus, http_status_code: Option<i64>) -> bool {
    status == SpanStatus::Error || http_status_code.is_some_and(|c| c >= FIRST_FAILING_HTTP_STATUS)
}

/// [`is_failure`] of a row read as text (the API's JSON): an unknown status counts as unset.
pub fn is_failure_text(status: &str, http_status_code: Option<i64>) -> bool {
    is_failure(
        SpanStatus::parse(status).unwrap_or_default(),
        http_status_code,
    )
}

/// The route a request is grouped by: its `http_route`, else the span name (a task's name).
pub fn route<'a>(http_route: Option<&'a str>, name: &'a str) -> &'a str {
    http_route.unwrap_or(name)
}

/// [`SpanKind::is_request`] over the `spans` table: `kind IN ('server', 'consumer')`.
pub fn is_request_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let kinds: Vec<String> = SpanKind::ALL
            .into_iter()
            .filter(|k| k.is_request())
            .map(|k| format!("'{}'", k.as_str()))
            .collect();
        format!("kind IN ({})", kinds.join(", "))
    })
}

/// [`is_failure`] over the `spans` table. Never NULL (a missing status code is not a failure),
/// so `NOT` of it selects exactly the requests that did not fail.
pub fn is_failure_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "(status = '{}' OR coalesce(http_status_code, 0) >= {FIRST_FAILING_HTTP_STATUS})",
            SpanStatus::Error.as_str()
        )
    })
}

/// [`route`] over the `spans` table.
pub const ROUTE_SQL: &str = "coalesce(http_route, name)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_otlp_numbers_map_as_the_specification_says() {
        for kind in SpanKind::ALL {
            assert_eq!(SpanKind::parse(kind.as_str()), Some(kind));
        }
        for status in SpanStatus::ALL {
            assert_eq!(SpanStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SpanKind::from_otlp(0), SpanKind::Internal);
        assert_eq!(SpanKind::from_otlp(2), SpanKind::Server);
        assert_eq!(SpanKind::from_otlp(5), SpanKind::Consumer);
        assert_eq!(SpanStatus::from_otlp(2), SpanStatus::Error);
        assert_eq!(SpanStatus::from_otlp(9), SpanStatus::Unset);
    }

    #[test]
    fn a_failure_is_status_error_or_a_5xx_answer() {
        assert!(is_failure(SpanStatus::Error, None));
        assert!(is_failure(SpanStatus::Ok, Some(503)));
        assert!(is_failure(SpanStatus::Unset, Some(500)));
        assert!(!is_failure(SpanStatus::Unset, Some(404)));
        assert!(!is_failure(SpanStatus::Ok, None));
        assert!(is_failure_text("unset", Some(502)));
        assert!(!is_failure_text("", Some(200)));
        assert_eq!(is_request_sql(), "kind IN ('server', 'consumer')");
        assert_eq!(route(None, "send_email"), "send_email");
        assert_eq!(
            route(Some("/orders/{id}"), "GET /orders/{id}"),
            "/orders/{id}"
        );
    }
}
