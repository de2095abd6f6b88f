//! `sightline bench dataset`: the demo shop's traces and logs over days, written straight into a
//! data folder (decoded and normalized like an export, then stored as hourly segments without
//! the write-ahead log), so the query benchmark has millions of rows to ask about in minutes.
//!
//! Traffic follows a daily curve (busy afternoons, quiet nights) with the demo's faults and
//! releases. The demo sends about one log line per eight spans; to reach the asked number of logs
//! the dataset adds the lines a real Python service writes per unit of work: uvicorn's access
//! line per request, SQLAlchemy's statement line per query, Celery's line per task, and an error
//! line for every failed call.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use sightline_model::schema::{LogRow, SpanRow, logs_to_batch, spans_to_batch};
use sightline_model::{Signal, SystemClock};
use sightline_storage::{Store, StoreOptions};

use sightline_demo::{Batch, Dice, conditions_at};

const NS_PER_S: i64 = 1_000_000_000;
const NS_PER_MINUTE: i64 = 60 * NS_PER_S;
const NS_PER_HOUR: i64 = 60 * NS_PER_MINUTE;
/// The slowest the shop runs past the end of its span of time, in requests per second.
const MIN_RATE_PER_S: f64 = 1.0;

/// What to generate, and where.
#[derive(Debug, Clone)]
pub struct DatasetOptions {
    /// An empty (or new) data folder.
    pub data_dir: PathBuf,
    pub spans: u64,
    pub logs: u64,
    /// How far back the data reaches from `end_ns`.
    pub span_of_time: Duration,
    /// The newest moment of the data (nanoseconds since the epoch).
    pub end_ns: i64,
    pub seed: u64,
    /// Latency thresholds (ns) the rollups count good requests within, as a server with
    /// latency SLOs of those thresholds would.
    pub latency_thresholds_ns: Vec<i64>,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct DatasetReport {
    pub spans: u64,
    pub logs: u64,
    pub segments: usize,
    pub span_bytes: u64,
    pub log_bytes: u64,
    pub start_ns: i64,
    pub end_ns: i64,
    pub elapsed: Duration,
}

impl DatasetReport {
    pub fn render(&self) -> String {
        let per = |bytes: u64, rows: u64| bytes as f64 / rows.max(1) as f64;
        let time =
            |ns: i64| chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%d %H:%M UTC");
        format!(
            "wrote {} spans and {} logs from {} to {} in {:.1} s ({:.0} records/s)\n\
             {} segments: spans {:.1} MiB ({:.1} bytes per span), logs {:.1} MiB ({:.1} bytes per log line)\n",
            self.spans,
            self.logs,
            time(self.start_ns),
            time(self.end_ns),
            self.elapsed.as_secs_f64(),
            (self.spans + self.logs) as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.segments,
            self.span_bytes as f64 / (1024.0 * 1024.0),
            per(self.span_bytes, self.spans),
            self.log_bytes as f64 / (1024.0 * 1024.0),
            per(self.log_bytes, self.logs),
        )
    }
}

/// Rows of one hour, waiting to be written.
#[derive(Default)]
struct Hour {
    spans: Vec<SpanRow>,
    logs: Vec<LogRow>,
}

/// How many demo requests a moment gets, and how many log lines each span adds.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Requests per second, averaged over a day.
    requests_per_s: f64,
    /// Chance that a span writes a log line of its own.
    span_log_chance: f64,
    /// Chance that one of the demo's own log lines is kept.
    demo_log_chance: f64,
}

/// Busy afternoons and quiet nights; averages to 1 over a day.
fn daily_curve(t_ns: i64) -> f64 {
    let hour_of_day = (t_ns.rem_euclid(24 * NS_PER_HOUR)) as f64 / NS_PER_HOUR as f64;
    1.0 + 0.6 * (2.0 * std::f64::consts::PI * (hour_of_day - 9.0) / 24.0).sin()
}

