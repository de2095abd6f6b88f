//! OTLP spans to `spans` rows, with Logfire's conventions: `logfire.msg` is a span's message,
//! `logfire.level_num` its level, a log-span (`logfire.span_type = "log"`) becomes a `logs` row,
//! and pending spans (sent when a span starts, superseded when it ends) are not stored.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};
use sightline_model::schema::{LogRow, SpanRow};
use sightline_model::{SpanKind, SpanStatus};

use crate::attributes::{
    self, EXCEPTION_MESSAGE, EXCEPTION_STACKTRACE, EXCEPTION_TYPE, HTTP_METHOD, HTTP_ROUTE,
    HTTP_STATUS_CODE,
};
use crate::logs::{optional_id, severity_name, to_ns};
use crate::resource::ResourceInfo;
use crate::{Normalized, Rejections};

const LOGFIRE_MSG: &[&str] = &["logfire.msg"];
const LOGFIRE_SPAN_TYPE: &[&str] = &["logfire.span_type"];
const LOGFIRE_LEVEL_NUM: &[&str] = &["logfire.level_num"];

/// The exception an `exception` event records: type, message, stack trace.
struct RecordedException {
    exception_type: Option<String>,
    message: Option<String>,
    stacktrace: Option<String>,
}

fn first_exception(span: &Span) -> Option<RecordedException> {
    span.events
        .iter()
        .find(|e| e.name == "exception")
        .map(|event| RecordedException {
            exception_type: attributes::find_text(&event.attributes, EXCEPTION_TYPE),
            message: attributes::find_text(&event.attributes, EXCEPTION_MESSAGE),
            stacktrace: attributes::find_text(&event.attributes, EXCEPTION_STACKTRACE),
        })
}

fn events_json(span: &Span) -> String {
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|e| {
            json!({
                "time_ns": to_ns(e.time_unix_nano),
                "name": e.name,
                "attributes": Value::Object(attributes::to_json_map(&e.attributes)),
            })
        })
        .collect();
    Value::Array(events).to_string()
}

fn links_json(span: &Span) -> String {
    let links: Vec<Value> = span
        .links
        .iter()
        .map(|l| {
            json!({
                "trace_id": hex::encode(&l.trace_id),
                "span_id": hex::encode(&l.span_id),
                "attributes": Value::Object(attributes::to_json_map(&l.attributes)),
            })
        })
        .collect();
    Value::Array(links).to_string()
}

fn required_id(bytes: &[u8], len: usize, field: &str) -> Result<String, String> {
    optional_id(bytes, len, field)?.ok_or_else(|| format!("{field} is missing or all zero"))
}

/// Checks what a span must have to be stored and returns its ids.
fn span_ids(span: &Span) -> Result<(String, String, Option<String>), String> {
    let trace_id = required_id(&span.trace_id, 16, "traceId")?;
    let span_id = required_id(&span.span_id, 8, "spanId")?;
    let parent = optional_id(&span.parent_span_id, 8, "parentSpanId")?;
    if span.start_time_unix_nano == 0 {
        return Err(format!("span {span_id}: startTimeUnixNano is missing"));
    }
    if span.end_time_unix_nano != 0 && span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!(
            "span {span_id}: endTimeUnixNano is before startTimeUnixNano"
        ));
    }
    for link in &span.links {
        required_id(&link.trace_id, 16, "link traceId")?;
        required_id(&link.span_id, 8, "link spanId")?;
    }
    Ok((trace_id, span_id, parent))
}

