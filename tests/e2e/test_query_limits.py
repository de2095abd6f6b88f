"""Queries cannot hurt the server: `[query]` limits in `sightline.toml`.

- memory_limit_bytes (default 1 GiB): functions that build large values (repeat, generate_series
  as a list function, ...) ask the query memory pool before they allocate, so a query over the
  limit answers 400 `bad_request` naming the limit, at once, without the server's memory growing;
- timeout: a wide cross join or a huge series is stopped and answers 504 `timeout` in time;
- max_result_rows and max_result_bytes: the answer is cut at either and says which one cut it
  (`truncated`, `truncated_by`); an answer whose first row alone is over max_result_bytes answers
  400 naming max_result_bytes;
- max_concurrent, max_queued, queue_timeout: at most max_concurrent queries run at once, a few
  wait, the rest answer 429 `too_many_requests` with Retry-After, and every refusal is counted in
  `sightline_queries_refused_total{class="api"}`;
- after each of these the server is healthy (`/healthz` 200, status ok) and answers the next query;
- `/healthz` has a "memory" check of resident memory against the budget the configuration allows,
  and `/metrics` has `sightline_memory_budget_bytes` and `sightline_resident_memory_bytes`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import requests

from conftest import wait_for

MiB = 1024 * 1024
DEFAULT_MEMORY_LIMIT_BYTES = 1024 * MiB
# How far the server's resident memory may rise, at its peak, above where it was before a
# refused or stopped query: far less than any of the values those queries would build.
RSS_GROWTH_BOUND = 200 * MiB
# A refusal for memory is decided before anything is built: it answers at once.
MEMORY_REFUSAL_S = 10.0
# A 3 s timeout, plus slack for a loaded machine.
TIMEOUT_ANSWER_S = 15.0
REQUEST_TIMEOUT_S = 60.0


def write_config(tmp_path: Path, text: str) -> list[str]:
    """The server's arguments for a sightline.toml holding `text`."""
    path = tmp_path / "sightline.toml"
    path.write_text(text)
    return ["--config", str(path)]


