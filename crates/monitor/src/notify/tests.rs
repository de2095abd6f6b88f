//! The notifier against a real HTTP receiver (axum on 127.0.0.1:0 that records what it
//! accepts and can be told to refuse), driven by a clock moved by hand: every test ticks at
//! chosen instants and waits for the posts with `settle`, never on the real clock.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use sightline_model::HumanDuration;

use super::*;
use crate::alert::{Labels, fingerprint};
use crate::config::NotifyKind;

const S: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * S;
const T0: i64 = 1_700_000_000 * S;
/// The first look of a group made at T0 (default group_wait).
const FIRST: i64 = T0 + 30 * S;
/// The default group_interval.
const INTERVAL: i64 = 5 * MINUTE;

#[derive(Default)]
struct Received {
    /// Bodies answered 200.
    accepted: Vec<Value>,
    /// The headers of every post.
    headers: Vec<HeaderMap>,
    /// Every post, answered 200 or not.
    posts: usize,
    /// How many posts to refuse before accepting again, and with what.
    refuse_next: usize,
    refuse_with: u16,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    fn with<T>(&self, f: impl FnOnce(&mut Received) -> T) -> T {
        f(&mut self
            .0
            .lock()
            .expect("the receiver's lock is never poisoned"))
    }
    fn accepted(&self) -> Vec<Value> {
        self.with(|r| r.accepted.clone())
    }
    fn posts(&self) -> usize {
        self.with(|r| r.posts)
    }
    fn refuse(&self, times: usize, status: u16) {
        self.with(|r| {
            r.refuse_next = times;
            r.refuse_with = status;
        });
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    receiver.with(|r| {
        r.posts += 1;
        r.headers.push(headers);
        if r.refuse_next > 0 {
            r.refuse_next -= 1;
            return StatusCode::from_u16(r.refuse_with).expect("a status");
        }
        r.accepted
            .push(serde_json::from_str(&body).expect("the notifier posts JSON"));
        StatusCode::OK
    })
}

/// A receiver on a port of its own; the URL to post to.
async fn start_receiver() -> (String, Receiver) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}/hook"), receiver)
}

fn target(name: &str, url: &str) -> NotifyConfig {
    NotifyConfig {
        name: name.into(),
        kind: NotifyKind::Webhook,
        url: url.into(),
        headers: BTreeMap::new(),
        group_by: vec!["alertname".into(), "service".into()],
        group_wait: HumanDuration::from_secs(30),
        group_interval: HumanDuration::from_secs(300),
        repeat_interval: HumanDuration::from_secs(4 * 3600),
        send_resolved: true,
    }
}

fn notifier(targets: &[NotifyConfig]) -> Notifier {
    Notifier::new(targets, "http://sightline", NotifierState::default()).expect("a notifier")
}

