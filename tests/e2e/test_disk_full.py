"""A full disk: ingest answers 503 with Retry-After, queries keep working, the write-ahead log is
cut back to its last intact record, and ingest resumes by itself once space returns.

No privilege is needed to run out of space: the server runs under a file-size limit
(RLIMIT_FSIZE) with SIGXFSZ ignored, both set before it is executed (an ignored signal stays
ignored across exec). The limit starts unlimited; the test lowers it with prlimit to just above
the current size of the log file, so the next log write fails part-way with EFBIG as it would on
a full disk, then lifts it again to model space returning. The flush interval is an hour, so no
segment write happens while the limit is low: only the log is written.
"""

from __future__ import annotations

import resource
import signal
import time
import uuid
from pathlib import Path

# The limit is set this far above the log's length: less than one record, so the next append
# writes part of its record, fails, and must be cut back.
PART_OF_A_RECORD = 1024


def span_body(service: str, n: int = 50) -> tuple[dict, list[str]]:
    now = time.time_ns()
    ids = [uuid.uuid4().hex[:16] for _ in range(n)]
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{"traceId": uuid.uuid4().hex, "spanId": sid, "name": "op", "kind": 2,
                                   "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000),
                                   "attributes": [{"key": "pad", "value": {"stringValue": "x" * 200}}]}
                                  for sid in ids]}]}]}, ids


def ignore_sigxfsz_without_a_file_size_limit() -> None:
    """Runs in the server's process before exec: a write past the limit fails with EFBIG instead
    of killing the process, and the limit starts unlimited."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def set_file_size_limit(pid: int, limit: int) -> None:
    """Sets the soft file-size limit of a running process, and checks that it took."""
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    assert resource.prlimit(pid, resource.RLIMIT_FSIZE) == (limit, resource.RLIM_INFINITY)


def log_file(data_dir: Path) -> Path:
    """The write-ahead log file being written: the largest (with no flush, the only one)."""
    files = sorted((data_dir / "wal").glob("*.wal"), key=lambda p: p.stat().st_size)
    assert files, f"no write-ahead log file in {data_dir / 'wal'}"
    return files[-1]


def signal_disposition(pid: int, signum: int) -> str:
    """'ignored' or 'not ignored', from /proc/PID/status."""
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigIgn:")), 16)
    return "ignored" if ignored & (1 << (signum - 1)) else "not ignored"


def test_a_full_disk_refuses_ingest_keeps_queries_and_recovers(sightline_factory):
    server = sightline_factory(["--flush-interval", "1h"], name="full",
                               preexec_fn=ignore_sigxfsz_without_a_file_size_limit).start()
    acknowledged: list[str] = []
    # Some spans in a segment (written by the flush at SIGTERM), the rest in the buffer.
    body, ids = span_body("in-a-segment")
    assert server.post_otlp("/v1/traces", body).status_code == 200
    acknowledged += ids
    server.stop()
    server.start()
    assert server.metric("sightline_segments", signal="spans") >= 1
    for _ in range(4):
        body, ids = span_body("in-the-buffer")
        assert server.post_otlp("/v1/traces", body).status_code == 200
        acknowledged += ids

    pid = server.proc.pid
    assert signal_disposition(pid, signal.SIGXFSZ) == "ignored"
    assert resource.prlimit(pid, resource.RLIMIT_FSIZE)[0] == resource.RLIM_INFINITY
    wal = log_file(server.data_dir)
    intact = wal.stat().st_size
    # The limit binds every file the server writes, its stderr too: that must stay below it.
    assert server.stderr_path.stat().st_size + 16_384 < intact, (server.stderr_path.stat().st_size, intact)

    # The disk is full: the next log write fails part-way through its record.
    set_file_size_limit(pid, intact + PART_OF_A_RECORD)
    body, ids = span_body("during")
    refused = server.post_otlp("/v1/traces", body)
    assert refused.status_code == 503 and refused.headers.get("Retry-After"), (refused.status_code, refused.text)
    assert refused.json()["error"]["code"] == "unavailable", refused.text
    assert server.metric("sightline_wal_write_errors_total") >= 1
    assert wal.stat().st_size == intact, "the failed write must be cut back to the last intact record"
    assert server.running()
    # Still full: the next request is refused too, and the log is still intact.
    again = server.post_otlp("/v1/traces", span_body("during")[0])
    assert again.status_code == 503 and again.json()["error"]["code"] == "unavailable", again.text
    assert wal.stat().st_size == intact
    assert server.metric("sightline_wal_write_errors_total") == 2

    # Queries still answer, with everything acknowledged so far; health says what is wrong.
    rows = server.rows("SELECT span_id FROM spans")
    assert sorted(r["span_id"] for r in rows) == sorted(acknowledged)
    health = server.get("/healthz").json()
    assert health["status"] == "failing", health
    checks = {c["name"]: c for c in health["checks"]}
    assert checks["write-ahead log"]["level"] == "fail" and "failed" in checks["write-ahead log"]["message"], checks

    # Space returns: ingest resumes without a restart.
    set_file_size_limit(pid, resource.RLIM_INFINITY)
    body, ids = span_body("after")
    resp = server.post_otlp("/v1/traces", body)
    assert resp.status_code == 200, resp.text
    acknowledged += ids
    assert wal.stat().st_size > intact
    assert server.rows("SELECT count(*) AS n FROM spans") == [{"n": len(acknowledged)}]
    # Health no longer fails, but remembers the trouble until the next start.
    health = server.get("/healthz").json()
    checks = {c["name"]: c for c in health["checks"]}
    assert checks["write-ahead log"]["level"] == "warn", checks
    assert "ingest works again" in checks["write-ahead log"]["message"], checks
    assert health["status"] != "failing", health

    # Nothing is corrupted: after a restart every acknowledged span is there exactly once.
    server.stop()
    server.start()
    rows = server.rows("SELECT span_id, count(*) AS n FROM spans GROUP BY span_id")
    assert all(r["n"] == 1 for r in rows), [r for r in rows if r["n"] != 1][:5]
    assert sorted(r["span_id"] for r in rows) == sorted(acknowledged)
    assert "torn_tails=0" in server.stderr_tail(), "the log was cut back cleanly after the failed write"
