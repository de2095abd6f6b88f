//! The page shell (navigation, time picker, theme), charts as uPlot descriptions, and the
//! formatting every page shares.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::json;

use super::window::{PRESETS, Window, input_time};

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Services,
    Logs,
    Query,
    Trace,
    Alerts,
    Slos,
    Compare,
    Quality,
}

/// A small mark for the browser tab, inline so it costs no request.
const FAVICON: &str = "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E%3Ccircle cx='8' cy='8' r='7' fill='%233b82f6'/%3E%3Cpath d='M3 9h3l1.5-4 2 7 1.5-3H13' stroke='white' stroke-width='1.5' fill='none'/%3E%3C/svg%3E";

/// Sets the theme before the first paint, from the saved choice or the system's.
const THEME_SCRIPT: &str = "(function(){var t=localStorage.getItem('sightline-theme');\
if(t!=='light'&&t!=='dark'){t=matchMedia('(prefers-color-scheme: dark)').matches?'dark':'light';}\
document.documentElement.dataset.theme=t;})();";

/// The time picker of a page: the window, the page's path, and the page's other URL state
/// (kept when the window changes).
pub type Picker<'a> = (&'a Window, &'a str, &'a [(&'a str, String)]);

/// A whole page: header (sections, time picker, theme, and a sign-out link when `sign_out`,
/// i.e. when the server asks for tokens), then `body`. Pages without a time window pass no picker.
pub fn page(
    title: &str,
    section: Section,
    picker: Option<Picker>,
    body: Markup,
    sign_out: bool,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" data-theme="light" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                link rel="icon" href=(FAVICON);
                title { (title) " · Sightline" }
                script { (PreEscaped(THEME_SCRIPT)) }
                link rel="stylesheet" href=(super::asset_url("uPlot.min.css"));
                link rel="stylesheet" href=(super::asset_url("app.css"));
                script src=(super::asset_url("htmx.min.js")) defer {}
                script src=(super::asset_url("uPlot.iife.min.js")) defer {}
                script src=(super::asset_url("app.js")) defer {}
            }
            body {
                a.skip href="#content" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Sightline" }
                    @let wq = picker.map(|(w, _, _)| format!("?{}", w.query())).unwrap_or_default();
                    nav aria-label="Sections" {
                        (nav_link(&format!("/{wq}"), "Services", section == Section::Services))
                        (nav_link(&format!("/logs{wq}"), "Logs", section == Section::Logs))
                        (nav_link(&format!("/query{wq}"), "Query", section == Section::Query))
                        (nav_link("/alerts", "Alerts", section == Section::Alerts))
                        (nav_link("/slos", "SLOs", section == Section::Slos))
                        (nav_link("/compare", "Compare", section == Section::Compare))
                        (nav_link("/quality", "Quality", section == Section::Quality))
                    }
                    @if let Some((window, action, keep)) = picker {
                        (time_picker(window, action, keep))
                    }
                    button #theme-toggle type="button" title="Switch between light and dark" {
                        "Theme"
                    }
                    @if sign_out {
                        a.sign-out href="/logout" { "Sign out" }
                    }
                }
                main #content { (body) }
            }
        }
    }
}

fn nav_link(href: &str, label: &str, current: bool) -> Markup {
    html! {
        a href=(href) aria-current=[current.then_some("page")] { (label) }
    }
}

/// The time-range picker: a GET form back to the page, carrying the page's other state.
pub fn time_picker(window: &Window, action: &str, keep: &[(&str, String)]) -> Markup {
    let custom = window.range == "custom";
    html! {
        form #time-picker method="get" action=(action) {
            @for (name, value) in keep {
                @if !value.is_empty() {
                    input type="hidden" name=(name) value=(value);
                }
            }
            label for="range" { "Time" }
            select #range name="range" {
                @for preset in PRESETS {
                    option value=(preset) selected[window.range == *preset] { "Last " (preset) }
                }
                @if !PRESETS.contains(&window.range.as_str()) && !custom {
                    option value=(window.range) selected { "Last " (window.range) }
                }
                option value="custom" selected[custom] { "Custom (UTC)" }
            }
            span.custom hidden[!custom] {
                input type="datetime-local" name="start" step="1" aria-label="Start (UTC)"
                    value=(input_time(window.start_ns));
                input type="datetime-local" name="end" step="1" aria-label="End (UTC)"
                    value=(input_time(window.end_ns));
            }
            button type="submit" { "Apply" }
        }
    }
}

/// A line of a chart.
pub struct Line<'a> {
    pub label: &'a str,
    pub values: Vec<Option<f64>>,
    /// A color from the palette, or `None` for the next one.
    pub color: Option<&'a str>,
}

/// A chart rendered by uPlot in the browser (app.js reads `data-chart`).
pub fn chart(
    id: &str,
    title: &str,
    x_s: &[f64],
    lines: &[Line],
    unit: &str,
    spark: bool,
) -> Markup {
    chart_with_exemplars(id, title, x_s, lines, unit, spark, &[])
}

/// A point drawn over a chart's lines that opens a trace when clicked (an exemplar).
#[derive(Debug, Clone, PartialEq)]
pub struct TracePoint {
    /// When, in seconds since the epoch.
    pub t: f64,
    /// Its value, in the chart's unit.
    pub y: f64,
    /// The trace it opens.
    pub trace_id: String,
}

