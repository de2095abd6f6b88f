"""Hostile input on the OTLP receivers, in one place.

Every hostile body gets a precise answer: a 4xx whose message says what was wrong (or, for
oversized records, a 200 with the excess dropped or cut and counted), and every one of them shows
up in Sightline's own metrics (GET /metrics) by exactly the expected amount. Meanwhile the server
stays up and its memory stays bounded: a gzip bomb is never inflated past --max-body-bytes.

The inputs go over OTLP/HTTP and, where it costs nothing, over OTLP/gRPC too (grpcio with an
identity serializer, so that hand-made bytes reach the server as they are). Hostile protobuf
bodies are written with the small wire-format encoder below, because the protobuf library will
not produce invalid UTF-8 or a 10,000-deep message.

One server serves the whole module (its tests run in file order and each one compares the
counters before and after itself); the last test checks that it survived all of it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import time
import zlib

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import SightlineServer

MiB = 1 << 20
# --max-body-bytes of this module's server: not the default (16 MiB), so that the answers show
# the flag is what decides; a 10 MB attribute value still fits under it.
MAX_BODY = 12 * MiB
# The default per-record limits (README, [limits]).
MAX_ATTRIBUTES = 1024
MAX_VALUE_BYTES = 65536
MAX_DEPTH = 16
DEPTH_MARKER = f"[nested deeper than {MAX_DEPTH} levels: dropped]"
DAY_NS = 86_400 * 10**9
U64_MAX = 2**64 - 1

# Memory: the peak RSS (VmHWM) of the whole run stays well below the 1 GiB the bomb inflates to,
# and a request refused for its size raises the peak by no more than a small margin over the
# RSS it started from (the peak is reset before such a request through /proc/PID/clear_refs).
PEAK_RSS_LIMIT_KB = 768 * 1024
SIZE_REFUSAL_MARGIN_KB = 64 * 1024

PATHS = {"spans": "/v1/traces", "logs": "/v1/logs", "metrics": "/v1/metrics"}
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


# ------------------------------------------------------- protobuf wire format


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def fixed64(number: int, value: int) -> bytes:
    return varint(number << 3 | 1) + struct.pack("<Q", value)


def any_string(raw: bytes) -> bytes:
    """AnyValue{string_value}: the bytes as given, valid UTF-8 or not."""
    return field(1, raw)


def key_value(key: bytes, any_value: bytes) -> bytes:
    return field(1, key) + field(2, any_value)


def deep_array(depth: int) -> bytes:
    """AnyValue{array_value: ArrayValue{values: [AnyValue{array_value: ...}]}}, depth times."""
    value = any_string(b"leaf")
    for _ in range(depth):
        value = field(5, field(1, value))
    return value


def deep_map(depth: int) -> bytes:
    """AnyValue{kvlist_value: KeyValueList{values: [KeyValue{"k": ...}]}}, depth times."""
    value = any_string(b"leaf")
    for _ in range(depth):
        value = field(6, field(1, key_value(b"k", value)))
    return value


def pb_span(name: bytes = b"op", start: int | None = None, attributes: list[bytes] = ()) -> bytes:
    """A Span message; attributes are encoded KeyValue messages."""
    start = time.time_ns() if start is None else start
    return (field(1, os.urandom(16)) + field(2, os.urandom(8)) + field(5, name) + varint(6 << 3) + varint(2)
            + fixed64(7, start) + fixed64(8, min(start + 1000, U64_MAX))
            + b"".join(field(9, kv) for kv in attributes))


def pb_traces(service: bytes | str, spans: list[bytes]) -> bytes:
    """ExportTraceServiceRequest with one resource and one scope."""
    service = service.encode() if isinstance(service, str) else service
    resource = field(1, key_value(b"service.name", any_string(service)))
    scope_spans = b"".join(field(2, span) for span in spans)
    return field(1, field(1, resource) + field(2, scope_spans))


def pb_logs(service: str, times: list[int]) -> bytes:
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]),
        scope_logs=[logs_pb2.ScopeLogs(log_records=[
            logs_pb2.LogRecord(time_unix_nano=t, body=common_pb2.AnyValue(string_value="hello")) for t in times])],
    )]).SerializeToString()


def pb_metrics(service: str) -> bytes:
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]),
        scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metrics_pb2.Metric(
            name="queue.depth", gauge=metrics_pb2.Gauge(data_points=[
                metrics_pb2.NumberDataPoint(time_unix_nano=time.time_ns(), as_double=1.0)]))])],
    )]).SerializeToString()


# ------------------------------------------------------------------ OTLP/JSON


def json_span(name: str = "op", start: int | None = None, attributes: list[dict] = ()) -> dict:
    start = time.time_ns() if start is None else start
    return {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": name, "kind": 2,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(min(start + 1000, U64_MAX)),
            "attributes": list(attributes)}


def json_traces(service: str, spans: list[dict]) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": spans}]}]}


def json_with_raw_value(service: str, raw_value: str) -> bytes:
    """A one-span export whose attribute "deep" has raw_value as its AnyValue text."""
    text = json.dumps(json_traces(service, [json_span(attributes=[{"key": "deep", "value": "RAW"}])]))
    return text.replace('"RAW"', raw_value).encode()


def json_deep_array(depth: int) -> str:
    return '{"arrayValue":{"values":[' * depth + '{"stringValue":"leaf"}' + ']}}' * depth


def json_deep_map(depth: int) -> str:
    return '{"kvlistValue":{"values":[{"key":"k","value":' * depth + '{"stringValue":"leaf"}' + '}]}}' * depth


# ---------------------------------------------------------------- gzip bomb


def gzip_bomb(inflated_mib: int) -> bytes:
    """A valid gzip stream of inflated_mib MiB of zeros (1 GiB -> about 1 MB), made in well under
    a second: after a full flush the compressor's state is the same, so one deflated MiB is
    repeated; CRC and size close the stream as gzip requires."""
    chunk = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    end = deflate.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(inflated_mib):
        crc = zlib.crc32(chunk, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + block * inflated_mib + end + struct.pack("<II", crc, (inflated_mib * MiB) & 0xFFFFFFFF)


# -------------------------------------------------------- answers and counters


def otlp_error(resp) -> dict:
    """An OTLP/HTTP error answer: a google.rpc.Status for a protobuf request, else JSON with the
    Status fields (code, message) beside Sightline's {"error": {"code", "message"}}."""
    out = {"status": resp.status_code, "content_type": resp.headers.get("content-type", "")}
    if out["content_type"].startswith("application/x-protobuf"):
        status = status_pb2.Status()
        status.ParseFromString(resp.content)
        out.update(grpc_code=status.code, code=None, message=status.message)
    else:
        try:
            body = resp.json()
        except ValueError:
            raise AssertionError(
                f"not an OTLP error answer: {resp.status_code} {out['content_type']} {resp.text[:500]!r}") from None
        assert body.get("message") == body["error"]["message"], body
        out.update(grpc_code=body.get("code"), code=body["error"]["code"], message=body["error"]["message"])
    return out


