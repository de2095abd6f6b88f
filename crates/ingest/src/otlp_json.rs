//! OTLP/JSON as senders really write it, made ready for the protobuf-derived serde types.
//!
//! The serde types accept hex ids, int64 as strings or numbers and integer enums, but they reject
//! enum names (`"SPAN_KIND_SERVER"`), empty `arrayValue`/`kvlistValue` objects and `null` lists,
//! silently ignore snake_case field names, and fail the whole request on one bad id. This pass
//! turns enum names into numbers, fills empty values, drops nulls, refuses snake_case names with a
//! message that names the field, and takes records with unreadable ids out of the request as
//! partial-success rejections instead of failing everything.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::{Error, Rejections};

/// Parses an OTLP/JSON traces request.
pub fn parse_traces(bytes: &[u8]) -> Result<(ExportTraceServiceRequest, Rejections), Error> {
    parse(
        bytes,
        "resourceSpans",
        &["scopeSpans", "spans"],
        "span",
        &ID_FIELDS_SPAN,
    )
}

/// Parses an OTLP/JSON logs request.
pub fn parse_logs(bytes: &[u8]) -> Result<(ExportLogsServiceRequest, Rejections), Error> {
    parse(
        bytes,
        "resourceLogs",
        &["scopeLogs", "logRecords"],
        "log record",
        &ID_FIELDS_LOG,
    )
}

/// Parses an OTLP/JSON metrics request.
pub fn parse_metrics(bytes: &[u8]) -> Result<(ExportMetricsServiceRequest, Rejections), Error> {
    parse(
        bytes,
        "resourceMetrics",
        &["scopeMetrics", "metrics"],
        "metric",
        &[],
    )
}

/// An id field of a record: its name and its length in bytes (0 = may be empty).
struct IdField {
    name: &'static str,
    bytes: usize,
    required: bool,
}

const ID_FIELDS_SPAN: [IdField; 3] = [
    IdField {
        name: "traceId",
        bytes: 16,
        required: true,
    },
    IdField {
        name: "spanId",
        bytes: 8,
        required: true,
    },
    IdField {
        name: "parentSpanId",
        bytes: 8,
        required: false,
    },
];

const ID_FIELDS_LOG: [IdField; 2] = [
    IdField {
        name: "traceId",
        bytes: 16,
        required: false,
    },
    IdField {
        name: "spanId",
        bytes: 8,
        required: false,
    },
];

fn parse<T: DeserializeOwned>(
    bytes: &[u8],
    top_key: &'static str,
    record_path: &[&str; 2],
    record_noun: &str,
    id_fields: &[IdField],
) -> Result<(T, Rejections), Error> {
    let mut value: Value = serde_json::from_slice(bytes).map_err(|e| Error::Json {
        // What is wrong and where first (bad UTF-8, nesting too deep, a cut body), then the shape.
        reason: format!(
            "the body is not valid JSON: {e}; an OTLP/JSON export looks like {{\"{top_key}\": [...]}}"
        ),
    })?;
    if !value.is_object() {
        return Err(Error::Json {
            reason: format!("expected a JSON object such as {{\"{top_key}\": [...]}}"),
        });
    }
    repair(&mut value, "$")?;
    let mut rejections = Rejections::default();
    if let Value::Object(root) = &mut value {
        let resources = root
            .entry(top_key)
            .or_insert_with(|| Value::Array(Vec::new()));
        drop_records_with_bad_ids(
            resources,
            record_path,
            record_noun,
            id_fields,
            &mut rejections,
        );
    }
    let parsed = serde_path_to_error::deserialize(value).map_err(|e| Error::Json {
        reason: format!("at {}: {}", e.path(), e.inner()),
    })?;
    Ok((parsed, rejections))
}

