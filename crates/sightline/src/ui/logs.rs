//! `/logs`: the log explorer (service, severity, time, text and attribute filters, pages of
//! results, each line leading to its trace) and `/logs/stream`, its live tail as server-sent
//! events.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::Html;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use maud::{Markup, html};
use serde_json::{Map, Value};
use sightline_model::schema::LogRow;
use sightline_model::severity::severity_number_from_text;
use sightline_query::overview;
use sightline_query::patterns::{self, Pattern, PatternQuestion};
use sightline_query::views::{self, LogSearch, parse_attribute_filter};
use tokio::sync::broadcast::{self, error::RecvError};

use super::layout::{self, Section};
use super::window::{Window, encode};
use super::{UiError, UiState, param};

/// Lines per page.
const PAGE_ROWS: usize = 100;
/// The live tail sends at most this many lines per tick, and ticks four times a second; what is
/// above is counted and said, so a busy service cannot freeze the page.
const TAIL_LINES_PER_TICK: usize = 200;
const TAIL_TICK: Duration = Duration::from_millis(250);

const SEVERITIES: &[&str] = &["trace", "debug", "info", "warn", "error", "fatal"];

/// A log line as the tables show it, from a stored row or a live one.
pub struct Line<'a> {
    pub time_ns: i64,
    pub service: &'a str,
    pub severity: &'a str,
    pub body: &'a str,
    pub trace_id: Option<&'a str>,
    pub span_id: Option<&'a str>,
    pub exception: Option<String>,
}

impl<'a> Line<'a> {
    pub fn from_object(row: &'a Map<String, Value>) -> Self {
        let text = |key: &str| {
            row.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        Self {
            time_ns: text("time").and_then(layout::parse_rfc3339).unwrap_or(0),
            service: text("service_name").unwrap_or(""),
            severity: text("severity").unwrap_or(""),
            body: text("body").unwrap_or(""),
            trace_id: text("trace_id"),
            span_id: text("span_id"),
            exception: exception(text("exception_type"), text("exception_message")),
        }
    }

    fn from_row(row: &'a LogRow) -> Self {
        let some = |v: &'a Option<String>| v.as_deref().filter(|s| !s.is_empty());
        Self {
            time_ns: row.time_ns,
            service: &row.service_name,
            severity: row.severity,
            body: &row.body,
            trace_id: some(&row.trace_id),
            span_id: some(&row.span_id),
            exception: exception(some(&row.exception_type), some(&row.exception_message)),
        }
    }
}

fn exception(kind: Option<&str>, message: Option<&str>) -> Option<String> {
    match (kind, message) {
        (Some(k), Some(m)) => Some(format!("{k}: {m}")),
        (Some(k), None) => Some(k.to_string()),
        (None, Some(m)) => Some(m.to_string()),
        (None, None) => None,
    }
}

pub fn line_row(line: &Line, live: bool) -> Markup {
    html! {
        tr.log-line.live[live] data-severity=(line.severity) {
            td.time { (layout::time(line.time_ns)) }
            td.service {
                span.dot style=(format!("background:{}", layout::service_color(line.service))) {}
                (line.service)
            }
            td { span.badge.(format!("sev-{}", line.severity)) { (line.severity) } }
            td.body {
                (line.body)
                @if let Some(e) = &line.exception { " " span.reason { (e) } }
            }
            td.trace {
                @if let Some(trace_id) = line.trace_id {
                    a.trace-link href=(layout::trace_href(trace_id, line.span_id)) title="Open the trace" {
                        (trace_id.get(..8).unwrap_or(trace_id)) "…"
                    }
                }
            }
        }
    }
}

/// A table of stored log lines, newest first.
pub fn log_table(rows: &[Map<String, Value>], id: bool) -> Markup {
    html! {
        table.logs id=[id.then_some("log-lines")] {
            thead { tr {
                th scope="col" { "Time (UTC)" }
                th scope="col" { "Service" }
                th scope="col" { "Severity" }
                th scope="col" { "Message" }
                th scope="col" { "Trace" }
            } }
            tbody {
                @for row in rows { (line_row(&Line::from_object(row), false)) }
            }
        }
    }
}

/// A table of log patterns: each with its count, its count in the baseline window, whether it
/// is new or grew, a sparkline of its lines over the window, and an example line.
pub fn pattern_table(patterns: &[Pattern]) -> Markup {
    html! {
        table #log-patterns-table.patterns {
            thead { tr {
                th.num scope="col" { "Lines" }
                th.num scope="col" { "Before" }
                th scope="col" { "Over time" }
                th scope="col" { "Severity" }
                th scope="col" { "Pattern and an example" }
            } }
            tbody {
                @for p in patterns {
                    tr.pattern data-count=(p.count) data-baseline=(p.baseline_count) data-new=(p.new) data-grew=(p.grew) {
                        td.num { (p.count) }
                        td.num { (p.baseline_count) }
                        td { (sparkline(&p.series)) }
                        td { span.badge.(format!("sev-{}", p.severity)) { (p.severity) } }
                        td.body {
                            @if p.new { span.badge.error.new-pattern { "new" } " " }
                            @else if p.grew { span.badge.warn.grew-pattern { "grew" } " " }
                            code.pattern-text { (p.pattern) }
                            br;
                            span.muted.example { (p.example) }
                            @if !p.services.is_empty() { " " span.muted { "· " (p.services.join(", ")) } }
                        }
                    }
                }
            }
        }
    }
}

