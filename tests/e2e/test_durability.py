"""No acknowledged record is ever lost, and none is doubled.

kill -9 right after an acknowledgement (and in the middle of a stream of
requests, one of them certainly still in flight), restart on the same data
folder, and every 2xx'd span is there exactly once. A clean SIGTERM restart
keeps everything too: a request still in flight at SIGTERM is finished and
stored, new connections are refused meanwhile, and the log search and service
summary APIs answer from the restarted server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlencode

import psutil
import pytest
import requests

from conftest import SightlineServer, wait_for


def hex_id(n: int) -> str:
    return os.urandom(n).hex()


def now_ns(seconds_ago: float = 60) -> int:
    return time.time_ns() - int(seconds_ago * 10**9)


def span(service: str, name: str, *, kind: int = 2, start: int, dur_ns: int, error: bool = False,
         route: str | None = None, http_code: int | None = None, tid: str | None = None,
         parent: str | None = None) -> tuple[str, dict]:
    attrs = []
    if route:
        attrs.append({"key": "http.route", "value": {"stringValue": route}})
        attrs.append({"key": "http.request.method", "value": {"stringValue": "GET"}})
    if http_code:
        attrs.append({"key": "http.response.status_code", "value": {"intValue": str(http_code)}})
    sid = hex_id(8)
    s = {"traceId": tid or hex_id(16), "spanId": sid, "name": name, "kind": kind,
         "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur_ns), "attributes": attrs,
         "status": {"code": 2, "message": "failed"} if error else {}}
    if parent:
        s["parentSpanId"] = parent
    return sid, s


def traces_body(by_service: dict[str, list[dict]]) -> dict:
    return {"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
         "scopeSpans": [{"scope": {"name": "e2e.durability"}, "spans": spans}]}
        for svc, spans in by_service.items()
    ]}


def log(body: str, severity_number: int, t: int, tid: str | None = None) -> dict:
    rec = {"timeUnixNano": str(t), "severityNumber": severity_number, "body": {"stringValue": body}}
    if tid:
        rec["traceId"] = tid
        rec["spanId"] = hex_id(8)
    return rec


def logs_body(by_service: dict[str, list[dict]]) -> dict:
    return {"resourceLogs": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
         "scopeLogs": [{"scope": {"name": "e2e.durability"}, "logRecords": recs}]}
        for svc, recs in by_service.items()
    ]}


def accepted(resp: requests.Response) -> bool:
    if resp.status_code != 200:
        return False
    rejected = resp.json().get("partialSuccess", {}).get("rejectedSpans")
    return not rejected or str(rejected) == "0"


class HeldBody:
    """A request body sent with chunked transfer encoding in two parts: the first at once, the
    rest only after release(). Until then the request is certainly in flight: the server cannot
    have read all of it, so it cannot have answered."""

    def __init__(self, body: bytes):
        self.body = body
        self.first_part_sent = threading.Event()
        self._released = threading.Event()

    def chunks(self):
        half = len(self.body) // 2
        yield self.body[:half]
        self.first_part_sent.set()
        self._released.wait(timeout=60)
        yield self.body[half:]

    def release(self) -> None:
        self._released.set()


def post_held(pool: ThreadPoolExecutor, url: str, held: HeldBody) -> Future:
    """POST the held body from a pool thread; the future holds the answer (or the exception)."""
    future = pool.submit(requests.post, url, data=held.chunks(), headers={"Content-Type": "application/json"},
                         timeout=60)
    assert held.first_part_sent.wait(timeout=10), "the first part of the body was never sent"
    return future


def span_counts(srv, service: str) -> dict[str, int]:
    rows = srv.rows(f"SELECT span_id, count(*) AS n FROM spans WHERE service_name = '{service}' GROUP BY span_id")
    return {r["span_id"]: r["n"] for r in rows}


def assert_exactly_once(srv, service: str, acked: set[str], sent: set[str]) -> None:
    counts = span_counts(srv, service)
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} acknowledged spans lost, e.g. {sorted(missing)[:5]}"
    doubled = {k: n for k, n in counts.items() if n != 1}
    assert not doubled, f"spans stored more than once: {dict(list(doubled.items())[:5])}"
    unknown = set(counts) - sent
    assert not unknown, f"spans nobody sent: {sorted(unknown)[:5]}"


def test_sigkill_loses_no_acknowledged_span(sightline_factory):
    srv = sightline_factory(name="kill9").start()
    service = "durable"
    sent: set[str] = set()
    acked: set[str] = set()

    # 1. One request, acknowledged, then kill -9 at once.
    ids, spans = zip(*(span(service, f"one-{i}", start=now_ns(), dur_ns=1_000_000) for i in range(5)))
    sent |= set(ids)
    resp = srv.post_otlp("/v1/traces", traces_body({service: list(spans)}))
    assert accepted(resp), resp.text
    srv.kill()
    acked |= set(ids)

    srv.start()
    assert_exactly_once(srv, service, acked, sent)

    # 2. A stream of concurrent requests, killed part-way through.
    lock = threading.Lock()
    per_request, n_requests = 20, 60
    stop = threading.Event()

    def send(i: int) -> None:
        if stop.is_set():
            return
        ids, spans = zip(*(span(service, f"stream-{i}-{j}", start=now_ns(), dur_ns=2_000_000)
                           for j in range(per_request)))
        with lock:
            sent.update(ids)
        try:
            resp = requests.post(f"{srv.otlp_http_url}/v1/traces", json=traces_body({service: list(spans)}),
                                 timeout=10)
        except requests.RequestException:
            return  # cut off by the kill: not acknowledged
        if accepted(resp):
            with lock:
                acked.update(ids)

    # One request of the stream is held open: half of its body is sent before the kill, the
    # rest after. It is certainly in flight when the kill comes, and it can never be stored.
    held_ids, held_spans = zip(*(span(service, f"held-{j}", start=now_ns(), dur_ns=2_000_000)
                                 for j in range(per_request)))
    sent |= set(held_ids)
    held = HeldBody(json.dumps(traces_body({service: list(held_spans)})).encode())

    before = len(acked)
    with ThreadPoolExecutor(max_workers=1) as held_pool, ThreadPoolExecutor(max_workers=4) as pool:
        try:
            held_answer = post_held(held_pool, f"{srv.otlp_http_url}/v1/traces", held)
            futures = [pool.submit(send, i) for i in range(n_requests)]
            wait_for(lambda: len(acked) - before >= per_request * 10, timeout=60,
                     what="a third of the stream to be acknowledged")
            assert not held_answer.done(), "the held request must still be in flight at the kill"
            srv.kill()
        finally:
            stop.set()
            held.release()
        for f in futures:
            f.result()
        with pytest.raises(requests.RequestException):
            held_answer.result(timeout=30)  # cut off by the kill: no answer
    assert len(acked) - before >= per_request * 10

    srv.start()
    assert_exactly_once(srv, service, acked, sent)
    assert not set(span_counts(srv, service)) & set(held_ids), "a request cut off mid-body must store nothing"

    # 3. Replaying an already replayed log must not double anything either.
    srv.stop()
    srv.start()
    assert_exactly_once(srv, service, acked, sent)


def connection_refused(address: str) -> bool:
    """Whether a new TCP connection to host:port is refused (one that connects is closed at once)."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def test_a_request_in_flight_at_sigterm_is_finished_and_stored(sightline_factory):
    """SIGTERM stops the server cleanly: a request whose body is still arriving when the signal
    comes is read to the end, answered 200 and stored; new connections are refused on every
    port meanwhile; the server exits 0, and after a restart every span of the request is there
    exactly once."""
    srv = sightline_factory(name="sigterm-in-flight").start()
    service = "in-flight-at-sigterm"
    ids, spans = zip(*(span(service, f"in-flight-{i}", start=now_ns(), dur_ns=1_000_000) for i in range(50)))
    held = HeldBody(json.dumps(traces_body({service: list(spans)})).encode())
    addresses = [srv.ready["otlp_http"], srv.ready["otlp_grpc"], srv.ready["listen"]]
    assert not any(connection_refused(a) for a in addresses)

    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            answer = post_held(pool, f"{srv.otlp_http_url}/v1/traces", held)
            # The server has taken the connection once it holds it as a file descriptor (a
            # connection still in the listen queue is not the process's); the headers came in the
            # same packets as the first part of the body, so a moment later they are read.
            port = int(srv.ready["otlp_http"].rsplit(":", 1)[1])
            wait_for(lambda: any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
                                 for c in psutil.Process(srv.proc.pid).net_connections(kind="tcp")),
                     timeout=30, what="the server to accept the held request's connection")
            time.sleep(0.5)
            srv.proc.send_signal(signal.SIGTERM)
            wait_for(lambda: "shutting down: finishing in-flight requests" in srv.stderr_tail(), timeout=10,
                     what="the server to begin its shutdown")
            # Refused, not answered 503: the listeners are closed, the request in flight goes on.
            wait_for(lambda: all(connection_refused(a) for a in addresses), timeout=5,
                     what="new connections to be refused on every port")
            assert srv.running() and not answer.done(), "the server must wait for the request in flight"
        finally:
            held.release()
        resp = answer.result(timeout=30)
    assert resp.status_code == 200 and resp.json() == {}, resp.text  # no partialSuccess: all accepted
    assert srv.proc.wait(timeout=20) == 0, srv.stderr_tail()

    srv.start()
    assert span_counts(srv, service) == {sid: 1 for sid in ids}


