//! `/alerts/{id}`, the incident page: where the person paged starts. It shows the alert's words
//! and numbers; proposed next steps in words, derived from what was found (a deploy just before,
//! the value that sets the bad requests apart); the explanation computed when it began firing;
//! example traces that carry the top explanation; the service's errors and latency around the
//! start with its deploys marked; a timeline of deploys and changes of state; the failing and
//! slowest requests; the error logs and their patterns; its runbook; and a form to silence it.

use axum::extract::{Path, State};
use axum::response::Html;
use maud::{Markup, html};
use sightline_model::TimeRange;
use sightline_monitor::alert::{Cause, Explained};
use sightline_monitor::deploys::Deploy;
use sightline_monitor::monitor::AlertView;
use sightline_query::explain::{self, Question, What};
use sightline_query::overview::{self, Buckets, RequestOrder, RequestSpan};
use sightline_query::patterns::{self, PatternQuestion};
use sightline_query::views::{self, LogSearch};

use super::layout::{self, Line, Section};
use super::monitor::{all_labels_text, labels_text, monitor, shell, since, state_badge};
use super::window::encode;
use super::{UiError, UiState};

const NS_PER_MINUTE: i64 = 60_000_000_000;
const NS_PER_HOUR: i64 = 60 * NS_PER_MINUTE;
/// Example traces of the top explanation shown.
const EXAMPLES: usize = 5;
/// A deploy this long before an alert began may have caused it.
const DEPLOY_SUSPECT_NS: i64 = 2 * NS_PER_HOUR;

