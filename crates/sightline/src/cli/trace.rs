//! `sightline trace ID`: the trace as an indented tree with durations and status, each span's
//! logs interleaved in time with its children.

use std::collections::{HashMap, HashSet};

use clap::Args;
use serde_json::Value;

use sightline_model::request::is_failure_text;

use super::client::{ApiClient, plain};

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// The trace id (32 hex characters).
    pub trace_id: String,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let view = client
        .get(&format!("/api/v1/traces/{}", args.trace_id), &[], "trace")
        .await?;
    let spans = view["spans"].as_array().cloned().unwrap_or_default();
    let logs = view["logs"].as_array().cloned().unwrap_or_default();
    print!("{}", render(&spans, &logs));
    Ok(())
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Formats a duration in ns as `812µs`, `12.4ms`, `3.20s`.
pub fn format_duration(ns: i64) -> String {
    match ns {
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{:.0}µs", n as f64 / 1e3),
        n if n < 1_000_000_000 => format!("{:.1}ms", n as f64 / 1e6),
        n => format!("{:.2}s", n as f64 / 1e9),
    }
}

enum Item<'a> {
    Span(&'a Value),
    Log(&'a Value),
}

/// The tree as text. Spans whose parent is not in the trace are shown as roots, marked.
pub fn render(spans: &[Value], logs: &[Value]) -> String {
    let ids: HashSet<&str> = spans.iter().map(|s| text(s, "span_id")).collect();
    let mut children: HashMap<&str, Vec<Item>> = HashMap::new();
    let mut roots: Vec<Item> = Vec::new();
    for span in spans {
        match span.get("parent_span_id").and_then(Value::as_str) {
            Some(parent) if ids.contains(parent) => {
                children.entry(parent).or_default().push(Item::Span(span))
            }
            _ => roots.push(Item::Span(span)),
        }
    }
    for log in logs {
        match log.get("span_id").and_then(Value::as_str) {
            Some(span_id) if ids.contains(span_id) => {
                children.entry(span_id).or_default().push(Item::Log(log))
            }
            _ => roots.push(Item::Log(log)),
        }
    }
    let time_of = |item: &Item| match item {
        Item::Span(s) => text(s, "start_time").to_string(),
        Item::Log(l) => text(l, "time").to_string(),
    };
    // RFC 3339 with fixed nanosecond digits sorts as text.
    roots.sort_by_key(|i| time_of(i));
    for items in children.values_mut() {
        items.sort_by_key(|i| time_of(i));
    }
    let trace_start = spans
        .iter()
        .map(|s| text(s, "start_time"))
        .min()
        .unwrap_or("");
    let mut out = String::new();
    if let Some(first) = spans.first() {
        out.push_str(&format!(
            "trace {}  {} spans, {} logs, started {trace_start}\n",
            text(first, "trace_id"),
            spans.len(),
            logs.len()
        ));
    }
    let mut stack: Vec<(usize, &Item)> = roots.iter().rev().map(|i| (0, i)).collect();
    while let Some((depth, item)) = stack.pop() {
        let indent = "  ".repeat(depth);
        match item {
            Item::Span(span) => {
                let parent_missing = span
                    .get("parent_span_id")
                    .and_then(Value::as_str)
                    .is_some_and(|p| !ids.contains(p));
                let code = span.get("http_status_code").and_then(Value::as_i64);
                let failed = is_failure_text(text(span, "status"), code);
                let mut line = format!(
                    "{indent}{} {}  [{}] {} {}",
                    if failed { "✗" } else { "•" },
                    text(span, "name"),
                    text(span, "service_name"),
                    text(span, "kind"),
                    format_duration(span.get("duration_ns").and_then(Value::as_i64).unwrap_or(0)),
                );
                if let Some(code) = code {
                    line.push_str(&format!(" http={code}"));
                }
                if failed {
                    line.push_str(" ERROR");
                    let exception = [
                        text(span, "exception_type"),
                        text(span, "exception_message"),
                    ]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(": ");
                    if !exception.is_empty() {
                        line.push_str(&format!(" ({exception})"));
                    } else if !text(span, "status_message").is_empty() {
                        line.push_str(&format!(" ({})", text(span, "status_message")));
                    }
                }
                if parent_missing {
                    line.push_str(&format!(
                        "  (parent {} not received)",
                        text(span, "parent_span_id")
                    ));
                }
                out.push_str(&line);
                out.push('\n');
                if let Some(items) = children.get(text(span, "span_id")) {
                    stack.extend(items.iter().rev().map(|i| (depth + 1, i)));
                }
            }
            Item::Log(log) => {
                let time = text(log, "time");
                let clock = time.get(11..23).unwrap_or(time);
                out.push_str(&format!(
                    "{indent}  ▸ {clock} {} [{}] {}\n",
                    text(log, "severity").to_uppercase(),
                    text(log, "service_name"),
                    plain(log.get("body").unwrap_or(&Value::Null)),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn render_nests_children_and_interleaves_logs_in_time() {
        let spans = vec![
            json!({"trace_id": "t", "span_id": "a", "parent_span_id": null, "name": "GET /checkout", "service_name": "gateway",
                   "kind": "server", "status": "unset", "start_time": "2026-01-01T00:00:00.000000000Z", "duration_ns": 25_000_000}),
            json!({"trace_id": "t", "span_id": "b", "parent_span_id": "a", "name": "POST /orders", "service_name": "orders",
                   "kind": "server", "status": "error", "exception_type": "KeyError", "start_time": "2026-01-01T00:00:00.005000000Z", "duration_ns": 10_000_000}),
            json!({"trace_id": "t", "span_id": "c", "parent_span_id": "zzz", "name": "late", "service_name": "worker",
                   "kind": "consumer", "status": "ok", "start_time": "2026-01-01T00:00:01.000000000Z", "duration_ns": 5}),
            json!({"trace_id": "t", "span_id": "d", "parent_span_id": "a", "name": "GET /stock", "service_name": "gateway",
                   "kind": "client", "status": "unset", "http_status_code": 503, "start_time": "2026-01-01T00:00:00.021000000Z", "duration_ns": 1_000_000}),
        ];
        let logs = vec![
            json!({"span_id": "a", "time": "2026-01-01T00:00:00.001000000Z", "severity": "warn", "service_name": "gateway", "body": "cart is big"}),
            json!({"span_id": "a", "time": "2026-01-01T00:00:00.020000000Z", "severity": "info", "service_name": "gateway", "body": "done"}),
        ];
        let out = render(&spans, &logs);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[1].starts_with("• GET /checkout  [gateway] server 25.0ms"),
            "{out}"
        );
        assert!(lines[2].contains("WARN [gateway] cart is big"), "{out}");
        assert!(
            lines[3].starts_with("  ✗ POST /orders  [orders] server 10.0ms ERROR (KeyError)"),
            "{out}"
        );
        assert!(lines[4].contains("done"), "{out}");
        assert!(
            lines[5].starts_with("  ✗ GET /stock  [gateway] client 1.0ms http=503 ERROR"),
            "a 5xx answer is a failure, whatever its status says: {out}"
        );
        assert!(
            lines[6].contains("late") && lines[6].contains("(parent zzz not received)"),
            "{out}"
        );
    }

    #[test]
    fn format_duration_picks_a_readable_unit() {
        assert_eq!(format_duration(999), "999ns");
        assert_eq!(format_duration(812_000), "812µs");
        assert_eq!(format_duration(12_400_000), "12.4ms");
        assert_eq!(format_duration(3_200_000_000), "3.20s");
    }
}
