//! `/traces/{id}`: the waterfall of every span across services, the trace's logs interleaved in
//! time, and a side panel with the selected span's attributes, resource, events, exceptions and
//! links (both ways). Spans whose parent never arrived are shown at the top level and said.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::response::Html;
use maud::{Markup, html};
use serde_json::{Map, Value};
use sightline_model::TimeRange;
use sightline_query::overview::{self, IncomingLink};
use sightline_query::views;

use super::layout::{self, Section};
use super::logs::{Line, line_row};
use super::window::{Window, encode};
use super::{UiError, UiState, param};

/// How far around a trace incoming links are looked for.
const LINK_SEARCH_NS: i64 = 3_600_000_000_000;
/// Indentation stops growing past this depth, so deep traces stay readable.
const MAX_INDENT: usize = 24;

struct Span {
    id: String,
    parent: Option<String>,
    name: String,
    service: String,
    kind: String,
    status: String,
    status_message: Option<String>,
    start_ns: i64,
    duration_ns: i64,
    http_status: Option<i64>,
    version: Option<String>,
    row: Map<String, Value>,
}

impl Span {
    fn from_row(row: Map<String, Value>) -> Self {
        let text = |key: &str| {
            row.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Self {
            id: text("span_id").unwrap_or_default(),
            parent: text("parent_span_id"),
            name: text("name").unwrap_or_default(),
            service: text("service_name").unwrap_or_default(),
            kind: text("kind").unwrap_or_default(),
            status: text("status").unwrap_or_default(),
            status_message: text("status_message"),
            start_ns: text("start_time")
                .as_deref()
                .and_then(layout::parse_rfc3339)
                .unwrap_or(0),
            duration_ns: row.get("duration_ns").and_then(Value::as_i64).unwrap_or(0),
            http_status: row.get("http_status_code").and_then(Value::as_i64),
            version: text("service_version"),
            row,
        }
    }

    fn failed(&self) -> bool {
        sightline_model::request::is_failure_text(&self.status, self.http_status)
    }

    fn list(&self, key: &str) -> Vec<Value> {
        match self.row.get(key) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        }
    }
}

/// A row of the waterfall: a span or a log line, with its depth.
enum Row {
    Span {
        index: usize,
        depth: usize,
        orphan: bool,
    },
    Log {
        index: usize,
        depth: usize,
    },
}

