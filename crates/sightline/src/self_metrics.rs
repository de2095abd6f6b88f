//! Sightline's own metrics, served on `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sightline_model::{ErrorCode, Signal, Table};
use sightline_storage::StoreStats;

#[derive(Debug, Default)]
struct SignalCounters {
    records_accepted: AtomicU64,
    records_rejected: AtomicU64,
    requests_ok: AtomicU64,
    requests_refused: AtomicU64,
    requests_failed: AtomicU64,
    requests_bad: AtomicU64,
}

/// Services whose ingest notes are kept at most (their names come from senders).
const MAX_NOTED_SERVICES: usize = 10_000;

/// Counters updated on the request path (atomics only) and gauges read from the store.
#[derive(Debug, Default)]
pub struct SelfMetrics {
    signals: [SignalCounters; Signal::ALL.len()],
    queries_ok: AtomicU64,
    queries_failed: AtomicU64,
    query_ns_total: AtomicU64,
    attributes_dropped: AtomicU64,
    values_truncated: AtomicU64,
    values_too_deep: AtomicU64,
    /// Bad requests by error code, e.g. `payload_too_large`.
    bad_requests: Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Values redacted by (service, signal index, rule) since the server started.
    redactions: Mutex<std::collections::BTreeMap<(String, usize, std::sync::Arc<str>), u64>>,
    /// Scrapes of `[[scrape]]` targets by (service, succeeded).
    scrapes: Mutex<std::collections::BTreeMap<(String, bool), u64>>,
    /// What ingest noted per service since the server started, for the quality report.
    notes: Mutex<std::collections::BTreeMap<String, sightline_query::quality::IngestNotes>>,
}

/// What redaction replaced for one service since the server started: per rule, per signal.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ServiceRedactions {
    /// Values replaced in all.
    pub total: u64,
    /// `rule` → values replaced (all signals).
    pub by_rule: std::collections::BTreeMap<String, u64>,
    /// `signal` → values replaced (all rules).
    pub by_signal: std::collections::BTreeMap<String, u64>,
}

fn index(signal: Signal) -> usize {
    match signal {
        Signal::Spans => 0,
        Signal::Logs => 1,
        Signal::Metrics => 2,
    }
}

