//! Span rollups: per minute and per service, version, environment, kind and route, the requests
//! (server and consumer spans), the failed ones (status error or HTTP 5xx), the time spent and a
//! latency sketch. The store derives them from spans as the spans enter its buffer (and again
//! from spans replayed from the log), writes them beside the span segments in the same catalog
//! transaction, and merges them when it compacts; the incident pages read them instead of
//! scanning every span of a long window.
//!
//! The sketch is DDSketch's logarithmic mapping at 1% relative accuracy: a duration `d` lands
//! in bin `ceil(ln d / ln γ)` with `γ = 1.01 / 0.99`, and a bin stands for `2γ^i / (γ + 1)`, so
//! every percentile read back is within 1% of a duration that was recorded. The bins are
//! stored as two Parquet list columns (bin, count) rather than an opaque blob, so that they stay
//! readable with SQL and merge by adding counts.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Builder, Int64Array, Int64Builder, ListBuilder, RecordBatch,
    StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Int32Type, Int64Type, TimestampNanosecondType};
use arrow::error::ArrowError;
use sightline_model::schema::span_rollups_schema;

use crate::error::Result;

/// Relative accuracy of the latency sketch.
pub const RELATIVE_ACCURACY: f64 = 0.01;
const NS_PER_MINUTE: i64 = 60_000_000_000;

fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

fn ln_gamma() -> f64 {
    gamma().ln()
}

/// The sketch bin of a duration (durations under a nanosecond count as one).
pub fn bin_of(duration_ns: i64) -> i32 {
    ((duration_ns.max(1) as f64).ln() / ln_gamma()).ceil() as i32
}

/// The same mapping as SQL over a nanosecond column, for rows read straight from `spans`.
/// DataFusion's `ln` is Rust's, and the divisor is printed exactly, so both give equal bins.
pub fn bin_sql(column: &str) -> String {
    format!(
        "CAST(ceil(ln(CAST(greatest({column}, 1) AS DOUBLE)) / {:?}) AS INT)",
        ln_gamma()
    )
}

/// The duration a bin stands for, in nanoseconds.
pub fn bin_value(bin: i32) -> f64 {
    let g = gamma();
    2.0 * g.powi(bin) / (g + 1.0)
}

/// A mergeable latency sketch: counts per logarithmic bin (held densely from the lowest bin
/// seen, as DDSketch's dense store does), with the exact minimum and maximum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySketch {
    /// The bin of `counts[0]`.
    offset: i32,
    counts: Vec<i64>,
    count: i64,
    min_ns: i64,
    max_ns: i64,
}

impl LatencySketch {
    pub fn add(&mut self, duration_ns: i64) {
        self.add_bin(bin_of(duration_ns), 1, duration_ns, duration_ns);
    }

    fn add_to_bin(&mut self, bin: i32, count: i64) {
        if self.counts.is_empty() {
            self.offset = bin;
            self.counts.push(count);
            return;
        }
        if bin < self.offset {
            let grow = (self.offset - bin) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = bin;
        }
        let at = (bin - self.offset) as usize;
        if at >= self.counts.len() {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] += count;
    }

    fn widen(&mut self, count: i64, min_ns: i64, max_ns: i64) {
        if self.count == 0 {
            self.min_ns = min_ns;
            self.max_ns = max_ns;
        } else {
            self.min_ns = self.min_ns.min(min_ns);
            self.max_ns = self.max_ns.max(max_ns);
        }
        self.count += count;
    }

    /// Adds `count` durations known to lie in `bin`, the smallest and largest of them given.
    pub fn add_bin(&mut self, bin: i32, count: i64, min_ns: i64, max_ns: i64) {
        if count <= 0 {
            return;
        }
        self.add_to_bin(bin, count);
        self.widen(count, min_ns, max_ns);
    }

    pub fn merge(&mut self, other: &LatencySketch) {
        if other.count == 0 {
            return;
        }
        for (bin, count) in other.bins() {
            self.add_to_bin(bin, count);
        }
        self.widen(other.count, other.min_ns, other.max_ns);
    }

    /// The bins holding durations, lowest first, with their counts.
    pub fn bins(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (self.offset + i as i32, *c))
    }

    pub fn count(&self) -> i64 {
        self.count
    }

    /// The `q` quantile in nanoseconds (DDSketch's lower rank), within 1% of a recorded
    /// duration and never outside the recorded minimum and maximum; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * (self.count - 1) as f64).floor() as i64;
        // The smallest and the largest durations are known exactly.
        if rank == 0 {
            return Some(self.min_ns as f64);
        }
        if rank >= self.count - 1 {
            return Some(self.max_ns as f64);
        }
        let mut seen = 0;
        for (bin, count) in self.bins() {
            seen += count;
            if seen > rank {
                return Some(bin_value(bin).clamp(self.min_ns as f64, self.max_ns as f64));
            }
        }
        Some(self.max_ns as f64)
    }

    /// Adds the bins of one `span_rollups` row: `bins[i]` holds `counts[i]` durations.
    pub fn add_row(&mut self, bins: &[i32], counts: &[i64], min_ns: i64, max_ns: i64) {
        let mut added = 0;
        for (bin, count) in bins.iter().zip(counts) {
            if *count > 0 {
                self.add_to_bin(*bin, *count);
                added += count;
            }
        }
        if added > 0 {
            self.widen(added, min_ns, max_ns);
        }
    }
}

