//! The monitor over a real store in a temporary folder, with time moved by hand: SLO counts that
//! stay exact through a restart and a compaction, rule instances through pending, firing,
//! resolved and no data, the state and `alert_events` across a restart, baselines, SQL rules and
//! their checks at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use sightline_model::schema::{SpanRow, spans_to_batch};
use sightline_model::{HumanDuration, ManualClock, Signal, SpanKind, SpanStatus};
use sightline_monitor::config::{
    AlertConfig, Indicator, Measure, MonitorConfig, MonitorSection, NoData, SloConfig,
};
use sightline_monitor::{AlertState, Monitor};
use sightline_query::{QueryConfig, QueryEngine};
use sightline_storage::{Store, StoreOptions};

const S: i64 = 1_000_000_000;
const MIN: i64 = 60 * S;
const HOUR: i64 = 60 * MIN;
/// 2026-12-01T00:00:30Z: half a minute into a minute.
const NOW: i64 = 1_764_547_230 * S;

fn d(text: &str) -> HumanDuration {
    text.parse().expect("a duration")
}

fn request(
    n: usize,
    service: &str,
    route: &str,
    start_ns: i64,
    took_ns: i64,
    failed: bool,
) -> SpanRow {
    SpanRow {
        start_time_ns: start_ns,
        end_time_ns: start_ns + took_ns,
        trace_id: format!("{n:032x}"),
        span_id: format!("{n:016x}"),
        name: format!("GET {route}"),
        kind: SpanKind::Server,
        status: if failed {
            SpanStatus::Error
        } else {
            SpanStatus::Unset
        },
        service_name: service.into(),
        http_method: Some("GET".into()),
        http_route: Some(route.into()),
        http_status_code: Some(if failed { 500 } else { 200 }),
        attributes: "{}".into(),
        resource_attributes: "{}".into(),
        events: "[]".into(),
        links: "[]".into(),
        sample_rate: 1.0,
        message: "GET".into(),
        ..Default::default()
    }
}

struct Server {
    store: Store,
    engine: QueryEngine,
    monitor: Monitor,
}

fn open(dir: &Path, clock: &ManualClock, config: &MonitorConfig) -> Server {
    let options = StoreOptions {
        latency_thresholds_ns: config.latency_thresholds_ns(),
        ..StoreOptions::default()
    };
    let (store, _) = Store::open(dir, options, Arc::new(clock.clone())).expect("open store");
    let engine = QueryEngine::new(store.clone(), QueryConfig::default()).expect("engine");
    let monitor =
        Monitor::open(&engine, config.clone(), Arc::new(clock.clone()), dir).expect("open monitor");
    Server {
        store,
        engine,
        monitor,
    }
}

async fn append(store: &Store, rows: &[SpanRow]) {
    store
        .append(vec![(Signal::Spans, spans_to_batch(rows).expect("rows"))])
        .await
        .expect("append");
}

fn slo(
    name: &str,
    indicator: Indicator,
    threshold: Option<&str>,
    objective: f64,
    window: &str,
) -> SloConfig {
    SloConfig {
        name: name.into(),
        service: "orders".into(),
        route: Some("/orders".into()),
        method: None,
        indicator,
        threshold: threshold.map(d),
        objective,
        window: d(window),
        runbook_url: Some("https://runbooks.example/orders".into()),
        notify: None,
        min_requests: 100,
    }
}

fn rule(name: &str, measure: Measure) -> AlertConfig {
    AlertConfig {
        name: name.into(),
        service: None,
        route: None,
        method: None,
        measure,
        sql: None,
        window: d("5m"),
        above: Some(0.05),
        below: None,
        baseline: None,
        for_: d("2m"),
        keep_firing_for: d("1m"),
        min_requests: 10,
        no_data: NoData::NoData,
        runbook_url: None,
        labels: BTreeMap::from([("team".to_string(), "shop".to_string())]),
        notify: None,
    }
}

