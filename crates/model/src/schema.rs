//! Arrow schemas of the `spans`, `logs`, `metrics` and `span_rollups` tables, and the row types that ingest
//! produces. Column names are a public contract (DESIGN.md): add columns, rename none.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::Signal;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// Schema of the `spans` table.
pub fn spans_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("start_time", ts(), false),
                Field::new("end_time", ts(), false),
                Field::new("duration_ns", DataType::Int64, false),
                text("trace_id", false),
                text("span_id", false),
                text("parent_span_id", true),
                text("name", false),
                text("kind", false),
                text("status", false),
                text("status_message", true),
                text("service_name", false),
                text("service_version", true),
                text("environment", true),
                text("http_method", true),
                text("http_route", true),
                Field::new("http_status_code", DataType::Int32, true),
                text("exception_type", true),
                text("exception_message", true),
                text("attributes", false),
                text("resource_attributes", false),
                text("events", false),
                text("links", false),
                text("scope_name", true),
                Field::new("sample_rate", DataType::Float64, false),
                text("message", false),
                text("exception_stacktrace", true),
            ]))
        })
        .clone()
}

/// Schema of the `logs` table.
pub fn logs_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("time", ts(), false),
                Field::new("observed_time", ts(), false),
                text("trace_id", true),
                text("span_id", true),
                Field::new("severity_number", DataType::Int32, false),
                text("severity", false),
                text("body", false),
                text("service_name", false),
                text("service_version", true),
                text("environment", true),
                text("logger", true),
                text("exception_type", true),
                text("exception_message", true),
                text("attributes", false),
                text("resource_attributes", false),
                text("exception_stacktrace", true),
                text("scope_name", true),
            ]))
        })
        .clone()
}

/// Schema of the `metrics` table.
pub fn metrics_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("time", ts(), false),
                Field::new("start_time", ts(), true),
                text("name", false),
                text("type", false),
                text("unit", true),
                text("service_name", false),
                text("environment", true),
                text("attributes", false),
                Field::new("value", DataType::Float64, true),
                Field::new("monotonic", DataType::Boolean, true),
                text("temporality", true),
                Field::new("count", DataType::Int64, true),
                Field::new("sum", DataType::Float64, true),
                Field::new("min", DataType::Float64, true),
                Field::new("max", DataType::Float64, true),
                Field::new(
                    "bucket_bounds",
                    DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true))),
                    true,
                ),
                Field::new(
                    "bucket_counts",
                    DataType::List(Arc::new(Field::new_list_field(DataType::Int64, true))),
                    true,
                ),
                text("quantiles", true),
                text("exemplars", true),
                text("service_version", true),
                text("resource_attributes", false),
                text("description", true),
                text("scope_name", true),
            ]))
        })
        .clone()
}

/// Schema of the `span_rollups` table: per minute and per service, version, environment, kind
/// and route, the requests (server and consumer spans), the failed ones, their durations and a
/// latency sketch (DDSketch's logarithmic buckets at 1% relative accuracy: `latency_bins[i]`
/// holds `latency_counts[i]` durations).
pub fn span_rollups_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let list = |item: DataType| DataType::List(Arc::new(Field::new("item", item, true)));
            Arc::new(Schema::new(vec![
                Field::new("time", ts(), false),
                text("service_name", false),
                text("service_version", true),
                text("environment", true),
                text("kind", false),
                text("http_method", true),
                text("route", false),
                Field::new("requests", DataType::Int64, false),
                Field::new("errors", DataType::Int64, false),
                Field::new("duration_sum_ns", DataType::Int64, false),
                Field::new("duration_min_ns", DataType::Int64, false),
                Field::new("duration_max_ns", DataType::Int64, false),
                Field::new("latency_bins", list(DataType::Int32), false),
                Field::new("latency_counts", list(DataType::Int64), false),
            ]))
        })
        .clone()
}

/// The schema of a signal's table.
pub fn schema_for(signal: Signal) -> SchemaRef {
    match signal {
        Signal::Spans => spans_schema(),
        Signal::Logs => logs_schema(),
        Signal::Metrics => metrics_schema(),
        Signal::SpanRollups => span_rollups_schema(),
    }
}

/// One span, normalized. JSON columns hold JSON text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRow {
    pub start_time_ns: i64,
    pub end_time_ns: i64,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: &'static str,
    pub status: &'static str,
    pub status_message: Option<String>,
    pub service_name: String,
    pub service_version: Option<String>,
    pub environment: Option<String>,
    pub http_method: Option<String>,
    pub http_route: Option<String>,
    pub http_status_code: Option<i32>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    pub exception_stacktrace: Option<String>,
    pub attributes: String,
    pub resource_attributes: String,
    pub events: String,
    pub links: String,
    pub scope_name: Option<String>,
    pub sample_rate: f64,
    pub message: String,
}