fn alert(instance: &str, starts_at_ns: i64) -> Alert {
    let labels: Labels = [
        ("alertname", "orders-errors"),
        ("service", "orders"),
        ("instance", instance),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Alert {
        id: fingerprint(&labels),
        labels,
        annotations: [("summary".to_string(), format!("errors on {instance}"))].into(),
        state: AlertState::Firing,
        starts_at_ns,
        ends_at_ns: None,
        generator_url: format!("http://sightline/alerts/{instance}"),
        notify: vec!["oncall".into()],
    }
}

fn resolved(mut alert: Alert, ends_at_ns: i64) -> Alert {
    alert.state = AlertState::Resolved;
    alert.ends_at_ns = Some(ends_at_ns);
    alert
}

/// One evaluation cycle at `now_ns`, then every post it started is answered.
async fn cycle(notifier: &mut Notifier, now_ns: i64, alerts: &[Alert], silences: &Silences) {
    notifier.tick(now_ns, alerts, silences);
    notifier.settle().await;
}

/// The instances in a webhook body, with their status.
fn told(body: &Value) -> Vec<(String, String)> {
    body["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| {
            (
                a["labels"]["instance"].as_str().expect("instance").into(),
                a["status"].as_str().expect("status").into(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

fn stats(notifier: &Notifier) -> TargetStats {
    notifier.stats().targets[0].clone()
}

#[test]
fn alert_fingerprints_match_prometheus_test_vectors() {
    // prometheus/common model/signature_test.go: labelSetToFingerprint, which Alertmanager's
    // alert fingerprint is.
    let labels = |pairs: &[(&str, &str)]| -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (set, expected) in [
        (labels(&[]), 14_695_981_039_346_656_037_u64),
        (
            labels(&[("name", "garland, briggs"), ("fear", "love is not enough")]),
            5_799_056_148_416_392_346,
        ),
        (
            labels(&[("first-label", "first-label-value")]),
            5_146_282_821_936_882_169,
        ),
        (
            labels(&[
                ("first-label", "first-label-value"),
                ("second-label", "second-label-value"),
            ]),
            3_195_800_080_984_914_717,
        ),
    ] {
        assert_eq!(fingerprint(&set), format!("{expected:016x}"), "{set:?}");
    }
}

#[tokio::test]
async fn a_new_group_waits_group_wait_then_sends_its_alerts_once() {
    let (url, receiver) = start_receiver().await;
    let mut notifier = notifier(&[target("oncall", &url)]);
    let none = Silences::new();
    let alerts = [alert("a", T0), alert("b", T0)];
    cycle(&mut notifier, T0, &alerts, &none).await;
    cycle(&mut notifier, FIRST - 1, &alerts, &none).await;
    assert_eq!(receiver.posts(), 0, "nothing before group_wait");
    cycle(&mut notifier, FIRST, &alerts, &none).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(
        told(&accepted[0]),
        pairs(&[("a", "firing"), ("b", "firing")])
    );
    // Nothing changed: the following cycles and the next look send nothing.
    for now in [FIRST + 30 * S, FIRST + INTERVAL, FIRST + 2 * INTERVAL] {
        cycle(&mut notifier, now, &alerts, &none).await;
    }
    assert_eq!(receiver.posts(), 1);
    let stats = stats(&notifier);
    assert_eq!((stats.sent, stats.failed_attempts, stats.groups), (1, 0, 1));
}

#[tokio::test]
async fn an_alert_joining_a_group_is_told_at_the_next_group_interval_not_before() {
    let (url, receiver) = start_receiver().await;
    let mut notifier = notifier(&[target("oncall", &url)]);
    let none = Silences::new();
    cycle(&mut notifier, T0, &[alert("a", T0)], &none).await;
    cycle(&mut notifier, FIRST, &[alert("a", T0)], &none).await;
    assert_eq!(receiver.posts(), 1);
    let both = [alert("a", T0), alert("c", FIRST + 30 * S)];
    let mut now = FIRST + 30 * S;
    while now < FIRST + INTERVAL {
        cycle(&mut notifier, now, &both, &none).await;
        now += 30 * S;
    }
    assert_eq!(receiver.posts(), 1, "not before the group's next look");
    cycle(&mut notifier, FIRST + INTERVAL, &both, &none).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        told(&accepted[1]),
        pairs(&[("a", "firing"), ("c", "firing")])
    );
}

#[tokio::test]
async fn a_group_still_firing_is_told_again_after_repeat_interval() {
    let (url, receiver) = start_receiver().await;
    let mut config = target("oncall", &url);
    config.repeat_interval = HumanDuration::from_secs(3600);
    let mut notifier = notifier(&[config]);
    let none = Silences::new();
    let alerts = [alert("a", T0)];
    cycle(&mut notifier, T0, &alerts, &none).await;
    let mut now = FIRST;
    while now < FIRST + 60 * MINUTE {
        cycle(&mut notifier, now, &alerts, &none).await;
        now += INTERVAL;
    }
    assert_eq!(receiver.posts(), 1, "an hour has not yet passed");
    cycle(&mut notifier, FIRST + 60 * MINUTE, &alerts, &none).await;
    assert_eq!(receiver.posts(), 2, "repeated once the hour has passed");
    cycle(&mut notifier, FIRST + 65 * MINUTE, &alerts, &none).await;
    assert_eq!(receiver.posts(), 2);
}

async fn resolve_both(send_resolved: bool) -> (Receiver, Notifier) {
    let (url, receiver) = start_receiver().await;
    let mut config = target("oncall", &url);
    config.send_resolved = send_resolved;
    let mut notifier = notifier(&[config]);
    let none = Silences::new();
    let (a, b) = (alert("a", T0), alert("b", T0));
    cycle(&mut notifier, T0, &[a.clone(), b.clone()], &none).await;
    cycle(&mut notifier, FIRST, &[a.clone(), b.clone()], &none).await;
    let a_resolved = resolved(a, FIRST + 10 * S);
    cycle(
        &mut notifier,
        FIRST + 10 * S,
        &[a_resolved.clone(), b.clone()],
        &none,
    )
    .await;
    cycle(
        &mut notifier,
        FIRST + INTERVAL,
        &[a_resolved.clone(), b.clone()],
        &none,
    )
    .await;
    let b_resolved = resolved(b, FIRST + INTERVAL + 10 * S);
    let all = [a_resolved, b_resolved];
    cycle(&mut notifier, FIRST + INTERVAL + 10 * S, &all, &none).await;
    cycle(&mut notifier, FIRST + 2 * INTERVAL, &all, &none).await;
    cycle(&mut notifier, FIRST + 3 * INTERVAL, &all, &none).await;
    (receiver, notifier)
}

#[tokio::test]
async fn resolved_alerts_are_told_with_send_resolved() {
    let (receiver, notifier) = resolve_both(true).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 3);
    assert_eq!(accepted[1]["status"], "firing", "b still fires");
    assert_eq!(
        told(&accepted[1]),
        pairs(&[("a", "resolved"), ("b", "firing")])
    );
    assert_eq!(accepted[1]["alerts"][0]["endsAt"], "2023-11-14T22:14:00Z");
    assert_eq!(accepted[2]["status"], "resolved");
    assert_eq!(
        told(&accepted[2]),
        pairs(&[("b", "resolved")]),
        "a was told already"
    );
    assert!(
        notifier.state().groups.is_empty(),
        "a group with nothing left goes"
    );
}

#[tokio::test]
async fn resolved_alerts_are_not_told_without_send_resolved() {
    let (receiver, notifier) = resolve_both(false).await;
    assert_eq!(receiver.posts(), 1, "only the first firing notification");
    assert!(notifier.state().groups.is_empty());
}

#[tokio::test]
async fn a_missing_alert_resolves_and_one_without_data_stays_as_it_was() {
    let (url, receiver) = start_receiver().await;
    let mut notifier = notifier(&[target("oncall", &url)]);
    let none = Silences::new();
    cycle(&mut notifier, T0, &[alert("a", T0)], &none).await;
    cycle(&mut notifier, FIRST, &[alert("a", T0)], &none).await;
    let mut no_data = alert("a", T0);
    no_data.state = AlertState::NoData;
    cycle(&mut notifier, FIRST + INTERVAL, &[no_data], &none).await;
    assert_eq!(receiver.posts(), 1, "no data neither fires nor resolves");
    cycle(&mut notifier, FIRST + INTERVAL + S, &[], &none).await;
    cycle(&mut notifier, FIRST + 2 * INTERVAL, &[], &none).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(told(&accepted[1]), pairs(&[("a", "resolved")]));
}

#[tokio::test]
async fn a_silenced_alert_is_not_told_and_is_told_after_its_silence_ends() {
    let (url, receiver) = start_receiver().await;
    let mut notifier = notifier(&[target("oncall", &url)]);
    let mut silences = Silences::new();
    let (a, b) = (alert("a", T0), alert("b", T0));
    silences
        .add(b.labels.clone(), 2 * MINUTE, "deploying b", T0)
        .expect("a valid silence");
    let alerts = [a, b];
    cycle(&mut notifier, T0, &alerts, &silences).await;
    cycle(&mut notifier, FIRST, &alerts, &silences).await;
    let accepted = receiver.accepted();
    assert_eq!(told(&accepted[0]), pairs(&[("a", "firing")]));
    // The silence ends at T0 + 2m; b is new to the receiver at the next look.
    cycle(&mut notifier, T0 + 2 * MINUTE, &alerts, &silences).await;
    cycle(&mut notifier, FIRST + INTERVAL - S, &alerts, &silences).await;
    assert_eq!(receiver.posts(), 1);
    cycle(&mut notifier, FIRST + INTERVAL, &alerts, &silences).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2);
    assert_eq!(
        told(&accepted[1]),
        pairs(&[("a", "firing"), ("b", "firing")])
    );
}

#[tokio::test]
async fn a_500_is_retried_with_backoff_and_delivered_exactly_once() {
    let (url, receiver) = start_receiver().await;
    let mut notifier = notifier(&[target("oncall", &url)]);
    let none = Silences::new();
    let alerts = [alert("a", T0)];
    receiver.refuse(1, 500);
    cycle(&mut notifier, T0, &alerts, &none).await;
    cycle(&mut notifier, FIRST, &alerts, &none).await;
    assert_eq!((receiver.posts(), receiver.accepted().len()), (1, 0));
    let error = notifier
        .last_error(&alerts[0].id)
        .expect("the failure is kept");
    assert_eq!((error.target.as_str(), error.time_ns), ("oncall", FIRST));
    assert!(error.message.contains("500"), "{}", error.message);
    assert!(error.message.contains("retrying"), "{}", error.message);
    assert_eq!(stats(&notifier).pending, 1);
    // The first retry is due a second later, not before.
    cycle(&mut notifier, FIRST + S / 2, &alerts, &none).await;
    assert_eq!(receiver.posts(), 1);
    cycle(&mut notifier, FIRST + S, &alerts, &none).await;
    assert_eq!((receiver.posts(), receiver.accepted().len()), (2, 1));
    assert_eq!(
        notifier.last_error(&alerts[0].id),
        None,
        "cleared by the delivery"
    );
    for now in [FIRST + 30 * S, FIRST + INTERVAL, FIRST + 2 * INTERVAL] {
        cycle(&mut notifier, now, &alerts, &none).await;
    }
    assert_eq!(receiver.accepted().len(), 1, "delivered exactly once");
    let stats = stats(&notifier);
    assert_eq!(
        (
            stats.sent,
            stats.failed_attempts,
            stats.retried,
            stats.dropped_permanent,
            stats.pending
        ),
        (1, 1, 1, 0, 0)
    );
}

#[tokio::test]
async fn a_receiver_that_cannot_be_reached_is_retried() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("bound");
    drop(listener);
    let mut notifier = notifier(&[target("oncall", &format!("http://{address}/hook"))]);
    let none = Silences::new();
    let alerts = [alert("a", T0)];
    cycle(&mut notifier, T0, &alerts, &none).await;
    cycle(&mut notifier, FIRST, &alerts, &none).await;
    cycle(&mut notifier, FIRST + S, &alerts, &none).await;
    let stats = stats(&notifier);
    assert_eq!(
        (stats.failed_attempts, stats.retried, stats.pending),
        (2, 1, 1)
    );
    let error = notifier.last_error(&alerts[0].id).expect("kept");
    assert!(
        error.message.contains("could not reach"),
        "{}",
        error.message
    );
    assert!(
        !error.message.contains(&address.to_string()),
        "no URL in messages"
    );
    // The backoff doubles: the third attempt is due 2 s after the second.
    cycle(&mut notifier, FIRST + 2 * S, &alerts, &none).await;
    assert_eq!(notifier.stats().targets[0].failed_attempts, 2);
    cycle(&mut notifier, FIRST + 3 * S, &alerts, &none).await;
    assert_eq!(notifier.stats().targets[0].failed_attempts, 3);
}

#[tokio::test]
async fn a_400_is_not_retried_and_is_counted() {
    let (url, receiver) = start_receiver().await;
    let mut notifier = notifier(&[target("oncall", &url)]);
    let none = Silences::new();
    let alerts = [alert("a", T0)];
    receiver.refuse(usize::MAX, 400);
    cycle(&mut notifier, T0, &alerts, &none).await;
    cycle(&mut notifier, FIRST, &alerts, &none).await;
    for now in [FIRST + S, FIRST + 2 * S, FIRST + 4 * S, FIRST + MINUTE] {
        cycle(&mut notifier, now, &alerts, &none).await;
    }
    assert_eq!(receiver.posts(), 1, "not retried");
    let stats_now = stats(&notifier);
    assert_eq!(
        (
            stats_now.failed_attempts,
            stats_now.retried,
            stats_now.dropped_permanent,
            stats_now.pending
        ),
        (1, 0, 1, 0)
    );
    let error = notifier.last_error(&alerts[0].id).expect("kept");
    assert!(
        error.message.contains("400") && error.message.contains("not retried"),
        "{}",
        error.message
    );
    // The next look decides afresh, as Alertmanager's next flush does; a mended receiver
    // takes it then.
    receiver.refuse(0, 400);
    cycle(&mut notifier, FIRST + INTERVAL, &alerts, &none).await;
    assert_eq!((receiver.posts(), receiver.accepted().len()), (2, 1));
    assert_eq!(notifier.last_error(&alerts[0].id), None);
}

#[tokio::test]
async fn after_a_restart_from_saved_state_nothing_is_sent_twice_and_a_pending_one_is_delivered() {
    let (url, receiver) = start_receiver().await;
    let targets = [target("oncall", &url)];
    let none = Silences::new();
    let mut first = notifier(&targets);
    cycle(&mut first, T0, &[alert("a", T0)], &none).await;
    cycle(&mut first, FIRST, &[alert("a", T0)], &none).await;
    assert_eq!(receiver.accepted().len(), 1);
    // b joins; its notification fails and waits for a retry when the server stops.
    let both = [alert("a", T0), alert("b", FIRST + S)];
    cycle(&mut first, FIRST + S, &both, &none).await;
    receiver.refuse(1, 503);
    cycle(&mut first, FIRST + INTERVAL, &both, &none).await;
    assert_eq!((receiver.posts(), receiver.accepted().len()), (2, 1));
    let saved = serde_json::to_string(&first.state()).expect("the state serializes");
    drop(first);
    assert!(saved.contains("next_attempt_ns"), "{saved}");

    let state: NotifierState = serde_json::from_str(&saved).expect("the state reads back");
    assert_eq!(state, serde_json::from_str(&saved).expect("again"));
    let mut second = Notifier::new(&targets, "http://sightline", state).expect("a notifier");
    assert_eq!(
        second.last_error(&both[1].id).map(|e| e.time_ns),
        Some(FIRST + INTERVAL),
        "the last error survives the restart"
    );
    cycle(&mut second, FIRST + INTERVAL + S, &both, &none).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2, "the pending notification is delivered");
    assert_eq!(
        told(&accepted[1]),
        pairs(&[("a", "firing"), ("b", "firing")])
    );
    let saved = serde_json::to_string(&second.state()).expect("serializes");
    drop(second);
    let mut third = Notifier::new(
        &targets,
        "http://sightline",
        serde_json::from_str(&saved).expect("reads back"),
    )
    .expect("a notifier");
    for now in [
        FIRST + INTERVAL + 2 * S,
        FIRST + 2 * INTERVAL,
        FIRST + 3 * INTERVAL,
    ] {
        cycle(&mut third, now, &both, &none).await;
    }
    assert_eq!(
        receiver.posts(),
        3,
        "nothing already delivered is sent again"
    );
}

