//! What the monitor reads: request counts, failures and good requests per service, route and
//! method over several windows at once, and latency sketches, all from `span_rollups` through
//! the query crate (as the monitor's query class, so pages and the API keep their share).
//!
//! Windows are whole rollup minutes: a window of length `l` ending `offset` before now holds
//! the rows whose minute starts in `[now - offset - l, now - offset]`, so the current minute
//! counts from its first request. One query answers every window of every SLO and rule of a
//! cycle with `FILTER` clauses, so a cycle costs one scan of the longest window.
//!
//! Latency SLIs are exact: rollups count, for each configured threshold, the requests that did
//! not fail and took at most that long. Rows made before a threshold was configured do not
//! list it; their good requests are estimated from the latency sketch (within its 1%) and
//! reported as estimated, never passed off as exact.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use sightline_model::TimeRange;
use sightline_model::rollup::RollupColumns;
use sightline_model::sketch::LatencySketch;
use sightline_query::QueryEngine;
use sightline_query::sql::{quote, time_literal};

use crate::error::Error;

const NS_PER_MINUTE: i64 = 60_000_000_000;

/// A window: `length_ns` long, ending `offset_ns` before now (0 for "the last …").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Window {
    /// How long it is.
    pub length_ns: i64,
    /// How long before now it ends (a baseline's distance).
    pub offset_ns: i64,
}

impl Window {
    /// The last `length_ns`.
    pub fn last(length_ns: i64) -> Self {
        Self {
            length_ns,
            offset_ns: 0,
        }
    }

    /// The rollup minutes it holds at `now_ns`, as a half-open range of minute starts.
    pub fn minutes(&self, now_ns: i64) -> TimeRange {
        let end = now_ns - self.offset_ns;
        TimeRange::new(Some(end - self.length_ns), Some(end + 1))
    }
}

/// A service's route (and method), as rollups group requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    /// `service_name`.
    pub service: String,
    /// `route`.
    pub route: String,
    /// `http_method`, when the spans carry one.
    pub method: Option<String>,
}

impl Group {
    /// Whether this group is one a selection (service, and optionally route and method) means.
    pub fn matches(&self, service: &str, route: Option<&str>, method: Option<&str>) -> bool {
        self.service == service
            && route.is_none_or(|r| r == self.route)
            && method.is_none_or(|m| {
                self.method
                    .as_deref()
                    .is_some_and(|own| own.eq_ignore_ascii_case(m))
            })
    }
}

/// Requests of one group in one window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowCounts {
    /// Requests.
    pub requests: i64,
    /// Failed requests.
    pub errors: i64,
    /// Per threshold asked for (in the order asked): good requests counted exactly, and
    /// requests in rows that did not count that threshold.
    pub within: Vec<Within>,
}

/// Good requests within one latency threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Within {
    /// Requests that did not fail and took at most the threshold, counted exactly.
    pub good: i64,
    /// Requests of rows that did not count the threshold (made before it was configured).
    pub uncounted: i64,
    /// Of those, the good ones as the latency sketch estimates them.
    pub estimated_good: i64,
}

impl WindowCounts {
    fn add(&mut self, other: &WindowCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.within.len() < other.within.len() {
            self.within.resize(other.within.len(), Within::default());
        }
        for (mine, theirs) in self.within.iter_mut().zip(&other.within) {
            mine.good += theirs.good;
            mine.uncounted += theirs.uncounted;
            mine.estimated_good += theirs.estimated_good;
        }
    }
}

/// Counts of every group in every window asked for.
#[derive(Debug, Clone, Default)]
pub struct CountTable {
    /// The windows, in the order asked.
    pub windows: Vec<Window>,
    /// The thresholds (ns), in the order asked.
    pub thresholds: Vec<i64>,
    /// Per group, one [`WindowCounts`] per window.
    pub groups: HashMap<Group, Vec<WindowCounts>>,
}

