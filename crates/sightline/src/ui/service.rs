//! `/services/{name}`: one service's rate, errors and latency over time, its routes by impact,
//! its slowest and failing requests, recent error logs, what redaction replaced in its telemetry,
//! its Prometheus scrape targets and the runtime metrics it sends.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use maud::{Markup, html};
use sightline_query::overview::{self, Buckets, RequestOrder, RequestSpan};
use sightline_query::views::{self, LogSearch};

use super::layout::{self, Line, Section};
use super::logs::log_table;
use super::window::{Window, encode};
use super::{UiError, UiState};

/// Rows in each list of requests and of error logs.
const LIST_ROWS: usize = 10;

pub async fn page(
    State(state): State<UiState>,
    Path(name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let window = Window::from_params(&params, state.now_ns(), "1h")?;
    let engine = &state.api.engine;
    let buckets = Buckets::over(window.start_ns, window.end_ns);
    let range = window.time_range();
    let error_logs = LogSearch {
        service: Some(name.clone()),
        severity: Some("error".into()),
        range,
        limit: LIST_ROWS,
        ..Default::default()
    };
    let (summary, series, slowest, failing, logs, runtime, exemplars) = tokio::try_join!(
        views::services(engine, range, window.seconds(), Some(&name)),
        overview::red_series(engine, buckets, Some(&name), true),
        overview::requests(engine, &name, None, range, RequestOrder::Slowest, LIST_ROWS),
        overview::requests(
            engine,
            &name,
            None,
            range,
            RequestOrder::FailingNewest,
            LIST_ROWS
        ),
        views::logs(engine, &error_logs),
        overview::runtime_metrics(engine, &name, buckets),
        overview::exemplars(engine, &name, buckets),
    )?;
    let exemplars: Vec<layout::TracePoint> = exemplars
        .into_iter()
        .map(|e| layout::TracePoint {
            t: e.t,
            y: e.ms,
            trace_id: e.trace_id,
        })
        .collect();
    let summary = summary.into_iter().next();
    let redacted = state.api.metrics.service_redactions(&name);
    let targets = state.api.scrapes.of_service(&name);
    let quality = state
        .api
        .monitor
        .quality_report(
            &sightline_query::quality::ReportWindow {
                start_ns: window.start_ns,
                end_ns: window.end_ns,
                service: Some(name.clone()),
            },
            &state.api.metrics.ingest_notes(),
        )
        .await?;
    let x = buckets.times_s();
    let wq = window.query();
    let series = series.into_values().next();

    let mut routes = summary
        .as_ref()
        .map(|s| s.routes.iter().collect::<Vec<_>>())
        .unwrap_or_default();
    routes.sort_by(|a, b| b.red.total_ms.total_cmp(&a.red.total_ms));
    let total_ms: f64 = routes.iter().map(|r| r.red.total_ms).sum();

    let body = html! {
        p.crumbs { a href=(format!("/?{wq}")) { "Services" } " / " }
        h1 {
            span.dot style=(format!("background:{}", layout::service_color(&name))) {}
            (name)
        }
        @if let Some(s) = &summary {
            dl.stats {
                div { dt { "Rate" } dd { (layout::rate(s.red.rate_per_s)) } }
                div { dt { "Requests" } dd { (s.red.requests) } }
                div { dt { "Errors" } dd.bad[s.red.errors > 0] { (s.red.errors) " (" (layout::percent(s.red.error_rate)) ")" } }
                div { dt { "p50" } dd { (layout::ms(s.red.p50_ms)) } }
                div { dt { "p95" } dd { (layout::ms(s.red.p95_ms)) } }
                div { dt { "p99" } dd { (layout::ms(s.red.p99_ms)) } }
            }
        } @else {
            (layout::empty("No requests from this service in this window: try a longer range."))
        }
        @if let Some(series) = &series {
            div.charts data-service=(name) {
                figure { figcaption { "Requests per second" }
                    (layout::chart("chart-rate", "Requests per second", &x, &[
                        Line { label: "requests/s", values: series.rate.iter().map(|v| Some(*v)).collect(), color: Some(layout::BLUE) },
                    ], "/s", false)) }
                figure { figcaption { "Errors per second" }
                    (layout::chart("chart-errors", "Errors per second", &x, &[
                        Line { label: "errors/s", values: series.error_rate.iter().map(|v| Some(*v)).collect(), color: Some(layout::RED) },
                    ], "/s", false)) }
                figure { figcaption { "Latency" }
                    (layout::chart_with_exemplars("chart-latency", "Latency percentiles", &x, &[
                        Line { label: "p50", values: series.p50_ms.clone(), color: Some("#10b981") },
                        Line { label: "p95", values: series.p95_ms.clone(), color: Some("#f59e0b") },
                        Line { label: "p99", values: series.p99_ms.clone(), color: Some(layout::RED) },
                    ], "ms", false, &exemplars)) }
            }
        }
        section #routes-section {
            h2 { "Routes by impact" }
            p.hint { "Sorted by time spent serving them (requests × latency): the routes where slowness costs most." }
            table #service-routes {
                thead { tr {
                    th scope="col" { "Route" }
                    th.num scope="col" { "Time spent" }
                    (layout::red_headers())
                } }
                tbody {
                    @for r in &routes {
                        tr.route-row {
                            (layout::route_cell(r.http_method.as_deref(), &r.http_route))
                            td.num { (layout::percent(if total_ms > 0.0 { r.red.total_ms / total_ms } else { 0.0 })) }
                            (layout::red_cells(&r.red))
                        }
                    }
                }
            }
        }
        div.columns {
            section {
                h2 { "Slowest requests" }
                (request_table("slow-traces", &slowest, "No requests in this window."))
            }
            section {
                h2 { "Failing requests" }
                (request_table("failing-traces", &failing, "No failed requests in this window."))
            }
        }
        @if !quality.is_empty() {
            section #quality {
                h2 { "Telemetry quality" }
                p.hint { "What is wrong with this service's telemetry itself. " a href=(format!("/quality?service={}", crate::url::encode_component(&name))) { "All of its findings and data checks →" } }
                (super::quality::finding_table(&quality, false))
            }
        }
        section #error-logs {
            h2 { "Recent error logs" }
            p.hint { a.logs-link href=(format!("/logs?{}&{wq}", encode(&[("service", name.as_str()), ("severity", "error")]))) { "All of this service's error logs →" } }
            @if logs.is_empty() {
                (layout::empty("No error logs in this window."))
            } @else {
                (log_table(&logs, false))
            }
        }
        section #redaction data-service=(name) data-total=(redacted.total) {
            h2 { "Redaction" }
            @if state.api.redactor.is_off() {
                (layout::empty("Redaction is off ([redaction] enabled = false): values are stored as sent."))
            } @else if redacted.total == 0 {
                p.hint { "Nothing from this service has matched a redaction rule since the server started (rules: " (state.api.redactor.rule_names().join(", ")) ")." }
            } @else {
                p.hint { (redacted.total) " values from this service were replaced before storage since the server started; the records themselves were kept. " code { "sightline redact scan" } " finds what older data still holds." }
                table #redactions {
                    thead { tr { th scope="col" { "Rule" } th.num scope="col" { "Values replaced" } } }
                    tbody {
                        @for (rule, n) in &redacted.by_rule {
                            tr.redaction-rule data-rule=(rule) data-count=(n) { td { code { (rule) } } td.num { (n) } }
                        }
                    }
                }
                p.hint { "By signal: " @for (i, (signal, n)) in redacted.by_signal.iter().enumerate() { @if i > 0 { ", " } (signal) " " (n) } }
            }
        }
        @if !targets.is_empty() {
            section #scrape-targets {
                h2 { "Scrape targets" }
                p.hint { "Prometheus endpoints scraped into this service's metrics ([[scrape]] in sightline.toml)." }
                table #targets {
                    thead { tr {
                        th scope="col" { "URL" } th scope="col" { "Health" } th scope="col" { "Last scrape" }
                        th.num scope="col" { "Samples" } th.num scope="col" { "Took" } th scope="col" { "Error" }
                    } }
                    tbody {
                        @for t in &targets {
                            @let health = serde_json::to_value(t.health).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                            tr.target data-url=(t.url) data-health=(health) {
                                td { code { (t.url) } }
                                td.bad[t.health == crate::scrape::Health::Down] { (health) @if let Some(since) = &t.down_since { " since " (since) } }
                                td { (t.last_scrape.as_deref().unwrap_or("not yet")) }
                                td.num { (t.samples) }
                                td.num { @if let Some(ms) = t.last_duration_ms { (format!("{ms:.1} ms")) } }
                                td.bad { (t.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        section #runtime-metrics data-service=(name) {
            h2 { "Runtime" }
            @if runtime.is_empty() {
                (layout::empty("This service sends no runtime metrics (CPU, memory, threads, GC, open files, queue depth). The OpenTelemetry system-metrics instrumentation adds them, and so does scraping prometheus_client's /metrics ([[scrape]])."))
            } @else {
                div.charts {
                    @for chart in &runtime {
                        figure data-metric=(chart.name) {
                            figcaption {
                                (chart.title) " · " (chart.caption_unit) " "
                                code.metric-name { (chart.name) }
                            }
                            (layout::chart("", &chart.title, &x, &chart.lines.iter().map(|(label, values)| Line {
                                label, values: values.clone(), color: None,
                            }).collect::<Vec<_>>(), &chart.chart_unit, false))
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        layout::page(
            &name,
            Section::Services,
            Some((&window, &layout::service_path(&name), &[])),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}

pub fn request_table(id: &str, rows: &[RequestSpan], empty: &str) -> Markup {
    if rows.is_empty() {
        return html! { table id=(id) hidden {} (layout::empty(empty)) };
    }
    html! {
        table id=(id) {
            thead { tr {
                th scope="col" { "Started" }
                th scope="col" { "Request" }
                th.num scope="col" { "Duration" }
                th scope="col" { "Status" }
            } }
            tbody {
                @for r in rows {
                    tr {
                        td.time { (layout::time(r.start_ns)) }
                        td {
                            a.trace-link href=(layout::trace_href(&r.trace_id, Some(&r.span_id))) { (r.name) }
                            @if let Some(v) = &r.service_version { " " span.version { (v) } }
                        }
                        td.num { (layout::ms(r.duration_ms)) }
                        td {
                            @if r.failed() {
                                span.badge.error { @if let Some(c) = r.http_status_code { (c) } @else { "error" } }
                            } @else if let Some(c) = r.http_status_code {
                                span.badge { (c) }
                            } @else {
                                span.badge { (r.status) }
                            }
                            @if let Some(reason) = &r.reason { " " span.reason { (reason) } }
                        }
                    }
                }
            }
        }
    }
}