/// `/alerts/{id}`.
pub async fn alert_page(
    State(state): State<UiState>,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let m = monitor(&state);
    let detail = m.alert(&id)?;
    let a = &detail.alert;
    let now_ns = state.now_ns();
    // When the breach began: the last time it went pending or firing (or an hour ago).
    let began = detail
        .timeline
        .iter()
        .rev()
        .find(|t| t.state == "pending" || t.state == "firing")
        .map_or(now_ns - NS_PER_HOUR, |t| t.time_ns);
    // The hour before it began (at least the last hour and a half), to now.
    let range_start = began.min(now_ns - NS_PER_HOUR) - NS_PER_HOUR / 2;
    let range = TimeRange::new(Some(range_start), Some(now_ns + 1));
    let engine = &state.api.engine;
    let route = a
        .labels
        .get("route")
        .map(String::as_str)
        .or(detail.explained.as_ref().and_then(|e| e.route.as_deref()));
    let deploys = a
        .service
        .as_deref()
        .map(|s| m.deploys(Some(s), None))
        .unwrap_or_default();
    let buckets = Buckets::over(range_start, now_ns + 1);
    let top = detail.explained.as_ref().and_then(|e| e.causes.first());
    let found = match &a.service {
        Some(service) => {
            let search = LogSearch {
                service: Some(service.clone()),
                severity: Some("error".into()),
                range,
                limit: 20,
                ..LogSearch::default()
            };
            let examples = async {
                match (&detail.explained, top) {
                    (Some(explained), Some(cause)) => {
                        explain::examples(
                            engine,
                            &question_of(explained),
                            &cause.key,
                            &cause.value,
                            cause.grouped,
                            EXAMPLES,
                        )
                        .await
                    }
                    _ => Ok(Vec::new()),
                }
            };
            let window_ns =
                (now_ns + 1 - began.min(now_ns - 30 * NS_PER_MINUTE)).max(NS_PER_MINUTE);
            let pattern_question = PatternQuestion {
                service: Some(service.clone()),
                severity: Some("warn".into()),
                start_ns: now_ns + 1 - window_ns,
                end_ns: now_ns + 1,
                baseline_ns: window_ns,
                limit: 10,
                buckets: 30,
            };
            let log_patterns = patterns::patterns(engine, &pattern_question);
            let versions = async {
                if top.is_some_and(|c| c.key == "service.version") {
                    sightline_query::compare::cohort_values(
                        engine,
                        service,
                        "service.version",
                        range,
                    )
                    .await
                } else {
                    Ok(Vec::new())
                }
            };
            let (failing, slowest, logs, examples, series, log_patterns, versions) = tokio::try_join!(
                overview::requests(
                    engine,
                    service,
                    route,
                    range,
                    RequestOrder::FailingNewest,
                    10
                ),
                overview::requests(engine, service, route, range, RequestOrder::Slowest, 10),
                views::logs(engine, &search),
                examples,
                overview::red_series(engine, buckets, Some(service), true),
                log_patterns,
                versions,
            )?;
            Found {
                failing,
                slowest,
                logs,
                examples,
                series: series.into_values().next(),
                patterns: log_patterns.patterns,
                versions,
            }
        }
        None => Found::default(),
    };
    let steps = next_steps(
        a,
        detail.explained.as_ref(),
        &deploys,
        &found.versions,
        began,
    );
    let x: Vec<f64> = detail
        .samples
        .iter()
        .map(|s| s.time_ns as f64 / 1e9)
        .collect();
    let values: Vec<Option<f64>> = detail.samples.iter().map(|s| Some(s.value)).collect();
    let thresholds: Vec<Option<f64>> = detail.samples.iter().map(|s| s.threshold).collect();
    // Every label: the form proposes to mute this alert only.
    let silence_matchers = all_labels_text(&a.labels);
    // Deploys and changes of state, newest first.
    let mut timeline: Vec<(i64, Markup)> = detail
        .timeline
        .iter()
        .map(|t| {
            (
                t.time_ns,
                html! {
                    tr.transition {
                        td.time { (layout::time(t.time_ns)) }
                        td { (state_badge(&t.state)) }
                        td.num { (t.value.map(|v| format!("{v:.4}")).unwrap_or_default()) }
                        td.num { (t.threshold.map(|v| v.to_string()).unwrap_or_default()) }
                    }
                },
            )
        })
        .collect();
    timeline.extend(deploys.iter().filter(|d| d.time_ns >= range_start).map(|d| {
        (d.time_ns, html! {
            tr.deploy data-version=(d.version) {
                td.time { (layout::time(d.time_ns)) }
                td colspan="3" { span.badge.deploy { "deploy" } " " (d.service_name) " " strong { (d.version) } " (" (d.source.as_str()) ")"
                    @if let Some(c) = &d.commit { " · commit " code { (c) } } }
            }
        })
    }));
    timeline.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    let bad = detail
        .explained
        .as_ref()
        .and_then(|e| What::parse(&e.what))
        .unwrap_or(What::Errors)
        .bad_word();
    let body = html! {
        h1 { (a.name) " " (state_badge(a.state.as_str())) @if a.silenced_by.is_some() { " " span.badge.muted { "silenced" } } }
        p.lede #summary { (a.summary) }
        dl.facts {
            dt { "Source" } dd { (a.source.as_str()) }
            dt { "Labels" } dd.labels { (labels_text(&a.labels)) }
            dt { "Since (UTC)" } dd { (since(a)) }
            @if let Some(v) = a.value { dt { "Value" } dd #value { (format!("{v:.4}")) @if let Some(t) = a.threshold { " (threshold " (t) ")" } } }
            @if let Some(url) = &a.runbook_url { dt { "Runbook" } dd { a #runbook href=(url) { (url) } } }
            @if let Some(service) = &a.service { dt { "Service" } dd { a href=(layout::service_path(service)) { (service) } } }
            @if let Some(err) = &a.delivery_error {
                dt { "Delivery" } dd.bad #delivery-error { "A notification to " (err.target) " failed: " (err.message) " (retried)" }
            }
        }
        section #next-steps {
            h2 { "Next steps" }
            ol { @for step in &steps { li { (step) } } }
        }
        section #explanation {
            h2 { "What sets the " (bad) " requests apart" }
            @match &detail.explained {
                None => {
                    (layout::empty(if a.fired_at.is_some() {
                        "This alert carries no explanation: it began firing before the server explained alerts, it watches no service, or the question failed (the server's log says why)."
                    } else {
                        "Explained when it begins firing."
                    }))
                }
                Some(e) => {
                    p.hint { "Computed when it began firing, over " (layout::time(e.start_ns).get(..16).unwrap_or_default()) "–" (layout::time(e.end_ns).get(11..16).unwrap_or_default()) " UTC: "
                        (e.bad_requests) " " (bad) " requests against " (e.other_requests) " others. " (e.summary) }
                    @if !e.causes.is_empty() {
                        table #causes {
                            thead { tr {
                                th scope="col" { "Dimension" } th scope="col" { "Value" }
                                th.num scope="col" { "Share of " (bad) } th.num scope="col" { "Share of others" }
                                th.num scope="col" { "Risk ratio" } th scope="col" { "In words" }
                            } }
                            tbody {
                                @for c in &e.causes {
                                    tr data-key=(c.key) data-value=(c.value) {
                                        td { code { (c.key) } } td { (c.value) @if c.grouped { " " span.muted { "(pattern)" } } }
                                        td.num { (layout::percent(c.selection_share)) }
                                        td.num { (layout::percent(c.baseline_share)) }
                                        td.num { (c.risk_ratio.map_or("all".into(), |r| format!("{r:.1}×"))) }
                                        td { (c.summary) }
                                    }
                                }
                            }
                        }
                    }
                    p.hint { a href=(explain_link(e)) { "Ask again over another window →" } }
                }
            }
        }
        @if let Some(cause) = top {
            section #examples {
                h2 { "Example traces with " code { (cause.key) "=" (cause.value) } }
                (super::service::request_table("example-traces", &found.examples, "No request of the window carries it any more (its spans may have aged out)."))
            }
        }
        @if let Some(series) = &found.series {
            section #around-start {
                h2 { "Errors and latency around the start" }
                @let x = buckets.times_s();
                div.charts data-service=[a.service.as_deref()] {
                    figure { figcaption { "Errors per second" }
                        (layout::chart("chart-errors", "Errors per second", &x, &[
                            Line { label: "errors/s", values: series.error_rate.iter().map(|v| Some(*v)).collect(), color: Some(layout::RED) },
                        ], "/s", false)) }
                    figure { figcaption { "Latency" }
                        (layout::chart("chart-latency", "Latency percentiles", &x, &[
                            Line { label: "p50", values: series.p50_ms.clone(), color: Some("#10b981") },
                            Line { label: "p95", values: series.p95_ms.clone(), color: Some("#f59e0b") },
                            Line { label: "p99", values: series.p99_ms.clone(), color: Some(layout::RED) },
                        ], "ms", false)) }
                }
            }
        }
        h2 { "Value against its threshold" }
        @if x.is_empty() {
            (layout::empty("No values recorded since the server started."))
        } @else {
            div data-service=[a.service.as_deref()] { (layout::chart("value-chart", "Value and threshold", &x, &[
                Line { label: "value", values, color: Some(layout::RED) },
                Line { label: "threshold", values: thresholds, color: Some(layout::BLUE) },
            ], "", false)) }
        }
        h2 { "Timeline" }
        @if timeline.is_empty() {
            (layout::empty("No changes of state recorded."))
        } @else {
            table #timeline {
                thead { tr { th scope="col" { "Time (UTC)" } th scope="col" { "State or deploy" } th.num scope="col" { "Value" } th.num scope="col" { "Threshold" } } }
                tbody { @for (_, row) in &timeline { (row) } }
            }
        }
        @if a.service.is_some() {
            h2 { "Failing requests" }
            (super::service::request_table("failing-requests", &found.failing, "No failed requests around this alert."))
            h2 { "Slowest requests" }
            (super::service::request_table("slowest-requests", &found.slowest, "No requests around this alert."))
            section #log-patterns {
                h2 { "Warning and error log patterns" }
                @if found.patterns.is_empty() {
                    (layout::empty("No warning or error logs from this service since shortly before it began."))
                } @else {
                    (super::logs::pattern_table(&found.patterns))
                }
            }
            h2 { "Error logs" }
            @if found.logs.is_empty() {
                (layout::empty("No error logs from this service around this alert."))
            } @else {
                (super::logs::log_table(&found.logs, false))
            }
        }
        h2 { "Silence" }
        form.silence method="post" action="/silences" {
            input type="hidden" name="alert" value=(a.id);
            label { "Matchers " input type="text" name="matchers" value=(silence_matchers) size="60"; }
            label { "For " input type="text" name="duration" value="2h" size="6"; }
            label { "Comment " input type="text" name="comment" size="30"; }
            button type="submit" { "Silence" }
        }
        p.muted { "A silence mutes notifications of matching alerts; they keep their state and history. Changing silences needs a token with the admin scope." }
    };
    Ok(shell(&a.name, Section::Alerts, body, &state))
}

