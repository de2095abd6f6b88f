//! OTLP attributes as JSON objects, and the semantic-convention names that fill promoted columns.
//!
//! Each promoted column lists the current OpenTelemetry name first and older names after it, so
//! data from old and new SDKs lands in the same column.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value as Any};
use serde_json::{Map, Value};

/// Deepest nesting of arrays and maps kept; deeper values are replaced by a marker.
pub const MAX_DEPTH: usize = 16;

/// Resource attribute names of the service name; fills `service_name`.
pub const SERVICE_NAME: &[&str] = &["service.name"];
/// Resource attribute names of the service version; fills `service_version`.
pub const SERVICE_VERSION: &[&str] = &["service.version"];
/// Resource attribute names of the deployment environment, current name first; fills
/// `environment`.
pub const ENVIRONMENT: &[&str] = &["deployment.environment.name", "deployment.environment"];
/// Span attribute names of the HTTP request method, current name first; fills `http_method`.
pub const HTTP_METHOD: &[&str] = &["http.request.method", "http.method"];
/// Span attribute names of the HTTP route template; fills `http_route`.
pub const HTTP_ROUTE: &[&str] = &["http.route"];
/// Span attribute names of the HTTP response status code, current name first; fills
/// `http_status_code`.
pub const HTTP_STATUS_CODE: &[&str] = &["http.response.status_code", "http.status_code"];
/// Attribute names of an exception's type (on an `exception` event or a log record); fills
/// `exception_type`.
pub const EXCEPTION_TYPE: &[&str] = &["exception.type"];
/// Attribute names of an exception's message (on an `exception` event or a log record); fills
/// `exception_message`.
pub const EXCEPTION_MESSAGE: &[&str] = &["exception.message"];
/// Attribute names of an exception's stack trace (on an `exception` event or a log record);
/// fills `exception_stacktrace`.
pub const EXCEPTION_STACKTRACE: &[&str] = &["exception.stacktrace"];
/// Log record attribute names of the logger, current name first; fills `logger` (the
/// instrumentation scope's name when none is present).
pub const LOGGER: &[&str] = &["logger.name", "code.namespace"];

/// An AnyValue as JSON: strings, numbers, booleans, arrays and objects as themselves, bytes
/// as hex text.
pub fn any_to_json(value: &AnyValue) -> Value {
    any_to_json_at(value, 0)
}

/// What replaces an array or map nested deeper than `limit` levels.
pub fn depth_marker(limit: usize) -> String {
    format!("[nested deeper than {limit} levels: dropped]")
}

fn any_to_json_at(value: &AnyValue, depth: usize) -> Value {
    match &value.value {
        None => Value::Null,
        Some(Any::StringValue(s)) => Value::String(s.clone()),
        Some(Any::BoolValue(b)) => Value::Bool(*b),
        Some(Any::IntValue(i)) => Value::from(*i),
        Some(Any::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(d.to_string())),
        Some(Any::BytesValue(b)) => Value::String(hex::encode(b)),
        Some(Any::ArrayValue(_) | Any::KvlistValue(_)) if depth >= MAX_DEPTH => {
            Value::String(depth_marker(MAX_DEPTH))
        }
        Some(Any::ArrayValue(array)) => Value::Array(
            array
                .values
                .iter()
                .map(|v| any_to_json_at(v, depth + 1))
                .collect(),
        ),
        Some(Any::KvlistValue(list)) => Value::Object(kv_map_at(&list.values, depth + 1)),
        Some(Any::StringValueStrindex(i)) => Value::String(format!("[string table index {i}]")),
    }
}

fn kv_map_at(attributes: &[KeyValue], depth: usize) -> Map<String, Value> {
    attributes
        .iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .map(|v| any_to_json_at(v, depth))
                .unwrap_or(Value::Null);
            (kv.key.clone(), value)
        })
        .collect()
}

/// Attributes as a JSON object.
pub fn to_json_map(attributes: &[KeyValue]) -> Map<String, Value> {
    kv_map_at(attributes, 0)
}

/// Attributes as JSON object text (the form stored in `attributes` columns).
pub fn to_json_text(attributes: &[KeyValue]) -> String {
    Value::Object(to_json_map(attributes)).to_string()
}

/// The first attribute present under any of `names`.
pub fn find<'a>(attributes: &'a [KeyValue], names: &[&str]) -> Option<&'a AnyValue> {
    names
        .iter()
        .find_map(|name| attributes.iter().find(|kv| kv.key == *name))
        .and_then(|kv| kv.value.as_ref())
}

/// The first attribute under `names`, as text (numbers and booleans are written out).
pub fn find_text(attributes: &[KeyValue], names: &[&str]) -> Option<String> {
    find(attributes, names)
        .and_then(any_to_text)
        .filter(|s| !s.is_empty())
}

/// The first attribute under `names`, as an integer (numeric strings are read too).
pub fn find_int(attributes: &[KeyValue], names: &[&str]) -> Option<i64> {
    match &find(attributes, names)?.value {
        Some(Any::IntValue(i)) => Some(*i),
        Some(Any::DoubleValue(d)) if d.fract() == 0.0 => Some(*d as i64),
        Some(Any::StringValue(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A scalar value as text; arrays and maps as JSON text.
pub fn any_to_text(value: &AnyValue) -> Option<String> {
    match &value.value {
        None => None,
        Some(Any::StringValue(s)) => Some(s.clone()),
        Some(Any::BoolValue(b)) => Some(b.to_string()),
        Some(Any::IntValue(i)) => Some(i.to_string()),
        Some(Any::DoubleValue(d)) => Some(d.to_string()),
        Some(_) => Some(any_to_json(value).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    use super::*;

    fn kv(key: &str, value: Any) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn find_prefers_the_current_name_over_the_old_one() {
        let attrs = vec![
            kv("http.status_code", Any::IntValue(404)),
            kv("http.response.status_code", Any::IntValue(200)),
        ];
        assert_eq!(find_int(&attrs, HTTP_STATUS_CODE), Some(200));
        assert_eq!(find_int(&attrs[..1], HTTP_STATUS_CODE), Some(404));
    }

    #[test]
    fn json_keeps_types_and_nesting() {
        let nested = Any::KvlistValue(KeyValueList {
            values: vec![kv(
                "a",
                Any::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Any::BoolValue(true)),
                    }],
                }),
            )],
        });
        let text = to_json_text(&[
            kv("n", Any::IntValue(3)),
            kv("m", nested),
            kv("b", Any::BytesValue(vec![1, 255])),
        ]);
        let parsed: Value = serde_json::from_str(&text).expect("valid json");
        assert_eq!(parsed["n"], 3);
        assert_eq!(parsed["m"]["a"][0], true);
        assert_eq!(parsed["b"], "01ff");
    }

    #[test]
    fn json_cuts_off_values_nested_too_deep() {
        let mut value = AnyValue {
            value: Some(Any::StringValue("leaf".into())),
        };
        for _ in 0..100 {
            value = AnyValue {
                value: Some(Any::ArrayValue(ArrayValue {
                    values: vec![value],
                })),
            };
        }
        let text = any_to_json(&value).to_string();
        assert!(text.contains("nested deeper than"), "{text}");
    }
}