/// Normalizes a JSON tree in place; fails on snake_case field names and unknown enum names.
fn repair(value: &mut Value, path: &str) -> Result<(), Error> {
    match value {
        Value::Object(map) => {
            if let Some(key) = map.keys().find(|k| k.contains('_')) {
                return Err(Error::Json {
                    reason: format!(
                        "field {key:?} at {path} uses snake_case; OTLP/JSON field names are lowerCamelCase (expected {:?})",
                        lower_camel(key)
                    ),
                });
            }
            map.retain(|_, v| !v.is_null());
            for (key, field) in map.iter_mut() {
                if let Some(table) = enum_table(key)
                    && let Value::String(name) = field
                {
                    let number = table.iter().find(|(n, _)| n == name).map(|(_, v)| *v).ok_or_else(
                        || Error::Json {
                            reason: format!(
                                "unknown enum value {name:?} for {key:?} at {path}: expected an integer or one of {}",
                                table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                            ),
                        },
                    )?;
                    *field = Value::from(number);
                }
                if (key == "arrayValue" || key == "kvlistValue")
                    && let Value::Object(inner) = field
                {
                    inner
                        .entry("values")
                        .or_insert_with(|| Value::Array(Vec::new()));
                }
            }
            for (key, field) in map.iter_mut() {
                repair(field, &format!("{path}.{key}"))?;
            }
        }
        Value::Array(items) => {
            items.retain(|v| !v.is_null());
            for (i, item) in items.iter_mut().enumerate() {
                repair(item, &format!("{path}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn lower_camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

const SPAN_KIND: &[(&str, i64)] = &[
    ("SPAN_KIND_UNSPECIFIED", 0),
    ("SPAN_KIND_INTERNAL", 1),
    ("SPAN_KIND_SERVER", 2),
    ("SPAN_KIND_CLIENT", 3),
    ("SPAN_KIND_PRODUCER", 4),
    ("SPAN_KIND_CONSUMER", 5),
];

const STATUS_CODE: &[(&str, i64)] = &[
    ("STATUS_CODE_UNSET", 0),
    ("STATUS_CODE_OK", 1),
    ("STATUS_CODE_ERROR", 2),
];

const TEMPORALITY: &[(&str, i64)] = &[
    ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
    ("AGGREGATION_TEMPORALITY_DELTA", 1),
    ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
];

const SEVERITY: &[(&str, i64)] = &[
    ("SEVERITY_NUMBER_UNSPECIFIED", 0),
    ("SEVERITY_NUMBER_TRACE", 1),
    ("SEVERITY_NUMBER_TRACE2", 2),
    ("SEVERITY_NUMBER_TRACE3", 3),
    ("SEVERITY_NUMBER_TRACE4", 4),
    ("SEVERITY_NUMBER_DEBUG", 5),
    ("SEVERITY_NUMBER_DEBUG2", 6),
    ("SEVERITY_NUMBER_DEBUG3", 7),
    ("SEVERITY_NUMBER_DEBUG4", 8),
    ("SEVERITY_NUMBER_INFO", 9),
    ("SEVERITY_NUMBER_INFO2", 10),
    ("SEVERITY_NUMBER_INFO3", 11),
    ("SEVERITY_NUMBER_INFO4", 12),
    ("SEVERITY_NUMBER_WARN", 13),
    ("SEVERITY_NUMBER_WARN2", 14),
    ("SEVERITY_NUMBER_WARN3", 15),
    ("SEVERITY_NUMBER_WARN4", 16),
    ("SEVERITY_NUMBER_ERROR", 17),
    ("SEVERITY_NUMBER_ERROR2", 18),
    ("SEVERITY_NUMBER_ERROR3", 19),
    ("SEVERITY_NUMBER_ERROR4", 20),
    ("SEVERITY_NUMBER_FATAL", 21),
    ("SEVERITY_NUMBER_FATAL2", 22),
    ("SEVERITY_NUMBER_FATAL3", 23),
    ("SEVERITY_NUMBER_FATAL4", 24),
];

fn enum_table(key: &str) -> Option<&'static [(&'static str, i64)]> {
    match key {
        "kind" => Some(SPAN_KIND),
        "code" => Some(STATUS_CODE),
        "aggregationTemporality" => Some(TEMPORALITY),
        "severityNumber" => Some(SEVERITY),
        _ => None,
    }
}

/// Whether `text` is `bytes` bytes of hex, or empty where that is allowed.
fn id_problem(text: &Value, field: &IdField) -> Option<String> {
    let Value::String(text) = text else {
        return Some(format!("{} must be a hex string", field.name));
    };
    if text.is_empty() && !field.required {
        return None;
    }
    let valid = text.len() == field.bytes * 2 && text.bytes().all(|b| b.is_ascii_hexdigit());
    (!valid).then(|| {
        format!(
            "{} {:?} is not {} hex characters (OTLP/JSON encodes ids as hex, not base64)",
            field.name,
            truncate(text, 64),
            field.bytes * 2
        )
    })
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(max_chars).collect();
        out.push('…');
        out
    }
}

fn drop_records_with_bad_ids(
    resources: &mut Value,
    record_path: &[&str; 2],
    record_noun: &str,
    id_fields: &[IdField],
    rejections: &mut Rejections,
) {
    if id_fields.is_empty() {
        return;
    }
    let Value::Array(resources) = resources else {
        return;
    };
    for resource in resources.iter_mut() {
        let Some(Value::Array(scopes)) = resource.get_mut(record_path[0]) else {
            continue;
        };
        for scope in scopes.iter_mut() {
            let Some(Value::Array(records)) = scope.get_mut(record_path[1]) else {
                continue;
            };
            records.retain(|record| {
                let Value::Object(fields) = record else {
                    return true;
                };
                match first_id_problem(fields, id_fields) {
                    Some(problem) => {
                        rejections.reject(|| format!("{record_noun} rejected: {problem}"));
                        false
                    }
                    None => true,
                }
            });
        }
    }
}

fn first_id_problem(fields: &Map<String, Value>, id_fields: &[IdField]) -> Option<String> {
    for field in id_fields {
        match fields.get(field.name) {
            Some(value) => {
                if let Some(problem) = id_problem(value, field) {
                    return Some(problem);
                }
            }
            None if field.required => return Some(format!("{} is missing", field.name)),
            None => {}
        }
    }
    if let Some(Value::Array(links)) = fields.get("links") {
        for link in links {
            for field in &ID_FIELDS_SPAN[..2] {
                if let Some(problem) = link.get(field.name).and_then(|v| id_problem(v, field)) {
                    return Some(format!("link {problem}"));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPAN: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"api"}}]},
      "scopeSpans":[{"scope":{"name":"s"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"GET /a",
         "kind":"SPAN_KIND_SERVER","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":1700000000500000000,
         "status":{"code":"STATUS_CODE_ERROR"},
         "attributes":[{"key":"n","value":{"intValue":"7"}},{"key":"e","value":{"arrayValue":{}}},{"key":"k","value":{"kvlistValue":{}}}],
         "events":null},
        {"traceId":"xyz","spanId":"eee19b7ec3c1b174","name":"bad"}
      ]}]}]}"#;

    #[test]
    fn parse_traces_accepts_enum_names_and_empty_values_and_rejects_bad_ids() {
        let (request, rejections) = parse_traces(SPAN.as_bytes()).expect("repairable body");
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].kind, 2);
        assert_eq!(spans[0].status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(spans[0].start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(spans[0].end_time_unix_nano, 1_700_000_000_500_000_000);
        assert_eq!(rejections.count, 1);
        let reason = rejections.first_reason.expect("a reason");
        assert!(reason.contains("traceId \"xyz\""), "{reason}");
    }

    #[test]
    fn parse_traces_refuses_snake_case_with_the_field_name() {
        let err = parse_traces(br#"{"resource_spans":[]}"#).expect_err("snake_case");
        let text = err.to_string();
        assert!(
            text.contains("\"resource_spans\"") && text.contains("resourceSpans"),
            "{text}"
        );
    }

    #[test]
    fn parse_traces_accepts_an_empty_object_as_an_empty_request() {
        let (request, rejections) = parse_traces(b"{}").expect("empty request");
        assert!(request.resource_spans.is_empty());
        assert_eq!(rejections.count, 0);
    }

    #[test]
    fn parse_logs_names_an_unknown_enum() {
        let body =
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"severityNumber":"LOUD"}]}]}]}"#;
        let text = parse_logs(body).expect_err("unknown enum").to_string();
        assert!(
            text.contains("\"LOUD\"") && text.contains("SEVERITY_NUMBER_WARN"),
            "{text}"
        );
    }

    #[test]
    fn parse_reports_where_a_type_is_wrong() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":5}]}]}]}"#;
        let text = parse_traces(body).expect_err("wrong type").to_string();
        assert!(
            text.contains("resourceSpans[0].scopeSpans[0].spans[0].name"),
            "{text}"
        );
    }

    #[test]
    fn parse_rejects_non_json_and_non_objects() {
        assert!(parse_traces(b"not json").is_err());
        assert!(parse_traces(b"[1,2]").is_err());
        assert!(parse_traces(&[0xff, 0xfe]).is_err());
    }
}
