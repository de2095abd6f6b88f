//! The API's fixed questions, asked through the SQL engine: one trace with its logs, a log
//! search, and per-service request rate, errors and latency percentiles.

use serde::Serialize;
use serde_json::{Map, Value};
use sightline_model::TimeRange;
use sightline_model::rollup::RequestTotals;

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::json::{self, batch_objects};
use crate::sql::{quote, time_conditions, where_clause};
use sightline_model::request::{ROUTE_SQL, is_failure_sql, is_request_sql};

const SPAN_JSON_COLUMNS: &[&str] = &["attributes", "resource_attributes", "events", "links"];
const LOG_JSON_COLUMNS: &[&str] = &["attributes", "resource_attributes"];
/// Rows a trace may have before the view is cut (the answer says so).
const MAX_TRACE_ROWS: usize = 50_000;

/// Whether text is a trace id: 32 hex characters.
pub fn is_trace_id(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One trace: its spans by start time and its logs by time.
#[derive(Debug, Serialize)]
pub struct TraceView {
    /// The trace id, lowercased.
    pub trace_id: String,
    /// The spans, by start time then span id, each row an object with its JSON columns
    /// (`attributes`, `resource_attributes`, `events`, `links`) parsed.
    pub spans: Vec<Map<String, Value>>,
    /// The trace's log lines, by time, with `attributes` and `resource_attributes` parsed.
    pub logs: Vec<Map<String, Value>>,
    /// True when the spans or the logs passed 50,000 rows and were cut there.
    pub truncated: bool,
}

/// The trace `trace_id` (32 hex characters, any case). [`Error::Invalid`] for an id of another
/// form; [`Error::NotFound`] when no span or log line carries it.
pub async fn trace(engine: &QueryEngine, trace_id: &str) -> Result<TraceView, Error> {
    if !is_trace_id(trace_id) {
        return Err(Error::Invalid {
            message: format!("trace id {trace_id:?} is not 32 hex characters"),
        });
    }
    let trace_id = trace_id.to_ascii_lowercase();
    let id = quote(&trace_id);
    let spans_sql =
        format!("SELECT * FROM spans WHERE trace_id = {id} ORDER BY start_time, span_id");
    let logs_sql = format!("SELECT * FROM logs WHERE trace_id = {id} ORDER BY time");
    let ((_, span_batches, spans_cut), (_, log_batches, logs_cut)) = tokio::try_join!(
        engine.collect(&spans_sql, MAX_TRACE_ROWS),
        engine.collect(&logs_sql, MAX_TRACE_ROWS)
    )?;
    let spans: Vec<_> = span_batches
        .iter()
        .flat_map(|b| batch_objects(b, SPAN_JSON_COLUMNS))
        .collect();
    let logs: Vec<_> = log_batches
        .iter()
        .flat_map(|b| batch_objects(b, LOG_JSON_COLUMNS))
        .collect();
    if spans.is_empty() && logs.is_empty() {
        return Err(Error::NotFound {
            what: format!("trace {trace_id}"),
        });
    }
    Ok(TraceView {
        trace_id,
        spans,
        logs,
        truncated: spans_cut || logs_cut,
    })
}

/// What a log search asks for.
#[derive(Debug, Clone, Default)]
pub struct LogSearch {
    /// Only lines of this service (`service_name`).
    pub service: Option<String>,
    /// The lowest severity shown (`warn` shows warn, error and fatal).
    pub severity: Option<String>,
    /// Text the body must contain (case-insensitive).
    pub text: Option<String>,
    /// Only lines of this trace (32 hex characters, any case).
    pub trace_id: Option<String>,
    /// An attribute the line (or its resource) must have, with this value as text.
    pub attribute: Option<(String, String)>,
    /// When the lines were written (`time`).
    pub range: TimeRange,
    /// Most lines returned, held between 1 and `max_result_rows`.
    pub limit: usize,
    /// Oldest first (used to follow new lines); newest first otherwise.
    pub ascending: bool,
}

/// The log lines matching `search`, each an object with `attributes` and
/// `resource_attributes` parsed. [`Error::Invalid`] for an unknown severity or a malformed
/// trace id.
pub async fn logs(
    engine: &QueryEngine,
    search: &LogSearch,
) -> Result<Vec<Map<String, Value>>, Error> {
    let mut conditions = time_conditions("time", search.range);
    if let Some(service) = &search.service {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    if let Some(severity) = &search.severity {
        let floor = sightline_model::severity::severity_number_from_text(severity).ok_or_else(|| Error::Invalid {
            message: format!(
                "unknown severity {severity:?}: expected trace, debug, info, warn, error or fatal"
            ),
        })?;
        conditions.push(format!("severity_number >= {floor}"));
    }
    if let Some(text) = &search.text {
        conditions.push(format!("strpos(lower(body), lower({})) > 0", quote(text)));
    }
    if let Some(trace_id) = &search.trace_id {
        if !is_trace_id(trace_id) {
            return Err(Error::Invalid {
                message: format!("trace id {trace_id:?} is not 32 hex characters"),
            });
        }
        conditions.push(format!(
            "trace_id = {}",
            quote(&trace_id.to_ascii_lowercase())
        ));
    }
    if let Some((key, value)) = &search.attribute {
        let (key, value) = (quote(key), quote(value));
        conditions.push(format!(
            "(json_as_text(attributes, {key}) = {value} OR json_as_text(resource_attributes, {key}) = {value})"
        ));
    }
    let filter = where_clause(&conditions);
    let order = if search.ascending { "ASC" } else { "DESC" };
    let limit = search.limit.clamp(1, engine.config().max_result_rows);
    let sql = format!("SELECT * FROM logs {filter} ORDER BY time {order}, span_id LIMIT {limit}");
    let (_, batches, _) = engine.collect(&sql, limit).await?;
    Ok(batches
        .iter()
        .flat_map(|b| batch_objects(b, LOG_JSON_COLUMNS))
        .collect())
}

/// Reads an attribute filter written `key=value`.
pub fn parse_attribute_filter(text: &str) -> Result<(String, String), Error> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(Error::Invalid {
            message: format!(
                "attribute filter {text:?} must be written key=value, e.g. http.route=/api/orders"
            ),
        }),
    }
}