fn config(slos: Vec<SloConfig>, alerts: Vec<AlertConfig>) -> MonitorConfig {
    let config = MonitorConfig {
        monitor: MonitorSection {
            evaluation_interval: d("30s"),
            ..MonitorSection::default()
        },
        slos,
        alerts,
        notify: Vec::new(),
        checks: Vec::new(),
    };
    config.validate().expect("a valid config");
    config
}

/// 1,000 requests of orders /orders over the last 50 minutes, one every 3 s: 3 of every 100
/// failed (spread out, so every five minutes hold some), and of every 100, 30 took exactly
/// 300 ms, 30 a nanosecond less and 40 a nanosecond more.
fn hour_of_orders() -> Vec<SpanRow> {
    (0..1000)
        .map(|i| {
            let start = NOW - 50 * MIN + (i as i64) * 3 * S;
            let failed = matches!(i % 100, 10 | 50 | 90);
            let took = match i % 100 {
                0..30 => 300_000_000,
                30..60 => 299_999_999,
                _ => 300_000_001,
            };
            request(i, "orders", "/orders", start, took, failed)
        })
        .collect()
}

#[tokio::test]
async fn slo_counts_are_exact_and_the_same_after_a_compaction_and_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let config = config(
        vec![
            slo(
                "orders-availability",
                Indicator::Availability,
                None,
                99.0,
                "30d",
            ),
            slo(
                "orders-latency",
                Indicator::Latency,
                Some("300ms"),
                90.0,
                "30d",
            ),
        ],
        Vec::new(),
    );
    let server = open(dir.path(), &clock, &config);
    let rows = hour_of_orders();
    // Four appends and flushes: four small segments per hour, which compaction merges.
    for chunk in rows.chunks(250) {
        append(&server.store, chunk).await;
        server.store.flush().await.expect("flush");
    }
    server.monitor.evaluate().await.expect("evaluate");
    let before = server.monitor.slos();
    let availability = &before[0];
    assert_eq!((availability.good, availability.total), (970, 1000));
    let latency = &before[1];
    assert_eq!(
        (latency.good, latency.total, latency.estimated),
        (580, 1000, 0),
        "did not fail and took at most 300 ms, counted exactly"
    );
    // 3% failed against a 1% budget: a burn of 3 over the last hour.
    let hour = availability.burn_rates["1h"].expect("requests");
    assert!((hour - 3.0).abs() < 1e-9, "{hour}");
    let remaining = availability.budget_remaining.expect("requests");
    assert!((remaining - -2.0).abs() < 1e-9, "{remaining}");
    assert_eq!(availability.exhaustion_s, Some(0.0), "overspent");
    // 42% slow or failed against a 10% budget.
    let latency_burn = latency.burn_rates["1h"].expect("requests");
    assert!((latency_burn - 4.2).abs() < 1e-9, "{latency_burn}");

    server.store.flush().await.expect("flush");
    let report = server.store.maintain().await.expect("maintain");
    assert!(report.segments_compacted >= 2, "{report:?}");
    server.monitor.evaluate().await.expect("evaluate");
    let after_compaction = server.monitor.slos();
    server.store.close().await.expect("close");
    drop(server);

    let server = open(dir.path(), &clock, &config);
    server.monitor.evaluate().await.expect("evaluate");
    let after_restart = server.monitor.slos();
    for (a, b) in before
        .iter()
        .zip(&after_compaction)
        .chain(before.iter().zip(&after_restart))
    {
        assert_eq!(
            (a.good, a.total, a.estimated),
            (b.good, b.total, b.estimated),
            "{}",
            a.name
        );
        assert_eq!(a.burn_rates, b.burn_rates, "{}", a.name);
    }
}

