//! Arrow schemas of the `spans`, `logs`, `metrics` and `span_rollups` tables, and the row types that ingest
//! produces. Column names are a public contract (DESIGN.md): add columns, rename none.

use std::sync::{Arc, OnceLock};

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::Table;
use crate::request::{SpanKind, SpanStatus};

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
/// holds `latency_counts[i]` durations), and exact counts for latency SLOs:
/// `good_within_counts[i]` requests did not fail and took at most `latency_thresholds_ns[i]`
/// (the thresholds the server was configured with when the row was made; NULL in rows made
/// before these columns existed).
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
                Field::new("latency_thresholds_ns", list(DataType::Int64), true),
                Field::new("good_within_counts", list(DataType::Int64), true),
            ]))
        })
        .clone()
}

/// The schema of a table.
pub fn schema_for(table: Table) -> SchemaRef {
    match table {
        Table::Spans => spans_schema(),
        Table::Logs => logs_schema(),
        Table::Metrics => metrics_schema(),
        Table::SpanRollups => span_rollups_schema(),
    }
}

/// Brings a batch written by an older version (fewer columns) to today's schema: columns added
/// since are filled with nulls, and a column whose type changed is read as nulls.
pub fn align_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return RecordBatch::try_new(schema.clone(), batch.columns().to_vec());
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => column.clone(),
            _ => arrow::array::new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
}

/// One span, normalized. JSON columns hold JSON text.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanRow {
    /// The `start_time` column (ns since the epoch, UTC).
    pub start_time_ns: i64,
    /// The `end_time` column (ns since the epoch, UTC).
    pub end_time_ns: i64,
    /// The `trace_id` column.
    pub trace_id: String,
    /// The `span_id` column.
    pub span_id: String,
    /// The `parent_span_id` column.
    pub parent_span_id: Option<String>,
    /// The `name` column.
    pub name: String,
    /// The `kind` column.
    pub kind: SpanKind,
    /// The `status` column.
    pub status: SpanStatus,
    /// The `status_message` column.
    pub status_message: Option<String>,
    /// The `service_name` column.
    pub service_name: String,
    /// The `service_version` column.
    pub service_version: Option<String>,
    /// The `environment` column.
    pub environment: Option<String>,
    /// The `http_method` column.
    pub http_method: Option<String>,
    /// The `http_route` column.
    pub http_route: Option<String>,
    /// The `http_status_code` column.
    pub http_status_code: Option<i32>,
    /// The `exception_type` column.
    pub exception_type: Option<String>,
    /// The `exception_message` column.
    pub exception_message: Option<String>,
    /// The `exception_stacktrace` column.
    pub exception_stacktrace: Option<String>,
    /// The `attributes` column.
    pub attributes: String,
    /// The `resource_attributes` column.
    pub resource_attributes: String,
    /// The `events` column.
    pub events: String,
    /// The `links` column.
    pub links: String,
    /// The `scope_name` column.
    pub scope_name: Option<String>,
    /// The `sample_rate` column.
    pub sample_rate: f64,
    /// The `message` column.
    pub message: String,
}

impl SpanRow {
    /// A span with this identity, name, service and times, and nothing else: empty attribute,
    /// resource, event and link JSON, `sample_rate` 1.0, its name as its message; every other
    /// field at its default (an `internal` span with status `unset`).
    pub fn new(
        trace_id: impl Into<String>,
        span_id: impl Into<String>,
        name: impl Into<String>,
        service_name: impl Into<String>,
        start_time_ns: i64,
        end_time_ns: i64,
    ) -> Self {
        let name = name.into();
        Self {
            start_time_ns,
            end_time_ns,
            trace_id: trace_id.into(),
            span_id: span_id.into(),
            message: name.clone(),
            name,
            service_name: service_name.into(),
            attributes: "{}".into(),
            resource_attributes: "{}".into(),
            events: "[]".into(),
            links: "[]".into(),
            sample_rate: 1.0,
            ..Default::default()
        }
    }
}

/// One log record, normalized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogRow {
    /// The `time` column (ns since the epoch, UTC).
    pub time_ns: i64,
    /// The `observed_time` column (ns since the epoch, UTC).
    pub observed_time_ns: i64,
    /// The `trace_id` column.
    pub trace_id: Option<String>,
    /// The `span_id` column.
    pub span_id: Option<String>,
    /// The `severity_number` column.
    pub severity_number: i32,
    /// The `severity` column.
    pub severity: &'static str,
    /// The `body` column.
    pub body: String,
    /// The `service_name` column.
    pub service_name: String,
    /// The `service_version` column.
    pub service_version: Option<String>,
    /// The `environment` column.
    pub environment: Option<String>,
    /// The `logger` column.
    pub logger: Option<String>,
    /// The `exception_type` column.
    pub exception_type: Option<String>,
    /// The `exception_message` column.
    pub exception_message: Option<String>,
    /// The `exception_stacktrace` column.
    pub exception_stacktrace: Option<String>,
    /// The `attributes` column.
    pub attributes: String,
    /// The `resource_attributes` column.
    pub resource_attributes: String,
    /// The `scope_name` column.
    pub scope_name: Option<String>,
}

/// One metric data point, normalized.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricRow {
    /// The `time` column (ns since the epoch, UTC).
    pub time_ns: i64,
    /// The `start_time` column (ns since the epoch, UTC).
    pub start_time_ns: Option<i64>,
    /// The `name` column.
    pub name: String,
    /// The `type` column.
    pub metric_type: &'static str,
    /// The `unit` column.
    pub unit: Option<String>,
    /// The `description` column.
    pub description: Option<String>,
    /// The `service_name` column.
    pub service_name: String,
    /// The `service_version` column.
    pub service_version: Option<String>,
    /// The `environment` column.
    pub environment: Option<String>,
    /// The `attributes` column.
    pub attributes: String,
    /// The `resource_attributes` column.
    pub resource_attributes: String,
    /// The `scope_name` column.
    pub scope_name: Option<String>,
    /// The `value` column.
    pub value: Option<f64>,
    /// The `monotonic` column.
    pub monotonic: Option<bool>,
    /// The `temporality` column.
    pub temporality: Option<&'static str>,
    /// The `count` column.
    pub count: Option<i64>,
    /// The `sum` column.
    pub sum: Option<f64>,
    /// The `min` column.
    pub min: Option<f64>,
    /// The `max` column.
    pub max: Option<f64>,
    /// The `bucket_bounds` column.
    pub bucket_bounds: Option<Vec<f64>>,
    /// The `bucket_counts` column.
    pub bucket_counts: Option<Vec<i64>>,
    /// The `quantiles` column.
    pub quantiles: Option<String>,
    /// The `exemplars` column.
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
        strs(rows.iter().map(|r| r.kind.as_str())),
        strs(rows.iter().map(|r| r.status.as_str())),
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
            kind: SpanKind::Server,
            status: SpanStatus::Ok,
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
