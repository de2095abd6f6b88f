//! JSON log lines (`application/x-ndjson`, `application/jsonl`): one JSON object per line, as
//! structlog, python-json-logger, loguru (`serialize=True`), uvicorn and gunicorn JSON access logs
//! write them. Each line becomes an OTLP log record (grouped by service into resources), so
//! redaction, the limits and normalization treat it as any OTLP log: the same columns, the same
//! durability.
//!
//! | field (first found) | becomes |
//! | --- | --- |
//! | `timestamp`, `time`, `ts`, `@timestamp`, `asctime` (RFC 3339, `2026-12-03 10:00:00,123`, or epoch s/ms/µs/ns by magnitude) | the record's time (the arrival time when none) |
//! | `level`, `levelname`, `severity`, `log.level`, `loglevel`, `levelno` (a name, or Python's 10/20/30/40/50) | severity |
//! | `event`, `message`, `msg` | body |
//! | `logger`, `name`, `logger_name` | `logger.name` |
//! | `trace_id`, `otelTraceID`, `traceId` (32 hex); `span_id`, `otelSpanID`, `spanId` (16 hex) | trace context |
//! | `service`, `service.name`, `otelServiceName` (or `?service=`) | the resource's `service.name` |
//! | `exception`, `exc_info`, `stack_info` | `exception.stacktrace`, with `exception.type` and `exception.message` from its last line |
//! | anything else | an attribute (objects as maps) |
//!
//! loguru's `{"text": …, "record": {…}}` is read from its `record` (`time.timestamp`,
//! `level.name`, `message`, `name`, `exception`, `extra`). A line that is not a JSON object is
//! rejected with its number and why; the others are kept (OTLP partial success).

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value as Any,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value};

use crate::Rejections;
use crate::resource::UNKNOWN_SERVICE;

const TIME: [&str; 5] = ["timestamp", "time", "ts", "@timestamp", "asctime"];
const LEVEL: [&str; 6] = [
    "level",
    "levelname",
    "severity",
    "log.level",
    "loglevel",
    "levelno",
];
const MESSAGE: [&str; 3] = ["event", "message", "msg"];
const LOGGER: [&str; 3] = ["logger", "name", "logger_name"];
const TRACE: [&str; 3] = ["trace_id", "otelTraceID", "traceId"];
const SPAN: [&str; 3] = ["span_id", "otelSpanID", "spanId"];
const SERVICE: [&str; 3] = ["service", "service.name", "otelServiceName"];
const EXCEPTION: [&str; 3] = ["exception", "exc_info", "stack_info"];
/// Fields the loggers write that say nothing a column does not (python-json-logger's and the
/// OpenTelemetry logging instrumentation's).
const DROPPED: [&str; 2] = ["otelTraceSampled", "taskName"];

fn take(map: &mut Map<String, Value>, names: &[&str]) -> Option<Value> {
    names
        .iter()
        .find_map(|n| map.remove(*n).filter(|v| !v.is_null()))
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A time as nanoseconds since the epoch: RFC 3339, Python's `asctime`, or a number (seconds,
/// milliseconds, microseconds or nanoseconds, by magnitude; a numeric string too).
pub fn parse_time(value: &Value) -> Option<i64> {
    let digits = match value {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s)
            if !s.trim().is_empty()
                && s.trim().bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            Some(s.trim().to_string())
        }
        _ => None,
    };
    if let Some(text) = digits {
        return epoch_ns(&text);
    }
    let s = value.as_str()?.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return t.timestamp_nanos_opt();
    }
    // `2026-12-03 10:00:00,123` (Python's asctime), `2026-12-03T10:00:00.123` without a zone:
    // read as UTC.
    let normalized = s.replace(',', ".");
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&normalized, format) {
            return t.and_utc().timestamp_nanos_opt();
        }
        if let Ok(t) = chrono::DateTime::parse_from_str(&normalized, format) {
            return t.timestamp_nanos_opt();
        }
    }
    None
}

