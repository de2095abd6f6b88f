"""Flush the OpenTelemetry SDK when the ASGI app shuts down.

uvicorn (0.29 and later) handles SIGTERM by shutting down gracefully and then
re-raising the signal, so the process ends by the signal and Python's atexit
hooks — where the SDK would flush its batch processors — never run. The
lifespan below shuts the providers down while the app is still stopping, so
every span, log and metric recorded is exported before the process exits.
"""

from contextlib import asynccontextmanager

from opentelemetry import _logs, metrics, trace


def flush_telemetry() -> None:
    for provider in (trace.get_tracer_provider(), _logs.get_logger_provider(), metrics.get_meter_provider()):
        shutdown = getattr(provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


@asynccontextmanager
async def lifespan(app):
    yield
    flush_telemetry()
