//! Signals about the telemetry itself: a per-service report of findings (a service gone silent,
//! volume far from the same hour of other days, attributes renamed or dropped by a release, a
//! metric whose unit changed, logs without trace ids and orphan spans, exploding cardinality,
//! incomplete HTTP spans, skewed clocks, what ingest refused or cut).
//!
//! The report is built from per-hour summaries ([`HourSummary`]: span groups with their
//! attribute key sets and the minutes they were active, logs with and without trace ids,
//! metrics' units and typical values, distinct counts of span names and metric labels), each
//! made once by [`summarize_hour`] — a handful of queries over one hour — and kept by the
//! caller (the monitor keeps them on disk and makes each again only when the hour's stored data
//! changed). [`findings`] turns summaries and ingest's own counts into findings without touching
//! the store, so a report over a day reads one live hour and remembers the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, ListBuilder, StringBuilder};
use arrow::datatypes::{DataType, Field};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Signature, SimpleScalarUDF, Volatility};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sightline_model::request::ROUTE_SQL;

use crate::json::format_time_ns;
use crate::overview::str_of;
use crate::sql::time_literal;
use crate::{Error, QueryEngine};

const NS_PER_MINUTE: i64 = 60_000_000_000;
/// One hour in nanoseconds.
pub const HOUR_NS: i64 = 60 * NS_PER_MINUTE;
/// How far back the report looks for a service's usual cadence and other days' volume.
pub const HISTORY_NS: i64 = 7 * 24 * HOUR_NS;
/// Separates a key from its JSON type in a key set (`http.status_code\u{1f}number`).
const KEY_TYPE: char = '\u{1f}';
/// Rows any one summary query may return.
const MAX_ROWS: usize = 200_000;

/// What one hour of spans, logs and metrics looked like.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HourSummary {
    /// The hour's start.
    pub hour_ns: i64,
    /// What the stored data looked like when summarized (see [`QueryEngine::hour_signatures`]);
    /// a summary whose hour now has another signature is made again.
    pub signature: String,
    /// When the summary was made (by the caller's clock; 0 when not said).
    #[serde(default)]
    pub made_ns: i64,
    /// Whether a query's answer was cut at its row limit (an hour of very many span names):
    /// the shape of its spans is then not judged.
    #[serde(default)]
    pub incomplete: bool,
    /// Spans by service, version, kind, route, name and whether they are roots.
    pub spans: Vec<SpanGroup>,
    /// Logs by service and version.
    pub logs: Vec<LogGroup>,
    /// Metrics by service, version, name, unit and type.
    pub metrics: Vec<MetricGroup>,
    /// Distinct counts: span names per service, label values per metric and label key.
    pub distinct: Vec<DistinctCount>,
    /// Spans whose parent never arrived, per service.
    pub orphans: BTreeMap<String, u64>,
}

/// Spans of one group in an hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpanGroup {
    /// `service_name`.
    pub service: String,
    /// `service_version`.
    pub version: Option<String>,
    /// `kind`.
    pub kind: String,
    /// The route (`http_route`, else the name).
    pub route: String,
    /// The span name.
    pub name: String,
    /// Spans without a parent.
    pub root: bool,
    /// How many.
    pub count: u64,
    /// The minutes of the hour they were seen in (bit `i` for minute `i`).
    pub minutes: u64,
    /// The latest start.
    pub last_ns: i64,
    /// The earliest start.
    pub first_ns: i64,
    /// HTTP server spans (kind server with a method) among them...
    pub http_server: u64,
    /// ...of which without `http_route`...
    pub no_route: u64,
    /// ...and without a status code.
    pub no_status: u64,
    /// Attribute keys with their JSON type (`key\u{1f}type`) and how many spans had them.
    pub keys: BTreeMap<String, u64>,
}

/// Logs of one service and version in an hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogGroup {
    /// `service_name`.
    pub service: String,
    /// `service_version`.
    pub version: Option<String>,
    /// Lines.
    pub count: u64,
    /// Lines with a trace id.
    pub with_trace: u64,
    /// The minutes of the hour they were seen in.
    pub minutes: u64,
    /// The latest line.
    pub last_ns: i64,
}

/// Points of one metric in an hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricGroup {
    /// `service_name`.
    pub service: String,
    /// `service_version`.
    pub version: Option<String>,
    /// The metric name.
    pub name: String,
    /// Its unit (empty when none).
    pub unit: String,
    /// Its type.
    pub kind: String,
    /// Points.
    pub count: u64,
    /// The sum of the values the magnitude is judged by (a gauge's or sum's value, a
    /// histogram's or summary's sum), and how many were summed (a histogram's count).
    pub value_sum: f64,
    /// See `value_sum`.
    pub value_count: f64,
    /// The earliest point.
    pub first_ns: i64,
    /// The latest point.
    pub last_ns: i64,
}

/// A distinct count in an hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DistinctCount {
    /// The service.
    pub service: String,
    /// What was counted: `span name`, or `label KEY of METRIC`.
    pub subject: String,
    /// Distinct values (approximate).
    pub distinct: u64,
    /// Records.
    pub records: u64,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth fixing.
    Warn,
    /// Telemetry is broken.
    Error,
}

impl Severity {
    /// `info`, `warn` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// Reads `info`, `warn` or `error`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "info" => Some(Self::Info),
            "warn" => Some(Self::Warn),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// One thing wrong (or worth knowing) about a service's telemetry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// `freshness`, `volume`, `schema`, `units`, `correlation`, `cardinality`,
    /// `completeness`, `clock_skew` or `ingest`.
    pub check: &'static str,
    /// The service.
    pub service: String,
    /// The release it concerns, when one does.
    pub version: Option<String>,
    /// How serious.
    pub severity: Severity,
    /// In plain words, with the numbers.
    pub summary: String,
    /// What exactly was seen.
    pub detail: String,
    /// Since when (RFC 3339).
    pub first_seen: String,
    /// Until when (RFC 3339).
    pub last_seen: String,
}

/// What ingest counted for one service since the server started (kept by the server).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IngestNotes {
    /// Records accepted.
    pub records: u64,
    /// Records refused, and the first reason.
    pub refused: u64,
    /// The first refusal's reason.
    pub first_refusal: Option<String>,
    /// Values cut at the length limit.
    pub truncated: u64,
    /// Attributes dropped beyond the count limit.
    pub dropped: u64,
    /// Values replaced by redaction.
    pub redacted: u64,
    /// Records stamped more than a minute after they arrived.
    pub ahead: u64,
    /// Records that arrived more than an hour after their time.
    pub late: u64,
    /// When the server started counting.
    pub since_ns: i64,
}

// ---------------------------------------------------------------------------------- summaries

