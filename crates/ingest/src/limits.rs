//! Bounds on what one record may carry, applied to a decoded request before normalization:
//! attributes beyond the per-record limit are dropped and long strings are cut with a marker.
//! Both are counted, not rejected, so one oversized value never costs the whole record.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::{Deserialize, Serialize};
use sightline_model::{ConfigError, HumanDuration, Lifetime};
use std::collections::BTreeMap;

/// `[limits]` of `sightline.toml`: what one record may carry. Every key is optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Attributes kept per record (span, event, link, log record, data point, resource); the
    /// rest are dropped and counted.
    pub max_attributes_per_record: usize,
    /// Bytes kept of one string value (attribute values, span names, log bodies); longer ones are
    /// cut at a character boundary with a `…[truncated N bytes]` marker. At least 16.
    pub max_attribute_value_bytes: usize,
    /// Levels of arrays and maps inside one value; deeper ones are replaced by a marker. From 1
    /// to [`crate::attributes::MAX_DEPTH`].
    pub max_nesting_depth: usize,
    /// A record stamped further before the server's clock is rejected (`"forever"`: no bound).
    pub max_timestamp_age: Lifetime,
    /// A record stamped (or a span ending) further after the server's clock is rejected.
    pub max_timestamp_ahead: HumanDuration,
}

const DAY_NS: i64 = 86_400_000_000_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attributes_per_record: 1024,
            max_attribute_value_bytes: 64 * 1024,
            max_nesting_depth: crate::attributes::MAX_DEPTH,
            max_timestamp_age: Lifetime::For(HumanDuration::from_nanos(30 * DAY_NS)),
            max_timestamp_ahead: HumanDuration::from_nanos(DAY_NS),
        }
    }
}

impl Limits {
    /// The table of `sightline.toml` these keys live in.
    pub const SECTION: &'static str = "limits";

    /// Refuses values that cannot work: a value limit too short to hold the truncation marker,
    /// a nesting depth outside 1 to [`crate::attributes::MAX_DEPTH`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        let key = |name: &str| format!("{}.{name}", Self::SECTION);
        if self.max_attribute_value_bytes < 16 {
            return Err(ConfigError::new(
                key("max_attribute_value_bytes"),
                format!(
                    "must be at least 16, not {}",
                    self.max_attribute_value_bytes
                ),
            ));
        }
        let most = crate::attributes::MAX_DEPTH;
        if !(1..=most).contains(&self.max_nesting_depth) {
            return Err(ConfigError::new(
                key("max_nesting_depth"),
                format!(
                    "must be between 1 and {most}, not {}",
                    self.max_nesting_depth
                ),
            ));
        }
        Ok(())
    }

    fn max_age_ns(&self) -> i64 {
        self.max_timestamp_age.as_nanos().unwrap_or(i64::MAX)
    }
}

/// A record stamped further than this after it arrived was stamped by a clock running ahead.
const SKEW_AHEAD_NS: i64 = 60_000_000_000;
/// A record that arrives this long after its time came from a clock behind, or a backlog.
const LATE_NS: i64 = 3_600_000_000_000;

/// How one service's records stood against the server's clock in one export.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Timing {
    /// Records kept.
    pub records: u64,
    /// Records refused for their time.
    pub refused: u64,
    /// Why the first was refused.
    pub first_refusal: Option<String>,
    /// Records kept although stamped more than a minute after they arrived.
    pub ahead: u64,
    /// Records kept that arrived more than an hour after their time.
    pub late: u64,
}

