"""OTLP over HTTP with hand-written bodies: JSON in its accepted spellings,
gzip, protobuf, and every kind of bad request with the answer it must get.
Also the query API's error answers.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from datetime import datetime, timezone

import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

ERROR_CODES = {"bad_request", "not_found", "payload_too_large", "too_many_requests", "unavailable", "timeout",
               "internal"}


# ----------------------------------------------------------------- helpers


def trace_id() -> str:
    return os.urandom(16).hex()


def span_id() -> str:
    return os.urandom(8).hex()


def uniq(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


def base_ns(seconds_ago: int = 30) -> int:
    """A recent timestamp whose nanosecond part is non-zero and easy to spot."""
    return (time.time_ns() // 10**9 - seconds_ago) * 10**9 + 123_456_789


def rfc3339(ns: int) -> str:
    secs, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(secs, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def av(value) -> dict:
    """An OTLP/JSON AnyValue (int64 as a string, as the spec's JSON mapping says)."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [av(v) for v in value]}}
    return {"stringValue": value}


def attrs(**kv) -> list[dict]:
    return [{"key": k.replace("__", "."), "value": av(v)} for k, v in kv.items()]


def resource(service: str, **extra) -> dict:
    return {"attributes": [{"key": "service.name", "value": av(service)}] +
            [{"key": k, "value": av(v)} for k, v in extra.items()]}


def traces_body(service: str, spans: list[dict], **resource_attrs) -> dict:
    return {"resourceSpans": [{
        "resource": resource(service, **resource_attrs),
        "scopeSpans": [{"scope": {"name": "e2e.handwritten", "version": "1"}, "spans": spans}],
    }]}


def simple_span(tid: str, name: str, start: int, dur: int = 1_000_000, **fields) -> dict:
    span = {"traceId": tid, "spanId": span_id(), "name": name, "kind": 2,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur)}
    span.update(fields)
    return span


def assert_error(resp, status: int, code: str | None = None, otlp: bool = False) -> str:
    """Check an error answer's status and JSON shape; return its message.

    API endpoints answer exactly {"error": {...}}. OTLP endpoints follow the OTLP specification:
    a protobuf google.rpc.Status for a protobuf request, and for JSON the Status fields (code,
    message) beside the "error" object.
    """
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text}"
    if otlp and resp.headers.get("content-type", "").startswith("application/x-protobuf"):
        from google.rpc import status_pb2
        rpc_status = status_pb2.Status()
        rpc_status.ParseFromString(resp.content)
        assert rpc_status.message.strip(), "an error message is required"
        return rpc_status.message
    body = resp.json()
    if otlp:
        assert "error" in body and set(body) <= {"error", "code", "message"}, body
        assert isinstance(body.get("code"), int) and body.get("message") == body["error"]["message"], body
    else:
        assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], body
    if code is not None:
        assert err["code"] == code, body
    elif status != 415:
        assert err["code"] in ERROR_CODES, body
    msg = err.get("message")
    assert isinstance(msg, str) and msg.strip(), f"an error message is required: {body}"
    return msg


def stored_spans(sightline, where: str, expect: int, columns: str = "*") -> list[dict]:
    return sightline.wait_rows(f"SELECT {columns} FROM spans WHERE {where}", lambda rows: len(rows) >= expect)


# ------------------------------------------------------------------ traces


