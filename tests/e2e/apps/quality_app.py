"""The shop of the data-quality tests (test_quality.py), run under
`opentelemetry-instrument uvicorn quality_app:app` in two versions.

Version 1.4.0 runs with the default (old) HTTP semantic conventions and records its custom
histogram `checkout.latency` in milliseconds; version 2.0.0 runs with
OTEL_SEMCONV_STABILITY_OPT_IN=http (http.status_code becomes http.response.status_code,
http.method http.request.method, ...) and records the same latencies in seconds. The unit comes
from CHECKOUT_LATENCY_UNIT ("ms" or "s"), so the test decides it.

The latency recorded is not measured: it follows from the item asked for (`sku-<n>` records
latency_ms(n)), so the test knows every value, its sum and its mean in either unit.
"""

import logging
import os

from fastapi import FastAPI
from opentelemetry import metrics, trace

from telemetry_flush import lifespan

# SDK exporter warnings reach the process output (the test reads it on a failure).
_stream = logging.StreamHandler()
_stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(_stream)

UNIT = os.environ.get("CHECKOUT_LATENCY_UNIT", "ms")
SCALE = {"ms": 1.0, "s": 0.001}[UNIT]

meter = metrics.get_meter("shop")
checkout_latency = meter.create_histogram("checkout.latency", unit=UNIT, description="Time to check out a cart")

app = FastAPI(lifespan=lifespan)


def latency_ms(n: int) -> float:
    """The checkout latency of item sku-<n>, in milliseconds (test_quality.py computes the same)."""
    return 20.0 + 5.0 * (n % 7)


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.get("/checkout/{item}")
async def checkout(item: str):
    n = int(item.rsplit("-", 1)[-1]) if item.rsplit("-", 1)[-1].isdigit() else 0
    value = latency_ms(n) * SCALE
    checkout_latency.record(value)
    ctx = trace.get_current_span().get_span_context()
    return {"item": item, "latency": value, "unit": UNIT, "trace_id": format(ctx.trace_id, "032x")}