/// The grouping of one rollup row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Key<'a> {
    service_name: &'a str,
    minute_ns: i64,
    service_version: Option<&'a str>,
    environment: Option<&'a str>,
    kind: &'a str,
    http_method: Option<&'a str>,
    route: &'a str,
}

/// Requests, failed requests, time spent and the latency sketch of a group of requests.
#[derive(Debug, Clone, Default)]
pub struct RequestTotals {
    pub requests: i64,
    pub errors: i64,
    pub duration_sum_ns: i64,
    pub sketch: LatencySketch,
}

impl RequestTotals {
    /// Adds row `row` of a `span_rollups` batch.
    pub fn add_rollup_row(&mut self, rows: &RollupColumns<'_>, row: usize) {
        self.requests += rows.requests.value(row);
        self.errors += rows.errors.value(row);
        self.duration_sum_ns = self
            .duration_sum_ns
            .saturating_add(rows.duration_sum.value(row));
        rows.add_sketch(row, &mut self.sketch);
    }

    pub fn merge(&mut self, other: &RequestTotals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(other.duration_sum_ns);
        self.sketch.merge(&other.sketch);
    }

    /// A latency percentile in milliseconds.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).map(|ns| ns / 1e6)
    }
}

/// Accumulates spans or rollup rows into rollup rows.
#[derive(Default)]
struct Rollup<'a> {
    groups: HashMap<Key<'a>, RequestTotals>,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        ArrowError::SchemaError(format!("span rollups need a column named {name}")).into()
    })
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} should hold text")).into())
}

fn opt_str(array: &StringArray, row: usize) -> Option<&str> {
    array.is_valid(row).then(|| array.value(row))
}

fn times<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampNanosecondArray> {
    column(batch, name)?
        .as_primitive_opt::<TimestampNanosecondType>()
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("column {name} should hold nanosecond times")).into()
        })
}

fn int64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    column(batch, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("column {name} should hold 64-bit integers")).into()
        })
}

impl<'a> Rollup<'a> {
    /// Adds the request spans (server and consumer) of a `spans` batch.
    fn add_spans(&mut self, batch: &'a RecordBatch) -> Result<()> {
        let start = times(batch, "start_time")?;
        let duration = int64s(batch, "duration_ns")?;
        let kind = strings(batch, "kind")?;
        let status = strings(batch, "status")?;
        let service = strings(batch, "service_name")?;
        let version = strings(batch, "service_version")?;
        let environment = strings(batch, "environment")?;
        let method = strings(batch, "http_method")?;
        let route = strings(batch, "http_route")?;
        let name = strings(batch, "name")?;
        let code = column(batch, "http_status_code")?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| {
                ArrowError::SchemaError("column http_status_code should hold integers".into())
            })?;
        for row in 0..batch.num_rows() {
            let k = kind.value(row);
            if k != "server" && k != "consumer" {
                continue;
            }
            let key = Key {
                service_name: service.value(row),
                minute_ns: start.value(row).div_euclid(NS_PER_MINUTE) * NS_PER_MINUTE,
                service_version: opt_str(version, row),
                environment: opt_str(environment, row),
                kind: k,
                http_method: opt_str(method, row),
                route: opt_str(route, row).unwrap_or_else(|| name.value(row)),
            };
            let failed =
                status.value(row) == "error" || (code.is_valid(row) && code.value(row) >= 500);
            let d = duration.value(row);
            let totals = self.groups.entry(key).or_default();
            totals.requests += 1;
            totals.errors += i64::from(failed);
            totals.duration_sum_ns = totals.duration_sum_ns.saturating_add(d);
            totals.sketch.add(d);
        }
        Ok(())
    }

    /// Adds the rows of a `span_rollups` batch.
    fn add_rollups(&mut self, batch: &'a RecordBatch) -> Result<()> {
        let rows = RollupColumns::of(batch)?;
        for row in 0..batch.num_rows() {
            let key = Key {
                service_name: rows.service.value(row),
                minute_ns: rows.time.value(row),
                service_version: opt_str(rows.version, row),
                environment: opt_str(rows.environment, row),
                kind: rows.kind.value(row),
                http_method: opt_str(rows.method, row),
                route: rows.route.value(row),
            };
            self.groups
                .entry(key)
                .or_default()
                .add_rollup_row(&rows, row);
        }
        Ok(())
    }

    fn finish(self) -> Result<RecordBatch> {
        let mut groups: Vec<_> = self.groups.into_iter().collect();
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let n = groups.len();
        let mut time = Vec::with_capacity(n);
        let mut service = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut environment = Vec::with_capacity(n);
        let mut kind = Vec::with_capacity(n);
        let mut method = Vec::with_capacity(n);
        let mut route = Vec::with_capacity(n);
        let mut requests = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        let mut sum = Vec::with_capacity(n);
        let mut min = Vec::with_capacity(n);
        let mut max = Vec::with_capacity(n);
        let mut bins = ListBuilder::new(Int32Builder::new());
        let mut counts = ListBuilder::new(Int64Builder::new());
        for (key, totals) in &groups {
            time.push(key.minute_ns);
            service.push(key.service_name);
            version.push(key.service_version);
            environment.push(key.environment);
            kind.push(key.kind);
            method.push(key.http_method);
            route.push(key.route);
            requests.push(totals.requests);
            errors.push(totals.errors);
            sum.push(totals.duration_sum_ns);
            min.push(totals.sketch.min_ns);
            max.push(totals.sketch.max_ns);
            for (bin, count) in totals.sketch.bins() {
                bins.values().append_value(bin);
                counts.values().append_value(count);
            }
            bins.append(true);
            counts.append(true);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampNanosecondArray::from(time).with_timezone("UTC")),
            Arc::new(StringArray::from(service)),
            Arc::new(StringArray::from(version)),
            Arc::new(StringArray::from(environment)),
            Arc::new(StringArray::from(kind)),
            Arc::new(StringArray::from(method)),
            Arc::new(StringArray::from(route)),
            Arc::new(Int64Array::from(requests)),
            Arc::new(Int64Array::from(errors)),
            Arc::new(Int64Array::from(sum)),
            Arc::new(Int64Array::from(min)),
            Arc::new(Int64Array::from(max)),
            Arc::new(bins.finish()),
            Arc::new(counts.finish()),
        ];
        Ok(RecordBatch::try_new(span_rollups_schema(), columns)?)
    }
}

