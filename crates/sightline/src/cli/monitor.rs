//! `sightline slos`, `sightline alerts` and `sightline silence`: the monitor's state from a
//! running server, as tables (or JSON with `--json`).

use clap::Args;
use serde_json::{Value, json};

use super::client::{ApiClient, plain};

#[derive(Debug, Args)]
pub struct SlosArgs {
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Only alerts in this state: pending, firing, resolved or no_data.
    #[arg(long)]
    pub state: Option<String>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct SilenceArgs {
    /// A label the silenced alerts carry, as name=value (repeat for more; all must match).
    #[arg(long = "match", value_name = "NAME=VALUE")]
    pub matchers: Vec<String>,
    /// How long the silence lasts (30m, 2h, 1d).
    #[arg(long = "for", value_name = "DURATION", default_value = "2h")]
    pub duration: String,
    /// Why, for whoever sees the silence.
    #[arg(long, default_value = "")]
    pub comment: String,
    /// List the silences instead.
    #[arg(long, conflicts_with_all = ["matchers", "expire"])]
    pub list: bool,
    /// End the silence with this id now.
    #[arg(long, value_name = "ID", conflicts_with = "matchers")]
    pub expire: Option<String>,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

/// Rows under a header, as the terminal verbs print them.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(header);
    for row in rows {
        table.add_row(row);
    }
    format!("{table}\n")
}

fn percent(value: &Value, digits: usize) -> String {
    value
        .as_f64()
        .map_or("-".into(), |v| format!("{:.digits$}%", v * 100.0))
}

fn times(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |v| format!("{v:.1}×"))
}

fn duration_words(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s >= 86_400.0 {
        format!("{:.1}d", s / 86_400.0)
    } else if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.0}m", s / 60.0)
    } else {
        format!("{s:.0}s")
    }
}

