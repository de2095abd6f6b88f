//! `/query`: a SQL editor, the result as a table, and a time chart when the result has a time
//! column and numbers. The statement lives in the URL (`?sql=`), so a result can be shared.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{Query, State};
use axum::response::Html;
use maud::{Markup, html};
use serde_json::Value;
use sightline_query::QueryResult;

use super::layout::{self, Line, Section};
use super::window::{Window, encode};
use super::{UiError, UiState, param};

/// Rows the page shows; the rest are counted.
const SHOWN_ROWS: usize = 1000;
/// Lines a chart draws at most.
const MAX_LINES: usize = 8;

/// Questions people ask during an incident, ready to run over the picked window (`{spans}` and
/// `{time}` become its condition on `start_time` and on `time`; `{requests}` and `{failed}` the
/// one definition of a request and a failure, `sightline_model::request`).
const EXAMPLES: &[(&str, &str)] = &[
    (
        "Requests and errors per minute",
        "SELECT date_bin(INTERVAL '1 minute', start_time, TIMESTAMP '1970-01-01T00:00:00Z') AS minute,\n       count(*) AS requests,\n       sum(CASE WHEN {failed} THEN 1 ELSE 0 END) AS errors\nFROM spans\nWHERE {requests} AND {spans}\nGROUP BY minute ORDER BY minute",
    ),
    (
        "Slowest routes (p99)",
        "SELECT service_name, http_route,\n       count(*) AS requests,\n       approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p99_ms\nFROM spans\nWHERE {requests} AND {spans}\nGROUP BY service_name, http_route\nORDER BY p99_ms DESC LIMIT 10",
    ),
    (
        "Most frequent exceptions",
        "SELECT service_name, exception_type, count(*) AS spans, max(exception_message) AS example\nFROM spans\nWHERE exception_type IS NOT NULL AND {spans}\nGROUP BY service_name, exception_type ORDER BY spans DESC LIMIT 20",
    ),
    (
        "Error logs per service",
        "SELECT service_name, count(*) AS lines\nFROM logs\nWHERE severity_number >= 17 AND {time}\nGROUP BY service_name ORDER BY lines DESC",
    ),
    (
        "p95 latency per version (what changed?)",
        "SELECT service_name, service_version, count(*) AS requests,\n       approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) / 1e6 AS p95_ms\nFROM spans\nWHERE {requests} AND {spans}\nGROUP BY service_name, service_version ORDER BY service_name, service_version",
    ),
    (
        "Busiest routes over a long window (per-minute rollups)",
        "SELECT service_name, http_method, route,\n       sum(requests) AS requests, sum(errors) AS errors,\n       sum(duration_sum_ns) / sum(requests) / 1e6 AS mean_ms\nFROM span_rollups\nWHERE {time}\nGROUP BY service_name, http_method, route\nORDER BY requests DESC LIMIT 20",
    ),
    (
        "Memory of each service over time",
        "SELECT date_bin(INTERVAL '1 minute', time, TIMESTAMP '1970-01-01T00:00:00Z') AS minute,\n       service_name, avg(value) / 1048576 AS memory_mib\nFROM metrics\nWHERE name = 'process.memory.usage' AND {time}\nGROUP BY minute, service_name ORDER BY minute",
    ),
];

/// The window as a SQL condition on a time column: relative to `now()` for a preset, so a
/// shared statement keeps meaning "the last hour".
fn window_condition(window: &Window, column: &str) -> String {
    let interval = match window.range.as_str() {
        "15m" => Some("15 minutes"),
        "1h" => Some("1 hour"),
        "6h" => Some("6 hours"),
        "24h" => Some("24 hours"),
        "7d" => Some("7 days"),
        _ => None,
    };
    match interval {
        Some(interval) => format!("{column} > now() - INTERVAL '{interval}'"),
        None => format!(
            "{column} >= TIMESTAMP '{}' AND {column} < TIMESTAMP '{}'",
            sightline_query::json::format_time_ns(window.start_ns),
            sightline_query::json::format_time_ns(window.end_ns)
        ),
    }
}

