"""A small batch job instrumented with Pydantic Logfire, exporting to Sightline.

logfire (5.x) adds an OTLP/HTTP exporter for traces, metrics and logs when the
standard env var OTEL_EXPORTER_OTLP_ENDPOINT (or the per-signal
OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT) is set; with
send_to_logfire=False nothing goes to Logfire's own service.

Prints one JSON line: the trace and span id of the `load batch` span.
"""

import json

import logfire

logfire.configure(
    send_to_logfire=False,
    service_name="pipeline",
    service_version="0.9.0",
    environment="test",
    console=False,
)

with logfire.span("load batch {batch_id}", batch_id=7) as span:
    logfire.info("loaded {n} rows", n=42)
    logfire.error("bad row {row}", row=3)
    ctx = span.get_span_context()

logfire.force_flush()
logfire.shutdown()
print(json.dumps({"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}))