/// Summarizes the hour starting at `hour_ns` (with `signature`, from
/// [`QueryEngine::hour_signatures`]). Orphans are counted against spans up to an hour either side.
pub async fn summarize_hour(
    engine: &QueryEngine,
    hour_ns: i64,
    signature: String,
) -> Result<HourSummary, Error> {
    let (start, end) = (time_literal(hour_ns), time_literal(hour_ns + HOUR_NS));
    let in_hour = |column: &str| format!("{column} >= {start} AND {column} < {end}");
    let spans_sql = format!(
        "SELECT service_name, service_version, kind, {ROUTE_SQL} AS route, name, \
         parent_span_id IS NULL AS root, CAST(date_part('minute', start_time) AS BIGINT) AS minute, \
         count(*) AS n, CAST(max(start_time) AS BIGINT) AS last_ns, CAST(min(start_time) AS BIGINT) AS first_ns, \
         sum(CASE WHEN kind = 'server' AND http_method IS NOT NULL THEN 1 ELSE 0 END) AS http_server, \
         sum(CASE WHEN kind = 'server' AND http_method IS NOT NULL AND http_route IS NULL THEN 1 ELSE 0 END) AS no_route, \
         sum(CASE WHEN kind = 'server' AND http_method IS NOT NULL AND http_status_code IS NULL THEN 1 ELSE 0 END) AS no_status \
         FROM spans WHERE {} GROUP BY 1, 2, 3, 4, 5, 6, 7",
        in_hour("start_time")
    );
    let keys_sql = format!(
        "SELECT service_name, service_version, kind, route, name, root, key_type, count(*) AS n FROM (\
           SELECT service_name, service_version, kind, {ROUTE_SQL} AS route, name, parent_span_id IS NULL AS root, \
           unnest({KEY_TYPES_FUNCTION}(attributes)) AS key_type FROM spans WHERE {}) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7",
        in_hour("start_time")
    );
    let orphans_sql = format!(
        "SELECT c.service_name AS service_name, count(*) AS n FROM spans c \
         WHERE {} AND c.parent_span_id IS NOT NULL AND NOT EXISTS (\
           SELECT 1 FROM spans p WHERE p.trace_id = c.trace_id AND p.span_id = c.parent_span_id \
           AND p.start_time >= {} AND p.start_time < {}) GROUP BY 1",
        in_hour("c.start_time"),
        time_literal(hour_ns - HOUR_NS),
        time_literal(hour_ns + 2 * HOUR_NS),
    );
    let logs_sql = format!(
        "SELECT service_name, service_version, CAST(date_part('minute', time) AS BIGINT) AS minute, \
         count(*) AS n, count(trace_id) AS with_trace, CAST(max(time) AS BIGINT) AS last_ns \
         FROM logs WHERE {} GROUP BY 1, 2, 3",
        in_hour("time")
    );
    let metrics_sql = format!(
        "SELECT service_name, service_version, name, coalesce(unit, '') AS unit, type, count(*) AS n, \
         sum(CASE WHEN type IN ('histogram', 'exponential_histogram', 'summary') THEN sum ELSE value END) AS value_sum, \
         sum(CASE WHEN type IN ('histogram', 'exponential_histogram', 'summary') THEN CAST(count AS DOUBLE) \
             WHEN value IS NOT NULL THEN 1.0 ELSE 0.0 END) AS value_count, \
         CAST(min(time) AS BIGINT) AS first_ns, CAST(max(time) AS BIGINT) AS last_ns \
         FROM metrics WHERE {} GROUP BY 1, 2, 3, 4, 5",
        in_hour("time")
    );
    let names_sql = format!(
        "SELECT service_name, approx_distinct(name) AS d, count(*) AS n FROM spans WHERE {} GROUP BY 1",
        in_hour("start_time")
    );
    let labels_sql = format!(
        "SELECT service_name, name, split_part(kv, '=', 1) AS label, approx_distinct(kv) AS d, count(*) AS n FROM (\
           SELECT service_name, name, unnest({KEY_VALUES_FUNCTION}(attributes)) AS kv FROM metrics WHERE {}) \
         GROUP BY 1, 2, 3",
        in_hour("time")
    );
    let (
        (spans, cut_spans),
        (keys, cut_keys),
        (orphans, _),
        (logs, cut_logs),
        (metrics, cut_metrics),
        (names, _),
        (labels, _),
    ) = tokio::try_join!(
        objects(engine, &spans_sql),
        objects(engine, &keys_sql),
        objects(engine, &orphans_sql),
        objects(engine, &logs_sql),
        objects(engine, &metrics_sql),
        objects(engine, &names_sql),
        objects(engine, &labels_sql),
    )?;

    let mut summary = HourSummary {
        hour_ns,
        signature,
        incomplete: cut_spans || cut_keys || cut_logs || cut_metrics,
        ..Default::default()
    };

    let mut groups: BTreeMap<(String, Option<String>, String, String, String, bool), SpanGroup> =
        BTreeMap::new();
    for row in &spans {
        let key = span_key(row);
        let group = groups.entry(key.clone()).or_insert_with(|| SpanGroup {
            service: key.0.clone(),
            version: key.1.clone(),
            kind: key.2.clone(),
            route: key.3.clone(),
            name: key.4.clone(),
            root: key.5,
            first_ns: i64::MAX,
            last_ns: i64::MIN,
            ..Default::default()
        });
        group.count += int(row, "n");
        group.http_server += int(row, "http_server");
        group.no_route += int(row, "no_route");
        group.no_status += int(row, "no_status");
        group.minutes |= minute_bit(row);
        group.last_ns = group.last_ns.max(signed(row, "last_ns"));
        group.first_ns = group.first_ns.min(signed(row, "first_ns"));
    }
    for row in &keys {
        if let Some(group) = groups.get_mut(&span_key(row)) {
            let key_type = str_of(row, "key_type");
            *group.keys.entry(key_type).or_default() += int(row, "n");
        }
    }
    summary.spans = groups.into_values().collect();
    for row in &orphans {
        summary
            .orphans
            .insert(str_of(row, "service_name"), int(row, "n"));
    }
    let mut log_groups: BTreeMap<(String, Option<String>), LogGroup> = BTreeMap::new();
    for row in &logs {
        let key = (
            str_of(row, "service_name"),
            opt_text(row, "service_version"),
        );
        let group = log_groups.entry(key.clone()).or_insert_with(|| LogGroup {
            service: key.0.clone(),
            version: key.1.clone(),
            last_ns: i64::MIN,
            ..Default::default()
        });
        group.count += int(row, "n");
        group.with_trace += int(row, "with_trace");
        group.minutes |= minute_bit(row);
        group.last_ns = group.last_ns.max(signed(row, "last_ns"));
    }
    summary.logs = log_groups.into_values().collect();
    summary.metrics = metrics
        .iter()
        .map(|row| MetricGroup {
            service: str_of(row, "service_name"),
            version: opt_text(row, "service_version"),
            name: str_of(row, "name"),
            unit: str_of(row, "unit"),
            kind: str_of(row, "type"),
            count: int(row, "n"),
            value_sum: float(row, "value_sum"),
            value_count: float(row, "value_count"),
            first_ns: signed(row, "first_ns"),
            last_ns: signed(row, "last_ns"),
        })
        .collect();
    for row in &names {
        summary.distinct.push(DistinctCount {
            service: str_of(row, "service_name"),
            subject: "span name".into(),
            distinct: int(row, "d"),
            records: int(row, "n"),
        });
    }
    for row in &labels {
        summary.distinct.push(DistinctCount {
            service: str_of(row, "service_name"),
            subject: format!("label {} of {}", str_of(row, "label"), str_of(row, "name")),
            distinct: int(row, "d"),
            records: int(row, "n"),
        });
    }
    Ok(summary)
}

type SpanKey = (String, Option<String>, String, String, String, bool);

fn span_key(row: &Map<String, Value>) -> SpanKey {
    (
        str_of(row, "service_name"),
        opt_text(row, "service_version"),
        str_of(row, "kind"),
        str_of(row, "route"),
        str_of(row, "name"),
        row.get("root").and_then(Value::as_bool).unwrap_or(false),
    )
}

fn minute_bit(row: &Map<String, Value>) -> u64 {
    match row.get("minute").and_then(Value::as_i64) {
        Some(m) if (0..60).contains(&m) => 1u64 << m,
        _ => 0,
    }
}

fn opt_text(row: &Map<String, Value>, key: &str) -> Option<String> {
    row.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn int(row: &Map<String, Value>, key: &str) -> u64 {
    row.get(key)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)))
        .unwrap_or(0)
}

fn signed(row: &Map<String, Value>, key: &str) -> i64 {
    row.get(key).and_then(Value::as_i64).unwrap_or(0)
}