impl CountTable {
    /// The counts of window `w` summed over the groups a selection means.
    pub fn sum(
        &self,
        w: usize,
        service: &str,
        route: Option<&str>,
        method: Option<&str>,
    ) -> WindowCounts {
        let mut out = WindowCounts {
            within: vec![Within::default(); self.thresholds.len()],
            ..WindowCounts::default()
        };
        for (group, counts) in &self.groups {
            if group.matches(service, route, method)
                && let Some(c) = counts.get(w)
            {
                out.add(c);
            }
        }
        out
    }

    /// The index of `window`, if it was asked for.
    pub fn window_index(&self, window: Window) -> Option<usize> {
        self.windows.iter().position(|w| *w == window)
    }

    /// The index of `threshold_ns`, if it was asked for.
    pub fn threshold_index(&self, threshold_ns: i64) -> Option<usize> {
        self.thresholds.iter().position(|t| *t == threshold_ns)
    }

    /// The services that had requests in any window.
    pub fn services(&self) -> Vec<String> {
        let mut out: Vec<String> = self.groups.keys().map(|g| g.service.clone()).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Where `threshold_ns` stands in a rollup row's thresholds (NULL when the row did not count it).
fn threshold_position_sql(threshold_ns: i64) -> String {
    format!("array_position(latency_thresholds_ns, CAST({threshold_ns} AS BIGINT))")
}

/// A rollup row's good requests within `threshold_ns` (NULL when it did not count them).
fn good_within_sql(threshold_ns: i64) -> String {
    format!(
        "CAST(array_element(good_within_counts, CAST({} AS BIGINT)) AS BIGINT)",
        threshold_position_sql(threshold_ns)
    )
}

/// Whether a rollup row did not count `threshold_ns`.
fn uncounted_sql(threshold_ns: i64) -> String {
    format!("{} IS NULL", threshold_position_sql(threshold_ns))
}

fn int64(batch: &RecordBatch, column: usize, row: usize) -> i64 {
    let array = batch.column(column);
    array
        .as_primitive_opt::<Int64Type>()
        .filter(|a| a.is_valid(row))
        .map_or(0, |a| a.value(row))
}

fn text(batch: &RecordBatch, column: usize, row: usize) -> Option<String> {
    let array = batch.column(column);
    if array.is_null(row) {
        return None;
    }
    if let Some(a) = array.as_string_opt::<i32>() {
        return Some(a.value(row).to_string());
    }
    array.as_string_view_opt().map(|a| a.value(row).to_string())
}

fn conditions(now_ns: i64, windows: &[Window], services: Option<&[String]>) -> Vec<String> {
    let start = windows
        .iter()
        .map(|w| w.minutes(now_ns).start_ns.unwrap_or(0))
        .min()
        .unwrap_or(now_ns);
    let end = windows
        .iter()
        .map(|w| w.minutes(now_ns).end_ns.unwrap_or(now_ns))
        .max()
        .unwrap_or(now_ns);
    let mut out = vec![
        format!("time >= {}", time_literal(start)),
        format!("time < {}", time_literal(end)),
    ];
    if let Some(services) = services {
        let list: Vec<String> = services.iter().map(|s| quote(s)).collect();
        out.push(if list.is_empty() {
            "FALSE".into()
        } else {
            format!("service_name IN ({})", list.join(", "))
        });
    }
    out
}

fn in_window(now_ns: i64, window: &Window) -> String {
    let range = window.minutes(now_ns);
    format!(
        "time >= {} AND time < {}",
        time_literal(range.start_ns.unwrap_or(0)),
        time_literal(range.end_ns.unwrap_or(now_ns))
    )
}

/// Requests, failures and good requests within `thresholds_ns` of every service, route and
/// method (of `services`, or all) in every window, at `now_ns`.
pub async fn counts(
    engine: &QueryEngine,
    now_ns: i64,
    windows: &[Window],
    thresholds_ns: &[i64],
    services: Option<&[String]>,
) -> Result<CountTable, Error> {
    let mut table = CountTable {
        windows: windows.to_vec(),
        thresholds: thresholds_ns.to_vec(),
        groups: HashMap::new(),
    };
    if windows.is_empty() {
        return Ok(table);
    }
    let mut columns = vec![
        "service_name".to_string(),
        "route".into(),
        "http_method".into(),
    ];
    for (i, window) in windows.iter().enumerate() {
        let filter = in_window(now_ns, window);
        columns.push(format!("sum(requests) FILTER (WHERE {filter}) AS r{i}"));
        columns.push(format!("sum(errors) FILTER (WHERE {filter}) AS e{i}"));
        for (j, threshold) in thresholds_ns.iter().enumerate() {
            columns.push(format!(
                "sum({}) FILTER (WHERE {filter}) AS g{i}_{j}",
                good_within_sql(*threshold)
            ));
            columns.push(format!(
                "sum(CASE WHEN {} THEN requests ELSE 0 END) FILTER (WHERE {filter}) AS u{i}_{j}",
                uncounted_sql(*threshold)
            ));
        }
    }
    let sql = format!(
        "SELECT {} FROM span_rollups WHERE {} GROUP BY 1, 2, 3",
        columns.join(", "),
        conditions(now_ns, windows, services).join(" AND ")
    );
    let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
    let per_window = 2 + 2 * thresholds_ns.len();
    let mut uncounted = false;
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let group = Group {
                service: text(batch, 0, row).unwrap_or_default(),
                route: text(batch, 1, row).unwrap_or_default(),
                method: text(batch, 2, row),
            };
            let counts: Vec<WindowCounts> = (0..windows.len())
                .map(|i| {
                    let base = 3 + i * per_window;
                    WindowCounts {
                        requests: int64(batch, base, row),
                        errors: int64(batch, base + 1, row),
                        within: (0..thresholds_ns.len())
                            .map(|j| {
                                let u = int64(batch, base + 3 + 2 * j, row);
                                uncounted |= u > 0;
                                Within {
                                    good: int64(batch, base + 2 + 2 * j, row),
                                    uncounted: u,
                                    estimated_good: 0,
                                }
                            })
                            .collect(),
                    }
                })
                .collect();
            table.groups.insert(group, counts);
        }
    }
    if uncounted {
        estimate_uncounted(engine, now_ns, &mut table, services).await?;
    }
    Ok(table)
}

