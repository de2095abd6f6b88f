//! `sightline demo`: the sender of the demo shop's telemetry ([`sightline_demo`]), as OTLP/HTTP
//! protobuf to any endpoint: a backfill of the shop's past when asked, then one second of
//! requests each second, metrics every few seconds, until the duration ends or Ctrl-C. The
//! faults follow the shop's ten-minute cycle, or one named [`Scenario`] from a moment on.

use std::time::Duration;

use sightline_demo::{Batch, Conditions, Dice, Scenario, conditions_at, metrics_at};

/// How `run` paces and bounds the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub endpoint: String,
    pub requests_per_second: f64,
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    pub seed: u64,
    /// First send this much of the shop's past at once, so charts have a history.
    pub backfill: Option<Duration>,
    /// One fault instead of the cycle.
    pub scenario: Option<&'static Scenario>,
}

/// The longest a scenario's fault runs in the backfill: enough for alerts' windows, short
/// enough that the healthy time before it is the larger part of an explanation's window.
const MAX_FAULT_IN_BACKFILL_NS: i64 = 10 * 60 * 1_000_000_000;

/// Which faults hold when: the cycle, or a scenario's fault from its start on.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    scenario: Option<(&'static Scenario, i64)>,
}

impl Timeline {
    fn at(&self, now_ns: i64) -> Conditions {
        match self.scenario {
            Some((s, fault_start_ns)) => s.conditions_at(now_ns, fault_start_ns),
            None => conditions_at(now_ns),
        }
    }
}

/// Seconds of history one backfill export holds.
const BACKFILL_CHUNK_S: i64 = 10;

/// What has been sent, and what the shop's counters say.
struct Sender {
    timeline: Timeline,
    client: reqwest::Client,
    base: String,
    dice: Dice,
    start_ns: i64,
    requests_total: u64,
    spans: usize,
    logs: usize,
    requests: u64,
}

impl Sender {
    /// Sends the requests of `seconds` seconds ending at `end_ns` (and metrics at its end when
    /// asked); says whether everything was accepted.
    async fn send(&mut self, end_ns: i64, seconds: i64, rate: f64, with_metrics: bool) -> bool {
        use prost::Message;
        // The resource (the release a service reports) follows the chunk's first second, as its
        // requests do; backfill chunks never straddle a change, so every second agrees.
        let conditions = self.timeline.at(end_ns - seconds * 1_000_000_000);
        let mut batch = Batch::default();
        for second in 0..seconds {
            let from = end_ns - (seconds - second) * 1_000_000_000;
            let at = self.timeline.at(from);
            let count = (rate * (0.8 + 0.4 * self.dice.unit())).round().max(1.0) as u64;
            for i in 0..count {
                let offset = (i as f64 / count as f64 * 1e9) as i64;
                batch.request(&mut self.dice, from + offset, &at);
            }
        }
        let requests = batch.requests;
        self.requests_total += requests;
        let (traces, logs) = batch.into_requests(&conditions);
        let span_count: usize = traces
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let log_count: usize = logs
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        let mut bodies = vec![
            ("/v1/traces", traces.encode_to_vec()),
            ("/v1/logs", logs.encode_to_vec()),
        ];
        if with_metrics {
            bodies.push((
                "/v1/metrics",
                metrics_at(
                    &mut self.dice,
                    end_ns,
                    self.start_ns,
                    self.requests_total,
                    &conditions,
                )
                .encode_to_vec(),
            ));
        }
        let mut ok = true;
        for (path, body) in bodies {
            let result = self
                .client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await;
            match result {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    ok = false;
                    eprintln!("warning: {path} answered {}; continuing", response.status());
                }
                Err(e) => {
                    ok = false;
                    eprintln!(
                        "warning: cannot reach {}{path} ({e}); is `sightline serve` running? continuing",
                        self.base
                    );
                }
            }
        }
        if ok {
            self.spans += span_count;
            self.logs += log_count;
            self.requests += requests;
        }
        ok
    }
}

