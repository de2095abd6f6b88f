//! Deriving span rollups: per minute and per service, version, environment, kind and route, the
//! requests, the failed ones (both as [`sightline_model::request`] defines them), the time spent
//! and a latency sketch ([`sightline_model::sketch`]). The store derives them from spans as the
//! spans enter its buffer (and again from spans replayed from the log), writes them beside the
//! span segments in the same catalog transaction, and merges them when it compacts; the
//! incident pages read them instead of scanning every span of a long window.
//! The bins are stored as two Parquet list columns (bin, count) rather than an opaque blob, so
//! that they stay readable with SQL and merge by adding counts.
//!
//! A sketch places a duration within 1% of its value, which cannot say exactly how many requests
//! took at most 300 ms. So each row also counts, for each latency threshold the store was given
//! (the latency SLOs' thresholds), the requests that did not fail and took at most that long
//! (`latency_thresholds_ns`, `good_within_counts`). Merged rows keep only the thresholds every
//! one of them counted: a minute partly counted before a threshold was configured is not exact
//! for it, and says so by not listing it.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Builder, Int64Array, Int64Builder, ListBuilder, RecordBatch,
    StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{Int32Type, Int64Type, TimestampNanosecondType};
use arrow::error::ArrowError;
use sightline_model::Signal;
use sightline_model::request::{SpanKind, SpanStatus, is_failure, route};
use sightline_model::rollup::{RequestTotals, RollupColumns};
use sightline_model::schema::span_rollups_schema;

use crate::error::Result;

const NS_PER_MINUTE: i64 = 60_000_000_000;

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

/// One group's totals, and for each threshold counted, the good requests within it.
#[derive(Default)]
struct Group {
    totals: RequestTotals,
    within: Vec<(i64, i64)>,
}

/// Accumulates spans or rollup rows into rollup rows.
#[derive(Default)]
struct Rollup<'a> {
    groups: HashMap<Key<'a>, Group>,
    /// The thresholds spans are counted within, ascending.
    thresholds: Vec<i64>,
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
        let route_column = strings(batch, "http_route")?;
        let name = strings(batch, "name")?;
        let code = column(batch, "http_status_code")?
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| {
                ArrowError::SchemaError("column http_status_code should hold integers".into())
            })?;
        for row in 0..batch.num_rows() {
            let k = kind.value(row);
            if !SpanKind::parse(k).is_some_and(SpanKind::is_request) {
                continue;
            }
            let key = Key {
                service_name: service.value(row),
                minute_ns: start.value(row).div_euclid(NS_PER_MINUTE) * NS_PER_MINUTE,
                service_version: opt_str(version, row),
                environment: opt_str(environment, row),
                kind: k,
                http_method: opt_str(method, row),
                route: route(opt_str(route_column, row), name.value(row)),
            };
            let failed = is_failure(
                SpanStatus::parse(status.value(row)).unwrap_or_default(),
                code.is_valid(row).then(|| i64::from(code.value(row))),
            );
            let took = duration.value(row);
            let group = self.groups.entry(key).or_insert_with(|| Group {
                totals: RequestTotals::default(),
                within: self.thresholds.iter().map(|&t| (t, 0)).collect(),
            });
            group.totals.add_request(took, failed);
            if !failed {
                for (threshold, good) in &mut group.within {
                    *good += i64::from(took <= *threshold);
                }
            }
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
            let within = rows.good_within(row);
            match self.groups.entry(key) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    let mut totals = RequestTotals::default();
                    totals.add_rollup_row(&rows, row);
                    slot.insert(Group { totals, within });
                }
                std::collections::hash_map::Entry::Occupied(mut slot) => {
                    let group = slot.get_mut();
                    group.totals.add_rollup_row(&rows, row);
                    // Only thresholds both counted stay exact.
                    group.within.retain_mut(|(threshold, good)| {
                        match within.iter().find(|(t, _)| t == threshold) {
                            Some((_, more)) => {
                                *good += more;
                                true
                            }
                            None => false,
                        }
                    });
                }
            }
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
        let mut thresholds = ListBuilder::new(Int64Builder::new());
        let mut good_within = ListBuilder::new(Int64Builder::new());
        for (key, group) in &groups {
            let totals = &group.totals;
            for &(threshold, good) in &group.within {
                thresholds.values().append_value(threshold);
                good_within.values().append_value(good);
            }
            thresholds.append(true);
            good_within.append(true);
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
            min.push(totals.sketch.min_ns());
            max.push(totals.sketch.max_ns());
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
            Arc::new(thresholds.finish()),
            Arc::new(good_within.finish()),
        ];
        Ok(RecordBatch::try_new(span_rollups_schema(), columns)?)
    }
}

/// The rows a batch of `signal` adds to derived tables: the span rollups of spans, when they
/// hold a server or consumer span, with good requests counted within `thresholds_ns`. The one
/// place that says which signals derive what, for the append, the replay and the import.
pub fn derived(
    signal: Signal,
    batch: &RecordBatch,
    thresholds_ns: &[i64],
) -> Result<Option<RecordBatch>> {
    match signal {
        Signal::Spans => {
            Ok(Some(from_spans(batch, thresholds_ns)?).filter(|rollups| rollups.num_rows() > 0))
        }
        Signal::Logs | Signal::Metrics => Ok(None),
    }
}