pub async fn page(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let window = Window::from_params(&params, state.now_ns(), "1h")?;
    let sql = param(&params, "sql").map(str::to_string);
    let outcome = match &sql {
        Some(sql) => {
            let started = Instant::now();
            let result = state.api.engine.execute(sql).await;
            state
                .api
                .metrics
                .record_query(started.elapsed().as_nanos() as u64, result.is_ok());
            Some(result)
        }
        None => None,
    };
    let body = html! {
        h1 { "Query" }
        form #query-form method="get" action="/query" {
            label for="sql" { "SQL over " code { "spans" } ", " code { "logs" } " and " code { "metrics" } " (read-only; Ctrl+Enter runs)" }
            textarea #sql name="sql" rows="8" spellcheck="false" autofocus[sql.is_none()] {
                (sql.as_deref().unwrap_or("SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY spans DESC"))
            }
            button type="submit" { "Run" }
        }
        @match &outcome {
            None => {}
            Some(Err(e)) => {
                p.error role="alert" { (crate::server::error::client_message(e.code(), e.to_string())) }
            }
            Some(Ok(result)) => { (result_view(result)) }
        }
        section #examples {
            h2 { "Examples" }
            ul {
                @for (title, example) in EXAMPLES {
                    @let example = example
                        .replace("{spans}", &window_condition(&window, "start_time"))
                        .replace("{time}", &window_condition(&window, "time"))
                        .replace("{requests}", sightline_model::request::is_request_sql())
                        .replace("{failed}", sightline_model::request::is_failure_sql());
                    @let pairs: Vec<(&str, String)> = std::iter::once(("sql", example)).chain(window.params()).collect();
                    li { a.example-query href=(format!("/query?{}", encode(&pairs))) { (title) } }
                }
            }
        }
    };
    let keep: Vec<(&str, String)> = sql.iter().map(|s| ("sql", s.clone())).collect();
    Ok(Html(
        layout::page(
            "Query",
            Section::Query,
            Some((&window, "/query", &keep)),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}

fn result_view(result: &QueryResult) -> Markup {
    let shown = result.rows.len().min(SHOWN_ROWS);
    html! {
        p.hint #query-summary {
            (result.rows.len()) " row" @if result.rows.len() != 1 { "s" }
            @if result.truncated_by == Some("max_result_bytes") { " (more matched: the answer is cut at the server's size limit, [query] max_result_bytes)" }
            @else if result.truncated { " (more matched: the answer is cut at the server's row limit, [query] max_result_rows)" }
            " in " (format!("{:.1}", result.elapsed_ms)) " ms"
            @if shown < result.rows.len() { "; the first " (shown) " are shown" }
        }
        @if let Some(chart) = time_chart(result) { div #query-chart { (chart) } }
        div.scroll {
            table #query-results {
                thead { tr { @for c in &result.columns { th scope="col" title=(c.data_type) { (c.name) } } } }
                tbody {
                    @for row in result.rows.iter().take(SHOWN_ROWS) {
                        tr {
                            @if let Value::Array(cells) = row {
                                @for cell in cells {
                                    @match cell {
                                        Value::Null => td.null { "null" },
                                        Value::Number(n) => td.num { (n) },
                                        Value::String(s) => td { (s) },
                                        other => td { (other.to_string()) },
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A chart of the numeric columns against the first time column, one line per value of the
/// first text column when there is one (e.g. per service).
fn time_chart(result: &QueryResult) -> Option<Markup> {
    let time_col = result
        .columns
        .iter()
        .position(|c| c.data_type.starts_with("timestamp"))?;
    let numeric: Vec<usize> = result
        .columns
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            *i != time_col
                && result
                    .rows
                    .iter()
                    .any(|r| r.get(*i).is_some_and(Value::is_number))
                && !c.data_type.starts_with("timestamp")
        })
        .map(|(i, _)| i)
        .collect();
    if numeric.is_empty() {
        return None;
    }
    // Trace and span ids are not groups: rows with a trace id become points that open it.
    let is_id = |name: &str| {
        matches!(
            name,
            "trace_id" | "span_id" | "parent_span_id" | "exemplars"
        )
    };
    let group_col = result
        .columns
        .iter()
        .position(|c| (c.data_type == "text" || c.data_type.contains("utf8")) && !is_id(&c.name));
    let trace_col = result.columns.iter().position(|c| c.name == "trace_id");
    let exemplars_col = result.columns.iter().position(|c| c.name == "exemplars");
    let mut points: Vec<layout::TracePoint> = Vec::new();
    // (x seconds) per row, then lines keyed by (group, column).
    let mut xs: Vec<f64> = Vec::new();
    let mut keyed: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for row in &result.rows {
        let Some(x) = row
            .get(time_col)
            .and_then(Value::as_str)
            .and_then(layout::parse_rfc3339)
            .map(|ns| ns as f64 / 1e9)
        else {
            continue;
        };
        xs.push(x);
        if points.len() < MAX_TRACE_POINTS {
            points.extend(trace_points(
                row,
                x,
                trace_col,
                exemplars_col,
                numeric.first().copied(),
            ));
        }
        let group = group_col
            .and_then(|g| row.get(g))
            .and_then(Value::as_str)
            .map(str::to_string);
        for &col in &numeric {
            let Some(y) = row.get(col).and_then(Value::as_f64) else {
                continue;
            };
            let name = &result.columns[col].name;
            let key = match &group {
                Some(g) if numeric.len() == 1 => g.clone(),
                Some(g) => format!("{g} {name}"),
                None => name.clone(),
            };
            match keyed.iter().position(|(k, _)| *k == key) {
                Some(at) => keyed[at].1.push((x, y)),
                None if keyed.len() < MAX_LINES => keyed.push((key, vec![(x, y)])),
                None => {}
            }
        }
    }
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.len() < 2 {
        return None;
    }
    let lines: Vec<Line> = keyed
        .iter()
        .map(|(key, points)| {
            let mut values = vec![None; xs.len()];
            for (x, y) in points {
                if let Ok(i) = xs.binary_search_by(|v| v.total_cmp(x)) {
                    values[i] = Some(*y);
                }
            }
            Line {
                label: key,
                values,
                color: None,
            }
        })
        .collect();
    Some(layout::chart_with_exemplars(
        "query-time-chart",
        "Query result over time",
        &xs,
        &lines,
        "",
        false,
        &points,
    ))
}

/// Points a query's chart draws that open traces, at most.
const MAX_TRACE_POINTS: usize = 2_000;

/// A row's points that open traces: the row itself when it has a `trace_id` (at its first
/// numeric value), and each exemplar of an `exemplars` column (the metrics table's JSON).
fn trace_points(
    row: &Value,
    x: f64,
    trace_col: Option<usize>,
    exemplars_col: Option<usize>,
    value_col: Option<usize>,
) -> Vec<layout::TracePoint> {
    let mut out = Vec::new();
    if let (Some(t), Some(v)) = (trace_col, value_col)
        && let (Some(trace_id), Some(y)) = (
            row.get(t).and_then(Value::as_str),
            row.get(v).and_then(Value::as_f64),
        )
        && sightline_query::views::is_trace_id(trace_id)
    {
        out.push(layout::TracePoint {
            t: x,
            y,
            trace_id: trace_id.to_string(),
        });
    }
    if let Some(e) = exemplars_col
        && let Some(text) = row.get(e).and_then(Value::as_str)
        && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text)
    {
        for item in items {
            let trace_id = item.get("trace_id").and_then(Value::as_str).unwrap_or("");
            if !sightline_query::views::is_trace_id(trace_id) || trace_id.bytes().all(|b| b == b'0')
            {
                continue;
            }
            let Some(y) = item.get("value").and_then(Value::as_f64) else {
                continue;
            };
            let t = item
                .get("time_ns")
                .and_then(Value::as_i64)
                .map_or(x, |ns| ns as f64 / 1e9);
            out.push(layout::TracePoint {
                t,
                y,
                trace_id: trace_id.to_string(),
            });
        }
    }
    out
}
