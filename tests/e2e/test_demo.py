"""`sightline demo` fills a server with a living shop: four services in shared traces, a queue
with linked producer and consumer spans, logs with trace ids, runtime and business metrics."""

import json
import subprocess

from conftest import sightline_bin


def test_demo_fills_a_server_with_a_connected_shop(sightline):
    out = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", sightline.otlp_http_url, "--duration", "3s", "--rate", "30"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "demo stopped: sent" in out.stderr, out.stderr

    services = {r["service_name"] for r in sightline.rows(
        "SELECT DISTINCT service_name FROM spans WHERE environment = 'demo'")}
    assert {"api-gateway", "orders", "payments", "email-worker"} <= services

    # A checkout: the gateway's client span is the parent of the orders server span.
    rows = sightline.rows(
        "SELECT c.service_name AS parent_service, c.kind AS parent_kind FROM spans s "
        "JOIN spans c ON s.parent_span_id = c.span_id AND s.trace_id = c.trace_id "
        "WHERE s.service_name = 'orders' AND s.kind = 'server' LIMIT 5")
    assert rows and all(r == {"parent_service": "api-gateway", "parent_kind": "client"} for r in rows), rows

    # The worker's consumer span links back to the producer span that enqueued it.
    consumer = sightline.rows(
        "SELECT trace_id, parent_span_id, links FROM spans WHERE kind = 'consumer' LIMIT 1")[0]
    link = json.loads(consumer["links"])[0]
    assert link["span_id"] == consumer["parent_span_id"]
    producer = sightline.rows(
        f"SELECT kind, service_name FROM spans WHERE span_id = '{link['span_id']}'")
    assert producer == [{"kind": "producer", "service_name": "orders"}]

    # Logs carry trace ids that lead to stored traces.
    log = sightline.rows("SELECT trace_id FROM logs WHERE service_name = 'email-worker' LIMIT 1")[0]
    trace = sightline.get(f"/api/v1/traces/{log['trace_id']}").json()
    assert any(s["kind"] == "consumer" for s in trace["spans"]) and trace["logs"]

    metrics = {r["name"] for r in sightline.rows("SELECT DISTINCT name FROM metrics")}
    assert {"process.cpu.utilization", "process.memory.usage", "celery.queue.depth",
            "shop.orders.created", "http.server.request.duration"} <= metrics

    summary = sightline.get("/api/v1/services", params={"since": "1h"}).json()
    gateway = next(s for s in summary["services"] if s["service_name"] == "api-gateway")
    assert gateway["requests"] >= 30 and gateway["routes"]


def test_demo_says_where_it_cannot_send(tmp_path):
    out = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", "http://127.0.0.1:9", "--duration", "2s"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "cannot reach http://127.0.0.1:9" in out.stderr, out.stderr
    out = subprocess.run([sightline_bin(), "demo", "--duration", "soon"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "--duration" in out.stderr, out.stderr
