"""A small program for `sightline record`: checkouts with their charges and logs, and, with
`bad`, the telemetry mistakes a contract is for. Run under opentelemetry-instrument, which points
the SDK at the recording server through the OTEL_EXPORTER_OTLP_* variables.

usage: record_app.py good|bad [EXIT_STATUS]"""

import logging
import sys

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

ORPHAN_TRACE = "ab" * 16
ORPHAN_PARENT = "cd" * 8

tracer = trace.get_tracer("record-app")
log = logging.getLogger("record-app")
log.setLevel(logging.INFO)
mode = sys.argv[1]

for i in range(3):
    with tracer.start_as_current_span("checkout") as span:
        if not (mode == "bad" and i == 2):
            span.set_attribute("order.id", f"o-{i}")
        with tracer.start_as_current_span("charge") as charge:
            charge.set_attribute("payment.provider", "stripe")
        log.info("order placed %d", i)

if mode == "bad":
    # A span whose parent (from a caller that was not recorded) never arrives.
    parent = SpanContext(trace_id=int(ORPHAN_TRACE, 16), span_id=int(ORPHAN_PARENT, 16), is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with tracer.start_as_current_span("reconcile", context=set_span_in_context(NonRecordingSpan(parent))) as span:
        span.set_attribute("user.email", "someone@example.com")
    # An id as an attribute: 30 distinct values.
    for i in range(30):
        with tracer.start_as_current_span("lookup") as span:
            span.set_attribute("request.id", f"req-{i:04d}")
    # Logs outside any span.
    for i in range(30):
        log.info("background tick %d", i)

print(f"record-app: {mode} run done", flush=True)
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
