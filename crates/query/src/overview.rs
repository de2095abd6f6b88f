//! The questions the incident pages ask: requests, errors and latency over time in buckets, the
//! slowest and failing requests, and the runtime metrics a service sends.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use sightline_model::TimeRange;

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::sql::{quote, time_conditions, where_clause};
use sightline_model::request::{ROUTE_SQL, is_failure_sql, is_request_sql};
use sightline_model::rollup::RequestTotals;

/// Steps a chart's buckets may take, in seconds: the first that gives at most `MAX_BUCKETS`.
const STEPS_S: &[i64] = &[
    10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
];
const MAX_BUCKETS: i64 = 90;
const NS: i64 = 1_000_000_000;

/// Equal time buckets over a closed window, for charts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets {
    /// Start of the first bucket, aligned to the step.
    pub start_ns: i64,
    /// Width of each bucket, in nanoseconds.
    pub step_ns: i64,
    /// How many buckets there are (at least 1).
    pub count: usize,
    /// The window's end (now, for a window up to now): the last bucket may reach past it, and
    /// only its part before this has happened.
    pub end_ns: i64,
}

impl Buckets {
    /// Buckets of a "nice" step covering `[start_ns, end_ns)`, at most 90 of them.
    pub fn over(start_ns: i64, end_ns: i64) -> Self {
        let span_s = ((end_ns - start_ns).max(NS) + NS - 1) / NS;
        let step_s = STEPS_S
            .iter()
            .copied()
            .find(|step| span_s / step <= MAX_BUCKETS)
            .unwrap_or_else(|| (span_s + MAX_BUCKETS - 1) / MAX_BUCKETS);
        let step_ns = step_s * NS;
        let first = start_ns.div_euclid(step_ns) * step_ns;
        let count = ((end_ns - first + step_ns - 1) / step_ns).max(1) as usize;
        Self {
            start_ns: first,
            step_ns,
            count,
            end_ns,
        }
    }

    /// Seconds of bucket `i` that have passed by the window's end: a whole step, except for an
    /// unfinished last bucket. Rates divide by this, so the bucket in progress shows its real rate
    /// so far instead of a drop in traffic.
    pub fn seconds(&self, i: usize) -> f64 {
        let start = self.start_ns + i as i64 * self.step_ns;
        let end = (start + self.step_ns).min(self.end_ns.max(start + NS));
        (end - start) as f64 / NS as f64
    }

    /// The bucket holding a time, if it falls in the window.
    pub fn index(&self, t_ns: i64) -> Option<usize> {
        if t_ns < self.start_ns {
            return None;
        }
        let i = ((t_ns - self.start_ns) / self.step_ns) as usize;
        (i < self.count).then_some(i)
    }

    /// The bucket of a result row's `bucket` column (a start in nanoseconds).
    fn row_index(&self, row: &Map<String, Value>) -> Option<usize> {
        row.get("bucket")
            .and_then(Value::as_i64)
            .and_then(|t| self.index(t))
    }

    /// Each bucket's start in seconds since the epoch (a chart's x axis).
    pub fn times_s(&self) -> Vec<f64> {
        (0..self.count)
            .map(|i| (self.start_ns + i as i64 * self.step_ns) as f64 / NS as f64)
            .collect()
    }

    /// SQL giving a row's bucket start in nanoseconds.
    fn sql(&self, column: &str) -> String {
        format!(
            "CAST(date_bin(INTERVAL '{} seconds', {column}, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT)",
            self.step_ns / NS
        )
    }

    fn range(&self) -> TimeRange {
        TimeRange::new(
            Some(self.start_ns),
            Some(self.start_ns + self.count as i64 * self.step_ns),
        )
    }
}

/// Requests, errors and latency percentiles per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct RedSeries {
    /// Requests per second in each bucket.
    pub rate: Vec<f64>,
    /// Failed requests per second.
    pub error_rate: Vec<f64>,
    /// Latency percentiles in milliseconds; `None` for a bucket without requests.
    pub p50_ms: Vec<Option<f64>>,
    /// The 95th percentile latency, in milliseconds, as `p50_ms`.
    pub p95_ms: Vec<Option<f64>>,
    /// The 99th percentile latency, in milliseconds, as `p50_ms`.
    pub p99_ms: Vec<Option<f64>>,
}