def test_json_traces_roundtrip(sightline):
    svc = uniq("json-traces")
    tid = trace_id()
    t0 = base_ns()
    parent = span_id()
    child = span_id()
    linked_trace, linked_span = trace_id(), span_id()
    body = traces_body(svc, [
        {   # int64 fields as strings, enums as integers, the stable attribute names.
            "traceId": tid, "spanId": parent, "name": "GET /items/{id}", "kind": 2,
            "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 250_000_000),
            "attributes": attrs(http__request__method="GET", http__route="/items/{id}",
                                http__response__status_code=503, retries=2, ratio=0.5, cached=False,
                                tags=["a", "b"]),
            "events": [{"timeUnixNano": str(t0 + 1_000), "name": "exception",
                        "attributes": attrs(exception__type="ValueError", exception__message="no such item")}],
            "status": {"code": 2, "message": "item lookup failed"},
        },
        {   # int64 fields as JSON numbers (and intValue as a number), the old attribute names.
            "traceId": tid, "spanId": child, "parentSpanId": parent, "name": "POST", "kind": 3,
            "startTimeUnixNano": t0 + 1_000_000, "endTimeUnixNano": t0 + 5_000_000,
            "attributes": [{"key": "http.method", "value": {"stringValue": "POST"}},
                           {"key": "http.status_code", "value": {"intValue": 404}}],
            "links": [{"traceId": linked_trace, "spanId": linked_span}],
            "status": {"code": 1},
        },
    ], **{"service.version": "4.5.6", "deployment.environment": "staging"})
    resp = sightline.post_otlp("/v1/traces", body)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    answer = resp.json()
    assert not answer.get("partialSuccess", {}).get("rejectedSpans"), answer

    stored_spans(sightline, f"trace_id = '{tid}'", 2)
    raw = sightline.query(f"SELECT * FROM spans WHERE trace_id = '{tid}' ORDER BY start_time")
    # The query API's shape.
    assert set(raw) >= {"columns", "rows", "elapsed_ms"}
    assert isinstance(raw["elapsed_ms"], (int, float))
    assert all(set(c) >= {"name", "type"} for c in raw["columns"])
    names = [c["name"] for c in raw["columns"]]
    for col in ("start_time", "end_time", "duration_ns", "trace_id", "span_id", "parent_span_id", "name", "kind",
                "status", "status_message", "service_name", "service_version", "environment", "http_method",
                "http_route", "http_status_code", "exception_type", "exception_message", "attributes",
                "resource_attributes", "events", "links", "scope_name", "sample_rate", "message"):
        assert col in names, f"spans lacks column {col}: {names}"
    rows = [dict(zip(names, r)) for r in raw["rows"]]
    assert len(rows) == 2
    a, b = rows

    assert a["span_id"] == parent and a["parent_span_id"] is None
    assert a["start_time"] == rfc3339(t0)
    assert a["end_time"] == rfc3339(t0 + 250_000_000)
    assert a["duration_ns"] == 250_000_000
    assert a["kind"] == "server"
    assert a["status"] == "error"
    assert a["status_message"] == "item lookup failed"
    assert (a["service_name"], a["service_version"], a["environment"]) == (svc, "4.5.6", "staging")
    assert (a["http_method"], a["http_route"], a["http_status_code"]) == ("GET", "/items/{id}", 503)
    assert (a["exception_type"], a["exception_message"]) == ("ValueError", "no such item")
    assert a["scope_name"] == "e2e.handwritten"
    assert a["sample_rate"] == 1.0
    assert a["message"] == "GET /items/{id}"
    attributes = json.loads(a["attributes"])
    assert attributes["http.route"] == "/items/{id}"
    assert attributes["http.response.status_code"] == 503
    assert attributes["retries"] == 2
    assert attributes["ratio"] == 0.5
    assert attributes["cached"] is False
    assert attributes["tags"] == ["a", "b"]
    assert json.loads(a["resource_attributes"])["service.name"] == svc
    events = json.loads(a["events"])
    assert len(events) == 1 and events[0]["name"] == "exception"

    assert b["span_id"] == child and b["parent_span_id"] == parent
    assert b["duration_ns"] == 4_000_000
    assert b["start_time"] == rfc3339(t0 + 1_000_000)
    assert b["kind"] == "client"
    assert b["status"] == "ok"
    assert (b["http_method"], b["http_status_code"]) == ("POST", 404)
    links = json.loads(b["links"])
    assert len(links) == 1 and linked_trace in b["links"], links

    # Typed SQL over the stored rows.
    rows = sightline.rows(
        f"SELECT count(*) AS n, sum(duration_ns) AS total FROM spans WHERE service_name = '{svc}' "
        "AND http_status_code >= 400 AND start_time >= now() - INTERVAL '1 hour'"
    )
    assert rows == [{"n": 2, "total": 254_000_000}]


@pytest.mark.parametrize("kind_name,kind", [("SPAN_KIND_SERVER", "server"), ("SPAN_KIND_CONSUMER", "consumer"),
                                            ("SPAN_KIND_INTERNAL", "internal")])
