"""JSON log lines on `POST /v1/logs` (`application/x-ndjson`, `application/jsonl`, gzip too).

Lines as structlog, python-json-logger (with the OpenTelemetry logging instrumentation's fields)
and loguru's `serialize=True` write them are stored as logs with their time, level, message,
logger, trace context, service and exception; `?service=` names the lines that name none; a bad
line is answered as a partial success naming its number while the good lines are stored; a
body of bad lines only is a 400; traces and metrics refuse JSON lines with 415."""

from __future__ import annotations

import gzip
import json
import os
import time

import pytest

from conftest import _cleanup
from test_monitor import start_server, write_config


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("json-lines")
    server = start_server(base, "json-lines", write_config(base / "sightline.toml", "# defaults\n"))
    yield server
    _cleanup(server)


def post(srv, body: bytes, content_type="application/x-ndjson", query="", headers=None):
    return srv.session.post(f"{srv.otlp_http_url}/v1/logs{query}", data=body,
                            headers={"Content-Type": content_type, **(headers or {})}, timeout=30)


def test_the_python_loggers_lines_become_logs_with_their_fields(srv):
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    # The three lines are stamped .25, .50 and .75 into one second, so their order by time is fixed.
    now = float(int(time.time())) + 0.75
    lines = [
        {"event": "order placed", "level": "info", "timestamp": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.250Z",
         "logger": "shop.orders", "trace_id": trace_id, "span_id": span_id, "order_id": 42, "service": "orders-jl"},
        {"asctime": time.strftime("%Y-%m-%d %H:%M:%S,500", time.gmtime(now)), "levelname": "ERROR", "name": "uvicorn.error",
         "message": "payment failed", "otelTraceID": trace_id, "otelSpanID": span_id, "otelServiceName": "orders-jl",
         "exc_info": "Traceback (most recent call last):\n  File \"pay.py\", line 9, in charge\nTimeoutError: provider timed out"},
        {"text": "x\n", "record": {"time": {"repr": "x", "timestamp": now}, "level": {"name": "WARNING", "no": 30},
                                    "message": "slow query", "name": "shop.db", "extra": {"table": "orders"}, "exception": None}},
    ]
    body = "\n".join(json.dumps(l) for l in lines).encode() + b"\n"
    resp = post(srv, gzip.compress(body), headers={"Content-Encoding": "gzip"}, query="?service=worker-jl")
    assert resp.status_code == 200 and not resp.json().get("partialSuccess"), resp.text
    rows = srv.wait_rows("SELECT service_name, severity, body, logger, trace_id, span_id, exception_type, "
                         "exception_message, attributes FROM logs WHERE service_name IN ('orders-jl', 'worker-jl') "
                         "ORDER BY time", lambda r: len(r) == 3)
    placed, failed, slow = rows
    assert (placed["service_name"], placed["severity"], placed["body"], placed["logger"]) == \
        ("orders-jl", "info", "order placed", "shop.orders")
    assert (placed["trace_id"], placed["span_id"]) == (trace_id, span_id)
    assert json.loads(placed["attributes"])["order_id"] == 42
    assert (failed["severity"], failed["exception_type"], failed["exception_message"]) == \
        ("error", "TimeoutError", "provider timed out")
    assert failed["trace_id"] == trace_id
    assert (slow["service_name"], slow["severity"], slow["body"], slow["logger"]) == \
        ("worker-jl", "warn", "slow query", "shop.db"), "?service= names a line without one"
    assert json.loads(slow["attributes"])["table"] == "orders"
    trace = srv.get(f"/api/v1/traces/{trace_id}").json()
    assert {l["body"] for l in trace["logs"]} == {"order placed", "payment failed"}, trace


def test_bad_lines_are_a_partial_success_naming_the_first(srv):
    body = b'{"msg": "fine one", "service": "partial-jl"}\nnot json at all\n[1, 2]\n{"msg": "fine two", "service": "partial-jl"}\n'
    resp = post(srv, body, content_type="application/jsonl")
    assert resp.status_code == 200, resp.text
    partial = resp.json()["partialSuccess"]
    assert int(partial["rejectedLogRecords"]) == 2, partial
    assert partial["errorMessage"].startswith("line 2 rejected: not JSON"), partial
    rows = srv.wait_rows("SELECT body FROM logs WHERE service_name = 'partial-jl' ORDER BY time, body", lambda r: len(r) == 2)
    assert [r["body"] for r in rows] == ["fine one", "fine two"]
    only_bad = post(srv, b"nope\n")
    assert only_bad.status_code == 400 and "line 1 rejected" in only_bad.text, only_bad.text


def test_traces_and_metrics_refuse_json_lines(srv):
    for path in ("/v1/traces", "/v1/metrics"):
        resp = srv.session.post(f"{srv.otlp_http_url}{path}", data=b'{"msg": "x"}\n',
                                headers={"Content-Type": "application/x-ndjson"}, timeout=30)
        assert resp.status_code == 415 and "/v1/logs" in resp.text, (path, resp.status_code, resp.text)
