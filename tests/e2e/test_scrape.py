"""Scraping Prometheus targets (`[[scrape]]`), end to end, against real prometheus_client output.

The targets are `apps/prom_app.py`, a WSGI app instrumented with prometheus_client whose every
value follows from the requests the test sends (the durations observed are request parameters,
not measured times), so the test knows what each row must hold:

- one process (wsgiref), scraped twice by one server: as text 0.0.4 (`/metrics/text`, service
  `shop-text`) and as OpenMetrics 1.0 (`/metrics/openmetrics`, service `shop-om`). Counters,
  gauges, histograms (finite `le` bounds, non-cumulative counts with the +Inf bucket last, count,
  sum), summaries (count, sum, quantiles), info and enum metrics are stored with the exact values
  produced, the sample labels plus the target's `labels` as attributes (an escaped label value
  read back whole), units from `# UNIT` or from a `_seconds`/`_bytes` name, `_created` as the
  series' start time, `service.instance.id` = host:port, and in OpenMetrics the exemplars with
  their trace and span ids, value, time and other labels;
- each scrape also stores `up`, `scrape_duration_seconds` and `scrape_samples_scraped`, and later
  scrapes pick up new values (interval 1s);
- gunicorn with 2 workers in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, MultiProcessCollector):
  requests served by both workers are summed into one counter and one histogram; a `livesum`
  gauge counts both workers and an `all` gauge keeps one series per worker (`pid`);
- targets that fail (nothing listening, HTTP 500, a body that does not parse) are `down` in
  `GET /api/v1/targets` with the reason (the line number for a parse error), store `up` = 0 and
  nothing from the bad body, warn in `/healthz` (check "scrape", naming the url) and show on their
  service page;
- configuration mistakes in `[[scrape]]` are refused at start, naming the key.

Waiting is always by polling the API (wait_for), never by sleeping.
"""

from __future__ import annotations

import bisect
import calendar
import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from conftest import APPS_DIR, VENV_BIN, SightlineServer, _cleanup, free_port, wait_for
from test_monitor import assert_refused, run_serve

NS = 1_000_000_000
INTERVAL = "1s"
WAIT_S = 30.0  # for a value to show up in the stored rows: many 1-second scrapes
APP_START_TIMEOUT_S = 30.0
APP_STOP_TIMEOUT_S = 15.0

# What prom_app.py exposes (kept in step with the app by test_the_app_exposes_what_the_test_expects).
BUCKETS = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
QUANTILES = [0.5, 0.9]
BUILD = {"version": "1.4.2", "commit": "9f8e7d6"}
STATES = ("starting", "serving", "draining")
TEMPERATURE = 21.5
GARBAGE_LINE = 4

