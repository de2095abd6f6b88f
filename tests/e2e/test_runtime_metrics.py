"""Runtime metrics of real Python processes on the service page, recognised by name, with units.

Two real sources, one server:

- `runtime-otel`: `apps/runtime_app.py`, a Python process running
  opentelemetry-instrumentation-system-metrics (default configuration) under the OpenTelemetry
  SDK's PeriodicExportingMetricReader, exporting OTLP/HTTP protobuf to the server every 500 ms;
  it works a little between exports (CPU, allocations, gc.collect of every generation, threads,
  open files), then flushes and exits.
- `runtime-prom`: prometheus_client's default registry (process_*, python_gc_*, python_info) of
  this very test process, exposed by prometheus_client.start_http_server and scraped by the server
  every second (`[[scrape]]`).

For each source the test checks the stored rows of the essential metrics (name, unit, type,
monotonic, attributes) with POST /api/v1/query, then the service page
(`/services/{service}?range=15m`): `section#runtime-metrics` holds one
`figure[data-metric="<exact metric name>"]` per essential metric, whose `figcaption` carries the
friendly title and the display unit, and whose `div.chart[data-chart]` is the chart's JSON
(`{"title", "unit", "x", "series": [{"label", "values"}]}`) with at least one value drawn.

What each metric must look like on the page is the Display of each expected metric below:
counters as rates per second, CPU seconds per second as cores, memory in bytes, counts as counts.

Waiting is always by polling (wait_for, wait_rows), never by sleeping.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Callable, Iterator

import pytest
from prometheus_client import start_http_server

from conftest import APPS_DIR, SightlineServer, _cleanup, wait_for

OTEL_SERVICE = "runtime-otel"
PROM_SERVICE = "runtime-prom"
RANGE = "15m"
SCRAPE_INTERVAL = "1s"
WAIT_S = 30.0  # for rows and charts to show up
APP_EXPORTS = 4  # successful periodic exports runtime_app.py waits for (then flush + shutdown)
APP_INTERVAL_MS = 500
APP_THREADS = 3  # extra threads runtime_app.py keeps alive while exporting
APP_TIMEOUT_S = 90.0
MIB = 1024 * 1024


# ------------------------------------------------------------------ what is expected


@dataclass(frozen=True)
class Display:
    """How the service page shows a metric: the figure's title, the unit its caption names and
    the unit its chart's values are in (data-chart's "unit", formatted by app.js)."""
    title: str
    caption_unit: str
    chart_unit: str
    rate: bool  # counters: the increase per second, not the reported value


CPU = Display("CPU", "cores", "cores", rate=True)
MEMORY = Display("Resident memory", "bytes", "By", rate=False)
THREADS = Display("Threads", "count", "{thread}", rate=False)
SWITCHES = Display("Context switches", "per second", "/s", rate=True)
GC = Display("GC collections", "per second", "/s", rate=True)
FDS = Display("Open file descriptors", "count", "{file_descriptor}", rate=False)


@dataclass(frozen=True)
class Stored:
    """A metric as the `metrics` table must hold it."""
    unit: str | None  # None: the source names no unit (stored NULL)
    type: str  # 'sum' or 'gauge'
    monotonic: bool | None  # sums: counter or up-down counter; gauges: None
    attributes: dict[str, set[str]]  # attribute key -> the values every export carries
    display: Display


# opentelemetry-instrumentation-system-metrics 0.66b2, as it sends them (read from its OTLP/HTTP
# requests): every sum cumulative; memory, threads and fds are observable up-down counters (sums,
# not monotonic, not gauges); context switches, threads and fds carry no unit at all.
OTEL_ESSENTIALS: dict[str, Stored] = {
    "process.cpu.time": Stored("s", "sum", True, {"type": {"user", "system"}}, CPU),
    "process.memory.usage": Stored("By", "sum", False, {}, MEMORY),
    "process.thread.count": Stored(None, "sum", False, {}, THREADS),
    "process.context_switches": Stored(None, "sum", True, {"type": {"voluntary", "involuntary"}}, SWITCHES),
    # Every point has both `cpython.gc.generation` (an int) and `generation` (the same as text).
    "cpython.gc.collections": Stored("{collection}", "sum", True,
                                     {"generation": {"0", "1", "2"}, "cpython.gc.generation": {"0", "1", "2"}}, GC),
    "process.open_file_descriptor.count": Stored(None, "sum", False, {}, FDS),
}

# prometheus_client 0.26 default registry, as scraped: counters are monotonic sums named with
# `_total`, gauges are gauges; `_seconds` gives "s", `_bytes` gives "By", other names no unit.
# (prometheus_client has no thread or context-switch metrics.)
PROM_ESSENTIALS: dict[str, Stored] = {
    "process_cpu_seconds_total": Stored("s", "sum", True, {}, CPU),
    "process_resident_memory_bytes": Stored("By", "gauge", None, {}, MEMORY),
    "process_open_fds": Stored(None, "gauge", None, {}, FDS),
    "python_gc_collections_total": Stored(None, "sum", True, {"generation": {"0", "1", "2"}}, GC),
}

# Sent by the instrumentation's default configuration but not runtime charts of the service:
# host-wide metrics, and deprecated duplicates of the essentials (process.runtime.cpython.gc_count
# is gc.get_count(), allocations pending, not collections, with unit "By").
NOT_CHARTED_WITH_THE_ESSENTIALS = [
    "process.runtime.cpython.cpu_time",
    "process.runtime.cpython.memory",
    "process.runtime.cpython.thread_count",
    "process.runtime.cpython.context_switches",
    "process.runtime.cpython.gc_count",
    "system.cpu.time",
    "system.memory.usage",
    "system.thread_count",
]


# ------------------------------------------------------------------ helpers


def sql_list(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def stored_rows(srv: SightlineServer, service: str, names) -> list[dict]:
    return srv.rows(
        "SELECT time, name, unit, type, monotonic, attributes, value FROM metrics "
        f"WHERE service_name = '{service}' AND name IN ({sql_list(names)}) ORDER BY time"
    )


def by_name(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["name"], []).append(r)
    return out


def attribute_values(rows: list[dict]) -> dict[str, set[str]]:
    """Every attribute key of the rows -> the values seen, as text (0 and "0" alike)."""
    seen: dict[str, set[str]] = {}
    for r in rows:
        for k, v in json.loads(r["attributes"]).items():
            seen.setdefault(k, set()).add(str(v))
    return seen


def check_stored(rows: list[dict], expected: dict[str, Stored], service: str, min_rows: int) -> dict[str, list[dict]]:
    """Each expected metric: at least min_rows rows, and the unit, type, monotonic and attributes."""
    got = by_name(rows)
    missing = [n for n in expected if len(got.get(n, [])) < min_rows]
    assert not missing, (f"{service}: fewer than {min_rows} rows of {missing}; "
                         f"rows per metric: { {n: len(rs) for n, rs in got.items()} }")
    for name, want in expected.items():
        for r in got[name]:
            if want.unit is None:
                assert r["unit"] in (None, ""), f"{service} {name}: unit {r['unit']!r}, the source sends none"
            else:
                assert r["unit"] == want.unit, f"{service} {name}: unit {r['unit']!r}, expected {want.unit!r}"
            assert r["type"] == want.type, f"{service} {name}: type {r['type']!r}, expected {want.type!r}"
            if want.type == "sum":
                assert r["monotonic"] is want.monotonic, f"{service} {name}: monotonic {r['monotonic']!r}"
            else:
                assert not r["monotonic"], f"{service} {name}: a gauge stored as monotonic"
            assert r["value"] is not None and math.isfinite(r["value"]) and r["value"] >= 0, \
                f"{service} {name}: value {r['value']!r}"
        attrs = attribute_values(got[name])
        for key, values in want.attributes.items():
            assert attrs.get(key, set()) >= values, \
                f"{service} {name}: attribute {key} has {sorted(attrs.get(key, []))}, expected {sorted(values)}"
        if not want.attributes:
            assert all(json.loads(r["attributes"]) == {} for r in got[name]), \
                f"{service} {name}: unexpected attributes {attrs}"
    return got


def latest_value(rows: list[dict], **attrs: str) -> float:
    """The newest value of the series with these attributes (compared as text)."""
    matching = [r for r in rows
                if all(str(json.loads(r["attributes"]).get(k)) == v for k, v in attrs.items())]
    assert matching, f"no row with {attrs}"
    return matching[-1]["value"]


class RuntimeSection(HTMLParser):
    """The figures of `section#runtime-metrics`: data-metric, caption text, data-chart specs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found = False
        self.figures: list[dict[str, Any]] = []
        self._section_depth = 0  # > 0 inside section#runtime-metrics (nested sections counted)
        self._figure: dict[str, Any] | None = None
        self._figure_depth = 0
        self._caption_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "section":
            if self._section_depth:
                self._section_depth += 1
            elif a.get("id") == "runtime-metrics":
                self._section_depth = 1
                self.found = True
            return
        if not self._section_depth:
            return
        if tag == "figure":
            if self._figure is None:
                self._figure = {"metric": a.get("data-metric"), "caption": "", "charts": []}
                self._figure_depth = 1
            else:
                self._figure_depth += 1
        elif self._figure is not None and tag == "figcaption":
            self._caption_depth += 1
        elif self._figure is not None and tag == "div" and "chart" in a.get("class", "").split():
            raw = a.get("data-chart")
            self._figure["charts"].append(json.loads(raw) if raw else None)

    def handle_endtag(self, tag: str) -> None:
        if not self._section_depth:
            return
        if tag == "section":
            self._section_depth -= 1
        elif tag == "figcaption" and self._caption_depth:
            self._caption_depth -= 1
        elif tag == "figure" and self._figure is not None:
            self._figure_depth -= 1
            if self._figure_depth == 0:
                self._figure["caption"] = " ".join(self._figure["caption"].split())
                self.figures.append(self._figure)
                self._figure = None

    def handle_data(self, data: str) -> None:
        if self._figure is not None and self._caption_depth:
            self._figure["caption"] += data


