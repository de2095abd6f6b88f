"""Gateway service for the Sightline end-to-end tests.

Run under `opentelemetry-instrument uvicorn gateway:app`; the instrumentation
(FastAPI server spans, httpx client spans, logging handler) comes from the
environment, so this file only uses plain `logging`, `httpx` and the OTel API
to report the current trace id back to the test.
"""

import logging
import os

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from opentelemetry import trace

from telemetry_flush import lifespan

ORDERS_URL = os.environ["ORDERS_URL"]

# Also print log lines (and SDK exporter warnings) to the process output.
_stream = logging.StreamHandler()
_stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
logging.getLogger().addHandler(_stream)

log = logging.getLogger("gateway")
log.setLevel(logging.INFO)

app = FastAPI(lifespan=lifespan)


def _ids() -> dict:
    ctx = trace.get_current_span().get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.get("/checkout/{cart_id}")
async def checkout(cart_id: str):
    log.warning("checkout started for cart %s", cart_id)
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{ORDERS_URL}/orders/{cart_id}")
    body = {"cart_id": cart_id, "orders_status": resp.status_code, **_ids()}
    if resp.status_code >= 500:
        return JSONResponse(body, status_code=502)
    return body