/// What the page read about the alert's service.
#[derive(Default)]
struct Found {
    failing: Vec<RequestSpan>,
    slowest: Vec<RequestSpan>,
    logs: Vec<serde_json::Map<String, serde_json::Value>>,
    examples: Vec<RequestSpan>,
    series: Option<overview::RedSeries>,
    patterns: Vec<patterns::Pattern>,
    /// The service's versions seen around the alert, with their requests.
    versions: Vec<(String, u64)>,
}

/// The question an explanation answered.
fn question_of(e: &Explained) -> Question {
    Question {
        service: e.service.clone(),
        route: e.route.clone(),
        start_ns: e.start_ns,
        end_ns: e.end_ns,
        what: What::parse(&e.what).unwrap_or(What::Errors),
        threshold_ns: e.threshold_ms.map(|ms| (ms * 1e6) as i64),
        limit: 10,
    }
}

/// `sightline explain`'s question as an API link, for another look.
fn explain_link(e: &Explained) -> String {
    let mut params = vec![
        ("service", e.service.clone()),
        ("what", e.what.clone()),
        ("since", "30m".to_string()),
    ];
    if let Some(route) = &e.route {
        params.push(("route", route.clone()));
    }
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    format!("/api/v1/explain?{}", encode(&pairs))
}

