"""Tail sampling end to end: two days of the demo shop, sampled by maintenance, every number exact.

`sightline bench dataset` writes two days of the demo shop (200k spans, its errors, slow requests
and routes) into a data folder; a server with `[sampling] enabled = true` (full fidelity 24 h,
keep_share 0.1, routes under 20 requests an hour kept whole) runs `POST /api/v1/admin/maintenance`
and the answers before and after are compared:

- every trace is whole or gone (no trace loses part of its spans), and the spans of the last day
  are all there;
- every trace with an error, every trace with a request slower than its route's p99 in its hour
  (computed here from the spans before sampling) and every trace of a rare route is kept;
- of the other traces, keep_share is kept (±20 % relative), their spans with sample_rate 0.1,
  and `sum(1.0 / sample_rate)` estimates the count before sampling;
- span_rollups totals, the services API over sampled hours (which answers from rollups and says
  so) are unchanged to the request; the segment bytes on disk fell;
- `/metrics` and the services page report the kept share per service;
- kill -9 while sampling runs loses no kept trace and leaves no half-sampled trace: after the
  restart and another pass the folder holds exactly what a pass without the kill leaves.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests

from conftest import SightlineServer, _cleanup, sightline_bin
from otlp_spans import request, send
from test_monitor import write_config

HOUR_NS = 3_600_000_000_000
CONFIG = ('[sampling]\nenabled = true\nkeep_share = 0.1\nrare_route_below = 20\n'
          '[storage]\ndelete_grace = "0s"\n'
          '[query]\nmax_result_rows = 1000000\nmax_result_bytes = 536870912\n')


def fill(folder: Path) -> None:
    subprocess.run([sightline_bin(), "bench", "dataset", "--data-dir", str(folder), "--spans", "200k",
                    "--logs", "20k", "--days", "2"], check=True, capture_output=True, timeout=300,
                   stdin=subprocess.DEVNULL)


def start(base: Path, data: Path, name: str) -> SightlineServer:
    config = write_config(base / f"{name}.toml", CONFIG)
    return SightlineServer(data, base / "logs", extra_args=["--config", str(config)], name=name).start()


def traces(srv: SightlineServer) -> dict[str, int]:
    return {r["trace_id"]: r["n"] for r in srv.rows("SELECT trace_id, count(*) AS n FROM spans GROUP BY trace_id")}


def clear_of_the_hour(needed_s: float) -> None:
    """Sampling takes the hours older than `now - full_fidelity`, a whole number of hours: passes
    meant to see the same hours must not straddle the turn of a wall-clock hour, so with less than
    `needed_s` left in this one, wait for the next."""
    left = 3600 - time.time() % 3600
    if left < needed_s:
        time.sleep(left + 1)


def maintain(srv: SightlineServer) -> dict:
    resp = srv.session.post(f"{srv.api_url}/api/v1/admin/maintenance", timeout=300)
    assert resp.status_code == 200, resp.text
    return resp.json()


def span_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in (data / "segments" / "spans").rglob("*.parquet"))


def rollup_totals(srv: SightlineServer) -> list[dict]:
    return srv.rows("SELECT service_name, sum(requests) AS requests, sum(errors) AS errors "
                    "FROM span_rollups GROUP BY 1 ORDER BY 1")


def whole_or_gone(before: dict[str, int], after: dict[str, int]) -> list[str]:
    return [t for t, n in after.items() if before.get(t) != n]


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    base = tmp_path_factory.mktemp("sampling")
    data = base / "data"
    fill(data)
    srv = start(base, data, "sampling")
    # A route with five requests in an hour of the sampled day: rare, so kept whole.
    rare_at = time.time_ns() - 30 * HOUR_NS
    send(srv, "rare-admin", "1.0.0", [request(rare_at + i * 1_000_000_000, "/admin/rebuild", False) for i in range(5)])
    before = {
        "traces": traces(srv),
        "errors": {r["trace_id"] for r in srv.rows("SELECT DISTINCT trace_id FROM spans WHERE status = 'error'")},
        "requests": srv.rows("SELECT trace_id, service_name, coalesce(http_route, name) AS route, "
                             "CAST(start_time AS BIGINT) AS start_ns, duration_ns FROM spans "
                             "WHERE kind IN ('server', 'consumer')"),
        "rollups": rollup_totals(srv),
        "bytes": span_bytes(data),
        "spans": srv.rows("SELECT count(*) AS n FROM spans")[0]["n"],
    }
    clear_of_the_hour(120)
    first = maintain(srv)
    cutoff = first["sampling"]["sampled_before_ns"]
    hour = cutoff - 6 * HOUR_NS
    window = {"start": str(hour), "end": str(hour + 10 * 60 * 1_000_000_000)}
    second = maintain(srv)  # deletes the replaced files (delete_grace 0s)
    yield srv, data, before, first, second, window
    _cleanup(srv)


def test_every_trace_is_whole_or_gone_and_the_last_day_untouched(sampled):
    srv, _, before, first, _, _ = sampled
    report = first["sampling"]
    assert report["hours"] >= 23, report
    after = traces(srv)
    assert whole_or_gone(before["traces"], after) == [], "traces kept in part"
    cutoff = report["sampled_before_ns"]
    young = {r["trace_id"] for r in srv.rows(
        f"SELECT DISTINCT trace_id FROM spans WHERE CAST(start_time AS BIGINT) >= {cutoff}")}
    recent_before = {r["trace_id"] for r in before["requests"] if r["start_ns"] >= cutoff}
    assert recent_before <= set(after) and young, "spans younger than full_fidelity are all kept"
    assert report["traces_kept"] < report["traces_seen"] / 4, report


def test_errors_slow_requests_and_rare_routes_keep_their_traces(sampled):
    srv, _, before, first, _, _ = sampled
    cutoff = first["sampling"]["sampled_before_ns"]
    after = set(traces(srv))
    missing_errors = [t for t in before["errors"] if t not in after]
    assert missing_errors == [], f"{len(missing_errors)} error traces dropped"
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in before["requests"]:
        if r["start_ns"] < cutoff:
            groups[(r["start_ns"] // HOUR_NS, r["service_name"], r["route"])].append(r)
    must_keep: set[str] = set()
    rare: set[str] = set()
    for rows in groups.values():
        if len(rows) < 20:
            rare |= {r["trace_id"] for r in rows}
            continue
        durations = sorted(r["duration_ns"] for r in rows)
        p99 = durations[max(1, -(-99 * len(durations) // 100)) - 1]  # nearest rank
        must_keep |= {r["trace_id"] for r in rows if r["duration_ns"] > p99}
    assert len(must_keep) > 50 and rare, (len(must_keep), len(rare))
    dropped = must_keep - after
    assert dropped == set(), f"{len(dropped)} slow traces dropped"
    dropped = rare - after
    assert dropped == set(), f"{len(dropped)} rare-route traces dropped"
    # A trace counts under its first reason (an error before slowness before a rare route).
    reasons = first["sampling"]["kept_by_reason"]
    assert reasons.get("error", 0) > 0 and reasons.get("slow", 0) > 0, reasons


def test_the_rest_are_kept_near_keep_share_and_weigh_back_to_the_count(sampled):
    srv, _, before, first, _, _ = sampled
    report = first["sampling"]
    reasons = report["kept_by_reason"]
    ordinary = report["traces_seen"] - sum(n for r, n in reasons.items() if r not in ("share", "recorded"))
    share = reasons["share"] / ordinary
    assert 0.08 <= share <= 0.12, (share, report)
    rates = srv.rows("SELECT sample_rate, count(DISTINCT trace_id) AS traces, count(*) AS spans FROM spans GROUP BY 1")
    by_rate = {r["sample_rate"]: r for r in rates}
    assert set(by_rate) == {1.0, 0.1}, by_rate
    estimate = srv.rows("SELECT sum(1.0 / sample_rate) AS n FROM spans")[0]["n"]
    assert abs(estimate / before["spans"] - 1) < 0.05, (estimate, before["spans"])


def test_numbers_stay_exact_and_bytes_fall(sampled):
    srv, data, before, _, second, window = sampled
    assert rollup_totals(srv) == before["rollups"], "rollups are never re-derived from a sample"
    assert second["sampling"]["hours"] == 0, "an hour is sampled once"
    after_bytes = span_bytes(data)
    # Half of the two days is sampled: the folder's span bytes fall by a third or more, the
    # sampled hours' by more than half.
    assert after_bytes < before["bytes"] * 0.8, (after_bytes, before["bytes"])
    report = sampled[3]["sampling"]
    assert report["bytes_after"] < report["bytes_before"] * 0.5, report
    answer = srv.get("/api/v1/services", params=window).json()
    assert answer["counts_from"] == "span_rollups", answer
    assert answer["spans_sampled_before"], answer
    # The same ten minutes counted from the rollups by SQL: the API answers those numbers.
    start_ns, end_ns = int(window["start"]), int(window["end"])
    expected = {r["service_name"]: r["n"] for r in srv.rows(
        "SELECT service_name, sum(requests) AS n FROM span_rollups "
        f"WHERE CAST(time AS BIGINT) >= {start_ns} AND CAST(time AS BIGINT) < {end_ns} GROUP BY 1")}
    got = {s["service_name"]: s["requests"] for s in answer["services"]}
    assert got == expected and sum(got.values()) > 0, (got, expected)


def test_the_kept_share_is_on_metrics_and_the_services_page(sampled):
    srv, _, _, first, _, _ = sampled
    ratios = {dict(labels)["service"]: v for (name, labels), v in srv.metrics().items()
              if name == "sightline_sampling_kept_ratio"}
    assert ratios.pop("rare-admin") == 1.0, "a rare route's traces are all kept"
    assert ratios and all(0 < v < 1 for v in ratios.values()), ratios
    page = srv.get("/", params={"since": "7d"}).text
    assert 'class="badge kept-share"' in page and "traces kept" in page, page[:2000]
    answer = srv.get("/api/v1/services").json()["sampling"]
    answer.pop("rare-admin")
    assert {s: round(v["kept_share"], 6) for s, v in answer.items()} == {s: round(v, 6) for s, v in ratios.items()}


def test_kill_9_while_sampling_keeps_every_kept_trace_whole(tmp_path):
    data = tmp_path / "data"
    fill(data)
    reference_data = tmp_path / "reference"
    shutil.copytree(data, reference_data)  # the same folder, sampled without a kill
    clear_of_the_hour(120)  # the reference pass, three kills and the last pass: about 10 s
    ref = start(tmp_path, reference_data, "reference")
    try:
        before = traces(ref)
        rollups = rollup_totals(ref)
        reference = maintain(ref)["sampling"]
        expected = traces(ref)
    finally:
        _cleanup(ref)
    srv = start(tmp_path, data, "killed")
    rng = random.Random(20261203)
    for attempt in range(3):
        answered: list = []
        thread = threading.Thread(target=lambda: answered.append(
            _post_quietly(f"{srv.api_url}/api/v1/admin/maintenance")), daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.05, 0.6))
        srv.kill()
        thread.join(timeout=30)
        srv = SightlineServer(data, tmp_path / "logs", extra_args=srv.extra_args, name=f"killed-{attempt}").start()
        now = traces(srv)
        assert whole_or_gone(before, now) == [], f"attempt {attempt}: a trace is half sampled"
        kept_somewhere = set(expected) - set(now)
        assert kept_somewhere == set(), f"attempt {attempt}: {len(kept_somewhere)} traces a clean pass keeps are gone"
    try:
        last = maintain(srv)["sampling"]
        assert last["sampled_before_ns"] == reference["sampled_before_ns"], (last, reference)
        assert traces(srv) == expected, "after the kills and a pass, the folder holds what a clean pass leaves"
        assert rollup_totals(srv) == rollups
    finally:
        _cleanup(srv)


def _post_quietly(url: str):
    try:
        return requests.post(url, timeout=60).status_code
    except requests.RequestException as exc:  # the server was killed under it
        return repr(exc)