#[tokio::test]
async fn groups_of_targets_no_longer_configured_are_dropped_on_load() {
    let (url, receiver) = start_receiver().await;
    let none = Silences::new();
    let mut both = notifier(&[target("oncall", &url), target("chat", &url)]);
    let mut a = alert("a", T0);
    a.notify = vec!["oncall".into(), "chat".into(), "oncall".into()];
    cycle(&mut both, T0, &[a.clone()], &none).await;
    let state = both.state();
    assert_eq!(state.groups.len(), 2);
    let only =
        Notifier::new(&[target("oncall", &url)], "http://sightline", state).expect("a notifier");
    let kept_state = only.state();
    let kept: Vec<&str> = kept_state
        .groups
        .iter()
        .map(|g| g.target.as_str())
        .collect();
    assert_eq!(kept, ["oncall"]);
    // A target that now groups by other labels starts its groups anew.
    let mut by_instance = target("oncall", &url);
    by_instance.group_by = vec!["instance".into()];
    let regrouped =
        Notifier::new(&[by_instance], "http://sightline", only.state()).expect("a notifier");
    assert!(regrouped.state().groups.is_empty());
    assert_eq!(receiver.posts(), 0);
}

#[tokio::test]
async fn the_webhook_post_carries_the_headers_and_alertmanagers_group_key() {
    let (url, receiver) = start_receiver().await;
    let mut config = target("oncall", &url);
    config
        .headers
        .insert("Authorization".into(), "Bearer s3cret".into());
    config
        .headers
        .insert("Content-Type".into(), "text/plain".into());
    let mut notifier = notifier(&[config]);
    let none = Silences::new();
    cycle(&mut notifier, T0, &[alert("a", T0)], &none).await;
    cycle(&mut notifier, FIRST, &[alert("a", T0)], &none).await;
    let body = &receiver.accepted()[0];
    assert_eq!(
        body["groupKey"],
        "{}:{alertname=\"orders-errors\", service=\"orders\"}"
    );
    assert_eq!(body["receiver"], "oncall");
    assert_eq!(body["version"], "4");
    assert_eq!(body["externalURL"], "http://sightline");
    assert_eq!(
        body["groupLabels"],
        serde_json::json!({"alertname": "orders-errors", "service": "orders"})
    );
    assert_eq!(
        body["alerts"][0]["generatorURL"],
        "http://sightline/alerts/a"
    );
    let headers = receiver.with(|r| r.headers[0].clone());
    assert_eq!(headers["authorization"], "Bearer s3cret");
    assert_eq!(
        headers["content-type"], "application/json",
        "the payload is JSON whatever the config says"
    );
    assert!(
        headers["user-agent"]
            .to_str()
            .expect("ascii")
            .starts_with("Sightline/")
    );
}

