//! The monitor's pages: `/slos` (each SLO's budget left and its burn-down over the window),
//! `/slos/{name}` and `/alerts` (firing, pending, no data, silenced, recently resolved, and the
//! silences), and the silence form's actions; the incident page is [`super::incident`].

use axum::extract::{Form, Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use sightline_model::{ErrorCode, parse_duration_ns};
use sightline_monitor::alert::Labels;
use sightline_monitor::eval::SloStatus;
use sightline_monitor::measure;
use sightline_monitor::monitor::AlertView;
use sightline_monitor::{AlertState, Monitor};

use super::layout::{self, Line, Section};
use super::{UiError, UiState};

const NS_PER_HOUR: i64 = 3_600_000_000_000;
/// Points on an SLO's charts.
const SLO_BUCKETS: usize = 60;

impl From<sightline_monitor::Error> for UiError {
    fn from(e: sightline_monitor::Error) -> Self {
        Self::new(e.code(), e.to_string())
    }
}

pub(super) fn monitor(state: &UiState) -> &Monitor {
    &state.api.monitor
}

pub(super) fn shell(title: &str, section: Section, body: Markup, state: &UiState) -> Html<String> {
    Html(layout::page(title, section, None, body, state.auth.enabled()).into_string())
}

fn share(value: Option<f64>, digits: usize) -> String {
    value.map_or("–".into(), |v| format!("{:.digits$}%", v * 100.0))
}

fn burn(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| {
        if v < 10.0 {
            format!("{v:.1}×")
        } else {
            format!("{v:.0}×")
        }
    })
}

fn span_words(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s >= 86_400.0 {
        format!("{:.1} days", s / 86_400.0)
    } else if s >= 3600.0 {
        format!("{:.1} hours", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.0} minutes", s / 60.0)
    } else {
        format!("{s:.0} seconds")
    }
}

pub(super) fn state_badge(state: &str) -> Markup {
    let class = match state {
        "firing" => "badge error",
        "pending" => "badge warn",
        "no_data" => "badge muted",
        _ => "badge",
    };
    html! { span class=(class) data-state=(state) { (state.replace('_', " ")) } }
}

fn selection(slo: &SloStatus) -> String {
    sightline_monitor::eval::selection(&slo.service, slo.route.as_deref(), slo.method.as_deref())
}

/// The burn-down of an SLO's budget over its window: what is left after each bucket, as a
/// share of the whole window's budget; and the burn rate of each bucket.
struct BurnDown {
    x_s: Vec<f64>,
    remaining: Vec<Option<f64>>,
    burn: Vec<Option<f64>>,
}

async fn burn_down(state: &UiState, slo: &SloStatus, now_ns: i64) -> Result<BurnDown, UiError> {
    let config = monitor(state).config();
    let window_ns = config
        .slos
        .iter()
        .find(|s| s.name == slo.name)
        .map_or(30 * 24 * NS_PER_HOUR, |s| s.window.as_nanos());
    let threshold_ns = slo.threshold_ms.map(|ms| (ms * 1e6).round() as i64);
    let series = measure::series(
        &state.api.engine,
        now_ns - window_ns,
        now_ns,
        SLO_BUCKETS,
        &slo.service,
        slo.route.as_deref(),
        slo.method.as_deref(),
        threshold_ns,
    )
    .await?;
    let budget = 1.0 - slo.objective / 100.0;
    let total: i64 = series.total.iter().sum();
    let mut bad_so_far = 0i64;
    let mut out = BurnDown {
        x_s: series.starts_ns.iter().map(|t| *t as f64 / 1e9).collect(),
        remaining: Vec::new(),
        burn: Vec::new(),
    };
    for (i, t) in series.total.iter().enumerate() {
        let bad = (t - series.good[i]).max(0);
        bad_so_far += bad;
        out.remaining.push(
            (total > 0 && budget > 0.0).then(|| 1.0 - bad_so_far as f64 / (budget * total as f64)),
        );
        out.burn
            .push((*t > 0 && budget > 0.0).then(|| bad as f64 / *t as f64 / budget));
    }
    Ok(out)
}

