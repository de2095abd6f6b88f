"""Grafana's Jaeger data source against Sightline: the Jaeger query API under `/jaeger/api/...`
on the UI/API listener (Grafana's data source URL is `http://127.0.0.1:4319/jaeger`).

One server (module fixture) receives two traces from the real OpenTelemetry Python SDK, exported
over OTLP/HTTP by two tracer providers (two services), with times the test chose to the
nanosecond:

- "checkout": `shop-frontend` serves `POST /checkout` (attributes of every type, an event, status
  OK) and calls `GET /inventory` (client span, W3C context propagated through a carrier) which
  `shop-orders` serves (server span, status ERROR, exactly 90 ms); its child `reserve_stock` fails
  with a recorded exception and links to the other trace;
- "restock": a `restock.job` consumer span of `shop-orders` 30 s earlier, 2 s long.

The answers are compared field by field with what was sent, converted the way Jaeger converts
OTLP for its UI (tags, references, logs, processes, microsecond times), after checking their keys
and JSON types against Jaeger's own fixtures (below). Covered: services, operations (both routes),
trace by id (with Grafana's time parameters in milliseconds and microseconds), 404 with Jaeger's
error envelope, search (service, operation, tags as JSON and as repeated `tag=k:v`, durations as
Go duration strings, limit, start/end in microseconds), dependencies (milliseconds), and 400s
naming the bad parameter. The spec these tests follow is /tmp/jaeger-spec.md of the change that
added them (Jaeger's v1 HTTP API as of jaegertracing/jaeger 83f31216, the commit before v1 search
was removed, and what grafana/grafana's data source sends).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from conftest import SightlineServer, _cleanup
from test_monitor import start_server, write_config

# ------------------------------------------------------- Jaeger's fixtures (expected shapes)

# jaegertracing/jaeger cmd/jaeger/internal/extension/jaegerquery/internal/fixture/otlp2jaeger-out.json
# (an OTLP server span converted to the UI JSON of GET /api/traces/{id}): the envelope, the trace,
# its first span (two of its four tags kept) and its process.
FIXTURE_TRACE_ANSWER = {
    "data": [
        {
            "traceID": "83a9efd15c1c98a977e0711cc93ee28b",
            "spans": [
                {
                    "traceID": "83a9efd15c1c98a977e0711cc93ee28b",
                    "spanID": "e127af99e3b3e074",
                    "operationName": "okey-dokey-0",
                    "references": [
                        {"refType": "CHILD_OF", "traceID": "83a9efd15c1c98a977e0711cc93ee28b",
                         "spanID": "909541b92cf05311"},
                    ],
                    "startTime": 1706678909209712,
                    "duration": 123,
                    "tags": [
                        {"key": "otel.scope.name", "type": "string", "value": "telemetrygen"},
                        {"key": "span.kind", "type": "string", "value": "server"},
                    ],
                    "logs": [],
                    "processID": "p1",
                    "warnings": None,
                },
            ],
            "processes": {"p1": {"serviceName": "telemetrygen", "tags": []}},
            "warnings": None,
        },
    ],
    "total": 0,
    "limit": 0,
    "offset": 0,
    "errors": None,
}
FIXTURE_TRACE = FIXTURE_TRACE_ANSWER["data"][0]
FIXTURE_SPAN = FIXTURE_TRACE["spans"][0]
FIXTURE_PROCESS = FIXTURE_TRACE["processes"]["p1"]

# jaegertracing/jaeger internal/uimodel/converter/v1/json/fixtures/ui_01.json (at 83f31216): a log,
# a link reference, and one tag of each type (an int64 beyond 2^53 - 1 is written as a string).
FIXTURE_LOG = {"timestamp": 1485467191639875,
               "fields": [{"key": "event", "type": "string", "value": "some-event"}]}
FIXTURE_FOLLOWS_FROM = {"refType": "FOLLOWS_FROM", "traceID": "0000000000000001", "spanID": "0000000000000002"}
FIXTURE_TAGS = [
    {"key": "peer.service", "type": "string", "value": "service-y"},
    {"key": "peer.ipv4", "type": "int64", "value": 23456},
    {"key": "error", "type": "bool", "value": True},
    {"key": "temperature", "type": "float64", "value": 72.5},
    {"key": "javascript_limit", "type": "int64", "value": "9223372036854775222"},
    {"key": "blob", "type": "binary", "value": "AAAwOQ=="},
]

# jaegertracing/jaeger cmd/jaeger/internal/extension/jaegerquery/internal/http_handler_test.go
# (parsedError, TestGetTraceNotFound): the answer to GET /api/traces/{id} for an unknown id (404).
FIXTURE_NOT_FOUND = {"data": None, "total": 0, "limit": 0, "offset": 0,
                     "errors": [{"code": 404, "msg": "trace not found"}]}

# grafana/grafana pkg/tsdb/jaeger/client_test.go (the mocked Jaeger answers Grafana decodes):
# services (operations have the same shape, with names) and a dependency link.
FIXTURE_SERVICES_ANSWER = {"data": ["service1", "service2"], "total": 2, "limit": 0, "offset": 0}
FIXTURE_DEPENDENCY = {"parent": "serviceA", "child": "serviceB", "callCount": 1}

# jaegertracing/jaeger http_handler_test.go (TestGetOperationsSuccess) and internal/uimodel/model.go
# (Operation): an entry of GET /api/operations?service=&spanKind=.
FIXTURE_OPERATION = {"name": "get", "spanKind": "server"}

JS_MAX_SAFE_INTEGER = 2**53 - 1
TAG_VALUE_TYPES = {"string": str, "bool": bool, "int64": (int, str), "float64": (float, int), "binary": str}
SPAN_KINDS = {SpanKind.SERVER: "server", SpanKind.CLIENT: "client", SpanKind.PRODUCER: "producer",
              SpanKind.CONSUMER: "consumer", SpanKind.INTERNAL: "internal"}

# ------------------------------------------------------------------------------ the data

FRONTEND = "shop-frontend"
ORDERS = "shop-orders"
MS = 1_000_000
S = 1_000_000_000


class Producer:
    """One service: a TracerProvider with its resource, spans kept in memory until exported."""

    def __init__(self, service: str, attributes: dict):
        self.resource = Resource.create({"service.name": service, **attributes})
        self.memory = InMemorySpanExporter()
        self.provider = TracerProvider(resource=self.resource)
        self.provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = self.provider.get_tracer(f"e2e.jaeger.{service}")

    def export(self, srv: SightlineServer) -> list[ReadableSpan]:
        """Send every finished span in one OTLP/HTTP (protobuf) request; it must be accepted."""
        spans = list(self.memory.get_finished_spans())
        exporter = OTLPSpanExporter(endpoint=f"{srv.otlp_http_url}/v1/traces", timeout=10)
        try:
            result = exporter.export(spans)
        finally:
            exporter.shutdown()
            self.provider.shutdown()
        assert result is SpanExportResult.SUCCESS, f"the OTLP export of {len(spans)} spans failed: {result}"
        return spans


@dataclass
class Sent:
    srv: SightlineServer
    spans: dict[str, ReadableSpan]  # by role: checkout, inventory_client, inventory_server, reserve, restock
    checkout_trace: str
    restock_trace: str
    t0_ns: int  # start of POST /checkout

    def trace_spans(self, trace_id: str) -> list[ReadableSpan]:
        return [s for s in self.spans.values() if hex32(s.context.trace_id) == trace_id]


def send_traces(srv: SightlineServer) -> Sent:
    # Two minutes ago, 789 ns past a second: times are not whole microseconds.
    t0 = time.time_ns() // S * S - 120 * S + 789
    front = Producer(FRONTEND, {"service.version": "1.4.0", "team": "web"})
    orders = Producer(ORDERS, {"service.version": "2.0.1", "team": "fulfilment"})
    propagator = TraceContextTextMapPropagator()

    restock = orders.tracer.start_span("restock.job", kind=SpanKind.CONSUMER, start_time=t0 - 30 * S,
                                       attributes={"messaging.system": "kafka", "batch.size": 250})
    restock.end(end_time=t0 - 30 * S + 2 * S + 345)

    checkout = front.tracer.start_span("POST /checkout", kind=SpanKind.SERVER, start_time=t0, attributes={
        "http.request.method": "POST", "http.route": "/checkout", "http.response.status_code": 200,
        "cart.items": 3, "cart.total": 59.95, "customer.premium": True, "order.big_id": 2**60,
        "cart.skus": ("sku-42", "sku-7"),
    })
    checkout.add_event("cart.validated", {"validation.rule": "stock", "cart.lines": 2}, timestamp=t0 + 10 * MS + 1)
    client = front.tracer.start_span("GET /inventory", context=trace.set_span_in_context(checkout),
                                     kind=SpanKind.CLIENT, start_time=t0 + 20 * MS, attributes={
                                         "http.request.method": "GET", "upstream": "orders.internal:8080"})
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context=trace.set_span_in_context(client))

    inventory = orders.tracer.start_span("GET /inventory", context=propagator.extract(carrier),
                                         kind=SpanKind.SERVER, start_time=t0 + 25 * MS, attributes={
                                             "http.request.method": "GET", "http.route": "/inventory",
                                             "http.response.status_code": 500})
    reserve = orders.tracer.start_span("reserve_stock", context=trace.set_span_in_context(inventory),
                                       kind=SpanKind.INTERNAL, start_time=t0 + 30 * MS,
                                       attributes={"stock.sku": "sku-42", "stock.requested": 5},
                                       links=[Link(restock.get_span_context(), {"link.reason": "restock"})])
    try:
        raise ValueError("out of stock: sku-42")
    except ValueError as exc:
        reserve.record_exception(exc, timestamp=t0 + 55 * MS)
    reserve.set_status(Status(StatusCode.ERROR, "out of stock"))
    reserve.end(end_time=t0 + 60 * MS)
    inventory.set_status(Status(StatusCode.ERROR))
    inventory.end(end_time=t0 + 115 * MS)  # exactly 90 ms
    client.end(end_time=t0 + 120 * MS + 500)
    checkout.set_status(Status(StatusCode.OK))
    checkout.end(end_time=t0 + 250 * MS + 123_456)

    exported = {s.context.span_id: s for s in front.export(srv) + orders.export(srv)}
    roles = {"checkout": checkout, "inventory_client": client, "inventory_server": inventory,
             "reserve": reserve, "restock": restock}
    assert len(exported) == len(roles)
    return Sent(srv=srv, spans={role: exported[span.get_span_context().span_id] for role, span in roles.items()},
                checkout_trace=hex32(checkout.get_span_context().trace_id),
                restock_trace=hex32(restock.get_span_context().trace_id), t0_ns=t0)


@pytest.fixture(scope="module")
def sent(tmp_path_factory):
    base = tmp_path_factory.mktemp("jaeger")
    srv = start_server(base, "jaeger", write_config(base / "sightline.toml", "# defaults\n"))
    try:
        data = send_traces(srv)
        srv.wait_rows(f"SELECT count(*) AS n FROM spans WHERE service_name IN ('{FRONTEND}', '{ORDERS}')",
                      lambda rows: rows[0]["n"] == 5, timeout=10)
        yield data
    finally:
        _cleanup(srv)


# ------------------------------------------------------------------------- helpers


def hex32(trace_id: int) -> str:
    return format(trace_id, "032x")


def hex16(span_id: int) -> str:
    return format(span_id, "016x")


def jaeger(srv: SightlineServer, path: str, params=None):
    """GET {base}/jaeger/api{path}; params as a dict or a list of pairs (for repeated keys)."""
    return srv.get(f"/jaeger/api{path}", params=params)


def ok(resp) -> dict:
    """A 200 answer in Jaeger's envelope; returns the body."""
    assert resp.status_code == 200, f"GET {resp.url}: {resp.status_code} {resp.text[:2000]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == set(FIXTURE_TRACE_ANSWER), f"envelope keys {sorted(body)} of {resp.url}"
    assert body["errors"] is None, body["errors"]
    assert (body["limit"], body["offset"]) == (0, 0), body
    assert type(body["total"]) is int
    return body