impl RedSeries {
    fn empty(count: usize) -> Self {
        Self {
            rate: vec![0.0; count],
            error_rate: vec![0.0; count],
            p50_ms: vec![None; count],
            p95_ms: vec![None; count],
            p99_ms: vec![None; count],
        }
    }
}

fn f64_of(row: &Map<String, Value>, key: &str) -> Option<f64> {
    row.get(key).and_then(Value::as_f64)
}

/// A row's text cell, or empty.
pub(crate) fn str_of(row: &Map<String, Value>, key: &str) -> String {
    row.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Requests, errors and (when `latency`) latency percentiles over time, per service (or for
/// one service). Without `latency` the percentiles stay `None` and the query is cheaper.
pub async fn red_series(
    engine: &QueryEngine,
    buckets: Buckets,
    service: Option<&str>,
    latency: bool,
) -> Result<BTreeMap<String, RedSeries>, Error> {
    if buckets.step_ns % (60 * NS) == 0 && crate::red::use_rollups(engine, buckets.range()) {
        return red_series_from_rollups(engine, buckets, service, latency).await;
    }
    let mut conditions = time_conditions("start_time", buckets.range());
    conditions.push(is_request_sql().into());
    if let Some(service) = service {
        conditions.push(format!("service_name = {}", quote(service)));
    }
    let percentiles = if latency {
        ", approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ns) AS p50, \
         approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95, \
         approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ns) AS p99"
    } else {
        ""
    };
    let sql = format!(
        "SELECT service_name, {bucket} AS bucket, count(*) AS requests, \
         sum(CASE WHEN {failed} THEN 1 ELSE 0 END) AS errors{percentiles} \
         FROM spans WHERE {filter} GROUP BY service_name, bucket",
        bucket = buckets.sql("start_time"),
        filter = conditions.join(" AND "),
        failed = is_failure_sql(),
    );
    let mut out: BTreeMap<String, RedSeries> = BTreeMap::new();
    for row in engine.objects(&sql, 1_000_000).await? {
        let Some(i) = buckets.row_index(&row) else {
            continue;
        };
        let series = out
            .entry(str_of(&row, "service_name"))
            .or_insert_with(|| RedSeries::empty(buckets.count));
        series.rate[i] = f64_of(&row, "requests").unwrap_or(0.0) / buckets.seconds(i);
        series.error_rate[i] = f64_of(&row, "errors").unwrap_or(0.0) / buckets.seconds(i);
        series.p50_ms[i] = f64_of(&row, "p50").map(|v| v / 1e6);
        series.p95_ms[i] = f64_of(&row, "p95").map(|v| v / 1e6);
        series.p99_ms[i] = f64_of(&row, "p99").map(|v| v / 1e6);
    }
    Ok(out)
}

/// [`red_series`] from the per-minute rollups (buckets of whole minutes, so no edges).
async fn red_series_from_rollups(
    engine: &QueryEngine,
    buckets: Buckets,
    service: Option<&str>,
    latency: bool,
) -> Result<BTreeMap<String, RedSeries>, Error> {
    let (per_group, names) =
        crate::red::totals_by(engine, buckets.range(), service, |id, minute| {
            buckets.index(minute).map(|i| (id, i))
        })
        .await?;
    let mut totals: std::collections::HashMap<(&str, usize), RequestTotals> =
        std::collections::HashMap::new();
    for ((id, i), t) in &per_group {
        totals
            .entry((names[*id].service_name.as_str(), *i))
            .or_default()
            .merge(t);
    }
    let mut out: BTreeMap<String, RedSeries> = BTreeMap::new();
    for ((service_name, i), t) in totals {
        let series = out
            .entry(service_name.to_string())
            .or_insert_with(|| RedSeries::empty(buckets.count));
        series.rate[i] = t.requests as f64 / buckets.seconds(i);
        series.error_rate[i] = t.errors as f64 / buckets.seconds(i);
        if latency {
            series.p50_ms[i] = t.percentile_ms(0.5);
            series.p95_ms[i] = t.percentile_ms(0.95);
            series.p99_ms[i] = t.percentile_ms(0.99);
        }
    }
    Ok(out)
}

/// One request span, as the lists of slow and failing requests show it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpan {
    /// The span's trace id, 32 hex characters.
    pub trace_id: String,
    /// The span's id, 16 hex characters.
    pub span_id: String,
    /// The span name.
    pub name: String,
    /// When the span started, in ns since the epoch.
    pub start_ns: i64,
    /// How long the span took, in milliseconds.
    pub duration_ms: f64,
    /// The span status as stored: `unset`, `ok` or `error`.
    pub status: String,
    /// The HTTP response status code, when the span has one.
    pub http_status_code: Option<i64>,
    /// The status message or the exception, whichever says why it failed.
    pub reason: Option<String>,
    /// The version of the service that served the request, when its resource named one.
    pub service_version: Option<String>,
}

impl RequestSpan {
    /// Whether the request failed ([`sightline_model::request::is_failure`]).
    pub fn failed(&self) -> bool {
        sightline_model::request::is_failure_text(&self.status, self.http_status_code)
    }
}

/// Which requests of a service to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOrder {
    /// The slowest first.
    Slowest,
    /// Failed requests, the newest first.
    FailingNewest,
}