#[tokio::test]
async fn group_by_all_labels_makes_a_group_per_label_set_and_slack_gets_blocks() {
    let (url, receiver) = start_receiver().await;
    let mut config = target("chat", &url);
    config.kind = NotifyKind::Slack;
    config.group_by = vec!["...".into()];
    let mut notifier = notifier(&[config]);
    let none = Silences::new();
    let alerts: Vec<Alert> = ["a", "b"]
        .into_iter()
        .map(|i| {
            let mut a = alert(i, T0);
            a.notify = vec!["chat".into()];
            a
        })
        .collect();
    cycle(&mut notifier, T0, &alerts, &none).await;
    cycle(&mut notifier, FIRST, &alerts, &none).await;
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 2, "one group per label set");
    let mut headers: Vec<&str> = accepted
        .iter()
        .map(|body| body["blocks"][0]["text"]["text"].as_str().expect("header"))
        .collect();
    headers.sort_unstable();
    assert_eq!(
        headers,
        [
            "[FIRING:1] orders-errors a orders",
            "[FIRING:1] orders-errors b orders"
        ]
    );
    assert_eq!(stats(&notifier).groups, 2);
}

#[tokio::test]
async fn bad_headers_and_twice_used_names_are_refused_naming_the_key() {
    let mut config = target("oncall", "http://127.0.0.1:9/hook");
    config.headers.insert("bad header".into(), "x".into());
    let err = Notifier::new(&[config], "", NotifierState::default()).expect_err("refused");
    assert!(
        matches!(&err, NotifyError::Config(e) if e.key == "notify[0].headers"),
        "{err}"
    );
    let mut config = target("oncall", "http://127.0.0.1:9/hook");
    config.headers.insert("x-token".into(), "s3cr\net".into());
    let err = Notifier::new(&[config], "", NotifierState::default()).expect_err("refused");
    assert!(
        !err.to_string().contains("s3cr"),
        "values are not echoed: {err}"
    );
    let twice = [
        target("oncall", "http://127.0.0.1:9/a"),
        target("oncall", "http://127.0.0.1:9/b"),
    ];
    let err = Notifier::new(&twice, "", NotifierState::default()).expect_err("refused");
    assert!(err.to_string().contains("notify[1].name"), "{err}");
    assert_eq!(err.code(), ErrorCode::BadRequest);
}