def runtime_figures(srv: SightlineServer, service: str) -> dict[str, list[dict]]:
    """GET the service page; its runtime figures by data-metric (a list, to catch duplicates)."""
    resp = srv.get(f"/services/{service}", params={"range": RANGE})
    assert resp.status_code == 200, f"/services/{service} answered {resp.status_code}: {resp.text[:500]}"
    parser = RuntimeSection()
    parser.feed(resp.text)
    parser.close()
    assert parser.found, f"/services/{service} has no section#runtime-metrics"
    out: dict[str, list[dict]] = {}
    for fig in parser.figures:
        out.setdefault(fig["metric"], []).append(fig)
    return out


def drawn(values: list) -> list[float]:
    return [v for v in values if v is not None]


def check_figure(service: str, name: str, figures: list[dict], want: Display) -> dict:
    """One figure for the metric, captioned with title and unit, its chart drawn; its chart spec."""
    assert len(figures) == 1, f"{service}: {len(figures)} figures with data-metric={name!r}"
    fig = figures[0]
    caption = fig["caption"]
    assert want.title in caption, f"{service} {name}: figcaption {caption!r} lacks the title {want.title!r}"
    assert want.caption_unit in caption, \
        f"{service} {name}: figcaption {caption!r} lacks the unit {want.caption_unit!r}"
    charts = [c for c in fig["charts"] if c is not None]
    assert len(charts) == 1, f"{service} {name}: {len(fig['charts'])} div.chart (with data-chart: {len(charts)})"
    spec = charts[0]
    for key in ("title", "unit", "x", "series"):
        assert key in spec, f"{service} {name}: data-chart lacks {key!r}: {spec}"
    assert spec["title"] == want.title, f"{service} {name}: chart title {spec['title']!r}, expected {want.title!r}"
    assert spec["unit"] == want.chart_unit, f"{service} {name}: chart unit {spec['unit']!r}, expected {want.chart_unit!r}"
    x = spec["x"]
    assert isinstance(x, list) and x, f"{service} {name}: no x values"
    assert spec["series"], f"{service} {name}: no series"
    for s in spec["series"]:
        assert "label" in s and "values" in s, f"{service} {name}: a series without label or values: {s}"
        assert len(s["values"]) == len(x), f"{service} {name}: series {s['label']!r} has {len(s['values'])} values for {len(x)} x"
        for v in drawn(s["values"]):
            assert isinstance(v, (int, float)) and math.isfinite(v) and v >= 0, \
                f"{service} {name}: series {s['label']!r} has the value {v!r} (never negative, never NaN)"
    values = [v for s in spec["series"] for v in drawn(s["values"])]
    assert values, f"{service} {name}: every value of every series is null: {spec}"
    return spec