def test_enum_names_are_normalized(sightline, kind_name, kind):
    svc = uniq("json-enum-names")
    tid = trace_id()
    span = simple_span(tid, "named enums", base_ns(), kind=kind_name,
                       status={"code": "STATUS_CODE_ERROR", "message": "bad"})
    resp = sightline.post_otlp("/v1/traces", traces_body(svc, [span]))
    assert resp.status_code == 200, resp.text
    rows = stored_spans(sightline, f"trace_id = '{tid}'", 1, "kind, status, service_name")
    assert rows == [{"kind": kind, "status": "error", "service_name": svc}]


def test_enum_names_in_logs_and_metrics(sightline):
    """Enum names are stored as the values they name: SEVERITY_NUMBER_WARN as severity 13, "warn";
    AGGREGATION_TEMPORALITY_DELTA and _CUMULATIVE as the temporality "delta" and "cumulative",
    as the numbers 1 and 2 are."""
    svc = uniq("json-enum-names")
    t0 = base_ns()
    resp = sightline.post_otlp("/v1/logs", {"resourceLogs": [{"resource": resource(svc), "scopeLogs": [{
        "logRecords": [{"timeUnixNano": str(t0), "severityNumber": "SEVERITY_NUMBER_WARN",
                        "body": {"stringValue": "named severity"}}]}]}]})
    assert resp.status_code == 200, resp.text

    def sum_metric(name: str, temporality) -> dict:
        return {"name": name, "sum": {"aggregationTemporality": temporality, "isMonotonic": True, "dataPoints": [
            {"startTimeUnixNano": str(t0 - 10**9), "timeUnixNano": str(t0), "asInt": "3"}]}}

    resp = sightline.post_otlp("/v1/metrics", {"resourceMetrics": [{"resource": resource(svc), "scopeMetrics": [{
        "metrics": [sum_metric("named.delta", "AGGREGATION_TEMPORALITY_DELTA"),
                    sum_metric("named.cumulative", "AGGREGATION_TEMPORALITY_CUMULATIVE"),
                    sum_metric("numbered.delta", 1), sum_metric("numbered.cumulative", 2)]}]}]})
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    logs = sightline.wait_rows(f"SELECT severity, severity_number, body FROM logs WHERE service_name = '{svc}'")
    assert logs == [{"severity": "warn", "severity_number": 13, "body": "named severity"}]
    points = sightline.wait_rows(
        f"SELECT name, type, value, temporality, monotonic FROM metrics WHERE service_name = '{svc}' ORDER BY name",
        lambda rows: len(rows) >= 4)
    assert points == [
        {"name": name, "type": "sum", "value": 3, "temporality": temporality, "monotonic": True}
        for name, temporality in (("named.cumulative", "cumulative"), ("named.delta", "delta"),
                                  ("numbered.cumulative", "cumulative"), ("numbered.delta", "delta"))]


