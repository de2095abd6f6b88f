"""The web UI in a real browser (Playwright driving Debian's headless Chromium).

One server per module is filled by `sightline demo --backfill 15m`: the past fifteen minutes of the
shop (api-gateway, orders, payments, email-worker, with every fault of its ten-minute cycle) at
once, then a few seconds live. The tests walk the pages the way a person does during an incident:
the services overview, one service, a trace waterfall, the log explorer with its live tail, and
SQL. Pages that show data are opened with `?range=1h` so that all of the demo is in range.

The DOM contract the tests rely on: every page has `nav` (links to /, /logs, /query),
`form#time-picker` (select[name=range], input[name=start|end]), `#theme-toggle` and `main h1`; the
charts are uPlot (`.uplot canvas`). Each page's full-page screenshot is saved to
tests/artifacts/screenshots/<page>.png (services, services-dark, service, trace, logs, query).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from playwright.sync_api import Locator, Page, expect

from conftest import SCREENSHOT_DIR, SightlineServer, _cleanup, sightline_bin, wait_for

DEMO_SERVICES = ("api-gateway", "orders", "payments", "email-worker")
RANGE = "1h"  # every page that shows data is opened with this range: the whole demo is in it
RANGES = ["15m", "1h", "6h", "24h", "7d", "custom"]
DEMO_TIMEOUT_S = 300.0
DRAW_TIMEOUT_MS = 20_000
LIVE_TIMEOUT_MS = 15_000

TRACE_HREF = re.compile(r"/traces/([0-9a-f]{32})(?:[?#]|$)")
# Whether a canvas has any pixel that is not fully transparent: uPlot drew something.
CANVAS_HAS_INK = """canvas => {
    const ctx = canvas.getContext('2d');
    if (!ctx || !canvas.width || !canvas.height) return false;
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) return true;
    return false;
}"""
ACTIVE_ELEMENT = """() => {
    const e = document.activeElement;
    return {tag: e.tagName.toLowerCase(), href: e.getAttribute('href'), name: e.getAttribute('name'),
            nav: !!e.closest('nav'), picker: !!e.closest('#time-picker')};
}"""


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory) -> SightlineServer:
    """A server holding fifteen minutes of the demo shop and a few live seconds."""
    base = tmp_path_factory.mktemp("ui-demo")
    server = SightlineServer(base / "data", base / "logs", name="ui-demo").start()
    try:
        out = subprocess.run(
            [sightline_bin(), "demo", "--endpoint", server.otlp_http_url, "--backfill", "15m", "--duration", "4s",
             "--rate", "10"],
            capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"sightline demo exited with {out.returncode}\n--- stderr ---\n{out.stderr}"
        services = {r["service_name"] for r in server.rows("SELECT DISTINCT service_name FROM spans")}
        assert set(DEMO_SERVICES) <= services, f"the demo sent spans of {services} only\n{out.stderr}"
        oldest = server.rows("SELECT min(start_time) AS t FROM spans")[0]["t"]
        assert parse_time(oldest) < datetime.now(timezone.utc) - timedelta(minutes=10), \
            f"--backfill 15m sent nothing older than {oldest}"
    except BaseException:
        _cleanup(server)
        raise
    yield server
    _cleanup(server)


@pytest.fixture(scope="module")
def demo_trace(demo_server) -> dict:
    """A checkout trace of the demo that reaches the worker: the trace API's answer, plus the ids of
    its consumer span (which links to the producer span) and of that producer span."""
    row = demo_server.rows("SELECT trace_id, span_id, parent_span_id FROM spans WHERE kind = 'consumer' "
                    "ORDER BY start_time DESC LIMIT 1")[0]
    trace = demo_server.get(f"/api/v1/traces/{row['trace_id']}").json()
    assert len({s["service_name"] for s in trace["spans"]}) >= 3 and trace["logs"], trace
    return {"trace_id": row["trace_id"], "consumer": row["span_id"], "producer": row["parent_span_id"],
            "api": trace}


# ----------------------------------------------------------------- helpers


def ui(server: SightlineServer, path: str, **params: str) -> str:
    """The address of a UI page on server (the web UI shares the API's listener, port 4319's role)."""
    return f"{server.api_url}{path}" + (f"?{urlencode(params)}" if params else "")


def parse_time(text: str) -> datetime:
    """An RFC 3339 time of the API (nanoseconds cut to microseconds)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", text)
    assert m, f"not an RFC 3339 UTC time: {text!r}"
    return datetime.fromisoformat(m.group(1) + "." + (m.group(2) or "0")[:6].ljust(6, "0") + "+00:00")


