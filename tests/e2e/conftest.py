"""Shared fixtures for the Sightline end-to-end tests.

The server under test is the binary named by the env var SIGHTLINE_BIN. Each
server runs on its own data folder with every listener on 127.0.0.1:0; the
ports it actually bound are read from the ready file it writes once all
listeners are bound and the write-ahead log has been replayed.

The browser tests use the `browser` and `page` fixtures: Playwright driving
Debian's Chromium (/usr/bin/chromium, installed by scripts/test.sh), never a
browser that Playwright downloads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

E2E_DIR = Path(__file__).resolve().parent
APPS_DIR = E2E_DIR / "apps"
# The venv's bin dir: opentelemetry-instrument, uvicorn and python live there.
VENV_BIN = Path(sys.executable).parent

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 30.0
STDERR_TAIL_CHARS = 8000

# Every server started in this session, so that a failing test can show their stderr.
_STARTED: list["SightlineServer"] = []

# Pages run DataFusion queries in a debug build on two shared cores: every browser assertion of
# every test file gets time, whichever files a run collects.
expect.set_options(timeout=20_000)

# The browser tests: Debian's Chromium, headless, on a laptop-sized screen.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--no-first-run"]
VIEWPORT = {"width": 1440, "height": 900}
# Screenshots of the UI (git-ignored): <page>.png from the tests, failed-<test>.png on a failure.
SCREENSHOT_DIR = E2E_DIR.parent / "artifacts" / "screenshots"
# What the browser said during a test (console errors, uncaught exceptions), shown when it fails.
_BROWSER_LOG = pytest.StashKey[list]()


def sightline_bin() -> str:
    path = os.environ.get("SIGHTLINE_BIN")
    if not path:
        pytest.fail(
            "SIGHTLINE_BIN is not set: point it at the sightline binary, "
            "e.g. SIGHTLINE_BIN=$HOME/.cache/sightline-target/debug/sightline",
            pytrace=False,
        )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"SIGHTLINE_BIN={path!r} is not an executable file", pytrace=False)
    return path


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago (bind to 0, read it, close), and never one this session
    handed out before: two apps asking back to back do not both get the same one."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def wait_for(fn: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Call fn until it returns a truthy value and return that value.

    Exceptions raised by fn (e.g. an AssertionError or a connection error)
    count as "not yet". On timeout, fail with the last value or exception.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    last_exc: BaseException | None = None
    while True:
        try:
            last = fn()
            last_exc = None
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last exception: {last_exc!r}" if last_exc is not None else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout}s waiting for {what or fn}: {detail}") from last_exc
        time.sleep(interval)


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server process: ours without SIGHTLINE_* (but SIGHTLINE_BIN), plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_") or k == "SIGHTLINE_BIN"}
    env.setdefault("RUST_BACKTRACE", "1")
    env.update(extra or {})
    return env


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(metric name, frozenset of (label, value)): value}."""
    samples: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?', line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples


def rows_as_dicts(result: dict) -> list[dict]:
    """Turn a /api/v1/query answer into a list of {column: value} dicts."""
    names = [c["name"] for c in result["columns"]]
    return [dict(zip(names, row)) for row in result["rows"]]