/// `/slos`.
pub async fn slos_page(State(state): State<UiState>) -> Result<Html<String>, UiError> {
    let slos = monitor(&state).slos();
    let now_ns = state.now_ns();
    let mut charts = Vec::new();
    for slo in &slos {
        charts.push(burn_down(&state, slo, now_ns).await?);
    }
    let body = html! {
        h1 { "Service-level objectives" }
        p.lede { "Each SLO's error budget over its rolling window: what is left, and how fast it burns. Counts come from span_rollups, exactly." }
        @if slos.is_empty() {
            (layout::empty("No SLOs are configured. Add an [[slo]] table to sightline.toml (the README shows one) and restart."))
        } @else {
            table #slos {
                thead { tr {
                    th scope="col" { "SLO" }
                    th scope="col" { "Selection" }
                    th.num scope="col" { "Objective" }
                    th.num scope="col" { "SLI" }
                    th.num scope="col" { "Budget left" }
                    th.num scope="col" { "Burn 1h" }
                    th.num scope="col" { "Burn 6h" }
                    th scope="col" { "Budget over the window" }
                    th scope="col" { "State" }
                } }
                tbody {
                    @for (slo, chart) in slos.iter().zip(&charts) {
                        tr data-slo=(slo.name) data-service=(slo.service) {
                            th scope="row" { a href=(format!("/slos/{}", super::window::percent(&slo.name))) { (slo.name) } }
                            td { (selection(slo)) @if let Some(ms) = slo.threshold_ms { " · ≤ " (ms) " ms" } }
                            td.num { (slo.objective) "% / " (slo.window) }
                            td.num { (share(slo.sli, 3)) }
                            td.num.bad[slo.budget_remaining.is_some_and(|r| r < 0.25)] data-budget { (share(slo.budget_remaining, 1)) }
                            td.num { (burn(slo.burn_rates.get("1h"))) }
                            td.num { (burn(slo.burn_rates.get("6h"))) }
                            td.trend {
                                (layout::chart("", &format!("{} budget left over its window", slo.name), &chart.x_s, &[
                                    Line { label: "budget left", values: chart.remaining.iter().map(|v| v.map(|r| r * 100.0)).collect(), color: Some(layout::BLUE) },
                                ], "%", true))
                            }
                            td { (state_badge(&slo.state)) }
                        }
                    }
                }
            }
        }
    };
    Ok(shell("SLOs", Section::Slos, body, &state))
}

