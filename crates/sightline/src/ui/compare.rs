//! `/compare`: a candidate release against its baseline, route by route — requests, error rate,
//! p50/p95/p99 side by side, each route's verdict and why, the errors the candidate raises that
//! the baseline never did, and the overall verdict `sightline compare` gates a CI job on. The
//! form offers the service's versions seen in the window, the one before the newest as the
//! baseline and the newest as the candidate (without a service asked for: the first that ran two).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Html;
use maud::{Markup, html};
use sightline_query::compare::{self, Comparison, Stats, Verdict};
use sightline_query::overview;

use super::layout::{self, Section};
use super::window::Window;
use super::{UiError, UiState, param};
use crate::server::changes_api::compare_question;

fn verdict_badge(verdict: Verdict) -> Markup {
    let class = match verdict {
        Verdict::Worse => "badge error",
        Verdict::Better => "badge ok",
        Verdict::Same => "badge",
        Verdict::InsufficientData => "badge muted",
    };
    html! { span class=(class) data-verdict=(verdict.as_str()) { (verdict.as_str().replace('_', " ")) } }
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".into(), layout::ms)
}

fn pair(b: &Stats, c: &Stats, f: impl Fn(&Stats) -> String) -> Markup {
    html! { span.base { (f(b)) } " → " span.cand { (f(c)) } }
}