def query_of(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def hrefs(locator: Locator) -> list[str]:
    return locator.evaluate_all("els => els.map(e => e.getAttribute('href'))")


def texts(locator: Locator) -> list[str]:
    return [t.strip() for t in locator.all_inner_texts()]


def goto(page: Page, url: str) -> None:
    """Open a page; it must answer 200."""
    response = page.goto(url)
    assert response is not None and response.status == 200, \
        f"GET {url} answered {response and response.status}: {response and response.text()[:500]}"


def submit(form: Locator) -> None:
    """Submit a form the way a person does: its submit button, or Enter when it has none."""
    button = form.locator("button[type=submit], input[type=submit], button:not([type])")
    if button.count():
        button.first.click()
    else:
        form.evaluate("f => f.requestSubmit()")


def choose_range(page: Page, value: str) -> None:
    """Pick a range in the time picker. The page applies a preset by itself (app.js submits the
    form on change); "custom" only shows the start and end inputs."""
    picker = page.locator("form#time-picker")
    picker.locator("select[name=range]").select_option(value)
    if value != "custom":
        page.wait_for_url(re.compile(rf"[?&]range={value}(&|$)"), timeout=20_000)


def expect_drawn_charts(charts: Locator, at_least: int, what: str) -> None:
    """At least `at_least` chart elements, each holding a uPlot (div.uplot with a canvas) that has
    something drawn on its canvas."""
    expect(charts.nth(at_least - 1), f"{what}: fewer than {at_least} charts").to_be_attached()
    for i in range(charts.count()):
        canvas = charts.nth(i).locator(".uplot canvas").first
        expect(canvas, f"{what}: chart #{i + 1} has no uPlot canvas").to_be_visible(timeout=DRAW_TIMEOUT_MS)
        deadline = time.monotonic() + DRAW_TIMEOUT_MS / 1000
        while not canvas.evaluate(CANVAS_HAS_INK):
            assert time.monotonic() < deadline, f"{what}: the canvas of chart #{i + 1} stays blank"
            time.sleep(0.1)


def save_screenshot(page: Page, name: str) -> None:
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 0, f"empty screenshot {path}"


def header_index(table: Locator, pattern: str) -> int:
    """The column of the first header cell of table matching pattern (case-insensitive)."""
    headers = [h.lower() for h in texts(table.locator("thead th"))]
    for i, header in enumerate(headers):
        if re.search(pattern, header):
            return i
    raise AssertionError(f"no column header matches {pattern!r}; headers: {headers}")


def number_in(text: str) -> float:
    """The first number in a cell, e.g. '2.5/s' -> 2.5, '1,204' -> 1204, '0.4%' -> 0.4."""
    m = re.search(r"\d[\d,]*(?:\.\d+)?", text)
    assert m, f"no number in {text!r}"
    return float(m.group(0).replace(",", ""))


def duration_ms(text: str) -> float:
    """A latency cell in milliseconds: '850 µs', '12.5 ms', '1.2 s' (a bare number counts as ms)."""
    m = re.search(r"(\d[\d,]*(?:\.\d+)?)\s*(ns|µs|μs|us|ms|s)?\b", text)
    assert m, f"no duration in {text!r}"
    scale = {"ns": 1e-6, "µs": 1e-3, "μs": 1e-3, "us": 1e-3, "ms": 1.0, "s": 1000.0, None: 1.0}[m.group(2)]
    return float(m.group(1).replace(",", "")) * scale


def av(value) -> dict:
    return {"intValue": str(value)} if isinstance(value, int) else {"stringValue": value}


def log_request(service: str, body: str, severity: int = 9, trace_id: str | None = None,
                time_ns: int | None = None) -> dict:
    """An OTLP/JSON logs request with one record, of now unless `time_ns` says otherwise."""
    stamp = time.time_ns() if time_ns is None else time_ns
    record = {"timeUnixNano": str(stamp), "severityNumber": severity, "body": av(body)}
    if trace_id:
        record.update(traceId=trace_id, spanId=os.urandom(8).hex())
    return {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": av(service)}]},
        "scopeLogs": [{"scope": {"name": "e2e.ui"}, "logRecords": [record]}],
    }]}


def post_ok(server: SightlineServer, signal_path: str, body: dict) -> None:
    resp = server.post_otlp(signal_path, body)
    assert resp.status_code == 200, f"{signal_path} answered {resp.status_code}: {resp.text}"


# ------------------------------------------------------------ every page

PAGES = {"services": "/", "service": "/services/api-gateway", "trace": "/traces/{trace_id}", "logs": "/logs",
         "query": "/query"}


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_has_nav_theme_toggle_and_title(page, demo_server, demo_trace, name):
    goto(page, ui(demo_server, PAGES[name].format(trace_id=demo_trace["trace_id"])))
    nav_paths = {urlsplit(h).path for h in hrefs(page.locator("nav a[href]"))}
    assert {"/", "/logs", "/query"} <= nav_paths, f"{name}: nav links go to {sorted(nav_paths)}"
    expect(page.locator("#theme-toggle")).to_be_visible()
    expect(page.locator("header a.sign-out")).to_have_count(0)  # no tokens, nothing to sign out of
    expect(page.locator("html")).to_have_attribute("data-theme", re.compile(r"^(light|dark)$"))
    expect(page.locator("main h1")).to_have_count(1)
    expect(page.locator("main h1")).to_have_text(re.compile(r"\w"))


@pytest.mark.parametrize("name", list(PAGES))
def test_every_page_has_the_time_picker(page, demo_server, demo_trace, name):
    goto(page, ui(demo_server, PAGES[name].format(trace_id=demo_trace["trace_id"])))
    picker = page.locator("form#time-picker")
    expect(picker, f"{name}: no form#time-picker").to_have_count(1)
    options = picker.locator("select[name=range] option").evaluate_all("os => os.map(o => o.value)")
    assert options == RANGES, f"{name}: the range picker offers {options}"
    expect(picker.locator("input[name=start]")).to_have_attribute("type", "datetime-local")
    expect(picker.locator("input[name=end]")).to_have_attribute("type", "datetime-local")