ROUTE_A = "/a/{id}"
ROUTE_B = "/b"
ROUTE_JOBS = "/jobs"
A_MS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


@pytest.fixture(scope="module")
def restarted(tmp_path_factory) -> dict:
    """A server fed with a known mix of spans and logs, then restarted with SIGTERM."""
    base = tmp_path_factory.mktemp("sigterm")
    srv = SightlineServer(base / "data", base / "logs", name="sigterm").start()
    try:
        yield feed_and_restart(srv)
    finally:
        if srv.running():
            srv.stop()


def feed_and_restart(srv) -> dict:
    t0 = now_ns(300)
    api: list[dict] = []
    worker: list[dict] = []

    for i, ms in enumerate(A_MS):  # 10 requests on /a/{id}, the two slowest fail
        err = ms >= 90
        api.append(span("api", f"GET {ROUTE_A}", start=t0 + i * 10**9, dur_ns=ms * 10**6, error=err,
                        route=ROUTE_A, http_code=500 if err else 200)[1])
    for i in range(4):  # 4 requests on /b, 25 ms each
        api.append(span("api", f"GET {ROUTE_B}", start=t0 + i * 10**9, dur_ns=25 * 10**6,
                        route=ROUTE_B, http_code=200)[1])
    for i in range(5):  # client and internal spans are not requests
        api.append(span("api", "GET", kind=3, start=t0, dur_ns=5 * 10**6, route=None, http_code=200)[1])
        api.append(span("api", "compute", kind=1, start=t0, dur_ns=10**6, error=(i == 0))[1])
    for i in range(3):  # the worker: 3 requests on /jobs, one fails
        worker.append(span("worker", f"POST {ROUTE_JOBS}", start=t0 + i * 10**9, dur_ns=5 * 10**6,
                           error=(i == 2), route=ROUTE_JOBS, http_code=500 if i == 2 else 202)[1])

    tid = hex_id(16)
    logs = {
        "api": [log(f"payment failed for order {i}", 17, t0 + i * 10**6, tid=tid if i < 2 else None)
                for i in range(5)]
        + [log("db timeout", 17, t0 + 10**8 + i) for i in range(2)]
        + [log("payment failed, retry scheduled", 9, t0 + 2 * 10**8 + i) for i in range(3)],
        "worker": [log("payment failed in worker", 17, t0 + 3 * 10**8 + i) for i in range(2)],
    }

    resp = srv.post_otlp("/v1/traces", traces_body({"api": api, "worker": worker}))
    assert accepted(resp), resp.text
    resp = srv.post_otlp("/v1/logs", logs_body(logs))
    assert resp.status_code == 200, resp.text

    n_spans, n_logs = len(api) + len(worker), sum(len(v) for v in logs.values())
    srv.wait_rows("SELECT count(*) AS n FROM spans", lambda r: r[0]["n"] == n_spans)
    srv.wait_rows("SELECT count(*) AS n FROM logs", lambda r: r[0]["n"] == n_logs)

    srv.stop()  # SIGTERM, exit 0 within the time limit
    srv.start()
    return {"srv": srv, "spans": n_spans, "logs": n_logs, "tid": tid}


