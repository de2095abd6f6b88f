//! Requests, errors and latency of long windows from `span_rollups`: whole minutes from the
//! rollups, the partial minutes at the window's edges from `spans`, both folded into the same
//! latency sketches in Rust. A day of the demo shop is about 30,000 rollup rows against a
//! million spans.

use std::collections::HashMap;
use std::hash::Hash;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use sightline_model::TimeRange;
use sightline_model::request::{ROUTE_SQL, is_failure_sql, is_request_sql};
use sightline_model::rollup::{RequestTotals, RollupColumns};
use sightline_model::sketch::bin_sql;

use crate::engine::QueryEngine;
use crate::error::Error;
use crate::sql::{quote, time_conditions, where_clause};

const NS_PER_MINUTE: i64 = 60_000_000_000;

/// Windows at least this long read rollups (shorter ones are cheap to read from `spans`).
pub const MIN_ROLLUP_WINDOW_NS: i64 = 30 * NS_PER_MINUTE;

/// Whether a window should be answered from rollups.
pub fn use_rollups(engine: &QueryEngine, range: TimeRange) -> bool {
    let long = match (range.start_ns, range.end_ns) {
        (Some(start), Some(end)) => end - start >= MIN_ROLLUP_WINDOW_NS,
        _ => true,
    };
    // Over sampled hours `spans` holds a sample; rollups count every span, so they answer there
    // whatever the window's length.
    let sampled = engine
        .sampled_before_ns()
        .is_some_and(|before| range.start_ns.is_none_or(|start| start < before));
    (long || sampled) && engine.rollups_complete()
}

/// A service's route (or task), as rollups group requests.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupName {
    /// The service that served the requests.
    pub service_name: String,
    /// The HTTP method, when the spans carry one (tasks do not).
    pub http_method: Option<String>,
    /// The route ([`sightline_model::request::route`]): `http_route`, else the span name.
    pub route: String,
}

/// Numbers the groups a fold meets, so that a row costs a lookup and no allocation.
#[derive(Default)]
struct Groups {
    ids: HashMap<String, usize>,
    names: Vec<GroupName>,
    key: String,
}

impl Groups {
    fn id(&mut self, service_name: &str, http_method: Option<&str>, route: &str) -> usize {
        self.key.clear();
        self.key.push_str(service_name);
        self.key.push('\u{1}');
        if let Some(method) = http_method {
            self.key.push('\u{0}');
            self.key.push_str(method);
        }
        self.key.push('\u{1}');
        self.key.push_str(route);
        if let Some(id) = self.ids.get(self.key.as_str()) {
            return *id;
        }
        let id = self.names.len();
        self.ids.insert(self.key.clone(), id);
        self.names.push(GroupName {
            service_name: service_name.to_string(),
            http_method: http_method.map(str::to_string),
            route: route.to_string(),
        });
        id
    }
}

fn floor_minute(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_MINUTE) * NS_PER_MINUTE
}

fn ceil_minute(ns: i64) -> i64 {
    -floor_minute(-ns)
}

/// Request totals over `range` (one service when given), grouped by what `key` makes of each
/// group's id and minute (`None` skips it); the names of the ids come back beside the totals.
/// Requests and failures are as [`sightline_model::request`] defines them.
pub async fn totals_by<K, F>(
    engine: &QueryEngine,
    range: TimeRange,
    service: Option<&str>,
    mut key: F,
) -> Result<(HashMap<K, RequestTotals>, Vec<GroupName>), Error>
where
    K: Eq + Hash,
    F: FnMut(usize, i64) -> Option<K>,
{
    let mut groups = Groups::default();
    let (whole, edges) = split_minutes(range);
    let service_condition = service.map(|s| format!("service_name = {}", quote(s)));

    let mut out: HashMap<K, RequestTotals> = HashMap::new();
    if let Some(whole) = whole {
        let mut conditions = time_conditions("time", whole);
        conditions.extend(service_condition.clone());
        let sql = format!("SELECT * FROM span_rollups {}", where_clause(&conditions));
        let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
        for batch in &batches {
            fold_rollups(batch, &mut groups, &mut key, &mut out)?;
        }
    }
    for edge in edges {
        let mut conditions = time_conditions("start_time", edge);
        conditions.push(is_request_sql().into());
        conditions.extend(service_condition.clone());
        let sql = format!(
            "SELECT service_name, http_method, {ROUTE_SQL} AS route, \
             CAST(date_bin(INTERVAL '60 seconds', start_time, TIMESTAMP '1970-01-01T00:00:00Z') AS BIGINT) AS minute, \
             {bin} AS bin, count(*) AS requests, \
             sum(CASE WHEN {failed} THEN 1 ELSE 0 END) AS errors, \
             sum(duration_ns) AS total, min(duration_ns) AS least, max(duration_ns) AS most \
             FROM spans WHERE {filter} GROUP BY 1, 2, 3, 4, 5",
            bin = bin_sql("duration_ns"),
            failed = is_failure_sql(),
            filter = conditions.join(" AND "),
        );
        let (_, batches, _) = engine.collect(&sql, usize::MAX).await?;
        for batch in &batches {
            fold_edge(batch, &mut groups, &mut key, &mut out)?;
        }
    }
    Ok((out, groups.names))
}