def test_time_range_lives_in_the_url(page, demo_server):
    goto(page, ui(demo_server, "/", range="1h"))
    picker = page.locator("form#time-picker")
    range_select = picker.locator("select[name=range]")
    expect(range_select).to_have_value("1h")
    expect(page.locator('table#services tr[data-service="orders"]')).to_be_visible()
    service_href = page.locator('tr[data-service="orders"] a.service-link').get_attribute("href")
    assert query_of(service_href).get("range") == ["1h"], f"the service link drops the range: {service_href}"

    # A preset lands in the URL.
    choose_range(page, "6h")
    expect(page).to_have_url(re.compile(r"[?&]range=6h(&|$)"))
    expect(range_select).to_have_value("6h")
    expect(page.locator('table#services tr[data-service="orders"]')).to_be_visible()

    # A custom range: the last half hour to the minute, in the page's time zone (UTC).
    now = datetime.now(timezone.utc)
    start = (now - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    end = now.strftime("%Y-%m-%dT%H:%M")
    choose_range(page, "custom")
    picker.locator("input[name=start]").fill(start)
    picker.locator("input[name=end]").fill(end)
    submit(picker)
    expect(page).to_have_url(re.compile(r"[?&]range=custom(&|$)"))
    params = query_of(page.url)
    assert params.get("start") and params.get("end"), f"a custom range needs start and end in the URL: {page.url}"
    # (An input may show seconds: 05:16 or 05:16:00.)
    expect(range_select).to_have_value("custom")
    expect(picker.locator("input[name=start]")).to_have_value(re.compile("^" + re.escape(start)))
    expect(picker.locator("input[name=end]")).to_have_value(re.compile("^" + re.escape(end)))
    expect(page.locator('table#services tr[data-service="orders"]')).to_be_visible()

    # The URL alone restores the state: a fresh page on the same address shows the same range.
    goto(page, page.url)
    expect(range_select).to_have_value("custom")
    expect(picker.locator("input[name=start]")).to_have_value(re.compile("^" + re.escape(start)))


def test_theme_toggle_switches_and_is_remembered(page, demo_server):
    goto(page, ui(demo_server, "/", range=RANGE))
    html = page.locator("html")
    toggle = page.locator("#theme-toggle")
    colors = "() => [getComputedStyle(document.documentElement).backgroundColor, " \
             "getComputedStyle(document.body).backgroundColor, getComputedStyle(document.body).color]"

    first = html.get_attribute("data-theme")
    assert first in ("light", "dark"), f"html[data-theme] is {first!r}"
    other = "dark" if first == "light" else "light"
    first_colors = page.evaluate(colors)
    toggle.click()
    expect(html).to_have_attribute("data-theme", other)
    wait_for(lambda: page.evaluate(colors) != first_colors, timeout=5,
             what=f"a colour to change on switching to {other} (from {first_colors})")
    assert other in page.evaluate("Object.values(localStorage)"), "the chosen theme is not kept in localStorage"

    # Remembered across a reload and on another page.
    page.reload()
    expect(html).to_have_attribute("data-theme", other)
    goto(page, ui(demo_server, "/logs", range=RANGE))
    expect(html).to_have_attribute("data-theme", other)

    # The services page in the dark, with its sparklines drawn.
    goto(page, ui(demo_server, "/", range=RANGE))
    if html.get_attribute("data-theme") != "dark":
        toggle.click()
    expect(html).to_have_attribute("data-theme", "dark")
    expect_drawn_charts(page.locator("table#services td.trend"), len(DEMO_SERVICES), "services sparklines (dark)")
    save_screenshot(page, "services-dark")

    toggle.click()
    expect(html).to_have_attribute("data-theme", "light")
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")


def test_keyboard_reaches_the_nav_links_and_the_time_picker(page, demo_server):
    goto(page, ui(demo_server, "/", range=RANGE))
    reached: list[dict] = []
    for _ in range(40):
        page.keyboard.press("Tab")
        reached.append(page.evaluate(ACTIVE_ELEMENT))
        nav_paths = {urlsplit(e["href"]).path for e in reached if e["nav"] and e["href"]}
        picker_fields = {e["name"] for e in reached if e["picker"]}
        if {"/", "/logs", "/query"} <= nav_paths and "range" in picker_fields:
            break
    assert {"/", "/logs", "/query"} <= nav_paths, f"Tab never reached every nav link; it went through {reached}"
    assert "range" in picker_fields, f"Tab never reached the range picker; it went through {reached}"


# ------------------------------------------------------------------ services


def test_services_page_shows_each_service_with_rates_latencies_and_a_sparkline(page, demo_server):
    goto(page, ui(demo_server, "/", range=RANGE))
    table = page.locator("table#services")
    expect(page.locator("main h1")).to_be_visible()

    columns = {name: header_index(table, pattern) for name, pattern in {
        "rate": r"^(?!.*err).*(rate|req|rps|rpm|throughput)", "errors": r"err", "p50": r"p50", "p95": r"p95",
        "p99": r"p99"}.items()}
    for service in DEMO_SERVICES:
        row = table.locator(f'tr[data-service="{service}"]')
        expect(row, f"no row for {service}").to_have_count(1)
        link = row.locator("a.service-link")
        expect(link).to_contain_text(service)
        assert urlsplit(link.get_attribute("href")).path == f"/services/{service}", link.get_attribute("href")

        cells = texts(row.locator("th, td"))
        rate = number_in(cells[columns["rate"]])
        assert rate > 0, f"{service}: request rate {cells[columns['rate']]!r}"
        error_rate = number_in(cells[columns["errors"]])
        assert error_rate >= 0, f"{service}: error rate {cells[columns['errors']]!r}"
        p50, p95, p99 = (duration_ms(cells[columns[p]]) for p in ("p50", "p95", "p99"))
        assert 0 < p50 <= p95 <= p99, f"{service}: p50/p95/p99 = {cells[columns['p50']]!r}, " \
                                      f"{cells[columns['p95']]!r}, {cells[columns['p99']]!r}"

    # The faults of the hour (a failing payment provider, a bad release) show as gateway errors.
    gateway = texts(table.locator('tr[data-service="api-gateway"]').locator("th, td"))
    assert number_in(gateway[columns["errors"]]) > 0, f"api-gateway shows no errors: {gateway}"

    expect_drawn_charts(table.locator("td.trend"), len(DEMO_SERVICES), "services sparklines")

    routes = page.locator("table#routes tr.route-row")
    expect(routes.first).to_be_visible()
    route_text = " ".join(texts(routes))
    for route in ("/api/checkout", "/api/orders/{order_id}", "/api/products", "/charges"):
        assert route in route_text, f"table#routes lacks {route}: {route_text[:1000]}"

    save_screenshot(page, "services")


# ------------------------------------------------------------------- service


def test_service_page_shows_charts_routes_traces_logs_and_runtime(page, demo_server):
    goto(page, ui(demo_server, "/services/orders", range=RANGE))
    expect(page.locator("main h1")).to_contain_text("orders")

    # Rate, errors and latency, drawn.
    expect_drawn_charts(page.locator("main div.chart"), 3, "orders charts")

    routes = page.locator("table#service-routes tbody tr")
    expect(routes.first).to_be_visible()
    route_text = " ".join(texts(routes))
    for route in ("/api/checkout", "/api/orders/{order_id}"):
        assert route in route_text, f"table#service-routes lacks {route}: {route_text[:1000]}"
    assert "/charges" not in route_text, "a payments route is listed under orders"

    # Slow and failing traces lead to stored traces that involve orders (and failed, for the latter).
    for table_id, failing in (("slow-traces", False), ("failing-traces", True)):
        links = page.locator(f"table#{table_id} a.trace-link")
        expect(links.first, f"table#{table_id} has no trace links").to_be_visible()
        for href in hrefs(links):
            assert TRACE_HREF.search(urlsplit(href).path + "?"), f"table#{table_id}: {href} is not /traces/<32 hex>"
        trace_id = TRACE_HREF.search(hrefs(links)[0]).group(1)
        trace = demo_server.get(f"/api/v1/traces/{trace_id}").json()
        ours = [s for s in trace["spans"] if s["service_name"] == "orders"]
        assert ours, f"table#{table_id} links trace {trace_id}, which has no orders span"
        if failing:
            assert any(s["status"] == "error" for s in ours), f"failing trace {trace_id} has no failed orders span"

    # The bad release's unhandled KeyError is among the error logs.
    expect(page.locator("section#error-logs")).to_contain_text("shipping_address")

    # One chart per runtime metric: CPU, memory, threads, garbage collections (drawn: checked above).
    runtime = page.locator("section#runtime-metrics")
    for word in ("cpu", "memory", "thread", "gc"):
        expect(runtime, f"runtime metrics do not mention {word}").to_contain_text(word, ignore_case=True)
    expect(runtime.locator(".uplot canvas").nth(3), "fewer than four runtime charts").to_be_visible()

    save_screenshot(page, "service")


def click_first_exemplar(page: Page, chart: Locator) -> set[str]:
    """Clicks the first exemplar app.js drew on a chart; returns the trace ids the chart holds."""
    expect(chart, "no exemplar drawn on the chart").to_have_attribute("data-exemplars", re.compile(r"^[1-9]"))
    ids = {e["trace_id"] for e in json.loads(chart.get_attribute("data-chart"))["exemplars"]}
    x, y = int(chart.get_attribute("data-exemplar-x")), int(chart.get_attribute("data-exemplar-y"))
    chart.click(position={"x": x, "y": y})
    page.wait_for_url(re.compile(r"/traces/[0-9a-f]{32}"))
    return ids


def test_latency_chart_exemplars_open_their_trace(page, demo_server):
    # The demo's services send no latency exemplars, so each bucket's slowest request stands in.
    goto(page, ui(demo_server, "/services/orders", range=RANGE))
    chart = page.locator("#chart-latency")
    ids = click_first_exemplar(page, chart)
    opened = urlsplit(page.url).path.rsplit("/", 1)[-1]
    assert opened in ids, f"clicked an exemplar, opened {opened}, not one of the chart's {len(ids)}"
    trace = demo_server.get(f"/api/v1/traces/{opened}").json()
    assert any(s["service_name"] == "orders" and s["kind"] in ("server", "consumer") for s in trace["spans"])
    expect(page.locator("main h1")).to_contain_text(opened[:8])


def test_query_chart_rows_with_a_trace_id_open_it(page, demo_server):
    sql = ("SELECT start_time, duration_ns / 1e6 AS ms, trace_id FROM spans "
           "WHERE service_name = 'orders' AND kind = 'server' ORDER BY duration_ns DESC LIMIT 20")
    goto(page, ui(demo_server, "/query", sql=sql))
    expect_drawn_charts(page.locator("#query-chart"), 1, "query chart")
    expected = {row[2] for row in demo_server.query(sql)["rows"]}
    ids = click_first_exemplar(page, page.locator("#query-time-chart"))
    assert ids == expected, "the chart's points are not the result's traces"
    assert urlsplit(page.url).path.rsplit("/", 1)[-1] in expected


def test_worker_page_shows_its_queue_depth(page, demo_server):
    goto(page, ui(demo_server, "/services/email-worker", range=RANGE))
    expect(page.locator("main h1")).to_contain_text("email-worker")
    runtime = page.locator("section#runtime-metrics")
    expect(runtime).to_contain_text("queue", ignore_case=True)
    # The four process metrics and the Celery queue depth.
    expect(runtime.locator(".uplot canvas").nth(4), "fewer than five runtime charts").to_be_visible()
    expect_drawn_charts(page.locator("main div.chart"), 3, "email-worker charts")


# --------------------------------------------------------------------- trace


def test_trace_page_shows_the_waterfall_with_logs_and_span_details(page, demo_server, demo_trace):
    trace_id, api = demo_trace["trace_id"], demo_trace["api"]
    goto(page, ui(demo_server, f"/traces/{trace_id}"))
    expect(page.locator("main h1")).to_be_visible()

    rows = page.locator("#waterfall .span-row")
    expect(rows).to_have_count(len(api["spans"]))
    shown = rows.evaluate_all("rs => rs.map(r => [r.dataset.spanId, r.dataset.service])")
    assert {s for s, _ in shown} == {s["span_id"] for s in api["spans"]}, shown
    assert {svc for _, svc in shown} == {s["service_name"] for s in api["spans"]}, shown
    expect(page.locator("#waterfall .log-row")).to_have_count(len(api["logs"]))
    for log in api["logs"]:
        expect(page.locator("#waterfall .log-row").filter(has_text=log["body"]).first).to_be_visible()
    expect(page.locator(".notice.missing-spans"), "a complete trace is called incomplete").to_have_count(0)
    for href in hrefs(rows.locator("a.span-link")):
        assert query_of(href).get("span"), f"a span link without span=: {href}"

    # Select the worker's consumer span from the waterfall.
    consumer, producer = demo_trace["consumer"], demo_trace["producer"]
    page.locator(f'#waterfall .span-row[data-span-id="{consumer}"] a.span-link').click()
    expect(page).to_have_url(re.compile(rf"[?&]span={consumer}(&|$)"))
    panel = page.locator("#span-panel")
    expect(panel).to_contain_text("run/send_receipt")
    expect(panel.locator("#span-attributes")).to_contain_text("celery.task_name")
    expect(panel.locator("#span-attributes")).to_contain_text("shop.tasks.send_receipt")
    expect(panel.locator("#span-resource")).to_contain_text("host.name")
    expect(panel.locator("#span-resource")).to_contain_text("email-worker-7d9f")
    save_screenshot(page, "trace")

    # Its link leads to the producer span, which shows where it was linked from.
    link = panel.locator("a.link-target")
    expect(link).to_have_count(1)
    href = link.get_attribute("href")
    assert urlsplit(href).path == f"/traces/{trace_id}" and query_of(href).get("span") == [producer], href
    link.click()
    expect(page).to_have_url(re.compile(rf"[?&]span={producer}(&|$)"))
    expect(panel).to_contain_text("apply_async/send_receipt")
    linked_from = panel.locator("#linked-from a")
    expect(linked_from).to_have_count(1)
    assert query_of(linked_from.get_attribute("href")).get("span") == [consumer], linked_from.get_attribute("href")

    # A span's own log lines read as lines in the panel, not one character per line.
    logged = next(log for log in api["logs"] if log.get("span_id"))
    page.locator(f'#waterfall .span-row[data-span-id="{logged["span_id"]}"] a.span-link').click()
    body = panel.locator("table.logs.compact td.body").filter(has_text=logged["body"]).first
    expect(body).to_be_visible()
    panel_box, body_box = panel.bounding_box(), body.bounding_box()
    assert body_box["width"] > 0.6 * panel_box["width"], (body_box, panel_box)
    assert body_box["height"] < 100, f"a {len(logged['body'])}-character line is {body_box['height']} px tall"


def test_trace_page_shows_an_exception_with_its_stacktrace(page, demo_server):
    row = demo_server.rows("SELECT trace_id, span_id, exception_type FROM spans "
                    "WHERE exception_type IS NOT NULL ORDER BY start_time DESC LIMIT 1")
    assert row, "the demo sent no span with an exception"
    trace_id, span_id, exception_type = row[0]["trace_id"], row[0]["span_id"], row[0]["exception_type"]
    span = next(s for s in demo_server.get(f"/api/v1/traces/{trace_id}").json()["spans"] if s["span_id"] == span_id)
    assert span["exception_stacktrace"], span

    goto(page, ui(demo_server, f"/traces/{trace_id}", span=span_id))
    panel = page.locator("#span-panel")
    expect(panel).to_contain_text(span["name"])
    expect(panel.locator("#span-events")).to_contain_text("exception")
    stacktrace = panel.locator("pre.stacktrace").first
    expect(stacktrace).to_contain_text("Traceback (most recent call last)")
    expect(stacktrace).to_contain_text(exception_type)
    last_line = span["exception_stacktrace"].strip().splitlines()[-1]
    expect(stacktrace).to_contain_text(last_line)


def test_trace_with_a_missing_parent_says_so(page, sightline_factory):
    server = sightline_factory(name="ui-orphan").start()
    service = f"ui-orphan-{os.urandom(3).hex()}"
    trace_id, root, child, orphan, lost = (os.urandom(n).hex() for n in (16, 8, 8, 8, 8))
    t0 = time.time_ns() - 5 * 10**9

    def span(span_id: str, name: str, start_ms: int, parent: str | None = None) -> dict:
        s = {"traceId": trace_id, "spanId": span_id, "name": name, "kind": 2,
             "startTimeUnixNano": str(t0 + start_ms * 10**6), "endTimeUnixNano": str(t0 + (start_ms + 20) * 10**6)}
        if parent:
            s["parentSpanId"] = parent
        return s

    # The orphan's parent (`lost`) never arrives.
    post_ok(server, "/v1/traces", {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": av(service)}]},
        "scopeSpans": [{"scope": {"name": "e2e.ui"}, "spans": [
            span(root, "GET /root", 0), span(child, "child work", 5, root), span(orphan, "orphaned work", 40, lost)]}],
    }]})
    server.wait_rows(f"SELECT span_id FROM spans WHERE trace_id = '{trace_id}'", lambda r: len(r) == 3)

    goto(page, ui(server, f"/traces/{trace_id}"))
    expect(page.locator(".notice.missing-spans")).to_be_visible()
    rows = page.locator("#waterfall .span-row")
    expect(rows).to_have_count(3)
    expect(page.locator(f'#waterfall .span-row[data-span-id="{orphan}"]')).to_contain_text("orphaned work")
    expect(page.locator(f'#waterfall .span-row[data-span-id="{root}"]')).to_contain_text("GET /root")