/// `/compare`.
pub async fn page(
    State(state): State<UiState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Html<String>, UiError> {
    let now_ns = state.now_ns();
    let window = Window::from_params(&params, now_ns, "1h")?;
    let engine = &state.api.engine;
    let services = overview::service_names(engine, window.time_range()).await?;
    let by = param(&params, "by")
        .unwrap_or("service.version")
        .to_string();
    // Unless one is asked for: the first service that ran two versions in the window.
    let mut service = param(&params, "service").map(str::to_string);
    let mut versions = Vec::new();
    match &service {
        Some(s) => versions = compare::cohort_values(engine, s, &by, window.time_range()).await?,
        None => {
            for s in &services {
                let seen = compare::cohort_values(engine, s, &by, window.time_range()).await?;
                if seen.len() >= 2 || service.is_none() {
                    service = Some(s.clone());
                    versions = seen;
                }
                if versions.len() >= 2 {
                    break;
                }
            }
        }
    }
    // The newest version is the candidate, the one before it the baseline.
    let newest = versions.last().map(|(v, _)| v.clone());
    let before = versions
        .len()
        .checked_sub(2)
        .and_then(|i| versions.get(i))
        .map(|(v, _)| v.clone());
    let baseline = param(&params, "baseline").map(str::to_string).or(before);
    let candidate = param(&params, "candidate").map(str::to_string).or(newest);
    let route = param(&params, "route").map(str::to_string);
    let answer: Option<Comparison> = match (&service, &baseline, &candidate) {
        (Some(s), Some(b), Some(c)) if b != c => {
            let mut asked: HashMap<String, String> = params.clone();
            asked.insert("service".into(), s.clone());
            asked.insert("baseline".into(), b.clone());
            asked.insert("candidate".into(), c.clone());
            asked.insert("by".into(), by.clone());
            asked.insert("start".into(), window.start_ns.to_string());
            asked.insert("end".into(), window.end_ns.to_string());
            asked.remove("since");
            let question =
                compare_question(&asked, now_ns).map_err(|e| UiError::new(e.code, e.message))?;
            Some(compare::compare(engine, &question).await?)
        }
        _ => None,
    };
    let mut here: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("service", &service),
        ("baseline", &baseline),
        ("candidate", &candidate),
        ("route", &route),
    ] {
        if let Some(v) = v {
            here.push((k, v.clone()));
        }
    }
    if by != "service.version" {
        here.push(("by", by.clone()));
    }
    let cli = match (&service, &baseline, &candidate) {
        (Some(s), Some(b), Some(c)) => Some(format!(
            "sightline compare --service {s} --baseline {b} --candidate {c}{}{} {}",
            if by == "service.version" {
                String::new()
            } else {
                format!(" --by {by}")
            },
            route
                .as_ref()
                .map(|r| format!(" --route '{r}'"))
                .unwrap_or_default(),
            if window.range == "custom" {
                format!(
                    "--start {} --end {}",
                    sightline_query::json::format_time_ns(window.start_ns),
                    sightline_query::json::format_time_ns(window.end_ns)
                )
            } else {
                format!("--since {}", window.range)
            }
        )),
        _ => None,
    };
    let body = html! {
        h1 { "Compare releases" }
        form #compare-form method="get" action="/compare" {
            @for (k, v) in window.params() { input type="hidden" name=(k) value=(v); }
            label { "Service "
                select name="service" {
                    @for s in &services {
                        option value=(s) selected[service.as_deref() == Some(s.as_str())] { (s) }
                    }
                }
            }
            label { "By " input type="text" name="by" value=(by) size="22"; }
            label { "Baseline " input #baseline type="text" name="baseline" value=[baseline.as_deref()] list="versions" size="12"; }
            label { "Candidate " input #candidate type="text" name="candidate" value=[candidate.as_deref()] list="versions" size="12"; }
            label { "Route " input type="text" name="route" value=[route.as_deref()] placeholder="all" size="24"; }
            datalist #versions { @for (v, _) in &versions { option value=(v) {} } }
            button type="submit" { "Compare" }
        }
        @if !versions.is_empty() {
            p.hint #versions-seen { "Seen in this window: "
                @for (i, (v, n)) in versions.iter().enumerate() {
                    @if i > 0 { ", " } code { (v) } " (" (n) " requests)"
                }
            }
        }
        @match &answer {
            None => {
                (layout::empty(if services.is_empty() {
                    "No service sent requests in this window: widen the time range."
                } else {
                    "Name a baseline and a candidate that differ: this service ran one version in this window."
                }))
            }
            Some(a) => {
                section #compare-verdict {
                    h2 { (verdict_badge(a.verdict)) " " (a.by) "=" (a.candidate) " against " (a.baseline) }
                    p.lede #compare-summary { (a.summary) }
                    p.hint { (a.baseline_requests) " baseline and " (a.candidate_requests) " candidate requests. "
                        "A difference counts when it is significant (z-test, family-wise " (format!("{}", a.floors.significance)) ") and at least "
                        (format!("{:.0}%", a.floors.latency_ratio * 100.0)) " on a percentile or " (a.floors.error_rate_points) " points of error rate; each route needs "
                        (a.floors.min_requests) " requests in both."
                        @if a.sampled { " Requests were sampled." } }
                    @if let Some(cli) = &cli { p.hint { "In a CI job: " code #compare-cli { (cli) } " (exit 1 on a regression)." } }
                }
                table #compare-routes {
                    thead { tr {
                        th scope="col" { "Route" } th.num scope="col" { "Requests" } th.num scope="col" { "Error rate" }
                        th.num scope="col" { "p50" } th.num scope="col" { "p95" } th.num scope="col" { "p99" }
                        th scope="col" { "Verdict" } th scope="col" { "Why" }
                    } }
                    tbody {
                        @for r in &a.routes {
                            tr.compare-route data-route=(r.route) data-verdict=(r.verdict.as_str()) {
                                td { code { (r.route) } }
                                td.num { (pair(&r.baseline, &r.candidate, |s| s.requests.to_string())) }
                                td.num { (pair(&r.baseline, &r.candidate, |s| layout::percent(s.error_rate))) }
                                td.num { (pair(&r.baseline, &r.candidate, |s| ms(s.p50_ms))) }
                                td.num { (pair(&r.baseline, &r.candidate, |s| ms(s.p95_ms))) }
                                td.num { (pair(&r.baseline, &r.candidate, |s| ms(s.p99_ms))) }
                                td { (verdict_badge(r.verdict)) }
                                td.reasons { (r.reasons.join("; ")) }
                            }
                        }
                    }
                }
                section #new-errors {
                    h2 { "Errors never seen in " (a.baseline) }
                    @if a.new_errors.is_empty() {
                        (layout::empty("None: every error the candidate raised, the baseline raised too."))
                    } @else {
                        table #new-errors-table {
                            thead { tr { th scope="col" { "Error" } th.num scope="col" { "Requests" } th scope="col" { "Example" } } }
                            tbody {
                                @for e in &a.new_errors {
                                    tr.new-error data-error=(e.error) {
                                        td { code { (e.error) } }
                                        td.num { (e.count) }
                                        td { @if !e.example_trace_id.is_empty() {
                                            a.trace-link href=(layout::trace_href(&e.example_trace_id, None)) { (e.example_trace_id.get(..8).unwrap_or(&e.example_trace_id)) "…" }
                                        } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(Html(
        layout::page(
            "Compare releases",
            Section::Compare,
            Some((&window, "/compare", &here)),
            body,
            state.auth.enabled(),
        )
        .into_string(),
    ))
}
