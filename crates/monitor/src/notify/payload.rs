//! What a notification says, per target kind: Alertmanager's webhook payload (version "4"),
//! field for field, so any receiver written for Alertmanager reads it; and a Slack incoming
//! webhook message made of blocks, kept inside Slack's limits (50 blocks a message, 3000
//! characters a section, 150 a header).

use serde::Serialize;
use serde_json::{Value, json};

use crate::alert::{Alert, AlertState, Labels};
use crate::config::NotifyKind;

/// How Go writes its zero time, which Alertmanager sends as `endsAt` while an alert fires.
pub(crate) const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Slack refuses a message with more blocks.
pub(crate) const SLACK_MAX_BLOCKS: usize = 50;
/// Slack refuses a section whose text is longer (in characters).
pub(crate) const SLACK_MAX_SECTION_CHARS: usize = 3000;
/// Slack refuses a header whose text is longer (in characters).
pub(crate) const SLACK_MAX_HEADER_CHARS: usize = 150;

/// What every payload needs besides its alerts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// The target's name.
    pub(crate) receiver: &'a str,
    pub(crate) group_labels: &'a Labels,
    pub(crate) group_key: &'a str,
    pub(crate) external_url: &'a str,
}

/// The body posted for `alerts` (sorted here as Alertmanager sorts them).
pub(crate) fn render(kind: NotifyKind, context: &Context<'_>, alerts: &[&Alert]) -> String {
    let mut alerts = alerts.to_vec();
    alerts.sort_by(|a, b| alertmanager_order(a, b));
    let body = match kind {
        NotifyKind::Webhook => serde_json::to_string(&webhook(context, &alerts)),
        NotifyKind::Slack => serde_json::to_string(&slack(context, &alerts)),
    };
    body.expect("a payload of strings and string-keyed maps always serializes")
}

/// Alertmanager's `AlertSlice` order: by `job`, then `instance` (an alert having the label
/// first), then by the label sets.
fn alertmanager_order(a: &Alert, b: &Alert) -> std::cmp::Ordering {
    for key in ["job", "instance"] {
        match (a.labels.get(key), b.labels.get(key)) {
            (None, None) => continue,
            (None, Some(_)) => return std::cmp::Ordering::Greater,
            (Some(_), None) => return std::cmp::Ordering::Less,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
    }
    a.labels.cmp(&b.labels)
}

fn is_firing(alert: &Alert) -> bool {
    alert.state != AlertState::Resolved
}

/// Go's RFC 3339 with nanoseconds (`time.RFC3339Nano`, as `encoding/json` writes a time): UTC,
/// the fraction without trailing zeros and left out when zero.
pub(crate) fn rfc3339(ns: i64) -> String {
    let time = chrono::DateTime::from_timestamp_nanos(ns);
    let mut text = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    let fraction = ns.rem_euclid(1_000_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookMessage<'a> {
    receiver: &'a str,
    status: &'static str,
    alerts: Vec<WebhookAlert<'a>>,
    group_labels: &'a Labels,
    common_labels: Labels,
    common_annotations: Labels,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    version: &'static str,
    group_key: &'a str,
    truncated_alerts: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WebhookAlert<'a> {
    status: &'static str,
    labels: &'a Labels,
    annotations: &'a Labels,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: &'a str,
}

fn status(firing: bool) -> &'static str {
    if firing { "firing" } else { "resolved" }
}

/// The pairs every map shares (same name, same value).
fn common<'a>(mut maps: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = maps.next() else {
        return Labels::new();
    };
    let mut shared = first.clone();
    for map in maps {
        shared.retain(|name, value| map.get(name) == Some(value));
    }
    shared
}

fn webhook<'a>(context: &Context<'a>, alerts: &[&'a Alert]) -> WebhookMessage<'a> {
    WebhookMessage {
        receiver: context.receiver,
        status: status(alerts.iter().any(|a| is_firing(a))),
        alerts: alerts
            .iter()
            .map(|a| WebhookAlert {
                status: status(is_firing(a)),
                labels: &a.labels,
                annotations: &a.annotations,
                starts_at: rfc3339(a.starts_at_ns),
                ends_at: match (is_firing(a), a.ends_at_ns) {
                    (false, Some(ends_at_ns)) => rfc3339(ends_at_ns),
                    _ => ZERO_TIME.to_string(),
                },
                generator_url: &a.generator_url,
                fingerprint: &a.id,
            })
            .collect(),
        group_labels: context.group_labels,
        common_labels: common(alerts.iter().map(|a| &a.labels)),
        common_annotations: common(alerts.iter().map(|a| &a.annotations)),
        external_url: context.external_url,
        version: "4",
        group_key: context.group_key,
        truncated_alerts: 0,
    }
}

/// `[FIRING:2] orders-errors orders` or `[RESOLVED] orders-errors orders`: the count of firing
/// alerts and the group labels' values, as Alertmanager's default title has it.
pub(crate) fn title(group_labels: &Labels, alerts: &[&Alert]) -> String {
    let firing = alerts.iter().filter(|a| is_firing(a)).count();
    let head = if firing > 0 {
        format!("[FIRING:{firing}]")
    } else {
        "[RESOLVED]".to_string()
    };
    let values: Vec<&str> = group_labels.values().map(String::as_str).collect();
    if values.is_empty() {
        head
    } else {
        format!("{head} {}", values.join(" "))
    }
}

/// At most `max` characters of `text`, cut at a character boundary and marked with `…`.
pub(crate) fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Slack's mrkdwn gives `&`, `<` and `>` meaning; text shows them escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text inside inline code, which cannot hold a backtick.
fn code(text: &str) -> String {
    escape(text).replace('`', "'")
}

/// A URL inside `<url|text>`: the characters that would end the link are percent-encoded.
fn link_target(url: &str) -> String {
    url.replace('<', "%3C")
        .replace('>', "%3E")
        .replace('|', "%7C")
}

fn section(text: &str) -> Value {
    json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": cut(text, SLACK_MAX_SECTION_CHARS) },
    })
}