def test_sigterm_restart_keeps_every_row_once(restarted):
    srv = restarted["srv"]
    rows = srv.rows("SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans")
    assert rows == [{"n": restarted["spans"], "d": restarted["spans"]}]
    rows = srv.rows("SELECT count(*) AS n FROM logs")
    assert rows == [{"n": restarted["logs"]}]


def get_logs(srv, **params) -> list[dict]:
    resp = srv.get("/api/v1/logs?" + urlencode(params))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert isinstance(body.get("logs"), list), body
    return body["logs"]


def test_logs_api_filters(restarted):
    srv = restarted["srv"]
    found = get_logs(srv, service="api", severity="error", q="payment failed", limit=100)
    assert len(found) == 5, found
    for rec in found:
        assert rec["service_name"] == "api"
        assert rec["severity"] == "error"
        assert "payment failed" in rec["body"]

    limited = get_logs(srv, service="api", severity="error", q="payment failed", limit=3)
    assert len(limited) == 3
    assert all("payment failed for order" in r["body"] for r in limited)

    by_trace = get_logs(srv, trace_id=restarted["tid"])
    assert sorted(r["body"] for r in by_trace) == ["payment failed for order 0", "payment failed for order 1"]

    worker = get_logs(srv, service="worker")
    assert [r["body"] for r in worker] == ["payment failed in worker"] * 2


