//! `sightline explain`: what sets a service's failing (or slow) requests apart, from a running
//! server, as a table (or JSON with `--json`).

use clap::Args;
use serde_json::Value;

use super::client::{ApiClient, plain};
use super::monitor::table;

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The service whose requests are compared.
    #[arg(long)]
    pub service: String,
    /// Only this route's requests (e.g. "/api/orders/{order_id}").
    #[arg(long)]
    pub route: Option<String>,
    /// The window: this long back from now (5m, 30m, 2h).
    #[arg(long, default_value = "30m", conflicts_with = "start")]
    pub since: String,
    /// The window's start instead, RFC 3339 or nanoseconds (with --end).
    #[arg(long, requires = "end")]
    pub start: Option<String>,
    /// The window's end, RFC 3339 or nanoseconds.
    #[arg(long, requires = "start")]
    pub end: Option<String>,
    /// What makes a request bad: errors, or latency (slower than --threshold-ms, default the
    /// route's p95).
    #[arg(long, default_value = "errors", value_parser = ["errors", "latency"])]
    pub what: String,
    /// For --what latency: slower than this many milliseconds is bad.
    #[arg(long)]
    pub threshold_ms: Option<f64>,
    /// Dimensions to list at most.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// Print the server's JSON answer instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

fn share(value: &Value) -> String {
    value
        .as_f64()
        .map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn p_value(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |p| {
        if p < 1e-4 {
            format!("{p:.0e}")
        } else {
            format!("{p:.4}")
        }
    })
}

pub async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let mut params = vec![
        ("service", args.service.clone()),
        ("what", args.what.clone()),
        ("limit", args.limit.to_string()),
    ];
    match (&args.start, &args.end) {
        (Some(start), Some(end)) => {
            params.push(("start", start.clone()));
            params.push(("end", end.clone()));
        }
        _ => params.push(("since", args.since.clone())),
    }
    if let Some(route) = &args.route {
        params.push(("route", route.clone()));
    }
    if let Some(ms) = args.threshold_ms {
        params.push(("threshold_ms", ms.to_string()));
    }
    let answer = client
        .get("/api/v1/explain", &params, "explaining the requests")
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print!("{}", render(&answer));
    Ok(())
}

/// The answer as text: the summary, the ranked dimensions, what changed, what was left out.
pub fn render(answer: &Value) -> String {
    let bad = if answer["what"] == "latency" {
        "slow"
    } else {
        "failing"
    };
    let mut out = format!(
        "{}: {} {bad} requests against {} others ({} to {}){}\n{}\n",
        plain(&answer["service"]),
        plain(&answer["selection"]["requests"]),
        plain(&answer["baseline"]["requests"]),
        plain(&answer["start"]),
        plain(&answer["end"]),
        if answer["sampled"] == true {
            ", sampled"
        } else {
            ""
        },
        plain(&answer["summary"]),
    );
    let rows = |key: &str, columns: &dyn Fn(&Value) -> Vec<String>| -> Vec<Vec<String>> {
        answer[key]
            .as_array()
            .map(|a| a.iter().map(columns).collect())
            .unwrap_or_default()
    };
    let dimensions = rows("dimensions", &|d| {
        vec![
            plain(&d["key"]),
            plain(&d["value"]),
            share(&d["selection_share"]),
            share(&d["baseline_share"]),
            d["risk_ratio"]
                .as_f64()
                .map_or("all".into(), |r| format!("{r:.1}×")),
            p_value(&d["p_value"]),
        ]
    });
    if !dimensions.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "dimension",
                "value",
                &format!("of {bad}"),
                "of others",
                "risk ratio",
                "p",
            ],
            dimensions,
        ));
    }
    let changes = rows("changes", &|c| {
        vec![
            plain(&c["key"]),
            plain(&c["value"]),
            share(&c["window_share"]),
            share(&c["before_share"]),
            if c["new"] == true {
                "new".into()
            } else {
                "grew".into()
            },
        ]
    });
    if !changes.is_empty() {
        out.push_str("\nSince the window before:\n");
        out.push_str(&table(
            &["dimension", "value", "now", "before", ""],
            changes,
        ));
    }
    let left_out: Vec<String> = answer["left_out"]
        .as_array()
        .map(|a| a.iter().map(|l| plain(&l["key"])).collect())
        .unwrap_or_default();
    if !left_out.is_empty() {
        out.push_str(&format!(
            "\nLeft out for their many values (ids): {}\n",
            left_out.join(", ")
        ));
    }
    out
}