/// The columns of a `span_rollups` batch, typed.
pub struct RollupColumns<'a> {
    pub time: &'a TimestampNanosecondArray,
    pub service: &'a StringArray,
    pub version: &'a StringArray,
    pub environment: &'a StringArray,
    pub kind: &'a StringArray,
    pub method: &'a StringArray,
    pub route: &'a StringArray,
    pub requests: &'a Int64Array,
    pub errors: &'a Int64Array,
    pub duration_sum: &'a Int64Array,
    pub duration_min: &'a Int64Array,
    pub duration_max: &'a Int64Array,
    bin_offsets: &'a [i32],
    bin_values: &'a [i32],
    count_offsets: &'a [i32],
    count_values: &'a [i64],
}

impl<'a> RollupColumns<'a> {
    /// The columns of `batch`, which must have the `span_rollups` schema's columns and types.
    pub fn of(batch: &'a RecordBatch) -> Result<Self> {
        let list = |name: &str| -> Result<&'a arrow::array::ListArray> {
            column(batch, name)?.as_list_opt::<i32>().ok_or_else(|| {
                ArrowError::SchemaError(format!("column {name} should be a list")).into()
            })
        };
        let bins = list("latency_bins")?;
        let counts = list("latency_counts")?;
        Ok(Self {
            time: times(batch, "time")?,
            service: strings(batch, "service_name")?,
            version: strings(batch, "service_version")?,
            environment: strings(batch, "environment")?,
            kind: strings(batch, "kind")?,
            method: strings(batch, "http_method")?,
            route: strings(batch, "route")?,
            requests: int64s(batch, "requests")?,
            errors: int64s(batch, "errors")?,
            duration_sum: int64s(batch, "duration_sum_ns")?,
            duration_min: int64s(batch, "duration_min_ns")?,
            duration_max: int64s(batch, "duration_max_ns")?,
            bin_offsets: bins.value_offsets(),
            bin_values: bins
                .values()
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| {
                    ArrowError::SchemaError("latency_bins should hold 32-bit integers".into())
                })?
                .values(),
            count_offsets: counts.value_offsets(),
            count_values: counts
                .values()
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| {
                    ArrowError::SchemaError("latency_counts should hold 64-bit integers".into())
                })?
                .values(),
        })
    }

    /// Adds row `row`'s latency bins to a sketch.
    pub fn add_sketch(&self, row: usize, sketch: &mut LatencySketch) {
        let range = |offsets: &[i32]| offsets[row] as usize..offsets[row + 1] as usize;
        let (bins, counts) = (range(self.bin_offsets), range(self.count_offsets));
        if bins.len() == counts.len()
            && bins.end <= self.bin_values.len()
            && counts.end <= self.count_values.len()
        {
            sketch.add_row(
                &self.bin_values[bins],
                &self.count_values[counts],
                self.duration_min.value(row),
                self.duration_max.value(row),
            );
        }
    }
}