fn float(row: &Map<String, Value>, key: &str) -> f64 {
    row.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

/// The rows of `sql`, and whether they were cut at [`MAX_ROWS`].
async fn objects(
    engine: &QueryEngine,
    sql: &str,
) -> Result<(Vec<Map<String, Value>>, bool), Error> {
    let (_, batches, cut) = engine.collect(sql, MAX_ROWS).await?;
    Ok((
        batches
            .iter()
            .flat_map(|b| crate::json::batch_objects(b, &[]))
            .collect(),
        cut,
    ))
}

// ------------------------------------------------------------------------------ SQL functions

/// `json_key_types(attributes) -> list<text>`: each top-level key of a JSON object with its
/// JSON type (`key\u{1f}string`, `number`, `bool`, `array`, `object`, `null`).
pub const KEY_TYPES_FUNCTION: &str = "json_key_types";
/// `json_key_values(attributes) -> list<text>`: each top-level key with its value as text
/// (`key=value`), for distinct counts of label values.
pub const KEY_VALUES_FUNCTION: &str = "json_key_values";

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// Registers [`KEY_TYPES_FUNCTION`] and [`KEY_VALUES_FUNCTION`].
pub fn register(ctx: &datafusion::prelude::SessionContext) {
    fn listing(
        name: &'static str,
        each: fn(&str, &Value) -> String,
    ) -> impl Fn(&[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
        move |args: &[ColumnarValue]| {
            let [value] = args else {
                return Err(DataFusionError::Plan(format!(
                    "{name} takes one text argument, not {}",
                    args.len()
                )));
            };
            let array = value.to_array(1)?;
            let rows = array.len();
            let mut out = ListBuilder::new(StringBuilder::new());
            let mut push = |text: Option<&str>| {
                if let Some(Ok(Value::Object(map))) = text.map(serde_json::from_str::<Value>) {
                    for (k, v) in &map {
                        out.values().append_value(each(k, v));
                    }
                    out.append(true);
                } else {
                    out.append(text.is_some());
                }
            };
            if let Some(view) = array.as_string_view_opt() {
                view.iter().for_each(&mut push);
            } else if let Some(t) = array.as_string_opt::<i32>() {
                t.iter().for_each(&mut push);
            } else if let Some(t) = array.as_string_opt::<i64>() {
                t.iter().for_each(&mut push);
            } else {
                return Err(DataFusionError::Plan(format!(
                    "{name} takes text, not {}",
                    array.data_type()
                )));
            }
            let list: ArrayRef = Arc::new(out.finish());
            debug_assert_eq!(list.len(), rows);
            Ok(match value {
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(
                    datafusion::scalar::ScalarValue::try_from_array(&list, 0)?,
                ),
                ColumnarValue::Array(_) => ColumnarValue::Array(list),
            })
        }
    }
    let list_type = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    for (name, each) in [
        (
            KEY_TYPES_FUNCTION,
            (|k: &str, v: &Value| format!("{k}{KEY_TYPE}{}", json_type(v)))
                as fn(&str, &Value) -> String,
        ),
        (KEY_VALUES_FUNCTION, |k: &str, v: &Value| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        }),
    ] {
        let signature = Signature::uniform(
            1,
            vec![DataType::Utf8View, DataType::Utf8, DataType::LargeUtf8],
            Volatility::Immutable,
        );
        ctx.register_udf(ScalarUDF::from(SimpleScalarUDF::new_with_signature(
            name,
            signature,
            list_type.clone(),
            Arc::new(listing(name, each)),
        )));
    }
}

// ---------------------------------------------------------------------------------- findings

/// What the report is asked about.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportWindow {
    /// Its start: findings about the window look at data since then.
    pub start_ns: i64,
    /// Its end (now).
    pub end_ns: i64,
    /// Only this service, when given.
    pub service: Option<String>,
}

/// Semantic-convention renames: the old attribute name and its current one.
pub const RENAMES: &[(&str, &str)] = &[
    ("http.status_code", "http.response.status_code"),
    ("http.method", "http.request.method"),
    ("http.url", "url.full"),
    ("http.target", "url.path"),
    ("http.scheme", "url.scheme"),
    ("http.host", "server.address"),
    ("net.host.name", "server.address"),
    ("net.host.port", "server.port"),
    // On a client span the peer is the server; on a server span it is the client.
    ("net.peer.name", "server.address"),
    ("net.peer.port", "server.port"),
    ("net.peer.port", "client.port"),
    ("net.sock.peer.port", "client.port"),
    ("http.user_agent", "user_agent.original"),
    ("http.client_ip", "client.address"),
    ("net.peer.ip", "client.address"),
    ("net.peer.ip", "network.peer.address"),
    ("http.server_name", "server.address"),
    ("net.sock.peer.addr", "network.peer.address"),
    ("net.sock.peer.port", "network.peer.port"),
    ("net.sock.peer.addr", "client.address"),
    ("http.flavor", "network.protocol.version"),
    ("http.request_content_length", "http.request.body.size"),
    ("http.response_content_length", "http.response.body.size"),
    ("db.statement", "db.query.text"),
    ("db.system", "db.system.name"),
    ("db.name", "db.namespace"),
    ("db.operation", "db.operation.name"),
    ("messaging.destination", "messaging.destination.name"),
    ("messaging.operation", "messaging.operation.type"),
];

/// Fewest records a share is judged on.
const MIN_RECORDS: u64 = 20;

/// The findings of `window` from hour summaries (the history before it too) and ingest's notes
/// per service, most serious first, then by service.
pub fn findings(
    hours: &[HourSummary],
    notes: &BTreeMap<String, IngestNotes>,
    window: &ReportWindow,
) -> Vec<Finding> {
    let wanted = |service: &str| window.service.as_deref().is_none_or(|s| s == service);
    let in_window: Vec<&HourSummary> = hours
        .iter()
        .filter(|h| h.hour_ns + HOUR_NS > window.start_ns && h.hour_ns < window.end_ns)
        .collect();
    let mut out = Vec::new();
    out.extend(freshness(hours, window));
    out.extend(volume(hours, window));
    out.extend(schema(hours, window));
    out.extend(units(hours, window));
    out.extend(correlation(&in_window, window));
    out.extend(cardinality(&in_window, window));
    out.extend(completeness(&in_window, window));
    out.extend(ingest(notes, window));
    out.retain(|f| wanted(&f.service));
    out.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.service.cmp(&b.service))
            .then_with(|| a.check.cmp(b.check))
            .then_with(|| a.summary.cmp(&b.summary))
    });
    out
}

fn finding(
    check: &'static str,
    service: &str,
    version: Option<&str>,
    severity: Severity,
    summary: String,
    detail: String,
    first_ns: i64,
    last_ns: i64,
) -> Finding {
    Finding {
        check,
        service: service.to_string(),
        version: version.map(str::to_string),
        severity,
        summary,
        detail,
        first_seen: format_time_ns(first_ns),
        last_seen: format_time_ns(last_ns),
    }
}

fn minutes_text(ns: i64) -> String {
    let minutes = ns as f64 / NS_PER_MINUTE as f64;
    if minutes >= 120.0 {
        format!("{:.1} hours", minutes / 60.0)
    } else if minutes >= 1.5 {
        format!("{:.0} minutes", minutes)
    } else {
        "1 minute".into()
    }
}