/// The rollup rows of a `spans` batch (no rows when it holds no server or consumer span), with
/// good requests counted within `thresholds_ns`.
pub fn from_spans(batch: &RecordBatch, thresholds_ns: &[i64]) -> Result<RecordBatch> {
    let mut thresholds = thresholds_ns.to_vec();
    thresholds.sort_unstable();
    thresholds.dedup();
    let mut rollup = Rollup {
        thresholds,
        ..Rollup::default()
    };
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
    use sightline_model::sketch::LatencySketch;

    fn span(start_ns: i64, duration_ns: i64, kind: SpanKind, route: &str, code: i32) -> SpanRow {
        SpanRow {
            start_time_ns: start_ns,
            end_time_ns: start_ns + duration_ns,
            trace_id: format!("{start_ns:032x}"),
            span_id: format!("{duration_ns:016x}"),
            name: format!("GET {route}"),
            kind,
            status: if code >= 500 {
                SpanStatus::Error
            } else {
                SpanStatus::Unset
            },
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
    fn rollups_count_requests_per_minute_and_merge_without_loss() {
        let minute = NS_PER_MINUTE;
        let rows = vec![
            span(10 * minute + 1, 5_000_000, SpanKind::Server, "/orders", 200),
            span(10 * minute + 2, 7_000_000, SpanKind::Server, "/orders", 503),
            span(10 * minute + 3, 1_000_000, SpanKind::Client, "/orders", 200),
            span(11 * minute, 9_000_000, SpanKind::Server, "/orders", 200),
            span(
                11 * minute + 5,
                2_000_000,
                SpanKind::Consumer,
                "send_email",
                200,
            ),
        ];
        let batch = spans_to_batch(&rows).expect("spans");
        let rollup = from_spans(&batch, &[6_000_000]).expect("rollup");
        assert_eq!(rollup.num_rows(), 3, "two minutes of /orders and one task");
        let cols = RollupColumns::of(&rollup).expect("columns");
        let total: i64 = cols.requests.values().iter().sum();
        assert_eq!(total, 4, "the client span is not a request");
        let errors: i64 = cols.errors.values().iter().sum();
        assert_eq!(errors, 1);

        // Splitting the spans in two and merging the halves gives the same rows.
        let first = from_spans(&batch.slice(0, 2), &[6_000_000]).expect("first half");
        let second = from_spans(&batch.slice(2, 3), &[6_000_000]).expect("second half");
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
    fn good_requests_within_each_threshold_are_counted_exactly_and_merge_only_where_all_counted() {
        let minute = NS_PER_MINUTE;
        // Durations on both sides of 300 ms, one exactly on it, one slow failure, one fast one.
        let rows = vec![
            span(minute, 299_999_999, SpanKind::Server, "/orders", 200),
            span(minute + 1, 300_000_000, SpanKind::Server, "/orders", 200),
            span(minute + 2, 300_000_001, SpanKind::Server, "/orders", 200),
            span(minute + 3, 10_000_000, SpanKind::Server, "/orders", 503),
            span(minute + 4, 900_000_000, SpanKind::Server, "/orders", 503),
        ];
        let batch = spans_to_batch(&rows).expect("spans");
        let thresholds = [300_000_000, 100_000_000, 300_000_000];
        let rollup = from_spans(&batch, &thresholds).expect("rollup");
        let cols = RollupColumns::of(&rollup).expect("columns");
        assert_eq!(
            cols.good_within(0),
            vec![(100_000_000, 0), (300_000_000, 2)],
            "thresholds sorted and once each; a failed request is never good, however fast"
        );

        // A row counted without thresholds makes the merged minute inexact for all of them;
        // rows that counted the same thresholds add up.
        let without = from_spans(&batch.slice(0, 1), &[]).expect("without thresholds");
        let merged = merge(&[rollup.clone(), without]).expect("merge");
        let merged_cols = RollupColumns::of(&merged).expect("columns");
        assert_eq!(merged_cols.requests.value(0), 6);
        assert!(merged_cols.good_within(0).is_empty());
        let twice = merge(&[rollup.clone(), rollup.clone()]).expect("merge");
        let twice_cols = RollupColumns::of(&twice).expect("columns");
        assert_eq!(
            twice_cols.good_within(0),
            vec![(100_000_000, 0), (300_000_000, 4)]
        );

        // A segment written before the columns existed reads as no thresholds.
        let old_schema = Arc::new(arrow::datatypes::Schema::new(
            rollup.schema().fields()[..14].to_vec(),
        ));
        let old = RecordBatch::try_new(old_schema, rollup.columns()[..14].to_vec()).expect("old");
        let aligned = sightline_model::schema::align_to_schema(&old, &span_rollups_schema())
            .expect("aligned");
        let aligned_cols = RollupColumns::of(&aligned).expect("columns");
        assert!(aligned_cols.good_within(0).is_empty());
        let merged_old = merge(&[old, rollup]).expect("merge with an old row");
        assert!(
            RollupColumns::of(&merged_old)
                .expect("cols")
                .good_within(0)
                .is_empty()
        );
    }
}