# The single-process scenario: (route, duration observed, size observed, queue depth set or None).
ODD_ROUTE = '/odd "q" \\ path\nx'  # a quote, a backslash and a newline: escaped in the exposition
SCENARIO = [
    ("/checkout", 0.03, 120, None),
    ("/checkout", 0.07, 80, None),
    ("/checkout", 0.2, 310, 4),
    ("/checkout", 0.25, 64, None),  # on a bucket bound: counted in le="0.25"
    ("/checkout", 0.3, 90, None),
    ("/checkout", 0.3, 45, None),
    ("/checkout", 0.8, 1000, None),
    ("/cart", 2.0, 2048, None),
    ("/cart", 3.0, 10, 7),
    (ODD_ROUTE, 0.07, 1, None),
]
FINAL_DEPTH = 7.0
TEMP_SET = -3.5
# Requests with exemplars, route "traced": (duration, trace_id, span_id, user label or None).
TRACED = [
    (0.3, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", None),
    (4.0, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331", "u1"),
]
TRACED_SIZE = 100  # the app's default size

TEXT_LABELS = {"env": "e2e", "team": "shop"}
OM_LABELS = {"team": "shop-om"}

TARGET_KEYS = {"url", "service", "health", "last_scrape", "last_error", "last_duration_ms", "samples"}


# ----------------------------------------------------------------- helpers


def parse_time_ns(text: str) -> int:
    """RFC 3339 in UTC with up to nine fraction digits -> ns since the epoch."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|\+00:00)", text)
    assert m, f"not an RFC 3339 UTC time: {text!r}"
    secs = calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0))
    return secs * NS + int((m.group(7) or "").ljust(9, "0"))


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def non_cumulative(observations: list[float]) -> list[int]:
    """Counts per bucket (value <= bound), the +Inf bucket last: len(BUCKETS) + 1 entries."""
    counts = [0] * (len(BUCKETS) + 1)
    for v in observations:
        counts[bisect.bisect_left(BUCKETS, v)] += 1
    return counts


def close(a: float | None, b: float) -> bool:
    return a is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def eventually(check: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
    """Run check (which asserts) until it passes; on timeout its last AssertionError is shown."""
    return wait_for(lambda: check() or True, timeout=timeout, interval=0.25, what=what)


def scrape_table(url: str, service: str, labels: dict[str, str] | None = None, interval: str = INTERVAL,
                 timeout: str = INTERVAL) -> str:
    text = f'[[scrape]]\nurl = "{url}"\nservice = "{service}"\ninterval = "{interval}"\ntimeout = "{timeout}"\n'
    if labels:
        text += "labels = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in labels.items()) + " }\n"
    return text + "\n"


def start_sightline(base: Path, name: str, config_text: str) -> SightlineServer:
    config = base / f"{name}.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(config_text)
    return SightlineServer(base / f"{name}-data", base / "logs", extra_args=["--config", str(config)],
                           name=name).start()


def metric_rows(srv: SightlineServer, service: str, name: str) -> list[dict]:
    return srv.rows(f"SELECT * FROM metrics WHERE service_name = '{service}' AND name = '{name}' ORDER BY time")


def series_key(attributes: dict) -> tuple:
    return tuple(sorted(attributes.items()))


def latest(srv: SightlineServer, service: str, name: str) -> dict[tuple, dict]:
    """The newest row of each series (by its attributes) of one metric of one service."""
    out: dict[tuple, dict] = {}
    for row in metric_rows(srv, service, name):
        out[series_key(json.loads(row["attributes"]))] = row  # ordered by time: the last wins
    return out


def one(srv: SightlineServer, service: str, name: str, **labels: str) -> dict:
    """The newest row of the series with exactly these attributes (fails if there is none)."""
    rows = latest(srv, service, name)
    key = series_key(labels)
    assert key in rows, f"no {name}{labels} for {service}; series: {sorted(rows)}"
    return rows[key]


def json_list(text: str | None) -> list:
    return [] if text in (None, "") else json.loads(text)


def targets(srv: SightlineServer) -> dict[str, dict]:
    resp = srv.get("/api/v1/targets")
    assert resp.status_code == 200, f"/api/v1/targets: {resp.status_code} {resp.text}"
    body = resp.json()
    assert set(body) >= {"targets"}, body
    return {t["url"]: t for t in body["targets"]}


def scrape_checks(srv: SightlineServer) -> list[dict]:
    resp = srv.get("/healthz")
    assert resp.status_code in (200, 503), resp.text
    return [c for c in resp.json()["checks"] if c["name"] == "scrape"]


def visible_text(page_html: str) -> str:
    """The text a reader sees: tags removed, entities decoded, whitespace collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page_html)))


def sample_lines(body: str) -> list[str]:
    return [ln for ln in body.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


# ----------------------------------------------------------------- the apps


@dataclass
class PromApp:
    """apps/prom_app.py in one process (wsgiref), on a port it picks."""
    log_dir: Path
    name: str = "prom-app"
    port: int = 0
    proc: subprocess.Popen | None = None
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def start(self) -> "PromApp":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready = self.log_dir / f"{self.name}-ready.json"
        ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, str(APPS_DIR / "prom_app.py"), "--port", "0", "--ready-file", str(ready)]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.port = wait_ready_file(self.proc, ready, self.output)["port"]
        return self

    def work(self, route: str, duration: float, size: float | None = None, **extra) -> dict:
        params = {"route": route, "duration": repr(duration), **{k: str(v) for k, v in extra.items()}}
        if size is not None:
            params["size"] = str(size)
        resp = self.session.get(f"{self.url}/work", params=params, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.json()

    def exposition(self, path: str) -> requests.Response:
        resp = self.session.get(f"{self.url}{path}", timeout=10)
        assert resp.status_code == 200, resp.text
        return resp

    def stop(self) -> None:
        stop_process(self.proc, self.output)

    def output(self) -> str:
        try:
            return f"--- {self.name} output ---\n" + self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


@dataclass
class GunicornApp:
    """apps/prom_app.py under gunicorn, 2 sync workers, multiprocess mode."""
    base: Path
    name: str = "prom-gunicorn"
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / f"{self.name}.log"

    def start(self) -> "GunicornApp":
        gunicorn = VENV_BIN / "gunicorn"
        if not gunicorn.exists():
            pytest.fail(f"{gunicorn} is missing: install tests/e2e/requirements.txt into the venv", pytrace=False)
        multiproc_dir = self.base / "prometheus-multiproc"
        shutil.rmtree(multiproc_dir, ignore_errors=True)
        multiproc_dir.mkdir(parents=True)
        ready = self.base / f"{self.name}-ready.json"
        ready.unlink(missing_ok=True)
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc_dir), PROM_APP_READY_FILE=str(ready),
                   PYTHONUNBUFFERED="1")
        cmd = [str(gunicorn), "-c", str(APPS_DIR / "prom_app.py"), "--chdir", str(APPS_DIR),
               "--workers", "2", "--bind", "127.0.0.1:0", "--graceful-timeout", "5", "prom_app:app"]
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.port = wait_ready_file(self.proc, ready, self.output)["port"]

        # Both workers have imported the app (each adds 1 to the livesum gauge).
        def both_alive():
            text = requests.get(f"{self.url}/metrics", timeout=5).text
            alive = [s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == "app_workers_alive"]
            assert alive == [2.0], alive
        eventually(both_alive, timeout=APP_START_TIMEOUT_S, what="both gunicorn workers alive")
        return self

    def stop(self) -> None:
        stop_process(self.proc, self.output)

    def output(self) -> str:
        try:
            return f"--- {self.name} output ---\n" + self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""