/// `/slos/{name}`.
pub async fn slo_page(
    State(state): State<UiState>,
    Path(name): Path<String>,
) -> Result<Html<String>, UiError> {
    let m = monitor(&state);
    let Some(slo) = m.slo(&name) else {
        return Err(UiError::new(
            ErrorCode::NotFound,
            format!("no SLO named {name:?} (the SLOs page lists them)"),
        ));
    };
    let now_ns = state.now_ns();
    let chart = burn_down(&state, &slo, now_ns).await?;
    let alerts: Vec<AlertView> = m
        .alerts(None)
        .into_iter()
        .filter(|a| a.source == sightline_monitor::alert::Source::Slo && a.name == slo.name)
        .collect();
    let body = html! {
        h1 { (slo.name) " " (state_badge(&slo.state)) }
        p.lede {
            (slo.objective) "% of " (selection(&slo)) " requests "
            @if let Some(ms) = slo.threshold_ms { "succeed within " (ms) " ms" } @else { "succeed" }
            " over a rolling " (slo.window) "."
        }
        dl.facts {
            dt { "SLI" } dd #sli { (share(slo.sli, 3)) }
            dt { "Good / total" } dd { (slo.good) " / " (slo.total) }
            dt { "Budget left" } dd #budget { (share(slo.budget_remaining, 1)) }
            dt { "Budget gone in" } dd {
                @if slo.budget_remaining.is_some_and(|r| r <= 0.0) { "already spent" }
                @else if let Some(s) = slo.exhaustion_s { (span_words(s)) " at the last hour's burn" }
                @else { "not burning" }
            }
            @if slo.estimated > 0 {
                dt { "Estimated" } dd { (slo.estimated) " requests were stored before the threshold was configured; their latency is estimated from the sketch" }
            }
            @if let Some(url) = &slo.runbook_url { dt { "Runbook" } dd { a href=(url) { (url) } } }
        }
        h2 { "Burn rates" }
        table #burn-rates {
            thead { tr { @for (w, _) in slo.burn_rates.iter() { th.num scope="col" { (w) } } } }
            tbody { tr { @for (_, b) in slo.burn_rates.iter() { td.num { (burn(*b)) } } } }
        }
        p.muted { "A burn rate of 1 spends exactly the budget over the window. Pages fire at 14.4× over an hour (and 5 minutes) or 6× over six hours (and 30 minutes); a ticket at 1× over three days (and six hours), scaled to this window." }
        div data-service=(slo.service) {
        h2 { "Budget left over the window" }
        (layout::chart("budget-chart", "Error budget left (%)", &chart.x_s, &[
            Line { label: "budget left %", values: chart.remaining.iter().map(|v| v.map(|r| r * 100.0)).collect(), color: Some(layout::BLUE) },
        ], "%", false))
        h2 { "Burn rate per bucket" }
        (layout::chart("burn-chart", "Burn rate", &chart.x_s, &[
            Line { label: "burn rate", values: chart.burn.clone(), color: Some(layout::RED) },
        ], "×", false))
        }
        h2 { "Alerts" }
        (alert_table("slo-alerts", &alerts, "This SLO has no alert pending, firing or resolved today."))
    };
    Ok(shell(&slo.name, Section::Slos, body, &state))
}

fn alert_table(id: &str, alerts: &[AlertView], empty: &str) -> Markup {
    if alerts.is_empty() {
        return html! { (layout::empty(empty)) };
    }
    html! {
        table.alerts id=(id) {
            thead { tr {
                th scope="col" { "State" }
                th scope="col" { "Alert" }
                th scope="col" { "Labels" }
                th scope="col" { "Summary" }
                th scope="col" { "Since (UTC)" }
            } }
            tbody {
                @for a in alerts {
                    tr data-alert=(a.id) data-state=(a.state.as_str()) {
                        td {
                            (state_badge(a.state.as_str()))
                            @if a.silenced_by.is_some() { " " span.badge.muted { "silenced" } }
                            @if a.delivery_error.is_some() { " " span.badge.error title="a notification could not be delivered" { "undelivered" } }
                        }
                        th scope="row" { a href=(format!("/alerts/{}", a.id)) { (a.name) } }
                        td.labels { (labels_text(&a.labels)) }
                        td { (a.summary) }
                        td.time { (since(a)) }
                    }
                }
            }
        }
    }
}

/// When an alert entered its state, to the second, as the pages write times.
pub(super) fn since(a: &AlertView) -> String {
    layout::parse_rfc3339(&a.since).map_or_else(
        || a.since.clone(),
        |ns| layout::time(ns).get(..19).unwrap_or_default().to_string(),
    )
}