def search(srv: SightlineServer, params) -> list[str]:
    """GET /api/traces; the trace ids found, in answer order (each trace checked for shape)."""
    body = ok(jaeger(srv, "/traces", params))
    assert body["total"] == 0, "Jaeger leaves total at 0 for traces"
    assert isinstance(body["data"], list), body["data"]
    for t in body["data"]:
        check_trace_shape(t)
    return [t["traceID"] for t in body["data"]]


def jaeger_kv(key: str, value) -> dict:
    """An OTLP attribute as Jaeger's KeyValue (contrib translator + uimodel converter)."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value if abs(value) <= JS_MAX_SAFE_INTEGER else str(value)}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, (list, tuple)):
        return {"key": key, "type": "string", "value": json.dumps(list(value), separators=(",", ":"))}
    return {"key": key, "type": "string", "value": str(value)}


def expected_tags(s: ReadableSpan) -> list[dict]:
    tags = [jaeger_kv("otel.scope.name", s.instrumentation_scope.name)]
    tags += [jaeger_kv(k, v) for k, v in sorted(s.attributes.items())]
    tags.append(jaeger_kv("span.kind", SPAN_KINDS[s.kind]))
    if s.status.status_code is StatusCode.OK:
        tags.append(jaeger_kv("otel.status_code", "OK"))
    if s.status.status_code is StatusCode.ERROR:
        tags += [jaeger_kv("otel.status_code", "ERROR"), jaeger_kv("error", True)]
    if s.status.description:
        tags.append(jaeger_kv("otel.status_description", s.status.description))
    return tags


def expected_references(s: ReadableSpan) -> list[dict]:
    refs = []
    if s.parent is not None:
        refs.append({"refType": "CHILD_OF", "traceID": hex32(s.context.trace_id), "spanID": hex16(s.parent.span_id)})
    refs += [{"refType": "FOLLOWS_FROM", "traceID": hex32(link.context.trace_id), "spanID": hex16(link.context.span_id)}
             for link in s.links]
    return refs


def expected_logs(s: ReadableSpan) -> list[dict]:
    return [{"timestamp": e.timestamp // 1000,
             "fields": [jaeger_kv("event", e.name)] + [jaeger_kv(k, v) for k, v in sorted(e.attributes.items())]}
            for e in sorted(s.events, key=lambda e: e.timestamp)]


def expected_process(s: ReadableSpan) -> dict:
    attrs = s.resource.attributes
    return {"serviceName": attrs["service.name"],
            "tags": [jaeger_kv(k, v) for k, v in sorted(attrs.items()) if k != "service.name"]}


def expected_trace(spans: list[ReadableSpan]) -> dict:
    """The UI JSON of a trace: spans by start time (then span id), processes p1, p2, ... in order
    of first appearance, times in microseconds (floor), duration from the nanosecond difference."""
    spans = sorted(spans, key=lambda s: (s.start_time // 1000, hex16(s.context.span_id)))
    processes: dict[str, dict] = {}
    out = []
    for s in spans:
        process = expected_process(s)
        pid = next((k for k, p in processes.items() if p == process), None)
        if pid is None:
            pid = f"p{len(processes) + 1}"
            processes[pid] = process
        out.append({
            "traceID": hex32(s.context.trace_id), "spanID": hex16(s.context.span_id), "operationName": s.name,
            "references": expected_references(s), "startTime": s.start_time // 1000,
            "duration": (s.end_time - s.start_time) // 1000, "tags": expected_tags(s), "logs": expected_logs(s),
            "processID": pid, "warnings": None,
        })
    return {"traceID": out[0]["traceID"], "spans": out, "processes": processes, "warnings": None}


def check_like(value, like, where: str) -> None:
    """value has the keys and JSON types of the fixture literal `like` (lists: every item like
    the fixture's first one; KeyValues: the value's type follows `type`)."""
    if isinstance(like, dict):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        if set(like) == {"key", "type", "value"}:
            check_tag(value, where)
            return
        extra = set(value) - set(like) - ({"flags"} if "spanID" in like and "operationName" in like else set())
        missing = set(like) - set(value)
        assert not extra and not missing, f"{where}: unexpected keys {sorted(extra)}, missing {sorted(missing)}"
        if "flags" in value:
            assert type(value["flags"]) is int, f"{where}.flags: {value['flags']!r}"
        for key in like:
            check_like(value[key], like[key], f"{where}.{key}")
    elif isinstance(like, list):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        if like:
            for i, item in enumerate(value):
                check_like(item, like[0], f"{where}[{i}]")
    elif like is None:
        assert value is None or isinstance(value, list), f"{where}: {value!r} is neither null nor a list"
    else:
        assert type(value) is type(like), f"{where}: {value!r} is a {type(value).__name__}, not {type(like).__name__}"


def check_tag(tag: dict, where: str) -> None:
    assert set(tag) == {"key", "type", "value"}, f"{where}: KeyValue keys {sorted(tag)}"
    assert type(tag["key"]) is str, f"{where}: {tag}"
    assert tag["type"] in TAG_VALUE_TYPES, f"{where}: type {tag['type']!r} is not one of {sorted(TAG_VALUE_TYPES)}"
    allowed = TAG_VALUE_TYPES[tag["type"]]
    assert isinstance(tag["value"], allowed) and (tag["type"] == "bool" or type(tag["value"]) is not bool), \
        f"{where}: a {tag['type']} tag with value {tag['value']!r}"
    if tag["type"] == "int64" and isinstance(tag["value"], str):
        assert tag["value"].lstrip("-").isdigit() and abs(int(tag["value"])) > JS_MAX_SAFE_INTEGER, \
            f"{where}: only an int64 beyond 2^53 - 1 is written as a string: {tag}"


def check_trace_shape(t: dict) -> None:
    # processes is a map from process ids (p1, p2, ...) to processes; the rest is a fixed shape.
    check_like({**t, "processes": {}}, {**FIXTURE_TRACE, "processes": {}}, "trace")
    assert isinstance(t["processes"], dict) and t["processes"], f"trace.processes: {t['processes']!r}"
    assert all(re.fullmatch(r"p[1-9][0-9]*", pid) for pid in t["processes"]), sorted(t["processes"])
    for i, span in enumerate(t["spans"]):
        for j, ref in enumerate(span["references"]):
            check_like(ref, FIXTURE_FOLLOWS_FROM, f"trace.spans[{i}].references[{j}]")
        for j, log in enumerate(span["logs"]):
            check_like(log, FIXTURE_LOG, f"trace.spans[{i}].logs[{j}]")
        assert span["processID"] in t["processes"], f"span {span['spanID']}: processID {span['processID']!r} " \
                                                    f"is not in processes {sorted(t['processes'])}"
    for pid, process in t["processes"].items():
        check_like(process, FIXTURE_PROCESS, f"trace.processes.{pid}")


def assert_same(actual, expected, where: str = "") -> None:
    """Field by field, naming the first path that differs; JSON types must match exactly."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(expected), \
            f"{where}: keys {sorted(actual)} != expected {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: {actual!r} is not a list"
        assert len(actual) == len(expected), \
            f"{where}: {len(actual)} items, expected {len(expected)}\n got: {actual}\nwant: {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    else:
        assert type(actual) is type(expected) and actual == expected, \
            f"{where}: got {actual!r} ({type(actual).__name__}), expected {expected!r} ({type(expected).__name__})"


def trace_by_id(srv: SightlineServer, trace_id: str, params=None) -> dict:
    body = ok(jaeger(srv, f"/traces/{trace_id}", params))
    assert body["total"] == 0, "Jaeger leaves total at 0 for traces"
    assert isinstance(body["data"], list) and len(body["data"]) == 1, body["data"]
    return body["data"][0]


def micros(ns: int) -> int:
    return ns // 1000


def millis(ns: int) -> int:
    return ns // 1_000_000


# ------------------------------------------------------------------- the fixtures themselves


def test_the_expected_shapes_agree_with_jaegers_fixtures():
    """The checks below accept Jaeger's own fixtures (guards the helpers, not the server)."""
    check_like(FIXTURE_TRACE_ANSWER, FIXTURE_TRACE_ANSWER, "fixture")
    check_trace_shape(FIXTURE_TRACE)
    for i, tag in enumerate(FIXTURE_TAGS):
        check_tag(tag, f"FIXTURE_TAGS[{i}]")
    assert jaeger_kv("javascript_limit", 9223372036854775222) == FIXTURE_TAGS[4]
    assert jaeger_kv("temperature", 72.5) == FIXTURE_TAGS[3]
    assert jaeger_kv("error", True) == FIXTURE_TAGS[2]


# ------------------------------------------------------------------------- services


def test_services_lists_both_services_sorted(sent):
    body = ok(jaeger(sent.srv, "/services"))
    check_like({k: body[k] for k in FIXTURE_SERVICES_ANSWER}, FIXTURE_SERVICES_ANSWER, "services")
    assert body["data"] == [FRONTEND, ORDERS]
    assert body["total"] == 2


def test_operations_of_a_service_are_its_span_names(sent):
    """What Grafana's operation dropdown calls: GET /api/services/{service}/operations."""
    body = ok(jaeger(sent.srv, f"/services/{FRONTEND}/operations"))
    assert body["data"] == ["GET /inventory", "POST /checkout"]
    assert body["total"] == 2
    assert ok(jaeger(sent.srv, f"/services/{ORDERS}/operations"))["data"] == \
        ["GET /inventory", "reserve_stock", "restock.job"]
    # The service is percent-decoded ('-' written as %2D), as Grafana encodes it.
    assert ok(jaeger(sent.srv, "/services/shop%2Dorders/operations"))["data"] == \
        ["GET /inventory", "reserve_stock", "restock.job"]
    unknown = ok(jaeger(sent.srv, "/services/no-such-service/operations"))
    assert (unknown["data"], unknown["total"]) == ([], 0)


def test_operations_with_span_kind(sent):
    """GET /api/operations?service=&spanKind=: {name, spanKind} per operation and kind."""
    body = ok(jaeger(sent.srv, "/operations", {"service": ORDERS}))
    for i, op in enumerate(body["data"]):
        check_like(op, FIXTURE_OPERATION, f"operations[{i}]")
    assert body["data"] == [{"name": "GET /inventory", "spanKind": "server"},
                            {"name": "reserve_stock", "spanKind": "internal"},
                            {"name": "restock.job", "spanKind": "consumer"}]
    assert body["total"] == 3
    assert ok(jaeger(sent.srv, "/operations", {"service": FRONTEND}))["data"] == \
        [{"name": "GET /inventory", "spanKind": "client"}, {"name": "POST /checkout", "spanKind": "server"}]
    server_only = ok(jaeger(sent.srv, "/operations", {"service": ORDERS, "spanKind": "server"}))
    assert server_only["data"] == [{"name": "GET /inventory", "spanKind": "server"}]
    assert server_only["total"] == 1


# --------------------------------------------------------------------------- trace by id


def test_trace_by_id_is_what_was_sent(sent):
    got = trace_by_id(sent.srv, sent.checkout_trace)
    check_trace_shape(got)
    want = expected_trace(sent.trace_spans(sent.checkout_trace))
    assert_same(got, want, "trace")

    # The points the comparison above covers, spelled out:
    spans = {s["spanID"]: s for s in got["spans"]}
    reserve = spans[hex16(sent.spans["reserve"].context.span_id)]
    assert [r["refType"] for r in reserve["references"]] == ["CHILD_OF", "FOLLOWS_FROM"]
    assert reserve["references"][1]["traceID"] == sent.restock_trace, "the link points into the other trace"
    assert got["processes"][reserve["processID"]]["serviceName"] == ORDERS
    checkout = spans[hex16(sent.spans["checkout"].context.span_id)]
    assert checkout["references"] == [], "the root span has no references"
    assert checkout["startTime"] == micros(sent.t0_ns)
    assert checkout["duration"] == 250_123, "floor of the nanosecond duration, in microseconds"
    tags = {t["key"]: t for t in checkout["tags"]}
    assert tags["order.big_id"] == {"key": "order.big_id", "type": "int64", "value": str(2**60)}
    assert tags["cart.total"] == {"key": "cart.total", "type": "float64", "value": 59.95}
    assert tags["customer.premium"] == {"key": "customer.premium", "type": "bool", "value": True}
    assert tags["cart.skus"] == {"key": "cart.skus", "type": "string", "value": '["sku-42","sku-7"]'}
    assert [got["processes"][s["processID"]]["serviceName"] for s in got["spans"]] == \
        [FRONTEND, FRONTEND, ORDERS, ORDERS]
    assert list(got["processes"]) == ["p1", "p2"]


def test_trace_by_id_with_grafanas_time_parameters(sent):
    """With "Enable Time Parameters", Grafana's backend sends start/end in milliseconds (Jaeger
    reads microseconds; the frontend of older Grafana sent microseconds). Both, and a window that
    misses the trace, are hints only: the trace is found and the answer is the same."""
    plain = trace_by_id(sent.srv, sent.checkout_trace)
    now = time.time_ns()
    since = sent.t0_ns - 3600 * S
    grafana_backend = {"end": millis(now), "start": millis(since)}
    grafana_frontend = {"start": micros(since), "end": micros(now)}
    stale_window = {"start": micros(sent.t0_ns - 86400 * S), "end": micros(sent.t0_ns - 86000 * S)}
    for params in (grafana_backend, grafana_frontend, stale_window):
        assert_same(trace_by_id(sent.srv, sent.checkout_trace, params), plain, f"trace with {params}")
    # Ids are case-insensitive; the answer spells them in lowercase.
    assert trace_by_id(sent.srv, sent.checkout_trace.upper())["traceID"] == sent.checkout_trace


def test_an_unknown_trace_id_is_404_with_jaegers_error_envelope(sent):
    resp = jaeger(sent.srv, f"/traces/{os.urandom(16).hex()}")
    assert resp.status_code == 404, f"{resp.status_code} {resp.text}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    assert_same(resp.json(), FIXTURE_NOT_FOUND, "not found")


# ---------------------------------------------------------------------------------- search


def test_search_by_service_returns_whole_traces_newest_first(sent):
    assert search(sent.srv, {"service": ORDERS}) == [sent.checkout_trace, sent.restock_trace]
    assert search(sent.srv, {"service": FRONTEND}) == [sent.checkout_trace]
    # A found trace is the whole trace (both services), the same as by id.
    body = ok(jaeger(sent.srv, "/traces", {"service": ORDERS, "operation": "reserve_stock"}))
    assert [t["traceID"] for t in body["data"]] == [sent.checkout_trace]
    assert_same(body["data"][0], expected_trace(sent.trace_spans(sent.checkout_trace)), "searched trace")
    assert search(sent.srv, {"service": "no-such-service"}) == []


def test_search_by_operation(sent):
    assert search(sent.srv, {"service": ORDERS, "operation": "restock.job"}) == [sent.restock_trace]
    assert search(sent.srv, {"service": ORDERS, "operation": "GET /inventory"}) == [sent.checkout_trace]
    # The operation must be a span of that service: POST /checkout is shop-frontend's.
    assert search(sent.srv, {"service": ORDERS, "operation": "POST /checkout"}) == []


def test_search_by_tags_as_json(sent):
    """tags={"k":"v"} (what Grafana sends, from its logfmt box): every tag on one span of the
    service; values compared as text; span.kind and error are the span's kind and status;
    resource and event attributes count."""
    def tags(service: str, **kv) -> list[str]:
        return search(sent.srv, {"service": service, "tags": json.dumps(kv)})

    both = [sent.checkout_trace, sent.restock_trace]
    assert tags(FRONTEND, **{"cart.items": "3"}) == [sent.checkout_trace]
    assert tags(FRONTEND, **{"cart.items": "4"}) == []
    assert tags(FRONTEND, **{"customer.premium": "true"}) == [sent.checkout_trace]
    assert tags(FRONTEND, **{"http.response.status_code": "200"}) == [sent.checkout_trace]
    assert tags(FRONTEND, **{"validation.rule": "stock"}) == [sent.checkout_trace], "an event attribute"
    assert tags(ORDERS, team="fulfilment") == both, "a resource attribute"
    assert tags(ORDERS, error="true") == [sent.checkout_trace]
    assert tags(ORDERS, error="false") == [sent.restock_trace]
    assert tags(ORDERS, **{"span.kind": "consumer"}) == [sent.restock_trace]
    assert tags(FRONTEND, **{"http.route": "/checkout", "cart.items": "3"}) == [sent.checkout_trace]
    # Both tags must hold on the same span: cart.items is on the server span, not the client one.
    assert tags(FRONTEND, **{"cart.items": "3", "span.kind": "client"}) == []


def test_search_by_repeated_tag_parameters(sent):
    """tag=key:value, repeated (Jaeger UI's form): split at the first colon; merged with tags=."""
    def search_tags(*pairs: tuple[str, str]) -> list[str]:
        return search(sent.srv, [("service", FRONTEND), *pairs])

    assert search_tags(("tag", "upstream:orders.internal:8080")) == [sent.checkout_trace]
    assert search_tags(("tag", "http.route:/checkout"), ("tag", "cart.items:3")) == [sent.checkout_trace]
    assert search_tags(("tag", "http.route:/checkout"), ("tag", "cart.items:9")) == []
    assert search_tags(("tag", "cart.items:3"), ("tags", '{"customer.premium":"true"}')) == [sent.checkout_trace]


def test_search_by_duration_strings(sent):
    """minDuration/maxDuration are Go durations on one span of the service, bounds included;
    GET /inventory on shop-orders lasted exactly 90 ms, restock.job 2 s."""
    def by(**params) -> list[str]:
        return search(sent.srv, {"service": ORDERS, **params})

    assert by(minDuration="1.5s") == [sent.restock_trace]
    assert by(maxDuration="1s") == [sent.checkout_trace]
    inventory = {"operation": "GET /inventory"}
    assert by(**inventory, minDuration="90ms", maxDuration="90ms") == [sent.checkout_trace]
    assert by(**inventory, minDuration="0.09s", maxDuration="90000us") == [sent.checkout_trace]
    assert by(**inventory, minDuration="90001us") == []
    assert by(**inventory, maxDuration="89999µs") == []
    # The 250 ms span is shop-frontend's: it does not make a shop-orders span match.
    assert by(minDuration="200ms", maxDuration="1s") == []


def test_search_limit(sent):
    assert search(sent.srv, {"service": ORDERS, "limit": "1"}) == [sent.checkout_trace]
    assert search(sent.srv, {"service": ORDERS, "limit": "2"}) == [sent.checkout_trace, sent.restock_trace]


def test_search_window_in_microseconds(sent):
    """start/end are microseconds since the epoch, on span start times; `lookback` (sent by
    Grafana's frontend as "custom") is ignored."""
    t0 = sent.t0_ns
    around_restock = {"start": micros(t0 - 31 * S), "end": micros(t0 - 29 * S)}
    assert search(sent.srv, {"service": ORDERS, **around_restock}) == [sent.restock_trace]
    since_checkout = {"start": micros(t0), "end": micros(time.time_ns())}
    assert search(sent.srv, {"service": ORDERS, **since_checkout}) == [sent.checkout_trace]
    future = {"start": micros(time.time_ns() + 3600 * S), "end": micros(time.time_ns() + 7200 * S)}
    assert search(sent.srv, {"service": ORDERS, **future}) == []
    # The request of Grafana's search form, as its backend builds it (empty fields left out).
    grafana = {"service": ORDERS, "operation": "reserve_stock", "tags": '{"stock.sku":"sku-42"}',
               "minDuration": "10ms", "maxDuration": "1s", "limit": "20",
               "start": micros(t0 - 3600 * S), "end": micros(time.time_ns())}
    assert search(sent.srv, grafana) == [sent.checkout_trace]
    assert search(sent.srv, {**grafana, "lookback": "custom"}) == [sent.checkout_trace]


# ---------------------------------------------------------------------------- dependencies


def test_dependencies_count_cross_service_calls(sent):
    """endTs and lookback in milliseconds, as Grafana sends them; one call from shop-frontend to
    shop-orders; calls within a service are not dependencies."""
    link = {"parent": FRONTEND, "child": ORDERS, "callCount": 1}
    window = {"endTs": millis(time.time_ns()), "lookback": 3600 * 1000}
    body = ok(jaeger(sent.srv, "/dependencies", window))
    for i, dep in enumerate(body["data"]):
        check_like(dep, FIXTURE_DEPENDENCY, f"dependencies[{i}]")
    assert body["data"] == [link]
    assert body["total"] == 0
    assert ok(jaeger(sent.srv, "/dependencies"))["data"] == [link], "default: the last 24 hours"
    assert ok(jaeger(sent.srv, "/dependencies", {**window, "service": ORDERS}))["data"] == [link]
    assert ok(jaeger(sent.srv, "/dependencies", {**window, "service": "no-such-service"}))["data"] == []
    before = {"endTs": millis(sent.t0_ns - 60 * S), "lookback": 3600 * 1000}
    assert ok(jaeger(sent.srv, "/dependencies", before))["data"] == []


# ---------------------------------------------------------------------------- bad requests


BAD_REQUESTS = [
    # (path, query, the parameter the error must name)
    ("/traces", {"service": ORDERS, "limit": "abc"}, "limit"),
    ("/traces", {"service": ORDERS, "minDuration": "banana"}, "minDuration"),
    ("/traces", {"service": ORDERS, "maxDuration": "20"}, "maxDuration"),
    ("/traces", {"service": ORDERS, "minDuration": "2s", "maxDuration": "1s"}, "maxDuration"),
    ("/traces", {"service": ORDERS, "start": "yesterday"}, "start"),
    ("/traces", {"service": ORDERS, "end": "1.5"}, "end"),
    ("/traces", {"service": ORDERS, "tag": "novalue"}, "tag"),
    ("/traces", {"service": ORDERS, "tags": "{not json"}, "tags"),
    ("/traces/{trace}", {"start": "abc"}, "start"),
    ("/traces/not-a-trace-id", {}, "traceID"),
    ("/traces/" + "a" * 33, {}, "traceID"),
    ("/dependencies", {"endTs": "abc"}, "endTs"),
    ("/dependencies", {"lookback": "1h"}, "lookback"),
    ("/operations", {}, "service"),
    ("/operations", {"service": ORDERS, "spanKind": "sideways"}, "spanKind"),
]


@pytest.mark.parametrize("path,query,param", BAD_REQUESTS, ids=[f"{p}?{q}" for p, q, _ in BAD_REQUESTS])
def test_bad_parameters_are_400_naming_the_parameter(sent, path, query, param):
    resp = jaeger(sent.srv, path.format(trace=sent.checkout_trace), query)
    assert resp.status_code == 400, f"GET {resp.url}: {resp.status_code} {resp.text[:1000]}"
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    check_like(body, {**FIXTURE_NOT_FOUND, "data": None}, "error envelope")
    assert body["data"] is None and (body["total"], body["limit"], body["offset"]) == (0, 0, 0), body
    assert len(body["errors"]) == 1, body["errors"]
    error = body["errors"][0]
    assert error["code"] == 400, error
    assert f"'{param}'" in error["msg"], f"the message does not name '{param}': {error['msg']!r}"
