//! Jaeger's query API over `spans`, so Grafana's Jaeger data source (and anything else that
//! speaks Jaeger's HTTP JSON) reads Sightline: services, operations, trace search, a trace by
//! id and the service dependency graph, in Jaeger's UI span model (`traceID`, `spanID`,
//! `references`, microsecond `startTime`/`duration`, typed `tags`, `logs` from span events,
//! a `processes` map). Spans are translated as Jaeger's own OTLP translator does: the span kind
//! as `span.kind`, the status as `otel.status_code` (and `error = true` on failures), the
//! instrumentation scope as `otel.scope.name`, links as `FOLLOWS_FROM` references and the
//! resource as the process's tags. The HTTP routes and the envelope live in the server
//! (`server/jaeger_api.rs`); this module answers the questions.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::{Map, Value, json};
use sightline_model::TimeRange;

use crate::json::batch_objects;
use crate::overview::str_of;
use crate::sql::{quote, time_conditions, where_clause};
use crate::{Error, QueryEngine};

/// Spans one trace may have in an answer; a longer trace is cut (Jaeger has no such signal, so
/// the trace carries a warning saying so).
const MAX_TRACE_SPANS: usize = 50_000;
/// Most traces one search answers, whatever `limit` asks.
pub const MAX_SEARCH_TRACES: usize = 1_500;
/// Traces a search answers when `limit` is absent or 0 (Jaeger's default).
pub const DEFAULT_SEARCH_TRACES: usize = 100;
/// Most distinct services or operations listed.
const MAX_NAMES: usize = 10_000;

/// Columns the span model is built from; times as integers so nothing is lost to text.
const SPAN_COLUMNS: &str = "trace_id, span_id, parent_span_id, name, kind, status, status_message, \
     service_name, scope_name, sample_rate, attributes, resource_attributes, events, links, \
     CAST(start_time AS BIGINT) AS start_ns, duration_ns";
const SPAN_JSON_COLUMNS: &[&str] = &["attributes", "resource_attributes", "events", "links"];

/// An operation (span name) of a service, and the kind of its spans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// The span name.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    #[serde(rename = "spanKind")]
    pub span_kind: String,
}

/// Calls from one service to another: spans of `child` whose parent span belongs to `parent`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// The calling service.
    pub parent: String,
    /// The called service.
    pub child: String,
    /// Parent/child span pairs between them in the window.
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

/// What a trace search asks for (Jaeger's `/api/traces` parameters, parsed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceSearch {
    /// Only traces with a span of this service (any service when `None`).
    pub service: Option<String>,
    /// ...whose name is this.
    pub operation: Option<String>,
    /// ...which has every one of these tags (span attributes, resource attributes, or the
    /// translated `span.kind`, `error`, `otel.status_code`), compared as text.
    pub tags: Vec<(String, String)>,
    /// ...which took at least this long.
    pub min_duration_ns: Option<i64>,
    /// ...and at most this long.
    pub max_duration_ns: Option<i64>,
    /// ...and started in this window.
    pub range: TimeRange,
    /// Traces answered, newest first.
    pub limit: usize,
}

/// Every service that sent spans in `range` (all of them without bounds), sorted.
pub async fn services(engine: &QueryEngine, range: TimeRange) -> Result<Vec<String>, Error> {
    let filter = where_clause(&time_conditions("start_time", range));
    let sql = format!(
        "SELECT DISTINCT service_name FROM spans {filter} ORDER BY service_name LIMIT {MAX_NAMES}"
    );
    let rows = engine.objects(&sql, MAX_NAMES).await?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("service_name").and_then(Value::as_str))
        .map(str::to_string)
        .collect())
}

/// The operations (span names) of a service, with their span kind, sorted by name; only those
/// of `span_kind` when given.
pub async fn operations(
    engine: &QueryEngine,
    service: &str,
    span_kind: Option<&str>,
    range: TimeRange,
) -> Result<Vec<Operation>, Error> {
    let mut conditions = time_conditions("start_time", range);
    conditions.push(format!("service_name = {}", quote(service)));
    if let Some(kind) = span_kind {
        conditions.push(format!("kind = {}", quote(kind)));
    }
    let sql = format!(
        "SELECT name, kind FROM spans {} GROUP BY name, kind ORDER BY name, kind LIMIT {MAX_NAMES}",
        where_clause(&conditions)
    );
    let rows = engine.objects(&sql, MAX_NAMES).await?;
    Ok(rows
        .iter()
        .map(|r| Operation {
            name: str_of(r, "name"),
            span_kind: str_of(r, "kind"),
        })
        .collect())
}