/// `orders'` and `api's`.
fn possessive(name: &str) -> String {
    if name.ends_with('s') {
        format!("{name}'")
    } else {
        format!("{name}'s")
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Active minutes (absolute minute numbers, sorted) and the last time of a series, and the
/// versions it was seen in.
#[derive(Default)]
struct Activity<'a> {
    minutes: BTreeSet<i64>,
    last_ns: i64,
    versions: BTreeSet<&'a str>,
}

impl Activity<'_> {
    fn add(&mut self, hour_ns: i64, bits: u64, last_ns: i64) {
        let base = hour_ns / NS_PER_MINUTE;
        for m in 0..60 {
            if bits & (1 << m) != 0 {
                self.minutes.insert(base + m);
            }
        }
        self.last_ns = self.last_ns.max(last_ns);
    }

    /// The median gap between active minutes, in nanoseconds, with at least 5 of them.
    fn usual_gap_ns(&self) -> Option<i64> {
        if self.minutes.len() < 5 {
            return None;
        }
        let list: Vec<i64> = self.minutes.iter().copied().collect();
        let mut gaps: Vec<i64> = list.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        Some(gaps[gaps.len() / 2] * NS_PER_MINUTE)
    }

    /// Whether it has gone silent at `now_ns`, and how long it has been silent and its usual gap.
    fn silence(&self, now_ns: i64, window: &ReportWindow) -> Option<(i64, i64)> {
        let gap = self.usual_gap_ns()?;
        let silent = now_ns - self.last_ns;
        let allowed = (5 * NS_PER_MINUTE).max(5 * gap);
        // Gone silent within the last day (older silences are old news, not a finding).
        (silent > allowed && self.last_ns >= window.end_ns - 24 * HOUR_NS - allowed)
            .then_some((silent, gap))
    }
}

/// The releases of a service seen in its spans: each version's first and last span.
#[derive(Default)]
struct Releases<'a> {
    versions: BTreeMap<&'a str, (i64, i64)>,
}

impl<'a> Releases<'a> {
    fn add(&mut self, version: &'a str, first_ns: i64, last_ns: i64) {
        let seen = self.versions.entry(version).or_insert((first_ns, last_ns));
        seen.0 = seen.0.min(first_ns);
        seen.1 = seen.1.max(last_ns);
    }

    /// The version of the newest spans, and when it was first seen.
    fn current(&self) -> Option<(&'a str, i64)> {
        self.versions
            .iter()
            .max_by_key(|(_, (_, last))| *last)
            .map(|(v, (first, _))| (*v, *first))
    }
}

/// Whether a series that went silent stopped with a release: the service's current version never carried it and took over by the time it stopped
/// (give or take the series' usual gap). Then it is the release that removed it, if anything.
fn retired_by<'a>(
    releases: Option<&Releases<'a>>,
    series: &Activity,
    gap_ns: i64,
) -> Option<&'a str> {
    let (current, since) = releases?.current()?;
    (!series.versions.contains(current) && since <= series.last_ns + gap_ns.max(5 * NS_PER_MINUTE))
        .then_some(current)
}

fn freshness(hours: &[HourSummary], window: &ReportWindow) -> Vec<Finding> {
    let mut services: BTreeMap<&str, Activity> = BTreeMap::new();
    let mut series: BTreeMap<(&str, String), Activity> = BTreeMap::new();
    let mut releases: BTreeMap<&str, Releases> = BTreeMap::new();
    for h in hours {
        for g in &h.spans {
            services
                .entry(&g.service)
                .or_default()
                .add(h.hour_ns, g.minutes, g.last_ns);
            if let Some(version) = &g.version {
                releases
                    .entry(&g.service)
                    .or_default()
                    .add(version, g.first_ns, g.last_ns);
            }
            let what = if g.kind == "server" || g.kind == "consumer" {
                format!("route {}", g.route)
            } else if g.root {
                format!("job {}", g.name)
            } else {
                continue;
            };
            let activity = series.entry((&g.service, what)).or_default();
            activity.add(h.hour_ns, g.minutes, g.last_ns);
            activity.versions.extend(g.version.as_deref());
        }
        for g in &h.logs {
            services
                .entry(&g.service)
                .or_default()
                .add(h.hour_ns, g.minutes, g.last_ns);
        }
    }
    // Judged as of when the newest summary was made (a kept summary of the current hour may be
    // a few minutes old: what arrived since is not in it), never after the window's end.
    let now = hours
        .iter()
        .map(|h| h.made_ns)
        .filter(|m| *m > 0)
        .max()
        .map_or(window.end_ns, |made| made.min(window.end_ns));
    let mut out = Vec::new();
    let mut silent_services = BTreeSet::new();
    for (service, activity) in &services {
        if let Some((silent, gap)) = activity.silence(now, window) {
            silent_services.insert(*service);
            out.push(finding(
                "freshness",
                service,
                None,
                Severity::Error,
                format!(
                    "{service} has sent nothing for {}; it usually reports every {}",
                    minutes_text(silent),
                    minutes_text(gap)
                ),
                format!(
                    "last record at {}; active in {} minutes of the last 7 days",
                    format_time_ns(activity.last_ns),
                    activity.minutes.len()
                ),
                activity.last_ns,
                now,
            ));
        }
    }
    for ((service, what), activity) in &series {
        if silent_services.contains(service) {
            continue;
        }
        if let Some((silent, gap)) = activity.silence(now, window) {
            if let Some(release) = retired_by(releases.get(service), activity, gap) {
                let before: Vec<&str> = activity.versions.iter().copied().collect();
                out.push(finding(
                    "freshness",
                    service,
                    Some(release),
                    Severity::Info,
                    format!(
                        "{service} {what} has not been seen since {release} took over from {}: did the release remove it?",
                        before.join(", ")
                    ),
                    format!(
                        "last seen at {} in {}; {service} {release} still reports, without it",
                        format_time_ns(activity.last_ns),
                        before.join(", ")
                    ),
                    activity.last_ns,
                    now,
                ));
                continue;
            }
            out.push(finding(
                "freshness",
                service,
                None,
                Severity::Warn,
                format!(
                    "{service} {what} has not been seen for {}; it usually runs every {}",
                    minutes_text(silent),
                    minutes_text(gap)
                ),
                format!(
                    "last seen at {} while {service} still reports; active in {} minutes of the last 7 days",
                    format_time_ns(activity.last_ns),
                    activity.minutes.len()
                ),
                activity.last_ns,
                now,
            ));
        }
    }
    out
}

fn volume(hours: &[HourSummary], window: &ReportWindow) -> Vec<Finding> {
    let hour = window.end_ns.div_euclid(HOUR_NS) * HOUR_NS - HOUR_NS;
    if hour + HOUR_NS <= window.start_ns {
        return Vec::new();
    }
    // service -> hour -> (requests, log lines)
    let mut counts: BTreeMap<&str, HashMap<i64, (u64, u64)>> = BTreeMap::new();
    for h in hours {
        for g in &h.spans {
            if g.kind == "server" || g.kind == "consumer" {
                counts
                    .entry(&g.service)
                    .or_default()
                    .entry(h.hour_ns)
                    .or_default()
                    .0 += g.count;
            }
        }
        for g in &h.logs {
            counts
                .entry(&g.service)
                .or_default()
                .entry(h.hour_ns)
                .or_default()
                .1 += g.count;
        }
    }
    let mut out = Vec::new();
    for (service, by_hour) in &counts {
        for (what, pick) in [
            ("requests", (|c: &(u64, u64)| c.0) as fn(&(u64, u64)) -> u64),
            ("log lines", |c: &(u64, u64)| c.1),
        ] {
            let mut before: Vec<u64> = (1..=7)
                .filter_map(|d| by_hour.get(&(hour - d * 24 * HOUR_NS)).map(pick))
                .filter(|n| *n >= MIN_RECORDS)
                .collect();
            if before.len() < 2 {
                continue;
            }
            before.sort_unstable();
            let median = before[before.len() / 2] as f64;
            let now = by_hour.get(&hour).map(pick).unwrap_or(0) as f64;
            let ratio = now / median;
            let words = if ratio < 0.25 {
                "far below"
            } else if ratio > 4.0 {
                "far above"
            } else {
                continue;
            };
            out.push(finding(
                "volume",
                service,
                None,
                Severity::Warn,
                format!(
                    "{service} sent {now:.0} {what} between {} and {}, {words} the same hour of other days (median {median:.0}, {ratio:.2}×)",
                    format_time_ns(hour),
                    format_time_ns(hour + HOUR_NS)
                ),
                format!(
                    "the same hour on the {} previous days with data: {}",
                    before.len(),
                    before.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                ),
                hour,
                hour + HOUR_NS,
            ));
        }
    }
    out
}

