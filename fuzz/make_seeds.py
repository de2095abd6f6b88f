#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/: small but complete OTLP exports
(every attribute type, nested values, events, links, every metric type) as protobuf and
OTLP/JSON, and the records of a real write-ahead log file when one is given.

    .venv/bin/python fuzz/make_seeds.py [path/to/a/server/data/wal/00000000000000000001.wal]

Each OTLP seed starts with the byte that picks its signal (0 traces, 1 logs, 2 metrics), as the
fuzz targets read it."""

import json
import struct
import sys
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

SEEDS = Path(__file__).resolve().parent / "seeds"
T0 = 1_799_999_000_000_000_000
TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN = bytes.fromhex("eee19b7ec3c1b174")
PARENT = bytes.fromhex("eee19b7ec3c1b173")


def attributes() -> list[KeyValue]:
    nested = AnyValue(kvlist_value=KeyValueList(values=[
        KeyValue(key="inner", value=AnyValue(array_value=ArrayValue(values=[
            AnyValue(int_value=1), AnyValue(string_value="two"), AnyValue(bool_value=True)])))]))
    return [
        KeyValue(key="http.request.method", value=AnyValue(string_value="GET")),
        KeyValue(key="http.route", value=AnyValue(string_value="/api/orders/{order_id}")),
        KeyValue(key="http.response.status_code", value=AnyValue(int_value=503)),
        KeyValue(key="db.system", value=AnyValue(string_value="postgresql")),
        KeyValue(key="ratio", value=AnyValue(double_value=0.25)),
        KeyValue(key="blob", value=AnyValue(bytes_value=b"\x00\xff")),
        KeyValue(key="nested", value=nested),
    ]


def resource(service: str) -> dict:
    return {"attributes": [
        KeyValue(key="service.name", value=AnyValue(string_value=service)),
        KeyValue(key="service.version", value=AnyValue(string_value="1.4.2")),
        KeyValue(key="deployment.environment.name", value=AnyValue(string_value="prod")),
    ]}


def traces() -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(resource("orders")["attributes"])
    ss = rs.scope_spans.add()
    ss.scope.name = "opentelemetry.instrumentation.fastapi"
    span = ss.spans.add(trace_id=TRACE, span_id=SPAN, parent_span_id=PARENT, name="GET /api/orders/{order_id}",
                        kind=2, start_time_unix_nano=T0, end_time_unix_nano=T0 + 12_000_000)
    span.attributes.extend(attributes())
    span.status.code = 2
    span.status.message = "upstream timeout"
    event = span.events.add(time_unix_nano=T0 + 5_000_000, name="exception")
    event.attributes.extend([
        KeyValue(key="exception.type", value=AnyValue(string_value="TimeoutError")),
        KeyValue(key="exception.message", value=AnyValue(string_value="timed out")),
        KeyValue(key="exception.stacktrace", value=AnyValue(string_value="Traceback (most recent call last):\n  ...")),
    ])
    link = span.links.add(trace_id=TRACE, span_id=PARENT)
    link.attributes.extend([KeyValue(key="messaging.system", value=AnyValue(string_value="celery"))])
    ss.spans.add(trace_id=TRACE, span_id=PARENT, name="SELECT orders", kind=3,
                 start_time_unix_nano=T0 + 1_000_000, end_time_unix_nano=T0 + 2_000_000)
    return req


def logs() -> ExportLogsServiceRequest:
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    rl.resource.attributes.extend(resource("payments")["attributes"])
    sl = rl.scope_logs.add()
    sl.scope.name = "payments.charges"
    record = sl.log_records.add(time_unix_nano=T0, observed_time_unix_nano=T0 + 1, severity_number=17,
                                severity_text="ERROR", trace_id=TRACE, span_id=SPAN)
    record.body.string_value = "charge failed: provider timeout"
    record.attributes.extend(attributes())
    structured = sl.log_records.add(observed_time_unix_nano=T0, severity_number=9)
    structured.body.kvlist_value.values.extend(attributes())
    return req


def metrics() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(resource("api-gateway")["attributes"])
    sm = rm.scope_metrics.add()
    gauge = sm.metrics.add(name="process.memory.usage", unit="By")
    gauge.gauge.data_points.add(time_unix_nano=T0, as_int=123456789)
    total = sm.metrics.add(name="orders.created", unit="1")
    total.sum.is_monotonic = True
    total.sum.aggregation_temporality = 2
    total.sum.data_points.add(start_time_unix_nano=T0 - 10**9, time_unix_nano=T0, as_double=42.0)
    hist = sm.metrics.add(name="http.server.request.duration", unit="s")
    hist.histogram.aggregation_temporality = 2
    point = hist.histogram.data_points.add(time_unix_nano=T0, count=3, sum=0.3, min=0.05, max=0.2,
                                           explicit_bounds=[0.1, 0.5], bucket_counts=[1, 2, 0])
    point.attributes.extend(attributes()[:2])
    expo = sm.metrics.add(name="queue.wait", unit="s")
    expo.exponential_histogram.aggregation_temporality = 1
    ep = expo.exponential_histogram.data_points.add(time_unix_nano=T0, count=2, sum=1.5, scale=2, zero_count=0)
    ep.positive.offset = 1
    ep.positive.bucket_counts.extend([1, 1])
    summary = sm.metrics.add(name="gc.pause", unit="s")
    sp = summary.summary.data_points.add(time_unix_nano=T0, count=4, sum=0.4)
    q = sp.quantile_values.add(quantile=0.99, value=0.2)
    return req


def otlp_json(message) -> bytes:
    """OTLP/JSON: camelCase fields, ids as hex (not protobuf JSON's base64)."""
    def fix(value, key=""):
        if isinstance(value, dict):
            return {k: fix(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v, key) for v in value]
        if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
            import base64
            return base64.b64decode(value).hex()
        return value
    return json.dumps(fix(MessageToDict(message))).encode()


def main() -> None:
    for target in ("otlp_protobuf", "otlp_json", "wal_reader"):
        (SEEDS / target).mkdir(parents=True, exist_ok=True)
    for selector, name, message in ((0, "traces", traces()), (1, "logs", logs()), (2, "metrics", metrics())):
        (SEEDS / "otlp_protobuf" / name).write_bytes(bytes([selector]) + message.SerializeToString())
        (SEEDS / "otlp_json" / name).write_bytes(bytes([selector]) + otlp_json(message))
    if len(sys.argv) > 1:
        data = Path(sys.argv[1]).read_bytes()
        (SEEDS / "wal_reader" / "file").write_bytes(data[:64 * 1024])
        pos, n = 8, 0
        while pos + 8 <= len(data) and n < 3:
            length, _crc = struct.unpack_from("<II", data, pos)
            payload = data[pos + 8:pos + 8 + length]
            (SEEDS / "wal_reader" / f"record-{n}").write_bytes(b"\x00" + payload)
            pos += 8 + length
            n += 1
    for path in sorted(SEEDS.rglob("*")):
        if path.is_file():
            print(f"{path.relative_to(SEEDS)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
