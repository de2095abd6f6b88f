"""A FastAPI app that logs through structlog's JSON renderer to standard output, with the trace
and span ids of the OpenTelemetry SDK's current span in every line (test_ship.py pipes its output
through `sightline ship -`). Run under `opentelemetry-instrument uvicorn structlog_app:app`."""

import sys

import structlog
from fastapi import FastAPI
from opentelemetry import trace

from telemetry_flush import lifespan


def add_trace_context(_logger, _method, event: dict) -> dict:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


structlog.configure(
    processors=[
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
        structlog.processors.JSONRenderer(),
    ],
    logger_factory=structlog.PrintLoggerFactory(sys.stdout),
)
log = structlog.get_logger("shop.checkout")

app = FastAPI(lifespan=lifespan)


@app.get("/healthz")
async def healthz():
    return {"ok": True}


@app.get("/checkout/{cart_id}")
async def checkout(cart_id: str):
    log.info("checkout started", cart_id=cart_id)
    log.warning("inventory low", cart_id=cart_id, remaining=2)
    return {"cart": cart_id}
