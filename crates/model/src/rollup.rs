//! Rows of the `span_rollups` table read back: [`RollupColumns`], a typed view of a batch, and
//! [`RequestTotals`], the requests, failures, time spent and latency sketch of a group of
//! requests, which rollup rows and spans both add into. The store derives the rows; the pages
//! read them.

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampNanosecondArray,
};
use arrow::datatypes::{Int32Type, Int64Type, TimestampNanosecondType};
use arrow::error::ArrowError;

use crate::sketch::LatencySketch;

/// Requests, failed requests, time spent and the latency sketch of a group of requests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestTotals {
    /// Requests counted.
    pub requests: i64,
    /// Of those, the failed ones ([`crate::request::is_failure`]).
    pub errors: i64,
    /// The sum of their durations (saturating).
    pub duration_sum_ns: i64,
    /// Their durations.
    pub sketch: LatencySketch,
}

impl RequestTotals {
    /// Adds one request.
    pub fn add_request(&mut self, duration_ns: i64, failed: bool) {
        self.requests += 1;
        self.errors += i64::from(failed);
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(duration_ns);
        self.sketch.add(duration_ns);
    }

    /// Adds row `row` of a `span_rollups` batch.
    pub fn add_rollup_row(&mut self, rows: &RollupColumns<'_>, row: usize) {
        self.requests += rows.requests.value(row);
        self.errors += rows.errors.value(row);
        self.duration_sum_ns = self
            .duration_sum_ns
            .saturating_add(rows.duration_sum.value(row));
        rows.add_sketch(row, &mut self.sketch);
    }

    /// Adds another group's totals.
    pub fn merge(&mut self, other: &RequestTotals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.duration_sum_ns = self.duration_sum_ns.saturating_add(other.duration_sum_ns);
        self.sketch.merge(&other.sketch);
    }

    /// A latency percentile in milliseconds; `None` without requests.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        self.sketch.quantile(q).map(|ns| ns / 1e6)
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, ArrowError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| ArrowError::SchemaError(format!("span rollups need a column named {name}")))
}

fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray, ArrowError> {
    column(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| ArrowError::SchemaError(format!("column {name} should hold text")))
}

fn int64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array, ArrowError> {
    column(batch, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| {
            ArrowError::SchemaError(format!("column {name} should hold 64-bit integers"))
        })
}

/// The columns of a `span_rollups` batch, typed.
pub struct RollupColumns<'a> {
    /// The minute (start, ns).
    pub time: &'a TimestampNanosecondArray,
    /// `service_name`.
    pub service: &'a StringArray,
    /// `service_version`.
    pub version: &'a StringArray,
    /// `environment`.
    pub environment: &'a StringArray,
    /// `kind` (`server` or `consumer`).
    pub kind: &'a StringArray,
    /// `http_method`.
    pub method: &'a StringArray,
    /// `route`.
    pub route: &'a StringArray,
    /// `requests`.
    pub requests: &'a Int64Array,
    /// `errors`.
    pub errors: &'a Int64Array,
    /// `duration_sum_ns`.
    pub duration_sum: &'a Int64Array,
    /// `duration_min_ns`.
    pub duration_min: &'a Int64Array,
    /// `duration_max_ns`.
    pub duration_max: &'a Int64Array,
    bin_offsets: &'a [i32],
    bin_values: &'a [i32],
    count_offsets: &'a [i32],
    count_values: &'a [i64],
    within: Option<Within<'a>>,
}

/// The exact latency counts of rollup rows: thresholds and the good requests within each.
struct Within<'a> {
    thresholds: &'a ListArray,
    threshold_values: &'a [i64],
    count_offsets: &'a [i32],
    count_values: &'a [i64],
}

impl<'a> RollupColumns<'a> {
    /// The columns of `batch`, which must have the `span_rollups` schema's columns and types.
    pub fn of(batch: &'a RecordBatch) -> Result<Self, ArrowError> {
        let list = |name: &str| -> Result<&'a ListArray, ArrowError> {
            column(batch, name)?
                .as_list_opt::<i32>()
                .ok_or_else(|| ArrowError::SchemaError(format!("column {name} should be a list")))
        };
        let bins = list("latency_bins")?;
        let counts = list("latency_counts")?;
        let int64_values = |list: &'a ListArray, name: &str| -> Result<&'a [i64], ArrowError> {
            Ok(list
                .values()
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| {
                    ArrowError::SchemaError(format!("{name} should hold 64-bit integers"))
                })?
                .values())
        };
        // Rows made before the exact latency counts existed have neither column.
        let within = match (
            batch.column_by_name("latency_thresholds_ns"),
            batch.column_by_name("good_within_counts"),
        ) {
            (Some(_), Some(_)) => {
                let thresholds = list("latency_thresholds_ns")?;
                let good = list("good_within_counts")?;
                Some(Within {
                    thresholds,
                    threshold_values: int64_values(thresholds, "latency_thresholds_ns")?,
                    count_offsets: good.value_offsets(),
                    count_values: int64_values(good, "good_within_counts")?,
                })
            }
            _ => None,
        };
        Ok(Self {
            time: column(batch, "time")?
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| {
                    ArrowError::SchemaError("column time should hold nanosecond times".into())
                })?,
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
            within,
        })
    }

    /// Row `row`'s exact latency counts: pairs of a threshold (ns) and the requests that did not
    /// fail and took at most that long, by threshold. Empty for rows made without thresholds.
    pub fn good_within(&self, row: usize) -> Vec<(i64, i64)> {
        let Some(w) = &self.within else {
            return Vec::new();
        };
        if w.thresholds.is_null(row) {
            return Vec::new();
        }
        let offsets = w.thresholds.value_offsets();
        let (t0, t1) = (offsets[row] as usize, offsets[row + 1] as usize);
        let (c0, c1) = (
            w.count_offsets[row] as usize,
            w.count_offsets[row + 1] as usize,
        );
        if t1 - t0 != c1 - c0 || t1 > w.threshold_values.len() || c1 > w.count_values.len() {
            return Vec::new();
        }
        w.threshold_values[t0..t1]
            .iter()
            .copied()
            .zip(w.count_values[c0..c1].iter().copied())
            .collect()
    }

    /// The row's `http_method`, if any.
    pub fn method_of(&self, row: usize) -> Option<&'a str> {
        self.method.is_valid(row).then(|| self.method.value(row))
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