/// One log record, normalized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRow {
    pub time_ns: i64,
    pub observed_time_ns: i64,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub severity_number: i32,
    pub severity: &'static str,
    pub body: String,
    pub service_name: String,
    pub service_version: Option<String>,
    pub environment: Option<String>,
    pub logger: Option<String>,
    pub exception_type: Option<String>,
    pub exception_message: Option<String>,
    pub exception_stacktrace: Option<String>,
    pub attributes: String,
    pub resource_attributes: String,
    pub scope_name: Option<String>,
}

/// One metric data point, normalized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricRow {
    pub time_ns: i64,
    pub start_time_ns: Option<i64>,
    pub name: String,
    pub metric_type: &'static str,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub service_name: String,
    pub service_version: Option<String>,
    pub environment: Option<String>,
    pub attributes: String,
    pub resource_attributes: String,
    pub scope_name: Option<String>,
    pub value: Option<f64>,
    pub monotonic: Option<bool>,
    pub temporality: Option<&'static str>,
    pub count: Option<i64>,
    pub sum: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bucket_bounds: Option<Vec<f64>>,
    pub bucket_counts: Option<Vec<i64>>,
    pub quantiles: Option<String>,
    pub exemplars: Option<String>,
}

fn strs<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn opt_strs<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter_values(values).with_timezone("UTC"))
}

/// Converts span rows into a batch of the `spans` schema.
pub fn spans_to_batch(rows: &[SpanRow]) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        times(rows.iter().map(|r| r.start_time_ns)),
        times(rows.iter().map(|r| r.end_time_ns)),
        Arc::new(Int64Array::from_iter_values(
            rows.iter()
                .map(|r| r.end_time_ns.saturating_sub(r.start_time_ns).max(0)),
        )),
        strs(rows.iter().map(|r| r.trace_id.as_str())),
        strs(rows.iter().map(|r| r.span_id.as_str())),
        opt_strs(rows.iter().map(|r| r.parent_span_id.as_deref())),
        strs(rows.iter().map(|r| r.name.as_str())),
        strs(rows.iter().map(|r| r.kind)),
        strs(rows.iter().map(|r| r.status)),
        opt_strs(rows.iter().map(|r| r.status_message.as_deref())),
        strs(rows.iter().map(|r| r.service_name.as_str())),
        opt_strs(rows.iter().map(|r| r.service_version.as_deref())),
        opt_strs(rows.iter().map(|r| r.environment.as_deref())),
        opt_strs(rows.iter().map(|r| r.http_method.as_deref())),
        opt_strs(rows.iter().map(|r| r.http_route.as_deref())),
        Arc::new(Int32Array::from_iter(
            rows.iter().map(|r| r.http_status_code),
        )),
        opt_strs(rows.iter().map(|r| r.exception_type.as_deref())),
        opt_strs(rows.iter().map(|r| r.exception_message.as_deref())),
        strs(rows.iter().map(|r| r.attributes.as_str())),
        strs(rows.iter().map(|r| r.resource_attributes.as_str())),
        strs(rows.iter().map(|r| r.events.as_str())),
        strs(rows.iter().map(|r| r.links.as_str())),
        opt_strs(rows.iter().map(|r| r.scope_name.as_deref())),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.sample_rate),
        )),
        strs(rows.iter().map(|r| r.message.as_str())),
        opt_strs(rows.iter().map(|r| r.exception_stacktrace.as_deref())),
    ];
    RecordBatch::try_new(spans_schema(), columns)
}

/// Converts log rows into a batch of the `logs` schema.
pub fn logs_to_batch(rows: &[LogRow]) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = vec![
        times(rows.iter().map(|r| r.time_ns)),
        times(rows.iter().map(|r| r.observed_time_ns)),
        opt_strs(rows.iter().map(|r| r.trace_id.as_deref())),
        opt_strs(rows.iter().map(|r| r.span_id.as_deref())),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.severity_number),
        )),
        strs(rows.iter().map(|r| r.severity)),
        strs(rows.iter().map(|r| r.body.as_str())),
        strs(rows.iter().map(|r| r.service_name.as_str())),
        opt_strs(rows.iter().map(|r| r.service_version.as_deref())),
        opt_strs(rows.iter().map(|r| r.environment.as_deref())),
        opt_strs(rows.iter().map(|r| r.logger.as_deref())),
        opt_strs(rows.iter().map(|r| r.exception_type.as_deref())),
        opt_strs(rows.iter().map(|r| r.exception_message.as_deref())),
        strs(rows.iter().map(|r| r.attributes.as_str())),
        strs(rows.iter().map(|r| r.resource_attributes.as_str())),
        opt_strs(rows.iter().map(|r| r.exception_stacktrace.as_deref())),
        opt_strs(rows.iter().map(|r| r.scope_name.as_deref())),
    ];
    RecordBatch::try_new(logs_schema(), columns)
}