/// The span kinds Jaeger's `spanKind` parameter may name.
pub const SPAN_KINDS: [&str; 5] = ["server", "client", "producer", "consumer", "internal"];

/// The traces matching `search`, newest first, each whole (every span of the trace, in and out
/// of the window), in Jaeger's trace model.
pub async fn find_traces(engine: &QueryEngine, search: &TraceSearch) -> Result<Vec<Value>, Error> {
    let mut conditions = time_conditions("start_time", search.range);
    if let Some(service) = &search.service {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    if let Some(operation) = &search.operation {
        conditions.push(format!("name = {}", quote(operation)));
    }
    if let Some(min) = search.min_duration_ns {
        conditions.push(format!("duration_ns >= {min}"));
    }
    if let Some(max) = search.max_duration_ns {
        conditions.push(format!("duration_ns <= {max}"));
    }
    for (key, value) in &search.tags {
        conditions.push(tag_condition(key, value));
    }
    let limit = search.limit.clamp(1, MAX_SEARCH_TRACES);
    let sql = format!(
        "SELECT trace_id, min(start_time) AS first FROM spans {} GROUP BY trace_id \
         ORDER BY first DESC, trace_id LIMIT {limit}",
        where_clause(&conditions)
    );
    let ids: Vec<String> = engine
        .objects(&sql, limit)
        .await?
        .iter()
        .map(|r| str_of(r, "trace_id"))
        .collect();
    let mut traces = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(trace) = trace(engine, &id).await? {
            traces.push(trace);
        }
    }
    Ok(traces)
}

/// One trace in Jaeger's model, or `None` when no span of it is stored. `trace_id` is 32 hex
/// characters (any case); a shorter id is read with leading zeros, as Jaeger does.
pub async fn trace(engine: &QueryEngine, trace_id: &str) -> Result<Option<Value>, Error> {
    let id = normalize_trace_id(trace_id).ok_or_else(|| Error::Invalid {
        message: format!(
            "unable to parse param 'traceID': {trace_id:?} is not a trace id (1 to 32 hex characters)"
        ),
    })?;
    let sql = format!(
        "SELECT {SPAN_COLUMNS} FROM spans WHERE trace_id = {} ORDER BY start_time, span_id",
        quote(&id)
    );
    let (_, batches, cut) = engine.collect(&sql, MAX_TRACE_SPANS).await?;
    let spans: Vec<Map<String, Value>> = batches
        .iter()
        .flat_map(|b| batch_objects(b, SPAN_JSON_COLUMNS))
        .collect();
    if spans.is_empty() {
        return Ok(None);
    }
    Ok(Some(trace_model(&id, &spans, cut)))
}

/// A trace id as stored: lower-case, 32 hex characters (a shorter id gets leading zeros).
pub fn normalize_trace_id(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty() && text.len() <= 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| format!("{:0>32}", text.to_ascii_lowercase()))
}

/// Calls between services in `range`: parent/child span pairs whose services differ (calls
/// within a service are not dependencies, as in Jaeger).
pub async fn dependencies(
    engine: &QueryEngine,
    range: TimeRange,
    service: Option<&str>,
) -> Result<Vec<Dependency>, Error> {
    let of_service = match service {
        Some(s) => format!(
            " AND (p.service_name = {0} OR c.service_name = {0})",
            quote(s)
        ),
        None => String::new(),
    };
    let mut child_conditions = time_conditions("start_time", range);
    child_conditions.push("parent_span_id IS NOT NULL".into());
    let parent_conditions = time_conditions("start_time", range);
    let sql = format!(
        "SELECT p.service_name AS parent, c.service_name AS child, count(*) AS calls \
         FROM (SELECT trace_id, parent_span_id, service_name FROM spans {}) c \
         JOIN (SELECT trace_id, span_id, service_name FROM spans {}) p \
         ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
         WHERE p.service_name <> c.service_name{of_service} \
         GROUP BY p.service_name, c.service_name ORDER BY parent, child LIMIT {MAX_NAMES}",
        where_clause(&child_conditions),
        where_clause(&parent_conditions),
    );
    let rows = engine.objects(&sql, MAX_NAMES).await?;
    Ok(rows
        .iter()
        .map(|r| Dependency {
            parent: str_of(r, "parent"),
            child: str_of(r, "child"),
            call_count: r.get("calls").and_then(Value::as_u64).unwrap_or(0),
        })
        .collect())
}

