"""`sightline ship`: JSON log files to a server in batches, with a checkpoint and `--follow`.

A file of JSON lines and one plain line is shipped (the plain one as a message); lines added
later are shipped by the next run from the checkpoint, none twice; with `--follow`, lines
appended while it runs and the lines of a new file after a rotation (rename, then a new file at
the path) all arrive, once each; standard input works too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from conftest import _cleanup, sightline_bin
from test_monitor import start_server, write_config


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("ship")
    server = start_server(base, "ship", write_config(base / "sightline.toml", "# defaults\n"))
    yield server
    _cleanup(server)


def ship(srv, tmp_path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sightline_bin(), "ship", *args, "--url", srv.otlp_http_url,
                           "--checkpoint", str(tmp_path / "checkpoint.json")],
                          input=stdin, capture_output=True, timeout=60, cwd=tmp_path)


def lines(n: int, prefix: str) -> str:
    return "".join(json.dumps({"event": f"{prefix} {i}", "level": "info"}) + "\n" for i in range(n))


def bodies(srv, service: str) -> list[str]:
    return [r["body"] for r in srv.rows(f"SELECT body FROM logs WHERE service_name = '{service}' ORDER BY body")]


def test_a_file_is_shipped_and_a_second_run_sends_only_what_was_added(srv, tmp_path):
    log = tmp_path / "app.log"
    log.write_text(lines(3, "first") + "a plain line, not JSON\n")
    out = ship(srv, tmp_path, str(log), "--service", "ship-a")
    assert out.returncode == 0, out.stderr
    assert b"shipped 4 lines" in out.stderr, out.stderr
    assert srv.wait_rows("SELECT body FROM logs WHERE service_name = 'ship-a'", lambda r: len(r) == 4)
    assert "a plain line, not JSON" in bodies(srv, "ship-a")
    with log.open("a") as f:
        f.write(lines(2, "second"))
    again = ship(srv, tmp_path, str(log), "--service", "ship-a")
    assert again.returncode == 0 and b"shipped 2 lines" in again.stderr, again.stderr
    srv.wait_rows("SELECT body FROM logs WHERE service_name = 'ship-a'", lambda r: len(r) == 6)
    time.sleep(0.5)
    assert sorted(bodies(srv, "ship-a")) == sorted(
        [f"first {i}" for i in range(3)] + ["a plain line, not JSON"] + [f"second {i}" for i in range(2)])


def test_follow_keeps_up_with_appends_and_a_rotation(srv, tmp_path):
    log = tmp_path / "worker.log"
    log.write_text(lines(5, "before"))
    proc = subprocess.Popen([sightline_bin(), "ship", str(log), "--follow", "--service", "ship-f", "--url",
                             srv.otlp_http_url, "--checkpoint", str(tmp_path / "cp.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        srv.wait_rows("SELECT body FROM logs WHERE service_name = 'ship-f'", lambda r: len(r) == 5, timeout=15)
        with log.open("a") as f:
            f.write(lines(4, "appended"))
        srv.wait_rows("SELECT body FROM logs WHERE service_name = 'ship-f'", lambda r: len(r) == 9, timeout=15)
        with log.open("a") as f:
            f.write(lines(2, "last of the old file"))
        os.rename(log, tmp_path / "worker.log.1")
        log.write_text(lines(3, "rotated"))
        srv.wait_rows("SELECT body FROM logs WHERE service_name = 'ship-f'", lambda r: len(r) == 14, timeout=15)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    got = bodies(srv, "ship-f")
    expected = ([f"before {i}" for i in range(5)] + [f"appended {i}" for i in range(4)]
                + [f"last of the old file {i}" for i in range(2)] + [f"rotated {i}" for i in range(3)])
    assert sorted(got) == sorted(expected), got


def test_standard_input(srv, tmp_path):
    out = ship(srv, tmp_path, "-", "--service", "ship-stdin", stdin=lines(3, "piped").encode())
    assert out.returncode == 0, out.stderr
    srv.wait_rows("SELECT body FROM logs WHERE service_name = 'ship-stdin'", lambda r: len(r) == 3)


def test_a_structlog_apps_lines_piped_through_ship_appear_in_their_traces(srv, tmp_path):
    from conftest import APPS_DIR, VENV_BIN, free_port, wait_for
    import requests

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update({
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONUNBUFFERED": "1",
        "OTEL_SERVICE_NAME": "shop-structlog", "OTEL_TRACES_EXPORTER": "otlp", "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": srv.otlp_http_url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz",
    })
    app = subprocess.Popen([str(VENV_BIN / "opentelemetry-instrument"), str(VENV_BIN / "uvicorn"), "structlog_app:app",
                            "--app-dir", str(APPS_DIR), "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                           env=env, stdout=subprocess.PIPE, stderr=open(tmp_path / "app.err", "wb"),
                           stdin=subprocess.DEVNULL)
    shipper = subprocess.Popen([sightline_bin(), "ship", "-", "--service", "shop-structlog", "--url", srv.otlp_http_url],
                               stdin=app.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    app.stdout.close()  # the shipper holds the pipe now
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
                 timeout=30, what="the structlog app")
        for cart in ("c1", "c2"):
            assert requests.get(f"http://127.0.0.1:{port}/checkout/{cart}", timeout=10).status_code == 200
        rows = srv.wait_rows("SELECT trace_id, span_id FROM spans WHERE service_name = 'shop-structlog' "
                             "AND kind = 'server'", lambda r: len(r) == 2, timeout=20)
        srv.wait_rows("SELECT body FROM logs WHERE service_name = 'shop-structlog'", lambda r: len(r) == 4, timeout=20)
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=30)
        shipper.wait(timeout=30)
    assert shipper.returncode == 0, shipper.stderr.read()
    for row in rows:
        trace = srv.get(f"/api/v1/traces/{row['trace_id']}").json()
        logs = trace["logs"]
        assert sorted(l["body"] for l in logs) == ["checkout started", "inventory low"], trace
        assert {l["severity"] for l in logs} == {"info", "warn"}
        assert all(l["span_id"] for l in logs), logs


def test_429_and_503_are_retried_with_backoff_until_the_batch_is_taken(tmp_path):
    """A receiver that answers 503 (Retry-After: 1), then 429, then 200: ship waits, sends the same
    batch again, and the checkpoint moves only after the 200."""
    import gzip
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    answers = [(503, {"Retry-After": "1"}), (429, {}), (200, {})]
    bodies_seen: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            bodies_seen.append(gzip.decompress(body))
            status, headers = answers[min(len(bodies_seen), len(answers)) - 1]
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        log = tmp_path / "r.log"
        log.write_text(lines(3, "retried"))
        out = subprocess.run([sightline_bin(), "ship", str(log), "--url", f"http://127.0.0.1:{receiver.server_port}",
                              "--checkpoint", str(tmp_path / "cp.json")], capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert len(bodies_seen) == 3 and len(set(bodies_seen)) == 1, bodies_seen
        assert bodies_seen[-1].count(b"\n") == 3
        checkpoint = json.loads((tmp_path / "cp.json").read_text())
        assert list(checkpoint["files"].values())[0]["offset"] == log.stat().st_size
    finally:
        receiver.shutdown()
