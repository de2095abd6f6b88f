//! `/`: every service with its request rate, errors and latency over the window, a trend of
//! each, and a table of routes.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Html;
use maud::{Markup, html};
use sightline_query::overview::{self, Buckets};
use sightline_query::views;

use super::layout::{self, Line, Section};
use super::window::Window;
use super::{UiError, UiState};

pub async fn page(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let window = Window::from_params(&params, state.now_ns(), "1h")?;
    let engine = &state.api.engine;
    let buckets = Buckets::over(window.start_ns, window.end_ns);
    let (summaries, series, names) = tokio::try_join!(
        views::services(engine, window.time_range(), window.seconds(), None),
        overview::red_series(engine, buckets, None, false),
        overview::log_service_names(engine, window.time_range()),
    )?;
    // Services that only sent logs (or spans of other kinds) in the window.
    let quiet: Vec<&String> = names
        .iter()
        .filter(|n| !summaries.iter().any(|s| &s.service_name == *n))
        .collect();
    let x = buckets.times_s();
    let wq = window.query();
    let firing = state.api.monitor.firing_services();
    let broken = state.api.monitor.quality_error_services();
    let sampling = state.api.store.sampling_stats().unwrap_or_default();
    let kept = |name: &str| {
        sampling
            .get(name)
            .filter(|(seen, _)| *seen > 0)
            .map(|(seen, kept)| *kept as f64 / *seen as f64)
    };

    let body = html! {
        h1 { "Services" }
        p.lede { "Requests (server and consumer spans), errors and latency over the "
            @if window.range == "custom" { "chosen range" } @else { "last " (window.range) } "." }
        @if summaries.is_empty() && quiet.is_empty() {
            (layout::empty("No telemetry in this window. Point a service's OpenTelemetry exporter at this server (see the README), or run `sightline demo`."))
        } @else {
            table #services {
                thead { tr {
                    th scope="col" { "Service" }
                    (layout::red_headers())
                    th scope="col" { "Trend (requests/s, errors/s)" }
                } }
                tbody {
                    @for s in &summaries {
                        @let name = &s.service_name;
                        tr data-service=(name) data-firing[firing.contains(name)] {
                            th scope="row" {
                                span.dot style=(format!("background:{}", layout::service_color(name))) {}
                                a.service-link href=(layout::service_href(name, &wq)) { (name) }
                                @if firing.contains(name) {
                                    " " a.badge.error.firing href="/alerts" title="an alert of this service is firing" { "firing" }
                                }
                                @if broken.contains(name) {
                                    " " a.badge.error.quality-error href=(format!("/quality?service={}", crate::url::encode_component(name))) title="the telemetry of this service has an error finding (see Quality)" { "telemetry" }
                                }
                                @if let Some(share) = kept(name) {
                                    " " span.badge.kept-share data-kept-share=(format!("{share:.4}")) title="tail sampling kept this share of the service's older traces (errors, slow and rare ones whole); its counts here come from every request" { "traces kept " (layout::percent(share)) }
                                }
                            }
                            (layout::red_cells(&s.red))
                            td.trend {
                                @if let Some(series) = series.get(name) {
                                    (layout::chart("", &format!("{name} requests and errors per second"), &x, &[
                                        Line { label: "requests/s", values: series.rate.iter().map(|v| Some(*v)).collect(), color: Some(layout::BLUE) },
                                        Line { label: "errors/s", values: series.error_rate.iter().map(|v| Some(*v)).collect(), color: Some(layout::RED) },
                                    ], "/s", true))
                                }
                            }
                        }
                    }
                    @for name in &quiet {
                        tr data-service=(name) data-firing[firing.contains(*name)] {
                            th scope="row" {
                                span.dot style=(format!("background:{}", layout::service_color(name))) {}
                                a.service-link href=(layout::service_href(name, &wq)) { (name) }
                                @if firing.contains(*name) {
                                    " " a.badge.error.firing href="/alerts" title="an alert of this service is firing" { "firing" }
                                }
                                @if broken.contains(name.as_str()) {
                                    " " a.badge.error.quality-error href=(format!("/quality?service={}", crate::url::encode_component(name.as_str()))) title="the telemetry of this service has an error finding (see Quality)" { "telemetry" }
                                }
                            }
                            td.muted colspan="6" { "no requests in this window (logs or spans of other kinds only)" }
                        }
                    }
                }
            }
            h2 { "Routes" }
            (routes_table(&summaries, &wq))
        }
    };
    let keep: Vec<(&str, String)> = Vec::new();
    Ok(Html(
        layout::page(
            "Services",
            Section::Services,
            Some((&window, "/", &keep)),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}

fn routes_table(summaries: &[views::ServiceSummary], wq: &str) -> Markup {
    html! {
        table #routes {
            thead { tr {
                th scope="col" { "Service" }
                th scope="col" { "Route" }
                (layout::red_headers())
            } }
            tbody {
                @for s in summaries {
                    @for r in &s.routes {
                        tr.route-row {
                            td { a href=(layout::service_href(&s.service_name, wq)) { (s.service_name) } }
                            (layout::route_cell(r.http_method.as_deref(), &r.http_route))
                            (layout::red_cells(&r.red))
                        }
                    }
                }
            }
        }
    }
}