/// Minutes in words: "2 minutes", "1 minute", "less than a minute".
fn minutes(ns: i64) -> String {
    match ns / NS_PER_MINUTE {
        0 => "less than a minute".into(),
        1 => "1 minute".into(),
        n if n < 120 => format!("{n} minutes"),
        n => format!("{:.1} hours", n as f64 / 60.0),
    }
}

fn pct(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// Keys whose value names a machine: a slow host, a bad pod.
const HOST_KEYS: &[&str] = &[
    "host.name",
    "host.id",
    "service.instance.id",
    "k8s.pod.name",
    "k8s.node.name",
    "container.id",
    "cloud.availability_zone",
    "cloud.region",
];
/// Keys whose value names something the service calls.
const DEPENDENCY_KEYS: &[&str] = &[
    "peer.service",
    "server.address",
    "net.peer.name",
    "db.system",
    "db.name",
    "db.namespace",
    "messaging.system",
    "rpc.service",
];

/// The proposed next steps in words, from the deploys before the alert began and its
/// explanation: a release that the bad requests run, a host, a dependency, one tenant, or
/// nothing that sets them apart.
fn next_steps(
    a: &AlertView,
    explained: Option<&Explained>,
    deploys: &[Deploy],
    versions: &[(String, u64)],
    began_ns: i64,
) -> Vec<Markup> {
    let mut steps = Vec::new();
    let bad = explained
        .and_then(|e| What::parse(&e.what))
        .unwrap_or(What::Errors)
        .bad_word();
    let service = a.service.as_deref().unwrap_or("the service");
    // The last deploy before it began, and the version it replaced.
    let before: Vec<&Deploy> = deploys.iter().filter(|d| d.time_ns <= began_ns).collect();
    let recent = before
        .last()
        .copied()
        .filter(|d| began_ns - d.time_ns <= DEPLOY_SUSPECT_NS);
    let previous_of = |d: &Deploy| {
        deploys
            .iter()
            .rev()
            .filter(|p| p.time_ns < d.time_ns && p.version != d.version)
            .map(|p| p.version.clone())
            .next()
    };
    let compare_link = |baseline: &str, candidate: &str| {
        format!(
            "/compare?{}",
            encode(&[
                ("service", service),
                ("baseline", baseline),
                ("candidate", candidate)
            ])
        )
    };
    let causes: &[Cause] = explained.map_or(&[], |e| e.causes.as_slice());
    match causes.first() {
        Some(top) if top.key == "service.version" => {
            let deploy = deploys.iter().rev().find(|d| d.version == top.value);
            // The version deployed before it, else the busiest other version seen.
            let previous = deploy.and_then(previous_of).or_else(|| {
                versions
                    .iter()
                    .filter(|(v, _)| *v != top.value)
                    .max_by_key(|(_, n)| *n)
                    .map(|(v, _)| v.clone())
            });
            let when = match deploy {
                Some(d) if d.time_ns <= began_ns => format!(
                    "This began {} after {service} {} was deployed, and ",
                    minutes(began_ns - d.time_ns),
                    d.version
                ),
                _ => String::new(),
            };
            steps.push(html! {
                (when) (pct(top.selection_share)) " of the " (bad) " requests run " strong { (top.value) }
                " (vs " (pct(top.baseline_share)) " of the others): "
                @if let Some(prev) = &previous {
                    a.compare-link href=(compare_link(prev, &top.value)) { "compare " (prev) " and " (top.value) }
                    ", or roll back to " (prev) "."
                } @else {
                    "compare it with the version before it, or roll it back."
                }
            });
        }
        Some(top) => {
            let words = if HOST_KEYS.contains(&top.key.as_str()) {
                format!(
                    "one machine is at fault: look at {}'s resources (CPU, memory, disk, neighbours), or take it out of rotation.",
                    top.value
                )
            } else if DEPENDENCY_KEYS.contains(&top.key.as_str()) {
                format!(
                    "a dependency is at fault: check the health of {} and the calls to it in the example traces.",
                    top.value
                )
            } else if top.key == "exception.type" {
                format!(
                    "the {bad} requests raise {}: the example traces show where it is raised.",
                    top.value
                )
            } else if top.key == "http.route" {
                format!(
                    "the problem is on {}: start from its example traces.",
                    top.value
                )
            } else {
                format!(
                    "the problem is confined to {}={}: check what sets it apart (its load, its data, its configuration), starting from the example traces.",
                    top.key, top.value
                )
            };
            steps.push(html! {
                (pct(top.selection_share)) " of the " (bad) " requests have " code { (top.key) "=" (top.value) }
                " (vs " (pct(top.baseline_share)) " of the others): " (words)
            });
            if let Some(d) = recent {
                steps.push(html! {
                    (service) " " (d.version) " was deployed " (minutes(began_ns - d.time_ns)) " before this began, but the "
                    (bad) " requests are not set apart by version: the release is less likely the cause."
                });
            }
        }
        None => {
            if explained.is_some() {
                steps.push(html! {
                    "Nothing sets the " (bad) " requests apart from the others: the whole of " (service)
                    " is affected. Look at what it depends on (databases, queues, providers) and at the error logs below."
                });
            }
            if let Some(d) = recent {
                let previous = previous_of(d);
                steps.push(html! {
                    (service) " " (d.version) " was deployed " (minutes(began_ns - d.time_ns)) " before this began: "
                    @if let Some(prev) = &previous {
                        a.compare-link href=(compare_link(prev, &d.version)) { "compare " (prev) " and " (d.version) }
                        " to see whether the release did it."
                    } @else { "check whether the release did it." }
                });
            }
        }
    }
    if let Some(url) = &a.runbook_url {
        steps.push(html! { "Follow the runbook: " a href=(url) { (url) } "." });
    }
    if steps.is_empty() {
        steps.push(
            html! { "Read the failing and slowest requests below, and the service's error logs." },
        );
    }
    steps
}
