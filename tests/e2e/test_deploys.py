"""Deploys end to end: a version seen for the first time in spans is recorded as an observed
deploy at the minute it appeared (a service's first version is not), `sightline deploy` records
a told one, both are listed by `GET /api/v1/deploys` and the `deploys` table, and the service
page's time charts draw them as markers (in headless Chromium)."""

from __future__ import annotations

import subprocess
import time

from conftest import _cleanup, sightline_bin, wait_for
from test_monitor import MINUTE_NS, api_json, batch, minute_start, parse_time_ns, start_server, write_config


def send_versioned(srv, service: str, version: str, spans: list[dict]) -> None:
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}},
                                    {"key": "service.version", "value": {"stringValue": version}}]},
        "scopeSpans": [{"scope": {"name": "e2e.deploys"}, "spans": spans}],
    }]}
    resp = srv.post_otlp("/v1/traces", body)
    assert resp.status_code == 200 and not resp.json().get("partialSuccess"), resp.text


def test_observed_and_told_deploys_are_listed_queried_and_drawn(tmp_path, page):
    config = write_config(tmp_path / "sightline.toml", '[monitor]\nevaluation_interval = "1s"\n')
    srv = start_server(tmp_path, "deploys", config)
    try:
        now = time.time_ns()
        old_at = minute_start(now) - 30 * MINUTE_NS
        new_at = minute_start(now) - 10 * MINUTE_NS + 5_000_000_000
        send_versioned(srv, "checkout", "2.0.0", batch(old_at, 50, "/pay"))
        send_versioned(srv, "checkout", "2.1.0", batch(new_at, 50, "/pay"))

        observed = wait_for(lambda: api_json(srv, "/api/v1/deploys", service="checkout")["deploys"], timeout=15,
                            what="the observed deploy")
        assert [(d["version"], d["source"]) for d in observed] == [("2.1.0", "observed")], observed
        assert parse_time_ns(observed[0]["time"]) == minute_start(new_at), "the minute it first appeared"

        told_at = time.time_ns()  # now: in the bucket still filling, drawn at the charts' right edge
        told = subprocess.run(
            [sightline_bin(), "deploy", "--service", "checkout", "--version", "2.2.0", "--commit", "9f3e2a1",
             "--description", "canary", "--time", str(told_at), "--url", srv.api_url],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert told.returncode == 0, told.stderr
        assert "deploy of checkout 2.2.0 recorded" in told.stdout, told.stdout
        listed = api_json(srv, "/api/v1/deploys", service="checkout", since="1h")["deploys"]
        assert [(d["version"], d["source"], d["commit"]) for d in listed] == [
            ("2.1.0", "observed", None), ("2.2.0", "api", "9f3e2a1")], listed
        rows = srv.rows("SELECT service_name, version, source, description FROM deploys ORDER BY time")
        assert [(r["version"], r["source"]) for r in rows] == [("2.1.0", "observed"), ("2.2.0", "api")], rows
        assert rows[1]["description"] == "canary"

        refused = subprocess.run(
            [sightline_bin(), "deploy", "--service", "checkout", "--version", "2.3.0", "--time", "yesterday",
             "--url", srv.api_url], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert refused.returncode == 1 and "RFC 3339" in refused.stderr, refused.stderr

        # The service page draws both deploys on its time charts.
        page.goto(f"{srv.api_url}/services/checkout?range=1h")
        chart = page.locator("#chart-rate")
        wait_for(lambda: chart.get_attribute("data-markers") == "2" or chart.get_attribute("data-markers"),
                 timeout=10, what="deploy markers on the rate chart")
        assert chart.get_attribute("data-markers") == "2", chart.get_attribute("data-markers")
        # Another service's chart draws none of them.
        send_versioned(srv, "search", "1.0.0", batch(minute_start(now) - 5 * MINUTE_NS, 20, "/find"))
        page.goto(f"{srv.api_url}/services/search?range=1h")
        other = page.locator("#chart-rate")
        other.wait_for()
        page.wait_for_load_state("networkidle")
        assert other.get_attribute("data-markers") in (None, "0"), other.get_attribute("data-markers")
    finally:
        _cleanup(srv)