/// The slowest or the newest failing requests of a service (of one route, when given) in a
/// range.
pub async fn requests(
    engine: &QueryEngine,
    service: &str,
    route: Option<&str>,
    range: TimeRange,
    order: RequestOrder,
    limit: usize,
) -> Result<Vec<RequestSpan>, Error> {
    // Over a long window the rollups say where to look: the minutes holding the slowest
    // requests, or the stretch before the end holding the newest failures.
    let rollups = crate::red::use_rollups(engine, range);
    let mut conditions = match order {
        RequestOrder::FailingNewest if rollups => time_conditions(
            "start_time",
            crate::red::newest_failures_window(engine, range, service, route, limit).await?,
        ),
        _ => time_conditions("start_time", range),
    };
    if rollups && order == RequestOrder::Slowest {
        let windows = crate::red::slowest_windows(engine, range, service, route, limit).await?;
        let any = windows
            .into_iter()
            .map(|w| format!("({})", time_conditions("start_time", w).join(" AND ")))
            .collect::<Vec<_>>()
            .join(" OR ");
        conditions.push(if any.is_empty() {
            "false".into()
        } else {
            format!("({any})")
        });
    }
    conditions.push(is_request_sql().into());
    conditions.push(format!("service_name = {}", quote(service)));
    if let Some(route) = route {
        conditions.push(format!("{ROUTE_SQL} = {}", quote(route)));
    }
    let order_by = match order {
        RequestOrder::Slowest => "duration_ns DESC",
        RequestOrder::FailingNewest => {
            conditions.push(is_failure_sql().into());
            "start_time DESC"
        }
    };
    let sql = format!(
        "SELECT trace_id, span_id, name, CAST(start_time AS BIGINT) AS start_ns, duration_ns, status, \
         http_status_code, coalesce(status_message, exception_message, exception_type) AS reason, \
         service_version FROM spans WHERE {} ORDER BY {order_by} LIMIT {limit}",
        conditions.join(" AND ")
    );
    Ok(engine
        .objects(&sql, limit)
        .await?
        .into_iter()
        .map(|row| RequestSpan {
            trace_id: str_of(&row, "trace_id"),
            span_id: str_of(&row, "span_id"),
            name: str_of(&row, "name"),
            start_ns: row.get("start_ns").and_then(Value::as_i64).unwrap_or(0),
            duration_ms: f64_of(&row, "duration_ns").unwrap_or(0.0) / 1e6,
            status: str_of(&row, "status"),
            http_status_code: row.get("http_status_code").and_then(Value::as_i64),
            reason: row
                .get("reason")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            service_version: row
                .get("service_version")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
        .collect())
}

/// A runtime metric over time: one line per attribute set.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricChart {
    /// The metric name, as stored.
    pub name: String,
    /// What the chart shows, in words (`CPU`, `Resident memory`); the name for metrics outside
    /// the catalogue.
    pub title: String,
    /// The unit in words for the caption (`cores`, `bytes`, `count`, `per second`).
    pub caption_unit: String,
    /// The unit the chart's axis formats its values with (`cores`, `By`, `{thread}`, `/s`).
    pub chart_unit: String,
    /// True when the values are a counter's increase per second rather than the reported value.
    pub per_second: bool,
    /// (attributes as text, value per bucket)
    pub lines: Vec<(String, Vec<Option<f64>>)>,
}

/// Lines per chart, so a metric with many attribute sets stays readable.
const MAX_LINES: usize = 6;

/// How one runtime quantity is charted, whichever instrumentation reports it.
struct RuntimeKind {
    /// Names that report it, preferred first: the OpenTelemetry system-metrics
    /// instrumentation's current name, prometheus_client's, then the deprecated
    /// `process.runtime.cpython.*` one (charted only when no other is sent).
    names: &'static [&'static str],
    title: &'static str,
    caption_unit: &'static str,
    chart_unit: &'static str,
    /// A counter, charted as its increase per second.
    rate: bool,
    /// Values are multiplied by this (a share as a percentage).
    scale: f64,
    /// Only the points whose attribute, where they have it, has this value (`type=rss` of the
    /// deprecated memory metric that also reports `vms`).
    only: Option<(&'static str, &'static str)>,
}