def test_services_api(restarted):
    srv = restarted["srv"]
    resp = srv.get("/api/v1/services?since=1h")
    assert resp.status_code == 200, resp.text
    services = {s["service_name"]: s for s in resp.json()["services"]}
    assert {"api", "worker"} <= set(services), services

    api = services["api"]
    assert (api["requests"], api["errors"]) == (14, 2), api
    routes = {r["http_route"]: r for r in api["routes"]}
    assert set(routes) == {ROUTE_A, ROUTE_B}, routes
    a, b = routes[ROUTE_A], routes[ROUTE_B]
    assert (a["requests"], a["errors"]) == (10, 2)
    assert (b["requests"], b["errors"]) == (4, 0)

    # Percentiles come from sketches with ~1% relative error; allow for that and for the
    # choice of percentile definition (nearest rank or interpolated).
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        assert b[q] == pytest.approx(25, rel=0.03), b
    assert 40 * 0.97 <= a["p50_ms"] <= 60 * 1.03, a
    assert 80 * 0.97 <= a["p95_ms"] <= 100 * 1.03, a
    assert 90 * 0.97 <= a["p99_ms"] <= 100 * 1.03, a
    for row in (api, a, b):
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"], row
    assert 10 * 0.97 <= api["p50_ms"] and api["p99_ms"] <= 100 * 1.03, api

    worker = services["worker"]
    assert (worker["requests"], worker["errors"]) == (3, 1), worker
    assert [(r["http_route"], r["requests"], r["errors"]) for r in worker["routes"]] == [(ROUTE_JOBS, 3, 1)]
    assert worker["p99_ms"] == pytest.approx(5, rel=0.03)