# ---------------------------------------------------------------------- logs


def test_logs_page_lists_lines_with_trace_links_and_filters(page, demo_server):
    goto(page, ui(demo_server, "/logs", range=RANGE))
    lines = page.locator("table#log-lines tbody tr.log-line")
    expect(lines.first).to_be_visible()
    assert lines.count() >= 10, f"only {lines.count()} log lines for an hour of the demo"
    # Every demo log carries a trace id, so every line links to its trace.
    expect(page.locator("table#log-lines tr.log-line:not(:has(a.trace-link))")).to_have_count(0)
    for href in hrefs(lines.locator("a.trace-link")):
        assert TRACE_HREF.search(href), f"a log line links to {href}, not /traces/<32 hex>"

    form = page.locator("form#log-filters")
    services = form.locator("select[name=service] option").evaluate_all("os => os.map(o => o.value)")
    assert set(DEMO_SERVICES) <= set(services), f"the service filter offers {services}"
    severities = form.locator("select[name=severity] option").evaluate_all("os => os.map(o => o.value)")
    error_value = next((v for v in severities if v.lower() == "error"), None)
    assert error_value is not None and len(severities) >= 3, f"the severity filter offers {severities}"
    expect(form.locator("input[name=q]")).to_be_editable()
    expect(form.locator("input[name=attr]")).to_be_editable()
    save_screenshot(page, "logs")

    # The payment provider's failures: service, severity and text together.
    form.locator("input[name=q]").fill("charge failed")
    form.locator("select[name=service]").select_option("payments")
    form.locator("select[name=severity]").select_option(error_value)
    submit(form)
    expect(page).to_have_url(re.compile(r"[?&]service=payments(&|$)"))
    params = query_of(page.url)
    assert params.get("q") == ["charge failed"] and [s.lower() for s in params.get("severity", [])] == ["error"], \
        f"the filters are not all in the URL: {page.url}"
    expect(lines.first).to_be_visible()
    expect(lines.filter(has_not_text="charge failed"), "a line that does not match the filters").to_have_count(0)
    expect(form.locator("input[name=q]")).to_have_value("charge failed")
    expect(form.locator("select[name=service]")).to_have_value("payments")