/// The runtime metrics the service page recognises by name, in the order it charts them:
/// `opentelemetry-instrumentation-system-metrics` (process.*, cpython.gc.*) and
/// `prometheus_client`'s process and GC collectors.
const RUNTIME: &[RuntimeKind] = &[
    RuntimeKind {
        names: &[
            "process.cpu.time",
            "process_cpu_seconds_total",
            "process.runtime.cpython.cpu_time",
        ],
        title: "CPU",
        caption_unit: "cores",
        chart_unit: "cores",
        rate: true,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &[
            "process.memory.usage",
            "process_resident_memory_bytes",
            "process.runtime.cpython.memory",
        ],
        title: "Resident memory",
        caption_unit: "bytes",
        chart_unit: "By",
        rate: false,
        scale: 1.0,
        only: Some(("type", "rss")),
    },
    RuntimeKind {
        names: &[
            "process.thread.count",
            "process.runtime.cpython.thread_count",
        ],
        title: "Threads",
        caption_unit: "count",
        chart_unit: "{thread}",
        rate: false,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &[
            "process.context_switches",
            "process.runtime.cpython.context_switches",
        ],
        title: "Context switches",
        caption_unit: "per second",
        chart_unit: "/s",
        rate: true,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &["cpython.gc.collections", "python_gc_collections_total"],
        title: "GC collections",
        caption_unit: "per second",
        chart_unit: "/s",
        rate: true,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &["process.open_file_descriptor.count", "process_open_fds"],
        title: "Open file descriptors",
        caption_unit: "count",
        chart_unit: "{file_descriptor}",
        rate: false,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &["process.cpu.utilization"],
        title: "CPU utilization",
        caption_unit: "% of all cores",
        chart_unit: "%",
        rate: false,
        scale: 100.0,
        only: None,
    },
    RuntimeKind {
        names: &["process.memory.virtual", "process_virtual_memory_bytes"],
        title: "Virtual memory",
        caption_unit: "bytes",
        chart_unit: "By",
        rate: false,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &["process.disk.io"],
        title: "Disk I/O",
        caption_unit: "bytes per second",
        chart_unit: "By/s",
        rate: true,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &[
            "cpython.gc.collected_objects",
            "python_gc_objects_collected_total",
        ],
        title: "GC collected objects",
        caption_unit: "per second",
        chart_unit: "/s",
        rate: true,
        scale: 1.0,
        only: None,
    },
    RuntimeKind {
        names: &[
            "cpython.gc.uncollectable_objects",
            "python_gc_objects_uncollectable_total",
        ],
        title: "GC uncollectable objects",
        caption_unit: "per second",
        chart_unit: "/s",
        rate: true,
        scale: 1.0,
        only: None,
    },
];

/// Other metrics the page charts under their own names: queue depths (a worker falling behind).
const QUEUE_METRICS: &str = "name LIKE '%queue%'";