/// The rollup rows of a `spans` batch (no rows when it holds no server or consumer span).
pub fn from_spans(batch: &RecordBatch) -> Result<RecordBatch> {
    let mut rollup = Rollup::default();
    rollup.add_spans(batch)?;
    rollup.finish()
}

/// Rollup rows merged: rows of the same minute and grouping become one.
pub fn merge(batches: &[RecordBatch]) -> Result<RecordBatch> {
    let mut rollup = Rollup::default();
    for batch in batches {
        rollup.add_rollups(batch)?;
    }
    rollup.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sightline_model::schema::{SpanRow, spans_to_batch};

    fn span(
        start_ns: i64,
        duration_ns: i64,
        kind: &'static str,
        route: &str,
        code: i32,
    ) -> SpanRow {
        SpanRow {
            start_time_ns: start_ns,
            end_time_ns: start_ns + duration_ns,
            trace_id: format!("{start_ns:032x}"),
            span_id: format!("{duration_ns:016x}"),
            name: format!("GET {route}"),
            kind,
            status: if code >= 500 { "error" } else { "unset" },
            service_name: "orders".into(),
            http_method: Some("GET".into()),
            http_route: Some(route.into()),
            http_status_code: Some(code),
            attributes: "{}".into(),
            resource_attributes: "{}".into(),
            events: "[]".into(),
            links: "[]".into(),
            sample_rate: 1.0,
            message: "m".into(),
            ..Default::default()
        }
    }

    #[test]
    fn sketch_quantiles_stay_within_the_relative_accuracy() {
        let mut sketch = LatencySketch::default();
        let values: Vec<i64> = (1..=10_000).map(|i| i * 1_000 + i * i).collect();
        for v in &values {
            sketch.add(*v);
        }
        for q in [0.5, 0.9, 0.95, 0.99] {
            let exact = values[(q * (values.len() - 1) as f64).floor() as usize] as f64;
            let got = sketch.quantile(q).expect("not empty");
            assert!(
                (got - exact).abs() <= exact * RELATIVE_ACCURACY,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(sketch.quantile(0.0), Some(values[0] as f64));
        assert_eq!(sketch.quantile(1.0), Some(values[values.len() - 1] as f64));
        assert_eq!(LatencySketch::default().quantile(0.5), None);
    }

    #[test]
    fn rollups_count_requests_per_minute_and_merge_without_loss() {
        let minute = NS_PER_MINUTE;
        let rows = vec![
            span(10 * minute + 1, 5_000_000, "server", "/orders", 200),
            span(10 * minute + 2, 7_000_000, "server", "/orders", 503),
            span(10 * minute + 3, 1_000_000, "client", "/orders", 200),
            span(11 * minute, 9_000_000, "server", "/orders", 200),
            span(11 * minute + 5, 2_000_000, "consumer", "send_email", 200),
        ];
        let batch = spans_to_batch(&rows).expect("spans");
        let rollup = from_spans(&batch).expect("rollup");
        assert_eq!(rollup.num_rows(), 3, "two minutes of /orders and one task");
        let cols = RollupColumns::of(&rollup).expect("columns");
        let total: i64 = cols.requests.values().iter().sum();
        assert_eq!(total, 4, "the client span is not a request");
        let errors: i64 = cols.errors.values().iter().sum();
        assert_eq!(errors, 1);

        // Splitting the spans in two and merging the halves gives the same rows.
        let first = from_spans(&batch.slice(0, 2)).expect("first half");
        let second = from_spans(&batch.slice(2, 3)).expect("second half");
        let merged = merge(&[first, second]).expect("merge");
        assert_eq!(merged, rollup);

        let mut sketch = LatencySketch::default();
        for row in 0..rollup.num_rows() {
            if cols.route.value(row) == "/orders" {
                cols.add_sketch(row, &mut sketch);
            }
        }
        assert_eq!(sketch.count(), 3);
        let max = sketch.quantile(1.0).expect("not empty");
        assert_eq!(max, 9_000_000.0, "the maximum is exact");
    }

    #[test]
    fn the_sql_bin_matches_the_rust_bin_on_edges() {
        assert!(bin_sql("duration_ns").starts_with("CAST(ceil(ln("));
        assert_eq!(bin_of(0), bin_of(1));
        assert!(bin_of(1_000_000) < bin_of(1_010_000) + 1);
        let v = bin_value(bin_of(123_456_789));
        assert!((v - 123_456_789.0).abs() <= 123_456_789.0 * RELATIVE_ACCURACY);
    }
}