/// Requests, errors and latency of one service or route.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Red {
    /// Requests (server and consumer spans) in the window.
    pub requests: i64,
    /// Requests that failed (status error or HTTP 5xx).
    pub errors: i64,
    /// `errors / requests`, from 0 to 1; 0 without requests.
    pub error_rate: f64,
    /// Requests per second over the window.
    pub rate_per_s: f64,
    /// The median latency, in milliseconds (approximate); 0 without requests.
    pub p50_ms: f64,
    /// The 95th percentile latency, in milliseconds (approximate); 0 without requests.
    pub p95_ms: f64,
    /// The 99th percentile latency, in milliseconds (approximate); 0 without requests.
    pub p99_ms: f64,
    /// Time spent serving these requests (the sum of their durations).
    pub total_ms: f64,
}

/// One route (or task) of a service, per HTTP method.
#[derive(Debug, Serialize)]
pub struct RouteSummary {
    /// The HTTP method, when the spans carry one (tasks do not).
    pub http_method: Option<String>,
    /// The route: `http_route`, else the span name.
    pub http_route: String,
    /// The route's numbers, serialized inline.
    #[serde(flatten)]
    pub red: Red,
}

/// One service: its numbers over all its requests, and per route.
#[derive(Debug, Serialize)]
pub struct ServiceSummary {
    /// The service name.
    pub service_name: String,
    /// The service's numbers over all its routes, serialized inline.
    #[serde(flatten)]
    pub red: Red,
    /// The service's routes, the busiest first (ties by route).
    pub routes: Vec<RouteSummary>,
}