/// The runtime metrics a service sends, one chart per quantity it recognises (the first of
/// its names the service sends) and one per queue metric: gauges and up-down sums as their mean
/// per bucket, counters as their increase per second (from one bucket's last value to the next,
/// a counter reset counting from zero).
pub async fn runtime_metrics(
    engine: &QueryEngine,
    service: &str,
    buckets: Buckets,
) -> Result<Vec<MetricChart>, Error> {
    let mut conditions = time_conditions("time", buckets.range());
    conditions.push(format!("service_name = {}", quote(service)));
    conditions.push("type IN ('gauge', 'sum')".into());
    let known: Vec<String> = RUNTIME
        .iter()
        .flat_map(|k| k.names.iter())
        .map(|n| quote(n))
        .collect();
    conditions.push(format!(
        "(name IN ({}) OR {QUEUE_METRICS})",
        known.join(", ")
    ));
    let sql = format!(
        "SELECT name, max(unit) AS unit, attributes, {bucket} AS bucket, \
         bool_or(coalesce(monotonic, false)) AS counter, \
         avg(value) AS mean, min(value) AS first, max(value) AS last \
         FROM metrics WHERE {filter} GROUP BY name, attributes, bucket ORDER BY name, attributes, bucket",
        bucket = buckets.sql("time"),
        filter = conditions.join(" AND "),
    );
    // name -> (unit, counter, attributes -> per-bucket (mean, first, last))
    type Points = Vec<Option<(f64, f64, f64)>>;
    let mut by_name: BTreeMap<String, (Option<String>, bool, Vec<(String, Points)>)> =
        BTreeMap::new();
    for row in engine.objects(&sql, 1_000_000).await? {
        let Some(i) = buckets.row_index(&row) else {
            continue;
        };
        let (Some(mean), Some(first), Some(last)) = (
            f64_of(&row, "mean"),
            f64_of(&row, "first"),
            f64_of(&row, "last"),
        ) else {
            continue;
        };
        let entry = by_name.entry(str_of(&row, "name")).or_insert_with(|| {
            (
                row.get("unit")
                    .and_then(Value::as_str)
                    .filter(|u| !u.is_empty())
                    .map(str::to_string),
                false,
                Vec::new(),
            )
        });
        entry.1 |= row.get("counter").and_then(Value::as_bool).unwrap_or(false);
        let attributes = str_of(&row, "attributes");
        let at = match entry.2.iter().position(|(a, _)| *a == attributes) {
            Some(at) => at,
            None => {
                entry.2.push((attributes, vec![None; buckets.count]));
                entry.2.len() - 1
            }
        };
        entry.2[at].1[i] = Some((mean, first, last));
    }
    let mut charts = Vec::new();
    for kind in RUNTIME {
        let Some(name) = kind.names.iter().find(|n| by_name.contains_key(**n)) else {
            continue;
        };
        let Some((_, counter, series)) = by_name.get(*name) else {
            continue;
        };
        let rate = kind.rate && *counter;
        let lines = series
            .iter()
            .filter(|(attributes, _)| match kind.only {
                Some((key, value)) => {
                    !has_attribute(attributes, key) || attribute_is(attributes, key, value)
                }
                None => true,
            })
            .take(MAX_LINES)
            .map(|(attributes, points)| {
                (
                    runtime_label(attributes, kind.only),
                    line_values(points, rate, kind.scale, &buckets),
                )
            })
            .collect();
        charts.push(MetricChart {
            name: name.to_string(),
            title: kind.title.to_string(),
            caption_unit: kind.caption_unit.to_string(),
            chart_unit: kind.chart_unit.to_string(),
            per_second: rate,
            lines,
        });
    }
    for (name, (unit, counter, series)) in &by_name {
        if RUNTIME.iter().any(|k| k.names.contains(&name.as_str())) {
            continue;
        }
        let unit = unit.clone().unwrap_or_default();
        charts.push(MetricChart {
            name: name.clone(),
            title: name.clone(),
            caption_unit: if *counter {
                "per second".into()
            } else {
                unit.clone()
            },
            chart_unit: if *counter { "/s".into() } else { unit },
            per_second: *counter,
            lines: series
                .iter()
                .take(MAX_LINES)
                .map(|(attributes, points)| {
                    (
                        attributes_label(attributes),
                        line_values(points, *counter, 1.0, &buckets),
                    )
                })
                .collect(),
        });
    }
    Ok(charts)
}