GRPC_CODE = {400: 3, 413: 8, 415: 3}  # INVALID_ARGUMENT, RESOURCE_EXHAUSTED


def assert_refused(resp, status: int, code: str, phrases: tuple[str, ...], protobuf: bool) -> str:
    """A precise refusal: the status, the error code, the body in the request's encoding (JSON for
    a 415, whose encoding is unknown), and a message saying each of phrases."""
    err = otlp_error(resp)
    assert err["status"] == status, f"expected {status}, got {err}"
    if protobuf and status != 415:
        assert err["content_type"].startswith("application/x-protobuf"), err
    else:
        assert err["content_type"].startswith("application/json") and err["code"] == code, err
    assert err["grpc_code"] == GRPC_CODE[status], err
    missing = [p for p in phrases if p not in err["message"]]
    assert not missing, f"the message does not say {missing}: {err['message']!r}"
    return err["message"]


INGEST_COUNTERS = ("sightline_ingest_requests_total", "sightline_ingest_records_total",
                   "sightline_ingest_bad_requests_total", "sightline_ingest_attributes_dropped_total",
                   "sightline_ingest_values_truncated_total", "sightline_ingest_values_too_deep_total")


def sample(name: str, **labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


def counted(before: dict, after: dict) -> dict[str, float]:
    """Every sightline_ingest_* counter sample that changed, by how much."""
    for family in INGEST_COUNTERS[:2] + INGEST_COUNTERS[3:]:
        assert any(name == family for name, _ in after), f"/metrics has no {family}"
    out = {}
    for key, value in after.items():
        name, labels = key
        if name in INGEST_COUNTERS and value != before.get(key, 0.0):
            out[sample(name, **dict(labels))] = value - before.get(key, 0.0)
    return out


def assert_counted(srv, before: dict, want: dict[str, float]) -> None:
    """The sightline_ingest_* counters grew by exactly want since before (nothing else changed)."""
    got = counted(before, srv.metrics())
    assert got == want, f"the counters grew by\n  {got}\nexpected\n  {want}"


def requests_(signal: str, outcome: str) -> str:
    return sample("sightline_ingest_requests_total", signal=signal, outcome=outcome)


def records(signal: str, outcome: str) -> str:
    return sample("sightline_ingest_records_total", signal=signal, outcome=outcome)


def bad_requests(code: str) -> str:
    return sample("sightline_ingest_bad_requests_total", code=code)


DROPPED = "sightline_ingest_attributes_dropped_total"
TRUNCATED = "sightline_ingest_values_truncated_total"


def refused(signal: str, code: str) -> dict[str, float]:
    """What one export refused before storage adds to the counters."""
    return {requests_(signal, "bad_request"): 1, bad_requests(code): 1}


def stored(signal: str, accepted: int = 1, rejected: int = 0, **extra: float) -> dict[str, float]:
    """What one export that reached storage adds to the counters."""
    out = {requests_(signal, "ok"): 1, records(signal, "accepted"): accepted, **extra}
    if rejected:
        out[records(signal, "rejected")] = rejected
    return out


def uniq(prefix: str) -> str:
    return f"{prefix}-{os.urandom(4).hex()}"


# ----------------------------------------------------------------- fixtures


class Memory:
    """VmHWM of the server process, with per-request peaks: reset() clears the peak (writing 5 to
    /proc/PID/clear_refs) after recording it, so max_kb() is the peak of the whole run."""

    def __init__(self, pid: int):
        self.pid = pid
        self.max_seen_kb = 0

    def _status_kb(self, field_name: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        raise AssertionError(f"/proc/{self.pid}/status has no {field_name}")

    def rss_kb(self) -> int:
        return self._status_kb("VmRSS")

    def peak_kb(self) -> int:
        peak = self._status_kb("VmHWM")
        self.max_seen_kb = max(self.max_seen_kb, peak)
        return peak

    def reset(self) -> int:
        """Clear the peak; returns the RSS it starts from."""
        self.peak_kb()
        with open(f"/proc/{self.pid}/clear_refs", "w") as clear:
            clear.write("5")
        return self.rss_kb()

    def max_kb(self) -> int:
        return max(self.max_seen_kb, self.peak_kb())


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the module. (sightline_factory is per test; this is the same SightlineServer
    on a module-scoped folder, so its stderr is attached to any failure all the same.)"""
    base = tmp_path_factory.mktemp("hostile")
    server = SightlineServer(base / "data", base / "logs", extra_args=["--max-body-bytes", str(MAX_BODY)],
                             name="hostile").start()
    server.memory = Memory(server.proc.pid)
    yield server
    if server.running():
        server.stop()


@pytest.fixture(scope="module")
def channel(srv):
    ch = grpc.insecure_channel(srv.otlp_grpc_endpoint, options=[
        ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    yield ch
    ch.close()


def grpc_export(channel, data: bytes, **kwargs) -> tuple[grpc.StatusCode, str, bytes | None]:
    """Send raw bytes as a trace export; (status code, details, response bytes or None)."""
    call = channel.unary_unary(TRACE_EXPORT, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        return grpc.StatusCode.OK, "", call(data, timeout=60, **kwargs)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None


def span_attributes(srv, service: str) -> dict:
    rows = srv.rows(f"SELECT attributes FROM spans WHERE service_name = '{service}'")
    assert len(rows) == 1, rows
    return json.loads(rows[0]["attributes"])


# ------------------------------------------------ 1. gzip bomb, 2. body size


@pytest.mark.parametrize("content_type", ["application/x-protobuf", "application/json"], ids=["protobuf", "json"])
def test_gzip_bomb_is_413_and_never_inflated(srv, content_type):
    bomb = gzip_bomb(1024)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 2 * MiB
    before = srv.metrics()
    rss_before = srv.memory.reset()
    resp = srv.post_otlp("/v1/traces", bomb, content_type=content_type, headers={"Content-Encoding": "gzip"})
    peak = srv.memory.peak_kb()

    assert_refused(resp, 413, "payload_too_large",
                   (f"inflates to more than {MAX_BODY} bytes after gzip", "max_body_bytes"),
                   protobuf=content_type == "application/x-protobuf")
    assert_counted(srv, before, refused("spans", "payload_too_large"))
    assert peak - rss_before < SIZE_REFUSAL_MARGIN_KB, (
        f"the bomb raised the peak RSS from {rss_before} kB to {peak} kB")


def test_grpc_gzip_bomb_is_resource_exhausted_and_never_inflated(srv, channel):
    before = srv.metrics()
    rss_before = srv.memory.reset()
    # grpcio compresses the message itself: 128 MiB of zeros, about 10x the limit, in ~130 kB.
    code, details, _ = grpc_export(channel, bytes(128 * MiB), compression=grpc.Compression.Gzip)
    grew = srv.memory.peak_kb() - rss_before
    observed = {"code": code, "names the limit": str(MAX_BODY) in details,
                "peak RSS growth under the margin": grew < SIZE_REFUSAL_MARGIN_KB,
                "counted": counted(before, srv.metrics())}
    assert observed == {"code": grpc.StatusCode.RESOURCE_EXHAUSTED, "names the limit": True,
                        "peak RSS growth under the margin": True,
                        "counted": refused("spans", "payload_too_large")}, (
        f"observed {observed}; details: {details!r}; peak +{grew} kB")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_body_over_max_body_bytes_is_413(srv, declared):
    big = pb_traces(uniq("too-big"), [pb_span(attributes=[key_value(b"big", any_string(b"x" * (MAX_BODY + MiB)))])])
    before = srv.metrics()
    rss_before = srv.memory.reset()
    if declared:
        resp = srv.post_otlp("/v1/traces", big, content_type="application/x-protobuf")
        size_phrase = f"request body is {len(big)} bytes"
    else:  # no Content-Length: the server must stop reading at the limit
        chunks = (big[i:i + MiB] for i in range(0, len(big), MiB))
        resp = srv.session.post(f"{srv.otlp_http_url}/v1/traces", data=chunks,
                                headers={"Content-Type": "application/x-protobuf"}, timeout=30)
        size_phrase = f"request body is {MAX_BODY + 1} bytes or more"
    grew = srv.memory.peak_kb() - rss_before

    assert_refused(resp, 413, "payload_too_large", (size_phrase, f"above the limit of {MAX_BODY} bytes"),
                   protobuf=True)
    assert_counted(srv, before, refused("spans", "payload_too_large"))
    assert grew < SIZE_REFUSAL_MARGIN_KB, f"refusing the body raised the peak RSS by {grew} kB"


def test_grpc_message_over_max_body_bytes_is_resource_exhausted(srv, channel):
    big = pb_traces(uniq("too-big"), [pb_span(attributes=[key_value(b"big", any_string(b"x" * (MAX_BODY + MiB)))])])
    before = srv.metrics()
    code, details, _ = grpc_export(channel, big)
    observed = {"code": code, "names the limit": str(MAX_BODY) in details, "counted": counted(before, srv.metrics())}
    # RESOURCE_EXHAUSTED is what Sightline itself answers over gRPC for payload_too_large
    # (server/otlp_grpc.rs), and the OTLP spec has clients not retry it without RetryInfo;
    # OUT_OF_RANGE is in the spec's always-retryable list, so the same batch comes back.
    assert observed == {"code": grpc.StatusCode.RESOURCE_EXHAUSTED, "names the limit": True,
                        "counted": refused("spans", "payload_too_large")}, f"observed {observed}; details: {details!r}"


# ------------------------------------ 3. 100,000 attributes, 4. a 10 MB value


def many_attributes(transport: str, service: str) -> tuple:
    n = 100_000
    if transport == "http-json":
        attrs = [{"key": f"k{i:06}", "value": {"stringValue": "v"}} for i in range(n)]
        return json.dumps(json_traces(service, [json_span(attributes=attrs)])).encode(), "application/json"
    attrs = [key_value(f"k{i:06}".encode(), any_string(b"v")) for i in range(n)]
    return pb_traces(service, [pb_span(attributes=attrs)]), "application/x-protobuf"


def send_ok(srv, channel, transport: str, body: bytes, content_type: str) -> None:
    """Send an export that must be accepted in full (200 / OK, no partial success)."""
    if transport == "grpc":
        code, details, answer = grpc_export(channel, body)
        assert code == grpc.StatusCode.OK, f"{code}: {details}"
        response = trace_service_pb2.ExportTraceServiceResponse()
        response.ParseFromString(answer)
        assert response.partial_success.rejected_spans == 0, response
        return
    resp = srv.post_otlp("/v1/traces", body, content_type=content_type)
    assert resp.status_code == 200, otlp_error(resp)
    if content_type == "application/json":
        assert "partialSuccess" not in resp.json(), resp.text
    else:
        response = trace_service_pb2.ExportTraceServiceResponse()
        response.ParseFromString(resp.content)
        assert response.partial_success.rejected_spans == 0, response


TRANSPORTS = ["http-protobuf", "http-json", "grpc"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_100k_attributes_are_kept_to_the_limit_and_the_rest_dropped_and_counted(srv, channel, transport):
    service = uniq(f"many-attrs-{transport}")
    body, content_type = many_attributes(transport, service)
    before = srv.metrics()
    send_ok(srv, channel, transport, body, content_type)
    assert_counted(srv, before, stored("spans", **{DROPPED: 100_000 - MAX_ATTRIBUTES}))
    kept = span_attributes(srv, service)
    assert sorted(kept) == [f"k{i:06}" for i in range(MAX_ATTRIBUTES)], f"{len(kept)} attributes kept"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_10mb_attribute_value_is_cut_with_a_marker_and_counted(srv, channel, transport):
    service = uniq(f"big-value-{transport}")
    value = "y" * 10_000_000
    if transport == "http-json":
        body = json.dumps(json_traces(service, [json_span(
            attributes=[{"key": "payload", "value": {"stringValue": value}}])])).encode()
        content_type = "application/json"
    else:
        body = pb_traces(service, [pb_span(attributes=[key_value(b"payload", any_string(value.encode()))])])
        content_type = "application/x-protobuf"
    before = srv.metrics()
    send_ok(srv, channel, transport, body, content_type)
    assert_counted(srv, before, stored("spans", **{TRUNCATED: 1}))
    kept = span_attributes(srv, service)["payload"]
    assert kept == "y" * MAX_VALUE_BYTES + f"…[truncated {10_000_000 - MAX_VALUE_BYTES} bytes]", kept[-60:]


# ------------------------------------------------------------- 5. deep values


def unwrap(value, depth: int, kind: type):
    """Walk depth levels of one-element arrays or {"k": ...} maps; return what is below."""
    for level in range(depth):
        if kind is list:
            assert isinstance(value, list) and len(value) == 1, f"level {level}: {value!r:.200}"
            value = value[0]
        else:
            assert isinstance(value, dict) and list(value) == ["k"], f"level {level}: {value!r:.200}"
            value = value["k"]
    return value


@pytest.mark.parametrize("case", [
    ("http-protobuf", "array", 40), ("http-protobuf", "map", 30), ("http-json", "array", 30),
    ("http-json", "map", 20), ("grpc", "array", 40),
], ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_values_nested_deeper_than_the_limit_are_replaced_by_a_marker(srv, channel, case):
    transport, shape, depth = case
    service = uniq(f"deep-{shape}")
    if transport == "http-json":
        raw = json_deep_array(depth) if shape == "array" else json_deep_map(depth)
        body, content_type = json_with_raw_value(service, raw), "application/json"
    else:
        deep = deep_array(depth) if shape == "array" else deep_map(depth)
        body = pb_traces(service, [pb_span(attributes=[key_value(b"deep", deep)])])
        content_type = "application/x-protobuf"
    before = srv.metrics()
    send_ok(srv, channel, transport, body, content_type)
    assert_counted(srv, before, stored("spans", **{sample("sightline_ingest_values_too_deep_total"): 1}))
    kept = span_attributes(srv, service)["deep"]
    assert unwrap(kept, MAX_DEPTH, list if shape == "array" else dict) == DEPTH_MARKER


# ------------------------- 5, 6, 8. malformed protobuf: too deep, bad UTF-8, cut short


def truncated_traces() -> bytes:
    whole = pb_traces("cut-short", [pb_span(attributes=[key_value(b"k", any_string(b"v" * 50))])])
    return whole[: len(whole) // 2]


MALFORMED_PROTOBUF = {
    "truncated": (truncated_traces, ("ExportTraceServiceRequest.resource_spans", "buffer underflow")),
    "deep-array-10000": (lambda: pb_traces("deep", [pb_span(attributes=[key_value(b"deep", deep_array(10_000))])]),
                         ("ArrayValue.values", "recursion limit reached")),
    "deep-map-10000": (lambda: pb_traces("deep", [pb_span(attributes=[key_value(b"deep", deep_map(10_000))])]),
                       ("KeyValueList.values", "recursion limit reached")),
    "utf8-span-name": (lambda: pb_traces("utf8", [pb_span(name=b"GET /caf\xe9 \xff\xfe")]),
                       ("Span.name", "invalid string value: data is not UTF-8 encoded")),
    "utf8-attribute-value": (lambda: pb_traces("utf8", [pb_span(attributes=[
                                 key_value(b"k", any_string(b"\xc3\x28"))])]),
                             ("AnyValue.value: KeyValue.value: Span.attributes",
                              "invalid string value: data is not UTF-8 encoded")),
    "utf8-attribute-key": (lambda: pb_traces("utf8", [pb_span(attributes=[key_value(b"k\xff", any_string(b"v"))])]),
                           ("KeyValue.key", "invalid string value: data is not UTF-8 encoded")),
    "utf8-service-name": (lambda: pb_traces(b"svc\x80", [pb_span()]),
                          ("Resource.attributes", "invalid string value: data is not UTF-8 encoded")),
}


@pytest.mark.parametrize("case", list(MALFORMED_PROTOBUF))
def test_malformed_protobuf_is_a_precise_400(srv, case):
    make, phrases = MALFORMED_PROTOBUF[case]
    before = srv.metrics()
    resp = srv.post_otlp("/v1/traces", make(), content_type="application/x-protobuf")
    message = assert_refused(resp, 400, "bad_request",
                             ("request body is not a valid protobuf ExportTraceServiceRequest", *phrases),
                             protobuf=True)
    # Ten thousand levels deep, the path to the problem is cut to its ends, not kilobytes long.
    assert len(message) < 600, f"{len(message)} bytes: {message[:300]!r}"
    assert_counted(srv, before, refused("spans", "bad_request"))


@pytest.mark.parametrize("signal,make,message", [
    ("logs", lambda: pb_logs("cut-short", [time.time_ns()]), "ExportLogsServiceRequest"),
    ("metrics", lambda: pb_metrics("cut-short"), "ExportMetricsServiceRequest"),
], ids=["logs", "metrics"])
def test_truncated_protobuf_names_the_message_of_each_signal(srv, signal, make, message):
    whole = make()
    before = srv.metrics()
    resp = srv.post_otlp(PATHS[signal], whole[: len(whole) // 2], content_type="application/x-protobuf")
    assert_refused(resp, 400, "bad_request", (f"request body is not a valid protobuf {message}", "buffer underflow"),
                   protobuf=True)
    assert_counted(srv, before, refused(signal, "bad_request"))


@pytest.mark.parametrize("case", list(MALFORMED_PROTOBUF))
def test_grpc_malformed_protobuf_is_invalid_argument(srv, channel, case):
    """The gRPC form of a 400: INVALID_ARGUMENT (not INTERNAL, which says the server broke),
    naming what is wrong, and counted like the same body over HTTP."""
    make, phrases = MALFORMED_PROTOBUF[case]
    before = srv.metrics()
    code, details, _ = grpc_export(channel, make())
    observed = {"code": code, "says": [p for p in phrases if p in details], "counted": counted(before, srv.metrics()),
                "short": len(details) < 600}
    assert observed == {"code": grpc.StatusCode.INVALID_ARGUMENT, "says": list(phrases),
                        "counted": refused("spans", "bad_request"), "short": True}, \
        f"observed {observed}; details: {details[:300]!r}"


# ------------------------------------------------- 5, 6. malformed OTLP/JSON


def json_bad_utf8(where: str) -> tuple[bytes, int]:
    """A JSON export with invalid UTF-8 in a span name or an attribute key; (body, its column)."""
    if where == "name":
        text = json.dumps(json_traces("utf8", [json_span(name="HOLE")])).encode()
        body = text.replace(b"HOLE", b"caf\xe9 \xff\xfe")
    else:
        text = json.dumps(json_traces("utf8", [json_span(attributes=[{"key": "HOLE", "value": {"stringValue": "v"}}])]))
        body = text.encode().replace(b"HOLE", b"k\xc3\x28")
    with pytest.raises(UnicodeDecodeError) as bad:
        body.decode("utf-8")
    return body, bad.value.start + 1  # one line: the column is the byte offset + 1


BAD_JSON = {
    "deep-array-10000": (lambda: (json_with_raw_value("deep", json_deep_array(10_000)), None),
                         ("recursion limit exceeded at line 1 column",)),
    "deep-map-10000": (lambda: (json_with_raw_value("deep", json_deep_map(10_000)), None),
                       ("recursion limit exceeded at line 1 column",)),
    "nested-brackets-100000": (lambda: (("[" * 100_000 + "]" * 100_000).encode(), None),
                               ("recursion limit exceeded at line 1 column 128",)),
    "utf8-span-name": (lambda: json_bad_utf8("name"), ("invalid unicode code point at line 1 column {column}",)),
    "utf8-attribute-key": (lambda: json_bad_utf8("key"), ("invalid unicode code point at line 1 column {column}",)),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_is_a_precise_400(srv, case):
    make, phrases = BAD_JSON[case]
    body, column = make()
    before = srv.metrics()
    resp = srv.post_otlp("/v1/traces", body, content_type="application/json")
    assert_refused(resp, 400, "bad_request",
                   ("request body is not valid OTLP/JSON", *(p.format(column=column) for p in phrases)), protobuf=False)
    assert_counted(srv, before, refused("spans", "bad_request"))


# ------------------------------------------------------ 7. wrong content type


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/grpc", "application/x-www-form-urlencoded"],
                         ids=["text-plain", "missing", "grpc", "form"])
def test_wrong_content_type_is_415(srv, content_type):
    body = pb_traces("ctype", [pb_span()])
    headers = {"Content-Type": content_type} if content_type else {}
    before = srv.metrics()
    resp = srv.session.post(f"{srv.otlp_http_url}/v1/traces", data=body, headers=headers, timeout=30)
    assert_refused(resp, 415, "unsupported_media_type",
                   (f"unsupported content type {json.dumps(content_type or '')}",
                    "expected application/x-protobuf or application/json"), protobuf=False)
    assert_counted(srv, before, refused("spans", "unsupported_media_type"))


def test_unknown_content_encoding_is_a_precise_400(srv):
    before = srv.metrics()
    resp = srv.post_otlp("/v1/traces", pb_traces("br", [pb_span()]), content_type="application/x-protobuf",
                         headers={"Content-Encoding": "br"})
    assert_refused(resp, 400, "bad_request", ('unsupported content encoding "br"', "expected gzip or identity"),
                   protobuf=True)
    assert_counted(srv, before, refused("spans", "bad_request"))


# ------------------------------------------------------------- 9. timestamps


def far_off_export(case: str, service: str) -> tuple[str, str, bytes, str, int, tuple[str, ...]]:
    """(transport, signal, body, content type, records, phrases) of an export whose every record is off."""
    now = time.time_ns()
    ahead = ("after the server's clock", "limits.max_timestamp_ahead")
    if case == "protobuf-ahead":
        return "http", "spans", pb_traces(service, [pb_span(start=now + 2 * DAY_NS)]), "application/x-protobuf", 1, \
            ("span rejected", *ahead)
    if case == "protobuf-age":
        return "http", "spans", pb_traces(service, [pb_span(start=now - 40 * DAY_NS)]), "application/x-protobuf", 1, \
            ("span rejected", "30 days before the server's clock", "limits.max_timestamp_age")
    if case == "json-u64-extremes":
        body = json.dumps(json_traces(service, [json_span(start=U64_MAX), json_span(start=1)])).encode()
        return "http", "spans", body, "application/json", 2, ("span rejected", *ahead)
    if case == "protobuf-logs-ahead":
        return "http", "logs", pb_logs(service, [now + 5 * DAY_NS, now + 6 * DAY_NS]), "application/x-protobuf", 2, \
            ("log record rejected", *ahead)
    if case == "grpc-ahead":
        return "grpc", "spans", pb_traces(service, [pb_span(start=now + 2 * DAY_NS)]), "", 1, ("span rejected", *ahead)
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["protobuf-ahead", "protobuf-age", "json-u64-extremes", "protobuf-logs-ahead",
                                  "grpc-ahead"])
def test_an_export_with_every_timestamp_far_off_is_a_precise_400(srv, channel, case):
    service = uniq("far-off")
    transport, signal, body, content_type, n, phrases = far_off_export(case, service)
    before = srv.metrics()
    phrases = (f"every record of the export was rejected ({n})", *phrases)
    if transport == "grpc":
        code, details, _ = grpc_export(channel, body)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code}: {details}"
        assert all(p in details for p in phrases), details
    else:
        assert_refused(srv.post_otlp(PATHS[signal], body, content_type=content_type), 400, "bad_request", phrases,
                       protobuf=content_type == "application/x-protobuf")
    table = "spans" if signal == "spans" else "logs"
    assert srv.rows(f"SELECT count(*) AS n FROM {table} WHERE service_name = '{service}'") == [{"n": 0}]
    # Answered 400 like any other bad request, so counted as one (not as a server failure), and
    # its records as rejected.
    assert_counted(srv, before, {**refused(signal, "bad_request"), records(signal, "rejected"): n})


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_export_with_some_timestamps_far_off_is_a_partial_success(srv, channel, transport):
    service = uniq(f"mixed-{transport}")
    now = time.time_ns()
    if transport == "http-json":
        body = json.dumps(json_traces(service, [json_span("good", now), json_span("ahead", U64_MAX),
                                                json_span("old", 1)])).encode()
        content_type = "application/json"
    else:
        body = pb_traces(service, [pb_span(b"good", now), pb_span(b"ahead", U64_MAX), pb_span(b"old", 1)])
        content_type = "application/x-protobuf"
    before = srv.metrics()
    if transport == "grpc":
        code, details, answer = grpc_export(channel, body)
        assert code == grpc.StatusCode.OK, f"{code}: {details}"
        response = trace_service_pb2.ExportTraceServiceResponse()
        response.ParseFromString(answer)
        rejected, message = str(response.partial_success.rejected_spans), response.partial_success.error_message
    else:
        resp = srv.post_otlp("/v1/traces", body, content_type=content_type)
        assert resp.status_code == 200, otlp_error(resp)
        if content_type == "application/json":
            partial = resp.json()["partialSuccess"]
            rejected, message = str(partial["rejectedSpans"]), partial["errorMessage"]
        else:
            response = trace_service_pb2.ExportTraceServiceResponse()
            response.ParseFromString(resp.content)
            rejected, message = str(response.partial_success.rejected_spans), response.partial_success.error_message
    assert rejected == "2", (rejected, message)
    assert "span rejected" in message and "limits.max_timestamp_ahead" in message, message
    assert_counted(srv, before, stored("spans", accepted=1, rejected=2))
    assert srv.rows(f"SELECT name FROM spans WHERE service_name = '{service}'") == [{"name": "good"}]


# ------------------------------------------------------------------ afterwards


def test_the_server_survived_all_of_it(srv, channel):
    assert srv.running(), f"the server exited with {srv.proc.returncode}"
    health = srv.get("/healthz")
    assert health.status_code == 200, health.text

    # A normal export still works over each transport.
    service = uniq("after")
    now = time.time_ns()
    request = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=[trace_pb2.Span(
            trace_id=os.urandom(16), span_id=os.urandom(8), name=name, kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=now, end_time_unix_nano=now + 1000) for name in ("proto", "grpc")])])])
    resp = srv.post_otlp("/v1/traces", request.SerializeToString(), content_type="application/x-protobuf")
    assert resp.status_code == 200, otlp_error(resp)
    resp = srv.post_otlp("/v1/traces", gzip.compress(json.dumps(json_traces(service, [json_span("json")])).encode()),
                         headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200 and resp.json() == {}, resp.text
    answer = trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=30)
    assert answer.partial_success.rejected_spans == 0
    names = [r["name"] for r in srv.rows(f"SELECT name FROM spans WHERE service_name = '{service}' ORDER BY name")]
    assert names == ["grpc", "grpc", "json", "proto", "proto"], names

    peak = srv.memory.max_kb()
    assert peak < PEAK_RSS_LIMIT_KB, f"peak RSS over the run was {peak} kB (limit {PEAK_RSS_LIMIT_KB} kB)"
    stderr = srv.stderr_tail(chars=10**7)
    assert not re.search(r"panicked|stack overflow|memory allocation .* failed", stderr), stderr[-4000:]