def test_logs_attribute_filter_and_older_pages(page, demo_server):
    goto(page, ui(demo_server, "/logs", range=RANGE, attr="logger.name=celery.worker"))
    form = page.locator("form#log-filters")
    expect(form.locator("input[name=attr]")).to_have_value("logger.name=celery.worker")
    lines = page.locator("table#log-lines tbody tr.log-line")
    expect(lines.first).to_be_visible()
    # Only the worker logs with that logger, and it only ever says one thing.
    expect(lines.filter(has_not_text="receipt sent")).to_have_count(0)
    first_page = texts(lines)

    # A checkout every few seconds for fifteen minutes is more than one page: go back in time.
    older = page.locator("a#older")
    expect(older).to_be_visible()
    url = page.url
    older.click()
    expect(page).not_to_have_url(url)
    expect(lines.first).to_be_visible()
    assert query_of(page.url).get("attr") == ["logger.name=celery.worker"], \
        f"the older page lost the filter: {page.url}"
    expect(lines.filter(has_not_text="receipt sent")).to_have_count(0)
    second_page = texts(lines)
    assert second_page[0] != first_page[0] and second_page != first_page, \
        f"the older page shows the same lines: {second_page[:3]}"


def test_live_tail_shows_new_lines_as_they_arrive(page, sightline_factory):
    server = sightline_factory(name="ui-live").start()
    suffix = os.urandom(4).hex()
    service, other = f"ui-live-{suffix}", f"ui-other-{suffix}"
    post_ok(server, "/v1/logs", log_request(service, f"seed line {suffix}"))
    server.wait_rows(f"SELECT body FROM logs WHERE service_name = '{service}'")

    goto(page, ui(server, "/logs", range="15m", service=service))
    body = page.locator("#log-lines tbody")
    expect(body.locator("tr.log-line").filter(has_text=f"seed line {suffix}")).to_have_count(1)

    button = page.locator("button#live-tail")
    with page.expect_response(lambda r: urlsplit(r.url).path == "/logs/stream") as stream:
        button.click()
    response = stream.value
    assert response.status == 200, f"/logs/stream answered {response.status}"
    assert response.headers.get("content-type", "").startswith("text/event-stream"), response.headers
    assert query_of(response.url).get("service") == [service], f"the stream lost the filters: {response.url}"
    expect(button).to_contain_text("Stop")

    # A line of another service first (filtered out), then one of ours.
    post_ok(server, "/v1/logs", log_request(other, f"other line {suffix}"))
    live_body = f"live line {suffix}"
    post_ok(server, "/v1/logs", log_request(service, live_body, severity=13))
    live = body.locator("tr.log-line.live").filter(has_text=live_body)
    expect(live).to_have_count(1, timeout=LIVE_TIMEOUT_MS)
    expect(body.locator("tr.log-line").first).to_contain_text(live_body)
    expect(body).not_to_contain_text(f"other line {suffix}")
    expect(body.locator("tr.log-line").filter(has_text=f"seed line {suffix}")).to_have_count(1)

    button.click()
    expect(button).not_to_contain_text("Stop")