/// A line's values per bucket: a counter's increase per second, else the mean times `scale`.
fn line_values(
    points: &[Option<(f64, f64, f64)>],
    rate: bool,
    scale: f64,
    buckets: &Buckets,
) -> Vec<Option<f64>> {
    if rate {
        per_second(points, buckets)
    } else {
        points
            .iter()
            .map(|p| p.map(|(mean, _, _)| mean * scale))
            .collect()
    }
}

/// A cumulative counter's increase per second in each bucket: from the last value of the
/// previous bucket with a point to this one's (the first value of the first bucket seen), a
/// drop being a reset that counts from zero.
fn per_second(points: &[Option<(f64, f64, f64)>], buckets: &Buckets) -> Vec<Option<f64>> {
    // (the bucket, its last value) of the latest bucket with a point: a service that exports
    // less often than the buckets are wide leaves buckets between without one, and the
    // increase is spread over all of them.
    let mut previous: Option<(usize, f64)> = None;
    points
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let (_, first, last) = (*point)?;
            let (increase, seconds) = match previous {
                Some((at, before)) => (
                    if last >= before { last - before } else { last },
                    (at + 1..=i).map(|j| buckets.seconds(j)).sum::<f64>(),
                ),
                None => (last - first, buckets.seconds(i)),
            };
            previous = Some((i, last));
            Some(increase / seconds)
        })
        .collect()
}

/// Whether JSON attributes have `key`.
fn has_attribute(json: &str, key: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(json).is_ok_and(|m| m.contains_key(key))
}

/// Whether JSON attributes hold `key` = `value`.
fn attribute_is(json: &str, key: &str, value: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(json)
        .ok()
        .and_then(|m| m.get(key).and_then(Value::as_str).map(|v| v == value))
        .unwrap_or(false)
}

/// A runtime line's label: its attributes, without the one a filter fixed, and GC's generation
/// once (the instrumentation sends it as `cpython.gc.generation` and as `generation`).
fn runtime_label(json: &str, only: Option<(&str, &str)>) -> String {
    let Ok(mut map) = serde_json::from_str::<Map<String, Value>>(json) else {
        return json.to_string();
    };
    if let Some((key, _)) = only {
        map.remove(key);
    }
    if map.contains_key("generation") {
        map.remove("cpython.gc.generation");
    }
    attributes_label(&Value::Object(map).to_string())
}

