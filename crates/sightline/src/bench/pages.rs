//! `sightline bench pages`: loads each page of the web UI repeatedly from a running server and
//! reports the server's own time for it (the `Server-Timing` header: from the request's arrival
//! to the rendered page), as a Markdown table for `bench/README.md`.

use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

/// The goal the pages are held to (issue: pages answer in under 300 ms).
const TARGET_MS: f64 = 300.0;

#[derive(Debug, Clone)]
pub struct PagesBenchOptions {
    /// The server's UI and API address.
    pub url: String,
    pub runs: usize,
    /// Windows the pages are asked for (`1h`, `24h`, ...).
    pub ranges: Vec<String>,
}

struct Timing {
    page: String,
    status: u16,
    bytes: usize,
    server_ms: Vec<f64>,
    client_ms: Vec<f64>,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn sql(client: &reqwest::Client, base: &str, sql: &str) -> anyhow::Result<Vec<Value>> {
    let response = client
        .post(format!("{base}/api/v1/query"))
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .with_context(|| format!("cannot reach {base}; is `sightline serve` running?"))?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        anyhow::bail!("the server refused {sql:?}: {body}");
    }
    Ok(body["rows"].as_array().cloned().unwrap_or_default())
}

fn encode(text: &str) -> String {
    crate::url::encode_component(text)
}

pub async fn run_pages(options: PagesBenchOptions) -> anyhow::Result<()> {
    if options.runs == 0 || options.ranges.is_empty() {
        anyhow::bail!("--runs must be at least 1 and --ranges must name a window");
    }
    let client = reqwest::Client::new();
    let base = options.url.trim_end_matches('/').to_string();
    let counts = sql(
        &client,
        &base,
        "SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs",
    )
    .await?;
    let spans = counts.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
    let logs = counts.first().and_then(|r| r[1].as_i64()).unwrap_or(0);
    let services: Vec<String> = sql(
        &client,
        &base,
        "SELECT DISTINCT service_name FROM spans ORDER BY service_name",
    )
    .await?
    .iter()
    .filter_map(|r| r[0].as_str().map(str::to_string))
    .collect();
    let trace = sql(
        &client,
        &base,
        "SELECT trace_id FROM spans WHERE kind = 'server' AND parent_span_id IS NULL \
         ORDER BY duration_ns DESC LIMIT 1",
    )
    .await?
    .first()
    .and_then(|r| r[0].as_str().map(str::to_string));
    eprintln!(
        "{} stores {spans} spans and {logs} logs from {} services; {} loads of each page",
        base,
        services.len(),
        options.runs
    );

    let mut pages: Vec<String> = Vec::new();
    for range in &options.ranges {
        pages.push(format!("/?range={range}"));
        for service in &services {
            pages.push(format!("/services/{}?range={range}", encode(service)));
        }
        pages.push(format!("/logs?range={range}"));
        pages.push(format!("/logs?range={range}&severity=error"));
        pages.push(format!("/logs?range={range}&q=timeout"));
        pages.push(format!(
            "/query?range={range}&sql={}",
            encode(
                "SELECT date_bin(INTERVAL '1 minute', start_time, TIMESTAMP '1970-01-01T00:00:00Z') AS minute, \
                 count(*) AS requests FROM spans WHERE kind = 'server' GROUP BY minute ORDER BY minute"
            )
        ));
    }
    if let Some(trace) = &trace {
        pages.push(format!("/traces/{trace}"));
    }

    let mut timings = Vec::new();
    for page in pages {
        let mut timing = Timing {
            page: page.clone(),
            status: 0,
            bytes: 0,
            server_ms: Vec::new(),
            client_ms: Vec::new(),
        };
        // One load first, so every run finds the same warm caches.
        for run in 0..=options.runs {
            let started = Instant::now();
            let response = client.get(format!("{base}{page}")).send().await?;
            timing.status = response.status().as_u16();
            let server = response
                .headers()
                .get("server-timing")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split("dur=").nth(1))
                .and_then(|v| v.parse::<f64>().ok());
            let body = response.bytes().await?;
            let client_ms = started.elapsed().as_secs_f64() * 1000.0;
            timing.bytes = body.len();
            if run > 0 {
                timing.server_ms.push(server.unwrap_or(f64::NAN));
                timing.client_ms.push(client_ms);
            }
        }
        timing.server_ms.sort_by(f64::total_cmp);
        timing.client_ms.sort_by(f64::total_cmp);
        eprintln!(
            "{:>8.1} ms  {}",
            percentile(&timing.server_ms, 0.5),
            timing.page.chars().take(100).collect::<String>()
        );
        timings.push(timing);
    }

    println!(
        "| page | status | server p50 | server p95 | server max | loaded (client p50) | size | under {TARGET_MS} ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut met = 0;
    for t in &timings {
        let p95 = percentile(&t.server_ms, 0.95);
        let ok = p95 < TARGET_MS && t.status == 200;
        met += usize::from(ok);
        let shown = if t.page.len() > 60 {
            format!("{}…", t.page.chars().take(60).collect::<String>())
        } else {
            t.page.clone()
        };
        println!(
            "| `{shown}` | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} kB | {} |",
            t.status,
            percentile(&t.server_ms, 0.5),
            p95,
            t.server_ms.last().copied().unwrap_or(f64::NAN),
            percentile(&t.client_ms, 0.5),
            t.bytes / 1024,
            if ok { "yes" } else { "no" }
        );
    }
    println!(
        "\n{met} of {} pages answered under {TARGET_MS} ms at p95 ({spans} spans, {logs} logs stored).",
        timings.len()
    );
    Ok(())
}
