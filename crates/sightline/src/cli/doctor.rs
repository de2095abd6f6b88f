//! `sightline doctor`: asks a server what is wrong and says it in plain words — unreachable, a
//! replay in progress, a full disk, failing log writes, a buffer backing up, a clock far off.
//! Exits 1 when something fails, so scripts can use it.

use clap::Args;
use serde_json::{Value, json};

use super::client::plain;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

/// A clock difference worth a warning, in seconds.
const CLOCK_WARN_S: f64 = 2.0;
/// How far ahead of the server a record's time may be before its sender's clock is suspect.
const FUTURE_WARN: &str = "5 minutes";

struct Report {
    failed: bool,
}

impl Report {
    fn line(&mut self, level: &str, name: &str, message: &str) {
        let mark = match level {
            "ok" => "ok  ",
            "warn" => "warn",
            _ => {
                self.failed = true;
                "FAIL"
            }
        };
        println!("[{mark}] {name}: {message}");
    }
}

pub async fn run(args: DoctorArgs) -> anyhow::Result<bool> {
    let base = args.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut report = Report { failed: false };
    let asked_at = std::time::SystemTime::now();
    let response = match http.get(format!("{base}/healthz")).send().await {
        Ok(response) => response,
        Err(e) => {
            report.line(
                "fail",
                "server",
                &format!(
                    "nothing answers at {base} ({e}). Start it with `sightline serve`, or point \
                     --url (or SIGHTLINE_URL) at the server's --listen address."
                ),
            );
            return Ok(false);
        }
    };
    let answered_at = std::time::SystemTime::now();
    let health: Value = response.json().await.unwrap_or(Value::Null);
    let status = health["status"].as_str().unwrap_or("unknown");
    if status == "replaying" {
        report.line(
            "warn",
            "server",
            &format!(
                "{base} is replaying its write-ahead log after a restart ({} file(s), {:.0} s so \
                 far); it answers queries and ingest once every acknowledged record is back. \
                 Run doctor again in a moment.",
                health["replay"]["wal_files"],
                health["replay"]["elapsed_seconds"].as_f64().unwrap_or(0.0)
            ),
        );
        return Ok(false);
    }
    report.line(
        "ok",
        "server",
        &format!(
            "{base} answers (Sightline {}, data in {})",
            plain(&health["version"]),
            plain(&health["data_dir"])
        ),
    );
    for check in health["checks"].as_array().into_iter().flatten() {
        report.line(
            check["level"].as_str().unwrap_or("fail"),
            check["name"].as_str().unwrap_or("check"),
            check["message"].as_str().unwrap_or(""),
        );
    }

    // The server's clock against this machine's, halfway through the round trip.
    if let Some(server_now) = health["now"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    {
        let round_trip = answered_at.duration_since(asked_at).unwrap_or_default();
        let local = chrono::DateTime::<chrono::Utc>::from(asked_at + round_trip / 2);
        let skew = (server_now.with_timezone(&chrono::Utc) - local).as_seconds_f64();
        if skew.abs() > CLOCK_WARN_S {
            report.line(
                "warn",
                "clock",
                &format!(
                    "the server's clock is {:.1} s {} this machine's: \"last 15 minutes\" means \
                     different things on each; run NTP (timedatectl set-ntp true) on both",
                    skew.abs(),
                    if skew > 0.0 { "ahead of" } else { "behind" }
                ),
            );
        } else {
            report.line(
                "ok",
                "clock",
                &format!("the server's clock agrees with this machine's ({skew:+.2} s)"),
            );
        }
    }

    // Records stamped in the future come from senders whose clocks run ahead.
    let sql = format!(
        "SELECT service_name, count(*) AS spans, max(start_time) AS newest FROM spans \
         WHERE start_time > now() + INTERVAL '{FUTURE_WARN}' GROUP BY service_name ORDER BY spans DESC LIMIT 5"
    );
    match http
        .post(format!("{base}/api/v1/query"))
        .json(&json!({ "sql": sql }))
        .send()
        .await
    {
        Ok(answer) if answer.status().is_success() => {
            let body: Value = answer.json().await.unwrap_or(Value::Null);
            let rows = body["rows"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                report.line(
                    "ok",
                    "sender clocks",
                    &format!("no spans are stamped more than {FUTURE_WARN} ahead of the server"),
                );
            } else {
                let names: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{} ({} spans, newest {})", plain(&r[0]), r[1], plain(&r[2])))
                    .collect();
                report.line(
                    "warn",
                    "sender clocks",
                    &format!(
                        "spans stamped more than {FUTURE_WARN} in the future come from: {}; \
                         those hosts' clocks run ahead, so their data sorts wrongly",
                        names.join(", ")
                    ),
                );
            }
        }
        Ok(answer) => report.line(
            "warn",
            "sender clocks",
            &format!("the server could not check ({})", answer.status()),
        ),
        Err(e) => report.line("warn", "sender clocks", &format!("the check failed: {e}")),
    }
    Ok(!report.failed)
}
