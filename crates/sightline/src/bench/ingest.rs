//! `sightline bench ingest`: a load generator that sends the demo shop's traces and logs as
//! OTLP/HTTP protobuf from N concurrent clients for a bounded time, to any OTLP endpoint, and
//! reports accepted spans/s and logs/s, answer latency, refused and retried requests, and — when
//! pointed at a Sightline server — its peak RSS and CPU and the bytes on disk per span and log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use prost::Message;

use sightline_demo::{Dice, export_requests};

/// What one benchmark run does.
#[derive(Debug, Clone)]
pub struct IngestBenchOptions {
    pub endpoint: String,
    pub clients: usize,
    pub duration: Duration,
    /// Demo requests per export body (each is 1 to 10 spans).
    pub requests_per_body: usize,
    /// A Sightline server's process id, to sample its memory and CPU.
    pub server_pid: Option<u32>,
    /// A Sightline server's API, to read bytes on disk once rows are flushed.
    pub api_url: Option<String>,
    pub seed: u64,
}

/// One prepared export body and what it carries.
struct Body {
    path: &'static str,
    bytes: Vec<u8>,
    spans: u64,
    logs: u64,
}

/// A fresh pair of export bodies (traces, logs) from the demo shop: new ids every time, so the
/// server stores and compresses what a real fleet would send, not repeats.
fn next_bodies(dice: &mut Dice, requests: usize) -> [Body; 2] {
    use sightline_model::Clock;
    let now = sightline_model::SystemClock.now_ns();
    let (traces, logs) = export_requests(dice, requests, now);
    let spans = traces
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len() as u64)
        .sum();
    let log_count = logs
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len() as u64)
        .sum();
    [
        Body {
            path: "/v1/traces",
            bytes: traces.encode_to_vec(),
            spans,
            logs: 0,
        },
        Body {
            path: "/v1/logs",
            bytes: logs.encode_to_vec(),
            spans: 0,
            logs: log_count,
        },
    ]
}

#[derive(Default)]
struct Totals {
    spans: AtomicU64,
    logs: AtomicU64,
    requests_ok: AtomicU64,
    refused: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub elapsed_s: f64,
    pub spans: u64,
    pub logs: u64,
    pub requests_ok: u64,
    pub refused: u64,
    pub failed: u64,
    pub retried: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub server_peak_rss_bytes: Option<u64>,
    pub server_cpu_cores: Option<f64>,
    pub bytes_per_span: Option<f64>,
    pub bytes_per_log: Option<f64>,
}

impl IngestReport {
    pub fn spans_per_s(&self) -> f64 {
        self.spans as f64 / self.elapsed_s.max(1e-9)
    }

    pub fn logs_per_s(&self) -> f64 {
        self.logs as f64 / self.elapsed_s.max(1e-9)
    }

    /// The report as a two-column table.
    pub fn render(&self) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
        table.set_header(["figure", "value"]);
        let opt = |v: Option<f64>, unit: &str| {
            v.map(|v| format!("{v:.1} {unit}"))
                .unwrap_or_else(|| "not measured".into())
        };
        let rows: Vec<(&str, String)> = vec![
            ("elapsed", format!("{:.1} s", self.elapsed_s)),
            ("accepted spans/s", format!("{:.0}", self.spans_per_s())),
            ("accepted logs/s", format!("{:.0}", self.logs_per_s())),
            (
                "accepted spans / logs",
                format!("{} / {}", self.spans, self.logs),
            ),
            ("requests ok", self.requests_ok.to_string()),
            ("requests refused (429/503)", self.refused.to_string()),
            ("requests retried", self.retried.to_string()),
            ("requests failed", self.failed.to_string()),
            (
                "answer latency p50",
                format!("{:.2} ms", self.latency_p50_ms),
            ),
            (
                "answer latency p99",
                format!("{:.2} ms", self.latency_p99_ms),
            ),
            (
                "server peak RSS",
                opt(
                    self.server_peak_rss_bytes.map(|b| b as f64 / 1048576.0),
                    "MiB",
                ),
            ),
            ("server CPU", opt(self.server_cpu_cores, "cores")),
            ("bytes on disk per span", opt(self.bytes_per_span, "B")),
            ("bytes on disk per log", opt(self.bytes_per_log, "B")),
        ];
        for (name, value) in rows {
            table.add_row([name.to_string(), value]);
        }
        format!("{table}\n")
    }
}

fn percentile_ms(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let index = ((sorted_ns.len() as f64 - 1.0) * q).round() as usize;
    sorted_ns[index.min(sorted_ns.len() - 1)] as f64 / 1e6
}

/// Resident memory (bytes) and CPU time (seconds) of a process, from /proc.
fn process_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((rss_kib * 1024, ticks as f64 / 100.0))
}