/// The SQL condition of one searched tag: the translated tags Jaeger shows (`error`,
/// `span.kind`, `otel.status_code`, `otel.status_description`, `otel.scope.name`) read their
/// columns; any other key is a span or resource attribute compared as text.
fn tag_condition(key: &str, value: &str) -> String {
    let quoted = quote(value);
    match key {
        // Go's bool spellings; anything else matches nothing, as in Jaeger.
        "error" => match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => "status = 'error'".into(),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => "status <> 'error'".into(),
            _ => "false".into(),
        },
        "span.kind" => format!("kind = lower({quoted})"),
        "otel.status_code" | "span.status" => format!("upper(status) = upper({quoted})"),
        "otel.status_description" => format!("status_message = {quoted}"),
        "otel.scope.name" | "scope.name" => format!("scope_name = {quoted}"),
        "http.status_code" | "http.response.status_code" => format!(
            "(CAST(http_status_code AS VARCHAR) = {quoted} OR json_as_text(attributes, {}) = {quoted})",
            quote(key)
        ),
        _ if key.starts_with("resource.") && key.len() > "resource.".len() => format!(
            "json_as_text(resource_attributes, {}) = {quoted}",
            quote(&key["resource.".len()..])
        ),
        _ => {
            // Span events' and links' attributes count too: their JSON text holds the pair as
            // `"key":"value"` (or `"key":value` for numbers and booleans).
            let pair = |v: Value| quote(&format!("{}:{}", Value::String(key.to_string()), v));
            let mut pairs = vec![pair(Value::String(value.to_string()))];
            if let Ok(scalar @ (Value::Number(_) | Value::Bool(_))) =
                serde_json::from_str::<Value>(value)
            {
                pairs.push(pair(scalar));
            }
            let in_text = pairs
                .iter()
                .flat_map(|p| {
                    [
                        format!("strpos(events, {p}) > 0"),
                        format!("strpos(links, {p}) > 0"),
                    ]
                })
                .collect::<Vec<_>>()
                .join(" OR ");
            let key = quote(key);
            format!(
                "(json_as_text(attributes, {key}) = {quoted} \
                 OR json_as_text(resource_attributes, {key}) = {quoted} OR {in_text})"
            )
        }
    }
}

/// Reads a Jaeger duration parameter: Go's duration syntax (`1.5s`, `100ms`, `500us`, `2m`,
/// `1h30m`, `250ns`; `µs` too), as nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let expected = "expected a duration such as 100ms, 1.5s, 500us or 1m30s";
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(format!("empty duration: {expected}"));
    }
    if trimmed == "0" {
        return Ok(0);
    }
    let mut total = 0f64;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration: {expected}"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("{text:?} has a number without a unit: {expected}")),
            unit => return Err(format!("{text:?} has an unknown unit {unit:?}: {expected}")),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(format!("{text:?} is too long a duration"));
    }
    Ok(total.round() as i64)
}

/// Spans (rows of [`SPAN_COLUMNS`] with JSON columns parsed) as one trace of Jaeger's model,
/// with one process per distinct service and resource.
fn trace_model(trace_id: &str, rows: &[Map<String, Value>], cut: bool) -> Value {
    let mut processes: Vec<(String, Value)> = Vec::new();
    let mut process_of: HashMap<String, String> = HashMap::new();
    let mut spans = Vec::with_capacity(rows.len());
    for row in rows {
        let service = str_of(row, "service_name");
        let resource = row
            .get("resource_attributes")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let process_key = format!("{service}\u{0}{}", Value::Object(resource.clone()));
        let process_id = match process_of.get(&process_key) {
            Some(id) => id.clone(),
            None => {
                let id = format!("p{}", processes.len() + 1);
                let tags: Vec<Value> = sorted(&resource)
                    .into_iter()
                    .filter(|(k, _)| k.as_str() != "service.name")
                    .map(|(k, v)| tag(k, v))
                    .collect();
                processes.push((id.clone(), json!({"serviceName": service, "tags": tags})));
                process_of.insert(process_key, id.clone());
                id
            }
        };
        spans.push(span_model(row, &process_id));
    }
    let warnings = if cut {
        json!([format!(
            "the trace has more than {MAX_TRACE_SPANS} spans; the rest are not shown"
        )])
    } else {
        Value::Null
    };
    json!({
        "traceID": trace_id,
        "spans": spans,
        "processes": Value::Object(processes.into_iter().collect()),
        "warnings": warnings,
    })
}