/// Normalizes an export request into span rows, and Logfire log-spans into log rows.
pub fn normalize(request: &ExportTraceServiceRequest, _received_ns: i64) -> Normalized {
    let mut out = Normalized::default();
    let mut rejections = Rejections::default();
    for resource_spans in &request.resource_spans {
        let resource = ResourceInfo::from_resource(resource_spans.resource.as_ref());
        for scope_spans in &resource_spans.scope_spans {
            let scope_name = scope_spans
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .filter(|n| !n.is_empty());
            for span in &scope_spans.spans {
                let (trace_id, span_id, parent_span_id) = match span_ids(span) {
                    Ok(ids) => ids,
                    Err(problem) => {
                        rejections.reject(|| format!("span rejected: {problem}"));
                        continue;
                    }
                };
                let attrs = &span.attributes;
                match attributes::find_text(attrs, LOGFIRE_SPAN_TYPE).as_deref() {
                    Some("pending_span") => continue,
                    Some("log") => {
                        out.logs.push(log_span_to_row(
                            span,
                            trace_id,
                            parent_span_id.or(Some(span_id)),
                            &resource,
                            scope_name.clone(),
                        ));
                        continue;
                    }
                    _ => {}
                }
                let exception = first_exception(span);
                let status = span.status.as_ref();
                let start_ns = to_ns(span.start_time_unix_nano);
                let end_ns = match to_ns(span.end_time_unix_nano) {
                    0 => start_ns,
                    t => t,
                };
                out.spans.push(SpanRow {
                    start_time_ns: start_ns,
                    end_time_ns: end_ns,
                    trace_id,
                    span_id,
                    parent_span_id,
                    name: span.name.clone(),
                    kind: SpanKind::from_otlp(span.kind),
                    status: SpanStatus::from_otlp(status.map(|s| s.code).unwrap_or(0)),
                    status_message: status.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
                    service_name: resource.service_name.clone(),
                    service_version: resource.service_version.clone(),
                    environment: resource.environment.clone(),
                    http_method: attributes::find_text(attrs, HTTP_METHOD),
                    http_route: attributes::find_text(attrs, HTTP_ROUTE),
                    http_status_code: attributes::find_int(attrs, HTTP_STATUS_CODE)
                        .and_then(|c| i32::try_from(c).ok()),
                    exception_type: exception.as_ref().and_then(|e| e.exception_type.clone()),
                    exception_message: exception.as_ref().and_then(|e| e.message.clone()),
                    exception_stacktrace: exception.and_then(|e| e.stacktrace),
                    attributes: attributes::to_json_text(attrs),
                    resource_attributes: resource.attributes.clone(),
                    events: events_json(span),
                    links: links_json(span),
                    scope_name: scope_name.clone(),
                    sample_rate: 1.0,
                    message: attributes::find_text(attrs, LOGFIRE_MSG)
                        .unwrap_or_else(|| span.name.clone()),
                });
            }
        }
    }
    out.rejections = rejections;
    out
}