/// Key → (spans with it, per JSON type) of one span name in one version.
#[derive(Default)]
struct Shape {
    spans: u64,
    keys: BTreeMap<String, BTreeMap<String, u64>>,
    first_ns: i64,
    last_ns: i64,
}

fn schema(hours: &[HourSummary], window: &ReportWindow) -> Vec<Finding> {
    // service -> version -> (kind, name) -> shape
    let mut shapes: BTreeMap<&str, BTreeMap<&str, BTreeMap<(&str, &str), Shape>>> = BTreeMap::new();
    let mut first_seen: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut last_seen: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for h in hours.iter().filter(|h| !h.incomplete) {
        for g in &h.spans {
            let Some(version) = g.version.as_deref() else {
                continue;
            };
            let shape = shapes
                .entry(&g.service)
                .or_default()
                .entry(version)
                .or_default()
                .entry((&g.kind, &g.name))
                .or_insert_with(|| Shape {
                    first_ns: i64::MAX,
                    last_ns: i64::MIN,
                    ..Default::default()
                });
            shape.spans += g.count;
            shape.first_ns = shape.first_ns.min(g.first_ns);
            shape.last_ns = shape.last_ns.max(g.last_ns);
            for (key_type, n) in &g.keys {
                let (key, kind) = key_type.split_once(KEY_TYPE).unwrap_or((key_type, ""));
                *shape
                    .keys
                    .entry(key.to_string())
                    .or_default()
                    .entry(kind.to_string())
                    .or_default() += n;
            }
            let first = first_seen.entry((&g.service, version)).or_insert(i64::MAX);
            *first = (*first).min(g.first_ns);
            let last = last_seen.entry((&g.service, version)).or_insert(i64::MIN);
            *last = (*last).max(g.last_ns);
        }
    }
    let mut out = Vec::new();
    for (service, versions) in &shapes {
        let mut order: Vec<&str> = versions.keys().copied().collect();
        order.sort_by_key(|v| first_seen.get(&(*service, *v)).copied().unwrap_or(i64::MAX));
        for pair in order.windows(2) {
            let (old, new) = (pair[0], pair[1]);
            if last_seen.get(&(*service, new)).copied().unwrap_or(i64::MIN) < window.start_ns {
                continue;
            }
            let mut renamed: BTreeSet<(String, String)> = BTreeSet::new();
            let mut removed: BTreeSet<String> = BTreeSet::new();
            let mut added: BTreeSet<String> = BTreeSet::new();
            let mut retyped: BTreeSet<String> = BTreeSet::new();
            let mut names: BTreeSet<String> = BTreeSet::new();
            for (span, before) in &versions[old] {
                let Some(after) = versions[new].get(span) else {
                    continue;
                };
                if before.spans < MIN_RECORDS || after.spans < MIN_RECORDS {
                    continue;
                }
                let share = |shape: &Shape, key: &str| {
                    shape.keys.get(key).map_or(0, |t| t.values().sum::<u64>()) as f64
                        / shape.spans as f64
                };
                let usual_type = |shape: &Shape, key: &str| {
                    shape
                        .keys
                        .get(key)
                        .and_then(|t| t.iter().max_by_key(|(_, n)| **n).map(|(k, _)| k.clone()))
                };
                let all: BTreeSet<&String> = before.keys.keys().chain(after.keys.keys()).collect();
                let mut gone = BTreeSet::new();
                let mut new_keys = BTreeSet::new();
                for key in all {
                    let (b, a) = (share(before, key), share(after, key));
                    if b >= 0.5 && a < 0.05 {
                        gone.insert(key.clone());
                    } else if a >= 0.5 && b < 0.05 {
                        new_keys.insert(key.clone());
                    } else if b >= 0.5
                        && a >= 0.5
                        && usual_type(before, key) != usual_type(after, key)
                    {
                        retyped.insert(format!(
                            "{key} ({} → {})",
                            usual_type(before, key).unwrap_or_default(),
                            usual_type(after, key).unwrap_or_default()
                        ));
                        names.insert(span.1.to_string());
                    }
                }
                // The peer of a server span is its client; of a client span, its server: the
                // candidates that fit the span's kind are tried first, and each old key is
                // renamed once.
                let serving = matches!(span.0, "server" | "consumer");
                let mut candidates: Vec<&(&str, &str)> = RENAMES.iter().collect();
                candidates.sort_by_key(|(_, to)| u8::from(to.starts_with("client.") != serving));
                let mut taken: BTreeSet<&str> = BTreeSet::new();
                for (from, to) in candidates {
                    if gone.contains(*from)
                        && new_keys.contains(*to)
                        && !taken.contains(from)
                        && !taken.contains(to)
                    {
                        taken.insert(from);
                        taken.insert(to);
                        renamed.insert((from.to_string(), to.to_string()));
                    }
                }
                for (from, to) in &renamed {
                    gone.remove(from);
                    new_keys.remove(to);
                }
                if !gone.is_empty() || !new_keys.is_empty() || !renamed.is_empty() {
                    names.insert(span.1.to_string());
                }
                removed.extend(gone);
                added.extend(new_keys);
            }
            // A rename found on one span name is not also a removal on another.
            for (from, to) in &renamed {
                removed.remove(from);
                added.remove(to);
            }
            if renamed.is_empty() && removed.is_empty() && added.is_empty() && retyped.is_empty() {
                continue;
            }
            let mut parts = Vec::new();
            if !renamed.is_empty() {
                parts.push(format!(
                    "renamed {} (semantic-convention renames)",
                    renamed
                        .iter()
                        .map(|(a, b)| format!("{a} → {b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            if !removed.is_empty() {
                parts.push(format!("dropped {}", join(&removed)));
            }
            if !retyped.is_empty() {
                parts.push(format!("changed the type of {}", join(&retyped)));
            }
            if !added.is_empty() {
                parts.push(format!("added {}", join(&added)));
            }
            let severity = if renamed.is_empty() && removed.is_empty() && retyped.is_empty() {
                Severity::Info
            } else {
                Severity::Warn
            };
            let first = first_seen
                .get(&(*service, new))
                .copied()
                .unwrap_or(window.start_ns);
            let last = last_seen
                .get(&(*service, new))
                .copied()
                .unwrap_or(window.end_ns);
            out.push(finding(
                "schema",
                service,
                Some(new),
                severity,
                format!("{service} {new} {} (compared with {old})", parts.join("; ")),
                format!(
                    "span attributes of {service} {old} and {new} on {}: queries, rules and dashboards that read the old keys see nothing from {new}",
                    join(&names)
                ),
                first,
                last,
            ));
        }
    }
    out
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn units(hours: &[HourSummary], window: &ReportWindow) -> Vec<Finding> {
    #[derive(Default)]
    struct Seen {
        units: BTreeMap<String, u64>,
        sum: f64,
        count: f64,
        first_ns: i64,
        last_ns: i64,
        /// Every point was a sum's.
        sum_only: bool,
    }
    // (service, metric) -> version -> seen
    let mut by: BTreeMap<(&str, &str), BTreeMap<&str, Seen>> = BTreeMap::new();
    for h in hours.iter().filter(|h| !h.incomplete) {
        for g in &h.metrics {
            let Some(version) = g.version.as_deref() else {
                continue;
            };
            let seen = by
                .entry((&g.service, &g.name))
                .or_default()
                .entry(version)
                .or_insert_with(|| Seen {
                    first_ns: i64::MAX,
                    last_ns: i64::MIN,
                    sum_only: true,
                    ..Default::default()
                });
            seen.sum_only &= g.kind == "sum";
            *seen.units.entry(g.unit.clone()).or_default() += g.count;
            if g.value_sum.is_finite() {
                seen.sum += g.value_sum;
                seen.count += g.value_count;
            }
            seen.first_ns = seen.first_ns.min(g.first_ns);
            seen.last_ns = seen.last_ns.max(g.last_ns);
        }
    }
    let mut out = Vec::new();
    for ((service, metric), versions) in &by {
        let mut order: Vec<(&str, &Seen)> = versions.iter().map(|(v, s)| (*v, s)).collect();
        order.sort_by_key(|(_, s)| s.first_ns);
        for pair in order.windows(2) {
            let ((old, before), (new, after)) = (pair[0], pair[1]);
            if after.last_ns < window.start_ns {
                continue;
            }
            let unit = |s: &Seen| {
                s.units
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map(|(u, _)| u.clone())
                    .unwrap_or_default()
            };
            let (u_old, u_new) = (unit(before), unit(after));
            let shown = |u: &str| {
                if u.is_empty() {
                    "no unit".to_string()
                } else {
                    u.to_string()
                }
            };
            if u_old != u_new {
                out.push(finding(
                    "units",
                    service,
                    Some(new),
                    Severity::Error,
                    format!(
                        "{metric} changed its unit from {} in {old} to {} in {new}",
                        shown(&u_old),
                        shown(&u_new)
                    ),
                    format!(
                        "charts, rules and comparisons that mix the two versions of {metric} compare {} with {}",
                        shown(&u_old),
                        shown(&u_new)
                    ),
                    after.first_ns,
                    after.last_ns,
                ));
                continue;
            }
            // A sum's value is a running total (a release restarts it near zero): only gauges'
            // values and histograms' and summaries' means say what a unit measures.
            if before.count > 0.0 && after.count > 0.0 && !before.sum_only && !after.sum_only {
                let (m_old, m_new) = (before.sum / before.count, after.sum / after.count);
                if m_old.abs() > 0.0 && m_new.abs() > 0.0 {
                    let ratio = m_new / m_old;
                    if !(0.01..=100.0).contains(&ratio.abs()) {
                        out.push(finding(
                            "units",
                            service,
                            Some(new),
                            Severity::Warn,
                            format!(
                                "{metric} values are {:.0}× {} in {new} than in {old} with the same unit ({}): a unit change such as ms → s?",
                                if ratio > 1.0 { ratio } else { 1.0 / ratio },
                                if ratio > 1.0 { "larger" } else { "smaller" },
                                shown(&u_new)
                            ),
                            format!("mean value {m_old:.6} in {old}, {m_new:.6} in {new}"),
                            after.first_ns,
                            after.last_ns,
                        ));
                    }
                }
            }
        }
    }
    out
}

fn correlation(hours: &[&HourSummary], window: &ReportWindow) -> Vec<Finding> {
    let mut logs: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut spans: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for h in hours {
        for g in &h.logs {
            let e = logs.entry(&g.service).or_default();
            e.0 += g.count;
            e.1 += g.with_trace;
        }
        // Orphans count only in hours whose traces had time to complete.
        if h.hour_ns + HOUR_NS + 5 * NS_PER_MINUTE <= window.end_ns {
            for g in &h.spans {
                spans.entry(&g.service).or_default().0 += g.count;
            }
            for (service, n) in &h.orphans {
                if let Some(e) = spans.get_mut(service.as_str()) {
                    e.1 += n;
                }
            }
        }
    }
    let mut out = Vec::new();
    for (service, (count, with_trace)) in &logs {
        if *count < MIN_RECORDS {
            continue;
        }
        let share = *with_trace as f64 / *count as f64;
        if share < 0.5 {
            out.push(finding(
                "correlation",
                service,
                None,
                Severity::Warn,
                format!(
                    "only {} of {} {count} log lines carry a trace id: the rest cannot be found from a trace",
                    percent(share),
                    possessive(service)
                ),
                format!(
                    "{} of {count} lines have a trace_id; lines written outside a span (startup, background threads) or by a logger without the OpenTelemetry logging instrumentation have none",
                    with_trace
                ),
                window.start_ns,
                window.end_ns,
            ));
        }
    }
    for (service, (count, orphans)) in &spans {
        if *count < MIN_RECORDS {
            continue;
        }
        let share = *orphans as f64 / *count as f64;
        if share > 0.05 {
            out.push(finding(
                "correlation",
                service,
                None,
                Severity::Warn,
                format!(
                    "{} of {} spans are orphans: their parent span never arrived",
                    percent(share),
                    possessive(service)
                ),
                format!(
                    "{orphans} of {count} spans name a parent that is not stored within an hour either side: the caller does not send its spans, samples them away, or sends them elsewhere"
                ),
                window.start_ns,
                window.end_ns,
            ));
        }
    }
    out
}

fn cardinality(hours: &[&HourSummary], window: &ReportWindow) -> Vec<Finding> {
    let mut worst: BTreeMap<(&str, &str), (u64, u64, i64)> = BTreeMap::new();
    for h in hours {
        for d in &h.distinct {
            if d.distinct >= 1000 && d.distinct as f64 >= 0.5 * d.records as f64 {
                let e = worst
                    .entry((&d.service, &d.subject))
                    .or_insert((0, 0, h.hour_ns));
                if d.distinct > e.0 {
                    *e = (d.distinct, d.records, h.hour_ns);
                }
            }
        }
    }
    worst
        .into_iter()
        .map(|((service, subject), (distinct, records, hour))| {
            finding(
                "cardinality",
                service,
                None,
                Severity::Warn,
                format!(
                    "{} {subject} has {distinct} distinct values in an hour ({records} records): ids in a {}?",
                    possessive(service),
                    if subject == "span name" { "span name" } else { "label" }
                ),
                format!(
                    "between {} and {}; a value per request makes grouping useless and storage grow: put ids in attributes, and name spans and labels by what they do",
                    format_time_ns(hour),
                    format_time_ns(hour + HOUR_NS)
                ),
                hour.max(window.start_ns),
                (hour + HOUR_NS).min(window.end_ns),
            )
        })
        .collect()
}

fn completeness(hours: &[&HourSummary], window: &ReportWindow) -> Vec<Finding> {
    #[derive(Default)]
    struct Counts {
        http_server: u64,
        no_route: u64,
        no_status: u64,
        spans: u64,
        no_version: u64,
    }
    let mut by: BTreeMap<&str, Counts> = BTreeMap::new();
    for h in hours {
        for g in &h.spans {
            let c = by.entry(&g.service).or_default();
            c.http_server += g.http_server;
            c.no_route += g.no_route;
            c.no_status += g.no_status;
            c.spans += g.count;
            if g.version.is_none() {
                c.no_version += g.count;
            }
        }
    }
    let mut out = Vec::new();
    for (service, c) in &by {
        if c.http_server >= MIN_RECORDS {
            for (missing, what, why) in [
                (
                    c.no_route,
                    "http.route",
                    "they are grouped by their raw name, so a route with ids in its path becomes thousands of routes",
                ),
                (
                    c.no_status,
                    "a status code",
                    "their failures can only be told by status, and HTTP 5xx answers are not counted as errors",
                ),
            ] {
                let share = missing as f64 / c.http_server as f64;
                if share > 0.1 {
                    out.push(finding(
                        "completeness",
                        service,
                        None,
                        Severity::Warn,
                        format!(
                            "{} of {} HTTP server spans have no {what}",
                            percent(share),
                            possessive(service)
                        ),
                        format!("{missing} of {} HTTP server spans: {why}", c.http_server),
                        window.start_ns,
                        window.end_ns,
                    ));
                }
            }
        }
        if c.spans >= MIN_RECORDS {
            let share = c.no_version as f64 / c.spans as f64;
            if share > 0.5 {
                out.push(finding(
                    "completeness",
                    service,
                    None,
                    Severity::Info,
                    format!(
                        "{} of {} spans carry no service.version",
                        percent(share),
                        possessive(service)
                    ),
                    format!(
                        "{} of {} spans: deploys are not seen and releases cannot be compared; set OTEL_RESOURCE_ATTRIBUTES=service.version=…",
                        c.no_version, c.spans
                    ),
                    window.start_ns,
                    window.end_ns,
                ));
            }
        }
    }
    out
}

fn ingest(notes: &BTreeMap<String, IngestNotes>, window: &ReportWindow) -> Vec<Finding> {
    let mut out = Vec::new();
    for (service, n) in notes {
        let since = format_time_ns(n.since_ns);
        let total = n.records + n.refused;
        if total >= MIN_RECORDS {
            let ahead = n.ahead as f64 / total as f64;
            if ahead > 0.01 {
                out.push(finding(
                    "clock_skew",
                    service,
                    None,
                    Severity::Warn,
                    format!(
                        "{} of {} records were stamped more than a minute after they arrived: its clock runs ahead",
                        percent(ahead),
                        possessive(service)
                    ),
                    format!("{} of {total} records since {since}; durations and windows near now are off by as much", n.ahead),
                    n.since_ns,
                    window.end_ns,
                ));
            }
            let late = n.late as f64 / total as f64;
            if late > 0.5 {
                out.push(finding(
                    "clock_skew",
                    service,
                    None,
                    Severity::Info,
                    format!(
                        "{} of {} records arrived more than an hour after their time: a clock behind, or a backlog",
                        percent(late),
                        possessive(service)
                    ),
                    format!("{} of {total} records since {since}", n.late),
                    n.since_ns,
                    window.end_ns,
                ));
            }
        }
        if n.refused > 0 {
            out.push(finding(
                "ingest",
                service,
                None,
                Severity::Warn,
                format!(
                    "ingest refused {} of {} records",
                    n.refused,
                    possessive(service)
                ),
                format!(
                    "since {since}; the first reason: {}",
                    n.first_refusal.as_deref().unwrap_or("not kept")
                ),
                n.since_ns,
                window.end_ns,
            ));
        }
        if n.truncated + n.dropped > 0 {
            out.push(finding(
                "ingest",
                service,
                None,
                Severity::Info,
                format!(
                    "ingest cut {} long values and dropped {} attributes of {} records ([limits])",
                    n.truncated,
                    n.dropped,
                    possessive(service)
                ),
                format!("since {since}; the records were kept, changed"),
                n.since_ns,
                window.end_ns,
            ));
        }
        if n.redacted > 0 {
            out.push(finding(
                "ingest",
                service,
                None,
                Severity::Info,
                format!("redaction replaced {} values in {} telemetry", n.redacted, possessive(service)),
                format!("since {since}; the records were kept, with the values masked or hashed ([redaction])"),
                n.since_ns,
                window.end_ns,
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_765_000_000_000_000_000 / HOUR_NS * HOUR_NS + 30 * NS_PER_MINUTE;

    fn window() -> ReportWindow {
        ReportWindow {
            start_ns: NOW - 24 * HOUR_NS,
            end_ns: NOW,
            service: None,
        }
    }

    fn group(
        service: &str,
        version: &str,
        name: &str,
        count: u64,
        keys: &[(&str, &str)],
    ) -> SpanGroup {
        SpanGroup {
            service: service.into(),
            version: Some(version.into()),
            kind: "server".into(),
            route: name.into(),
            name: name.into(),
            root: true,
            count,
            minutes: u64::MAX >> 4,
            first_ns: 0,
            last_ns: 0,
            http_server: count,
            keys: keys
                .iter()
                .map(|(k, t)| (format!("{k}{KEY_TYPE}{t}"), count))
                .collect(),
            ..Default::default()
        }
    }

    fn hour(at: i64, spans: Vec<SpanGroup>) -> HourSummary {
        let spans = spans
            .into_iter()
            .map(|mut g| {
                g.first_ns = at;
                g.last_ns = at + HOUR_NS - NS_PER_MINUTE;
                g
            })
            .collect();
        HourSummary {
            hour_ns: at,
            spans,
            ..Default::default()
        }
    }

    #[test]
    fn a_release_that_renames_attributes_is_one_schema_finding_naming_the_renames() {
        let h1 = NOW.div_euclid(HOUR_NS) * HOUR_NS - 3 * HOUR_NS;
        let old = [
            ("http.status_code", "number"),
            ("http.method", "string"),
            ("cart.id", "string"),
            ("net.peer.port", "number"),
        ];
        let new = [
            ("http.response.status_code", "number"),
            ("http.request.method", "string"),
            ("cart.id", "number"),
            ("client.port", "number"),
        ];
        let hours = vec![
            hour(
                h1,
                vec![
                    group("shop", "1.4.0", "GET /cart", 30, &old),
                    group("shop", "1.4.0", "GET /pay", 30, &old),
                ],
            ),
            hour(
                h1 + HOUR_NS,
                vec![
                    group("shop", "2.0.0", "GET /cart", 30, &new),
                    group("shop", "2.0.0", "GET /pay", 30, &new),
                ],
            ),
        ];
        let found = findings(&hours, &BTreeMap::new(), &window());
        let schema: Vec<&Finding> = found.iter().filter(|f| f.check == "schema").collect();
        assert_eq!(schema.len(), 1, "{found:#?}");
        let f = schema[0];
        assert_eq!(
            (f.service.as_str(), f.version.as_deref(), f.severity),
            ("shop", Some("2.0.0"), Severity::Warn)
        );
        assert!(
            f.summary
                .contains("http.status_code → http.response.status_code"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("http.method → http.request.method"),
            "{}",
            f.summary
        );
        assert!(
            f.summary.contains("cart.id (string → number)"),
            "{}",
            f.summary
        );
        assert!(
            !f.summary.contains("dropped"),
            "renames are not drops: {}",
            f.summary
        );
        // A server span's peer is its client.
        assert!(
            f.summary.contains("net.peer.port → client.port"),
            "{}",
            f.summary
        );
        assert!(!f.summary.contains("server.port"), "{}", f.summary);
    }

    #[test]
    fn a_metric_whose_unit_changes_between_versions_is_an_error() {
        let h1 = NOW.div_euclid(HOUR_NS) * HOUR_NS - 3 * HOUR_NS;
        let metric = |version: &str, unit: &str, mean: f64, at: i64| MetricGroup {
            service: "shop".into(),
            version: Some(version.into()),
            name: "checkout.latency".into(),
            unit: unit.into(),
            kind: "histogram".into(),
            count: 10,
            value_sum: mean * 100.0,
            value_count: 100.0,
            first_ns: at,
            last_ns: at + HOUR_NS / 2,
        };
        let mut a = hour(h1, vec![]);
        a.metrics = vec![metric("1.4.0", "ms", 120.0, h1)];
        let mut b = hour(h1 + HOUR_NS, vec![]);
        b.metrics = vec![metric("2.0.0", "s", 0.12, h1 + HOUR_NS)];
        let found = findings(&[a.clone(), b], &BTreeMap::new(), &window());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            (found[0].check, found[0].severity),
            ("units", Severity::Error)
        );
        assert!(
            found[0].summary.contains("from ms in 1.4.0 to s in 2.0.0"),
            "{}",
            found[0].summary
        );
        // The same unit with values a thousand times smaller is a warning.
        let mut c = hour(h1 + HOUR_NS, vec![]);
        c.metrics = vec![metric("2.0.0", "ms", 0.12, h1 + HOUR_NS)];
        let found = findings(&[a, c], &BTreeMap::new(), &window());
        assert_eq!(
            (found[0].check, found[0].severity),
            ("units", Severity::Warn),
            "{found:#?}"
        );
    }

    #[test]
    fn a_service_that_stops_is_one_freshness_error_and_a_steady_one_none() {
        let start = NOW.div_euclid(HOUR_NS) * HOUR_NS - 3 * HOUR_NS;
        let every_minute = |service: &str, until: i64| -> Vec<HourSummary> {
            let mut hours = Vec::new();
            let mut at = start;
            while at < until {
                let minutes_in = ((until - at) / NS_PER_MINUTE).min(60) as u32;
                let bits = if minutes_in >= 64 {
                    u64::MAX
                } else {
                    (1u64 << minutes_in) - 1
                };
                let mut g = group(service, "1.0.0", "GET /x", 60, &[]);
                g.minutes = bits;
                g.first_ns = at;
                g.last_ns = at + (minutes_in as i64 - 1) * NS_PER_MINUTE;
                hours.push(HourSummary {
                    hour_ns: at,
                    spans: vec![g],
                    ..Default::default()
                });
                at += HOUR_NS;
            }
            hours
        };
        let mut hours = every_minute("ledger", NOW - 40 * NS_PER_MINUTE);
        hours.extend(every_minute("catalog", NOW));
        let found = findings(&hours, &BTreeMap::new(), &window());
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            (found[0].check, found[0].service.as_str(), found[0].severity),
            ("freshness", "ledger", Severity::Error)
        );
        assert!(
            found[0].summary.contains("usually reports every 1 minute"),
            "{}",
            found[0].summary
        );
    }

    #[test]
    fn a_route_a_release_removed_is_info_naming_it_and_one_that_stops_within_a_release_a_warning() {
        let start = NOW.div_euclid(HOUR_NS) * HOUR_NS - 3 * HOUR_NS;
        let released = NOW - 90 * NS_PER_MINUTE;
        // Every minute from `from` to `until`, hour by hour, as one group of a route.
        let route = |service: &str, version: &str, name: &str, from: i64, until: i64| {
            let mut hours = Vec::new();
            let mut at = from.div_euclid(HOUR_NS) * HOUR_NS;
            while at < until {
                let (lo, hi) = (from.max(at), until.min(at + HOUR_NS));
                let (m0, m1) = ((lo - at) / NS_PER_MINUTE, (hi - at) / NS_PER_MINUTE);
                if m1 > m0 {
                    let mut g = group(service, version, name, 60, &[]);
                    g.minutes = (m0..m1).fold(0u64, |bits, m| bits | (1 << m));
                    g.first_ns = at + m0 * NS_PER_MINUTE;
                    g.last_ns = at + (m1 - 1) * NS_PER_MINUTE;
                    hours.push(HourSummary {
                        hour_ns: at,
                        spans: vec![g],
                        ..Default::default()
                    });
                }
                at += HOUR_NS;
            }
            hours
        };
        let mut hours = Vec::new();
        // shop 2.0.0 took over from 1.9.0 and no longer serves GET /old.
        hours.extend(route("shop", "1.9.0", "GET /old", start, released));
        hours.extend(route("shop", "1.9.0", "GET /keep", start, released));
        hours.extend(route("shop", "2.0.0", "GET /keep", released, NOW));
        // till 1.0.0 goes on, but its GET /stopped stopped 40 minutes ago.
        hours.extend(route(
            "till",
            "1.0.0",
            "GET /stopped",
            start,
            NOW - 40 * NS_PER_MINUTE,
        ));
        hours.extend(route("till", "1.0.0", "GET /going", start, NOW));
        let found = findings(&hours, &BTreeMap::new(), &window());
        let seen: Vec<(&str, &str, Option<&str>, Severity)> = found
            .iter()
            .map(|f| {
                (
                    f.check,
                    f.service.as_str(),
                    f.version.as_deref(),
                    f.severity,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("freshness", "till", None, Severity::Warn),
                ("freshness", "shop", Some("2.0.0"), Severity::Info)
            ],
            "{found:#?}"
        );
        assert_eq!(
            found[1].summary,
            "shop route GET /old has not been seen since 2.0.0 took over from 1.9.0: did the release remove it?"
        );
        assert!(
            found[0]
                .summary
                .starts_with("till route GET /stopped has not been seen for")
        );
    }

    #[test]
    fn logs_without_trace_ids_and_orphan_spans_are_correlation_findings() {
        let h = NOW.div_euclid(HOUR_NS) * HOUR_NS - 2 * HOUR_NS;
        let mut summary = hour(h, vec![group("api", "1", "GET /", 100, &[])]);
        summary.spans[0].minutes = 0; // no cadence: this is about correlation only
        summary.logs = vec![LogGroup {
            service: "mailer".into(),
            count: 40,
            with_trace: 4,
            ..Default::default()
        }];
        summary.orphans.insert("api".into(), 30);
        let found = findings(&[summary], &BTreeMap::new(), &window());
        let checks: Vec<(&str, &str)> = found
            .iter()
            .map(|f| (f.check, f.service.as_str()))
            .collect();
        assert_eq!(
            checks,
            [("correlation", "api"), ("correlation", "mailer")],
            "{found:#?}"
        );
    }

    #[test]
    fn volume_far_below_the_same_hour_of_other_days_is_found() {
        let last = NOW.div_euclid(HOUR_NS) * HOUR_NS - HOUR_NS;
        let mut hours = Vec::new();
        for d in 1..=3 {
            hours.push(hour(
                last - d * 24 * HOUR_NS,
                vec![group("api", "1", "GET /", 600, &[])],
            ));
        }
        hours.push(hour(last, vec![group("api", "1", "GET /", 50, &[])]));
        let found = findings(&hours, &BTreeMap::new(), &window());
        let volume: Vec<&Finding> = found.iter().filter(|f| f.check == "volume").collect();
        assert_eq!(volume.len(), 1, "{found:#?}");
        assert!(
            volume[0].summary.contains("far below"),
            "{}",
            volume[0].summary
        );
    }

    #[test]
    fn ingest_notes_become_findings_of_their_service() {
        let notes = BTreeMap::from([(
            "api".to_string(),
            IngestNotes {
                records: 100,
                refused: 3,
                first_refusal: Some("too old".into()),
                ahead: 10,
                redacted: 2,
                ..Default::default()
            },
        )]);
        let found = findings(&[], &notes, &window());
        let checks: Vec<(&str, Severity)> = found.iter().map(|f| (f.check, f.severity)).collect();
        assert_eq!(
            checks,
            [
                ("clock_skew", Severity::Warn),
                ("ingest", Severity::Warn),
                ("ingest", Severity::Info)
            ]
        );
    }

    #[tokio::test]
    async fn the_key_functions_list_keys_with_types_and_values() {
        let ctx = datafusion::prelude::SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql(r#"SELECT json_key_types('{"a":1,"b":"x","c":[1]}') AS t, json_key_values('{"a":1,"b":"x"}') AS v, json_key_types(NULL) AS n"#)
            .await
            .expect("plans")
            .collect()
            .await
            .expect("runs");
        let row = crate::json::batch_objects(&batches[0], &[]).remove(0);
        assert_eq!(
            row["t"],
            serde_json::json!(["a\u{1f}number", "b\u{1f}string", "c\u{1f}array"])
        );
        assert_eq!(row["v"], serde_json::json!(["a=1", "b=x"]));
        assert_eq!(row["n"], Value::Null);
    }
}
