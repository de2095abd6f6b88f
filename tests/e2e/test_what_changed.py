"""Explain, compare and log patterns end to end on hand-made data with a known answer: OTLP/JSON
spans and logs sent to a real server, the questions asked through the API and the CLI.

- explain: a cause that is a span attribute (tenant.id), not a promoted column, comes first; an
  id unique to each request is never ranked; failures spread at random over every value give no
  dimension and a summary that says the requests look alike;
- compare: a candidate whose errors rose is worse (exit 1, the route named), a change below the
  floors is the same (exit 0), too few requests or an unknown version cannot be judged (exit 2),
  a new exception type is listed with a trace that exists, and an unreachable server is exit 2;
- log patterns: a thousand timeouts that differ in their numbers and ids are one pattern, a
  pattern only in the window is new, a steady one is not."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time

import pytest

from conftest import SightlineServer, _cleanup, sightline_bin
from test_monitor import api_json, start_server, write_config

MINUTE_NS = 60_000_000_000


def text_attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def request(start_ns: int, route: str, failed: bool, ms: float = 20.0, attrs: dict | None = None,
            exception: str | None = None) -> dict:
    attributes = [text_attr("http.route", route), text_attr("http.request.method", "GET"),
                  {"key": "http.response.status_code", "value": {"intValue": "500" if failed else "200"}}]
    attributes += [text_attr(k, v) for k, v in (attrs or {}).items()]
    span = {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": f"GET {route}", "kind": 2,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + int(ms * 1e6)),
            "attributes": attributes}
    if failed:
        span["status"] = {"code": 2, "message": "boom"}
    if exception:
        span["events"] = [{"name": "exception", "timeUnixNano": str(start_ns + int(ms * 1e6)),
                           "attributes": [text_attr("exception.type", exception), text_attr("exception.message", "x")]}]
    return span


def send(srv: SightlineServer, service: str, version: str, spans: list[dict]) -> None:
    for i in range(0, len(spans), 500):
        body = {"resourceSpans": [{"resource": {"attributes": [text_attr("service.name", service),
                                                               text_attr("service.version", version)]},
                                   "scopeSpans": [{"scope": {"name": "e2e.changes"}, "spans": spans[i:i + 500]}]}]}
        resp = srv.post_otlp("/v1/traces", body)
        assert resp.status_code == 200 and not resp.json().get("partialSuccess"), resp.text


def spread(n: int, minutes: int = 20) -> list[int]:
    """n start times over the last `minutes` minutes (ending a minute ago)."""
    now = time.time_ns() - MINUTE_NS
    return [now - minutes * MINUTE_NS + i * (minutes * MINUTE_NS // n) for i in range(n)]


@pytest.fixture
def serve(tmp_path):
    """Starts servers with the default config; each is stopped (and must exit 0) afterwards."""
    started: list[SightlineServer] = []

    def make(name: str) -> SightlineServer:
        started.append(start_server(tmp_path, name, write_config(tmp_path / "sightline.toml", "# defaults\n")))
        return started[-1]
    yield make
    for srv in started:
        _cleanup(srv)


def cli(srv: SightlineServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sightline_bin(), *args, "--url", srv.api_url], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_explain_ranks_a_span_attribute_first_and_never_an_id(serve):
    srv = serve("explain-attr")
    dice = random.Random(7)
    tenants = ["acme", "globex", "initech", "umbrella", "hooli"]
    spans = []
    for i, t in enumerate(spread(3000)):
        tenant = tenants[i % len(tenants)]
        failed = tenant == "acme" and dice.random() < 0.4 or dice.random() < 0.01
        spans.append(request(t, "/api/items", failed, attrs={"tenant.id": tenant, "order.id": f"ord-{i:06d}x"}))
    send(srv, "shop", "1.0.0", spans)
    answer = api_json(srv, "/api/v1/explain", service="shop", since="30m")
    assert answer["dimensions"], answer["summary"]
    top = answer["dimensions"][0]
    assert (top["key"], top["value"]) == ("tenant.id", "acme"), answer["dimensions"][:3]
    assert top["selection_share"] > 0.8 and top["baseline_share"] < 0.2, top
    assert all(d["key"] != "order.id" or d["grouped"] for d in answer["dimensions"]), answer["dimensions"]
    out = cli(srv, "explain", "--service", "shop", "--since", "30m")
    assert out.returncode == 0 and "tenant.id" in out.stdout and "acme" in out.stdout, out.stdout + out.stderr
    bad = srv.get("/api/v1/explain", params={"service": "shop", "what": "sideways"})
    assert bad.status_code == 400 and "errors or latency" in bad.json()["error"]["message"], bad.text


def test_explain_says_so_when_nothing_sets_the_failures_apart(serve):
    srv = serve("explain-none")
    dice = random.Random(11)
    spans = [request(t, dice.choice(["/a", "/b", "/c"]), dice.random() < 0.05,
                     attrs={"tenant.id": dice.choice(["acme", "globex", "initech"]), "region": dice.choice(["eu", "us"])})
             for t in spread(3000)]
    send(srv, "calm", "1.0.0", spans)
    answer = api_json(srv, "/api/v1/explain", service="calm", since="30m")
    assert answer["selection"]["requests"] > 100, answer["selection"]
    assert answer["dimensions"] == [], f"noise was ranked: {answer['dimensions'][:3]}"
    assert "look alike" in answer["summary"], answer["summary"]


def test_compare_gates_on_significant_and_material_regressions(serve):
    srv = serve("compare")
    times = spread(4000)
    dice = random.Random(3)
    base = [request(t, "/api/pay", dice.random() < 0.01, ms=20 + dice.random() * 5) for t in times[0::2]]
    cand = [request(t, "/api/pay", dice.random() < 0.12, ms=20 + dice.random() * 5,
                    exception="httpx.ConnectTimeout" if i % 3 == 0 else None) for i, t in enumerate(times[1::2])]
    send(srv, "pay", "1.0.0", base)
    send(srv, "pay", "1.1.0", cand)
    worse = cli(srv, "compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "1.1.0", "--since", "30m")
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "WORSE" in worse.stdout and "/api/pay" in worse.stdout and "error rate" in worse.stdout, worse.stdout
    as_json = cli(srv, "compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "1.1.0",
                  "--since", "30m", "--format", "json")
    assert as_json.returncode == 1, as_json.stderr
    answer = json.loads(as_json.stdout)
    route = answer["routes"][0]
    assert answer["verdict"] == "worse" and route["verdict"] == "worse", answer
    assert route["baseline"]["requests"] == 2000 and route["candidate"]["requests"] == 2000, route
    assert {"requests", "error_rate", "p50_ms", "p95_ms", "p99_ms"} <= set(route["candidate"]), route
    new = [e for e in answer["new_errors"] if e["error"] == "httpx.ConnectTimeout"]
    assert new and new[0]["count"] > 10, answer["new_errors"]
    trace = srv.rows(f"SELECT count(*) AS n FROM spans WHERE trace_id = '{new[0]['example_trace_id']}'")
    assert trace[0]["n"] == 1, trace
    # The same error rate rise, but below a floor of 20 points: not a regression.
    same = cli(srv, "compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "1.1.0",
               "--since", "30m", "--error-floor", "20", "--format", "json")
    judged = json.loads(same.stdout)
    assert judged["routes"][0]["verdict"] == "same", judged["routes"]
    assert same.returncode == 1 and judged["verdict"] == "worse" and "new error" in judged["summary"], \
        "the new exception type still makes it worse"
    few = cli(srv, "compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "1.1.0", "--since", "30m",
              "--min-requests", "5000")
    assert few.returncode in (1, 2), few.stdout
    unknown = cli(srv, "compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "9.9.9", "--since", "30m")
    assert unknown.returncode == 2 and "no requests" in unknown.stdout, unknown.stdout + unknown.stderr
    bad = srv.get("/api/v1/compare", params={"service": "pay", "baseline": "1.0.0", "candidate": "1.0.0"})
    assert bad.status_code == 400 and "different" in bad.json()["error"]["message"], bad.text
    gone = subprocess.run([sightline_bin(), "compare", "--service", "pay", "--baseline", "1", "--candidate", "2",
                           "--url", "http://127.0.0.1:9"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert gone.returncode == 2 and gone.stderr.startswith("error:"), gone.stderr


def test_compare_of_equal_releases_is_the_same_and_passes(serve):
    srv = serve("compare-same")
    dice = random.Random(5)
    times = spread(4000)
    send(srv, "calm", "2.0.0", [request(t, "/x", dice.random() < 0.02, ms=30 + dice.random() * 10) for t in times[0::2]])
    send(srv, "calm", "2.1.0", [request(t, "/x", dice.random() < 0.02, ms=30 + dice.random() * 10) for t in times[1::2]])
    out = cli(srv, "compare", "--service", "calm", "--baseline", "2.0.0", "--candidate", "2.1.0", "--since", "30m")
    assert out.returncode == 0 and "SAME" in out.stdout, out.stdout + out.stderr


def test_log_patterns_group_lines_that_differ_in_their_variable_parts(serve):
    srv = serve("patterns")
    now = time.time_ns()

    def log(t: int, body: str, severity: int = 17) -> dict:
        return {"timeUnixNano": str(t), "severityNumber": severity, "severityText": "ERROR" if severity >= 17 else "INFO",
                "body": {"stringValue": body}}

    records = []
    for i in range(1000):  # in the last 9 minutes
        records.append(log(now - 9 * MINUTE_NS + i * 500_000_000,
                           f"payment {8000 + i} timed out after {3000 + i % 7} ms for order ord_{i:05x}k"))
    for i in range(200):  # steady: in the window and in the 10 minutes before it
        records.append(log(now - 20 * MINUTE_NS + i * 6_000_000_000, f"cache refreshed in {i % 9} ms", 9))
    for i in range(0, len(records), 400):
        body = {"resourceLogs": [{"resource": {"attributes": [text_attr("service.name", "pay")]},
                                  "scopeLogs": [{"logRecords": records[i:i + 400]}]}]}
        resp = srv.post_otlp("/v1/logs", body)
        assert resp.status_code == 200, resp.text
    answer = api_json(srv, "/api/v1/logs/patterns", service="pay", since="10m")
    by_pattern = {p["pattern"]: p for p in answer["patterns"]}
    timeouts = [p for p in answer["patterns"] if p["pattern"].startswith("payment <num> timed out")]
    assert len(timeouts) == 1, list(by_pattern)
    t = timeouts[0]
    assert t["count"] == 1000 and sum(t["series"]) == 1000 and t["new"], t
    assert t["example"].startswith("payment ") and t["severity"] == "error", t
    steady = [p for p in answer["patterns"] if p["pattern"].startswith("cache refreshed")]
    assert len(steady) == 1 and not steady[0]["new"] and steady[0]["baseline_count"] > 0, steady
    errors = api_json(srv, "/api/v1/logs/patterns", service="pay", since="10m", severity="error")
    assert [p["pattern"] for p in errors["patterns"]] == [t["pattern"]], errors["patterns"]
    bad = srv.get("/api/v1/logs/patterns", params={"severity": "loud"})
    assert bad.status_code == 400 and "severity" in bad.json()["error"]["message"], bad.text