def wait_ready_file(proc: subprocess.Popen, ready: Path, output: Callable[[], str]) -> dict:
    deadline = time.monotonic() + APP_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the app exited with {proc.returncode} before it was ready\n{output()}", pytrace=False)
        if ready.exists():
            try:
                return json.loads(ready.read_text())
            except (json.JSONDecodeError, OSError):
                pass
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"the app did not write {ready} within {APP_START_TIMEOUT_S}s\n{output()}", pytrace=False)
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen | None, output: Callable[[], str]) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=APP_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the app did not exit after SIGTERM\n{output()}")


# ------------------------------------------------- one process, text and OpenMetrics


@dataclass
class Single:
    srv: SightlineServer
    app: PromApp
    text_url: str
    om_url: str
    # ns windows around each traced request: its exemplar's time lies within
    traced_windows: list[tuple[int, int]]
    # the app's own expositions, read after the scenario (nothing changes afterwards)
    text_body: str
    om_body: str
    created_ns: dict[tuple, int]  # (family, sorted labels) -> _created in ns


def created_times(text_body: str) -> dict[tuple, int]:
    """`X_created` samples of a text 0.0.4 exposition -> {(X, labels): ns}."""
    out = {}
    for family in text_string_to_metric_families(text_body):
        for s in family.samples:
            if s.name.endswith("_created"):
                out[(s.name[: -len("_created")], series_key(s.labels))] = round(s.value * NS)
    return out


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    base = tmp_path_factory.mktemp("scrape-single")
    app = PromApp(base / "logs").start()
    srv = None
    try:
        for route, duration, size, depth in SCENARIO:
            extra = {"depth": depth} if depth is not None else {}
            app.work(route, duration, size, **extra)
        windows = []
        for duration, trace_id, span_id, user in TRACED:
            extra = {"trace_id": trace_id, "span_id": span_id, **({"user": user} if user else {})}
            before = time.time_ns()
            app.work("traced", duration, **extra)
            windows.append((before, time.time_ns()))
        app.work("/checkout-temp", 0.01, 1, temp=TEMP_SET)
        text_body = app.exposition("/metrics/text").text
        om_body = app.exposition("/metrics/openmetrics").text
        text_url, om_url = f"{app.url}/metrics/text", f"{app.url}/metrics/openmetrics"
        srv = start_sightline(base, "scrape-single", scrape_table(text_url, "shop-text", TEXT_LABELS)
                              + scrape_table(om_url, "shop-om", OM_LABELS))
        yield Single(srv=srv, app=app, text_url=text_url, om_url=om_url, traced_windows=windows,
                     text_body=text_body, om_body=om_body, created_ns=created_times(text_body))
    finally:
        if srv is not None:
            _cleanup(srv)
        app.stop()


def all_requests() -> list[tuple[str, float, float]]:
    """(route, duration, size) of every /work request of the single-process scenario, in order."""
    out = [(r, d, s) for r, d, s, _ in SCENARIO]
    out += [("traced", d, TRACED_SIZE) for d, *_ in TRACED]
    out.append(("/checkout-temp", 0.01, 1))
    return out


def durations_of(route: str) -> list[float]:
    return [d for r, d, _ in all_requests() if r == route]