/// A window as the whole minutes inside it (rollup rows; `None` when there are none) and the
/// partial minutes at its edges (read from `spans`).
pub fn split_minutes(range: TimeRange) -> (Option<TimeRange>, Vec<TimeRange>) {
    let whole = TimeRange::new(
        range.start_ns.map(ceil_minute),
        range.end_ns.map(floor_minute),
    );
    let mut edges = Vec::new();
    if let (Some(start), Some(first)) = (range.start_ns, whole.start_ns)
        && start < first
    {
        edges.push(TimeRange::new(
            Some(start),
            Some(first.min(range.end_ns.unwrap_or(first))),
        ));
    }
    if let (Some(end), Some(last)) = (range.end_ns, whole.end_ns)
        && last < end
    {
        let from = last.max(range.start_ns.unwrap_or(last));
        if edges.last().is_none_or(|e| e.end_ns != Some(end)) && from < end {
            edges.push(TimeRange::new(Some(from), Some(end)));
        }
    }
    let empty = matches!((whole.start_ns, whole.end_ns), (Some(a), Some(b)) if a >= b);
    ((!empty).then_some(whole), edges)
}

/// The windows in which the `limit` slowest requests of a service lie: the minutes of the
/// `limit` rollup groups with the longest single request, and the edge minutes. (Any request
/// outside them is beaten by the slowest request of each of those groups.) Only rollups of
/// minutes whose spans are still stored count: rollups may be kept longer than spans.
pub async fn slowest_windows(
    engine: &QueryEngine,
    range: TimeRange,
    service: &str,
    route: Option<&str>,
    limit: usize,
) -> Result<Vec<TimeRange>, Error> {
    let (whole, mut windows) = split_minutes(range);
    let Some(oldest) = engine.oldest_span_ns() else {
        return Ok(Vec::new());
    };
    let kept = TimeRange::new(Some(floor_minute(oldest)), None);
    if let Some(whole) = whole.map(|w| w.intersect(&kept)) {
        let mut conditions = time_conditions("time", whole);
        conditions.push(format!("service_name = {}", quote(service)));
        conditions.extend(route.map(|r| format!("route = {}", quote(r))));
        let sql = format!(
            "SELECT CAST(time AS BIGINT) AS minute FROM span_rollups WHERE {} \
             ORDER BY duration_max_ns DESC LIMIT {limit}",
            conditions.join(" AND ")
        );
        let (_, batches, _) = engine.collect(&sql, limit).await?;
        let mut minutes: Vec<i64> = minutes_of(&batches)?;
        minutes.sort_unstable();
        minutes.dedup();
        windows.extend(
            minutes
                .into_iter()
                .map(|m| TimeRange::new(Some(m), Some(m + NS_PER_MINUTE))),
        );
    }
    Ok(windows)
}

/// Where the `limit` newest failed requests of a service lie: from the newest minute whose
/// rollups, counted back from the window's end, hold `limit` failures, to the end (the whole
/// window when they hold fewer).
pub async fn newest_failures_window(
    engine: &QueryEngine,
    range: TimeRange,
    service: &str,
    route: Option<&str>,
    limit: usize,
) -> Result<TimeRange, Error> {
    let (Some(whole), _) = split_minutes(range) else {
        return Ok(range);
    };
    let mut conditions = time_conditions("time", whole);
    conditions.push(format!("service_name = {}", quote(service)));
    conditions.extend(route.map(|r| format!("route = {}", quote(r))));
    conditions.push("errors > 0".into());
    let sql = format!(
        "SELECT CAST(time AS BIGINT) AS minute, sum(errors) AS errors FROM span_rollups WHERE {} \
         GROUP BY 1 ORDER BY 1 DESC LIMIT {limit}",
        conditions.join(" AND ")
    );
    let (_, batches, _) = engine.collect(&sql, limit).await?;
    let mut seen = 0i64;
    for batch in &batches {
        let minutes = batch.column(0).as_primitive_opt::<Int64Type>();
        let errors = batch.column(1).as_primitive_opt::<Int64Type>();
        let (Some(minutes), Some(errors)) = (minutes, errors) else {
            return Err(Error::Internal {
                message: "rollup failure counts are not integers".into(),
            });
        };
        for row in 0..batch.num_rows() {
            seen += errors.value(row);
            if seen >= limit as i64 {
                let from = minutes.value(row);
                return Ok(TimeRange::new(
                    Some(range.start_ns.map_or(from, |s| s.max(from))),
                    range.end_ns,
                ));
            }
        }
    }
    Ok(range)
}