/// One alert in mrkdwn: its name linked to its page and its state, the summary, the labels,
/// the runbook.
fn slack_alert(alert: &Alert) -> String {
    let name = escape(alert.labels.get("alertname").unwrap_or(&alert.id));
    let state = if is_firing(alert) {
        "FIRING"
    } else {
        "RESOLVED"
    };
    let mut lines = vec![if alert.generator_url.is_empty() {
        format!("*{name}* · {state}")
    } else {
        format!("*<{}|{name}>* · {state}", link_target(&alert.generator_url))
    }];
    if let Some(summary) = alert.annotations.get("summary") {
        lines.push(escape(summary));
    }
    if !alert.labels.is_empty() {
        let labels: Vec<String> = alert
            .labels
            .iter()
            .map(|(k, v)| format!("`{}={}`", code(k), code(v)))
            .collect();
        lines.push(labels.join(" "));
    }
    if let Some(runbook) = alert.annotations.get("runbook_url") {
        lines.push(format!("<{}|Runbook>", link_target(runbook)));
    }
    lines.join("\n")
}

fn slack(context: &Context<'_>, alerts: &[&Alert]) -> Value {
    let title = title(context.group_labels, alerts);
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&title, SLACK_MAX_HEADER_CHARS) },
    })];
    // The header takes one block; when the alerts do not all fit, the last block says how
    // many were left out.
    let room = SLACK_MAX_BLOCKS - 1;
    let shown = if alerts.len() <= room {
        alerts.len()
    } else {
        room - 1
    };
    blocks.extend(alerts[..shown].iter().map(|a| section(&slack_alert(a))));
    if shown < alerts.len() {
        blocks.push(section(&format!("_and {} more_", alerts.len() - shown)));
    }
    json!({ "text": title, "blocks": blocks })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000_000;

    fn alert(name: &str, instance: &str, state: AlertState) -> Alert {
        let labels: Labels = [
            ("alertname", name),
            ("service", "orders"),
            ("instance", instance),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Alert {
            id: crate::alert::fingerprint(&labels),
            labels,
            annotations: [("summary".to_string(), format!("{name} on {instance}"))].into(),
            state,
            starts_at_ns: T0,
            ends_at_ns: (state == AlertState::Resolved).then_some(T0 + 1_500_000_000),
            generator_url: "http://sightline/alerts/x".into(),
            notify: vec!["oncall".into()],
        }
    }

    #[test]
    fn times_are_written_as_go_writes_them() {
        assert_eq!(rfc3339(T0), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(T0 + 500_000_000), "2023-11-14T22:13:20.5Z");
        assert_eq!(rfc3339(T0 + 1), "2023-11-14T22:13:20.000000001Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_webhook_payload_has_every_field_of_version_4() {
        let firing = alert("orders-errors", "a", AlertState::Firing);
        let resolved = alert("orders-errors", "b", AlertState::Resolved);
        let group_labels: Labels = [
            ("alertname".to_string(), "orders-errors".to_string()),
            ("service".to_string(), "orders".to_string()),
        ]
        .into();
        let key = super::super::group::group_key(&group_labels);
        let context = Context {
            receiver: "oncall",
            group_labels: &group_labels,
            group_key: &key,
            external_url: "http://sightline",
        };
        let body = render(NotifyKind::Webhook, &context, &[&resolved, &firing]);
        let json: Value = serde_json::from_str(&body).expect("json");
        let mut fields: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            [
                "alerts",
                "commonAnnotations",
                "commonLabels",
                "externalURL",
                "groupKey",
                "groupLabels",
                "receiver",
                "status",
                "truncatedAlerts",
                "version"
            ]
        );
        assert_eq!(json["receiver"], "oncall");
        assert_eq!(json["status"], "firing");
        assert_eq!(json["version"], "4");
        assert_eq!(
            json["groupKey"],
            "{}:{alertname=\"orders-errors\", service=\"orders\"}"
        );
        assert_eq!(json["truncatedAlerts"], 0);
        assert_eq!(json["externalURL"], "http://sightline");
        assert_eq!(
            json["commonLabels"],
            json!({"alertname": "orders-errors", "service": "orders"})
        );
        assert_eq!(json["commonAnnotations"], json!({}));
        let first = &json["alerts"][0];
        let mut alert_fields: Vec<&str> = first
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        alert_fields.sort_unstable();
        assert_eq!(
            alert_fields,
            [
                "annotations",
                "endsAt",
                "fingerprint",
                "generatorURL",
                "labels",
                "startsAt",
                "status"
            ]
        );
        // Sorted by instance: a (firing) before b (resolved).
        assert_eq!(first["status"], "firing");
        assert_eq!(first["endsAt"], ZERO_TIME);
        assert_eq!(first["startsAt"], "2023-11-14T22:13:20Z");
        assert_eq!(first["fingerprint"], firing.id.as_str());
        let second = &json["alerts"][1];
        assert_eq!(second["status"], "resolved");
        assert_eq!(second["endsAt"], "2023-11-14T22:13:21.5Z");
        // Only resolved alerts: the message is resolved.
        let body = render(NotifyKind::Webhook, &context, &[&resolved]);
        let json: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["status"], "resolved");
    }

    #[test]
    fn slack_messages_stay_inside_slacks_limits() {
        let group_labels: Labels = [("alertname".to_string(), "orders-errors".to_string())].into();
        let context = Context {
            receiver: "chat",
            group_labels: &group_labels,
            group_key: "{}:{alertname=\"orders-errors\"}",
            external_url: "http://sightline",
        };
        let many: Vec<Alert> = (0..60)
            .map(|i| alert("orders-errors", &format!("i{i:02}"), AlertState::Firing))
            .collect();
        let refs: Vec<&Alert> = many.iter().collect();
        let json: Value =
            serde_json::from_str(&render(NotifyKind::Slack, &context, &refs)).expect("json");
        let blocks = json["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), SLACK_MAX_BLOCKS);
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["text"], "[FIRING:60] orders-errors");
        assert_eq!(json["text"], "[FIRING:60] orders-errors");
        assert_eq!(blocks[49]["text"]["text"], "_and 12 more_");
        let first = blocks[1]["text"]["text"].as_str().expect("text");
        assert!(
            first.starts_with("*<http://sightline/alerts/x|orders-errors>* · FIRING\n"),
            "{first}"
        );
        assert!(first.contains("orders-errors on i00"), "{first}");
        assert!(first.contains("`instance=i00`"), "{first}");

        // Exactly as many as fit: no "more" block.
        let fit: Vec<&Alert> = refs[..49].to_vec();
        let json: Value =
            serde_json::from_str(&render(NotifyKind::Slack, &context, &fit)).expect("json");
        let blocks = json["blocks"].as_array().expect("blocks");
        assert_eq!(blocks.len(), 50);
        assert!(
            !blocks[49]["text"]["text"]
                .as_str()
                .expect("text")
                .contains("more")
        );

        // A long summary in several-byte characters is cut at a character boundary.
        let mut long = alert("orders-errors", "a", AlertState::Resolved);
        long.annotations
            .insert("summary".into(), "é<".repeat(4_000));
        long.annotations
            .insert("runbook_url".into(), "http://wiki/run|book".into());
        let json: Value =
            serde_json::from_str(&render(NotifyKind::Slack, &context, &[&long])).expect("json");
        assert_eq!(
            json["blocks"][0]["text"]["text"],
            "[RESOLVED] orders-errors"
        );
        let text = json["blocks"][1]["text"]["text"].as_str().expect("text");
        assert_eq!(text.chars().count(), SLACK_MAX_SECTION_CHARS);
        assert!(text.ends_with('…'));
        assert!(text.contains("é&lt;"), "mrkdwn is escaped");
        let short = alert("orders-errors", "a", AlertState::Firing);
        let mut with_runbook = short.clone();
        with_runbook
            .annotations
            .insert("runbook_url".into(), "http://wiki/run|book".into());
        let json: Value =
            serde_json::from_str(&render(NotifyKind::Slack, &context, &[&with_runbook]))
                .expect("json");
        let text = json["blocks"][1]["text"]["text"].as_str().expect("text");
        assert!(text.ends_with("<http://wiki/run%7Cbook|Runbook>"), "{text}");
        // A header longer than Slack allows is cut too.
        let wide: Labels = [("alertname".to_string(), "x".repeat(400))].into();
        let context = Context {
            group_labels: &wide,
            ..context
        };
        let json: Value =
            serde_json::from_str(&render(NotifyKind::Slack, &context, &[&short])).expect("json");
        let header = json["blocks"][0]["text"]["text"].as_str().expect("text");
        assert_eq!(header.chars().count(), SLACK_MAX_HEADER_CHARS);
    }
}