/// Rejects records whose time is too far from the server's clock (a sender with a broken clock
/// or a unit mix-up, e.g. seconds sent as nanoseconds): they would land in the wrong hour, be
/// dropped by retention at once, or sort ahead of everything for days.
/// Per service, it also notes what it kept and refused and how records stood against their
/// arrival ([`Timing`]).
pub fn enforce_time_bounds(normalized: &mut crate::Normalized, received_ns: i64, limits: Limits) {
    let earliest = received_ns.saturating_sub(limits.max_age_ns());
    let latest = received_ns.saturating_add(limits.max_timestamp_ahead.as_nanos());
    let reason = |what: &str, t: i64| {
        let when = chrono::DateTime::from_timestamp_nanos(t).format("%Y-%m-%dT%H:%M:%S%.9fZ");
        let now = chrono::DateTime::from_timestamp_nanos(received_ns).format("%Y-%m-%dT%H:%M:%SZ");
        if t < earliest {
            format!(
                "{what} rejected: its time {when} is more than {} before the server's clock ({now}); \
                 check the sender's clock and that times are in nanoseconds (limits.max_timestamp_age)",
                humanize(limits.max_age_ns())
            )
        } else {
            format!(
                "{what} rejected: its time {when} is more than {} after the server's clock ({now}); \
                 check the sender's clock (limits.max_timestamp_ahead)",
                humanize(limits.max_timestamp_ahead.as_nanos())
            )
        }
    };
    // A span's end is bounded too: one ending years ahead would carry a duration that no sum
    // of durations (rollups, time spent per route) can hold.
    let end_reason = |end: i64| {
        let when = chrono::DateTime::from_timestamp_nanos(end).format("%Y-%m-%dT%H:%M:%S%.9fZ");
        format!(
            "span rejected: it ends at {when}, more than {} after the server's clock; check the \
             sender's clock and the span's end time (limits.max_timestamp_ahead)",
            humanize(limits.max_timestamp_ahead.as_nanos())
        )
    };
    let rejections = &mut normalized.rejections;
    let timing = &mut normalized.timing;
    // Kept or refused, and how the record's time stood against its arrival, per service.
    let mut keep = |service: &str, what: &str, t: i64, end: Option<i64>| {
        let refusal = if !(earliest..=latest).contains(&t) {
            Some(reason(what, t))
        } else {
            end.filter(|e| *e > latest).map(end_reason)
        };
        let notes = match timing.get_mut(service) {
            Some(notes) => notes,
            None => timing.entry(service.to_string()).or_default(),
        };
        if let Some(refusal) = refusal {
            notes.refused += 1;
            if notes.first_refusal.is_none() {
                notes.first_refusal = Some(refusal.clone());
            }
            rejections.reject(|| refusal);
            return false;
        }
        notes.records += 1;
        // A record is stamped when it ends (a span) or happens; it cannot arrive before that.
        let stamped = end.unwrap_or(t);
        if stamped > received_ns + SKEW_AHEAD_NS {
            notes.ahead += 1;
        } else if stamped < received_ns - LATE_NS {
            notes.late += 1;
        }
        true
    };
    normalized.spans.retain(|row| {
        keep(
            &row.service_name,
            "span",
            row.start_time_ns,
            Some(row.end_time_ns),
        )
    });
    normalized
        .logs
        .retain(|row| keep(&row.service_name, "log record", row.time_ns, None));
    normalized
        .metrics
        .retain(|row| keep(&row.service_name, "data point", row.time_ns, None));
}

fn humanize(ns: i64) -> String {
    if ns % DAY_NS == 0 {
        format!("{} days", ns / DAY_NS)
    } else if ns % 3_600_000_000_000 == 0 {
        format!("{} hours", ns / 3_600_000_000_000)
    } else {
        format!("{} s", ns / 1_000_000_000)
    }
}

/// What the limits changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Attributes dropped beyond `max_attributes_per_record`.
    pub attributes_dropped: u64,
    /// String values cut at `max_attribute_value_bytes`.
    pub values_truncated: u64,
    /// Arrays and maps nested deeper than the limit, replaced by a marker.
    pub values_too_deep: u64,
    /// Per service (the resource's `service.name`): (values cut or replaced, attributes dropped).
    pub by_service: BTreeMap<String, (u64, u64)>,
}

