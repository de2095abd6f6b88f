"""Span rollups: the per-minute `span_rollups` table the store derives from spans, and the long
windows of the services API and pages that read it. Their answers must be the spans' answers:
the same request and error counts to the request, percentiles within the sketch's 1%."""

import re
import subprocess
import time
from datetime import datetime, timezone

from conftest import sightline_bin

REQUESTS = "kind IN ('server', 'consumer')"
FAILED = "(status = 'error' OR http_status_code >= 500)"


def _rfc3339(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"


def _filled(sightline_factory, backfill: str = "3h"):
    srv = sightline_factory().start()
    out = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", srv.otlp_http_url, "--backfill", backfill,
         "--rate", "2", "--duration", "1s"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return srv


def _lower_rank(sorted_values: list[int], q: float) -> int:
    return sorted_values[int(q * (len(sorted_values) - 1))]


def test_a_long_window_answers_from_rollups_with_the_spans_counts(sightline_factory):
    srv = _filled(sightline_factory)
    now = time.time_ns()
    # Edges off the minute on both sides: whole minutes come from rollups, the rest from spans.
    start = now - 2 * 3600 * 10**9 + 17_300_000_000
    end = now - 7 * 60 * 10**9 - 11_900_000_000
    window = f"start_time >= to_timestamp_nanos({start}) AND start_time < to_timestamp_nanos({end})"
    api = srv.get("/api/v1/services", params={"start": _rfc3339(start), "end": _rfc3339(end)})
    assert api.status_code == 200, api.text
    services = {s["service_name"]: s for s in api.json()["services"]}

    raw = {r["service_name"]: r for r in srv.rows(
        f"SELECT service_name, count(*) AS requests, sum(CASE WHEN {FAILED} THEN 1 ELSE 0 END) AS errors, "
        f"sum(duration_ns) AS total FROM spans WHERE {window} AND {REQUESTS} GROUP BY service_name")}
    assert set(services) == set(raw) and len(raw) >= 4, (sorted(services), sorted(raw))
    # The window has failed requests to count: the demo's gateway, orders and payments fail at times.
    failing = {name for name, row in raw.items() if row["errors"] > 0}
    assert {"api-gateway", "orders", "payments"} <= failing, {name: row["errors"] for name, row in raw.items()}
    for name, row in raw.items():
        s = services[name]
        assert (s["requests"], s["errors"]) == (row["requests"], row["errors"]), name
        assert abs(s["total_ms"] - row["total"] / 1e6) < 1e-3, name
        route_requests = sum(r["requests"] for r in s["routes"])
        assert route_requests == row["requests"], f"{name}: routes add up to the service"

    # Percentiles: within 1% of the exact lower-rank percentile of the stored durations.
    durations = sorted(r["duration_ns"] for r in srv.rows(
        f"SELECT duration_ns FROM spans WHERE {window} AND {REQUESTS} AND service_name = 'payments'"))
    payments = services["payments"]
    assert payments["requests"] == len(durations)
    for key, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        exact_ms = _lower_rank(durations, q) / 1e6
        assert abs(payments[key] - exact_ms) <= exact_ms * 0.01 + 1e-6, (key, payments[key], exact_ms)


def test_span_rollups_is_a_table_that_counts_every_request(sightline_factory):
    srv = _filled(sightline_factory, backfill="1h")
    rollups = srv.rows(
        "SELECT sum(requests) AS requests, sum(errors) AS errors, count(*) AS rows, "
        "count(DISTINCT date_trunc('minute', time)) AS minutes FROM span_rollups")[0]
    spans = srv.rows(
        f"SELECT count(*) AS requests, sum(CASE WHEN {FAILED} THEN 1 ELSE 0 END) AS errors "
        f"FROM spans WHERE {REQUESTS}")[0]
    assert spans["errors"] > 0, spans  # failed requests to count
    assert (rollups["requests"], rollups["errors"]) == (spans["requests"], spans["errors"])
    assert rollups["minutes"] >= 59 and rollups["rows"] < spans["requests"] / 2, rollups

    # Per route and minute, with the columns the docs name; the time spent is the spans' own.
    route = srv.rows(
        "SELECT service_name, http_method, route, sum(requests) AS n, sum(duration_sum_ns) AS total, "
        "max(duration_max_ns) AS slowest, min(duration_min_ns) AS fastest FROM span_rollups "
        "WHERE service_name = 'api-gateway' AND route = '/api/checkout' "
        "GROUP BY service_name, http_method, route")
    assert len(route) == 1 and route[0]["http_method"] == "POST", route
    exact = srv.rows(
        "SELECT count(*) AS n, sum(duration_ns) AS total, max(duration_ns) AS slowest, "
        "min(duration_ns) AS fastest FROM spans WHERE service_name = 'api-gateway' "
        f"AND http_route = '/api/checkout' AND {REQUESTS}")[0]
    assert (route[0]["n"], route[0]["total"], route[0]["slowest"], route[0]["fastest"]) == \
        (exact["n"], exact["total"], exact["slowest"], exact["fastest"])

    # A restart (a flush, then the rollups are read back from segments) changes nothing.
    assert srv.stop() == 0
    srv.start()
    again = srv.rows("SELECT sum(requests) AS requests FROM span_rollups")[0]
    assert again["requests"] == spans["requests"]
    assert srv.metric("sightline_segments", signal="span_rollups") >= 1
    assert srv.metric("sightline_segment_bytes", signal="span_rollups") > 0


def _trace_links(html: str, table_id: str) -> list[str]:
    start = html.index(f'id="{table_id}"')
    table = html[start:html.index("</table>", start)]
    return re.findall(r'href="/traces/([0-9a-f]{32})\?span=([0-9a-f]{16})"', table)


def test_the_service_page_finds_the_slowest_and_newest_failing_requests_through_rollups(sightline_factory):
    srv = _filled(sightline_factory)
    now = time.time_ns()
    start = now - 150 * 60 * 10**9 + 13_700_000_000
    end = now - 3 * 60 * 10**9 - 29_100_000_000
    window = f"start_time >= to_timestamp_nanos({start}) AND start_time < to_timestamp_nanos({end})"
    for service in ("api-gateway", "payments"):
        page = srv.get(f"/services/{service}", params={"range": "custom", "start": str(start), "end": str(end)})
        assert page.status_code == 200, page.text
        slowest = srv.rows(
            f"SELECT trace_id, span_id, duration_ns FROM spans WHERE {window} AND {REQUESTS} "
            f"AND service_name = '{service}' ORDER BY duration_ns DESC LIMIT 10")
        shown = _trace_links(page.text, "slow-traces")
        assert len(shown) == len(slowest) == 10
        # Ties may come in another order; the durations shown are the ten longest.
        by_id = {(r["trace_id"], r["span_id"]): r["duration_ns"] for r in srv.rows(
            f"SELECT trace_id, span_id, duration_ns FROM spans WHERE {window} AND {REQUESTS} "
            f"AND service_name = '{service}' AND duration_ns >= {slowest[-1]['duration_ns']}")}
        assert sorted((by_id[s] for s in shown), reverse=True) == [r["duration_ns"] for r in slowest], service

        failing = srv.rows(
            f"SELECT trace_id, span_id FROM spans WHERE {window} AND {REQUESTS} AND {FAILED} "
            f"AND service_name = '{service}' ORDER BY start_time DESC, span_id LIMIT 10")
        assert len(failing) == 10, (service, failing)  # the window has more than ten failed requests
        shown = _trace_links(page.text, "failing-traces")
        assert set(shown) == {(r["trace_id"], r["span_id"]) for r in failing}, service