/// Sends the backfill, if asked, then one second of telemetry each second until the duration
/// ends or Ctrl-C.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let now = now_ns();
    let backfill_s = options.backfill.map_or(0, |d| d.as_secs() as i64);
    let timeline = Timeline {
        scenario: options.scenario.map(|s| {
            let fault_start = if backfill_s > 0 {
                let start = now - (backfill_s * 1_000_000_000 / 2).min(MAX_FAULT_IN_BACKFILL_NS);
                // On a chunk's 10-second mark, so no backfill chunk holds both sides of it.
                start - start.rem_euclid(BACKFILL_CHUNK_S * 1_000_000_000)
            } else {
                now + 60 * 1_000_000_000
            };
            (s, fault_start)
        }),
    };
    if let Some((s, start)) = timeline.scenario {
        eprintln!(
            "scenario {}: {}; from {} (cause: {}={})",
            s.name,
            s.summary,
            sightline_query::json::format_time_ns(start),
            s.cause.0,
            s.cause.1
        );
    }
    let mut sender = Sender {
        timeline,
        client: reqwest::Client::new(),
        base: options.endpoint.trim_end_matches('/').to_string(),
        dice: Dice::new(options.seed),
        // On a whole second, so the backfill's chunks end on exact 10-second marks (the fault
        // starts on one): every request of a chunk falls on the side of the change its
        // conditions were read at.
        start_ns: {
            let start = now - backfill_s * 1_000_000_000;
            start - start.rem_euclid(1_000_000_000)
        },
        requests_total: 0,
        spans: 0,
        logs: 0,
        requests: 0,
    };
    eprintln!(
        "sending a demo shop's telemetry to {} (Ctrl-C stops)",
        sender.base
    );
    if backfill_s > 0 {
        eprintln!("backfilling the last {backfill_s} s of the shop's history");
        let mut at = sender.start_ns;
        let mut reachable = true;
        while at < now && reachable {
            // Chunks end on 10-second marks, so none straddles a change of release or fault.
            let to_mark = BACKFILL_CHUNK_S - (at / 1_000_000_000).rem_euclid(BACKFILL_CHUNK_S);
            let seconds = to_mark.min((now - at) / 1_000_000_000).max(1);
            at += seconds * 1_000_000_000;
            reachable = sender
                .send(at, seconds, options.requests_per_second, true)
                .await
                || sender.requests > 0;
        }
        eprintln!(
            "backfilled {} spans and {} logs for {} requests in {:.1} s",
            sender.spans,
            sender.logs,
            sender.requests,
            started.elapsed().as_secs_f64()
        );
    }
    let live_started = std::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        if options
            .duration
            .is_some_and(|d| live_started.elapsed() >= d)
        {
            break;
        }
        let now = now_ns();
        let elapsed = live_started.elapsed().as_secs();
        let with_metrics = elapsed.is_multiple_of(5) || options.duration.is_some();
        sender
            .send(now, 1, options.requests_per_second, with_metrics)
            .await;
        if elapsed.is_multiple_of(10) {
            let conditions = sender.timeline.at(now);
            eprintln!(
                "sent {} spans, {} logs for {} requests (orders {}{}{}{}{}{}{})",
                sender.spans,
                sender.logs,
                sender.requests,
                conditions.orders_version,
                if conditions.bad_release {
                    ", bad release"
                } else {
                    ""
                },
                if conditions.slow_query {
                    ", slow query"
                } else {
                    ""
                },
                if conditions.provider_down {
                    ", payment provider failing"
                } else {
                    ""
                },
                conditions
                    .slow_tenant
                    .map(|t| format!(", database slow for tenant {t}"))
                    .unwrap_or_default(),
                conditions
                    .slow_host
                    .map(|h| format!(", {h} slow"))
                    .unwrap_or_default(),
                conditions
                    .backlog_s
                    .map(|s| format!(", worker {s:.0} s behind"))
                    .unwrap_or_default(),
            );
        }
    }
    eprintln!(
        "demo stopped: sent {} spans and {} logs for {} requests",
        sender.spans, sender.logs, sender.requests
    );
    Ok(())
}

fn now_ns() -> i64 {
    use sightline_model::Clock;
    sightline_model::SystemClock.now_ns()
}