fn span_model(row: &Map<String, Value>, process_id: &str) -> Value {
    let trace_id = str_of(row, "trace_id");
    let mut references = Vec::new();
    if let Some(parent) = row.get("parent_span_id").and_then(Value::as_str) {
        references.push(json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": parent}));
    }
    for link in row
        .get("links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(t), Some(s)) = (
            link.get("trace_id").and_then(Value::as_str),
            link.get("span_id").and_then(Value::as_str),
        ) else {
            continue;
        };
        references.push(json!({"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s}));
    }
    // Jaeger's order: the scope, the attributes by key, then kind and status.
    let mut tags: Vec<Value> = Vec::new();
    if let Some(scope) = row
        .get("scope_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        tags.push(tag("otel.scope.name", &json!(scope)));
    }
    if let Some(attributes) = row.get("attributes").and_then(Value::as_object) {
        tags.extend(sorted(attributes).into_iter().map(|(k, v)| tag(k, v)));
    }
    let kind = str_of(row, "kind");
    if !kind.is_empty() {
        tags.push(tag("span.kind", &json!(kind)));
    }
    match str_of(row, "status").as_str() {
        "error" => {
            tags.push(tag("otel.status_code", &json!("ERROR")));
            tags.push(tag("error", &json!(true)));
            if let Some(message) = row
                .get("status_message")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                tags.push(tag("otel.status_description", &json!(message)));
            }
        }
        "ok" => tags.push(tag("otel.status_code", &json!("OK"))),
        _ => {}
    }
    if let Some(rate) = row.get("sample_rate").and_then(Value::as_f64)
        && rate > 0.0
        && rate < 1.0
    {
        tags.push(tag("sampler.type", &json!("probabilistic")));
        tags.push(tag("sampler.param", &json!(rate)));
    }
    let logs: Vec<Value> = row
        .get("events")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|event| {
            let attributes = event.get("attributes").and_then(Value::as_object);
            let name = event.get("name").and_then(Value::as_str).unwrap_or("");
            let mut fields = Vec::new();
            // The name is the `event` field, unless the event has an attribute of that name.
            if !name.is_empty() && !attributes.is_some_and(|a| a.contains_key("event")) {
                fields.push(tag("event", &json!(name)));
            }
            if let Some(attributes) = attributes {
                fields.extend(sorted(attributes).into_iter().map(|(k, v)| tag(k, v)));
            }
            let ns = event.get("time_ns").and_then(Value::as_i64).unwrap_or(0);
            json!({"timestamp": ns / 1_000, "fields": fields})
        })
        .collect();
    let start_ns = row.get("start_ns").and_then(Value::as_i64).unwrap_or(0);
    let duration_ns = row.get("duration_ns").and_then(Value::as_i64).unwrap_or(0);
    json!({
        "traceID": trace_id,
        "spanID": str_of(row, "span_id"),
        "operationName": str_of(row, "name"),
        "references": references,
        "startTime": start_ns / 1_000,
        "duration": duration_ns / 1_000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": Value::Null,
    })
}

/// A key and a JSON value as a Jaeger tag: strings, booleans, integers (`int64`) and floats
/// (`float64`) keep their type; arrays and maps are written as JSON text.
fn tag(key: &str, value: &Value) -> Value {
    let (kind, value) = match value {
        Value::String(s) => ("string", Value::String(s.clone())),
        Value::Bool(b) => ("bool", Value::Bool(*b)),
        // JavaScript reads numbers past 2^53 - 1 wrong: Jaeger sends those as digits.
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            let exact = n
                .as_i64()
                .is_some_and(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER);
            if exact {
                ("int64", Value::Number(n.clone()))
            } else {
                ("int64", Value::String(n.to_string()))
            }
        }
        Value::Number(n) => ("float64", Value::Number(n.clone())),
        Value::Null => ("string", Value::String(String::new())),
        other => ("string", Value::String(other.to_string())),
    };
    json!({"key": key, "type": kind, "value": value})
}