struct Enforcer {
    limits: Limits,
    limited: Limited,
}

impl Enforcer {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            limited: Limited::default(),
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.limited.values_truncated + self.limited.values_too_deep,
            self.limited.attributes_dropped,
        )
    }

    /// Attributes what changed since `before` to the service of `resource` (read only when
    /// something changed: most blocks are within the limits).
    fn attribute(&mut self, resource: Option<&Resource>, before: (u64, u64)) {
        let (values, dropped) = self.counts();
        let (values, dropped) = (values - before.0, dropped - before.1);
        if values + dropped > 0 {
            let service = crate::resource::service_name(resource);
            let entry = self.limited.by_service.entry(service).or_default();
            entry.0 += values;
            entry.1 += dropped;
        }
    }

    fn text(&mut self, text: &mut String) {
        if text.len() <= self.limits.max_attribute_value_bytes {
            return;
        }
        let mut cut = self.limits.max_attribute_value_bytes;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let removed = text.len() - cut;
        text.truncate(cut);
        text.push_str(&format!("…[truncated {removed} bytes]"));
        self.limited.values_truncated += 1;
    }

    fn value(&mut self, value: &mut AnyValue, depth: usize) {
        let nested = matches!(value.value, Some(Any::ArrayValue(_) | Any::KvlistValue(_)));
        if nested && depth >= self.limits.max_nesting_depth {
            value.value = Some(Any::StringValue(crate::attributes::depth_marker(
                self.limits.max_nesting_depth,
            )));
            self.limited.values_too_deep += 1;
            return;
        }
        match &mut value.value {
            Some(Any::StringValue(s)) => self.text(s),
            Some(Any::BytesValue(b)) if b.len() > self.limits.max_attribute_value_bytes => {
                b.truncate(self.limits.max_attribute_value_bytes);
                self.limited.values_truncated += 1;
            }
            Some(Any::ArrayValue(array)) => {
                if array.values.len() > self.limits.max_attributes_per_record {
                    self.limited.attributes_dropped +=
                        (array.values.len() - self.limits.max_attributes_per_record) as u64;
                    array.values.truncate(self.limits.max_attributes_per_record);
                }
                array
                    .values
                    .iter_mut()
                    .for_each(|v| self.value(v, depth + 1));
            }
            Some(Any::KvlistValue(list)) => self.attributes_at(&mut list.values, depth + 1),
            _ => {}
        }
    }

    fn attributes(&mut self, attributes: &mut Vec<KeyValue>) {
        self.attributes_at(attributes, 0);
    }

    fn attributes_at(&mut self, attributes: &mut Vec<KeyValue>, depth: usize) {
        if attributes.len() > self.limits.max_attributes_per_record {
            self.limited.attributes_dropped +=
                (attributes.len() - self.limits.max_attributes_per_record) as u64;
            attributes.truncate(self.limits.max_attributes_per_record);
        }
        for kv in attributes.iter_mut() {
            self.text(&mut kv.key);
            if let Some(value) = &mut kv.value {
                self.value(value, depth);
            }
        }
    }
}

/// Applies the limits to a traces request.
pub fn enforce_traces(request: &mut ExportTraceServiceRequest, limits: Limits) -> Limited {
    let mut e = Enforcer::new(limits);
    for resource_spans in &mut request.resource_spans {
        let before = e.counts();
        if let Some(resource) = &mut resource_spans.resource {
            e.attributes(&mut resource.attributes);
        }
        for scope_spans in &mut resource_spans.scope_spans {
            for span in &mut scope_spans.spans {
                e.text(&mut span.name);
                e.attributes(&mut span.attributes);
                if let Some(status) = &mut span.status {
                    e.text(&mut status.message);
                }
                for event in &mut span.events {
                    e.text(&mut event.name);
                    e.attributes(&mut event.attributes);
                }
                for link in &mut span.links {
                    e.attributes(&mut link.attributes);
                }
            }
        }
        e.attribute(resource_spans.resource.as_ref(), before);
    }
    e.limited
}