def memory_bytes(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (the peak of resident memory so far) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    assert set(out) == {"VmRSS", "VmHWM"}, out
    return out


def assert_memory_stayed_low(srv, before: dict[str, int], what: str) -> None:
    """Neither the resident memory now nor its peak rose more than RSS_GROWTH_BOUND above before."""
    now = memory_bytes(srv.proc.pid)
    for key in ("VmRSS", "VmHWM"):
        grew = now[key] - before["VmRSS"]
        assert grew < RSS_GROWTH_BOUND, (
            f"{what}: {key} is {now[key] // MiB} MiB, {grew // MiB} MiB above the "
            f"{before['VmRSS'] // MiB} MiB before (bound: {RSS_GROWTH_BOUND // MiB} MiB)")


def assert_healthy(srv) -> None:
    """/healthz answers 200 with status ok, and a simple query answers."""
    resp = srv.get("/healthz")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "ok", resp.json()
    assert srv.rows("SELECT 1 AS one") == [{"one": 1}]


def timed_query(srv, sql: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    resp = srv.session.post(f"{srv.api_url}/api/v1/query", json={"sql": sql}, timeout=REQUEST_TIMEOUT_S)
    return resp, time.monotonic() - started


def assert_error(resp: requests.Response, status: int, code: str, sql: str) -> str:
    """The answer is `status` with exactly {"error": {"code": code, "message": ...}}; returns the message."""
    assert resp.status_code == status, f"expected {status}, got {resp.status_code}: {resp.text[:500]}\nSQL: {sql}"
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"], body
    return body["error"]["message"]


def memory_limit_message(limit_bytes: int) -> str:
    return f"the query needs more memory than the limit of {limit_bytes} bytes"


# ------------------------------------------------------------------ memory


def test_a_huge_repeat_is_refused_for_memory_at_once_without_the_server_growing(sightline_factory):
    """With the default config, a 1.5 GB repeat() answers 400 naming the 1 GiB limit, at once, and the
    server's memory never grows towards what the value would take."""
    srv = sightline_factory(name="repeat").start()
    assert_healthy(srv)
    before = memory_bytes(srv.proc.pid)

    sql = "SELECT repeat('x', 1500000000) AS big"  # a 1.5 GB string, above the default 1 GiB
    resp, elapsed = timed_query(srv, sql)
    message = assert_error(resp, 400, "bad_request", sql)
    assert message.startswith(memory_limit_message(DEFAULT_MEMORY_LIMIT_BYTES)), message
    assert elapsed < MEMORY_REFUSAL_S, f"the refusal took {elapsed:.1f}s"

    assert_memory_stayed_low(srv, before, "after a refused repeat()")
    assert srv.metric("sightline_query_memory_bytes") == 0  # the pool got its reservations back
    assert_healthy(srv)
    # The same query fails the same way again: nothing was left reserved by the first one.
    resp, _ = timed_query(srv, sql)
    assert memory_limit_message(DEFAULT_MEMORY_LIMIT_BYTES) in assert_error(resp, 400, "bad_request", sql)


def test_a_cross_join_and_huge_series_end_in_a_clear_error_within_the_limits(sightline_factory, tmp_path):
    """timeout = "3s": a 10^12-row cross join and a 10^11-row series answer 504, a 16 GB list 400 for
    memory; the rows of the cross join are the first max_result_rows, marked as cut by it."""
    srv = sightline_factory(name="wide", extra_args=write_config(tmp_path, '[query]\ntimeout = "3s"\n')).start()
    assert_healthy(srv)
    before = memory_bytes(srv.proc.pid)

    timeout_message = "the query ran longer than the limit of 3000 ms and was stopped"
    memory_message = memory_limit_message(DEFAULT_MEMORY_LIMIT_BYTES)
    for sql, status, code, says, within_s in (
            # 10^12 rows to count: stopped at the timeout.
            ("SELECT count(*) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b",
             504, "timeout", timeout_message, TIMEOUT_ANSWER_S),
            # A list of 2·10^9 integers (16 GB) as one value: refused before it is built.
            ("SELECT generate_series(1, 2000000000) AS big", 400, "bad_request", memory_message, MEMORY_REFUSAL_S),
            # 10^11 rows streamed through an aggregate: little memory, but stopped at the timeout.
            ("SELECT max(value) FROM generate_series(1, 100000000000)",
             504, "timeout", timeout_message, TIMEOUT_ANSWER_S),
    ):
        resp, elapsed = timed_query(srv, sql)
        message = assert_error(resp, status, code, sql)
        assert message.startswith(says), message
        assert elapsed < within_s, f"answered after {elapsed:.1f}s, not within {within_s}s: {sql}"
        assert_memory_stayed_low(srv, before, sql)
        assert_healthy(srv)

    # The rows of a cross join of 10^12 rows: the first max_result_rows (default 10000) of them.
    sql = "SELECT * FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b"
    resp, elapsed = timed_query(srv, sql)
    assert resp.status_code == 200, resp.text[:500]
    body = resp.json()
    assert [c["name"] for c in body["columns"]] == ["value", "value"], body["columns"]
    assert len(body["rows"]) == 10000
    assert all(len(row) == 2 and 1 <= row[0] <= 1000000 and 1 <= row[1] <= 1000000 for row in body["rows"])
    assert body["truncated"] is True and body["truncated_by"] == "max_result_rows", {
        k: v for k, v in body.items() if k != "rows"}
    assert elapsed < TIMEOUT_ANSWER_S
    assert_memory_stayed_low(srv, before, sql)
    assert_healthy(srv)


# ------------------------------------------------------------------ answer size


def test_answers_are_cut_at_max_result_bytes_and_a_row_too_large_is_refused(sightline_factory, tmp_path):
    """max_result_bytes = 65536: a 100 MB answer is cut to fit and says so; a first row over the limit
    answers 400 naming max_result_bytes."""
    limit = 65536
    srv = sightline_factory(name="bytes", extra_args=write_config(
        tmp_path, f"[query]\nmax_result_bytes = {limit}\n")).start()

    # 100000 rows of ~1 kB: about 100 MB of JSON, cut to at most 64 KiB.
    sql = "SELECT n, repeat('x', 1000) AS pad FROM generate_series(1, 100000) AS t(n)"
    resp = srv.query_raw(sql)
    assert resp.status_code == 200, resp.text[:500]
    assert len(resp.content) <= limit, f"the answer is {len(resp.content)} bytes, above max_result_bytes {limit}"
    body = resp.json()
    assert [c["name"] for c in body["columns"]] == ["n", "pad"], body["columns"]
    assert body["truncated"] is True and body["truncated_by"] == "max_result_bytes", {
        k: v for k, v in body.items() if k != "rows"}
    rows = body["rows"]
    assert 1 <= len(rows) < 100000
    assert all(pad == "x" * 1000 for _, pad in rows)
    assert len({n for n, _ in rows}) == len(rows)
    # Cut at the limit, not well before it: one more row would not have fitted.
    row_bytes = len(f'[{100000},"{"x" * 1000}"],')
    assert len(resp.content) + row_bytes > limit, f"{len(resp.content)} bytes with {len(rows)} rows"

    # A whole answer is not marked as cut.
    whole = srv.query("SELECT n FROM generate_series(1, 10) AS t(n)")
    assert len(whole["rows"]) == 10 and whole["truncated"] is False and "truncated_by" not in whole, whole

    # Not even the first row fits: refused, naming the limit.
    sql = "SELECT repeat('x', 100000) AS big"
    message = assert_error(srv.query_raw(sql), 400, "bad_request", sql)
    assert "max_result_bytes" in message and str(limit) in message, message
    assert_healthy(srv)


# ------------------------------------------------------------------ concurrency


# Rows for one query of about 1-3 s on this build (about 300 million rows counted per second).
SLOW_ROWS = 500_000_000
STORM = 12


def test_many_concurrent_queries_run_one_at_a_time_and_the_rest_are_refused_with_429(sightline_factory, tmp_path):
    """max_concurrent = 1, max_queued = 2, queue_timeout = "1s": 12 slow queries at once get 200 or 429
    (Retry-After, too_many_requests), never a 5xx or a dropped connection; every 429 is counted."""
    srv = sightline_factory(name="storm", extra_args=write_config(tmp_path, (
        '[query]\nmax_concurrent = 1\nmax_queued = 2\nqueue_timeout = "1s"\ntimeout = "20s"\n'))).start()
    assert_healthy(srv)
    before = memory_bytes(srv.proc.pid)
    assert srv.metric("sightline_queries_refused_total", **{"class": "api"}) == 0

    sql = f"SELECT count(*) AS n FROM generate_series(1, {SLOW_ROWS})"
    answers: list[requests.Response | BaseException] = [None] * STORM  # type: ignore[list-item]
    start = threading.Barrier(STORM)

    def ask(i: int) -> None:
        try:
            start.wait()
            answers[i] = requests.post(f"{srv.api_url}/api/v1/query", json={"sql": sql}, timeout=REQUEST_TIMEOUT_S)
        except BaseException as exc:  # noqa: BLE001 - a connection error is a finding, kept for the assert
            answers[i] = exc

    threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(STORM)]
    for t in threads:
        t.start()
    # While the storm lasts, /metrics (not a query) shows how many run and wait.
    seen_running, seen_queued = set(), set()
    while any(t.is_alive() for t in threads):
        samples = srv.metrics()
        seen_running.add(samples[("sightline_queries_running", frozenset())])
        seen_queued.add(sum(v for (name, _), v in samples.items() if name == "sightline_queries_queued"))
        time.sleep(0.02)  # polling interval of the gauges
    for t in threads:
        t.join(timeout=REQUEST_TIMEOUT_S)

    errors = [a for a in answers if isinstance(a, BaseException)]
    assert not errors, f"requests failed: {errors!r}"
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 429}, [(a.status_code, a.text[:300]) for a in answers]
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert ok and refused, statuses
    for a in ok:
        assert a.json()["rows"] == [[SLOW_ROWS]], a.text
    for a in refused:
        retry_after = a.headers.get("Retry-After")
        assert retry_after is not None and retry_after.isdigit() and int(retry_after) >= 1, dict(a.headers)
        message = assert_error(a, 429, "too_many_requests", sql)
        assert "max_concurrent" in message, message
    assert 1 in seen_running, f"no query was seen running: {sorted(seen_running)}"
    assert max(seen_running) <= 1, f"more than max_concurrent queries ran at once: {sorted(seen_running)}"
    assert max(seen_queued) <= 2, f"more than max_queued queries waited: {sorted(seen_queued)}"

    assert srv.metric("sightline_queries_refused_total", **{"class": "api"}) == len(refused)
    assert srv.metric("sightline_queries_refused_total", **{"class": "ui"}) == 0
    wait_for(lambda: srv.metric("sightline_queries_running") == 0, timeout=5, what="no query running")
    assert sum(srv.metric("sightline_queries_queued", **{"class": c}) for c in ("api", "ui", "monitor")) == 0
    assert_memory_stayed_low(srv, before, "after the storm")
    assert_healthy(srv)


# ------------------------------------------------------------------ memory check


def test_healthz_checks_memory_against_the_budget_and_metrics_show_both(sightline_factory):
    """/healthz's "memory" check is ok and names the budget that /metrics reports, next to the resident
    memory."""
    srv = sightline_factory(name="budget").start()
    health = srv.get("/healthz")
    assert health.status_code == 200, health.text
    checks = {c["name"]: c for c in health.json()["checks"]}
    assert "memory" in checks, health.json()
    memory = checks["memory"]
    assert memory["level"] == "ok", memory
    assert "budget" in memory["message"], memory

    budget = srv.metric("sightline_memory_budget_bytes")
    resident = srv.metric("sightline_resident_memory_bytes")
    assert budget > 0 and resident > 0, (budget, resident)
    # The budget includes the queries' share, memory_limit_bytes (default 1 GiB).
    assert budget > DEFAULT_MEMORY_LIMIT_BYTES, budget
    # The check names the same budget, in MiB.
    assert f"{int(budget) // MiB} MiB" in memory["message"], (budget, memory)
    # The resident memory is the process's own, as the kernel counts it.
    rss = memory_bytes(srv.proc.pid)["VmRSS"]
    assert rss / 2 < resident < rss * 2, (resident, rss)
