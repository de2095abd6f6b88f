"""Two FastAPI services instrumented with the standard OpenTelemetry Python SDK.

`gateway` exports over OTLP/HTTP protobuf with the old (default) HTTP semantic
conventions; `orders` exports over OTLP/gRPC with the stable HTTP conventions
(OTEL_SEMCONV_STABILITY_OPT_IN=http), so both attribute generations are fed to
Sightline. gateway calls orders with httpx, so the trace context propagates.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from conftest import APPS_DIR, VENV_BIN, free_port, wait_for

CARTS = ["c1", "c2", "c3"]  # c3 also makes orders log a warning
APP_START_TIMEOUT_S = 30.0
APP_STOP_TIMEOUT_S = 30.0


@dataclass
class App:
    name: str
    module: str
    env: dict
    log_dir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> None:
        cmd = [
            str(VENV_BIN / "opentelemetry-instrument"),
            str(VENV_BIN / "uvicorn"), f"{self.module}:app",
            "--app-dir", str(APPS_DIR),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--no-access-log",
        ]
        env = dict(os.environ)
        # Drop any OTEL_* settings of the caller; only ours count.
        env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
        env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(self.env)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_up(self) -> None:
        def up():
            if self.proc.poll() is not None:
                raise SystemExit  # handled below
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        try:
            wait_for(up, timeout=APP_START_TIMEOUT_S, what=f"{self.name} to answer /healthz")
        except (AssertionError, SystemExit):
            pytest.fail(f"{self.name} did not come up (exit code {self.proc.poll()})\n{self.output()}", pytrace=False)

    def stop(self) -> int:
        """SIGTERM: uvicorn shuts down; the app's lifespan flushes the SDK (see apps/telemetry_flush.py)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=APP_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"{self.name} did not exit after SIGTERM\n{self.output()}", pytrace=False)
        return self.proc.returncode

    def output(self) -> str:
        try:
            return f"--- {self.name} output ---\n" + self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def common_env(service: str) -> dict:
    return {
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
        "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        # Health probes of the test are not traffic.
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz",
        "PYTHONUNBUFFERED": "1",
    }


@dataclass
class Run:
    traces: dict  # cart id -> trace id (as reported by gateway)
    gateway: App
    orders: App