/// Converts metric points into a batch of the `metrics` schema.
pub fn metrics_to_batch(rows: &[MetricRow]) -> Result<RecordBatch, ArrowError> {
    let mut bounds = ListBuilder::new(arrow::array::Float64Builder::new());
    let mut counts = ListBuilder::new(arrow::array::Int64Builder::new());
    for row in rows {
        match &row.bucket_bounds {
            Some(values) => {
                bounds.values().append_slice(values);
                bounds.append(true);
            }
            None => bounds.append(false),
        }
        match &row.bucket_counts {
            Some(values) => {
                counts.values().append_slice(values);
                counts.append(true);
            }
            None => counts.append(false),
        }
    }
    let columns: Vec<ArrayRef> = vec![
        times(rows.iter().map(|r| r.time_ns)),
        Arc::new(
            TimestampNanosecondArray::from_iter(rows.iter().map(|r| r.start_time_ns))
                .with_timezone("UTC"),
        ),
        strs(rows.iter().map(|r| r.name.as_str())),
        strs(rows.iter().map(|r| r.metric_type)),
        opt_strs(rows.iter().map(|r| r.unit.as_deref())),
        strs(rows.iter().map(|r| r.service_name.as_str())),
        opt_strs(rows.iter().map(|r| r.environment.as_deref())),
        strs(rows.iter().map(|r| r.attributes.as_str())),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.value))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.monotonic))),
        opt_strs(rows.iter().map(|r| r.temporality)),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.count))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.sum))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.min))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.max))),
        Arc::new(bounds.finish()),
        Arc::new(counts.finish()),
        opt_strs(rows.iter().map(|r| r.quantiles.as_deref())),
        opt_strs(rows.iter().map(|r| r.exemplars.as_deref())),
        opt_strs(rows.iter().map(|r| r.service_version.as_deref())),
        strs(rows.iter().map(|r| r.resource_attributes.as_str())),
        opt_strs(rows.iter().map(|r| r.description.as_deref())),
        opt_strs(rows.iter().map(|r| r.scope_name.as_deref())),
    ];
    RecordBatch::try_new(metrics_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_rows_convert_to_a_batch_of_the_spans_schema() {
        let row = SpanRow {
            start_time_ns: 10,
            end_time_ns: 25,
            trace_id: "ab".into(),
            span_id: "cd".into(),
            name: "GET /x".into(),
            kind: "server",
            status: "ok",
            service_name: "api".into(),
            attributes: "{}".into(),
            resource_attributes: "{}".into(),
            events: "[]".into(),
            links: "[]".into(),
            sample_rate: 1.0,
            message: "GET /x".into(),
            ..Default::default()
        };
        let batch = spans_to_batch(&[row]).expect("valid rows");
        assert_eq!(batch.num_rows(), 1);
        let duration = batch
            .column_by_name("duration_ns")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>().map(|a| a.value(0)));
        assert_eq!(duration, Some(15));
    }

    #[test]
    fn metric_rows_keep_bucket_lists_and_nulls() {
        let rows = vec![
            MetricRow {
                name: "h".into(),
                metric_type: "histogram",
                service_name: "s".into(),
                attributes: "{}".into(),
                resource_attributes: "{}".into(),
                bucket_bounds: Some(vec![1.0, 2.0]),
                bucket_counts: Some(vec![1, 2, 3]),
                ..Default::default()
            },
            MetricRow {
                name: "g".into(),
                metric_type: "gauge",
                service_name: "s".into(),
                attributes: "{}".into(),
                resource_attributes: "{}".into(),
                value: Some(1.5),
                ..Default::default()
            },
        ];
        let batch = metrics_to_batch(&rows).expect("valid rows");
        assert_eq!(batch.num_rows(), 2);
        let bounds = batch
            .column_by_name("bucket_bounds")
            .expect("column exists");
        assert!(bounds.is_valid(0));
        assert!(bounds.is_null(1));
    }
}