/// A Logfire log-span as a log record, attached to the span it was emitted in.
fn log_span_to_row(
    span: &Span,
    trace_id: String,
    span_id: Option<String>,
    resource: &ResourceInfo,
    scope_name: Option<String>,
) -> LogRow {
    let attrs: &[KeyValue] = &span.attributes;
    let severity_number = attributes::find_int(attrs, LOGFIRE_LEVEL_NUM)
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| (1..=24).contains(n))
        .unwrap_or(9);
    let exception = first_exception(span);
    let time_ns = to_ns(span.start_time_unix_nano);
    LogRow {
        time_ns,
        observed_time_ns: time_ns,
        trace_id: Some(trace_id),
        span_id,
        severity_number,
        severity: severity_name(severity_number),
        body: attributes::find_text(attrs, LOGFIRE_MSG).unwrap_or_else(|| span.name.clone()),
        service_name: resource.service_name.clone(),
        service_version: resource.service_version.clone(),
        environment: resource.environment.clone(),
        logger: scope_name.clone(),
        exception_type: exception
            .as_ref()
            .and_then(|e| e.exception_type.clone())
            .or_else(|| attributes::find_text(attrs, EXCEPTION_TYPE)),
        exception_message: exception
            .as_ref()
            .and_then(|e| e.message.clone())
            .or_else(|| attributes::find_text(attrs, EXCEPTION_MESSAGE)),
        exception_stacktrace: exception.and_then(|e| e.stacktrace),
        attributes: attributes::to_json_text(attrs),
        resource_attributes: resource.attributes.clone(),
        scope_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BodyEncoding;

    fn ingest(body: &str) -> Normalized {
        crate::ingest_traces(
            body.as_bytes(),
            BodyEncoding::Json,
            0,
            &crate::Intake::unredacted(crate::Limits::default()),
        )
        .expect("valid body")
    }

    const RESOURCE: &str = r#"{"attributes":[
        {"key":"service.name","value":{"stringValue":"orders"}},
        {"key":"service.version","value":{"stringValue":"1.2.3"}},
        {"key":"deployment.environment","value":{"stringValue":"prod"}}]}"#;

    #[test]
    fn normalize_promotes_old_and_new_http_names_and_exceptions() {
        let body = format!(
            r#"{{"resourceSpans":[{{"resource":{RESOURCE},"scopeSpans":[{{"spans":[
            {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"",
              "name":"GET /orders/{{id}}","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"3000",
              "status":{{"code":2,"message":"boom"}},
              "attributes":[{{"key":"http.method","value":{{"stringValue":"GET"}}}},
                            {{"key":"http.route","value":{{"stringValue":"/orders/{{id}}"}}}},
                            {{"key":"http.status_code","value":{{"intValue":"500"}}}}],
              "events":[{{"timeUnixNano":"2000","name":"exception","attributes":[
                 {{"key":"exception.type","value":{{"stringValue":"KeyError"}}}},
                 {{"key":"exception.message","value":{{"stringValue":"'sku'"}}}},
                 {{"key":"exception.stacktrace","value":{{"stringValue":"Traceback..."}}}}]}}]}},
            {{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"aaa19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b174",
              "name":"SELECT","kind":3,"startTimeUnixNano":"1500","endTimeUnixNano":"1800",
              "attributes":[{{"key":"http.request.method","value":{{"stringValue":"POST"}}}},
                            {{"key":"http.response.status_code","value":{{"intValue":201}}}}]}}
            ]}}]}}]}}"#
        );
        let out = ingest(&body);
        assert_eq!(out.rejections.count, 0);
        let [server, client] = out.spans.as_slice() else {
            panic!("two spans: {:?}", out.spans)
        };
        assert_eq!(server.parent_span_id, None);
        assert_eq!(
            (server.kind, server.status),
            (SpanKind::Server, SpanStatus::Error)
        );
        assert_eq!(server.http_method.as_deref(), Some("GET"));
        assert_eq!(server.http_route.as_deref(), Some("/orders/{id}"));
        assert_eq!(server.http_status_code, Some(500));
        assert_eq!(server.exception_type.as_deref(), Some("KeyError"));
        assert_eq!(server.exception_message.as_deref(), Some("'sku'"));
        assert_eq!(server.service_version.as_deref(), Some("1.2.3"));
        assert_eq!(server.environment.as_deref(), Some("prod"));
        assert_eq!(client.parent_span_id.as_deref(), Some("eee19b7ec3c1b174"));
        assert_eq!(client.http_method.as_deref(), Some("POST"));
        assert_eq!(client.http_status_code, Some(201));
        assert_eq!(client.kind, SpanKind::Client);
    }

    #[test]
    fn normalize_turns_logfire_log_spans_into_logs_and_drops_pending_spans() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"scope":{"name":"logfire"},"spans":[
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"1111111111111111","name":"load batch {batch_id}",
             "startTimeUnixNano":"10","endTimeUnixNano":"20",
             "attributes":[{"key":"logfire.msg","value":{"stringValue":"load batch 7"}},
                           {"key":"logfire.span_type","value":{"stringValue":"span"}}]},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"2222222222222222","parentSpanId":"1111111111111111",
             "name":"bad row {row}","startTimeUnixNano":"15","endTimeUnixNano":"15",
             "attributes":[{"key":"logfire.msg","value":{"stringValue":"bad row 3"}},
                           {"key":"logfire.span_type","value":{"stringValue":"log"}},
                           {"key":"logfire.level_num","value":{"intValue":"17"}}]},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"3333333333333333","name":"pending",
             "startTimeUnixNano":"10","endTimeUnixNano":"10",
             "attributes":[{"key":"logfire.span_type","value":{"stringValue":"pending_span"}}]}
        ]}]}]}"#;
        let out = ingest(body);
        assert_eq!(out.spans.len(), 1);
        assert_eq!(out.spans[0].message, "load batch 7");
        assert_eq!(out.logs.len(), 1);
        let log = &out.logs[0];
        assert_eq!(log.body, "bad row 3");
        assert_eq!((log.severity, log.severity_number), ("error", 17));
        assert_eq!(log.span_id.as_deref(), Some("1111111111111111"));
        assert_eq!(log.service_name, "unknown_service");
    }

    #[test]
    fn normalize_rejects_wrong_id_lengths_and_inverted_times_but_keeps_the_rest() {
        let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"5b8e","spanId":"1111111111111111","name":"a","startTimeUnixNano":"1"},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"1111111111111111","name":"b","startTimeUnixNano":"9","endTimeUnixNano":"3"},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"1111111111111111","name":"c","startTimeUnixNano":"9","endTimeUnixNano":"30"}
        ]}]}]}"#;
        let out = ingest(body);
        assert_eq!(out.spans.len(), 1);
        assert_eq!(out.rejections.count, 2);
        let reason = out.rejections.first_reason.expect("reason");
        assert!(reason.contains("traceId"), "{reason}");
    }
}