/// Epoch digits (`1796292000.25`, `1796292000123`) as nanoseconds, read as decimal text so no
/// float rounds them: seconds below 1e11, then milliseconds, microseconds, nanoseconds.
fn epoch_ns(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let units: i128 = whole.parse().ok()?;
    if units == 0 {
        return None;
    }
    let scale: u32 = match units {
        ..100_000_000_000 => 9,
        ..100_000_000_000_000 => 6,
        ..100_000_000_000_000_000 => 3,
        _ => 0,
    };
    let mut ns = units * 10i128.pow(scale);
    let kept: String = fraction.chars().take(scale as usize).collect();
    if !kept.is_empty() {
        ns += kept.parse::<i128>().ok()? * 10i128.pow(scale - kept.len() as u32);
    }
    i64::try_from(ns).ok()
}

/// A level name or Python's level number as an OTLP severity number.
fn severity(value: &Value) -> Option<i32> {
    if let Some(n) = value
        .as_i64()
        .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
    {
        return Some(match n {
            ..=9 => 1,
            10..=19 => 5,
            20..=29 => 9,
            30..=39 => 13,
            40..=49 => 17,
            _ => 21,
        });
    }
    crate::logs::severity_number_from_text(value.as_str()?)
}

fn any(value: Value) -> AnyValue {
    let value = match value {
        Value::Null => None,
        Value::Bool(b) => Some(Any::BoolValue(b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => Any::IntValue(i),
            None => Any::DoubleValue(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => Some(Any::StringValue(s)),
        Value::Array(items) => Some(Any::ArrayValue(ArrayValue {
            values: items.into_iter().map(any).collect(),
        })),
        Value::Object(map) => Some(Any::KvlistValue(KeyValueList {
            values: map.into_iter().map(|(k, v)| kv(k, v)).collect(),
        })),
    };
    AnyValue { value }
}

fn kv(key: String, value: Value) -> KeyValue {
    KeyValue {
        key,
        value: Some(any(value)),
        ..Default::default()
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    kv(key.to_string(), Value::String(value))
}

/// An id of `len` bytes from hex text; `None` when it is not one (all zeros too).
fn id(value: &Value, len: usize) -> Option<Vec<u8>> {
    let s = value.as_str()?.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let bytes = hex::decode(s).ok()?;
    (bytes.len() == len && bytes.iter().any(|b| *b != 0)).then_some(bytes)
}

/// The exception's stack trace text, type and message (the last line `Type: message`).
fn exception(value: Value) -> Option<(String, Option<String>, Option<String>)> {
    let (stack, kind, message) = match value {
        Value::String(s) if !s.trim().is_empty() => (s, None, None),
        Value::Bool(_) => return None, // exc_info=True without a formatter: nothing to show
        Value::Object(mut map) => {
            // loguru: {"type", "value", "traceback"}; others: {"type", "message", "stacktrace"}.
            let kind = take(&mut map, &["type"]).map(|v| text(&v));
            let message = take(&mut map, &["value", "message"]).map(|v| text(&v));
            let stack = take(&mut map, &["traceback", "stacktrace", "stack"])
                .map(|v| text(&v))
                .unwrap_or_default();
            (stack, kind, message)
        }
        Value::Null => return None,
        other => (other.to_string(), None, None),
    };
    let last = stack
        .trim_end()
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    let (parsed_kind, parsed_message) = match last.split_once(": ") {
        Some((k, m)) if !k.contains(' ') && !k.is_empty() => {
            (Some(k.to_string()), Some(m.to_string()))
        }
        _ if !last.is_empty() && !last.contains(' ') => (Some(last.clone()), None),
        _ => (None, None),
    };
    Some((stack, kind.or(parsed_kind), message.or(parsed_message)))
}

/// loguru's `serialize=True`: the record under `record`, with the formatted line in `text`.
fn unwrap_loguru(map: &mut Map<String, Value>) {
    if !(map.contains_key("text") && map.get("record").is_some_and(Value::is_object)) {
        return;
    }
    let Some(Value::Object(mut record)) = map.remove("record") else {
        return;
    };
    map.remove("text");
    if let Some(Value::Object(mut time)) = record.remove("time") {
        if let Some(t) = time.remove("timestamp").or_else(|| time.remove("repr")) {
            map.insert("timestamp".into(), t);
        }
    }
    if let Some(Value::Object(mut level)) = record.remove("level") {
        if let Some(name) = level.remove("name") {
            map.insert("level".into(), name);
        }
    }
    for (from, to) in [
        ("message", "message"),
        ("name", "logger"),
        ("exception", "exception"),
    ] {
        if let Some(v) = record.remove(from).filter(|v| !v.is_null()) {
            map.insert(to.into(), v);
        }
    }
    if let Some(Value::Object(extra)) = record.remove("extra") {
        for (k, v) in extra {
            map.entry(k).or_insert(v);
        }
    }
    for key in ["function", "module", "line", "file", "process", "thread"] {
        if let Some(v) = record.remove(key) {
            let v = match v {
                Value::Object(mut o) => o
                    .remove("name")
                    .or_else(|| o.remove("path"))
                    .unwrap_or(Value::Null),
                v => v,
            };
            if !v.is_null() {
                map.insert(format!("code.{key}"), v);
            }
        }
    }
}

/// Reads JSON lines into an OTLP logs request, one resource per service (`default_service` for
/// lines that name none); lines that are not JSON objects are rejected with their number.
pub fn parse(
    bytes: &[u8],
    default_service: Option<&str>,
) -> (ExportLogsServiceRequest, Rejections) {
    let mut rejections = Rejections::default();
    let mut by_service: BTreeMap<String, Vec<LogRecord>> = BTreeMap::new();
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let number = n + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut map = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(map)) => map,
            Ok(other) => {
                let kind = match other {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    Value::Bool(_) => "a boolean",
                    _ => "null",
                };
                rejections.reject(|| {
                    format!(
                        "line {number} rejected: it is {kind}, expected one JSON object per line"
                    )
                });
                continue;
            }
            Err(e) => {
                rejections.reject(|| {
                    format!(
                        "line {number} rejected: not JSON ({e}); expected one JSON object per line"
                    )
                });
                continue;
            }
        };
        unwrap_loguru(&mut map);
        let mut record = LogRecord::default();
        if let Some(t) = take(&mut map, &TIME) {
            match parse_time(&t) {
                Some(ns) => record.time_unix_nano = ns as u64,
                None => {
                    // Kept as it was written, for whoever reads it.
                    map.insert("timestamp".into(), t);
                }
            }
        }
        if let Some(level) = take(&mut map, &LEVEL) {
            record.severity_number = severity(&level).unwrap_or(0);
            record.severity_text = text(&level);
        }
        if let Some(message) = take(&mut map, &MESSAGE) {
            record.body = Some(match message {
                Value::String(s) => AnyValue {
                    value: Some(Any::StringValue(s)),
                },
                other => any(other),
            });
        }
        let service = take(&mut map, &SERVICE)
            .map(|v| text(&v))
            .filter(|s| !s.is_empty())
            .or_else(|| default_service.map(str::to_string))
            .unwrap_or_else(|| UNKNOWN_SERVICE.to_string());
        let mut attributes = Vec::new();
        if let Some(logger) = take(&mut map, &LOGGER) {
            attributes.push(string_kv("logger.name", text(&logger)));
        }
        if let Some(trace) = take(&mut map, &TRACE) {
            match id(&trace, 16) {
                Some(bytes) => record.trace_id = bytes,
                None => attributes.push(kv("trace_id".into(), trace)),
            }
        }
        if let Some(span) = take(&mut map, &SPAN) {
            match id(&span, 8) {
                Some(bytes) => record.span_id = bytes,
                None => attributes.push(kv("span_id".into(), span)),
            }
        }
        if let Some((stack, kind, message)) = take(&mut map, &EXCEPTION).and_then(exception) {
            attributes.push(string_kv("exception.stacktrace", stack));
            if let Some(kind) = kind {
                attributes.push(string_kv("exception.type", kind));
            }
            if let Some(message) = message {
                attributes.push(string_kv("exception.message", message));
            }
        }
        for key in DROPPED {
            map.remove(key);
        }
        attributes.extend(map.into_iter().map(|(k, v)| kv(k, v)));
        record.attributes = attributes;
        by_service.entry(service).or_default().push(record);
    }
    let request = ExportLogsServiceRequest {
        resource_logs: by_service
            .into_iter()
            .map(|(service, log_records)| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![string_kv("service.name", service)],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "json-lines".into(),
                        ..Default::default()
                    }),
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    (request, rejections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> (LogRecord, String) {
        let (request, rejections) = parse(line.as_bytes(), Some("fallback"));
        assert_eq!(rejections.count, 0, "{:?}", rejections.first_reason);
        let resource = &request.resource_logs[0];
        let service = match &resource.resource.as_ref().unwrap().attributes[0]
            .value
            .as_ref()
            .unwrap()
            .value
        {
            Some(Any::StringValue(s)) => s.clone(),
            _ => panic!(),
        };
        (resource.scope_logs[0].log_records[0].clone(), service)
    }

    fn attr<'a>(record: &'a LogRecord, key: &str) -> Option<&'a Any> {
        record
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn structlog_lines_with_trace_context() {
        let (r, service) = one(
            r#"{"event": "order placed", "level": "info", "timestamp": "2026-12-03T10:00:00.5Z", "logger": "shop.orders", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "order_id": 42, "service": "orders"}"#,
        );
        assert_eq!(service, "orders");
        assert_eq!(r.time_unix_nano, 1_796_292_000_500_000_000);
        assert_eq!(r.severity_number, 9);
        assert_eq!(hex::encode(&r.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(&r.span_id), "00f067aa0ba902b7");
        assert_eq!(
            attr(&r, "logger.name"),
            Some(&Any::StringValue("shop.orders".into()))
        );
        assert_eq!(attr(&r, "order_id"), Some(&Any::IntValue(42)));
        assert_eq!(
            r.body.unwrap().value,
            Some(Any::StringValue("order placed".into()))
        );
    }

    #[test]
    fn python_json_logger_and_otel_logging_fields() {
        let (r, service) = one(
            r#"{"asctime": "2026-12-03 10:00:00,250", "levelname": "ERROR", "name": "uvicorn.error", "message": "boom", "otelTraceID": "4bf92f3577b34da6a3ce929d0e0e4736", "otelSpanID": "00f067aa0ba902b7", "otelServiceName": "api", "otelTraceSampled": true, "exc_info": "Traceback (most recent call last):\n  File \"a.py\", line 1\nValueError: bad value"}"#,
        );
        assert_eq!(service, "api");
        assert_eq!(r.time_unix_nano, 1_796_292_000_250_000_000);
        assert_eq!(r.severity_number, 17);
        assert_eq!(
            attr(&r, "exception.type"),
            Some(&Any::StringValue("ValueError".into()))
        );
        assert_eq!(
            attr(&r, "exception.message"),
            Some(&Any::StringValue("bad value".into()))
        );
        assert!(attr(&r, "otelTraceSampled").is_none());
    }

    #[test]
    fn loguru_serialized_records_and_epoch_times() {
        let (r, service) = one(
            r#"{"text": "2026-12-03 | INFO | hi\n", "record": {"time": {"repr": "x", "timestamp": 1796292000.25}, "level": {"name": "WARNING", "no": 30}, "message": "hi", "name": "app", "extra": {"user": "u1"}, "exception": null, "function": "main"}}"#,
        );
        assert_eq!(
            service, "fallback",
            "?service= names lines that say nothing"
        );
        assert_eq!(r.time_unix_nano, 1_796_292_000_250_000_000);
        assert_eq!(r.severity_number, 13);
        assert_eq!(attr(&r, "user"), Some(&Any::StringValue("u1".into())));
        assert_eq!(
            attr(&r, "code.function"),
            Some(&Any::StringValue("main".into()))
        );
        for (value, ns) in [
            (serde_json::json!(1796292000), 1_796_292_000_000_000_000i64),
            (
                serde_json::json!(1796292000123i64),
                1_796_292_000_123_000_000,
            ),
            (
                serde_json::json!(1796292000123456i64),
                1_796_292_000_123_456_000,
            ),
            (
                serde_json::json!("1796292000123456789"),
                1_796_292_000_123_456_789,
            ),
        ] {
            assert_eq!(parse_time(&value), Some(ns), "{value}");
        }
        assert_eq!(severity(&serde_json::json!(40)), Some(17));
    }

    #[test]
    fn bad_lines_are_rejected_by_number_and_the_rest_kept() {
        let body = "{\"msg\": \"a\"}\n\nnot json\n[1]\n{\"msg\": \"b\"}\r\n";
        let (request, rejections) = parse(body.as_bytes(), None);
        assert_eq!(rejections.count, 2);
        let reason = rejections.first_reason.unwrap();
        assert!(reason.starts_with("line 3 rejected: not JSON"), "{reason}");
        let records: usize = request
            .resource_logs
            .iter()
            .map(|r| r.scope_logs[0].log_records.len())
            .sum();
        assert_eq!(records, 2);
    }
}