#[tokio::test]
async fn a_threshold_configured_later_is_estimated_for_older_rows_and_said_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let without = config(Vec::new(), Vec::new());
    let server = open(dir.path(), &clock, &without);
    append(&server.store, &hour_of_orders()).await;
    server.store.close().await.expect("close");
    drop(server);
    let with = config(
        vec![slo(
            "orders-latency",
            Indicator::Latency,
            Some("300ms"),
            90.0,
            "30d",
        )],
        Vec::new(),
    );
    let server = open(dir.path(), &clock, &with);
    server.monitor.evaluate().await.expect("evaluate");
    let status = &server.monitor.slos()[0];
    assert_eq!(status.total, 1000);
    assert_eq!(status.estimated, 1000, "every row predates the threshold");
    // The sketch places durations within 1%: 300 ms and 300 ms + 1 ns share a bin.
    assert!((580..=970).contains(&status.good), "{}", status.good);
}

#[tokio::test]
async fn an_slo_pages_on_a_fast_burn_and_freezes_in_no_data_when_its_service_goes_quiet() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let config = config(
        vec![slo(
            "orders-availability",
            Indicator::Availability,
            None,
            99.9,
            "30d",
        )],
        Vec::new(),
    );
    let server = open(dir.path(), &clock, &config);
    // 3% failed over the last 50 minutes: 30× the budget rate over the hour and the last
    // five minutes: page.
    append(&server.store, &hour_of_orders()).await;
    server.monitor.evaluate().await.expect("evaluate");
    let firing = server.monitor.alerts(Some(AlertState::Firing));
    let page = firing
        .iter()
        .find(|a| a.labels.get("severity").map(String::as_str) == Some("page"))
        .expect("the page alert fires");
    assert_eq!(page.labels["service"], "orders");
    assert_eq!(
        page.runbook_url.as_deref(),
        Some("https://runbooks.example/orders")
    );
    assert!(
        page.summary.starts_with(
            "orders /orders: 3.0% of requests failed over the last 1h, 30× the budget rate"
        ),
        "{}",
        page.summary
    );
    assert_eq!(server.monitor.slos()[0].state, "firing");
    assert_eq!(
        server
            .monitor
            .firing_services()
            .into_iter()
            .collect::<Vec<_>>(),
        ["orders"]
    );

    // The service stops: ten minutes later the last five minutes hold no request.
    clock.advance_ns(10 * MIN);
    server.monitor.evaluate().await.expect("evaluate");
    let page_now = server.monitor.alert(&page.id).expect("still there");
    assert_eq!(page_now.alert.state, AlertState::NoData);
    assert_eq!(server.monitor.slos()[0].state, "no_data");
    clock.advance_ns(10 * MIN);
    server.monitor.evaluate().await.expect("evaluate");
    let frozen = server.monitor.alert(&page.id).expect("still there");
    assert_eq!(
        frozen.alert.state,
        AlertState::NoData,
        "neither fires nor resolves"
    );
    assert_eq!(frozen.alert.resolved_at, None);

    // Good requests again: it thaws and, the failures being an hour old, resolves.
    clock.advance_ns(60 * MIN);
    let good: Vec<SpanRow> = (0..200)
        .map(|i| {
            request(
                5000 + i,
                "orders",
                "/orders",
                clock_now(&clock) - 4 * MIN + i as i64 * S,
                5_000_000,
                false,
            )
        })
        .collect();
    append(&server.store, &good).await;
    server.monitor.evaluate().await.expect("evaluate");
    let back = server.monitor.alert(&page.id).expect("still there");
    assert_eq!(back.alert.state, AlertState::Resolved);
    let states: Vec<&str> = back.timeline.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states, ["firing", "no_data", "resolved"]);
}

fn clock_now(clock: &ManualClock) -> i64 {
    use sightline_model::Clock;
    clock.now_ns()
}

fn errors_at(service: &str, from: usize, at_ns: i64, total: usize, failed: usize) -> Vec<SpanRow> {
    (0..total)
        .map(|i| {
            request(
                from + i,
                service,
                "/pay",
                at_ns + i as i64 * 100_000_000,
                20_000_000,
                i < failed,
            )
        })
        .collect()
}