fn minutes_of(batches: &[RecordBatch]) -> Result<Vec<i64>, Error> {
    let mut out = Vec::new();
    for batch in batches {
        let minutes = batch
            .column(0)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::Internal {
                message: "rollup minutes are not integers".into(),
            })?;
        out.extend(minutes.values().iter().copied());
    }
    Ok(out)
}

fn fold_rollups<K: Eq + Hash>(
    batch: &RecordBatch,
    groups: &mut Groups,
    key: &mut impl FnMut(usize, i64) -> Option<K>,
    out: &mut HashMap<K, RequestTotals>,
) -> Result<(), Error> {
    let rows = RollupColumns::of(batch).map_err(internal)?;
    for row in 0..batch.num_rows() {
        let id = groups.id(
            rows.service.value(row),
            rows.method_of(row),
            rows.route.value(row),
        );
        let Some(k) = key(id, rows.time.value(row)) else {
            continue;
        };
        out.entry(k).or_default().add_rollup_row(&rows, row);
    }
    Ok(())
}

fn fold_edge<K: Eq + Hash>(
    batch: &RecordBatch,
    groups: &mut Groups,
    key: &mut impl FnMut(usize, i64) -> Option<K>,
    out: &mut HashMap<K, RequestTotals>,
) -> Result<(), Error> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| Error::Internal {
            message: format!("edge rows lack column {name}"),
        })
    };
    let text = |name: &str| {
        column(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| Error::Internal {
                message: format!("edge column {name} is not text"),
            })
    };
    let int = |name: &str| {
        column(name)?
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| Error::Internal {
                message: format!("edge column {name} is not a 64-bit integer"),
            })
    };
    let (service, method, route) = (text("service_name")?, text("http_method")?, text("route")?);
    let (minute, requests, errors) = (int("minute")?, int("requests")?, int("errors")?);
    let (total, least, most) = (int("total")?, int("least")?, int("most")?);
    let bin = column("bin")?
        .as_primitive_opt::<arrow::datatypes::Int32Type>()
        .ok_or_else(|| Error::Internal {
            message: "edge column bin is not a 32-bit integer".into(),
        })?;
    for row in 0..batch.num_rows() {
        let id = groups.id(
            service.value(row),
            method.is_valid(row).then(|| method.value(row)),
            route.value(row),
        );
        let Some(k) = key(id, minute.value(row)) else {
            continue;
        };
        let totals = out.entry(k).or_default();
        totals.requests += requests.value(row);
        totals.errors += errors.value(row);
        totals.duration_sum_ns = totals.duration_sum_ns.saturating_add(total.value(row));
        totals.sketch.add_bin(
            bin.value(row),
            requests.value(row),
            least.value(row),
            most.value(row),
        );
    }
    Ok(())
}

fn internal(e: arrow::error::ArrowError) -> Error {
    Error::Internal {
        message: format!("span rollups could not be read: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_splits_into_whole_minutes_and_its_edges() {
        let m = NS_PER_MINUTE;
        let (whole, edges) = split_minutes(TimeRange::new(Some(10 * m + 5), Some(20 * m + 7)));
        assert_eq!(whole, Some(TimeRange::new(Some(11 * m), Some(20 * m))));
        assert_eq!(
            edges,
            vec![
                TimeRange::new(Some(10 * m + 5), Some(11 * m)),
                TimeRange::new(Some(20 * m), Some(20 * m + 7)),
            ]
        );
        let (whole, edges) = split_minutes(TimeRange::new(Some(10 * m), Some(20 * m)));
        assert_eq!(
            (whole.is_some(), edges.len()),
            (true, 0),
            "aligned: no edges"
        );
        let inside = TimeRange::new(Some(10 * m + 5), Some(10 * m + 9));
        assert_eq!(
            split_minutes(inside),
            (None, vec![inside]),
            "within one minute"
        );
        let across = TimeRange::new(Some(10 * m + 5), Some(11 * m + 9));
        let (whole, edges) = split_minutes(across);
        assert_eq!(whole, None);
        assert_eq!(edges.len(), 2);
        let (whole, edges) = split_minutes(TimeRange::new(Some(10 * m + 5), None));
        assert_eq!(whole, Some(TimeRange::new(Some(11 * m), None)));
        assert_eq!(edges, vec![TimeRange::new(Some(10 * m + 5), Some(11 * m))]);
    }

    #[test]
    fn minutes_round_toward_the_inside_of_a_window() {
        assert_eq!(floor_minute(NS_PER_MINUTE + 1), NS_PER_MINUTE);
        assert_eq!(ceil_minute(NS_PER_MINUTE + 1), 2 * NS_PER_MINUTE);
        assert_eq!(ceil_minute(NS_PER_MINUTE), NS_PER_MINUTE);
        assert_eq!(floor_minute(-1), -NS_PER_MINUTE);
    }
}
