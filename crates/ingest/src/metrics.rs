//! OTLP metrics to `metrics` rows: one row per data point. Exponential histograms are stored with
//! explicit upper bounds computed from their scale, so every histogram reads the same way.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, exemplar, metric::Data, number_data_point,
};
use serde_json::{Value, json};
use sightline_model::schema::MetricRow;

use crate::attributes;
use crate::logs::to_ns;
use crate::resource::ResourceInfo;
use crate::{Normalized, Rejections};

fn temporality_name(value: i32) -> Option<&'static str> {
    match value {
        1 => Some("delta"),
        2 => Some("cumulative"),
        _ => None,
    }
}

fn exemplars_json(exemplars: &[Exemplar]) -> Option<String> {
    if exemplars.is_empty() {
        return None;
    }
    let items: Vec<Value> = exemplars
        .iter()
        .map(|e| {
            let value = match e.value {
                Some(exemplar::Value::AsDouble(d)) => json!(d),
                Some(exemplar::Value::AsInt(i)) => json!(i),
                None => Value::Null,
            };
            json!({
                "time_ns": to_ns(e.time_unix_nano),
                "value": value,
                "trace_id": hex::encode(&e.trace_id),
                "span_id": hex::encode(&e.span_id),
                "attributes": Value::Object(attributes::to_json_map(&e.filtered_attributes)),
            })
        })
        .collect();
    Some(Value::Array(items).to_string())
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

fn count_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Normalizes an export request; points without a time are rejected.
pub fn normalize(request: &ExportMetricsServiceRequest, received_ns: i64) -> Normalized {
    let mut rows = Vec::new();
    let mut rejections = Rejections::default();
    for resource_metrics in &request.resource_metrics {
        let resource = ResourceInfo::from_resource(resource_metrics.resource.as_ref());
        for scope_metrics in &resource_metrics.scope_metrics {
            let scope_name = scope_metrics
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .filter(|n| !n.is_empty());
            for metric in &scope_metrics.metrics {
                let base = |metric_type: &'static str,
                            attrs: &[KeyValue],
                            time: u64,
                            start: u64|
                 -> MetricRow {
                    let time_ns = match to_ns(time) {
                        0 => received_ns,
                        t => t,
                    };
                    MetricRow {
                        time_ns,
                        start_time_ns: Some(to_ns(start)).filter(|t| *t != 0),
                        name: metric.name.clone(),
                        metric_type,
                        unit: Some(metric.unit.clone()).filter(|u| !u.is_empty()),
                        description: Some(metric.description.clone()).filter(|d| !d.is_empty()),
                        service_name: resource.service_name.clone(),
                        service_version: resource.service_version.clone(),
                        environment: resource.environment.clone(),
                        attributes: attributes::to_json_text(attrs),
                        resource_attributes: resource.attributes.clone(),
                        scope_name: scope_name.clone(),
                        ..Default::default()
                    }
                };
                if metric.name.is_empty() {
                    rejections.reject(|| "metric rejected: name is empty".to_string());
                    continue;
                }
                match &metric.data {
                    None => rejections
                        .reject(|| format!("metric {:?} rejected: it has no data", metric.name)),
                    Some(Data::Gauge(gauge)) => {
                        for p in &gauge.data_points {
                            let mut row = base(
                                "gauge",
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                            );
                            row.value = number_value(p.value.as_ref());
                            row.exemplars = exemplars_json(&p.exemplars);
                            rows.push(row);
                        }
                    }
                    Some(Data::Sum(sum)) => {
                        for p in &sum.data_points {
                            let mut row = base(
                                "sum",
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                            );
                            row.value = number_value(p.value.as_ref());
                            row.monotonic = Some(sum.is_monotonic);
                            row.temporality = temporality_name(sum.aggregation_temporality);
                            row.exemplars = exemplars_json(&p.exemplars);
                            rows.push(row);
                        }
                    }
                    Some(Data::Histogram(histogram)) => {
                        for p in &histogram.data_points {
                            let mut row = base(
                                "histogram",
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                            );
                            row.temporality = temporality_name(histogram.aggregation_temporality);
                            row.count = Some(count_i64(p.count));
                            row.sum = p.sum.and_then(finite);
                            row.min = p.min.and_then(finite);
                            row.max = p.max.and_then(finite);
                            row.bucket_bounds = Some(p.explicit_bounds.clone());
                            row.bucket_counts =
                                Some(p.bucket_counts.iter().map(|c| count_i64(*c)).collect());
                            row.exemplars = exemplars_json(&p.exemplars);
                            rows.push(row);
                        }
                    }
                    Some(Data::ExponentialHistogram(histogram)) => {
                        for p in &histogram.data_points {
                            let mut row = base(
                                "exponential_histogram",
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                            );
                            row.temporality = temporality_name(histogram.aggregation_temporality);
                            row.count = Some(count_i64(p.count));
                            row.sum = p.sum.and_then(finite);
                            row.min = p.min.and_then(finite);
                            row.max = p.max.and_then(finite);
                            let (bounds, counts) =
                                exponential_buckets(p.scale, p.zero_count, p.positive.as_ref());
                            row.bucket_bounds = Some(bounds);
                            row.bucket_counts = Some(counts);
                            row.exemplars = exemplars_json(&p.exemplars);
                            rows.push(row);
                        }
                    }
                    Some(Data::Summary(summary)) => {
                        for p in &summary.data_points {
                            let mut row = base(
                                "summary",
                                &p.attributes,
                                p.time_unix_nano,
                                p.start_time_unix_nano,
                            );
                            row.count = Some(count_i64(p.count));
                            row.sum = finite(p.sum);
                            let quantiles: Vec<Value> = p
                                .quantile_values
                                .iter()
                                .map(|q| json!({"quantile": q.quantile, "value": q.value}))
                                .collect();
                            row.quantiles = Some(Value::Array(quantiles).to_string());
                            rows.push(row);
                        }
                    }
                }
            }
        }
    }
    Normalized {
        metrics: rows,
        rejections,
        ..Default::default()
    }
}

fn number_value(value: Option<&number_data_point::Value>) -> Option<f64> {
    match value? {
        number_data_point::Value::AsDouble(d) => finite(*d),
        number_data_point::Value::AsInt(i) => Some(*i as f64),
    }
}

/// Upper bounds and counts of an exponential histogram's zero and positive buckets.
fn exponential_buckets(
    scale: i32,
    zero_count: u64,
    positive: Option<
        &opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets,
    >,
) -> (Vec<f64>, Vec<i64>) {
    let base = 2f64.powf(2f64.powi(-scale.clamp(-10, 20)));
    let mut bounds = vec![0.0];
    let mut counts = vec![count_i64(zero_count)];
    if let Some(buckets) = positive {
        for (i, count) in buckets.bucket_counts.iter().enumerate() {
            let index = i64::from(buckets.offset) + i as i64 + 1;
            bounds.push(base.powf(index as f64));
            counts.push(count_i64(*count));
        }
    }
    (bounds, counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BodyEncoding;

    #[test]
    fn normalize_makes_one_row_per_point_of_each_type() {
        let body = br#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"orders"}}]},
          "scopeMetrics":[{"metrics":[
            {"name":"orders_created","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,
               "dataPoints":[{"timeUnixNano":"100","asInt":"3","attributes":[{"key":"region","value":{"stringValue":"eu"}}]}]}},
            {"name":"queue_depth","gauge":{"dataPoints":[{"timeUnixNano":"100","asDouble":4.5}]}},
            {"name":"latency","histogram":{"aggregationTemporality":1,"dataPoints":[{"timeUnixNano":"100","count":"3","sum":6,
               "bucketCounts":["1","2","0"],"explicitBounds":[1,5]}]}},
            {"name":"nodata"}
          ]}]}]}"#;
        let out = crate::ingest_metrics(
            body,
            BodyEncoding::Json,
            0,
            &crate::Intake::unredacted(crate::Limits::default()),
        )
        .expect("valid body");
        assert_eq!(out.metrics.len(), 3);
        assert_eq!(out.rejections.count, 1);
        let sum = &out.metrics[0];
        assert_eq!(
            (sum.metric_type, sum.value, sum.monotonic, sum.temporality),
            ("sum", Some(3.0), Some(true), Some("cumulative"))
        );
        assert_eq!(sum.attributes, r#"{"region":"eu"}"#);
        assert_eq!(out.metrics[1].value, Some(4.5));
        let histogram = &out.metrics[2];
        assert_eq!(histogram.count, Some(3));
        assert_eq!(histogram.bucket_counts.as_deref(), Some(&[1, 2, 0][..]));
        assert_eq!(histogram.temporality, Some("delta"));
    }

    #[test]
    fn exponential_buckets_have_growing_upper_bounds() {
        let buckets =
            opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets {
                offset: 0,
                bucket_counts: vec![1, 1],
            };
        let (bounds, counts) = exponential_buckets(0, 2, Some(&buckets));
        assert_eq!(bounds, vec![0.0, 2.0, 4.0]);
        assert_eq!(counts, vec![2, 1, 1]);
    }
}
