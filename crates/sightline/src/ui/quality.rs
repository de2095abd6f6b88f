//! `/quality`: what is wrong with the telemetry itself — the quality report's findings (a
//! service gone silent, a release that renamed attributes or changed a unit, logs without trace
//! ids, exploding cardinality, incomplete spans, skewed clocks, what ingest refused), most
//! serious first, and the data checks with their latest result. `finding_table` is shared with
//! the service page.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Html;
use maud::{Markup, html};
use sightline_monitor::monitor::CheckView;
use sightline_query::quality::{Finding, ReportWindow};

use super::layout::{self, Section};
use super::window::Window;
use super::{UiError, UiState, param};

/// A severity as a badge.
fn severity_badge(severity: &str) -> Markup {
    let class = match severity {
        "error" => "badge error",
        "warn" => "badge warn",
        _ => "badge muted",
    };
    html! { span class=(class) { (severity) } }
}

/// The findings as a table (`table#findings`, a `tr.finding` each).
pub fn finding_table(findings: &[Finding], with_service: bool) -> Markup {
    html! {
        table #findings {
            thead { tr {
                th scope="col" { "Severity" }
                th scope="col" { "Check" }
                @if with_service { th scope="col" { "Service" } }
                th scope="col" { "Version" }
                th scope="col" { "Finding" }
                th scope="col" { "Since" }
            } }
            tbody {
                @for f in findings {
                    tr.finding data-check=(f.check) data-service=(f.service) data-severity=(f.severity.as_str()) {
                        td { (severity_badge(f.severity.as_str())) }
                        td { code { (f.check) } }
                        @if with_service {
                            td { a href=(format!("/services/{}", crate::url::encode_component(&f.service))) { (f.service) } }
                        }
                        td { (f.version.as_deref().unwrap_or("")) }
                        td {
                            div.summary { (f.summary) }
                            div.hint { (f.detail) }
                        }
                        td.time { (f.first_seen.get(..19).unwrap_or(&f.first_seen).replace('T', " ")) }
                    }
                }
            }
        }
    }
}

fn number(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| {
        if v.abs() >= 100.0 || v == v.trunc() {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        }
    })
}

fn check_table(checks: &[CheckView]) -> Markup {
    html! {
        table #data-checks {
            thead { tr {
                th scope="col" { "Check" }
                th scope="col" { "Kind" }
                th scope="col" { "State" }
                th.num scope="col" { "Value" }
                th.num scope="col" { "Threshold" }
                th scope="col" { "Latest result" }
            } }
            tbody {
                @for c in checks {
                    tr.data-check data-name=(c.name) data-state=(c.state) {
                        th scope="row" {
                            @if let Some(id) = &c.alert_id {
                                a href=(format!("/alerts/{id}")) { (c.name) }
                            } @else {
                                (c.name)
                            }
                        }
                        td { code { (c.kind) } " on " (c.table) }
                        td {
                            @let class = match c.state.as_str() {
                                "firing" => "badge error",
                                "pending" => "badge warn",
                                "ok" | "resolved" => "badge ok",
                                _ => "badge muted",
                            };
                            span class=(class) { (c.state.replace('_', " ")) }
                        }
                        td.num { (number(c.value)) }
                        td.num { (number(c.threshold)) }
                        td { (c.summary) }
                    }
                }
            }
        }
    }
}

/// `/quality`.
pub async fn page(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let window = Window::from_params(&params, state.now_ns(), "24h")?;
    let service = param(&params, "service").map(str::to_string);
    let report = ReportWindow {
        start_ns: window.start_ns,
        end_ns: window.end_ns,
        service: service.clone(),
    };
    let findings = state
        .api
        .monitor
        .quality_report(&report, &state.api.metrics.ingest_notes())
        .await?;
    let checks = state.api.monitor.checks(service.as_deref());
    let errors = findings
        .iter()
        .filter(|f| f.severity == sightline_query::quality::Severity::Error)
        .count();
    let body = html! {
        h1 { "Telemetry quality" @if let Some(s) = &service { " · " (s) } }
        p.lede {
            "What is wrong with the telemetry itself: services gone silent, volume far from other days, attributes a release renamed or dropped, units that changed, logs without trace ids and orphan spans, exploding cardinality, incomplete HTTP spans, skewed clocks and what ingest refused or cut. "
            code { "sightline check --fail-on error" } " exits 1 on an error finding or a failing check, so a CI job can hold a release whose telemetry broke."
        }
        form.filters method="get" action="/quality" {
            label { "Service " input type="text" name="service" value=[service.as_deref()] placeholder="all services"; }
            input type="hidden" name="range" value=(window.range);
            @if window.range == "custom" {
                input type="hidden" name="start" value=(window.start_ns);
                input type="hidden" name="end" value=(window.end_ns);
            }
            button type="submit" { "Filter" }
        }
        section #quality-findings {
            h2 { "Findings (" (findings.len()) @if errors > 0 { ", " (errors) " errors" } ")" }
            @if findings.is_empty() {
                (layout::empty("No findings: the telemetry in this window looks healthy."))
            } @else {
                (finding_table(&findings, true))
            }
        }
        section #checks {
            h2 { "Data checks" }
            @if checks.is_empty() {
                (layout::empty("No [[check]] is configured: add freshness, volume, nulls, distribution or schema checks on what services emit to sightline.toml (see the README)."))
            } @else {
                (check_table(&checks))
            }
        }
    };
    let keep: Vec<(&str, String)> = service.iter().map(|s| ("service", s.clone())).collect();
    Ok(Html(
        layout::page(
            "Quality",
            Section::Quality,
            Some((&window, "/quality", &keep)),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}