/// A small line of counts as inline SVG, highest bucket at the top.
fn sparkline(series: &[u64]) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let top = series.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if series.len() > 1 {
        W / (series.len() - 1) as f64
    } else {
        W
    };
    let points: Vec<String> = series
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                H - 1.0 - (*v as f64 / top) * (H - 2.0)
            )
        })
        .collect();
    html! {
        svg.sparkline width=(W) height=(H) viewBox=(format!("0 0 {W} {H}")) role="img"
            aria-label=(format!("lines per bucket: {}", series.iter().map(u64::to_string).collect::<Vec<_>>().join(" "))) {
            polyline fill="none" stroke=(layout::BLUE) stroke-width="1.5" points=(points.join(" ")) {}
        }
    }
}

/// The filters of the page and of its live tail.
struct Filters {
    service: Option<String>,
    severity: Option<String>,
    text: Option<String>,
    attribute: Option<String>,
    trace_id: Option<String>,
}

impl Filters {
    fn read(params: &HashMap<String, String>) -> Result<Self, UiError> {
        let get = |key: &str| param(params, key).map(str::to_string);
        let filters = Self {
            service: get("service"),
            severity: get("severity"),
            text: get("q"),
            attribute: get("attr"),
            trace_id: get("trace_id"),
        };
        if let Some(severity) = &filters.severity
            && severity_number_from_text(severity).is_none()
        {
            return Err(UiError::bad_request(format!(
                "unknown severity {severity:?}: expected one of {}",
                SEVERITIES.join(", ")
            )));
        }
        Ok(filters)
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("service", &self.service),
            ("severity", &self.severity),
            ("q", &self.text),
            ("attr", &self.attribute),
            ("trace_id", &self.trace_id),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    fn attribute(&self) -> Result<Option<(String, String)>, UiError> {
        Ok(self
            .attribute
            .as_deref()
            .map(parse_attribute_filter)
            .transpose()?)
    }
}

pub async fn page(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let filters = Filters::read(&params)?;
    // A trace's logs are looked for over the whole week unless a window is asked for.
    let default = if filters.trace_id.is_some() {
        "7d"
    } else {
        "1h"
    };
    let window = Window::from_params(&params, state.now_ns(), default)?;
    let before = param(&params, "before")
        .map(|b| {
            b.parse::<i64>().map_err(|_| {
                UiError::bad_request(format!("before {b:?} must be a time in nanoseconds"))
            })
        })
        .transpose()?;
    let mut range = window.time_range();
    if let Some(before) = before {
        range.end_ns = Some(before.min(window.end_ns));
    }
    let search = LogSearch {
        service: filters.service.clone(),
        severity: filters.severity.clone(),
        text: filters.text.clone(),
        trace_id: filters.trace_id.clone(),
        attribute: filters.attribute()?,
        range,
        limit: PAGE_ROWS + 1,
        ascending: false,
    };
    let engine = &state.api.engine;
    let grouped = param(&params, "view") == Some("patterns");
    let pattern_question = PatternQuestion {
        service: filters.service.clone(),
        severity: filters.severity.clone(),
        start_ns: window.start_ns,
        end_ns: window.end_ns,
        baseline_ns: window.end_ns - window.start_ns,
        limit: PAGE_ROWS,
        buckets: 30,
    };
    let lines = async {
        if grouped {
            Ok(Vec::new())
        } else {
            views::logs(engine, &search).await
        }
    };
    let grouping = async {
        if grouped {
            patterns::patterns(engine, &pattern_question)
                .await
                .map(Some)
        } else {
            Ok(None)
        }
    };
    let (mut rows, services, grouping) = tokio::try_join!(
        lines,
        overview::log_service_names(engine, window.time_range()),
        grouping,
    )?;
    let more = rows.len() > PAGE_ROWS;
    rows.truncate(PAGE_ROWS);
    let oldest = rows
        .last()
        .and_then(|r| r.get("time"))
        .and_then(Value::as_str)
        .and_then(layout::parse_rfc3339);
    let mut here = filters.pairs();
    here.extend(window.params());
    let older = oldest.filter(|_| more).map(|t| {
        let mut pairs = here.clone();
        pairs.push(("before", t.to_string()));
        format!("/logs?{}", encode(&pairs))
    });
    let stream_url = format!("/logs/stream?{}", encode(&filters.pairs()));
    // The two views' links: the same filters and window, lines or patterns.
    let lines_pairs: Vec<(&str, String)> =
        here.iter().filter(|(k, _)| *k != "view").cloned().collect();
    let mut pattern_pairs = lines_pairs.clone();
    pattern_pairs.push(("view", "patterns".to_string()));

    let body = html! {
        h1 { "Logs" }
        form #log-filters method="get" action="/logs" {
            @for (k, v) in window.params() { input type="hidden" name=(k) value=(v); }
            @if let Some(t) = &filters.trace_id { input type="hidden" name="trace_id" value=(t); }
            label { "Service "
                select name="service" {
                    option value="" { "all" }
                    @for s in &services {
                        option value=(s) selected[filters.service.as_deref() == Some(s.as_str())] { (s) }
                    }
                }
            }
            label { "Severity at least "
                select name="severity" {
                    option value="" { "any" }
                    @for s in SEVERITIES {
                        option value=(s) selected[filters.severity.as_deref() == Some(*s)] { (s) }
                    }
                }
            }
            label { "Text " input type="search" name="q" value=[filters.text.as_deref()] placeholder="contains…"; }
            label { "Attribute " input type="text" name="attr" value=[filters.attribute.as_deref()] placeholder="key=value"; }
            @if grouped { input type="hidden" name="view" value="patterns"; }
            button type="submit" { "Search" }
            button #live-tail type="button" data-stream=(stream_url) aria-pressed="false" { "Live tail" }
        }
        @if let Some(t) = &filters.trace_id {
            p.notice { "Lines of trace " a href=(layout::trace_href(t, None)) { code { (t) } } ". "
                a href=(format!("/logs?{}", window.query())) { "Clear" } }
        }
        nav.tabs #log-views aria-label="Views" {
            a href=(format!("/logs?{}", encode(&lines_pairs))) aria-current=[(!grouped).then_some("page")] { "Lines" }
            " "
            a #patterns-view href=(format!("/logs?{}", encode(&pattern_pairs))) aria-current=[grouped.then_some("page")] { "Patterns" }
        }
        @if let Some(found) = &grouping {
            p.hint #patterns-summary {
                (found.lines) " lines in " (found.distinct) " patterns; compared with the same length of time before (" (found.baseline_lines) " lines). "
                "The text and attribute filters apply to lines only."
                @if found.truncated { " Too many distinct lines: the rarest were left out." }
            }
            @if found.patterns.is_empty() {
                (layout::empty("No log lines match in this window. Widen the time range or loosen the filters."))
            } @else {
                (pattern_table(&found.patterns))
            }
        } @else {
        p #tail-status.hint aria-live="polite" {}
        @if rows.is_empty() {
            (layout::empty("No log lines match in this window. Widen the time range or loosen the filters."))
        }
        (log_table(&rows, true))
        nav.pager aria-label="Pages" {
            @if before.is_some() {
                a #newest href=(format!("/logs?{}", encode(&here))) { "← Newest" }
            }
            @if let Some(href) = &older {
                a #older href=(href) { "Older →" }
            }
        }
        }
    };
    Ok(Html(
        layout::page(
            "Logs",
            Section::Logs,
            Some((&window, "/logs", &filters.pairs())),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}

/// Live tail: new lines matching the filters, as `lines` events of table rows.
pub async fn stream(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, UiError> {
    let filters = Filters::read(&params)?;
    let matcher = Matcher {
        service: filters.service.clone(),
        floor: filters
            .severity
            .as_deref()
            .and_then(severity_number_from_text)
            .unwrap_or(0),
        text: filters.text.as_deref().map(str::to_lowercase),
        attribute: filters.attribute()?,
        trace_id: filters.trace_id.as_deref().map(str::to_ascii_lowercase),
    };
    let tail = Tail {
        receiver: state.tail.subscribe(),
        matcher,
        pending: Vec::new(),
        skipped: 0,
        ticker: tokio::time::interval(TAIL_TICK),
        started: false,
        shutdown: state.shutdown.clone(),
    };
    let events = futures::stream::unfold(tail, |mut tail| async move {
        tail.next_event().await.map(|event| (Ok(event), tail))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

struct Matcher {
    service: Option<String>,
    floor: i32,
    text: Option<String>,
    attribute: Option<(String, String)>,
    trace_id: Option<String>,
}

impl Matcher {
    fn matches(&self, row: &LogRow) -> bool {
        if self
            .service
            .as_ref()
            .is_some_and(|s| *s != row.service_name)
            || row.severity_number < self.floor
            || self
                .trace_id
                .as_ref()
                .is_some_and(|t| row.trace_id.as_deref() != Some(t.as_str()))
            || self
                .text
                .as_ref()
                .is_some_and(|t| !row.body.to_lowercase().contains(t.as_str()))
        {
            return false;
        }
        match &self.attribute {
            None => true,
            Some((key, value)) => [&row.attributes, &row.resource_attributes]
                .iter()
                .any(|json| attribute_text(json, key).is_some_and(|v| v == *value)),
        }
    }
}

/// An attribute's value as text, as the SQL filter compares it.
fn attribute_text(json: &str, key: &str) -> Option<String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else {
        return None;
    };
    map.get(key).map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

struct Tail {
    receiver: broadcast::Receiver<Arc<Vec<LogRow>>>,
    matcher: Matcher,
    pending: Vec<Arc<Vec<LogRow>>>,
    skipped: u64,
    ticker: tokio::time::Interval,
    started: bool,
    /// Becomes true when the server stops: the stream ends so shutdown need not wait for it.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Tail {
    async fn next_event(&mut self) -> Option<Event> {
        if !self.started {
            self.started = true;
            return Some(Event::default().event("ready").data("tailing"));
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.ticker.tick() => {
                    if let Some(event) = self.flush() {
                        return Some(event);
                    }
                }
                received = self.receiver.recv() => match received {
                    Ok(batch) => self.pending.push(batch),
                    Err(RecvError::Lagged(batches)) => {
                        // Whole exports were missed; they are counted as at least one line each.
                        self.skipped += batches;
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// One `lines` event: the new rows newest first (the page puts them on top), after a row
    /// saying how many were skipped to keep up, if any.
    fn flush(&mut self) -> Option<Event> {
        let mut rows = Vec::new();
        for batch in self.pending.drain(..) {
            for row in batch.iter().filter(|r| self.matcher.matches(r)) {
                if rows.len() < TAIL_LINES_PER_TICK {
                    rows.push(line_row(&Line::from_row(row), true).into_string());
                } else {
                    self.skipped += 1;
                }
            }
        }
        if rows.is_empty() && self.skipped == 0 {
            return None;
        }
        let mut html = String::new();
        let skipped = std::mem::take(&mut self.skipped);
        if skipped > 0 {
            html.push_str(
                &html! {
                    tr.tail-skipped { td colspan="5" {
                        (skipped) " lines not shown to keep up (the tail shows "
                        (TAIL_LINES_PER_TICK * 4) " lines a second); narrow the filters to see all."
                    } }
                }
                .into_string(),
            );
        }
        for row in rows.iter().rev() {
            html.push_str(row);
        }
        // A carriage return cannot travel in an event; as HTML it reads the same.
        Some(
            Event::default()
                .event("lines")
                .data(html.replace('\r', "&#13;")),
        )
    }
}
