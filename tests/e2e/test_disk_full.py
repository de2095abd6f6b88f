"""A full disk: ingest answers 503 with Retry-After, queries keep working, nothing on disk is
corrupted, and ingest resumes by itself once space returns. The data folder lives on a small
tmpfs (mounted by the test; the test command runs as root)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from conftest import wait_for


def span_body(service: str, n: int = 50) -> tuple[dict, list[str]]:
    now = time.time_ns()
    ids = [uuid.uuid4().hex[:16] for _ in range(n)]
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{"traceId": uuid.uuid4().hex, "spanId": sid, "name": "op", "kind": 2,
                                   "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
                                   "attributes": [{"key": "pad", "value": {"stringValue": "x" * 200}}]}
                                  for sid in ids]}]}]}, ids


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the disk-full test needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path, chunk: int = 1 << 20) -> int:
    """Writes a file until the disk is full; returns the bytes written."""
    written = 0
    # Big chunks first, then the last few kilobytes, so even small log appends find no room.
    for name, size in ((path, chunk), (str(path) + ".tail", 4096)):
        fd = os.open(name, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                written += os.write(fd, b"\0" * size)
        except OSError:
            pass
        finally:
            os.close(fd)
    return written


def test_a_full_disk_refuses_ingest_keeps_queries_and_recovers(small_disk, sightline_factory):
    # small_disk comes first: it is unmounted only after the server has stopped.
    server = sightline_factory(["--flush-interval", "1s"], data_dir=small_disk / "data", name="full").start()
    acknowledged: list[str] = []
    body, ids = span_body("before")
    assert server.post_otlp("/v1/traces", body).status_code == 200
    acknowledged += ids
    wait_for(lambda: server.metric("sightline_segments", signal="spans") >= 1, timeout=30,
             what="a first segment")

    fill(small_disk / "filler")
    refused = None
    for _ in range(20):
        body, ids = span_body("during")
        resp = server.post_otlp("/v1/traces", body)
        if resp.status_code == 200:
            acknowledged += ids  # it still fit; try again
            continue
        refused = resp
        break
    assert refused is not None, "the disk never refused a write"
    assert refused.status_code == 503 and refused.headers.get("Retry-After"), (refused.status_code, refused.text)
    assert refused.json()["error"]["code"] == "unavailable", refused.text
    assert server.metric("sightline_wal_write_errors_total") >= 1

    # Queries still answer, with everything acknowledged so far; health says what is wrong.
    rows = server.rows("SELECT span_id FROM spans")
    assert sorted(r["span_id"] for r in rows) == sorted(acknowledged)
    health = server.get("/healthz").json()
    assert health["status"] == "failing", health
    checks = {c["name"]: c for c in health["checks"]}
    assert checks["write-ahead log"]["level"] == "fail" and "failed" in checks["write-ahead log"]["message"]

    # Space returns: ingest resumes without a restart.
    os.remove(small_disk / "filler")
    os.remove(str(small_disk / "filler") + ".tail")
    body, ids = span_body("after")
    resp = server.post_otlp("/v1/traces", body)
    assert resp.status_code == 200, resp.text
    acknowledged += ids

    # Nothing is corrupted: after a restart every acknowledged span is there exactly once.
    server.stop()
    server.start()
    rows = server.rows("SELECT span_id, count(*) AS n FROM spans GROUP BY span_id")
    assert all(r["n"] == 1 for r in rows), [r for r in rows if r["n"] != 1][:5]
    assert sorted(r["span_id"] for r in rows) == sorted(acknowledged)
    assert "torn_tails=0" in server.stderr_tail(), "the log was cut back cleanly after the failed write"