fn text_attr(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Any::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_text(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        Any::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

/// The line a Python service writes for one finished span, as (logger, severity number,
/// severity text, body).
fn line_for(span: &Span) -> (&'static str, i32, &'static str, String) {
    let ms = (span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)) as f64
        / 1e6;
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == StatusCode::Error as i32);
    let reason = span
        .status
        .as_ref()
        .map(|s| s.message.clone())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "error".into());
    let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Internal);
    if kind == SpanKind::Server {
        let method = attr_text(span, "http.request.method").unwrap_or_else(|| "GET".into());
        let route = attr_text(span, "http.route").unwrap_or_else(|| span.name.clone());
        let status = attr_text(span, "http.response.status_code").unwrap_or_else(|| "200".into());
        let body = format!("127.0.0.1:51234 - \"{method} {route} HTTP/1.1\" {status} ({ms:.1} ms)");
        return ("uvicorn.access", 9, "INFO", body);
    }
    if kind == SpanKind::Consumer {
        return if failed {
            let body = format!("Task {} raised unexpected: {reason}", span.name);
            ("celery.app.trace", 17, "ERROR", body)
        } else {
            let body = format!("Task {} succeeded in {:.3}s: None", span.name, ms / 1e3);
            ("celery.app.trace", 9, "INFO", body)
        };
    }
    if let Some(system) = attr_text(span, "db.system") {
        let statement = attr_text(span, "db.query.text")
            .or_else(|| attr_text(span, "db.operation.name"))
            .unwrap_or_else(|| span.name.clone());
        return if failed {
            let body = format!("{system} query failed after {ms:.1} ms: {reason}: {statement}");
            ("sqlalchemy.engine", 17, "ERROR", body)
        } else {
            let body = format!("{statement} [{system}, {ms:.1} ms]");
            ("sqlalchemy.engine", 5, "DEBUG", body)
        };
    }
    if failed {
        let body = format!("{} failed after {ms:.1} ms: {reason}", span.name);
        return ("httpx", 17, "ERROR", body);
    }
    let body = format!("{} finished in {ms:.1} ms", span.name);
    ("httpx", 5, "DEBUG", body)
}