class SightlineServer:
    """One `sightline serve` process on a given data folder."""

    def __init__(self, data_dir: Path | None, log_dir: Path, extra_args: list[str] | None = None,
                 name: str = "sightline", cwd: Path | None = None, env: dict[str, str] | None = None,
                 address_flags: bool = True, preexec_fn: Callable[[], None] | None = None):
        """data_dir=None starts the server without --data-dir (the env or sightline.toml decides);
        cwd is its working folder (default: log_dir), env is added to its environment, where
        every other SIGHTLINE_* variable of the test process is removed. address_flags=False
        leaves out --otlp-grpc/--otlp-http/--listen 127.0.0.1:0 (the env or the file must say 0).
        preexec_fn runs in the child before the server is executed, at every start (e.g. to set
        resource limits or signal dispositions that the server inherits)."""
        self.bin = sightline_bin()
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.log_dir = Path(log_dir)
        self.extra_args = list(extra_args or [])
        self.name = name
        self.cwd = Path(cwd) if cwd is not None else self.log_dir
        self.env = dict(env or {})
        self.address_flags = address_flags
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready: dict = {}
        self.stderr_path: Path | None = None
        self.session = requests.Session()
        if self.data_dir is not None:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # ---- process control -------------------------------------------------

    def start(self) -> "SightlineServer":
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        ready_file = self.log_dir / f"{self.name}-ready-{self.starts}.json"
        if ready_file.exists():
            ready_file.unlink()
        self.stderr_path = self.log_dir / f"{self.name}-stderr-{self.starts}.log"
        stdout_path = self.log_dir / f"{self.name}-stdout-{self.starts}.log"
        cmd = [
            self.bin, "serve",
            *(["--data-dir", str(self.data_dir)] if self.data_dir is not None else []),
            *(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0"]
              if self.address_flags else []),
            "--ready-file", str(ready_file),
            *self.extra_args,
        ]
        env = server_env(self.env)
        with open(self.stderr_path, "wb") as err, open(stdout_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                         cwd=str(self.cwd), preexec_fn=self.preexec_fn)
        _STARTED.append(self)

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            code = self.proc.poll()
            if code is not None:
                pytest.fail(
                    f"{self.name} exited with code {code} before it was ready\n"
                    f"command: {' '.join(cmd)}\n--- stderr ---\n{self.stderr_tail()}",
                    pytrace=False,
                )
            if ready_file.exists():
                try:
                    self.ready = json.loads(ready_file.read_text())
                    break
                except (json.JSONDecodeError, OSError):
                    pass  # written atomically per the contract, but be tolerant
            if time.monotonic() >= deadline:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(
                    f"{self.name} did not write {ready_file} within {READY_TIMEOUT_S}s\n"
                    f"--- stderr ---\n{self.stderr_tail()}",
                    pytrace=False,
                )
            time.sleep(0.05)
        for key in ("otlp_grpc", "otlp_http", "listen"):
            assert key in self.ready, f"ready file lacks {key!r}: {self.ready}"
        return self

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; the server must exit 0 within the timeout."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"{self.name} did not exit within {timeout}s of SIGTERM\n--- stderr ---\n{self.stderr_tail()}"
                )
        code = self.proc.returncode
        assert code == 0, f"{self.name} exited with {code} after SIGTERM\n--- stderr ---\n{self.stderr_tail()}"
        return code

    def kill(self) -> None:
        """SIGKILL, no chance to flush anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, chars: int = STDERR_TAIL_CHARS) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return "(no stderr captured)"
        text = self.stderr_path.read_text(errors="replace")
        return text[-chars:] if len(text) > chars else text

    # ---- addresses -------------------------------------------------------

    @property
    def api_url(self) -> str:
        return "http://" + self.ready["listen"]

    @property
    def otlp_http_url(self) -> str:
        return "http://" + self.ready["otlp_http"]

    @property
    def otlp_grpc_endpoint(self) -> str:
        """host:port of the OTLP/gRPC listener (prefix with http:// for SDK exporters)."""
        return self.ready["otlp_grpc"]

    # ---- API helpers -----------------------------------------------------

    def query_raw(self, sql: str) -> requests.Response:
        return self.session.post(f"{self.api_url}/api/v1/query", json={"sql": sql}, timeout=HTTP_TIMEOUT_S)

    def query(self, sql: str) -> dict:
        """POST /api/v1/query and return the JSON answer; fail on a non-200."""
        resp = self.query_raw(sql)
        assert resp.status_code == 200, f"query failed ({resp.status_code}): {resp.text}\nSQL: {sql}"
        return resp.json()

    def rows(self, sql: str) -> list[dict]:
        """Query and return rows as dicts keyed by column name."""
        return rows_as_dicts(self.query(sql))

    def metrics(self) -> dict[tuple[str, frozenset], float]:
        """GET /metrics, parsed (see parse_prometheus)."""
        resp = self.get("/metrics")
        assert resp.status_code == 200, f"/metrics answered {resp.status_code}: {resp.text}"
        return parse_prometheus(resp.text)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics, e.g. metric("sightline_segments", signal="spans"); fails if absent."""
        samples = self.metrics()
        key = (name, frozenset(labels.items()))
        assert key in samples, f"/metrics has no {name}{labels}; it has {sorted(k for k in samples if k[0] == name)}"
        return samples[key]

    def get(self, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
        return self.session.get(f"{self.api_url}{path}", **kwargs)

    def post_otlp(self, signal_path: str, body: bytes | str | dict, content_type: str = "application/json",
                  headers: dict | None = None) -> requests.Response:
        """POST to the OTLP/HTTP listener, e.g. post_otlp('/v1/traces', {...})."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        h = {"Content-Type": content_type}
        h.update(headers or {})
        return self.session.post(f"{self.otlp_http_url}{signal_path}", data=body, headers=h, timeout=HTTP_TIMEOUT_S)

    def wait_for(self, fn: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        return wait_for(fn, timeout=timeout, what=what)

    def wait_rows(self, sql: str, predicate: Callable[[list[dict]], bool] = bool, timeout: float = 20.0) -> list[dict]:
        """Poll a query until predicate(rows) holds; return the rows."""
        def attempt():
            rows = self.rows(sql)
            return rows if predicate(rows) else None
        return wait_for(attempt, timeout=timeout, what=f"rows of {sql!r}")

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run `$SIGHTLINE_BIN VERB --url API ARGS...` and return the finished process."""
        verb, rest = args[0], list(args[1:])
        cmd = [self.bin, verb, "--url", self.api_url, *rest]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _cleanup(server: SightlineServer) -> None:
    """Teardown: SIGTERM, and it must exit 0 in time (assert)."""
    if server.running():
        server.stop()


@pytest.fixture(scope="session")
def sightline(tmp_path_factory) -> SightlineServer:
    """The shared Sightline server for the whole session."""
    base = tmp_path_factory.mktemp("sightline")
    server = SightlineServer(base / "data", base / "logs", name="shared").start()
    yield server
    _cleanup(server)


@pytest.fixture
def sightline_factory(tmp_path):
    """Start extra servers (own data folder unless given); all are stopped at teardown."""
    servers: list[SightlineServer] = []

    def make(extra_args: list[str] | None = None, data_dir: Path | None = None, name: str = "extra",
             cwd: Path | None = None, env: dict[str, str] | None = None,
             data_dir_flag: bool = True, address_flags: bool = True,
             preexec_fn: Callable[[], None] | None = None) -> SightlineServer:
        """data_dir_flag=False starts it without --data-dir; cwd, env, address_flags, preexec_fn as
        in SightlineServer."""
        idx = len(servers)
        srv = SightlineServer((data_dir or tmp_path / f"{name}-{idx}-data") if data_dir_flag else None,
                              tmp_path / "logs", extra_args=extra_args, name=f"{name}-{idx}", cwd=cwd, env=env,
                              address_flags=address_flags, preexec_fn=preexec_fn)
        servers.append(srv)
        return srv

    yield make
    errors = []
    for srv in servers:
        try:
            _cleanup(srv)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "\n\n".join(errors)


# Convenience fixtures matching the names used in the docs of this suite.
@pytest.fixture(scope="session")
def api_url(sightline) -> str:
    return sightline.api_url


@pytest.fixture(scope="session")
def otlp_http_url(sightline) -> str:
    return sightline.otlp_http_url


@pytest.fixture(scope="session")
def otlp_grpc_endpoint(sightline) -> str:
    return sightline.otlp_grpc_endpoint


@pytest.fixture(scope="session")
def query(sightline) -> Callable[[str], dict]:
    return sightline.query


# ---- browser ---------------------------------------------------------------


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium for the whole session (Playwright's sync API)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: scripts/test.sh installs it (apt-get install chromium)", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, request):
    """A fresh page in its own browser context (no cookies or localStorage from other tests).

    The clock of the page is UTC so that times in the UI and in datetime-local inputs are those
    of the server. An uncaught JavaScript exception fails the test; on a failure, the page's
    console and a screenshot (tests/artifacts/screenshots/failed-<test>.png) are kept."""
    context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-US")
    page = context.new_page()
    log: list[str] = []
    uncaught: list[str] = []
    request.node.stash[_BROWSER_LOG] = log

    def on_console(msg):
        if msg.type in ("error", "warning"):
            log.append(f"console.{msg.type}: {msg.text} ({page.url})")

    def on_page_error(exc):
        uncaught.append(f"{exc} ({page.url})")
        log.append(f"uncaught exception: {exc} ({page.url})")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
        try:
            page.screenshot(path=str(SCREENSHOT_DIR / f"failed-{name}.png"), full_page=True)
        except Exception:  # noqa: BLE001 - a screenshot is a help, not a requirement
            pass
    context.close()
    assert not uncaught, "uncaught JavaScript exceptions on the page:\n" + "\n".join(uncaught)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failing test, attach the stderr of every server that is or was running, and what the
    browser said; keep each phase's report on the item (rep_setup, rep_call) for fixtures."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    if report.failed:
        for srv in dict.fromkeys(_STARTED):
            report.sections.append((f"{srv.name} stderr (start #{srv.starts})", srv.stderr_tail()))
        browser_log = item.stash.get(_BROWSER_LOG, None)
        if browser_log:
            report.sections.append(("browser console", "\n".join(browser_log)))