def test_the_app_exposes_what_the_test_expects(single):
    """The app's own text exposition agrees with the numbers the test derives from its scenario,
    so a failure below is the scraper's."""
    fams = {f.name: f for f in text_string_to_metric_families(single.text_body)}
    counter = {s.labels["route"]: s.value for s in fams["app_requests"].samples if s.name == "app_requests_total"}
    assert counter == {r: float(len(durations_of(r))) for r in {r for r, _, _ in all_requests()}}, counter
    buckets = [s for s in fams["app_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["route"] == "/checkout"]
    assert [float(s.labels["le"]) for s in buckets] == BUCKETS + [math.inf]
    cumulative = [int(s.value) for s in buckets]
    assert [b - a for a, b in zip([0] + cumulative, cumulative)] == non_cumulative(durations_of("/checkout"))
    assert "# UNIT app_temperature_celsius celsius" in single.om_body
    assert single.om_body.rstrip("\n").endswith("# EOF")
    assert "trace_id=\"" + TRACED[0][1] + "\"" in single.om_body  # exemplars are there in OpenMetrics


@pytest.mark.parametrize("service", ["shop-text", "shop-om"])
def test_counters_are_stored_with_the_exact_counts(single, service):
    labels = TEXT_LABELS if service == "shop-text" else OM_LABELS
    srv = single.srv

    def check():
        for route in ("/checkout", "/cart", ODD_ROUTE, "traced"):
            row = one(srv, service, "app_requests_total", route=route, method="GET", **labels)
            assert row["type"] == "sum", row
            assert row["monotonic"] is True, row
            assert row["temporality"] == "cumulative", row
            assert row["value"] == len(durations_of(route)), (route, row["value"])
            assert row["unit"] in (None, ""), row["unit"]
            # _created is the series' start, not a row of its own.
            created = single.created_ns[("app_requests", series_key({"route": route, "method": "GET"}))]
            assert row["start_time"] is not None, row
            assert abs(parse_time_ns(row["start_time"]) - created) < 1_000_000, (row["start_time"], created)
            assert parse_time_ns(row["time"]) >= parse_time_ns(row["start_time"]), row
            assert json.loads(row["resource_attributes"]).get("service.instance.id") == single.app.instance, row
        names = {r["name"] for r in srv.rows(f"SELECT DISTINCT name FROM metrics WHERE service_name = '{service}'")}
        assert not {n for n in names if n.endswith("_created")}, f"_created stored as rows: {names}"
        assert "app_requests" not in names, names
    eventually(check, what=f"{service} counters")


def test_an_escaped_label_value_is_read_back_whole(single):
    """`route="/odd \\"q\\" \\\\ path\\nx"` in the exposition is the route with a quote, a
    backslash and a newline, in both formats."""
    for service, labels in (("shop-text", TEXT_LABELS), ("shop-om", OM_LABELS)):
        eventually(lambda: one(single.srv, service, "app_requests_total", route=ODD_ROUTE, method="GET", **labels),
                   what=f"{service} odd route")


@pytest.mark.parametrize("service", ["shop-text", "shop-om"])
def test_histograms_are_stored_with_bounds_non_cumulative_counts_count_and_sum(single, service):
    labels = TEXT_LABELS if service == "shop-text" else OM_LABELS
    srv = single.srv

    def check():
        for route in ("/checkout", "/cart", ODD_ROUTE, "traced"):
            observed = durations_of(route)
            row = one(srv, service, "app_request_duration_seconds", route=route, **labels)
            assert row["type"] == "histogram", row
            assert row["temporality"] == "cumulative", row
            assert row["unit"] == "s", row["unit"]
            assert row["bucket_bounds"] == BUCKETS, row["bucket_bounds"]
            assert row["bucket_counts"] == non_cumulative(observed), (route, row["bucket_counts"])
            assert len(row["bucket_counts"]) == len(row["bucket_bounds"]) + 1
            assert row["count"] == len(observed), row["count"]
            assert close(row["sum"], sum(observed)), (row["sum"], sum(observed))
            created = single.created_ns[("app_request_duration_seconds", series_key({"route": route}))]
            assert abs(parse_time_ns(row["start_time"]) - created) < 1_000_000, (row["start_time"], created)
        names = {r["name"] for r in srv.rows(f"SELECT DISTINCT name FROM metrics WHERE service_name = '{service}'")}
        assert not {n for n in names if n.startswith("app_request_duration_seconds_")}, \
            f"histogram parts stored as metrics of their own: {names}"
    eventually(check, what=f"{service} histograms")


@pytest.mark.parametrize("service", ["shop-text", "shop-om"])
def test_summaries_are_stored_with_count_sum_and_quantiles(single, service):
    labels = TEXT_LABELS if service == "shop-text" else OM_LABELS
    srv = single.srv
    sizes = [s for _, _, s in all_requests()]
    durations = [d for _, d, _ in all_requests()]

    def check():
        # prometheus_client's Summary: count and sum, no quantiles.
        size = one(srv, service, "app_response_size_bytes", **labels)
        assert size["type"] == "summary", size
        assert size["unit"] == "By", size["unit"]
        assert size["count"] == len(sizes) and close(size["sum"], sum(sizes)), (size["count"], size["sum"])
        assert json_list(size["quantiles"]) == [], size["quantiles"]
        created = single.created_ns[("app_response_size_bytes", series_key({}))]
        assert abs(parse_time_ns(size["start_time"]) - created) < 1_000_000, (size["start_time"], created)
        # A summary with quantiles (a custom collector): no `quantile` attribute, quantiles in order.
        lat = one(srv, service, "app_batch_latency_seconds", **labels)
        assert lat["type"] == "summary" and lat["unit"] == "s", lat
        assert lat["count"] == len(durations) and close(lat["sum"], sum(durations)), (lat["count"], lat["sum"])
        quantiles = sorted(json_list(lat["quantiles"]), key=lambda q: q["quantile"])
        assert [q["quantile"] for q in quantiles] == QUANTILES, quantiles
        for q in quantiles:
            assert close(q["value"], nearest_rank(durations, q["quantile"])), quantiles
    eventually(check, what=f"{service} summaries")


@pytest.mark.parametrize("service", ["shop-text", "shop-om"])
def test_gauges_info_and_enum_are_gauges(single, service):
    labels = TEXT_LABELS if service == "shop-text" else OM_LABELS
    srv = single.srv

    def check():
        depth = one(srv, service, "app_queue_depth", **labels)
        assert (depth["type"], depth["value"]) == ("gauge", FINAL_DEPTH), depth
        assert depth["unit"] in (None, ""), depth["unit"]
        alive = one(srv, service, "app_workers_alive", **labels)
        assert (alive["type"], alive["value"]) == ("gauge", 1.0), alive
        # Info: `# TYPE app_build info` (OpenMetrics) or `# TYPE app_build_info gauge` (text).
        info = one(srv, service, "app_build_info", **BUILD, **labels)
        assert (info["type"], info["value"]) == ("gauge", 1.0), info
        # Enum: a stateset (OpenMetrics) or a gauge (text): one series per state, 1 for the current one.
        states = {dict(k)["app_state"]: r["value"] for k, r in latest(srv, service, "app_state").items()}
        assert states == {s: (1.0 if s == "serving" else 0.0) for s in STATES}, states
        assert {r["type"] for r in latest(srv, service, "app_state").values()} == {"gauge"}
    eventually(check, what=f"{service} gauges")


def test_units_come_from_unit_lines_or_from_the_name(single):
    srv = single.srv

    def check():
        om = one(srv, "shop-om", "app_temperature_celsius", **OM_LABELS)
        assert (om["type"], om["value"], om["unit"]) == ("gauge", TEMP_SET, "celsius"), om
        # Text 0.0.4 has no `# UNIT`, and `_celsius` is not a suffix the scraper knows.
        text = one(srv, "shop-text", "app_temperature_celsius", **TEXT_LABELS)
        assert (text["type"], text["value"]) == ("gauge", TEMP_SET) and text["unit"] in (None, ""), text
        # _seconds (a histogram family) and _bytes (a summary family) in both formats.
        for service, labels in (("shop-text", TEXT_LABELS), ("shop-om", OM_LABELS)):
            assert one(srv, service, "app_request_duration_seconds", route="/cart", **labels)["unit"] == "s"
            assert one(srv, service, "app_response_size_bytes", **labels)["unit"] == "By"
    eventually(check, what="units")


def test_openmetrics_exemplars_are_kept_with_their_trace(single):
    srv = single.srv
    (d_a, trace_a, span_a, _), (d_b, trace_b, span_b, user_b) = TRACED
    (a0, a1), (b0, b1) = single.traced_windows

    def in_window(ns: int, window: tuple[int, int]) -> bool:
        return window[0] - 1_000_000 <= ns <= window[1] + 1_000_000

    def check():
        # The counter keeps the last exemplar of its series (prometheus_client replaces it).
        counter = one(srv, "shop-om", "app_requests_total", route="traced", method="GET", **OM_LABELS)
        ex = json_list(counter["exemplars"])
        assert len(ex) == 1, ex
        assert (ex[0]["trace_id"], ex[0]["span_id"], ex[0]["value"]) == (trace_b, span_b, 1.0), ex
        assert ex[0]["attributes"] == {"user": user_b}, ex
        assert in_window(ex[0]["time_ns"], (b0, b1)), (ex[0]["time_ns"], b0, b1)
        # The histogram: one exemplar per bucket that has one (le=0.5 and +Inf).
        hist = one(srv, "shop-om", "app_request_duration_seconds", route="traced", **OM_LABELS)
        ex = sorted(json_list(hist["exemplars"]), key=lambda e: e["value"])
        assert [(e["trace_id"], e["span_id"], e["value"]) for e in ex] == \
            [(trace_a, span_a, d_a), (trace_b, span_b, d_b)], ex
        assert [e["attributes"] for e in ex] == [{}, {"user": user_b}], ex
        assert in_window(ex[0]["time_ns"], (a0, a1)) and in_window(ex[1]["time_ns"], (b0, b1)), ex
        # Series without exemplars have none, and text 0.0.4 never carries any.
        plain = one(srv, "shop-om", "app_requests_total", route="/cart", method="GET", **OM_LABELS)
        assert json_list(plain["exemplars"]) == [], plain["exemplars"]
        text = one(srv, "shop-text", "app_request_duration_seconds", route="traced", **TEXT_LABELS)
        assert json_list(text["exemplars"]) == [], text["exemplars"]
    eventually(check, what="exemplars")


def test_every_row_carries_the_config_labels_and_the_instance(single):
    srv = single.srv

    def check():
        for service, labels in (("shop-text", TEXT_LABELS), ("shop-om", OM_LABELS)):
            rows = srv.rows(f"SELECT name, attributes, resource_attributes FROM metrics "
                            f"WHERE service_name = '{service}' AND name LIKE 'app_%'")
            assert rows, service
            for row in rows:
                attrs = json.loads(row["attributes"])
                assert {k: attrs.get(k) for k in labels} == labels, (service, row)
                assert "le" not in attrs and "quantile" not in attrs, row
                assert json.loads(row["resource_attributes"]).get("service.instance.id") == single.app.instance, row
            others = {k for r in rows for k in json.loads(r["attributes"])} - set(labels)
            assert others <= {"route", "method", "version", "commit", "app_state"}, others
    eventually(check, what="labels")


def test_each_scrape_writes_up_duration_and_samples(single):
    srv = single.srv
    exposed = {"shop-text": single.text_body, "shop-om": single.om_body}

    def check():
        for service in ("shop-text", "shop-om"):
            # A scrape every second of a one-threaded app on a busy machine may now and then time
            # out (up = 0 for that scrape); the newest and most scrapes succeed.
            up = metric_rows(srv, service, "up")
            values = [r["value"] for r in up]
            assert set(values) <= {0.0, 1.0} and values[-1:] == [1.0] and values.count(1.0) >= 2, up
            assert all(r["type"] == "gauge" for r in up), up
            assert json.loads(up[-1]["resource_attributes"]).get("service.instance.id") == single.app.instance
            duration = metric_rows(srv, service, "scrape_duration_seconds")
            # Within the 1 s timeout, give or take the time to notice it ran out.
            assert duration and all(0 < r["value"] < 1.5 for r in duration), duration
            assert any(r["value"] < 1.0 for r in duration), duration
            samples = metric_rows(srv, service, "scrape_samples_scraped")
            lines = sample_lines(exposed[service])
            without_created = [ln for ln in lines if not re.match(r"[^{\s]*_created[{\s]", ln)]
            assert samples and len(without_created) <= samples[-1]["value"] <= len(lines), \
                (samples[-1]["value"], len(without_created), len(lines))
    eventually(check, what="up, scrape_duration_seconds, scrape_samples_scraped")


def test_targets_api_says_up_with_the_last_scrape(single):
    def check():
        by_url = targets(single.srv)
        assert set(by_url) == {single.text_url, single.om_url}, by_url
        for url, service in ((single.text_url, "shop-text"), (single.om_url, "shop-om")):
            t = by_url[url]
            assert set(t) >= TARGET_KEYS, t
            assert (t["service"], t["health"], t["last_error"]) == (service, "up", None), t
            assert abs(parse_time_ns(t["last_scrape"]) - time.time_ns()) < 60 * NS, t
            assert isinstance(t["last_duration_ms"], (int, float)) and t["last_duration_ms"] >= 0, t
            assert isinstance(t["samples"], int) and t["samples"] > 0, t
            assert all(c["level"] == "ok" for c in scrape_checks(single.srv)), scrape_checks(single.srv)
    eventually(check, what="targets up")
    page = single.srv.get("/services/shop-text")
    assert page.status_code == 200, page.status_code
    assert single.text_url in visible_text(page.text), "the service page does not list its scrape target"


def test_later_scrapes_pick_up_new_values(tmp_path):
    """A server polls its targets: requests made after it started show up, scrape after scrape."""
    app = PromApp(tmp_path / "logs", name="prom-poll").start()
    srv = None
    try:
        srv = start_sightline(tmp_path, "scrape-poll", scrape_table(f"{app.url}/metrics", "poll"))
        eventually(lambda: assert_value(latest_up(srv, "poll"), 1.0), what="first scrape")
        for _ in range(3):
            app.work("/poll", 0.1)
        eventually(lambda: assert_value(one(srv, "poll", "app_requests_total", route="/poll", method="GET"), 3.0),
                   what="3 requests")
        for _ in range(2):
            app.work("/poll", 0.6)
        eventually(lambda: assert_value(one(srv, "poll", "app_requests_total", route="/poll", method="GET"), 5.0),
                   what="5 requests")
        hist = one(srv, "poll", "app_request_duration_seconds", route="/poll")
        assert hist["count"] == 5 and hist["bucket_counts"] == non_cumulative([0.1] * 3 + [0.6] * 2), hist
        values = [r["value"] for r in metric_rows(srv, "poll", "app_requests_total")
                  if json.loads(r["attributes"]).get("route") == "/poll"]
        assert values == sorted(values) and {3.0, 5.0} <= set(values), values
        assert len({r["time"] for r in metric_rows(srv, "poll", "up")}) >= 3
    finally:
        if srv is not None:
            _cleanup(srv)
        app.stop()


def assert_value(row: dict, expected: float) -> bool:
    assert row["value"] == expected, (row["value"], expected)
    return True


def latest_up(srv: SightlineServer, service: str) -> dict:
    """The newest `up` row of a target's service (whatever attributes it carries)."""
    rows = metric_rows(srv, service, "up")
    assert rows, f"no up rows for {service}"
    return rows[-1]


# ------------------------------------------------------ gunicorn, multiprocess


def test_gunicorn_workers_are_summed_into_one_series(tmp_path):
    app = GunicornApp(tmp_path).start()
    srv = None
    try:
        srv = start_sightline(tmp_path, "scrape-mp", scrape_table(f"{app.url}/metrics", "shop-mp", {"env": "mp"}))
        eventually(lambda: assert_value(latest_up(srv, "shop-mp"), 1.0), what="first scrape")
        n, duration = 24, 0.12

        def hit(_):
            resp = requests.get(f"{app.url}/work", params={"route": "/mp", "duration": duration, "size": 10,
                                                             "sleep": 0.05}, timeout=10)
            assert resp.status_code == 200, resp.text
            return resp.json()["pid"]
        with ThreadPoolExecutor(max_workers=6) as pool:
            pids = list(pool.map(hit, range(n)))
        served = {pid: pids.count(pid) for pid in set(pids)}
        assert len(served) == 2, f"the requests did not reach both workers: {served}"

        def check():
            counter = one(srv, "shop-mp", "app_requests_total", route="/mp", method="GET", env="mp")
            assert (counter["type"], counter["value"]) == ("sum", float(n)), counter
            hist = one(srv, "shop-mp", "app_request_duration_seconds", route="/mp", env="mp")
            assert hist["count"] == n and close(hist["sum"], sum([duration] * n)), hist
            assert hist["bucket_counts"] == non_cumulative([duration] * n), hist["bucket_counts"]
            size = one(srv, "shop-mp", "app_response_size_bytes", env="mp")
            assert size["count"] == n and close(size["sum"], 10.0 * n), size
            # livesum: one per live worker; all: one series per worker, labelled with its pid.
            assert one(srv, "shop-mp", "app_workers_alive", env="mp")["value"] == 2.0
            per_worker = {dict(k)["pid"]: r["value"] for k, r in latest(srv, "shop-mp", "app_worker_requests").items()}
            assert per_worker == {str(pid): float(c) for pid, c in served.items()}, (per_worker, served)
        eventually(check, what="multiprocess sums")
    finally:
        if srv is not None:
            _cleanup(srv)
        app.stop()


# ------------------------------------------------------------ failing targets


@dataclass
class Broken:
    srv: SightlineServer
    refused_url: str
    failing_url: str
    garbage_url: str

    @property
    def urls(self) -> dict[str, str]:
        return {"ghost": self.refused_url, "failing": self.failing_url, "garbled": self.garbage_url}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    base = tmp_path_factory.mktemp("scrape-broken")
    app = PromApp(base / "logs", name="prom-broken").start()
    srv = None
    try:
        refused = f"http://127.0.0.1:{free_port()}/metrics"  # nothing listens there
        failing, garbage = f"{app.url}/fail", f"{app.url}/garbage"
        srv = start_sightline(base, "scrape-broken", scrape_table(refused, "ghost") + scrape_table(failing, "failing")
                              + scrape_table(garbage, "garbled"))
        yield Broken(srv=srv, refused_url=refused, failing_url=failing, garbage_url=garbage)
    finally:
        if srv is not None:
            _cleanup(srv)
        app.stop()


def down_targets(b: Broken) -> dict[str, dict]:
    """The three targets once each has been tried and found down."""
    def check():
        by_url = targets(b.srv)
        assert set(by_url) == set(b.urls.values()), by_url
        for service, url in b.urls.items():
            t = by_url[url]
            assert set(t) >= TARGET_KEYS, t
            assert (t["service"], t["health"]) == (service, "down"), t
            assert t["last_error"], t
            assert t["last_scrape"] is not None and abs(parse_time_ns(t["last_scrape"]) - time.time_ns()) < 60 * NS, t
        return by_url
    return eventually(check, what="three targets down")


def test_failing_targets_are_down_with_the_reason(broken):
    by_url = down_targets(broken)
    refused = by_url[broken.refused_url]["last_error"].lower()
    assert "refused" in refused or "connect" in refused, refused
    assert "500" in by_url[broken.failing_url]["last_error"], by_url[broken.failing_url]
    garbage = by_url[broken.garbage_url]["last_error"]
    assert re.search(rf"\bline {GARBAGE_LINE}\b", garbage), f"the parse error should name line {GARBAGE_LINE}: {garbage}"


def test_failing_targets_store_up_0_and_nothing_from_a_bad_body(broken):
    def check():
        for service in broken.urls:
            up = metric_rows(broken.srv, service, "up")
            assert up and {r["value"] for r in up} == {0.0}, (service, up)
    eventually(check, what="up = 0 for each failing target")
    # The exposition is erroneous as a whole (OpenMetrics: "Partial or invalid expositions MUST be
    # considered erroneous in their entirety"): its valid first lines are not stored either.
    stored = broken.srv.rows("SELECT DISTINCT name FROM metrics WHERE service_name = 'garbled'")
    assert {r["name"] for r in stored} <= {"up", "scrape_duration_seconds", "scrape_samples_scraped"}, stored


def test_healthz_warns_naming_each_failing_target(broken):
    down_targets(broken)

    def check():
        checks = scrape_checks(broken.srv)
        assert checks and all(c["level"] == "warn" for c in checks), checks
        said = " ".join(c["message"] for c in checks)
        for url in broken.urls.values():
            assert url in said, (url, said)
    eventually(check, what="a scrape warning in /healthz")
    assert broken.srv.get("/healthz").json()["status"] != "ok"


@pytest.mark.parametrize("service", ["ghost", "failing", "garbled"])
def test_the_service_page_shows_the_target_and_its_error(broken, service):
    error = down_targets(broken)[broken.urls[service]]["last_error"]
    page = broken.srv.get(f"/services/{service}")
    assert page.status_code == 200, page.status_code
    text = visible_text(page.text)
    assert broken.urls[service] in text, f"{broken.urls[service]} is not on the page"
    assert re.sub(r"\s+", " ", error) in text, f"the error {error!r} is not on the page"


# ------------------------------------------------------ configuration refusals

BASE = ('[[scrape]]\nurl = "http://127.0.0.1:9/metrics"\nservice = "shop"\ninterval = "15s"\ntimeout = "5s"\n'
        'labels = { env = "e2e" }\n\n'
        '[[scrape]]\nurl = "http://127.0.0.1:9/other"\nservice = "other"\n')

REFUSALS = [
    ("missing-url", ('url = "http://127.0.0.1:9/metrics"\n', ""), "scrape[0].url", None),
    ("missing-service", ('service = "shop"\n', ""), "scrape[0].service", None),
    ("missing-service-second", ('service = "other"\n', ""), "scrape[1].service", None),
    ("not-http", ("http://127.0.0.1:9/metrics", "ftp://127.0.0.1:9/metrics"), "scrape[0].url", None),
    ("not-a-url", ("http://127.0.0.1:9/metrics", "metrics please"), "scrape[0].url", None),
    ("zero-interval", ('interval = "15s"', 'interval = "0s"'), "scrape[0].interval", None),
    ("bad-interval", ('interval = "15s"', 'interval = "soon"'), "scrape[0].interval", None),
    ("timeout-over-interval", ('timeout = "5s"', 'timeout = "20s"'), "scrape[0].timeout", None),
    ("label-not-text", ('labels = { env = "e2e" }', "labels = { env = 3 }"), "scrape[0].labels", None),
    ("unknown-key", ('service = "shop"\n', 'service = "shop"\njob = "shop"\n'), "scrape[0]", "job"),
]


def test_the_base_config_of_the_refusals_is_accepted(tmp_path):
    started, code, err = run_serve(tmp_path, BASE)
    assert started, f"the valid config was refused (exit {code}):\n{err}"


@pytest.mark.parametrize("change, key, says", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_scrape_config_mistakes_are_refused_naming_the_key(tmp_path, change, key, says):
    assert_refused(tmp_path, BASE, change, (key,), says)