/// Adds a log line for some finished spans, and drops some of the demo's own lines, so logs
/// and spans come in the asked proportion.
fn shape_logs(
    dice: &mut Dice,
    shape: Shape,
    traces: &ExportTraceServiceRequest,
    logs: &mut ExportLogsServiceRequest,
) {
    if shape.demo_log_chance < 1.0 {
        for resource in &mut logs.resource_logs {
            for scope in &mut resource.scope_logs {
                scope
                    .log_records
                    .retain(|_| dice.chance(shape.demo_log_chance));
            }
        }
    }
    for resource in &traces.resource_spans {
        let mut by_logger: Vec<(&'static str, Vec<LogRecord>)> = Vec::new();
        for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
            if !dice.chance(shape.span_log_chance) {
                continue;
            }
            let (logger, severity_number, severity, body) = line_for(span);
            let mut attributes = Vec::new();
            if let Some(route) = attr_text(span, "http.route") {
                attributes.push(text_attr("http.route", route));
            }
            let record = LogRecord {
                time_unix_nano: span.end_time_unix_nano,
                observed_time_unix_nano: span.end_time_unix_nano,
                severity_number,
                severity_text: severity.into(),
                body: Some(AnyValue {
                    value: Some(Any::StringValue(body)),
                }),
                attributes,
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                ..Default::default()
            };
            match by_logger.iter_mut().find(|(l, _)| *l == logger) {
                Some((_, records)) => records.push(record),
                None => by_logger.push((logger, vec![record])),
            }
        }
        if by_logger.is_empty() {
            continue;
        }
        logs.resource_logs.push(ResourceLogs {
            resource: resource.resource.clone(),
            scope_logs: by_logger
                .into_iter()
                .map(|(logger, log_records)| ScopeLogs {
                    scope: Some(
                        opentelemetry_proto::tonic::common::v1::InstrumentationScope {
                            name: logger.into(),
                            ..Default::default()
                        },
                    ),
                    log_records,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        });
    }
}

/// The demo's requests started in `[from_ns, from_ns + width_ns)`, normalized into rows.
fn generate(
    dice: &mut Dice,
    shape: Shape,
    requests: u64,
    from_ns: i64,
    width_ns: i64,
) -> (Vec<SpanRow>, Vec<LogRow>) {
    let conditions = conditions_at(from_ns);
    let mut batch = Batch::default();
    for _ in 0..requests {
        let start = from_ns + (dice.unit() * width_ns as f64) as i64;
        batch.request(dice, start, &conditions);
    }
    let (traces, mut logs) = batch.into_requests(&conditions);
    shape_logs(dice, shape, &traces, &mut logs);
    // Records are stamped with their own time; the receiving moment is the window's end, so
    // the ingest time bounds judge them as a live export would.
    let received_ns = from_ns + width_ns + 30 * NS_PER_S;
    // The server's default rules, so the dataset is what a default server would have stored.
    static INTAKE: std::sync::LazyLock<sightline_ingest::Intake> =
        std::sync::LazyLock::new(sightline_ingest::Intake::default);
    let spans = sightline_ingest::prepare_traces(traces, received_ns, &INTAKE).spans;
    let logs = sightline_ingest::prepare_logs(logs, received_ns, &INTAKE).logs;
    (spans, logs)
}

/// Measures the demo's spans and logs per request, and derives the rate and the log shaping
/// that reach the asked counts.
fn calibrate(dice: &mut Dice, options: &DatasetOptions) -> Shape {
    const SAMPLE: u64 = 2_000;
    let neutral = Shape {
        requests_per_s: 0.0,
        span_log_chance: 0.0,
        demo_log_chance: 1.0,
    };
    let mut spans = 0usize;
    let mut logs = 0usize;
    // One sample per minute of the fault cycle, so faults weigh as they will.
    for minute in 0..10 {
        let (s, l) = generate(
            dice,
            neutral,
            SAMPLE / 10,
            options.end_ns - (10 - minute) * NS_PER_MINUTE,
            NS_PER_MINUTE,
        );
        spans += s.len();
        logs += l.len();
    }
    let spans_per_request = spans as f64 / SAMPLE as f64;
    let logs_per_request = logs as f64 / SAMPLE as f64;
    let wanted_logs_per_request =
        spans_per_request * options.logs as f64 / options.spans.max(1) as f64;
    let demo_log_chance = (wanted_logs_per_request / logs_per_request.max(1e-9)).min(1.0);
    let span_log_chance =
        ((wanted_logs_per_request - logs_per_request) / spans_per_request).clamp(0.0, 1.0);
    let seconds = options.span_of_time.as_secs_f64().max(1.0);
    Shape {
        requests_per_s: options.spans as f64 / spans_per_request / seconds,
        span_log_chance,
        demo_log_chance,
    }
}

/// Generates the dataset into an empty data folder, with a progress bar on a terminal (and a
/// line per simulated day elsewhere).
pub async fn run_dataset(options: DatasetOptions) -> anyhow::Result<DatasetReport> {
    if options.spans == 0 && options.logs == 0 {
        anyhow::bail!("nothing to generate: --spans and --logs are both 0");
    }
    if options.span_of_time < Duration::from_secs(60) {
        anyhow::bail!("--days must cover at least a minute");
    }
    let data_dir = options.data_dir.clone();
    let thresholds = options.latency_thresholds_ns.clone();
    let (store, _) = tokio::task::spawn_blocking(move || {
        Store::open(
            &data_dir,
            StoreOptions {
                latency_thresholds_ns: thresholds,
                ..StoreOptions::default()
            },
            Arc::new(SystemClock),
        )
    })
    .await??;
    let existing = store.segments().len();
    if existing > 0 {
        anyhow::bail!(
            "data folder {} already holds {existing} segments; the dataset is written into an \
             empty folder (choose another --data-dir, or remove this one)",
            options.data_dir.display()
        );
    }
    let started = Instant::now();
    let mut dice = Dice::new(options.seed);
    let shape = calibrate(&mut dice, &options);
    let span_ns = options.span_of_time.as_nanos() as i64;
    let start_ns = (options.end_ns - span_ns).div_euclid(NS_PER_MINUTE) * NS_PER_MINUTE;
    let end_ns = options.end_ns;

    let bar = ProgressBar::new(options.spans + options.logs);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec}, {eta} left) {msg}",
        )?
        .progress_chars("=> "),
    );
    let mut report = DatasetReport {
        start_ns: i64::MAX,
        end_ns: i64::MIN,
        ..Default::default()
    };
    let mut hour = Hour::default();
    let mut hour_index = start_ns.div_euclid(NS_PER_HOUR);
    let mut minute_ns = start_ns;
    let mut days_reported = 0;
    let mut rate = shape.requests_per_s;
    let (mut requests_made, mut spans_made) = (0u64, 0u64);
    loop {
        let done = report.spans + hour.spans.len() as u64 >= options.spans
            && report.logs + hour.logs.len() as u64 >= options.logs;
        if done {
            break;
        }
        // Minutes past the end (only when chance left the counts short) fall in the last one.
        let (from_ns, width_ns) = if minute_ns + NS_PER_MINUTE <= end_ns {
            (minute_ns, NS_PER_MINUTE)
        } else {
            (end_ns - NS_PER_MINUTE, NS_PER_MINUTE)
        };
        if from_ns.div_euclid(NS_PER_HOUR) != hour_index {
            write_hour(&store, &mut hour, from_ns, &mut report).await?;
            hour_index = from_ns.div_euclid(NS_PER_HOUR);
            // Steer the rate by what the shop actually produced, so the counts are reached
            // at the end of the span of time, not before or after it.
            let left_s = (end_ns - from_ns) as f64 / NS_PER_S as f64;
            // Steer by the spans, so that they cover the span of time.
            let spans_left = options
                .spans
                .saturating_sub(report.spans + hour.spans.len() as u64);
            if spans_made > 0 && left_s > 0.0 {
                let per_request = spans_made as f64 / requests_made as f64;
                rate = spans_left as f64 / per_request / left_s;
            }
        }
        // Past the end, a floor keeps the last minute moving while the logs are still short: a
        // rate steered to nothing once the spans are reached would never finish them.
        let rate_now = if from_ns < minute_ns {
            rate.max(MIN_RATE_PER_S)
        } else {
            rate
        };
        let expected = rate_now * 60.0 * daily_curve(from_ns);
        let mut requests = expected.floor() as u64;
        if dice.chance(expected.fract()) {
            requests += 1;
        }
        let (mut spans, mut logs) = generate(&mut dice, shape, requests, from_ns, width_ns);
        requests_made += requests;
        spans_made += spans.len() as u64;
        let room = |wanted: u64, written: u64, held: usize| {
            wanted.saturating_sub(written + held as u64) as usize
        };
        spans.truncate(room(options.spans, report.spans, hour.spans.len()));
        logs.truncate(room(options.logs, report.logs, hour.logs.len()));
        bar.inc((spans.len() + logs.len()) as u64);
        hour.spans.append(&mut spans);
        hour.logs.append(&mut logs);
        minute_ns += NS_PER_MINUTE;
        let day = ((minute_ns - start_ns) / (24 * NS_PER_HOUR)) as usize;
        if day > days_reported {
            days_reported = day;
            bar.set_message(format!("day {day} written"));
            if bar.is_hidden() {
                eprintln!(
                    "day {day}: {} records so far",
                    report.spans + report.logs + (hour.spans.len() + hour.logs.len()) as u64
                );
            }
        }
    }
    write_hour(&store, &mut hour, i64::MAX, &mut report).await?;
    bar.finish_and_clear();
    store.close().await?;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Writes the held rows stamped before `before_ns`; later ones (spans of requests that started
/// just before the hour ended) wait for their own hour, so each hour is one segment per signal.
async fn write_hour(
    store: &Store,
    hour: &mut Hour,
    before_ns: i64,
    report: &mut DatasetReport,
) -> anyhow::Result<()> {
    let (spans, later): (Vec<_>, Vec<_>) = std::mem::take(&mut hour.spans)
        .into_iter()
        .partition(|r| r.start_time_ns < before_ns);
    hour.spans = later;
    let (logs, later): (Vec<_>, Vec<_>) = std::mem::take(&mut hour.logs)
        .into_iter()
        .partition(|r| r.time_ns < before_ns);
    hour.logs = later;
    for row in &spans {
        report.start_ns = report.start_ns.min(row.start_time_ns);
        report.end_ns = report.end_ns.max(row.start_time_ns);
    }
    for row in &logs {
        report.start_ns = report.start_ns.min(row.time_ns);
        report.end_ns = report.end_ns.max(row.time_ns);
    }
    if !spans.is_empty() {
        let written = store.import(Signal::Spans, spans_to_batch(&spans)?).await?;
        report.spans += written.rows as u64;
        report.span_bytes += written.bytes;
        report.segments += written.segments_written;
    }
    if !logs.is_empty() {
        let written = store.import(Signal::Logs, logs_to_batch(&logs)?).await?;
        report.logs += written.rows as u64;
        report.log_bytes += written.bytes;
        report.segments += written.segments_written;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daily_curve_averages_to_one() {
        let mean: f64 = (0..24 * 60)
            .map(|m| daily_curve(m * NS_PER_MINUTE))
            .sum::<f64>()
            / (24.0 * 60.0);
        assert!((mean - 1.0).abs() < 1e-3, "mean {mean}");
        assert!(daily_curve(15 * NS_PER_HOUR) > daily_curve(3 * NS_PER_HOUR));
    }

    #[tokio::test]
    async fn logs_far_beyond_the_spans_still_reach_their_count() {
        // The spans are reached long before the logs: the minutes past the end must keep
        // making requests until the logs are there too.
        let dir = tempfile::tempdir().expect("temp dir");
        let report = run_dataset(DatasetOptions {
            data_dir: dir.path().to_path_buf(),
            spans: 200,
            logs: 3_000,
            span_of_time: Duration::from_secs(3600),
            end_ns: 1_800_000_000 * NS_PER_S,
            seed: 11,
            latency_thresholds_ns: Vec::new(),
        })
        .await
        .expect("dataset");
        assert_eq!((report.spans, report.logs), (200, 3_000));
    }

    #[tokio::test]
    async fn a_small_dataset_has_the_asked_counts_over_the_asked_time() {
        let dir = tempfile::tempdir().expect("temp dir");
        let end_ns = 1_800_000_000 * NS_PER_S;
        let report = run_dataset(DatasetOptions {
            data_dir: dir.path().to_path_buf(),
            spans: 6_000,
            logs: 5_000,
            span_of_time: Duration::from_secs(6 * 3600),
            end_ns,
            seed: 7,
            latency_thresholds_ns: Vec::new(),
        })
        .await
        .expect("dataset");
        assert_eq!((report.spans, report.logs), (6_000, 5_000));
        assert!(
            report.start_ns < end_ns - 5 * NS_PER_HOUR,
            "starts {}",
            report.start_ns
        );
        assert!(report.end_ns <= end_ns + NS_PER_MINUTE);
        assert!(
            report.segments >= 12,
            "hourly segments, got {}",
            report.segments
        );
        // The folder now serves like any other: reopened, every row is there.
        let (store, _) =
            Store::open(dir.path(), StoreOptions::default(), Arc::new(SystemClock)).expect("open");
        let rows = |signal| -> i64 {
            store
                .snapshot(signal, sightline_model::TimeRange::ALL)
                .segments
                .iter()
                .map(|(s, _)| s.row_count)
                .sum()
        };
        assert_eq!(
            (
                rows(sightline_model::Table::Spans),
                rows(sightline_model::Table::Logs)
            ),
            (6_000, 5_000)
        );
        let again = run_dataset(DatasetOptions {
            data_dir: dir.path().to_path_buf(),
            spans: 10,
            logs: 10,
            span_of_time: Duration::from_secs(3600),
            end_ns,
            seed: 7,
            latency_thresholds_ns: Vec::new(),
        })
        .await
        .expect_err("a second run into the same folder is refused");
        assert!(format!("{again}").contains("already holds"), "{again}");
    }

    #[test]
    fn shaped_logs_follow_their_spans() {
        let mut dice = Dice::new(3);
        let conditions = conditions_at(0);
        let mut batch = Batch::default();
        for i in 0..50 {
            batch.request(&mut dice, i * NS_PER_S, &conditions);
        }
        let (traces, mut logs) = batch.into_requests(&conditions);
        let shape = Shape {
            requests_per_s: 1.0,
            span_log_chance: 1.0,
            demo_log_chance: 0.0,
        };
        shape_logs(&mut dice, shape, &traces, &mut logs);
        let spans: usize = traces
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        let records: Vec<&LogRecord> = logs
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .collect();
        assert_eq!(
            records.len(),
            spans,
            "one line per span, none of the demo's"
        );
        assert!(records.iter().all(|r| r.trace_id.len() == 16));
        assert!(
            records.iter().any(|r| {
                matches!(&r.body, Some(AnyValue { value: Some(Any::StringValue(b)) }) if b.contains("HTTP/1.1"))
            }),
            "access lines for server spans"
        );
    }
}