def check_page(srv: SightlineServer, service: str, expected: dict[str, Stored]) -> dict[str, dict]:
    """Every essential of the service is charted as expected; their chart specs by name."""
    figures = runtime_figures(srv, service)
    missing = [n for n in expected if n not in figures]
    assert not missing, f"{service}: no runtime figure for {missing}; figures: {sorted(map(str, figures))}"
    specs = {name: check_figure(service, name, figures[name], want.display) for name, want in expected.items()}
    # Counts of what is charted: a value is in its unit, not rescaled (bytes stay bytes).
    for name, want in expected.items():
        values = [v for s in specs[name]["series"] for v in drawn(s["values"])]
        if want.display is MEMORY:
            assert max(values) > 1 * MIB, f"{service} {name}: resident memory charted as {max(values)} (bytes?)"
        if want.display is CPU:
            assert max(values) <= (os.cpu_count() or 1) + 1, f"{service} {name}: {max(values)} cores"
        if want.display is GC:
            labels = [s["label"] for s in specs[name]["series"]]
            for generation in ("0", "1", "2"):
                assert any(re.search(rf"generation={generation}(?!\d)", label) for label in labels), \
                    f"{service} {name}: no line for generation {generation}: {labels}"
    return specs


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Run check (which asserts) until it passes; on timeout its last AssertionError is shown."""
    result: list[Any] = []

    def attempt() -> bool:
        result[:] = [check()]
        return True

    wait_for(attempt, timeout=timeout, interval=0.25, what=what)
    return result[0]


# ------------------------------------------------------------------ fixtures


@dataclass
class Runtime:
    srv: SightlineServer
    prom_url: str


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> Iterator[Runtime]:
    """A prometheus_client exposition of this process's default registry, and a server scraping it."""
    base = tmp_path_factory.mktemp("runtime")
    httpd, thread = start_http_server(0, addr="127.0.0.1")
    prom_url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
    config = base / "sightline.toml"
    config.write_text(f'[[scrape]]\nurl = "{prom_url}"\nservice = "{PROM_SERVICE}"\n'
                      f'interval = "{SCRAPE_INTERVAL}"\n')
    srv = SightlineServer(base / "data", base / "logs", extra_args=["--config", str(config)], name="runtime")
    try:
        srv.start()
        yield Runtime(srv, prom_url)
    finally:
        try:
            _cleanup(srv)
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def otel_app(runtime) -> dict:
    """runtime_app.py run to its end against the server: {"exports", "failed", "pid"}."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, str(APPS_DIR / "runtime_app.py"), "--endpoint", runtime.srv.otlp_http_url,
           "--service", OTEL_SERVICE, "--exports", str(APP_EXPORTS), "--interval-ms", str(APP_INTERVAL_MS),
           "--threads", str(APP_THREADS), "--timeout", "60"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                         timeout=APP_TIMEOUT_S)
    assert out.returncode == 0, f"runtime_app.py exited {out.returncode}\n--- stdout ---\n{out.stdout}\n" \
                                f"--- stderr ---\n{out.stderr[-6000:]}"
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["exports"] >= APP_EXPORTS and result["failed"] == 0, result
    return result


# ------------------------------------------------------------------ OpenTelemetry


def test_otel_runtime_metrics_are_stored_with_their_units(runtime, otel_app):
    srv = runtime.srv
    rows = srv.wait_rows(
        "SELECT name, count(*) AS n FROM metrics "
        f"WHERE service_name = '{OTEL_SERVICE}' AND name IN ({sql_list(OTEL_ESSENTIALS)}) GROUP BY name",
        lambda rs: {r["name"] for r in rs if r["n"] >= APP_EXPORTS} >= set(OTEL_ESSENTIALS),
        timeout=WAIT_S,
    )
    assert rows
    got = check_stored(stored_rows(srv, OTEL_SERVICE, OTEL_ESSENTIALS), OTEL_ESSENTIALS, OTEL_SERVICE,
                       min_rows=APP_EXPORTS)

    # The values are the process's: it used CPU, holds megabytes, ran its extra threads, switched,
    # collected every generation (gc.collect(2) each round) and held files open.
    cpu = got["process.cpu.time"]
    assert latest_value(cpu, type="user") + latest_value(cpu, type="system") > 0
    assert max(r["value"] for r in got["process.memory.usage"]) > 10 * MIB
    assert max(r["value"] for r in got["process.thread.count"]) >= 1 + APP_THREADS
    assert latest_value(got["process.context_switches"], type="voluntary") > 0
    assert latest_value(got["cpython.gc.collections"], generation="2") >= 1
    assert max(r["value"] for r in got["process.open_file_descriptor.count"]) >= 3
    # Cumulative counters never go down within one process.
    for name in ("process.cpu.time", "process.context_switches", "cpython.gc.collections"):
        series: dict[str, list[float]] = {}
        for r in got[name]:
            series.setdefault(r["attributes"], []).append(r["value"])
        for attrs, values in series.items():
            assert values == sorted(values), f"{name} {attrs} went down: {values}"


def test_otel_service_page_charts_the_runtime_essentials(runtime, otel_app):
    srv = runtime.srv
    specs = eventually(lambda: check_page(srv, OTEL_SERVICE, OTEL_ESSENTIALS),
                       what=f"the runtime charts of /services/{OTEL_SERVICE}")
    # Lines by attribute: CPU by type (user, system), context switches by type.
    for name, words in (("process.cpu.time", ("user", "system")),
                        ("process.context_switches", ("voluntary", "involuntary"))):
        labels = [s["label"] for s in specs[name]["series"]]
        for word in words:
            assert any(re.search(rf"\b{word}\b", label) for label in labels), f"{name}: no line for {word}: {labels}"


def test_otel_host_metrics_and_deprecated_duplicates_are_not_runtime_charts(runtime, otel_app):
    """The instrumentation also sends host-wide system.* metrics and the deprecated
    process.runtime.cpython.* twins of the essentials: the page charts each essential once, under
    its current name, and leaves the host's metrics out of the service's runtime."""
    srv = runtime.srv
    sent = {r["name"] for r in srv.rows(
        f"SELECT DISTINCT name FROM metrics WHERE service_name = '{OTEL_SERVICE}' "
        f"AND name IN ({sql_list(NOT_CHARTED_WITH_THE_ESSENTIALS)})")}
    assert sent == set(NOT_CHARTED_WITH_THE_ESSENTIALS), \
        f"the instrumentation did not send {sorted(set(NOT_CHARTED_WITH_THE_ESSENTIALS) - sent)}"
    def figures_with_the_essentials() -> dict[str, list[dict]]:
        figures = runtime_figures(srv, OTEL_SERVICE)
        missing = sorted(set(OTEL_ESSENTIALS) - set(figures))
        assert not missing, f"no runtime figure for {missing} yet"
        return figures

    figures = eventually(figures_with_the_essentials, what=f"the runtime figures of /services/{OTEL_SERVICE}")
    charted = sorted(n for n in NOT_CHARTED_WITH_THE_ESSENTIALS if n in figures)
    assert not charted, f"charted beside the essentials: {charted}"
    # Each essential once: no second chart with the same title (a deprecated twin).
    titles = [chart.get("title") for figs in figures.values() for f in figs for chart in f["charts"] if chart]
    for want in sorted({s.display.title for s in OTEL_ESSENTIALS.values()}):
        assert titles.count(want) == 1, f"{titles.count(want)} charts titled {want!r}: {titles}"


# ------------------------------------------------------------------ prometheus_client


def test_prom_runtime_metrics_are_stored_with_their_units(runtime):
    srv = runtime.srv
    srv.wait_rows(
        "SELECT name, count(*) AS n FROM metrics "
        f"WHERE service_name = '{PROM_SERVICE}' AND name IN ({sql_list(PROM_ESSENTIALS)}) GROUP BY name",
        # Two scrapes of each series: python_gc_collections_total has three.
        lambda rs: all(any(r["name"] == n and r["n"] >= (6 if n.startswith("python_gc") else 2) for r in rs)
                       for n in PROM_ESSENTIALS),
        timeout=WAIT_S,
    )
    got = check_stored(stored_rows(srv, PROM_SERVICE, PROM_ESSENTIALS), PROM_ESSENTIALS, PROM_SERVICE, min_rows=2)
    assert max(r["value"] for r in got["process_resident_memory_bytes"]) > 10 * MIB
    assert max(r["value"] for r in got["process_cpu_seconds_total"]) > 0
    assert max(r["value"] for r in got["process_open_fds"]) >= 3
    assert latest_value(got["python_gc_collections_total"], generation="0") >= 1


def test_prom_service_page_charts_the_runtime_essentials(runtime):
    eventually(lambda: check_page(runtime.srv, PROM_SERVICE, PROM_ESSENTIALS),
               what=f"the runtime charts of /services/{PROM_SERVICE}")