/// Every label as `name=value`, space-separated (a silence's matchers).
pub(super) fn all_labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The labels but `alertname` (shown beside it), as `name=value`.
pub(super) fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `/alerts`.
pub async fn alerts_page(State(state): State<UiState>) -> Result<Html<String>, UiError> {
    let m = monitor(&state);
    let all = m.alerts(None);
    let pick = |s: AlertState| -> Vec<AlertView> {
        all.iter()
            .filter(|a| a.state == s && a.silenced_by.is_none())
            .cloned()
            .collect()
    };
    let silenced: Vec<AlertView> = all
        .iter()
        .filter(|a| a.silenced_by.is_some() && a.state != AlertState::Resolved)
        .cloned()
        .collect();
    let resolved: Vec<AlertView> = all
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .cloned()
        .collect();
    let silences = m.silences();
    let body = html! {
        h1 { "Alerts" }
        @if let Some(error) = m.last_error() {
            p.error role="alert" { "The last evaluation failed: " (error) }
        }
        p.lede {
            @if m.config().is_empty() {
                "Nothing is watched yet: add [[slo]] or [[alert]] tables to sightline.toml (see the README)."
            } @else {
                (m.config().slos.len()) " SLOs and " (m.config().alerts.len()) " rules, evaluated every " (m.config().monitor.evaluation_interval) "."
            }
        }
        h2 { "Firing" }
        (alert_table("firing", &pick(AlertState::Firing), "Nothing is firing."))
        h2 { "Pending" }
        (alert_table("pending", &pick(AlertState::Pending), "Nothing is pending."))
        h2 { "No data" }
        (alert_table("no-data", &pick(AlertState::NoData), "Every watched service is sending."))
        h2 { "Silenced" }
        (alert_table("silenced", &silenced, "No alert is silenced."))
        h2 { "Resolved in the last day" }
        (alert_table("resolved", &resolved, "Nothing resolved in the last day."))
        h2 { "Silences" }
        @if silences.is_empty() {
            p.empty { "No silences. Silence an alert from its page, or with " code { "sightline silence --match service=orders --for 2h" } "." }
        } @else {
            table #silences {
                thead { tr {
                    th scope="col" { "Matchers" }
                    th scope="col" { "Until (UTC)" }
                    th scope="col" { "Comment" }
                    th scope="col" { "By" }
                    th scope="col" {}
                } }
                tbody {
                    @for s in &silences {
                        tr data-silence=(s.silence.id) {
                            td.labels { (all_labels_text(&s.silence.matchers)) }
                            td.time { (layout::time(s.silence.ends_at_ns)) @if !s.active { " (ended)" } }
                            td { (s.silence.comment) }
                            td { (s.silence.created_by.clone().unwrap_or_default()) }
                            td {
                                @if s.active {
                                    form method="post" action=(format!("/silences/{}/expire", s.silence.id)) {
                                        button type="submit" { "End now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(shell("Alerts", Section::Alerts, body, &state))
}

/// `/alerts/{id}`: the incident page.
/// The silence form's fields.
#[derive(serde::Deserialize)]
pub struct SilenceForm {
    alert: Option<String>,
    matchers: String,
    duration: String,
    #[serde(default)]
    comment: String,
}

/// `POST /silences`: the incident page's form.
pub async fn add_silence(
    State(state): State<UiState>,
    identity: Option<axum::Extension<crate::auth::Identity>>,
    Form(form): Form<SilenceForm>,
) -> Result<Response, UiError> {
    let mut matchers = Labels::new();
    for pair in form.matchers.split_whitespace() {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(UiError::bad_request(format!(
                "matcher {pair:?} is not name=value (e.g. service=orders)"
            )));
        };
        matchers.insert(k.to_string(), v.to_string());
    }
    let duration_ns = parse_duration_ns(form.duration.trim())
        .map_err(|e| UiError::bad_request(format!("duration: {e}")))?;
    monitor(&state)
        .add_silence(
            matchers,
            duration_ns,
            form.comment,
            identity.map(|axum::Extension(i)| i.name),
        )
        .await?;
    let back = form
        .alert
        .filter(|a| a.chars().all(|c| c.is_ascii_hexdigit()))
        .map_or("/alerts".to_string(), |a| format!("/alerts/{a}"));
    Ok(Redirect::to(&back).into_response())
}

/// `POST /silences/{id}/expire`: the alerts page's "End now".
pub async fn expire_silence(
    State(state): State<UiState>,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    monitor(&state).expire_silence(&id).await?;
    Ok(Redirect::to("/alerts").into_response())
}