@pytest.fixture(scope="module")
def run(sightline, tmp_path_factory) -> Run:
    log_dir = tmp_path_factory.mktemp("apps")
    orders = App("orders", "orders", log_dir=log_dir, env={
        **common_env("orders"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sightline.otlp_grpc_endpoint}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2.3,deployment.environment=test",
        "OTEL_SEMCONV_STABILITY_OPT_IN": "http",
    })
    gateway = App("gateway", "gateway", log_dir=log_dir, env={
        **common_env("gateway"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": sightline.otlp_http_url,
        "OTEL_RESOURCE_ATTRIBUTES": "service.version=1.2.3,deployment.environment.name=test",
        "ORDERS_URL": orders.url,
    })
    apps = [orders, gateway]
    try:
        for app in apps:
            app.start()
        for app in apps:
            app.wait_up()

        traces = {}
        for cart in CARTS:
            resp = requests.get(f"{gateway.url}/checkout/{cart}", timeout=10)
            assert resp.status_code == 200, resp.text
            traces[cart] = resp.json()["trace_id"]
        resp = requests.get(f"{gateway.url}/checkout/fail", timeout=10)
        assert resp.status_code == 502, resp.text
        assert resp.json()["orders_status"] == 500
        traces["fail"] = resp.json()["trace_id"]
    finally:
        codes = {app.name: app.stop() for app in apps if app.proc is not None}
    for app in apps:
        # uvicorn re-raises the SIGTERM after its graceful shutdown, so it ends "killed by SIGTERM".
        assert codes[app.name] in (0, -signal.SIGTERM), f"{app.name} exited with {codes[app.name]}\n{app.output()}"
        assert "Application shutdown complete" in app.output(), app.output()
        out = app.output()
        # An exporter that could not deliver logs this; it means data was lost.
        assert "Failed to export" not in out, out

    # All four traces, each with a gateway and an orders server span, are acknowledged
    # once the apps have exited; they must be queryable within seconds.
    ids = ", ".join(f"'{t}'" for t in traces.values())
    sightline.wait_rows(
        f"SELECT trace_id, count(*) AS n FROM spans WHERE kind = 'server' AND trace_id IN ({ids}) "
        f"GROUP BY trace_id",
        lambda rows: len(rows) == len(traces) and all(r["n"] >= 2 for r in rows),
        timeout=10,
    )
    return Run(traces=traces, gateway=gateway, orders=orders)


def spans_of(sightline, trace_id: str) -> list[dict]:
    return sightline.rows(
        "SELECT span_id, parent_span_id, name, kind, status, status_message, service_name, service_version, "
        "environment, http_method, http_route, http_status_code, exception_type, exception_message, "
        f"scope_name, duration_ns FROM spans WHERE trace_id = '{trace_id}' ORDER BY start_time"
    )


def one(rows: list[dict], **match) -> dict:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected exactly one row with {match}, got {len(found)} in {rows}"
    return found[0]


# ---------------------------------------------------------------- traces


def test_trace_spans_both_services(sightline, run):
    spans = spans_of(sightline, run.traces["c1"])
    gw = one(spans, service_name="gateway", kind="server")
    od = one(spans, service_name="orders", kind="server")

    assert gw["parent_span_id"] is None, "the gateway server span is the root"
    gateway_ids = {s["span_id"] for s in spans if s["service_name"] == "gateway"}
    assert od["parent_span_id"] in gateway_ids, "orders' server span must be a child of a gateway span"
    client = one(spans, span_id=od["parent_span_id"])
    assert client["kind"] == "client"
    assert client["http_method"] == "GET"
    assert client["http_status_code"] == 200

    # The parent chain of the client span leads up to the gateway root.
    by_id = {s["span_id"]: s for s in spans}
    node, hops = client, 0
    while node["parent_span_id"] is not None:
        node = by_id[node["parent_span_id"]]
        hops += 1
        assert hops < 20
    assert node["span_id"] == gw["span_id"]

    for s in spans:
        assert len(s["span_id"]) == 16 and int(s["span_id"], 16) >= 0
        assert s["kind"] in {"internal", "server", "client", "producer", "consumer"}
        assert s["duration_ns"] > 0 or s["kind"] == "internal"


def test_promoted_http_columns(sightline, run):
    spans = spans_of(sightline, run.traces["c1"])
    gw = one(spans, service_name="gateway", kind="server")
    # gateway uses the old conventions: http.method, http.status_code.
    assert gw["name"] == "GET /checkout/{cart_id}"
    assert gw["http_method"] == "GET"
    assert gw["http_route"] == "/checkout/{cart_id}"
    assert gw["http_status_code"] == 200
    assert gw["status"] in ("unset", "ok")
    assert gw["scope_name"] == "opentelemetry.instrumentation.fastapi"
    message = sightline.rows(f"SELECT message FROM spans WHERE span_id = '{gw['span_id']}'")
    assert message == [{"message": "GET /checkout/{cart_id}"}], "a span's message is its name unless logfire.msg"
    # orders uses the stable ones: http.request.method, http.response.status_code.
    od = one(spans, service_name="orders", kind="server")
    assert od["name"] == "GET /orders/{cart_id}"
    assert od["http_method"] == "GET"
    assert od["http_route"] == "/orders/{cart_id}"
    assert od["http_status_code"] == 200

    for svc in ("gateway", "orders"):
        rows = sightline.rows(
            "SELECT DISTINCT service_version, environment FROM spans "
            f"WHERE service_name = '{svc}' AND trace_id = '{run.traces['c2']}'"
        )
        assert rows == [{"service_version": "1.2.3", "environment": "test"}], (svc, rows)


def test_error_span_with_exception(sightline, run):
    spans = spans_of(sightline, run.traces["fail"])
    od = one(spans, service_name="orders", kind="server")
    assert od["name"] == "GET /orders/fail"
    assert od["status"] == "error"
    assert od["http_status_code"] == 500
    assert od["exception_type"] == "RuntimeError"
    assert od["exception_message"] == "payment backend unavailable"

    events = sightline.rows(f"SELECT events FROM spans WHERE span_id = '{od['span_id']}'")[0]["events"]
    events = json.loads(events) if isinstance(events, str) else events
    assert any(e.get("name") == "exception" for e in events), events

    gw = one(spans, service_name="gateway", kind="server")
    assert gw["http_status_code"] == 502
    assert gw["status"] == "error"


def test_trace_api(sightline, run):
    trace_id = run.traces["c3"]
    resp = sightline.get(f"/api/v1/traces/{trace_id}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["trace_id"] == trace_id
    spans, logs = body["spans"], body["logs"]
    assert {s["service_name"] for s in spans} == {"gateway", "orders"}
    starts = [s["start_time"] for s in spans]
    assert starts == sorted(starts), "spans are sorted by start_time"
    for s in spans:
        assert s["trace_id"] == trace_id
        assert isinstance(s["attributes"], dict)
        assert isinstance(s["resource_attributes"], dict)
        assert isinstance(s["events"], list)
        assert isinstance(s["links"], list)
        for col in ("start_time", "end_time", "duration_ns", "span_id", "parent_span_id", "name", "kind", "status",
                    "service_name", "http_status_code", "scope_name", "sample_rate"):
            assert col in s, f"span lacks {col}: {sorted(s)}"
    gw = one(spans, service_name="gateway", kind="server")
    assert gw["resource_attributes"]["service.name"] == "gateway"
    assert gw["attributes"]["http.route"] == "/checkout/{cart_id}"

    bodies = [l["body"] for l in logs]
    assert "checkout started for cart c3" in bodies
    assert "creating order for cart c3" in bodies
    assert "inventory low for cart c3" in bodies
    times = [l["time"] for l in logs]
    assert times == sorted(times), "logs are sorted by time"
    for l in logs:
        assert l["trace_id"] == trace_id
        for col in ("time", "span_id", "severity", "severity_number", "body", "service_name", "attributes"):
            assert col in l, f"log lacks {col}: {sorted(l)}"


# ------------------------------------------------------------------ logs


def test_logs_correlated(sightline, run):
    trace_id = run.traces["c3"]
    spans = spans_of(sightline, trace_id)
    gw = one(spans, service_name="gateway", kind="server")
    od = one(spans, service_name="orders", kind="server")
    logs = sightline.rows(
        "SELECT time, trace_id, span_id, severity, severity_number, body, service_name, service_version, "
        f"environment FROM logs WHERE trace_id = '{trace_id}' ORDER BY time"
    )
    got = one(logs, body="checkout started for cart c3")
    assert got["service_name"] == "gateway"
    assert got["span_id"] == gw["span_id"]
    assert got["severity"] == "warn"
    assert got["severity_number"] == 13
    assert got["service_version"] == "1.2.3"
    assert got["environment"] == "test"

    got = one(logs, body="creating order for cart c3")
    assert got["service_name"] == "orders"
    assert got["span_id"] == od["span_id"]
    assert got["severity"] == "info"
    assert got["severity_number"] == 9
    assert got["environment"] == "test"

    got = one(logs, body="inventory low for cart c3")
    assert (got["service_name"], got["span_id"], got["severity"]) == ("orders", od["span_id"], "warn")

    # The failing order logged with logger.exception(): an error log with exception columns.
    fail = sightline.rows(
        "SELECT severity, exception_type, exception_message, service_name FROM logs "
        f"WHERE trace_id = '{run.traces['fail']}' AND body = 'order failed for cart fail'"
    )
    assert fail == [{"severity": "error", "exception_type": "RuntimeError",
                     "exception_message": "payment backend unavailable", "service_name": "orders"}]


def test_timestamps_are_rfc3339_utc_nanos(sightline, run):
    rows = sightline.rows(
        f"SELECT start_time, end_time FROM spans WHERE trace_id = '{run.traces['c1']}' LIMIT 1"
    )
    pattern = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")
    assert pattern.match(rows[0]["start_time"]), rows
    assert pattern.match(rows[0]["end_time"]), rows


# ------------------------------------------------------------ JSON functions


def test_json_functions_on_attributes(sightline, run):
    trace_id = run.traces["c1"]
    # orders: stable conventions (url.scheme, http.response.status_code).
    rows = sightline.rows(
        "SELECT json_get_str(attributes, 'url.scheme') AS scheme, "
        "json_get_int(attributes, 'http.response.status_code') AS code, "
        "json_contains(attributes, 'http.route') AS has_route, "
        "json_get_str(resource_attributes, 'service.name') AS svc, "
        "resource_attributes->>'service.version' AS version "
        f"FROM spans WHERE trace_id = '{trace_id}' AND service_name = 'orders' AND kind = 'server'"
    )
    assert rows == [{"scheme": "http", "code": 200, "has_route": True, "svc": "orders", "version": "1.2.3"}]

    # gateway: old conventions (http.scheme, http.status_code); filter with a JSON function.
    rows = sightline.rows(
        "SELECT attributes->>'http.scheme' AS scheme, json_get_int(attributes, 'http.status_code') AS code "
        f"FROM spans WHERE trace_id = '{trace_id}' AND json_get_str(attributes, 'http.route') = '/checkout/{{cart_id}}'"
    )
    assert rows == [{"scheme": "http", "code": 200}]

    rows = sightline.rows(
        "SELECT count(*) AS n FROM spans WHERE service_name = 'gateway' "
        "AND json_get_str(resource_attributes, 'deployment.environment.name') = 'test'"
    )
    assert rows[0]["n"] > 0


# --------------------------------------------------------------- metrics


def test_custom_sdk_metrics(sightline, run):
    rows = sightline.rows(
        "SELECT name, type, value, sum, count, service_name, monotonic, unit FROM metrics "
        "WHERE name = 'orders_created' ORDER BY time"
    )
    assert rows, "orders_created was exported"
    for r in rows:
        assert r["type"] == "sum"
        assert r["service_name"] == "orders"
        assert r["monotonic"] is True
    # Cumulative counter: the last point holds every order created (c1, c2, c3).
    assert max(r["value"] for r in rows) == len(CARTS)

    rows = sightline.rows(
        "SELECT name, type, sum, count, min, max, unit, service_name, environment FROM metrics "
        "WHERE name = 'order_amount' ORDER BY time"
    )
    assert rows, "order_amount was exported"
    assert all(r["type"] == "histogram" and r["service_name"] == "orders" for r in rows), rows
    assert all(r["environment"] == "test" for r in rows), rows
    last = rows[-1]
    assert last["count"] == len(CARTS)
    assert last["sum"] == pytest.approx(30.0 * len(CARTS))
    assert last["unit"] == "USD"
    assert max(r["count"] for r in rows) > 0


def test_instrumentation_metrics(sightline, run):
    rows = sightline.rows(
        "SELECT service_name, name, type, max(count) AS n FROM metrics "
        "WHERE name IN ('http.server.duration', 'http.server.request.duration', 'http.client.duration', "
        "'http.client.request.duration') GROUP BY service_name, name, type ORDER BY service_name, name"
    )
    by = {(r["service_name"], r["name"]): r for r in rows}
    # Old conventions on gateway, stable ones on orders.
    assert ("gateway", "http.server.duration") in by, rows
    assert ("orders", "http.server.request.duration") in by, rows
    for key in [("gateway", "http.server.duration"), ("orders", "http.server.request.duration")]:
        assert by[key]["type"] == "histogram"
        assert by[key]["n"] >= len(CARTS)


def test_latency_exemplars_keep_their_trace_and_the_chart_opens_it(sightline, run):
    # The SDK attaches the current span's trace to a histogram point recorded inside it (the
    # trace-based exemplar filter): the server-duration histograms carry the requests' traces.
    rows = sightline.wait_rows(
        "SELECT service_name, name, unit, exemplars FROM metrics WHERE exemplars IS NOT NULL "
        "AND name IN ('http.server.duration', 'http.server.request.duration')",
        lambda r: {x["service_name"] for x in r} >= {"gateway", "orders"}, timeout=10)
    sent = set(run.traces.values())
    for service in ("gateway", "orders"):
        kept = {e["trace_id"] for r in rows if r["service_name"] == service for e in json.loads(r["exemplars"])}
        assert kept & sent, f"{service}'s exemplars name none of the traces sent: {kept}"
        example = json.loads(next(r for r in rows if r["service_name"] == service)["exemplars"])[0]
        assert {"time_ns", "value", "trace_id", "span_id"} <= set(example), example
    # The service page's latency chart carries them (in ms, whatever unit the histogram used).
    page = requests.get(f"{sightline.api_url}/services/orders?range=1h", timeout=30).text
    match = re.search(r'id="chart-latency" data-chart="([^"]*)"', page)
    assert match, "the orders page has no latency chart"
    spec = json.loads(html.unescape(match.group(1)))
    points = spec["exemplars"]
    assert {p["trace_id"] for p in points} & sent, points
    durations = {r["trace_id"]: r["ms"] for r in sightline.rows(
        "SELECT trace_id, duration_ns / 1e6 AS ms FROM spans WHERE service_name = 'orders' AND kind = 'server'")}
    for p in points:
        if p["trace_id"] in durations:
            # The exemplar is the request's own duration, measured by the instrumentation.
            assert abs(p["y"] - durations[p["trace_id"]]) < max(5.0, durations[p["trace_id"]] * 0.5), (p, durations)


# ------------------------------------------------------------------- CLI


def test_cli_query_formats(sightline, run):
    n = sightline.rows("SELECT count(*) AS n FROM spans")[0]["n"]
    sql = "SELECT count(*) AS n FROM spans"

    out = sightline.cli("query", "--format", "json", sql)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"n": n}]

    out = sightline.cli("query", "--format", "csv", sql)
    assert out.returncode == 0, out.stderr
    parsed = list(csv.reader(io.StringIO(out.stdout)))
    assert parsed[0] == ["n"]
    assert parsed[1] == [str(n)]

    out = sightline.cli("query", sql)
    assert out.returncode == 0, out.stderr
    assert "n" in out.stdout and str(n) in out.stdout

    out = sightline.cli("query", "SELEC nonsense")
    assert out.returncode != 0, "a bad query must fail the command"
    assert out.stderr.strip(), "and say why"


def test_cli_trace_tree(sightline, run):
    trace_id = run.traces["c3"]
    out = sightline.cli("trace", trace_id)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    lines = text.splitlines()
    assert "gateway" in text and "orders" in text

    def line_of(needle: str) -> int:
        idx = [i for i, line in enumerate(lines) if needle in line]
        assert idx, f"{needle!r} not in output:\n{text}"
        return idx[0]

    root = line_of("GET /checkout/{cart_id}")
    child = line_of("GET /orders/{cart_id}")
    assert root < child
    col = lambda i, needle: lines[i].index(needle)  # noqa: E731
    assert col(child, "GET /orders/{cart_id}") > col(root, "GET /checkout/{cart_id}"), f"not indented:\n{text}"

    gw_log = line_of("checkout started for cart c3")
    od_log = line_of("inventory low for cart c3")
    assert root < gw_log, f"gateway's log belongs under its span:\n{text}"
    assert child < od_log, f"orders' log belongs under its span:\n{text}"


def test_cli_logs_filter(sightline, run):
    out = sightline.cli("logs", "--service", "orders", "--severity", "warn")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "inventory low for cart c3" in text
    assert "creating order for cart" not in text, "info lines are filtered out"
    assert "checkout started" not in text, "gateway lines are filtered out"