/// Fills in `estimated_good` for requests of rows that did not count a threshold, from their
/// latency sketches (scaled by their share of requests that did not fail).
async fn estimate_uncounted(
    engine: &QueryEngine,
    now_ns: i64,
    table: &mut CountTable,
    services: Option<&[String]>,
) -> Result<(), Error> {
    let missing: Vec<String> = table.thresholds.iter().map(|t| uncounted_sql(*t)).collect();
    let mut where_ = conditions(now_ns, &table.windows, services);
    where_.push(format!("({})", missing.join(" OR ")));
    let sql = format!("SELECT * FROM span_rollups WHERE {}", where_.join(" AND "));
    let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
    let ranges: Vec<TimeRange> = table.windows.iter().map(|w| w.minutes(now_ns)).collect();
    for batch in &batches {
        let rows = RollupColumns::of(batch).map_err(|e| Error::Internal {
            message: format!("rollup rows could not be read: {e}"),
        })?;
        for row in 0..batch.num_rows() {
            let group = Group {
                service: rows.service.value(row).to_string(),
                route: rows.route.value(row).to_string(),
                method: rows.method_of(row).map(str::to_string),
            };
            let Some(counts) = table.groups.get_mut(&group) else {
                continue;
            };
            let listed = rows.good_within(row);
            let mut sketch = LatencySketch::default();
            rows.add_sketch(row, &mut sketch);
            let requests = rows.requests.value(row);
            let ok_share = if requests > 0 {
                1.0 - rows.errors.value(row) as f64 / requests as f64
            } else {
                0.0
            };
            let minute = rows.time.value(row);
            for (i, range) in ranges.iter().enumerate() {
                if !range.contains(minute) {
                    continue;
                }
                for (j, threshold) in table.thresholds.iter().enumerate() {
                    if listed.iter().any(|(t, _)| t == threshold) {
                        continue;
                    }
                    let fast = sketch.count_at_most(*threshold) as f64;
                    counts[i].within[j].estimated_good += (fast * ok_share).round() as i64;
                }
            }
        }
    }
    Ok(())
}

