//! OTLP log records to `logs` rows.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use sightline_model::schema::LogRow;

use crate::attributes::{self, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE, EXCEPTION_TYPE, LOGGER};
use crate::resource::ResourceInfo;
use crate::{Normalized, Rejections};
pub use sightline_model::severity::{severity_name, severity_number_from_text};

/// An id from bytes: `None` when empty or all zero, an error when the length is wrong.
pub(crate) fn optional_id(bytes: &[u8], len: usize, field: &str) -> Result<Option<String>, String> {
    if bytes.is_empty() || bytes.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if bytes.len() != len {
        return Err(format!("{field} is {} bytes, expected {len}", bytes.len()));
    }
    Ok(Some(hex::encode(bytes)))
}

/// Normalizes an export request; records that cannot be stored are counted as rejections.
pub fn normalize(request: &ExportLogsServiceRequest, received_ns: i64) -> Normalized {
    let mut rows = Vec::new();
    let mut rejections = Rejections::default();
    for resource_logs in &request.resource_logs {
        let resource = ResourceInfo::from_resource(resource_logs.resource.as_ref());
        for scope_logs in &resource_logs.scope_logs {
            let scope_name = scope_logs
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .filter(|n| !n.is_empty());
            for record in &scope_logs.log_records {
                let ids = optional_id(&record.trace_id, 16, "traceId")
                    .and_then(|t| optional_id(&record.span_id, 8, "spanId").map(|s| (t, s)));
                let (trace_id, span_id) = match ids {
                    Ok(ids) => ids,
                    Err(problem) => {
                        rejections.reject(|| format!("log record rejected: {problem}"));
                        continue;
                    }
                };
                let observed_ns = match to_ns(record.observed_time_unix_nano) {
                    0 => received_ns,
                    t => t,
                };
                let time_ns = match to_ns(record.time_unix_nano) {
                    0 => observed_ns,
                    t => t,
                };
                let severity_number = match record.severity_number {
                    n @ 1..=24 => n,
                    _ => severity_number_from_text(&record.severity_text).unwrap_or(9),
                };
                let attrs = &record.attributes;
                let body = match record.body.as_ref().map(|b| &b.value) {
                    Some(Some(Any::StringValue(s))) => s.clone(),
                    Some(Some(_)) => record
                        .body
                        .as_ref()
                        .map(attributes::any_to_json)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                rows.push(LogRow {
                    time_ns,
                    observed_time_ns: observed_ns,
                    trace_id,
                    span_id,
                    severity_number,
                    severity: severity_name(severity_number),
                    body,
                    service_name: resource.service_name.clone(),
                    service_version: resource.service_version.clone(),
                    environment: resource.environment.clone(),
                    logger: attributes::find_text(attrs, LOGGER).or_else(|| scope_name.clone()),
                    exception_type: attributes::find_text(attrs, EXCEPTION_TYPE),
                    exception_message: attributes::find_text(attrs, EXCEPTION_MESSAGE),
                    exception_stacktrace: attributes::find_text(attrs, EXCEPTION_STACKTRACE),
                    attributes: attributes::to_json_text(attrs),
                    resource_attributes: resource.attributes.clone(),
                    scope_name: scope_name.clone(),
                });
            }
        }
    }
    Normalized {
        logs: rows,
        rejections,
        ..Default::default()
    }
}

/// OTLP times are u64 ns; Arrow timestamps are i64 ns (good until the year 2262).
pub(crate) fn to_ns(unix_nano: u64) -> i64 {
    i64::try_from(unix_nano).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use crate::BodyEncoding;

    #[test]
    fn logs_take_severity_from_text_when_the_number_is_missing() {
        let body = br#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"w"}}]},
          "scopeLogs":[{"scope":{"name":"app.worker"},"logRecords":[
            {"timeUnixNano":"5","severityText":"WARNING","body":{"stringValue":"slow"},
             "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174"},
            {"severityNumber":17,"body":{"kvlistValue":{"values":[{"key":"a","value":{"intValue":1}}]}},
             "attributes":[{"key":"exception.type","value":{"stringValue":"ValueError"}}]}
          ]}]}]}"#;
        let normalized = crate::ingest_logs(
            body,
            BodyEncoding::Json,
            99,
            &crate::Intake::unredacted(crate::Limits::default()),
        )
        .expect("valid body");
        let rows = normalized.logs;
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].severity, rows[0].severity_number), ("warn", 13));
        assert_eq!(rows[0].time_ns, 5);
        assert_eq!(rows[0].logger.as_deref(), Some("app.worker"));
        assert_eq!(rows[0].span_id.as_deref(), Some("eee19b7ec3c1b174"));
        assert_eq!(rows[1].severity, "error");
        assert_eq!(rows[1].time_ns, 99, "falls back to the receive time");
        assert_eq!(rows[1].body, r#"{"a":1}"#);
        assert_eq!(rows[1].exception_type.as_deref(), Some("ValueError"));
        assert_eq!(rows[1].trace_id, None);
    }
}