pub async fn slos(args: SlosArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let (text, answer) = client.get_text("/api/v1/slos", &[], "listing SLOs").await?;
    if args.json {
        println!("{text}");
        return Ok(());
    }
    let slos = answer["slos"].as_array().cloned().unwrap_or_default();
    if slos.is_empty() {
        eprintln!(
            "no SLOs are configured: add an [[slo]] table to sightline.toml (see the README)"
        );
        return Ok(());
    }
    let rows = slos
        .iter()
        .map(|s| {
            let mut selection = plain(&s["service"]);
            if let Some(m) = s["method"].as_str() {
                selection.push(' ');
                selection.push_str(m);
            }
            if let Some(r) = s["route"].as_str() {
                selection.push(' ');
                selection.push_str(r);
            }
            let indicator = match s["threshold_ms"].as_f64() {
                Some(ms) => format!("latency ≤ {ms}ms"),
                None => plain(&s["indicator"]),
            };
            vec![
                plain(&s["name"]),
                selection,
                indicator,
                format!("{}% / {}", plain(&s["objective"]), plain(&s["window"])),
                percent(&s["sli"], 3),
                percent(&s["budget_remaining"], 1),
                times(&s["burn_rates"]["1h"]),
                times(&s["burn_rates"]["6h"]),
                s["exhaustion_s"]
                    .as_f64()
                    .map_or("-".into(), duration_words),
                plain(&s["state"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "SLO",
                "selection",
                "indicator",
                "objective",
                "SLI",
                "budget left",
                "burn 1h",
                "burn 6h",
                "exhausted in",
                "state",
            ],
            rows
        )
    );
    Ok(())
}

pub async fn alerts(args: AlertsArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let params: Vec<(&str, String)> = args.state.iter().map(|s| ("state", s.clone())).collect();
    let (text, answer) = client
        .get_text("/api/v1/alerts", &params, "listing alerts")
        .await?;
    if args.json {
        println!("{text}");
        return Ok(());
    }
    let alerts = answer["alerts"].as_array().cloned().unwrap_or_default();
    if alerts.is_empty() {
        eprintln!(
            "no alerts{}",
            args.state
                .map(|s| format!(" in state {s}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    let rows = alerts
        .iter()
        .map(|a| {
            let mut state = plain(&a["state"]);
            if a["silenced_by"].is_string() {
                state.push_str(" (silenced)");
            }
            let labels = a["labels"]
                .as_object()
                .map(|l| {
                    l.iter()
                        .filter(|(k, _)| k.as_str() != "alertname")
                        .map(|(k, v)| format!("{k}={}", plain(v)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            vec![
                state,
                plain(&a["name"]),
                labels,
                plain(&a["since"]),
                plain(&a["summary"]),
                plain(&a["id"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["state", "alert", "labels", "since", "summary", "id"],
            rows
        )
    );
    Ok(())
}

pub async fn silence(args: SilenceArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    if let Some(id) = &args.expire {
        client
            .delete(&format!("/api/v1/silences/{id}"), "ending the silence")
            .await?;
        println!("silence {id} ended");
        return Ok(());
    }
    if args.list {
        let answer = client
            .get("/api/v1/silences", &[], "listing silences")
            .await?;
        let silences = answer["silences"].as_array().cloned().unwrap_or_default();
        if silences.is_empty() {
            eprintln!("no silences");
            return Ok(());
        }
        let rows = silences
            .iter()
            .map(|s| {
                let matchers = s["matchers"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", plain(v)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                let ends = s["ends_at_ns"]
                    .as_i64()
                    .map(sightline_query::json::format_time_ns)
                    .unwrap_or_default();
                vec![
                    plain(&s["id"]),
                    matchers,
                    if s["active"].as_bool().unwrap_or(false) {
                        "active"
                    } else {
                        "ended"
                    }
                    .into(),
                    ends,
                    plain(&s["comment"]),
                ]
            })
            .collect();
        print!(
            "{}",
            table(&["id", "matchers", "state", "ends", "comment"], rows)
        );
        return Ok(());
    }
    if args.matchers.is_empty() {
        anyhow::bail!(
            "say which alerts to silence with --match NAME=VALUE (e.g. --match service=orders), or use --list or --expire ID"
        );
    }
    let mut matchers = serde_json::Map::new();
    for m in &args.matchers {
        let Some((name, value)) = m.split_once('=') else {
            anyhow::bail!("--match {m:?} is not NAME=VALUE (e.g. service=orders)");
        };
        matchers.insert(name.trim().to_string(), json!(value.trim()));
    }
    let answer = client
        .post(
            "/api/v1/silences",
            &json!({"matchers": matchers, "duration": args.duration, "comment": args.comment}),
            "creating the silence",
        )
        .await?;
    println!(
        "silence {} mutes {} for {}",
        plain(&answer["id"]),
        args.matchers.join(" "),
        args.duration
    );
    Ok(())
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// The service deployed.
    #[arg(long)]
    pub service: String,
    /// Its new version (as its spans' service.version will say).
    #[arg(long = "version", id = "deploy_version", value_name = "VERSION")]
    pub version: String,
    /// The commit deployed.
    #[arg(long)]
    pub commit: Option<String>,
    /// Where (deployment.environment).
    #[arg(long)]
    pub environment: Option<String>,
    /// Words for whoever reads the marker.
    #[arg(long)]
    pub description: Option<String>,
    /// When, RFC 3339 or nanoseconds since the epoch (default: now).
    #[arg(long)]
    pub time: Option<String>,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

pub async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let time = args.time.as_ref().map(|t| match t.parse::<i64>() {
        Ok(ns) => json!(ns),
        Err(_) => json!(t),
    });
    let answer = client
        .post(
            "/api/v1/deploys",
            &json!({
                "service": args.service,
                "version": args.version,
                "commit": args.commit,
                "environment": args.environment,
                "description": args.description,
                "time": time,
            }),
            "recording the deploy",
        )
        .await?;
    println!(
        "deploy of {} {} recorded at {}",
        plain(&answer["service"]),
        plain(&answer["version"]),
        plain(&answer["time"])
    );
    Ok(())
}
