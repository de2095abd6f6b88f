"""The server's own health: /healthz says "replaying" (503, Retry-After) until the write-ahead log
is back, then "ok" with its checks; `sightline doctor` says what is wrong in plain words."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import requests

from conftest import server_env, sightline_bin


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def doctor(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sightline_bin(), "doctor", "--url", url], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, env=server_env({}))


def test_healthz_says_replaying_until_the_log_is_back(sightline_factory, tmp_path):
    # Fill the write-ahead log without flushing it, then crash.
    first = sightline_factory(["--flush-interval", "1h"]).start()
    out = subprocess.run(
        [sightline_bin(), "bench", "ingest", "--endpoint", first.otlp_http_url, "--clients", "2",
         "--duration", "4s", "--requests-per-body", "200"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    stored = first.rows("SELECT count(*) AS n FROM spans")[0]["n"]
    assert stored > 10_000, stored
    first.kill()

    # Restart on the same folder with known ports and ask from the first moment.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sightline_bin(), "serve", "--data-dir", str(first.data_dir), "--listen", f"127.0.0.1:{port}",
         "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "replay-stderr.log", "wb"),
        stdin=subprocess.DEVNULL, env=server_env({}))
    seen = []
    # Each round asks the query API first, then /healthz. Replay only ever ends, so a query
    # answered before /healthz said "replaying" was answered during the replay.
    during_replay = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                query = requests.post(f"{url}/api/v1/query", json={"sql": "SELECT 1"}, timeout=30)
                health = requests.get(f"{url}/healthz", timeout=30)
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.01)
                continue
            body = health.json()
            seen.append((health.status_code, body["status"]))
            if body["status"] == "replaying":
                assert health.status_code == 503 and health.headers.get("Retry-After"), health.headers
                assert body["replay"]["wal_files"] >= 1, body
                during_replay.append(query)
            if health.status_code == 200:
                break
        # While the log is replayed, the API says so, precisely.
        assert during_replay, f"the replay was never seen; answers were {seen[:5]}...{seen[-3:]}"
        for query in during_replay:
            assert query.status_code == 503, (query.status_code, query.text)
            assert query.json()["error"]["code"] == "unavailable", query.text
            assert "replaying" in query.json()["error"]["message"], query.text
            assert query.headers.get("Retry-After"), query.headers
        assert seen and seen[-1][0] == 200, seen
        health = requests.get(f"{url}/healthz", timeout=5).json()
        assert health["status"] == "ok", health["checks"]
        assert [s for s in seen if s[0] == 200][0] == seen[-1], "ready must come only after replaying"
        # Every acknowledged span is back once it says ok.
        after = requests.post(f"{url}/api/v1/query", json={"sql": "SELECT count(*) AS n FROM spans"},
                              timeout=30).json()["rows"][0][0]
        assert after == stored, (after, stored)
        checks = {c["name"]: c for c in requests.get(f"{url}/healthz", timeout=5).json()["checks"]}
        assert checks["disk"]["level"] in ("ok", "warn") and "free of" in checks["disk"]["message"], checks
        assert checks["write-ahead log"]["level"] == "ok", checks
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_doctor_says_what_is_fine_and_what_is_not(sightline):
    out = doctor(sightline.api_url)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("[ok  ] server:", "disk:", "write-ahead log:", "clock:", "sender clocks:"):
        assert line in out.stdout, out.stdout

    # A sender whose clock runs an hour ahead is named.
    ahead = time.time_ns() + 3600 * 10**9
    body = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "clock-ahead"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": "tick", "kind": 2,
            "startTimeUnixNano": str(ahead), "endTimeUnixNano": str(ahead + 1000)}]}]}]}
    assert sightline.post_otlp("/v1/traces", json.dumps(body)).status_code == 200
    out = doctor(sightline.api_url)
    assert "[warn] sender clocks:" in out.stdout and "clock-ahead" in out.stdout, out.stdout


def test_doctor_says_when_nothing_answers():
    out = doctor(f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1
    assert "[FAIL] server: nothing answers" in out.stdout and "sightline serve" in out.stdout, out.stdout
