//! `sightline check`: the telemetry-quality findings and the data checks of a server
//! (`GET /api/v1/quality`), for a person or a CI job that holds a release whose telemetry broke.
//! Exit 0 when nothing at or above `--fail-on` was found and no check fails, 1 otherwise, 2 when
//! the server cannot be asked.

use clap::Args;
use serde_json::Value;

use super::client::ApiClient;

/// `sightline check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The server's UI and API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
    /// Only this service's findings (and the checks labelled with it).
    #[arg(long)]
    pub service: Option<String>,
    /// The window: this long back from now (1h, 24h, 7d).
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Exit 1 when a finding of at least this severity exists (error, warn, info) or a data
    /// check fails; `never` only prints.
    #[arg(long, default_value = "error", value_parser = ["error", "warn", "info", "never"])]
    pub fail_on: String,
    /// Print the server's answer as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

fn rank(severity: &str) -> u8 {
    match severity {
        "error" => 3,
        "warn" => 2,
        "info" => 1,
        _ => 0,
    }
}

/// Asks the server and prints what it found; returns the exit status.
pub async fn check(args: CheckArgs) -> anyhow::Result<u8> {
    let client = ApiClient::new(&args.url)?;
    let mut params = vec![("since", args.since.clone())];
    if let Some(service) = &args.service {
        params.push(("service", service.clone()));
    }
    let (text, answer) = client
        .get_text("/api/v1/quality", &params, "asking for the quality report")
        .await?;
    let findings = answer["findings"].as_array().cloned().unwrap_or_default();
    let checks = answer["checks"].as_array().cloned().unwrap_or_default();
    let floor = match args.fail_on.as_str() {
        "never" => u8::MAX,
        other => rank(other),
    };
    let failing_findings = findings
        .iter()
        .filter(|f| rank(f["severity"].as_str().unwrap_or_default()) >= floor)
        .count();
    let failing_checks: Vec<&Value> = checks
        .iter()
        .filter(|c| c["state"].as_str() == Some("firing"))
        .collect();
    if args.json {
        println!("{text}");
    } else {
        print!("{}", render(&findings, &checks));
        if floor != u8::MAX && (failing_findings > 0 || !failing_checks.is_empty()) {
            let mut reasons = Vec::new();
            if failing_findings > 0 {
                reasons.push(format!(
                    "{failing_findings} finding(s) at {} or above",
                    args.fail_on
                ));
            }
            if !failing_checks.is_empty() {
                reasons.push(format!(
                    "failing check(s): {}",
                    failing_checks
                        .iter()
                        .filter_map(|c| c["name"].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            println!("\nFAIL: {}", reasons.join("; "));
        }
    }
    let fails = floor != u8::MAX && (failing_findings > 0 || !failing_checks.is_empty());
    Ok(u8::from(fails))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Number(n) => n.as_f64().map_or_else(
            || n.to_string(),
            |f| format!("{}", (f * 1000.0).round() / 1000.0),
        ),
        other => other.to_string(),
    }
}

/// The findings and checks as two tables.
pub fn render(findings: &[Value], checks: &[Value]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("No findings: the telemetry looks healthy.\n");
    } else {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(["severity", "check", "service", "version", "summary"]);
        for f in findings {
            table.add_row([
                text(&f["severity"]),
                text(&f["check"]),
                text(&f["service"]),
                text(&f["version"]),
                text(&f["summary"]),
            ]);
        }
        out.push_str(&format!("Findings ({})\n{table}\n", findings.len()));
    }
    if !checks.is_empty() {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(["check", "kind", "state", "value", "threshold", "summary"]);
        for c in checks {
            table.add_row([
                text(&c["name"]),
                text(&c["kind"]),
                text(&c["state"]),
                text(&c["value"]),
                text(&c["threshold"]),
                text(&c["summary"]),
            ]);
        }
        out.push_str(&format!("\nData checks ({})\n{table}\n", checks.len()));
    }
    out
}
