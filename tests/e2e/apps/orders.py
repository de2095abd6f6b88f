"""Orders service for the Sightline end-to-end tests.

Run under `opentelemetry-instrument uvicorn orders:app`. Besides the automatic
server spans and logs it records two custom metrics with the OTel metrics API:
a counter `orders_created` and a histogram `order_amount`.
"""

import logging

from fastapi import FastAPI
from opentelemetry import metrics, trace

from telemetry_flush import lifespan

# Also print log lines (and SDK exporter warnings) to the process output.
_stream = logging.StreamHandler()
_stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(_stream)

log = logging.getLogger("orders")
log.setLevel(logging.INFO)

meter = metrics.get_meter("orders")
orders_created = meter.create_counter("orders_created", unit="{order}", description="Orders created")
order_amount = meter.create_histogram("order_amount", unit="USD", description="Order amount")

app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz():
    return {"ok": True}


# Declared before /orders/{cart_id} so that it wins the match.
@app.get("/orders/fail")
async def fail():
    try:
        raise RuntimeError("payment backend unavailable")
    except RuntimeError:
        log.exception("order failed for cart fail")
        raise


@app.get("/orders/{cart_id}")
async def create_order(cart_id: str):
    log.info("creating order for cart %s", cart_id)
    amount = 10.0 * (len(cart_id) + 1)
    orders_created.add(1, {"cart.kind": "standard"})
    order_amount.record(amount, {"cart.kind": "standard"})
    if cart_id.endswith("3"):
        log.warning("inventory low for cart %s", cart_id)
    ctx = trace.get_current_span().get_span_context()
    return {"cart_id": cart_id, "amount": amount, "trace_id": format(ctx.trace_id, "032x")}
