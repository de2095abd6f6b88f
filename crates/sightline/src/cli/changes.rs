//! `sightline explain`: what sets a service's failing (or slow) requests apart, from a running
//! server, as a table (or JSON with `--json`); `sightline compare`: a candidate release against
//! its baseline, route by route, with an exit code a CI job gates on.

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

/// The window (`start`/`end` when given, else `since`) and the route, as query parameters.
fn push_window(
    params: &mut Vec<(&str, String)>,
    since: &str,
    start: &Option<String>,
    end: &Option<String>,
    route: &Option<String>,
) {
    match (start, end) {
        (Some(start), Some(end)) => {
            params.push(("start", start.clone()));
            params.push(("end", end.clone()));
        }
        _ => params.push(("since", since.to_string())),
    }
    if let Some(route) = route {
        params.push(("route", route.clone()));
    }
}

pub async fn explain(args: ExplainArgs) -> anyhow::Result<()> {
    let client = ApiClient::new(&args.url)?;
    let mut params = vec![
        ("service", args.service.clone()),
        ("what", args.what.clone()),
        ("limit", args.limit.to_string()),
    ];
    push_window(
        &mut params,
        &args.since,
        &args.start,
        &args.end,
        &args.route,
    );
    if let Some(ms) = args.threshold_ms {
        params.push(("threshold_ms", ms.to_string()));
    }
    let (text, answer) = client
        .get_text("/api/v1/explain", &params, "explaining the requests")
        .await?;
    if args.json {
        println!("{text}");
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

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The service whose releases are compared.
    #[arg(long)]
    pub service: String,
    /// The baseline cohort's value (the version running before, e.g. 1.4.2).
    #[arg(long)]
    pub baseline: String,
    /// The candidate cohort's value (the canary's version, e.g. 1.5.0).
    #[arg(long)]
    pub candidate: String,
    /// What tells the cohorts apart: service.version, deployment.environment, or any span or
    /// resource attribute (a feature flag: --by feature.new_checkout --baseline false
    /// --candidate true).
    #[arg(long, default_value = "service.version")]
    pub by: String,
    /// Only this route.
    #[arg(long)]
    pub route: Option<String>,
    /// The window: this long back from now (15m, 1h, 1d).
    #[arg(long, default_value = "1h", conflicts_with = "start")]
    pub since: String,
    /// The window's start instead, RFC 3339 or nanoseconds (with --end).
    #[arg(long, requires = "end")]
    pub start: Option<String>,
    /// The window's end, RFC 3339 or nanoseconds.
    #[arg(long, requires = "start")]
    pub end: Option<String>,
    /// Requests each cohort of a route needs for a verdict.
    #[arg(long)]
    pub min_requests: Option<u64>,
    /// How much slower a percentile must be to count, in percent of the baseline's (10).
    #[arg(long)]
    pub latency_floor: Option<f64>,
    /// How much higher the error rate must be to count, in percentage points (0.5).
    #[arg(long)]
    pub error_floor: Option<f64>,
    /// text (tables), or json (the server's answer, for CI tooling).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Sightline's API address.
    #[arg(long, env = "SIGHTLINE_URL", default_value = super::DEFAULT_URL)]
    pub url: String,
}

/// `sightline compare`: exit 0 when the candidate is not significantly worse, 1 when it is
/// (the regressions named), 2 when it cannot say (returned as `Ok(2)`; errors are 2 too).
pub async fn compare(args: CompareArgs) -> anyhow::Result<u8> {
    let client = ApiClient::new(&args.url)?;
    let mut params = vec![
        ("service", args.service.clone()),
        ("baseline", args.baseline.clone()),
        ("candidate", args.candidate.clone()),
        ("by", args.by.clone()),
    ];
    push_window(
        &mut params,
        &args.since,
        &args.start,
        &args.end,
        &args.route,
    );
    if let Some(n) = args.min_requests {
        params.push(("min_requests", n.to_string()));
    }
    if let Some(p) = args.latency_floor {
        params.push(("latency_floor", p.to_string()));
    }
    if let Some(p) = args.error_floor {
        params.push(("error_floor", p.to_string()));
    }
    let (text, answer) = client
        .get_text("/api/v1/compare", &params, "comparing the releases")
        .await?;
    if args.format == "json" {
        println!("{text}");
    } else {
        print!("{}", render_comparison(&answer));
    }
    Ok(match answer["verdict"].as_str() {
        Some("worse") => 1,
        Some("better" | "same") => 0,
        _ => 2,
    })
}

fn ms(value: &Value) -> String {
    value.as_f64().map_or("-".into(), |v| {
        if v >= 100.0 {
            format!("{v:.0} ms")
        } else {
            format!("{v:.1} ms")
        }
    })
}

/// The comparison as text: the verdict and summary, a table per route, the new errors.
pub fn render_comparison(answer: &Value) -> String {
    let mut out = format!(
        "{} {}={} against {} ({} to {}): {}\n{}\n",
        plain(&answer["service"]),
        plain(&answer["by"]),
        plain(&answer["candidate"]),
        plain(&answer["baseline"]),
        plain(&answer["start"]),
        plain(&answer["end"]),
        plain(&answer["verdict"]).to_uppercase().replace('_', " "),
        plain(&answer["summary"]),
    );
    let rows: Vec<Vec<String>> = answer["routes"]
        .as_array()
        .map(|routes| {
            routes
                .iter()
                .map(|r| {
                    let (b, c) = (&r["baseline"], &r["candidate"]);
                    let pair = |f: &dyn Fn(&Value) -> String| format!("{} → {}", f(b), f(c));
                    vec![
                        plain(&r["route"]),
                        pair(&|s| plain(&s["requests"])),
                        pair(&|s| share(&s["error_rate"])),
                        pair(&|s| ms(&s["p50_ms"])),
                        pair(&|s| ms(&s["p95_ms"])),
                        pair(&|s| ms(&s["p99_ms"])),
                        plain(&r["verdict"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "route", "requests", "errors", "p50", "p95", "p99", "verdict",
            ],
            rows,
        ));
    }
    let new_errors: Vec<Vec<String>> = answer["new_errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    vec![
                        plain(&e["error"]),
                        plain(&e["count"]),
                        plain(&e["example_trace_id"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if !new_errors.is_empty() {
        out.push_str("\nErrors never seen in the baseline:\n");
        out.push_str(&table(&["error", "requests", "example trace"], new_errors));
    }
    if let Some(regressions) = answer["regressions"].as_array().filter(|r| !r.is_empty()) {
        out.push_str("\nRegressions:\n");
        for r in regressions {
            out.push_str(&format!("  - {}\n", plain(r)));
        }
    }
    out
}