async fn sql(engine: &QueryEngine, text: &str) -> Vec<Vec<Value>> {
    engine
        .execute(text)
        .await
        .expect("query")
        .rows
        .into_iter()
        .map(|r| r.as_array().cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_rule_covers_every_service_and_goes_pending_firing_resolved_across_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let mut errors = rule("pay-errors", Measure::ErrorRate);
    errors.keep_firing_for = d("2m");
    let config = config(Vec::new(), vec![errors]);
    let server = open(dir.path(), &clock, &config);
    // payments fails 20% of its requests, billing 1%; a service with 5 requests is too quiet.
    append(
        &server.store,
        &errors_at("payments", 0, NOW - 20 * S, 100, 20),
    )
    .await;
    append(
        &server.store,
        &errors_at("billing", 1000, NOW - 20 * S, 100, 1),
    )
    .await;
    append(&server.store, &errors_at("tiny", 2000, NOW - 20 * S, 5, 5)).await;
    server.monitor.evaluate().await.expect("evaluate");
    let listed = server.monitor.alerts(None);
    assert_eq!(listed.len(), 1, "only payments breaches: {listed:?}");
    let pending = &listed[0];
    assert_eq!(pending.state, AlertState::Pending);
    assert_eq!(pending.labels["service"], "payments");
    assert_eq!(pending.labels["team"], "shop", "the rule's labels");
    assert_eq!(pending.value, Some(0.2));
    assert!(
        pending
            .summary
            .contains("error rate 20% over the last 5m, above 5.0%"),
        "{}",
        pending.summary
    );

    // A restart within `for` keeps counting from when the breach began.
    clock.advance_ns(MIN);
    server.store.close().await.expect("close");
    drop(server);
    let server = open(dir.path(), &clock, &config);
    server.monitor.evaluate().await.expect("evaluate");
    assert_eq!(
        server.monitor.alert(&pending.id).expect("kept").alert.state,
        AlertState::Pending
    );
    clock.advance_ns(MIN);
    server.monitor.evaluate().await.expect("evaluate");
    let firing = server.monitor.alert(&pending.id).expect("kept");
    assert_eq!(
        firing.alert.state,
        AlertState::Firing,
        "two minutes after the breach began"
    );

    // Still breaching two minutes on; then the errors leave the window while good requests
    // keep the service in view, and keep_firing_for (2m) holds it firing until two minutes
    // after the last breach.
    clock.advance_ns(2 * MIN);
    server.monitor.evaluate().await.expect("evaluate");
    clock.advance_ns(MIN);
    append(
        &server.store,
        &errors_at("payments", 3000, clock_now(&clock) - 10 * S, 50, 0),
    )
    .await;
    server.monitor.evaluate().await.expect("evaluate");
    assert_eq!(
        server.monitor.alert(&pending.id).expect("kept").alert.state,
        AlertState::Firing
    );
    clock.advance_ns(MIN);
    append(
        &server.store,
        &errors_at("payments", 4000, clock_now(&clock) - 10 * S, 50, 0),
    )
    .await;
    server.monitor.evaluate().await.expect("evaluate");
    assert_eq!(
        server.monitor.alert(&pending.id).expect("kept").alert.state,
        AlertState::Resolved
    );

    // Every change is a row of alert_events, kept across the restart.
    let rows = sql(
        &server.engine,
        &format!("SELECT state, name, source, json_as_text(labels, 'service') FROM alert_events WHERE alert_id = '{}' ORDER BY time", pending.id),
    )
    .await;
    let states: Vec<&str> = rows
        .iter()
        .map(|r| r[0].as_str().unwrap_or_default())
        .collect();
    assert_eq!(states, ["pending", "firing", "resolved"]);
    assert_eq!(rows[0][1], "pay-errors");
    assert_eq!(rows[0][2], "rule");
    assert_eq!(rows[0][3], "payments");
}

#[tokio::test]
async fn a_baseline_rule_compares_with_the_same_window_a_day_ago() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let mut p99 = rule("pay-slower", Measure::P99);
    p99.service = Some("payments".into());
    p99.baseline = Some(d("1d"));
    p99.above = Some(2.0);
    p99.for_ = HumanDuration::ZERO;
    let config = config(Vec::new(), vec![p99]);
    let server = open(dir.path(), &clock, &config);
    let at = |start: i64, took: i64, n: usize| -> Vec<SpanRow> {
        (0..100)
            .map(|i| request(n + i, "payments", "/pay", start + i as i64 * S, took, false))
            .collect()
    };
    append(
        &server.store,
        &at(NOW - 24 * HOUR - 3 * MIN, 100_000_000, 0),
    )
    .await;
    append(&server.store, &at(NOW - 3 * MIN, 300_000_000, 1000)).await;
    server.monitor.evaluate().await.expect("evaluate");
    let firing = server.monitor.alerts(Some(AlertState::Firing));
    assert_eq!(firing.len(), 1, "{firing:?}");
    let ratio = firing[0].value.expect("a ratio");
    assert!((ratio - 3.0).abs() < 0.1, "{ratio}");
    assert!(
        firing[0].summary.contains("the same window 1d ago"),
        "{}",
        firing[0].summary
    );
}

