"""`sightline logs --follow` prints lines that arrive after it started, once each, in order."""

import queue
import subprocess
import threading
import time
import uuid

from conftest import sightline_bin


def log_body(service: str, bodies: list[str], severity: int = 13) -> dict:
    now = time.time_ns()
    records = [{"timeUnixNano": str(now + i), "severityNumber": severity, "body": {"stringValue": b}}
               for i, b in enumerate(bodies)]
    return {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": records}],
    }]}


def test_logs_follow_streams_new_lines_once(sightline):
    service = f"follow-{uuid.uuid4().hex[:8]}"
    resp = sightline.post_otlp("/v1/logs", log_body(service, ["before follow"]))
    assert resp.status_code == 200, resp.text

    proc = subprocess.Popen(
        [sightline_bin(), "logs", "--url", sightline.api_url, "--service", service, "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: "queue.Queue[str]" = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()

    def next_line(timeout: float = 10.0) -> str:
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            raise AssertionError(f"no line within {timeout}s; stderr: {proc.stderr.read()}")

    try:
        assert "before follow" in next_line(), "the recent history is printed first"
        for round_ in range(2):
            bodies = [f"round {round_} line {i}" for i in range(3)]
            resp = sightline.post_otlp("/v1/logs", log_body(service, bodies))
            assert resp.status_code == 200, resp.text
            got = [next_line() for _ in bodies]
            for body, line in zip(bodies, got):
                assert body in line and "WARN" in line and f"[{service}]" in line, got
        # Nothing is printed twice: the next line must be the one sent next.
        resp = sightline.post_otlp("/v1/logs", log_body(service, ["last"]))
        assert resp.status_code == 200
        assert "last" in next_line()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