def test_live_tail_keeps_up_with_a_busy_service(page, sightline_factory):
    """Thousands of log lines a second from `sightline bench ingest`: the tail sends at most 200
    lines per 250 ms tick and says how many it left out, the page keeps the newest 1000 live rows,
    newest on top, and answers clicks all along."""
    server = sightline_factory(name="ui-busy").start()
    goto(page, ui(server, "/logs", range="15m"))
    button = page.locator("button#live-tail")
    button.click()
    expect(page.locator("#tail-status")).to_contain_text("Live")

    html, toggle = page.locator("html"), page.locator("#theme-toggle")
    live = page.locator("#log-lines tbody tr.log-line.live")

    def expect_responsive() -> None:
        """Script runs on the page and a click still switches the theme; at most 1000 live rows."""
        page.wait_for_function("() => 1 + 1 === 2", timeout=LIVE_TIMEOUT_MS)
        theme = html.get_attribute("data-theme")
        toggle.click(timeout=LIVE_TIMEOUT_MS)
        expect(html).to_have_attribute("data-theme", "dark" if theme == "light" else "light")
        assert live.count() <= 1000, f"{live.count()} live rows: the page keeps only the newest 1000"

    bench = subprocess.Popen(
        [sightline_bin(), "bench", "ingest", "--endpoint", server.otlp_http_url, "--clients", "4",
         "--duration", "4s", "--requests-per-body", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        checks = 0
        deadline = time.monotonic() + 120
        while bench.poll() is None and time.monotonic() < deadline:
            expect_responsive()
            checks += 1
            time.sleep(0.5)
        out, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    assert bench.returncode == 0, f"sightline bench ingest exited with {bench.returncode}\n{err}"
    assert checks >= 1, f"the page was never checked while the load ran\n{out}"

    expect(live.first, "no live row arrived").to_be_attached(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#log-lines tbody tr.tail-skipped").first).to_contain_text("not shown to keep up")
    expect_responsive()

    # The tail orders by arrival. The bench's lines are not stamped in the order they arrive (four
    # clients, each body's lines spread over its requests, some seconds past the time they were
    # sent), so the line sent after the load is stamped a minute ahead: newest by arrival and time.
    marker = f"after the load {os.urandom(4).hex()}"
    post_ok(server, "/v1/logs", log_request(f"ui-busy-{os.urandom(3).hex()}", marker,
                                            time_ns=time.time_ns() + 60 * 10**9))
    expect(live.first).to_contain_text(marker, timeout=LIVE_TIMEOUT_MS)
    expect_responsive()
    times = live.locator("td.time")
    first, last = times.first.inner_text().strip(), times.last.inner_text().strip()
    for t in (first, last):
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", t), f"not a UTC time of the table: {t!r}"
    assert first >= last, f"the newest row is not on top: the first live row is at {first}, the last at {last}"

    button.click()
    expect(button).not_to_contain_text("Stop")


# --------------------------------------------------------------------- query


def test_query_page_runs_sql_and_shows_a_table(page, demo_server):
    goto(page, ui(demo_server, "/query"))
    form = page.locator("form#query-form")
    sql = ("SELECT service_name, count(*) AS spans FROM spans WHERE environment = 'demo' "
           "GROUP BY service_name ORDER BY service_name")
    form.locator("textarea[name=sql]").fill(sql)
    submit(form)
    expect(page).to_have_url(re.compile(r"[?&]sql="))
    assert query_of(page.url)["sql"] == [sql], f"the URL does not hold the SQL: {page.url}"
    expect(form.locator("textarea[name=sql]")).to_have_value(sql)

    results = page.locator("table#query-results")
    expect(results.locator("thead")).to_contain_text("service_name")
    expect(results.locator("thead")).to_contain_text("spans")
    expected = [[name, n] for name, n in demo_server.query(sql)["rows"]]
    rows = results.locator("tbody tr")
    expect(rows).to_have_count(len(expected))
    shown = [texts(rows.nth(i).locator("td")) for i in range(rows.count())]
    assert [[name, int(re.sub(r"\D", "", n))] for name, n in shown] == expected, f"shown {shown}, API {expected}"
    expect(page.locator("#query-chart .uplot"), "a chart of a table without time").to_have_count(0)


def test_query_page_charts_a_time_series(page, demo_server):
    sql = ("SELECT date_trunc('minute', start_time) AS minute, count(*) AS spans FROM spans "
           "GROUP BY 1 ORDER BY 1")
    goto(page, ui(demo_server, "/query", sql=sql))
    expect(page.locator("form#query-form textarea[name=sql]")).to_have_value(sql)
    expect(page.locator("table#query-results tbody tr").first).to_be_visible()
    expect_drawn_charts(page.locator("#query-chart"), 1, "query chart")
    save_screenshot(page, "query")


def test_example_queries_fill_the_url_and_show_results(page, demo_server):
    goto(page, ui(demo_server, "/query"))
    examples = page.locator("a.example-query")
    expect(examples.first).to_be_visible()
    examples.first.click()
    expect(page).to_have_url(re.compile(r"[?&]sql="))
    sql = query_of(page.url)["sql"][0]
    expect(page.locator("form#query-form textarea[name=sql]")).to_have_value(sql)
    expect(page.locator("table#query-results")).to_be_visible()
    expect(page.locator(".error"), f"example query failed: {sql}").to_have_count(0)


def test_invalid_sql_shows_the_error(page, demo_server):
    goto(page, ui(demo_server, "/query"))
    form = page.locator("form#query-form")
    form.locator("textarea[name=sql]").fill("SELECT no_such_column FROM spans")
    submit(form)
    expect(page.locator(".error")).to_contain_text("no_such_column")
    expect(form.locator("textarea[name=sql]")).to_have_value("SELECT no_such_column FROM spans")
    expect(page.locator("nav")).to_be_visible()
    expect(page.locator("table#query-results tbody tr")).to_have_count(0)


# ------------------------------------------------------------------- journey


def test_journey_from_services_to_a_trace_to_its_logs_and_back(page, demo_server):
    goto(page, ui(demo_server, "/", range=RANGE))
    page.locator('table#services tr[data-service="api-gateway"] a.service-link').click()
    expect(page).to_have_url(re.compile(r"/services/api-gateway(\?|$)"))
    expect(page.locator("main h1")).to_contain_text("api-gateway")

    trace_link = page.locator("table#slow-traces a.trace-link").first
    expect(trace_link).to_be_visible()
    trace_id = TRACE_HREF.search(trace_link.get_attribute("href")).group(1)
    trace_link.click()
    expect(page).to_have_url(re.compile(rf"/traces/{trace_id}(\?|$)"))
    spans = page.locator("#waterfall .span-row")
    expect(spans.first).to_be_visible()
    services = set(spans.evaluate_all("rows => rows.map(r => r.dataset.service)"))
    assert "api-gateway" in services and len(services) > 1, f"a slow gateway trace within one service: {services}"

    logs_link = page.locator("a.logs-link").first
    href = logs_link.get_attribute("href")
    assert urlsplit(href).path == "/logs" and query_of(href).get("trace_id") == [trace_id], href
    logs_link.click()
    expect(page).to_have_url(re.compile(rf"/logs\?(.*&)?trace_id={trace_id}(&|$)"))
    lines = page.locator("table#log-lines tbody tr.log-line")
    expect(lines.first).to_be_visible()
    linked = {TRACE_HREF.search(h).group(1) for h in hrefs(lines.locator("a.trace-link"))}
    assert linked == {trace_id}, f"the trace's logs link to {linked}"
    api_logs = demo_server.get(f"/api/v1/traces/{trace_id}").json()["logs"]
    expect(lines).to_have_count(len(api_logs))

    lines.first.locator("a.trace-link").click()
    expect(page).to_have_url(re.compile(rf"/traces/{trace_id}(\?|$)"))
    expect(page.locator("#waterfall .span-row").first).to_be_visible()


def test_an_open_live_tail_does_not_hold_up_shutdown(sightline_factory):
    """The stream ends when the server stops, so a browser left tailing cannot delay a restart."""
    server = sightline_factory(name="tail-stop").start()
    stream = requests.get(ui(server, "/logs/stream"), stream=True, timeout=30)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert next(stream.iter_lines()) == b"event: ready"
    server.stop(timeout=10)  # exit 0 within 10 s, with the stream still open on this side
    stream.close()