/// Applies the limits to a logs request.
pub fn enforce_logs(request: &mut ExportLogsServiceRequest, limits: Limits) -> Limited {
    let mut e = Enforcer::new(limits);
    for resource_logs in &mut request.resource_logs {
        let before = e.counts();
        if let Some(resource) = &mut resource_logs.resource {
            e.attributes(&mut resource.attributes);
        }
        for scope_logs in &mut resource_logs.scope_logs {
            for record in &mut scope_logs.log_records {
                if let Some(body) = &mut record.body {
                    e.value(body, 0);
                }
                e.attributes(&mut record.attributes);
            }
        }
        e.attribute(resource_logs.resource.as_ref(), before);
    }
    e.limited
}

/// Applies the limits to a metrics request.
pub fn enforce_metrics(request: &mut ExportMetricsServiceRequest, limits: Limits) -> Limited {
    let mut e = Enforcer::new(limits);
    for resource_metrics in &mut request.resource_metrics {
        let before = e.counts();
        if let Some(resource) = &mut resource_metrics.resource {
            e.attributes(&mut resource.attributes);
        }
        for scope_metrics in &mut resource_metrics.scope_metrics {
            for metric in &mut scope_metrics.metrics {
                match &mut metric.data {
                    Some(Data::Gauge(g)) => g
                        .data_points
                        .iter_mut()
                        .for_each(|p| e.attributes(&mut p.attributes)),
                    Some(Data::Sum(s)) => s
                        .data_points
                        .iter_mut()
                        .for_each(|p| e.attributes(&mut p.attributes)),
                    Some(Data::Histogram(h)) => h
                        .data_points
                        .iter_mut()
                        .for_each(|p| e.attributes(&mut p.attributes)),
                    Some(Data::ExponentialHistogram(h)) => h
                        .data_points
                        .iter_mut()
                        .for_each(|p| e.attributes(&mut p.attributes)),
                    Some(Data::Summary(s)) => s
                        .data_points
                        .iter_mut()
                        .for_each(|p| e.attributes(&mut p.attributes)),
                    None => {}
                }
            }
        }
        e.attribute(resource_metrics.resource.as_ref(), before);
    }
    e.limited
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};

    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Any::StringValue(value.into())),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary_with_a_marker_and_extra_attributes_dropped() {
        let mut attributes: Vec<KeyValue> = (0..10).map(|i| kv(&format!("k{i}"), "v")).collect();
        attributes[0] = kv("big", &"é".repeat(100));
        let mut request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(AnyValue {
                            value: Some(Any::StringValue("x".repeat(50))),
                        }),
                        attributes,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let limited = enforce_logs(
            &mut request,
            Limits {
                max_attributes_per_record: 4,
                max_attribute_value_bytes: 21,
                ..Limits::default()
            },
        );
        assert_eq!(
            limited,
            Limited {
                attributes_dropped: 6,
                values_truncated: 2,
                values_too_deep: 0,
                // A resource without service.name: the SDKs' own default name.
                by_service: BTreeMap::from([("unknown_service".to_string(), (2, 6))]),
            }
        );
        let record = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(record.attributes.len(), 4);
        let Some(Any::StringValue(big)) = &record.attributes[0]
            .value
            .as_ref()
            .and_then(|v| v.value.clone())
        else {
            panic!("string value")
        };
        assert_eq!(big, &format!("{}…[truncated 180 bytes]", "é".repeat(10)));
    }

    #[test]
    fn values_nested_deeper_than_the_configured_depth_become_a_marker_and_are_counted() {
        use opentelemetry_proto::tonic::common::v1::ArrayValue;
        // A log body of arrays nested 5 deep around a string.
        let mut body = AnyValue {
            value: Some(Any::StringValue("leaf".into())),
        };
        for _ in 0..5 {
            body = AnyValue {
                value: Some(Any::ArrayValue(ArrayValue { values: vec![body] })),
            };
        }
        let mut request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        body: Some(body.clone()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut shallow = request.clone();
        let limits = Limits {
            max_nesting_depth: 2,
            ..Limits::default()
        };
        assert_eq!(enforce_logs(&mut request, limits).values_too_deep, 1);
        let mut value = request.resource_logs[0].scope_logs[0].log_records[0]
            .body
            .clone()
            .expect("body");
        for _ in 0..2 {
            let Some(Any::ArrayValue(array)) = value.value else {
                panic!("two levels kept")
            };
            value = array.values[0].clone();
        }
        assert_eq!(
            value.value,
            Some(Any::StringValue(crate::attributes::depth_marker(2)))
        );
        // Within the default depth nothing changes.
        assert_eq!(
            enforce_logs(&mut shallow, Limits::default()),
            Limited::default()
        );
        assert_eq!(
            shallow.resource_logs[0].scope_logs[0].log_records[0].body,
            Some(body)
        );
    }

    #[test]
    fn records_far_from_the_server_clock_are_rejected_with_the_reason() {
        let day = 86_400_000_000_000i64;
        let now = 1_800_000_000_000_000_000i64;
        let body = |t: i64| {
            format!(
                r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[
                  {{"timeUnixNano":"{t}","body":{{"stringValue":"x"}}}},
                  {{"timeUnixNano":"{}","body":{{"stringValue":"fine"}}}}]}}]}}]}}"#,
                now - 1000
            )
        };
        for (t, word) in [
            (now - 31 * day, "before"),
            (now + 2 * day, "after"),
            (1_800_000_000, "before"),
        ] {
            let out = crate::ingest_logs(
                body(t).as_bytes(),
                crate::BodyEncoding::Json,
                now,
                &crate::Intake::unredacted(Limits::default()),
            )
            .expect("decodes");
            assert_eq!((out.logs.len(), out.rejections.count), (1, 1), "time {t}");
            let reason = out.rejections.first_reason.expect("a reason");
            assert!(
                reason.contains(word) && reason.contains("server's clock"),
                "{reason}"
            );
        }
        let open = Limits {
            max_timestamp_age: Lifetime::Forever,
            ..Limits::default()
        };
        let out = crate::ingest_logs(
            body(1).as_bytes(),
            crate::BodyEncoding::Json,
            now,
            &crate::Intake::unredacted(open),
        )
        .expect("decodes");
        assert_eq!(out.logs.len(), 2, "no age bound: any past time is kept");
    }
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn limits_read_their_keys_and_refuse_values_that_cannot_work() {
        let limits: Limits = toml::from_str(
            "max_attribute_value_bytes = 100\nmax_timestamp_age = \"forever\"\nmax_timestamp_ahead = \"2h\"",
        )
        .expect("valid keys");
        assert_eq!(limits.max_attribute_value_bytes, 100);
        assert_eq!(limits.max_timestamp_age, Lifetime::Forever);
        assert_eq!(limits.max_timestamp_ahead, HumanDuration::from_secs(7200));
        assert_eq!(
            limits.max_attributes_per_record,
            Limits::default().max_attributes_per_record
        );
        assert!(
            toml::from_str::<Limits>("max_attributes = 3").is_err(),
            "unknown keys are refused"
        );
        let short = Limits {
            max_attribute_value_bytes: 8,
            ..Limits::default()
        };
        assert_eq!(
            short.validate().map_err(|e| e.key),
            Err("limits.max_attribute_value_bytes".to_string())
        );
        let deep = Limits {
            max_nesting_depth: 17,
            ..Limits::default()
        };
        assert!(deep.validate().is_err());
        assert!(Limits::default().validate().is_ok());
    }
}