/// Runs the load and returns its figures.
pub async fn run_ingest(options: IngestBenchOptions) -> anyhow::Result<IngestReport> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.clients)
        .build()?;
    let base = options.endpoint.trim_end_matches('/').to_string();
    let totals = Arc::new(Totals::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu_before = options.server_pid.and_then(process_usage).map(|u| u.1);

    let sampler = options.server_pid.map(|pid| {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Some((rss, _)) = process_usage(pid) {
                    peak = peak.max(rss);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        })
    });

    let mut workers = Vec::new();
    for worker in 0..options.clients.max(1) {
        let (client, base, totals, stop) =
            (client.clone(), base.clone(), totals.clone(), stop.clone());
        let requests_per_body = options.requests_per_body;
        let mut dice = Dice::new(options.seed.wrapping_add(worker as u64 * 7919));
        let deadline = started + options.duration;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            'bodies: while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                for body in next_bodies(&mut dice, requests_per_body) {
                    if Instant::now() >= deadline {
                        break 'bodies;
                    }
                    loop {
                        let sent = Instant::now();
                        let result = client
                            .post(format!("{base}{}", body.path))
                            .header("content-type", "application/x-protobuf")
                            .body(body.bytes.clone())
                            .send()
                            .await;
                        let status = result.as_ref().map(|r| r.status().as_u16());
                        match status {
                            Ok(200..=299) => {
                                latencies.push(sent.elapsed().as_nanos() as u64);
                                totals.requests_ok.fetch_add(1, Ordering::Relaxed);
                                totals.spans.fetch_add(body.spans, Ordering::Relaxed);
                                totals.logs.fetch_add(body.logs, Ordering::Relaxed);
                                break;
                            }
                            Ok(429 | 503) => {
                                totals.refused.fetch_add(1, Ordering::Relaxed);
                                let wait_s = result
                                    .ok()
                                    .and_then(|r| {
                                        r.headers()
                                            .get("retry-after")?
                                            .to_str()
                                            .ok()?
                                            .parse::<u64>()
                                            .ok()
                                    })
                                    .unwrap_or(1);
                                if Instant::now() + Duration::from_secs(wait_s) >= deadline {
                                    break;
                                }
                                totals.retried.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_secs(wait_s)).await;
                            }
                            _ => {
                                totals.failed.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.context("a load client failed")?);
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let peak = match sampler {
        Some(task) => Some(task.await.unwrap_or(0)),
        None => None,
    };
    let cpu_after = options.server_pid.and_then(process_usage).map(|u| u.1);
    latencies.sort_unstable();
    let mut report = IngestReport {
        elapsed_s,
        spans: totals.spans.load(Ordering::Relaxed),
        logs: totals.logs.load(Ordering::Relaxed),
        requests_ok: totals.requests_ok.load(Ordering::Relaxed),
        refused: totals.refused.load(Ordering::Relaxed),
        failed: totals.failed.load(Ordering::Relaxed),
        retried: totals.retried.load(Ordering::Relaxed),
        latency_p50_ms: percentile_ms(&latencies, 0.5),
        latency_p99_ms: percentile_ms(&latencies, 0.99),
        server_peak_rss_bytes: peak.filter(|p| *p > 0),
        server_cpu_cores: cpu_before.zip(cpu_after).map(|(b, a)| (a - b) / elapsed_s),
        ..Default::default()
    };
    if let Some(api) = &options.api_url {
        let (span_bytes, log_bytes) = bytes_on_disk(api).await?;
        report.bytes_per_span = span_bytes;
        report.bytes_per_log = log_bytes;
    }
    Ok(report)
}

/// Waits until a Sightline server has flushed its buffer, then divides segment bytes by rows.
async fn bytes_on_disk(api: &str) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let client = reqwest::Client::new();
    let base = api.trim_end_matches('/');
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let waited = Instant::now();
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let buffered = metric(&text, "sightline_buffer_rows{signal=\"spans\"}")
            + metric(&text, "sightline_buffer_rows{signal=\"logs\"}");
        if buffered == 0.0 {
            let spans = metric(&text, "sightline_segment_bytes{signal=\"spans\"}");
            let logs = metric(&text, "sightline_segment_bytes{signal=\"logs\"}");
            let count = |table: &'static str| {
                let client = client.clone();
                let url = format!("{base}/api/v1/query");
                async move {
                    let answer: serde_json::Value = client
                        .post(url)
                        .json(&serde_json::json!({"sql": format!("SELECT count(*) FROM {table}")}))
                        .send()
                        .await?
                        .json()
                        .await?;
                    anyhow::Ok(answer["rows"][0][0].as_f64().unwrap_or(0.0))
                }
            };
            let (span_rows, log_rows) = (count("spans").await?, count("logs").await?);
            let per = |bytes: f64, rows: f64| (rows > 0.0).then(|| bytes / rows);
            return Ok((per(spans, span_rows), per(logs, log_rows)));
        }
        if waited.elapsed() > Duration::from_secs(120) {
            eprintln!(
                "warning: the server did not flush within 2 minutes; bytes on disk not measured"
            );
            return Ok((None, None));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_from_sorted_latencies() {
        let ns: Vec<u64> = (1..=100).map(|i| i * 1_000_000).collect();
        assert_eq!(percentile_ms(&ns, 0.5), 51.0);
        assert_eq!(percentile_ms(&ns, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    #[test]
    fn process_usage_reads_this_process() {
        let (rss, cpu) = process_usage(std::process::id()).expect("/proc is readable");
        assert!(rss > 1024 * 1024);
        assert!(cpu >= 0.0);
    }
}