def test_gzip_json_body(sightline):
    svc = uniq("json-gzip")
    tid = trace_id()
    body = json.dumps(traces_body(svc, [simple_span(tid, "compressed", base_ns(), dur=7_000)])).encode()
    resp = sightline.post_otlp("/v1/traces", gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    rows = stored_spans(sightline, f"trace_id = '{tid}'", 1, "name, duration_ns, service_name")
    assert rows == [{"name": "compressed", "duration_ns": 7_000, "service_name": svc}]


def proto_request(svc: str, tid: str, sid: str, start: int) -> trace_service_pb2.ExportTraceServiceRequest:
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=svc)),
            common_pb2.KeyValue(key="deployment.environment.name", value=common_pb2.AnyValue(string_value="prod")),
        ]),
        scope_spans=[trace_pb2.ScopeSpans(
            scope=common_pb2.InstrumentationScope(name="e2e.proto"),
            spans=[trace_pb2.Span(
                trace_id=bytes.fromhex(tid), span_id=bytes.fromhex(sid), name="proto span",
                kind=trace_pb2.Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start, end_time_unix_nano=start + 42_000,
                attributes=[common_pb2.KeyValue(key="http.response.status_code",
                                                value=common_pb2.AnyValue(int_value=201))],
                status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_OK),
            )],
        )],
    )])


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_protobuf_body(sightline, compressed):
    svc = uniq("proto")
    tid, sid = trace_id(), span_id()
    t0 = base_ns()
    data = proto_request(svc, tid, sid, t0).SerializeToString()
    headers = {}
    if compressed:
        data = gzip.compress(data)
        headers["Content-Encoding"] = "gzip"
    resp = sightline.post_otlp("/v1/traces", data, content_type="application/x-protobuf", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"].startswith("application/x-protobuf")
    answer = trace_service_pb2.ExportTraceServiceResponse()
    answer.ParseFromString(resp.content)
    assert answer.partial_success.rejected_spans == 0

    rows = stored_spans(sightline, f"trace_id = '{tid}'", 1,
                        "span_id, name, kind, status, duration_ns, http_status_code, service_name, environment, "
                        "scope_name, start_time")
    assert rows == [{"span_id": sid, "name": "proto span", "kind": "server", "status": "ok", "duration_ns": 42_000,
                     "http_status_code": 201, "service_name": svc, "environment": "prod",
                     "scope_name": "e2e.proto", "start_time": rfc3339(t0)}]


def test_empty_array_and_kvlist_values(sightline):
    """Empty arrayValue/kvlistValue objects are valid OTLP/JSON (an array with no values, a map
    with no entries): the span is accepted whole and the attributes are stored as an empty JSON
    array and an empty JSON object, beside the others."""
    svc = uniq("json-empty-values")
    tid = trace_id()
    span = simple_span(tid, "empties", base_ns(), attributes=[
        {"key": "empty.array", "value": {"arrayValue": {}}},
        {"key": "empty.map", "value": {"kvlistValue": {}}},
        {"key": "kept", "value": {"stringValue": "yes"}},
    ])
    resp = sightline.post_otlp("/v1/traces", traces_body(svc, [span]))
    assert resp.status_code == 200 and resp.json() == {}, resp.text  # no partialSuccess: nothing rejected
    rows = stored_spans(sightline, f"trace_id = '{tid}'", 1, "attributes")
    assert len(rows) == 1, rows
    assert json.loads(rows[0]["attributes"]) == {"empty.array": [], "empty.map": {}, "kept": "yes"}


# -------------------------------------------------------------------- logs


def test_json_logs_roundtrip(sightline):
    svc = uniq("json-logs")
    tid, sid = trace_id(), span_id()
    t0 = base_ns()
    body = {"resourceLogs": [{
        "resource": resource(svc, **{"service.version": "2.0.0", "deployment.environment.name": "qa"}),
        "scopeLogs": [{"scope": {"name": "app.payments"}, "logRecords": [
            {   # numbers as JSON numbers, severity as an integer
                "timeUnixNano": t0, "observedTimeUnixNano": str(t0 + 5), "severityNumber": 17,
                "severityText": "ERROR", "body": {"stringValue": "charge declined"},
                "traceId": tid, "spanId": sid,
                "attributes": attrs(exception__type="CardError", exception__message="insufficient funds",
                                    customer__tier="gold"),
            },
            {   # strings for int64, no trace context
                "timeUnixNano": str(t0 + 1_000), "severityNumber": 13,
                "body": {"stringValue": "retrying charge"},
            },
            {   # severity given only as a number in another range
                "timeUnixNano": str(t0 + 2_000), "severityNumber": 5, "body": {"stringValue": "debug detail"},
            },
        ]}],
    }]}
    resp = sightline.post_otlp("/v1/logs", body)
    assert resp.status_code == 200, resp.text
    assert not resp.json().get("partialSuccess", {}).get("rejectedLogRecords"), resp.text

    rows = sightline.wait_rows(
        "SELECT time, observed_time, trace_id, span_id, severity_number, severity, body, service_name, "
        "service_version, environment, exception_type, exception_message, "
        "json_get_str(attributes, 'customer.tier') AS tier "
        f"FROM logs WHERE service_name = '{svc}' ORDER BY time",
        lambda r: len(r) >= 3)
    assert len(rows) == 3
    err, warn, dbg = rows
    assert err["time"] == rfc3339(t0)
    assert err["observed_time"] == rfc3339(t0 + 5)
    assert (err["trace_id"], err["span_id"]) == (tid, sid)
    assert (err["severity_number"], err["severity"]) == (17, "error")
    assert err["body"] == "charge declined"
    assert (err["service_version"], err["environment"]) == ("2.0.0", "qa")
    assert (err["exception_type"], err["exception_message"]) == ("CardError", "insufficient funds")
    assert err["tier"] == "gold"

    assert warn["time"] == rfc3339(t0 + 1_000)
    assert (warn["severity_number"], warn["severity"], warn["body"]) == (13, "warn", "retrying charge")
    assert warn["trace_id"] is None and warn["span_id"] is None
    assert (dbg["severity_number"], dbg["severity"]) == (5, "debug")


# ----------------------------------------------------------------- metrics


def test_json_metrics_roundtrip(sightline):
    svc = uniq("json-metrics")
    t0 = base_ns()
    start = t0 - 60 * 10**9
    body = {"resourceMetrics": [{
        "resource": resource(svc, **{"deployment.environment": "test"}),
        "scopeMetrics": [{"scope": {"name": "e2e.meter"}, "metrics": [
            {"name": "queue.depth", "unit": "{item}", "gauge": {"dataPoints": [
                {"timeUnixNano": str(t0), "asDouble": 0.75, "attributes": attrs(queue="emails")}]}},
            {"name": "jobs.done", "unit": "{job}", "sum": {
                "aggregationTemporality": 2, "isMonotonic": True,
                "dataPoints": [{"startTimeUnixNano": str(start), "timeUnixNano": t0, "asInt": "12"}]}},
            {"name": "job.seconds", "unit": "s", "histogram": {
                "aggregationTemporality": 1,
                "dataPoints": [{"startTimeUnixNano": str(start), "timeUnixNano": str(t0), "count": "5",
                                "sum": 12.5, "min": 0.5, "max": 7.0,
                                "bucketCounts": ["1", 3, "1"], "explicitBounds": [1.0, 5.0]}]}},
        ]}],
    }]}
    resp = sightline.post_otlp("/v1/metrics", body)
    assert resp.status_code == 200, resp.text
    assert not resp.json().get("partialSuccess", {}).get("rejectedDataPoints"), resp.text

    rows = sightline.wait_rows(
        "SELECT name, type, unit, value, monotonic, count, sum, min, max, time, start_time, service_name, "
        f"environment, json_get_str(attributes, 'queue') AS queue FROM metrics WHERE service_name = '{svc}' "
        "ORDER BY name", lambda r: len(r) >= 3)
    by = {r["name"]: r for r in rows}
    assert set(by) == {"queue.depth", "jobs.done", "job.seconds"}

    g = by["queue.depth"]
    assert (g["type"], g["value"], g["unit"], g["queue"]) == ("gauge", 0.75, "{item}", "emails")
    assert g["time"] == rfc3339(t0)
    assert g["environment"] == "test"

    s = by["jobs.done"]
    assert (s["type"], s["value"], s["monotonic"]) == ("sum", 12, True)
    assert s["start_time"] == rfc3339(start)

    h = by["job.seconds"]
    assert h["type"] == "histogram"
    assert (h["count"], h["sum"], h["min"], h["max"]) == (5, 12.5, 0.5, 7.0)


# ------------------------------------------------------------ bad requests


def test_malformed_json_is_400(sightline):
    resp = sightline.post_otlp("/v1/traces", b'{"resourceSpans": [ {"resource": ')
    msg = assert_error(resp, 400, "bad_request", otlp=True)
    assert "json" in msg.lower(), f"the message should say a JSON body was expected: {msg}"


def test_partial_success_for_one_bad_span(sightline):
    svc = uniq("json-partial")
    tid = trace_id()
    good = simple_span(tid, "good span", base_ns())
    bad = simple_span("xyz", "bad span", base_ns())
    resp = sightline.post_otlp("/v1/traces", traces_body(svc, [good, bad]))
    assert resp.status_code == 200, resp.text
    partial = resp.json().get("partialSuccess")
    assert partial, resp.text
    assert partial.get("rejectedSpans") in ("1", 1), resp.text
    msg = partial.get("errorMessage", "")
    assert "trace" in msg.lower() and ("xyz" in msg or "hex" in msg.lower() or "32" in msg), msg

    rows = stored_spans(sightline, f"service_name = '{svc}'", 1, "name, trace_id")
    assert rows == [{"name": "good span", "trace_id": tid}]


def test_snake_case_fields_are_400(sightline):
    tid = trace_id()
    body = {"resource_spans": [{"resource": resource(uniq("snake")),
                                "scope_spans": [{"spans": [simple_span(tid, "snake", base_ns())]}]}]}
    msg = assert_error(sightline.post_otlp("/v1/traces", body), 400, "bad_request", otlp=True)
    assert "resource_spans" in msg, msg
    assert sightline.rows(f"SELECT count(*) AS n FROM spans WHERE trace_id = '{tid}'") == [{"n": 0}]


def test_unsupported_content_type_is_415(sightline):
    body = json.dumps(traces_body("x", [simple_span(trace_id(), "x", base_ns())]))
    resp = sightline.post_otlp("/v1/traces", body, content_type="text/plain")
    assert_error(resp, 415, otlp=True)


def test_truncated_protobuf_is_400(sightline):
    data = proto_request(uniq("trunc"), trace_id(), span_id(), base_ns()).SerializeToString()
    resp = sightline.post_otlp("/v1/traces", data[: len(data) // 2], content_type="application/x-protobuf")
    assert_error(resp, 400, "bad_request", otlp=True)


def test_invalid_gzip_is_400(sightline):
    resp = sightline.post_otlp("/v1/traces", b"this is not gzip", headers={"Content-Encoding": "gzip"})
    assert_error(resp, 400, "bad_request", otlp=True)


def test_body_limit_is_413(sightline_factory):
    small = sightline_factory(extra_args=["--max-body-bytes", "1024"], name="limit").start()
    svc = "limit"
    ok = traces_body(svc, [simple_span(trace_id(), "fits", base_ns())])
    assert len(json.dumps(ok)) < 1024
    assert small.post_otlp("/v1/traces", ok).status_code == 200

    big = traces_body(svc, [simple_span(trace_id(), "x" * 4096, base_ns())])
    assert_error(small.post_otlp("/v1/traces", big), 413, "payload_too_large", otlp=True)

    # A small gzip body that inflates past the limit is refused too, and does not hurt the server.
    bomb = gzip.compress(json.dumps(traces_body(svc, [simple_span(trace_id(), "y" * 200_000, base_ns())])).encode())
    assert len(bomb) < 1024
    resp = small.post_otlp("/v1/traces", bomb, headers={"Content-Encoding": "gzip"})
    assert_error(resp, 413, "payload_too_large", otlp=True)

    assert small.get("/healthz").status_code == 200
    assert small.wait_rows("SELECT name FROM spans") == [{"name": "fits"}]


# --------------------------------------------------------------- query API


def test_bad_sql_is_400(sightline):
    assert_error(sightline.query_raw("SELEC * FRM spans"), 400, "bad_request")
    assert_error(sightline.query_raw("SELECT no_such_column FROM spans"), 400, "bad_request")
    resp = sightline.session.post(f"{sightline.api_url}/api/v1/query", data="not json",
                                  headers={"Content-Type": "application/json"}, timeout=10)
    assert_error(resp, 400, "bad_request")


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t (a INT)",
    "INSERT INTO spans (name) VALUES ('x')",
    "COPY (SELECT 1) TO '{tmp}/copied.csv'",
    "CREATE EXTERNAL TABLE ext STORED AS CSV LOCATION '{tmp}/'",
    "DROP TABLE spans",
], ids=["create", "insert", "copy", "external", "drop"])
def test_statements_that_write_are_refused(sightline, sql, tmp_path):
    (tmp_path / "x.csv").write_text("a\n1\n")
    resp = sightline.query_raw(sql.format(tmp=tmp_path))
    msg = assert_error(resp, 400, "bad_request")
    assert "read-only" in msg.lower() or "read only" in msg.lower(), msg
    assert not (tmp_path / "copied.csv").exists()
    # The tables are still there.
    assert "rows" in sightline.query("SELECT count(*) AS n FROM spans")


def test_unknown_trace_is_404(sightline):
    resp = sightline.get(f"/api/v1/traces/{trace_id()}")
    assert_error(resp, 404, "not_found")