pub async fn page(
    State(state): State<UiState>,
    Path(trace_id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let engine = &state.api.engine;
    let view = views::trace(engine, &trace_id).await?;
    let trace_id = view.trace_id.clone();
    let spans: Vec<Span> = view.spans.into_iter().map(Span::from_row).collect();
    let logs = view.logs;
    let log_time = |row: &Map<String, Value>| {
        row.get("time")
            .and_then(Value::as_str)
            .and_then(layout::parse_rfc3339)
            .unwrap_or(0)
    };

    let t0 = spans
        .iter()
        .map(|s| s.start_ns)
        .chain(logs.iter().map(log_time))
        .min()
        .unwrap_or(0);
    let t1 = spans
        .iter()
        .map(|s| s.start_ns + s.duration_ns)
        .chain(logs.iter().map(log_time))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let incoming = overview::incoming_links(
        engine,
        &trace_id,
        TimeRange::new(Some(t0 - LINK_SEARCH_NS), Some(t1 + LINK_SEARCH_NS)),
    )
    .await?;

    let rows = layout_rows(&spans, &logs, &log_time);
    let ids: HashSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
    let orphans = spans
        .iter()
        .filter(|s| s.parent.as_deref().is_some_and(|p| !ids.contains(p)))
        .count();
    let has_root = spans.iter().any(|s| s.parent.is_none());
    let selected = param(&params, "span")
        .and_then(|id| spans.iter().position(|s| s.id == id))
        .or_else(|| spans.iter().position(Span::failed))
        .or_else(|| spans.iter().position(|s| s.parent.is_none()))
        .or(if spans.is_empty() { None } else { Some(0) });
    let mut services: Vec<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    services.sort();
    services.dedup();
    let errors = spans.iter().filter(|s| s.failed()).count();
    let total = (t1 - t0) as f64;
    let pct = |ns: i64| ((ns - t0) as f64 / total * 100.0).clamp(0.0, 100.0);
    let logs_href = format!("/logs?{}", encode(&[("trace_id", trace_id.as_str())]));

    let body = html! {
        p.crumbs { a href="/" { "Services" } " / trace" }
        h1 { "Trace " code { (trace_id) } }
        dl.stats {
            div { dt { "Started" } dd { (layout::time(t0)) } }
            div { dt { "Duration" } dd { (layout::ms(total / 1e6)) } }
            div { dt { "Spans" } dd { (spans.len()) } }
            div { dt { "Errors" } dd.bad[errors > 0] { (errors) } }
            div { dt { "Logs" } dd { a.logs-link href=(logs_href) { (logs.len()) " lines" } } }
            div { dt { "Services" } dd {
                @for s in &services {
                    span.service-tag { span.dot style=(format!("background:{}", layout::service_color(s))) {} (s) " " }
                }
            } }
        }
        @if orphans > 0 || (!has_root && !spans.is_empty()) {
            p.notice.missing-spans role="status" {
                @if !has_root { "The root span of this trace has not arrived. " }
                @if orphans > 0 {
                    (orphans) " span" @if orphans != 1 { "s" } " point to a parent that never arrived "
                    "(still in flight, dropped by a sampler, or sent by a service that does not report here). "
                    "They are shown at the top level, marked “parent missing”."
                }
            }
        }
        @if view.truncated {
            p.notice { "This trace is too large to show whole; the first 50,000 spans and lines are shown." }
        }
        div.trace-layout {
            div #waterfall role="list" aria-label="Spans and logs in time" {
                div.wf-axis aria-hidden="true" {
                    span.wf-name { "Span" }
                    span.wf-time {
                        @for q in [0.0, 0.25, 0.5, 0.75] {
                            span.tick style=(format!("left:{}%", q * 100.0)) { (layout::ms(total * q / 1e6)) }
                        }
                        span.tick.end { (layout::ms(total / 1e6)) }
                    }
                }
                @for row in &rows {
                    @match row {
                        Row::Span { index, depth, orphan } => {
                            @let s = &spans[*index];
                            @let href = layout::trace_href(&trace_id, Some(&s.id));
                            div.span-row.selected[selected == Some(*index)].failed[s.failed()] role="listitem"
                                data-span-id=(s.id) data-service=(s.service) {
                                span.wf-name style=(format!("padding-left:{}rem", (*depth).min(MAX_INDENT) as f64 * 0.9 + 0.3)) {
                                    span.dot style=(format!("background:{}", layout::service_color(&s.service))) {}
                                    a.span-link href=(href) hx-get=(href) hx-select="#span-panel"
                                        hx-target="#span-panel" hx-swap="outerHTML" hx-push-url="true" {
                                        span.svc { (s.service) } " " (s.name)
                                    }
                                    @if *orphan { " " span.badge.warn { "parent missing" } }
                                    @if !s.list("links").is_empty() { " " span.badge title="This span links to another" { "link →" } }
                                    @if incoming.iter().any(|l| l.target_span_id == s.id) { " " span.badge title="Another span links here" { "← linked" } }
                                }
                                span.wf-time {
                                    span.bar style=(format!("left:{:.3}%;width:{:.3}%;background:{}", pct(s.start_ns),
                                        (s.duration_ns as f64 / total * 100.0).max(0.15), layout::service_color(&s.service))) {}
                                    @let end = pct(s.start_ns + s.duration_ns);
                                    span.dur style=(if end > 85.0 { format!("right:calc({:.3}% + 4px)", 100.0 - pct(s.start_ns)) } else { format!("left:calc({end:.3}% + 4px)") }) {
                                        (layout::ms(s.duration_ns as f64 / 1e6))
                                        @if s.failed() { " ✕" }
                                    }
                                }
                            }
                        }
                        Row::Log { index, depth } => {
                            @let log = Line::from_object(&logs[*index]);
                            div.log-row role="listitem" data-severity=(log.severity) {
                                span.wf-name style=(format!("padding-left:{}rem", (*depth).min(MAX_INDENT) as f64 * 0.9 + 0.3)) {
                                    span.badge.(format!("sev-{}", log.severity)) { (log.severity) }
                                    " " (log.body)
                                }
                                span.wf-time {
                                    span.mark style=(format!("left:{:.3}%", pct(log.time_ns))) {}
                                }
                            }
                        }
                    }
                }
            }
            (panel(&spans, selected, &logs, &incoming, &trace_id, t0))
        }
    };
    // The picker here sets the window the other pages open with.
    let window = Window::from_params(&params, state.now_ns(), "1h")?;
    let keep = vec![(
        "span",
        param(&params, "span").unwrap_or_default().to_string(),
    )];
    Ok(Html(
        layout::page(
            &format!("Trace {}", &trace_id[..8]),
            Section::Trace,
            Some((&window, &format!("/traces/{trace_id}"), &keep)),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}

/// Spans as a tree (children and logs by time under their span), roots and orphans at the top.
fn layout_rows(
    spans: &[Span],
    logs: &[Map<String, Value>],
    log_time: &dyn Fn(&Map<String, Value>) -> i64,
) -> Vec<Row> {
    let index: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // (time, is_log, index) under each parent; `None` is the top level.
    let mut children: HashMap<Option<usize>, Vec<(i64, bool, usize)>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = s.parent.as_deref().and_then(|p| index.get(p).copied());
        children
            .entry(parent)
            .or_default()
            .push((s.start_ns, false, i));
    }
    for (i, log) in logs.iter().enumerate() {
        let parent = log
            .get("span_id")
            .and_then(Value::as_str)
            .and_then(|id| index.get(id).copied());
        children
            .entry(parent)
            .or_default()
            .push((log_time(log), true, i));
    }
    for list in children.values_mut() {
        list.sort();
    }
    let mut rows = Vec::with_capacity(spans.len() + logs.len());
    let mut stack: Vec<(Option<usize>, usize, usize)> = vec![(None, 0, 0)];
    // Iterative depth-first walk: (parent, next child position, depth).
    let mut visited = vec![false; spans.len()];
    while let Some((parent, at, depth)) = stack.pop() {
        let Some(list) = children.get(&parent) else {
            continue;
        };
        if at >= list.len() {
            continue;
        }
        stack.push((parent, at + 1, depth));
        let (_, is_log, i) = list[at];
        if is_log {
            rows.push(Row::Log { index: i, depth });
        } else if !visited[i] {
            visited[i] = true;
            let orphan = parent.is_none() && spans[i].parent.is_some();
            rows.push(Row::Span {
                index: i,
                depth,
                orphan,
            });
            stack.push((Some(i), 0, depth + 1));
        }
    }
    rows
}

fn kv_table(id: &str, value: Option<&Value>) -> Markup {
    let entries: Vec<(&String, &Value)> = match value {
        Some(Value::Object(map)) => map.iter().collect(),
        _ => Vec::new(),
    };
    html! {
        @if entries.is_empty() {
            p.empty id=[(!id.is_empty()).then_some(id)] { "none" }
        } @else {
            table.kv id=[(!id.is_empty()).then_some(id)] {
                tbody {
                    @for (k, v) in entries {
                        tr { th scope="row" { (k) } td { (plain(v)) } }
                    }
                }
            }
        }
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn panel(
    spans: &[Span],
    selected: Option<usize>,
    logs: &[Map<String, Value>],
    incoming: &[IncomingLink],
    trace_id: &str,
    t0: i64,
) -> Markup {
    let Some(s) = selected.map(|i| &spans[i]) else {
        return html! { aside #span-panel { p.empty { "This trace has logs but no spans yet." } } };
    };
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let events = s.list("events");
    let links = s.list("links");
    let linked_from: Vec<&IncomingLink> = incoming
        .iter()
        .filter(|l| l.target_span_id == s.id)
        .collect();
    let span_logs: Vec<&Map<String, Value>> = logs
        .iter()
        .filter(|l| l.get("span_id").and_then(Value::as_str) == Some(s.id.as_str()))
        .collect();
    let stacktrace = s
        .row
        .get("exception_stacktrace")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty());
    html! {
        aside #span-panel aria-label="Selected span" data-span-id=(s.id) {
            h2 {
                span.dot style=(format!("background:{}", layout::service_color(&s.service))) {}
                (s.name)
            }
            dl.facts {
                dt { "Service" } dd { (s.service) @if let Some(v) = &s.version { " " span.version { (v) } } }
                dt { "Kind" } dd { (s.kind) }
                dt { "Status" } dd.bad[s.failed()] {
                    (s.status)
                    @if let Some(c) = s.http_status { " · HTTP " (c) }
                    @if let Some(m) = &s.status_message { " · " (m) }
                }
                dt { "Start" } dd { (layout::time(s.start_ns)) " (+" (layout::ms((s.start_ns - t0) as f64 / 1e6)) ")" }
                dt { "Duration" } dd { (layout::ms(s.duration_ns as f64 / 1e6)) }
                dt { "Span id" } dd { code { (s.id) } }
                @if let Some(p) = &s.parent {
                    dt { "Parent" } dd {
                        @if by_id.contains_key(p.as_str()) {
                            a href=(layout::trace_href(trace_id, Some(p))) { code { (p) } }
                        } @else {
                            code { (p) } " " span.badge.warn { "never arrived" }
                        }
                    }
                }
            }
            @if !links.is_empty() || !linked_from.is_empty() {
                h3 { "Links" }
                @if !links.is_empty() {
                    ul.span-links {
                        @for link in &links {
                            @let lt = link.get("trace_id").and_then(Value::as_str).unwrap_or_default();
                            @let ls = link.get("span_id").and_then(Value::as_str).unwrap_or_default();
                            li { "→ "
                                a.link-target href=(layout::trace_href(lt, Some(ls))) {
                                    @if let Some(target) = by_id.get(ls).filter(|_| lt == trace_id) {
                                        (target.service) " " (target.name)
                                    } @else {
                                        "span " code { (ls.get(..8).unwrap_or(ls)) } " of trace " code { (lt.get(..8).unwrap_or(lt)) }
                                    }
                                }
                            }
                        }
                    }
                }
                @if !linked_from.is_empty() {
                    div #linked-from {
                        p { "Linked from:" }
                        ul {
                            @for l in &linked_from {
                                li { "← " a href=(layout::trace_href(&l.trace_id, Some(&l.span_id))) { (l.service_name) " " (l.name) } }
                            }
                        }
                    }
                }
            }
            h3 { "Attributes" }
            (kv_table("span-attributes", s.row.get("attributes")))
            h3 { "Events" }
            div #span-events {
                @if events.is_empty() { p.empty { "none" } }
                @for event in &events {
                    @let name = event.get("name").and_then(Value::as_str).unwrap_or_default();
                    @let at = event.get("time_ns").and_then(Value::as_i64).unwrap_or(s.start_ns);
                    @let attrs = event.get("attributes");
                    div.event.exception[name == "exception"] {
                        p { strong { (name) } " at +" (layout::ms((at - s.start_ns) as f64 / 1e6)) }
                        @if name == "exception" {
                            @let get = |k: &str| attrs.and_then(|a| a.get(k)).and_then(Value::as_str).unwrap_or_default().to_string();
                            p.exception-title { strong { (get("exception.type")) } ": " (get("exception.message")) }
                            @let trace = get("exception.stacktrace");
                            @if !trace.is_empty() { pre.stacktrace { (trace) } }
                        } @else {
                            (kv_table("", attrs))
                        }
                    }
                }
                @if events.iter().all(|e| e.get("name").and_then(Value::as_str) != Some("exception")) {
                    @if let Some(trace) = stacktrace {
                        div.event.exception { p.exception-title { strong { "Exception" } } pre.stacktrace { (trace) } }
                    }
                }
            }
            h3 { "Logs of this span" }
            @if span_logs.is_empty() {
                p.empty { "none" }
            } @else {
                table.logs.compact {
                    tbody { @for l in &span_logs { (line_row(&Line::from_object(l), false)) } }
                }
            }
            h3 { "Resource" }
            (kv_table("span-resource", s.row.get("resource_attributes")))
        }
    }
}