/// The largest integer a JSON reader in JavaScript holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    map.iter().collect::<BTreeMap<_, _>>().into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_as_go_reads_them() {
        assert_eq!(parse_go_duration("100ms"), Ok(100_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("500us"), Ok(500_000));
        assert_eq!(parse_go_duration("500µs"), Ok(500_000));
        assert_eq!(parse_go_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_go_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_go_duration("250ns"), Ok(250));
        assert_eq!(parse_go_duration("0"), Ok(0));
        for bad in ["", "banana", "100", "10 ms", "1.2.3s", "5d"] {
            let error = parse_go_duration(bad).expect_err(bad);
            assert!(error.contains("expected a duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn trace_ids_read_with_leading_zeros_in_lower_case() {
        assert_eq!(
            normalize_trace_id("ABC").as_deref(),
            Some("00000000000000000000000000000abc")
        );
        let full = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(normalize_trace_id(full).as_deref(), Some(full));
        assert_eq!(normalize_trace_id("xyz"), None);
        assert_eq!(normalize_trace_id(&"a".repeat(33)), None);
    }

    #[test]
    fn tags_keep_their_types() {
        assert_eq!(tag("a", &json!("x"))["type"], "string");
        assert_eq!(tag("a", &json!(true))["type"], "bool");
        assert_eq!(tag("a", &json!(42))["type"], "int64");
        assert_eq!(
            tag("a", &json!(9_223_372_036_854_775_222i64))["value"],
            "9223372036854775222"
        );
        assert_eq!(tag("a", &json!(4.5))["type"], "float64");
        assert_eq!(
            tag("a", &json!([1, 2])),
            json!({"key": "a", "type": "string", "value": "[1,2]"})
        );
    }

    #[test]
    fn a_span_row_becomes_jaegers_span_with_references_tags_and_logs() {
        let row = json!({
            "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331",
            "parent_span_id": "00f067aa0ba902b7", "name": "GET /orders", "kind": "server",
            "status": "error", "status_message": "boom", "service_name": "orders",
            "scope_name": "opentelemetry.instrumentation.fastapi", "sample_rate": 1.0,
            "attributes": {"http.route": "/orders", "http.status_code": 500},
            "resource_attributes": {"service.name": "orders", "host.name": "web-1"},
            "events": [{"time_ns": 1_700_000_000_123_456_789i64, "name": "exception",
                        "attributes": {"exception.type": "ValueError"}}],
            "links": [{"trace_id": "11111111111111111111111111111111", "span_id": "2222222222222222", "attributes": {}}],
            "start_ns": 1_700_000_000_000_001_999i64, "duration_ns": 2_500_000,
        });
        let rows = vec![row.as_object().cloned().expect("an object")];
        let trace = trace_model("0af7651916cd43dd8448eb211c80319c", &rows, false);
        let span = &trace["spans"][0];
        assert_eq!(span["startTime"], 1_700_000_000_000_001i64);
        assert_eq!(span["duration"], 2_500);
        assert_eq!(span["processID"], "p1");
        assert_eq!(span["references"][0]["refType"], "CHILD_OF");
        assert_eq!(span["references"][1]["refType"], "FOLLOWS_FROM");
        let tags = span["tags"].as_array().expect("tags");
        let find = |k: &str| tags.iter().find(|t| t["key"] == k).cloned();
        assert_eq!(
            find("http.status_code"),
            Some(json!({"key": "http.status_code", "type": "int64", "value": 500}))
        );
        assert_eq!(
            find("error"),
            Some(json!({"key": "error", "type": "bool", "value": true}))
        );
        assert_eq!(
            find("span.kind").map(|t| t["value"].clone()),
            Some(json!("server"))
        );
        assert_eq!(span["logs"][0]["timestamp"], 1_700_000_000_123_456i64);
        assert_eq!(
            span["logs"][0]["fields"][0],
            json!({"key": "event", "type": "string", "value": "exception"})
        );
        assert_eq!(
            trace["processes"]["p1"],
            json!({"serviceName": "orders", "tags": [{"key": "host.name", "type": "string", "value": "web-1"}]})
        );
    }
}