#[tokio::test]
async fn a_sql_rule_makes_one_instance_per_row_and_bad_queries_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let mut by_sql = rule("error-spans", Measure::Sql);
    by_sql.sql = Some(
        "SELECT service_name, count(*) AS value FROM spans WHERE status = 'error' GROUP BY 1"
            .into(),
    );
    by_sql.above = Some(3.0);
    by_sql.for_ = HumanDuration::ZERO;
    let config = config(Vec::new(), vec![by_sql.clone()]);
    let server = open(dir.path(), &clock, &config);
    sightline_monitor::eval::check_sql_rules(&server.engine, &config)
        .await
        .expect("a good rule");
    append(
        &server.store,
        &errors_at("payments", 0, NOW - 20 * S, 10, 5),
    )
    .await;
    append(
        &server.store,
        &errors_at("billing", 100, NOW - 20 * S, 10, 2),
    )
    .await;
    server.monitor.evaluate().await.expect("evaluate");
    let alerts = server.monitor.alerts(None);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].labels["service_name"], "payments");
    assert_eq!(alerts[0].value, Some(5.0));

    for (sql, expected) in [
        ("DELETE FROM spans", "read-only"),
        (
            "SELECT service_name FROM spans",
            "must return a numeric column named value",
        ),
        (
            "SELECT service_name AS value FROM spans",
            "its value is text",
        ),
        ("SELECT nope FROM spans", "alert[0].sql"),
    ] {
        let mut bad = by_sql.clone();
        bad.sql = Some(sql.into());
        let bad_config = MonitorConfig {
            alerts: vec![bad],
            ..config.clone()
        };
        let err = sightline_monitor::eval::check_sql_rules(&server.engine, &bad_config)
            .await
            .expect_err(sql);
        let text = err.to_string();
        assert!(
            text.starts_with("config key alert[0].sql") || text.contains("alert[0].sql"),
            "{text}"
        );
        assert!(text.contains(expected), "{sql}: {text}");
    }
}

