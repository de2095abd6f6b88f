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