/// Per service and route: requests (server and consumer spans), errors (status error or HTTP
/// 5xx) and latency percentiles, over `range`; one service when `service` is given.
pub async fn services(
    engine: &QueryEngine,
    range: TimeRange,
    window_s: f64,
    service: Option<&str>,
) -> Result<Vec<ServiceSummary>, Error> {
    if crate::red::use_rollups(engine, range) {
        return services_from_rollups(engine, range, window_s, service).await;
    }
    let mut conditions = time_conditions("start_time", range);
    conditions.push(is_request_sql().into());
    if let Some(service) = service {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    let filter = conditions.join(" AND ");
    let measures = format!(
        "count(*) AS requests, \
        sum(CASE WHEN {failed} THEN 1 ELSE 0 END) AS errors, \
        sum(duration_ns) AS total, \
        approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) AS p50, \
        approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95, \
        approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99",
        failed = is_failure_sql(),
    );
    // One scan for both levels: the service rows are those without a route (`route` is never
    // null in a route row, since a span always has a name).
    let sql = format!(
        "SELECT service_name, http_method, route, {measures} FROM \
         (SELECT service_name, http_method, {ROUTE_SQL} AS route, status, \
          http_status_code, duration_ns FROM spans WHERE {filter}) \
         GROUP BY GROUPING SETS ((service_name), (service_name, http_method, route)) \
         ORDER BY service_name, requests DESC, route"
    );
    let (_, batches, _) = engine.collect(&sql, 100_000).await?;
    let (service_rows, route_rows): (Vec<_>, Vec<_>) = batches
        .iter()
        .flat_map(|b| batch_objects(b, &[]))
        .partition(|row| row.get("route").is_none_or(Value::is_null));
    let red = |row: &Map<String, Value>| {
        let ms = |key: &str| row.get(key).and_then(Value::as_f64).unwrap_or(0.0) / 1e6;
        Red::new(
            row.get("requests").and_then(Value::as_i64).unwrap_or(0),
            row.get("errors").and_then(Value::as_i64).unwrap_or(0),
            window_s,
            [ms("p50"), ms("p95"), ms("p99")],
            ms("total"),
        )
    };
    let mut services: Vec<ServiceSummary> = service_rows
        .into_iter()
        .map(|row| ServiceSummary {
            service_name: row
                .get("service_name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            red: red(&row),
            routes: Vec::new(),
        })
        .collect();
    services.sort_by(|a, b| a.service_name.cmp(&b.service_name));
    for row in route_rows {
        let service = row
            .get("service_name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(summary) = services.iter_mut().find(|s| s.service_name == service) {
            summary.routes.push(RouteSummary {
                http_method: row
                    .get("http_method")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                http_route: row
                    .get("route")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                red: red(&row),
            });
        }
    }
    Ok(services)
}

impl Red {
    /// From counts over a window of `window_s` seconds, the p50/p95/p99 and the time spent.
    fn new(
        requests: i64,
        errors: i64,
        window_s: f64,
        [p50_ms, p95_ms, p99_ms]: [f64; 3],
        total_ms: f64,
    ) -> Self {
        Red {
            requests,
            errors,
            error_rate: if requests > 0 {
                errors as f64 / requests as f64
            } else {
                0.0
            },
            rate_per_s: if window_s > 0.0 {
                requests as f64 / window_s
            } else {
                0.0
            },
            p50_ms,
            p95_ms,
            p99_ms,
            total_ms,
        }
    }

    fn from_totals(totals: &RequestTotals, window_s: f64) -> Self {
        let ms = |q| totals.percentile_ms(q).unwrap_or(0.0);
        Red::new(
            totals.requests,
            totals.errors,
            window_s,
            [ms(0.5), ms(0.95), ms(0.99)],
            totals.duration_sum_ns as f64 / 1e6,
        )
    }
}

/// [`services`] from the per-minute rollups: the same summaries, in the same order (services by
/// name, routes by requests then name), percentiles from merged sketches.
async fn services_from_rollups(
    engine: &QueryEngine,
    range: TimeRange,
    window_s: f64,
    service: Option<&str>,
) -> Result<Vec<ServiceSummary>, Error> {
    let (routes, names) = crate::red::totals_by(engine, range, service, |id, _| Some(id)).await?;
    let mut by_service: std::collections::BTreeMap<String, (RequestTotals, Vec<RouteSummary>)> =
        std::collections::BTreeMap::new();
    for (id, totals) in routes {
        let name = &names[id];
        let entry = by_service.entry(name.service_name.clone()).or_default();
        entry.0.merge(&totals);
        entry.1.push(RouteSummary {
            http_method: name.http_method.clone(),
            http_route: name.route.clone(),
            red: Red::from_totals(&totals, window_s),
        });
    }
    Ok(by_service
        .into_iter()
        .map(|(service_name, (totals, mut routes))| {
            routes.sort_by(|a, b| {
                b.red
                    .requests
                    .cmp(&a.red.requests)
                    .then_with(|| a.http_route.cmp(&b.http_route))
            });
            ServiceSummary {
                service_name,
                red: Red::from_totals(&totals, window_s),
                routes,
            }
        })
        .collect())
}

/// Formats a time for messages and views.
pub fn format_time(ns: i64) -> String {
    json::format_time_ns(ns)
}