/// `{"queue":"emails"}` as `queue=emails`; `{}` as `all`.
fn attributes_label(json: &str) -> String {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(json) else {
        return json.to_string();
    };
    if map.is_empty() {
        return "all".into();
    }
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every service that sent spans or logs in a range.
pub async fn service_names(engine: &QueryEngine, range: TimeRange) -> Result<Vec<String>, Error> {
    names_in(engine, range, &[("spans", "start_time"), ("logs", "time")]).await
}

/// Every service that sent logs in a range (cheaper than [`service_names`]: logs are fewer).
pub async fn log_service_names(
    engine: &QueryEngine,
    range: TimeRange,
) -> Result<Vec<String>, Error> {
    names_in(engine, range, &[("logs", "time")]).await
}

async fn names_in(
    engine: &QueryEngine,
    range: TimeRange,
    tables: &[(&str, &str)],
) -> Result<Vec<String>, Error> {
    let mut names = std::collections::BTreeSet::new();
    for (table, column) in tables {
        let filter = where_clause(&time_conditions(column, range));
        let sql = format!("SELECT DISTINCT service_name FROM {table} {filter}");
        for row in engine.objects(&sql, 10_000).await? {
            names.insert(str_of(&row, "service_name"));
        }
    }
    Ok(names.into_iter().collect())
}

/// A span that links to a span of a trace (a consumer pointing at its producer, say).
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingLink {
    /// The linked span, in the trace asked about.
    pub target_span_id: String,
    /// The linking span's trace id.
    pub trace_id: String,
    /// The linking span's id.
    pub span_id: String,
    /// The linking span's name.
    pub name: String,
    /// The service that sent the linking span.
    pub service_name: String,
}

/// Spans whose links point into a trace, looked for within `range` (around the trace).
pub async fn incoming_links(
    engine: &QueryEngine,
    trace_id: &str,
    range: TimeRange,
) -> Result<Vec<IncomingLink>, Error> {
    if !crate::views::is_trace_id(trace_id) {
        return Ok(Vec::new());
    }
    let mut conditions = time_conditions("start_time", range);
    conditions.push("links <> '[]'".into());
    conditions.push(format!("strpos(links, {}) > 0", quote(trace_id)));
    let sql = format!(
        "SELECT trace_id, span_id, name, service_name, links FROM spans WHERE {} LIMIT 1000",
        conditions.join(" AND ")
    );
    let mut out = Vec::new();
    for row in engine.objects(&sql, 1000).await? {
        let Ok(Value::Array(links)) = serde_json::from_str::<Value>(&str_of(&row, "links")) else {
            continue;
        };
        for link in links {
            if link.get("trace_id").and_then(Value::as_str) == Some(trace_id) {
                out.push(IncomingLink {
                    target_span_id: link
                        .get("span_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    trace_id: str_of(&row, "trace_id"),
                    span_id: str_of(&row, "span_id"),
                    name: str_of(&row, "name"),
                    service_name: str_of(&row, "service_name"),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_rate_counts_across_buckets_and_through_a_reset() {
        let b = Buckets::over(0, 3600 * NS);
        assert_eq!(b.step_ns, 60 * NS);
        // One point a bucket (10, 70, then a restart to 5): 60 in the second minute, 5 in the third.
        let points = vec![
            Some((10.0, 10.0, 10.0)),
            Some((70.0, 70.0, 70.0)),
            Some((5.0, 5.0, 5.0)),
            None,
        ];
        let rates = per_second(&points, &b);
        assert_eq!(rates[0], Some(0.0));
        assert_eq!(rates[1], Some(1.0));
        assert_eq!(rates[2], Some(5.0 / 60.0));
        assert_eq!(rates[3], None);
        // Points every other bucket: each increase spreads over the two minutes since the last.
        let sparse = vec![Some((0.0, 0.0, 0.0)), None, Some((120.0, 120.0, 120.0))];
        assert_eq!(per_second(&sparse, &b)[2], Some(1.0));
    }

    #[test]
    fn runtime_lines_are_labelled_without_what_a_filter_fixed_or_twice_named_generations() {
        assert_eq!(
            runtime_label(r#"{"cpython.gc.generation":0,"generation":"0"}"#, None),
            "generation=0"
        );
        assert_eq!(
            runtime_label(r#"{"type":"rss"}"#, Some(("type", "rss"))),
            "all"
        );
        assert!(attribute_is(r#"{"type":"rss"}"#, "type", "rss"));
        assert!(!attribute_is(r#"{"type":"vms"}"#, "type", "rss"));
    }

    #[test]
    fn buckets_pick_a_nice_step_and_cover_the_window() {
        let hour = 3600 * NS;
        let b = Buckets::over(10 * hour + 7 * NS, 11 * hour + 7 * NS);
        assert_eq!(b.step_ns, 60 * NS, "an hour in one-minute buckets");
        assert_eq!(b.start_ns, 10 * hour);
        assert_eq!(b.count, 61);
        assert_eq!(b.index(10 * hour + 61 * NS), Some(1));
        assert_eq!(b.index(10 * hour - 1), None);
        assert_eq!(b.index(12 * hour), None);
        let week = Buckets::over(0, 7 * 24 * hour);
        assert_eq!(week.step_ns, 7200 * NS);
        assert_eq!(week.count, 84);
        assert_eq!(week.times_s()[1], 7200.0);
        // The hour ends 7 s into its 61st minute: that bucket has lasted 7 s so far.
        assert_eq!(b.seconds(0), 60.0);
        assert_eq!(b.seconds(60), 7.0);
        assert_eq!(week.seconds(83), 7200.0, "a window ending on a step");
    }

    #[test]
    fn attribute_labels_read_like_filters() {
        assert_eq!(attributes_label("{}"), "all");
        assert_eq!(
            attributes_label(r#"{"queue":"emails","n":2}"#),
            "n=2, queue=emails",
            "keys in name order, so a line keeps its label"
        );
    }
}

/// A point on a latency chart that opens a trace: an exemplar of the service's latency
/// histogram, or (where it sends none) the slowest request of a bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Exemplar {
    /// When it was recorded, in seconds since the epoch (the chart's x).
    pub t: f64,
    /// Its latency in milliseconds (the chart's y).
    pub ms: f64,
    /// The trace it opens.
    pub trace_id: String,
    /// `metric` (an exemplar the service sent on a histogram) or `span` (the slowest request
    /// of its bucket).
    pub source: &'static str,
}

/// Exemplars kept per bucket, so a busy chart stays readable.
const EXEMPLARS_PER_BUCKET: usize = 2;

/// The latency chart's exemplars over `buckets`: those the service's latency histograms carry
/// (with a trace id, in seconds or milliseconds), the slowest in each bucket; where it sends
/// none, the slowest request of each bucket.
pub async fn exemplars(
    engine: &QueryEngine,
    service: &str,
    buckets: Buckets,
) -> Result<Vec<Exemplar>, Error> {
    let mut conditions = time_conditions("time", buckets.range());
    conditions.push(format!("service_name = {}", quote(service)));
    conditions.push("type IN ('histogram', 'exponential_histogram')".into());
    conditions.push("exemplars IS NOT NULL".into());
    conditions.push("unit IN ('s', 'ms')".into());
    let sql = format!(
        "SELECT unit, exemplars FROM metrics {} LIMIT 20000",
        where_clause(&conditions)
    );
    let mut per_bucket: Vec<Vec<Exemplar>> = vec![Vec::new(); buckets.count];
    for row in engine.objects(&sql, 20_000).await? {
        let scale_ms = if str_of(&row, "unit") == "s" {
            1e3
        } else {
            1.0
        };
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(&str_of(&row, "exemplars"))
        else {
            continue;
        };
        for item in items {
            let trace_id = item.get("trace_id").and_then(Value::as_str).unwrap_or("");
            let (Some(time_ns), Some(value)) = (
                item.get("time_ns").and_then(Value::as_i64),
                item.get("value").and_then(Value::as_f64),
            ) else {
                continue;
            };
            if trace_id.len() != 32 || trace_id.bytes().all(|b| b == b'0') {
                continue;
            }
            let Some(i) = buckets.index(time_ns) else {
                continue;
            };
            per_bucket[i].push(Exemplar {
                t: time_ns as f64 / NS as f64,
                ms: value * scale_ms,
                trace_id: trace_id.to_string(),
                source: "metric",
            });
        }
    }
    if per_bucket.iter().all(Vec::is_empty) {
        return slowest_per_bucket(engine, service, buckets).await;
    }
    Ok(per_bucket
        .into_iter()
        .flat_map(|mut bucket| {
            bucket.sort_by(|a, b| b.ms.total_cmp(&a.ms));
            bucket.dedup_by(|a, b| a.trace_id == b.trace_id);
            bucket.truncate(EXEMPLARS_PER_BUCKET);
            bucket
        })
        .collect())
}

/// The slowest request of each bucket, as exemplars from spans.
async fn slowest_per_bucket(
    engine: &QueryEngine,
    service: &str,
    buckets: Buckets,
) -> Result<Vec<Exemplar>, Error> {
    let mut conditions = time_conditions("start_time", buckets.range());
    conditions.push(format!("service_name = {}", quote(service)));
    conditions.push(is_request_sql().to_string());
    let sql = format!(
        "SELECT bucket, trace_id, start_ns, duration_ns FROM (\
           SELECT {bucket} AS bucket, trace_id, CAST(start_time AS BIGINT) AS start_ns, duration_ns, \
           row_number() OVER (PARTITION BY {bucket} ORDER BY duration_ns DESC, trace_id) AS rank \
           FROM spans {filter}) WHERE rank = 1 ORDER BY bucket",
        bucket = buckets.sql("start_time"),
        filter = where_clause(&conditions),
    );
    Ok(engine
        .objects(&sql, buckets.count + 1)
        .await?
        .iter()
        .filter_map(|row| {
            Some(Exemplar {
                t: row.get("start_ns")?.as_i64()? as f64 / NS as f64,
                ms: row.get("duration_ns")?.as_i64()? as f64 / 1e6,
                trace_id: str_of(row, "trace_id"),
                source: "span",
            })
        })
        .collect())
}