#[tokio::test]
async fn a_silence_mutes_matching_alerts_and_keeps_their_state() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let mut fast = rule("pay-errors", Measure::ErrorRate);
    fast.for_ = HumanDuration::ZERO;
    let config = config(Vec::new(), vec![fast]);
    let server = open(dir.path(), &clock, &config);
    let silence = server
        .monitor
        .add_silence(
            BTreeMap::from([("service".into(), "payments".into())]),
            HOUR,
            "deploying".into(),
            Some("oncall".into()),
        )
        .await
        .expect("a silence");
    append(
        &server.store,
        &errors_at("payments", 0, NOW - 20 * S, 100, 20),
    )
    .await;
    server.monitor.evaluate().await.expect("evaluate");
    let alert = &server.monitor.alerts(Some(AlertState::Firing))[0];
    assert_eq!(alert.silenced_by.as_deref(), Some(silence.id.as_str()));
    let err = server
        .monitor
        .add_silence(BTreeMap::new(), HOUR, String::new(), None)
        .await
        .expect_err("no matchers");
    assert!(err.to_string().contains("at least one matcher"), "{err}");
    server
        .monitor
        .expire_silence(&silence.id)
        .await
        .expect("expire");
    assert_eq!(
        server.monitor.alerts(Some(AlertState::Firing))[0].silenced_by,
        None
    );
    // The silences are kept in the state file.
    drop(server);
    let server = open(dir.path(), &clock, &config);
    let listed = server.monitor.silences();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].active);
}

#[tokio::test]
async fn new_versions_seen_in_spans_are_deploys_once_and_told_ones_are_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = ManualClock::new(NOW);
    let config = config(Vec::new(), Vec::new());
    let server = open(dir.path(), &clock, &config);
    let versioned = |n: usize, at: i64, version: &str| {
        let mut row = request(n, "orders", "/orders", at, 5_000_000, false);
        row.service_version = Some(version.into());
        row
    };
    // 1.4.2 is where orders' history starts; 1.5.0 appears 20 minutes ago.
    append(
        &server.store,
        &[
            versioned(0, NOW - HOUR, "1.4.2"),
            versioned(1, NOW - 20 * MIN + 5 * S, "1.5.0"),
        ],
    )
    .await;
    server.monitor.evaluate().await.expect("evaluate");
    let deploys = server.monitor.deploys(None, None);
    assert_eq!(deploys.len(), 1, "{deploys:?}");
    assert_eq!(
        (
            deploys[0].service_name.as_str(),
            deploys[0].version.as_str()
        ),
        ("orders", "1.5.0")
    );
    assert_eq!(
        deploys[0].time_ns,
        NOW - 20 * MIN - 30 * S,
        "the first minute it was seen in"
    );
    assert_eq!(
        deploys[0].source,
        sightline_monitor::deploys::DeploySource::Observed
    );

    // A CI job tells of 1.6.0 before its spans arrive; the spans then add nothing.
    server
        .monitor
        .record_deploy(sightline_monitor::deploys::Deploy {
            time_ns: NOW,
            service_name: "orders".into(),
            version: "1.6.0".into(),
            environment: None,
            commit: Some("abc123".into()),
            description: None,
            source: sightline_monitor::deploys::DeploySource::Api,
        })
        .expect("recorded");
    clock.advance_ns(MIN);
    append(&server.store, &[versioned(2, NOW + 30 * S, "1.6.0")]).await;
    server.monitor.evaluate().await.expect("evaluate");
    assert_eq!(server.monitor.deploys(Some("orders"), None).len(), 2);

    // A restart observes nothing twice; the table answers SQL.
    server.store.close().await.expect("close");
    drop(server);
    let server = open(dir.path(), &clock, &config);
    server.monitor.evaluate().await.expect("evaluate");
    let rows = sql(
        &server.engine,
        "SELECT version, source, commit FROM deploys ORDER BY time",
    )
    .await;
    assert_eq!(
        rows,
        vec![
            vec![Value::from("1.5.0"), Value::from("observed"), Value::Null],
            vec![
                Value::from("1.6.0"),
                Value::from("api"),
                Value::from("abc123")
            ],
        ]
    );
    let err = server
        .monitor
        .record_deploy(sightline_monitor::deploys::Deploy {
            time_ns: NOW,
            service_name: " ".into(),
            version: "1".into(),
            environment: None,
            commit: None,
            description: None,
            source: sightline_monitor::deploys::DeploySource::Api,
        })
        .expect_err("no service");
    assert!(
        err.to_string().contains("needs a service and a version"),
        "{err}"
    );
}