/// [`chart`] with exemplars: points at their time and value that open their trace
/// (`app.js` draws them and follows a click to `/traces/{id}`).
pub fn chart_with_exemplars(
    id: &str,
    title: &str,
    x_s: &[f64],
    lines: &[Line],
    unit: &str,
    spark: bool,
    points: &[TracePoint],
) -> Markup {
    let spec = json!({
        "title": title,
        "unit": unit,
        "spark": spark,
        "x": x_s,
        "series": lines.iter().map(|l| json!({
            "label": l.label,
            "values": l.values,
            "color": l.color,
        })).collect::<Vec<_>>(),
        "exemplars": points.iter().map(|p| json!({"t": p.t, "y": p.y, "trace_id": p.trace_id})).collect::<Vec<_>>(),
    });
    html! {
        div.chart.spark[spark] id=[(!id.is_empty()).then_some(id)] data-chart=(spec.to_string())
            role="img" aria-label=(title) {}
    }
}

/// Colors of the palette, as the stylesheet names them.
pub const RED: &str = "#d9534f";
pub const BLUE: &str = "#3b82f6";

/// A service's color: the same for a name on every page.
pub fn service_color(name: &str) -> &'static str {
    const PALETTE: &[&str] = &[
        "#3b82f6", "#10b981", "#f59e0b", "#8b5cf6", "#ec4899", "#14b8a6", "#f97316", "#6366f1",
        "#84cc16", "#06b6d4",
    ];
    let hash = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ b as u32).wrapping_mul(16_777_619)
    });
    PALETTE[hash as usize % PALETTE.len()]
}

/// A duration in milliseconds, readably: `850 µs`, `12.3 ms`, `1.24 s`.
pub fn ms(value: f64) -> String {
    if value <= 0.0 {
        "0".into()
    } else if value < 1.0 {
        format!("{:.0} µs", value * 1000.0)
    } else if value < 10.0 {
        format!("{value:.2} ms")
    } else if value < 1000.0 {
        format!("{value:.1} ms")
    } else if value < 60_000.0 {
        format!("{:.2} s", value / 1000.0)
    } else {
        format!("{:.1} min", value / 60_000.0)
    }
}

/// A rate per second: `12.3/s`, `0.05/s`.
pub fn rate(per_s: f64) -> String {
    if per_s == 0.0 {
        "0/s".into()
    } else if per_s < 0.1 {
        format!("{per_s:.3}/s")
    } else if per_s < 10.0 {
        format!("{per_s:.2}/s")
    } else {
        format!("{per_s:.1}/s")
    }
}

/// A share as a percentage: `2.4%`.
pub fn percent(share: f64) -> String {
    if share == 0.0 {
        "0%".into()
    } else if share < 0.001 {
        "<0.1%".into()
    } else {
        format!("{:.1}%", share * 100.0)
    }
}

/// A time in UTC with milliseconds: `2026-11-22 05:31:02.123`.
pub fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// Reads an RFC 3339 time (as the query engine writes them) back to nanoseconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// The link to a service's page, keeping the window (`wq`, a query string).
pub fn service_href(name: &str, wq: &str) -> String {
    format!("{}?{wq}", service_path(name))
}

/// A service page's path.
pub fn service_path(name: &str) -> String {
    format!("/services/{}", super::window::percent(name))
}

/// The link to a trace, optionally with a span selected.
pub fn trace_href(trace_id: &str, span_id: Option<&str>) -> String {
    match span_id {
        Some(span) if !span.is_empty() => format!("/traces/{trace_id}?span={span}"),
        _ => format!("/traces/{trace_id}"),
    }
}

/// The headers of the cells [`red_cells`] writes.
pub fn red_headers() -> Markup {
    html! {
        th.num scope="col" { "Rate" }
        th.num scope="col" { "Errors" }
        th.num scope="col" { "p50" }
        th.num scope="col" { "p95" }
        th.num scope="col" { "p99" }
    }
}

/// A route's cell: its method, if any, then its route.
pub fn route_cell(method: Option<&str>, route: &str) -> Markup {
    html! {
        td.route { @if let Some(m) = method { span.method { (m) } " " } (route) }
    }
}

/// The rate, error share and p50/p95/p99 cells of a service's or route's row.
pub fn red_cells(red: &sightline_query::views::Red) -> Markup {
    html! {
        td.num { (rate(red.rate_per_s)) }
        td.num.bad[red.errors > 0] { (percent(red.error_rate)) }
        td.num { (ms(red.p50_ms)) }
        td.num { (ms(red.p95_ms)) }
        td.num { (ms(red.p99_ms)) }
    }
}

/// An empty state with a hint of what to do.
pub fn empty(message: &str) -> Markup {
    html! { p.empty { (message) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(ms(0.25), "250 µs");
        assert_eq!(ms(12.34), "12.3 ms");
        assert_eq!(ms(1234.0), "1.23 s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(12.34), "12.3/s");
        assert_eq!(percent(0.0241), "2.4%");
        assert_eq!(percent(0.0), "0%");
        assert_eq!(time(1_700_000_000_123_456_789), "2023-11-14 22:13:20.123");
    }

    #[test]
    fn a_service_keeps_its_color() {
        assert_eq!(service_color("orders"), service_color("orders"));
        assert_ne!(service_color("orders"), service_color("payments"));
    }

    #[test]
    fn the_picker_keeps_the_page_state_and_escapes_it() {
        let window = Window {
            range: "1h".into(),
            start_ns: 0,
            end_ns: 3_600_000_000_000,
        };
        let html = time_picker(&window, "/logs", &[("q", "<b>".into())]).into_string();
        assert!(html.contains(r#"name="q" value="&lt;b&gt;""#), "{html}");
        assert!(html.contains(r#"<option value="1h" selected>"#), "{html}");
    }
}