impl SelfMetrics {
    /// Counts one export that reached storage: its rows, rejected records and outcome.
    pub fn record_export(
        &self,
        signal: Signal,
        rows: u64,
        rejected: u64,
        error: Option<ErrorCode>,
    ) {
        let c = &self.signals[index(signal)];
        c.records_rejected.fetch_add(rejected, Ordering::Relaxed);
        match error {
            None => {
                c.records_accepted.fetch_add(rows, Ordering::Relaxed);
                c.requests_ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(code) if code.is_retryable() => {
                c.requests_refused.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                c.requests_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts records refused one by one (they are also named in the answer).
    pub fn record_rejected(&self, signal: Signal, records: u64) {
        self.signals[index(signal)]
            .records_rejected
            .fetch_add(records, Ordering::Relaxed);
    }

    /// Counts an export refused before storage (malformed, too large, wrong type).
    pub fn record_bad_request(&self, signal: Signal, code: ErrorCode) {
        self.signals[index(signal)]
            .requests_bad
            .fetch_add(1, Ordering::Relaxed);
        let mut map = self.bad_requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(code.as_str()).or_default() += 1;
    }

    /// Counts what the per-record limits dropped or cut.
    pub fn record_limited(&self, limited: sightline_ingest::Limited) {
        self.attributes_dropped
            .fetch_add(limited.attributes_dropped, Ordering::Relaxed);
        self.values_truncated
            .fetch_add(limited.values_truncated, Ordering::Relaxed);
        self.values_too_deep
            .fetch_add(limited.values_too_deep, Ordering::Relaxed);
        if !limited.by_service.is_empty() {
            let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
            for (service, (values, dropped)) in limited.by_service {
                // Noted by its time notes first (the same export); a service past the cap is not.
                let Some(n) = notes.get_mut(&service) else {
                    continue;
                };
                n.truncated += values;
                n.dropped += dropped;
            }
        }
    }

    /// Counts what redaction replaced in one export, per service and rule.
    pub fn record_redactions(&self, signal: Signal, redactions: &sightline_ingest::Redactions) {
        if redactions.counts.is_empty() {
            return;
        }
        let mut map = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        for ((service, rule), n) in &redactions.counts {
            *map.entry((service.clone(), index(signal), rule.clone()))
                .or_default() += n;
        }
    }

    /// What redaction replaced for `service` since the server started.
    pub fn service_redactions(&self, service: &str) -> ServiceRedactions {
        let map = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = ServiceRedactions::default();
        for ((s, signal, rule), n) in map.iter() {
            if s != service {
                continue;
            }
            out.total += n;
            *out.by_rule.entry(rule.to_string()).or_default() += n;
            *out.by_signal
                .entry(Signal::ALL[*signal].to_string())
                .or_default() += n;
        }
        out
    }

    /// Adds one export's per-service time notes (kept, refused, stamped ahead or late).
    pub fn record_timing(
        &self,
        timing: std::collections::BTreeMap<String, sightline_ingest::Timing>,
        now_ns: i64,
    ) {
        if timing.is_empty() {
            return;
        }
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        for (service, t) in timing {
            // Service names come from senders: past the cap, new ones are not noted.
            if notes.len() >= MAX_NOTED_SERVICES && !notes.contains_key(&service) {
                continue;
            }
            let n = notes
                .entry(service)
                .or_insert_with(|| sightline_query::quality::IngestNotes {
                    since_ns: now_ns,
                    ..Default::default()
                });
            n.records += t.records;
            n.refused += t.refused;
            if n.first_refusal.is_none() {
                n.first_refusal = t.first_refusal;
            }
            n.ahead += t.ahead;
            n.late += t.late;
        }
    }

    /// What ingest noted per service since the server started: records kept and refused,
    /// values cut and attributes dropped by the limits, values redacted, clocks ahead or behind.
    pub fn ingest_notes(
        &self,
    ) -> std::collections::BTreeMap<String, sightline_query::quality::IngestNotes> {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let redactions = self.redactions.lock().unwrap_or_else(|e| e.into_inner());
        for ((service, _, _), n) in redactions.iter() {
            if let Some(noted) = notes.get_mut(service) {
                noted.redacted += n;
            }
        }
        notes
    }

    /// Counts one scrape of a `[[scrape]]` target.
    pub fn record_scrape(&self, service: &str, ok: bool) {
        let mut map = self.scrapes.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((service.to_string(), ok)).or_default() += 1;
    }

    /// Counts one query and how long it took.
    pub fn record_query(&self, elapsed_ns: u64, ok: bool) {
        if ok {
            self.queries_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.queries_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.query_ns_total.fetch_add(elapsed_ns, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of these counters, the store's gauges and the process's.
    pub fn render(&self, store: &StoreStats, process: &ProcessGauges) -> String {
        let mut out = String::new();
        let per_signal = |f: &dyn Fn(Signal) -> String| Signal::ALL.map(f).join("\n");
        // Stored tables: the signals' and the span rollups derived from spans.
        let per_table = |f: &dyn Fn(Table) -> String| Table::ALL.map(f).join("\n");
        let load = |v: &AtomicU64| v.load(Ordering::Relaxed);
        section(
            &mut out,
            "sightline_ingest_requests_total",
            "counter",
            "OTLP export requests by signal and outcome.",
            per_signal(&|s| {
                let c = &self.signals[index(s)];
                [("ok", &c.requests_ok), ("refused", &c.requests_refused), ("failed", &c.requests_failed), ("bad_request", &c.requests_bad)]
                    .iter()
                    .map(|(outcome, v)| format!("sightline_ingest_requests_total{{signal=\"{s}\",outcome=\"{outcome}\"}} {}", load(v)))
                    .collect::<Vec<_>>()
                    .join("\n")
            }),
        );
        section(
            &mut out,
            "sightline_ingest_records_total",
            "counter",
            "Records by signal and outcome (accepted, rejected).",
            per_signal(&|s| {
                let c = &self.signals[index(s)];
                format!(
                    "sightline_ingest_records_total{{signal=\"{s}\",outcome=\"accepted\"}} {}\nsightline_ingest_records_total{{signal=\"{s}\",outcome=\"rejected\"}} {}",
                    load(&c.records_accepted),
                    load(&c.records_rejected)
                )
            }),
        );
        let bad: Vec<String> = self
            .bad_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(code, n)| format!("sightline_ingest_bad_requests_total{{code=\"{code}\"}} {n}"))
            .collect();
        section(
            &mut out,
            "sightline_ingest_bad_requests_total",
            "counter",
            "Export requests refused as malformed, by error code.",
            bad.join("\n"),
        );
        section(
            &mut out,
            "sightline_ingest_attributes_dropped_total",
            "counter",
            "Attributes dropped above the per-record limit.",
            format!(
                "sightline_ingest_attributes_dropped_total {}",
                load(&self.attributes_dropped)
            ),
        );
        section(
            &mut out,
            "sightline_ingest_values_truncated_total",
            "counter",
            "String values cut at the value length limit (marked with …[truncated N bytes]).",
            format!(
                "sightline_ingest_values_truncated_total {}",
                load(&self.values_truncated)
            ),
        );
        section(
            &mut out,
            "sightline_ingest_values_too_deep_total",
            "counter",
            "Arrays and maps nested deeper than the limit, replaced by a marker.",
            format!(
                "sightline_ingest_values_too_deep_total {}",
                load(&self.values_too_deep)
            ),
        );
        let redacted: Vec<String> = self
            .redactions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((service, signal, rule), n)| {
                format!(
                    "sightline_redactions_total{{service=\"{}\",signal=\"{}\",rule=\"{}\"}} {n}",
                    label(service),
                    Signal::ALL[*signal],
                    label(rule)
                )
            })
            .collect();
        section(
            &mut out,
            "sightline_redactions_total",
            "counter",
            "Values replaced by redaction before storage, by service, signal and rule (the records are kept).",
            redacted.join("\n"),
        );
        let scrapes: Vec<String> = self
            .scrapes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|((service, ok), n)| {
                format!(
                    "sightline_scrapes_total{{service=\"{}\",outcome=\"{}\"}} {n}",
                    label(service),
                    if *ok { "ok" } else { "failed" }
                )
            })
            .collect();
        section(
            &mut out,
            "sightline_scrapes_total",
            "counter",
            "Scrapes of [[scrape]] targets by service and outcome.",
            scrapes.join("\n"),
        );
        section(
            &mut out,
            "sightline_wal_queue_depth",
            "gauge",
            "Export requests waiting for the write-ahead log.",
            format!("sightline_wal_queue_depth {}", store.queue_depth),
        );
        section(
            &mut out,
            "sightline_wal_syncs_total",
            "counter",
            "Write-ahead log group commits (one fsync each).",
            format!("sightline_wal_syncs_total {}", store.wal_syncs),
        );
        section(
            &mut out,
            "sightline_wal_sync_seconds_total",
            "counter",
            "Time spent writing and syncing the write-ahead log.",
            format!(
                "sightline_wal_sync_seconds_total {:.6}",
                store.wal_sync_seconds_total
            ),
        );
        section(
            &mut out,
            "sightline_wal_write_errors_total",
            "counter",
            "Write-ahead log writes that failed.",
            format!(
                "sightline_wal_write_errors_total {}",
                store.wal_write_errors
            ),
        );
        section(
            &mut out,
            "sightline_buffer_rows",
            "gauge",
            "Rows in memory, not yet in segments, by table (signal or span_rollups).",
            per_table(&|s| {
                format!(
                    "sightline_buffer_rows{{signal=\"{s}\"}} {}",
                    store.buffered_rows.get(&s).copied().unwrap_or(0)
                )
            }),
        );
        section(
            &mut out,
            "sightline_buffer_bytes",
            "gauge",
            "Memory held by buffered rows.",
            format!("sightline_buffer_bytes {}", store.buffered_bytes),
        );
        section(
            &mut out,
            "sightline_trace_index_bytes",
            "gauge",
            "Memory held by the segments' trace-id filters (trace lookups).",
            format!("sightline_trace_index_bytes {}", store.trace_index_bytes),
        );
        section(
            &mut out,
            "sightline_segments",
            "gauge",
            "Parquet segments by table (signal or span_rollups).",
            per_table(&|s| {
                format!(
                    "sightline_segments{{signal=\"{s}\"}} {}",
                    store.segments.get(&s).map(|x| x.0).unwrap_or(0)
                )
            }),
        );
        section(
            &mut out,
            "sightline_segment_bytes",
            "gauge",
            "Bytes on disk in Parquet segments by table (signal or span_rollups).",
            per_table(&|s| {
                format!(
                    "sightline_segment_bytes{{signal=\"{s}\"}} {}",
                    store.segments.get(&s).map(|x| x.1).unwrap_or(0)
                )
            }),
        );
        section(
            &mut out,
            "sightline_flushes_total",
            "counter",
            "Buffer flushes to segments, by outcome.",
            format!(
                "sightline_flushes_total{{outcome=\"ok\"}} {}\nsightline_flushes_total{{outcome=\"failed\"}} {}",
                store.flushes, store.flush_errors
            ),
        );
        section(
            &mut out,
            "sightline_queries_total",
            "counter",
            "Queries by outcome.",
            format!(
                "sightline_queries_total{{outcome=\"ok\"}} {}\nsightline_queries_total{{outcome=\"failed\"}} {}",
                load(&self.queries_ok),
                load(&self.queries_failed)
            ),
        );
        section(
            &mut out,
            "sightline_query_seconds_total",
            "counter",
            "Time spent answering queries.",
            format!(
                "sightline_query_seconds_total {:.6}",
                load(&self.query_ns_total) as f64 / 1e9
            ),
        );
        let classes = sightline_query::QueryClass::ALL;
        section(
            &mut out,
            "sightline_queries_running",
            "gauge",
            "Queries running now (at most [query] max_concurrent).",
            format!("sightline_queries_running {}", process.queries.running),
        );
        section(
            &mut out,
            "sightline_queries_queued",
            "gauge",
            "Queries waiting for a slot, by who asked (api, ui, monitor).",
            classes
                .iter()
                .zip(process.queries.queued)
                .map(|(c, n)| format!("sightline_queries_queued{{class=\"{}\"}} {n}", c.as_str()))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        section(
            &mut out,
            "sightline_queries_refused_total",
            "counter",
            "Queries refused as busy (429): the queue was full or no slot came in time.",
            classes
                .iter()
                .zip(process.queries.refused)
                .map(|(c, n)| {
                    format!(
                        "sightline_queries_refused_total{{class=\"{}\"}} {n}",
                        c.as_str()
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        );
        section(
            &mut out,
            "sightline_query_memory_bytes",
            "gauge",
            "Bytes the query memory pool has given out now (of [query] memory_limit_bytes).",
            format!(
                "sightline_query_memory_bytes {}",
                process.query_memory_bytes
            ),
        );
        if let Some(resident) = process.resident_bytes {
            section(
                &mut out,
                "sightline_resident_memory_bytes",
                "gauge",
                "The server's resident memory.",
                format!("sightline_resident_memory_bytes {resident}"),
            );
        }
        section(
            &mut out,
            "sightline_memory_budget_bytes",
            "gauge",
            "The memory the configuration allows: buffer, queries, decoding, caches, base.",
            format!(
                "sightline_memory_budget_bytes {}",
                process.memory_budget_bytes
            ),
        );
        out
    }
}

/// The process's gauges beside the store's: queries and memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessGauges {
    /// Running, waiting and refused queries.
    pub queries: sightline_query::admission::AdmissionStats,
    /// Bytes the query memory pool has given out.
    pub query_memory_bytes: usize,
    /// Resident memory, where it can be read.
    pub resident_bytes: Option<u64>,
    /// The configured budget, in bytes.
    pub memory_budget_bytes: u64,
}

fn section(out: &mut String, name: &str, kind: &str, help: &str, body: String) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    if !body.is_empty() {
        let _ = writeln!(out, "{body}");
    }
}

/// A label value escaped for the text exposition.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Tail sampling's part of `/metrics`: per service, the traces sampling has seen and kept, and
/// the share kept.
pub fn render_sampling(stats: &std::collections::BTreeMap<String, (u64, u64)>) -> String {
    let mut out = String::new();
    let rows = |f: &dyn Fn(&str, u64, u64) -> String| {
        stats
            .iter()
            .map(|(s, (seen, kept))| f(&label(s), *seen, *kept))
            .collect::<Vec<_>>()
            .join("\n")
    };
    section(
        &mut out,
        "sightline_sampling_traces_total",
        "counter",
        "Traces tail sampling decided, by service and outcome (kept whole, or dropped whole).",
        rows(&|s, seen, kept| {
            format!(
                "sightline_sampling_traces_total{{service=\"{s}\",outcome=\"kept\"}} {kept}\nsightline_sampling_traces_total{{service=\"{s}\",outcome=\"dropped\"}} {}",
                seen - kept
            )
        }),
    );
    section(
        &mut out,
        "sightline_sampling_kept_ratio",
        "gauge",
        "The share of a service's traces sampling kept, over every pass so far.",
        rows(&|s, seen, kept| {
            format!(
                "sightline_sampling_kept_ratio{{service=\"{s}\"}} {}",
                if seen == 0 {
                    1.0
                } else {
                    kept as f64 / seen as f64
                }
            )
        }),
    );
    out
}

/// The monitor's part of `/metrics`: evaluations, alerts by state, silences, and every
/// notification target's deliveries and failures.
pub fn render_monitor(stats: &sightline_monitor::monitor::MonitorStats) -> String {
    let mut out = String::new();
    section(
        &mut out,
        "sightline_monitor_evaluations_total",
        "counter",
        "Evaluation cycles of SLOs and alert rules, by outcome.",
        format!(
            "sightline_monitor_evaluations_total{{outcome=\"ok\"}} {}\nsightline_monitor_evaluations_total{{outcome=\"failed\"}} {}",
            stats.evaluations, stats.evaluation_failures
        ),
    );
    section(
        &mut out,
        "sightline_monitor_evaluation_seconds",
        "gauge",
        "How long the last evaluation cycle took.",
        format!(
            "sightline_monitor_evaluation_seconds {}",
            stats.last_duration_s
        ),
    );
    section(
        &mut out,
        "sightline_alerts",
        "gauge",
        "Alert instances by state.",
        stats
            .alerts_by_state
            .iter()
            .map(|(state, n)| format!("sightline_alerts{{state=\"{state}\"}} {n}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    section(
        &mut out,
        "sightline_silences_active",
        "gauge",
        "Silences muting notifications now.",
        format!("sightline_silences_active {}", stats.silences_active),
    );
    section(
        &mut out,
        "sightline_monitor_state_write_failures_total",
        "counter",
        "Writes of the monitor's state or alert events that failed (retried at the next cycle).",
        format!(
            "sightline_monitor_state_write_failures_total {}",
            stats.state_write_failures
        ),
    );
    let per_target = |f: &dyn Fn(&sightline_monitor::notify::TargetStats) -> u64, name: &str| {
        stats
            .notify
            .targets
            .iter()
            .map(|t| format!("{name}{{target=\"{}\"}} {}", label(&t.target), f(t)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (name, kind, help, f) in [
        (
            "sightline_notifications_sent_total",
            "counter",
            "Notifications delivered, by target.",
            (|t| t.sent) as fn(&sightline_monitor::notify::TargetStats) -> u64,
        ),
        (
            "sightline_notifications_failed_total",
            "counter",
            "Delivery attempts that failed (retried or not), by target.",
            |t| t.failed_attempts,
        ),
        (
            "sightline_notifications_retried_total",
            "counter",
            "Delivery attempts that retried a failed one, by target.",
            |t| t.retried,
        ),
        (
            "sightline_notifications_dropped_total",
            "counter",
            "Notifications a receiver refused for good (4xx), by target.",
            |t| t.dropped_permanent,
        ),
        (
            "sightline_notifications_pending",
            "gauge",
            "Notifications decided and not yet delivered, by target.",
            |t| t.pending,
        ),
    ] {
        section(&mut out, name, kind, help, per_target(&f, name));
    }
    out
}
