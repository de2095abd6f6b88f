//! `sightline logs`: filter by service, severity, text and time; `--follow` keeps printing new
//! lines as they arrive.

use std::collections::HashSet;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::client::{ApiClient, plain};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Lowest severity shown: trace, debug, info, warn, error, fatal.
    #[arg(long)]
    pub severity: Option<String>,
    /// Text the message must contain (case-insensitive).
    #[arg(long, short = 'q', alias = "grep")]
    pub query: Option<String>,
    /// Only logs of this trace.
    #[arg(long)]
    pub trace_id: Option<String>,
    /// How far back to look, e.g. 15m, 1h, 7d [default: 1h].
    #[arg(long)]
    pub since: Option<String>,
    /// Start time (RFC 3339), instead of --since.
    #[arg(long)]
    pub start: Option<String>,
    /// End time (RFC 3339).
    #[arg(long)]
    pub end: Option<String>,
    /// Most lines printed.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Keep printing new lines as they arrive (Ctrl-C stops).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

fn params(args: &LogsArgs) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (key, value) in [
        ("service", &args.service),
        ("severity", &args.severity),
        ("q", &args.query),
        ("trace_id", &args.trace_id),
        ("start", &args.start),
        ("end", &args.end),
    ] {
        if let Some(value) = value {
            out.push((key, value.clone()));
        }
    }
    if args.start.is_none() {
        out.push(("since", args.since.clone().unwrap_or_else(|| "1h".into())));
    }
    out
}

/// One log as a line: time, severity, service, message, and the trace it belongs to.
pub fn format_line(log: &Value) -> String {
    let mut line = format!(
        "{} {:<5} [{}] {}",
        plain(&log["time"]),
        plain(&log["severity"]).to_uppercase(),
        plain(&log["service_name"]),
        plain(&log["body"]),
    );
    if let Some(trace) = log["trace_id"].as_str() {
        line.push_str(&format!("  trace={trace}"));
    }
    line
}

fn key(log: &Value) -> String {
    format!(
        "{}|{}|{}|{}",
        plain(&log["time"]),
        plain(&log["span_id"]),
        plain(&log["service_name"]),
        plain(&log["body"])
    )
}

pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let mut query = params(&args);
    query.push(("limit", args.limit.to_string()));
    let answer = client.get("/api/v1/logs", &query, "log search").await?;
    let mut logs = answer["logs"].as_array().cloned().unwrap_or_default();
    logs.reverse(); // the API answers newest first; a terminal reads oldest first
    let mut last_time = String::new();
    let mut seen_at_last: HashSet<String> = HashSet::new();
    for log in &logs {
        println!("{}", format_line(log));
        remember(log, &mut last_time, &mut seen_at_last);
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
        }
        let mut query: Vec<(&str, String)> = params(&args)
            .into_iter()
            .filter(|(k, _)| *k != "since" && *k != "start")
            .collect();
        if last_time.is_empty() {
            query.push(("since", "10s".into()));
        } else {
            query.push(("start", last_time.clone()));
        }
        query.push(("order", "asc".into()));
        query.push(("limit", "1000".into()));
        let answer = match client.get("/api/v1/logs", &query, "log search").await {
            Ok(answer) => answer,
            Err(e) => {
                eprintln!("warning: {e:#}; retrying");
                continue;
            }
        };
        for log in answer["logs"].as_array().cloned().unwrap_or_default() {
            let time = plain(&log["time"]);
            if time == last_time && seen_at_last.contains(&key(&log)) {
                continue;
            }
            println!("{}", format_line(&log));
            remember(&log, &mut last_time, &mut seen_at_last);
        }
    }
}

/// Tracks the newest time printed and which lines at that time were printed, so the next poll
/// (which starts at that time) prints nothing twice.
fn remember(log: &Value, last_time: &mut String, seen: &mut HashSet<String>) {
    let time = plain(&log["time"]);
    if time > *last_time {
        *last_time = time;
        seen.clear();
    }
    if plain(&log["time"]) == *last_time {
        seen.insert(key(log));
    }
}