/// Latency sketches of every service, route and method in every window.
pub async fn sketches(
    engine: &QueryEngine,
    now_ns: i64,
    windows: &[Window],
    services: Option<&[String]>,
) -> Result<HashMap<Group, Vec<LatencySketch>>, Error> {
    let mut out: HashMap<Group, Vec<LatencySketch>> = HashMap::new();
    if windows.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT * FROM span_rollups WHERE {}",
        conditions(now_ns, windows, services).join(" AND ")
    );
    let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
    let ranges: Vec<TimeRange> = windows.iter().map(|w| w.minutes(now_ns)).collect();
    for batch in &batches {
        let rows = RollupColumns::of(batch).map_err(|e| Error::Internal {
            message: format!("rollup rows could not be read: {e}"),
        })?;
        for row in 0..batch.num_rows() {
            let minute = rows.time.value(row);
            let group = Group {
                service: rows.service.value(row).to_string(),
                route: rows.route.value(row).to_string(),
                method: rows.method_of(row).map(str::to_string),
            };
            let sketches = out
                .entry(group)
                .or_insert_with(|| vec![LatencySketch::default(); windows.len()]);
            for (i, range) in ranges.iter().enumerate() {
                if range.contains(minute) {
                    rows.add_sketch(row, &mut sketches[i]);
                }
            }
        }
    }
    Ok(out)
}

/// Rounds down to the minute.
pub fn floor_minute(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_MINUTE) * NS_PER_MINUTE
}

/// Good and total requests of one selection per bucket: for an SLO's charts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Bucket starts (ns).
    pub starts_ns: Vec<i64>,
    /// Requests per bucket.
    pub total: Vec<i64>,
    /// Good requests per bucket (for latency, rows made before the threshold was configured
    /// count none as good: the charts show what was counted exactly).
    pub good: Vec<i64>,
}

/// An SLO selection's good and total requests in `buckets` equal buckets over
/// `[start_ns, end_ns)`. `threshold_ns`: for latency SLOs, good means within it.
#[allow(clippy::too_many_arguments)]
pub async fn series(
    engine: &QueryEngine,
    start_ns: i64,
    end_ns: i64,
    buckets: usize,
    service: &str,
    route: Option<&str>,
    method: Option<&str>,
    threshold_ns: Option<i64>,
) -> Result<Series, Error> {
    let buckets = buckets.max(1);
    let width = ((end_ns - start_ns) / buckets as i64).max(NS_PER_MINUTE);
    let mut conditions = vec![
        format!("time >= {}", time_literal(start_ns)),
        format!("time < {}", time_literal(end_ns)),
        format!("service_name = {}", quote(service)),
    ];
    if let Some(route) = route {
        conditions.push(format!("route = {}", quote(route)));
    }
    if let Some(method) = method {
        conditions.push(format!(
            "upper(http_method) = {}",
            quote(&method.to_ascii_uppercase())
        ));
    }
    let good = match threshold_ns {
        Some(t) => format!("sum(coalesce({}, 0))", good_within_sql(t)),
        None => "sum(requests - errors)".into(),
    };
    let sql = format!(
        "SELECT CAST((CAST(time AS BIGINT) - {start_ns}) / {width} AS BIGINT) AS bucket, \
         sum(requests) AS total, {good} AS good FROM span_rollups WHERE {} GROUP BY 1",
        conditions.join(" AND ")
    );
    let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
    let n = ((end_ns - start_ns + width - 1) / width).max(1) as usize;
    let mut out = Series {
        starts_ns: (0..n).map(|i| start_ns + i as i64 * width).collect(),
        total: vec![0; n],
        good: vec![0; n],
    };
    for batch in &batches {
        for row in 0..batch.num_rows() {
            let bucket = int64(batch, 0, row);
            if let Ok(i) = usize::try_from(bucket)
                && i < n
            {
                out.total[i] += int64(batch, 1, row);
                out.good[i] += int64(batch, 2, row);
            }
        }
    }
    Ok(out)
}
