"""The monitor's pages in a real browser (Playwright driving Debian's headless Chromium).

One server per module watches the demo shop with the README's monitor config ("Watch it: SLOs,
alerts and notifications"), evaluated every second, its webhook pointing at a receiver in this
process (a ThreadingHTTPServer on 127.0.0.1:0 answering 200), and filled by `sightline demo
--backfill 15m`. What the demo's fault cycle does to the README's SLO and rule depends on the
minute, so the tests read the states from the API and add what is certain:

- `order-reads` (the README's 1d SLO over GET /api/orders/{order_id}): fifteen minutes hold at
  least one bad release (30 % failures for two minutes of ten), so its ticket alert (1x over 144m
  and 12m) fires; its page alert may or may not;
- `orders-errors` (the README's rule): any state;
- `always-requests`: request rate of orders over 1h above 0, for 0s: firing from the first
  evaluation after the backfill, and its value stays put once the demo has stopped;
- `ghost-availability`: an SLO of a service that never sends: state no_data, its alerts no_data;
- `ghost-errors`: a rule of that service: no instance, so it is listed nowhere.

The DOM contract: `/slos` (table#slos, tr[data-slo], td[data-budget], a sparkline per SLO,
span.badge[data-state]), `/slos/{name}` (h1 + badge, dl.facts #sli #budget, table#burn-rates,
#budget-chart, #burn-chart, table#slo-alerts), `/alerts` (tables #firing #pending #no-data
#silenced #resolved of tr[data-alert][data-state], p.empty for an empty section, table#silences
with an "End now" form per active silence), `/alerts/{id}` (h1 + badge, p#summary, dl.facts
#value #runbook, #value-chart, table#timeline, #failing-requests and #slowest-requests linking to
/traces/{trace_id}?span={span_id}, table.logs, form.silence), and on `/` a firing service's
tr[data-firing] with a.badge.firing to /alerts. Screenshots: slos, slo, alerts, alert (and
alerts-silenced).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect

from conftest import SightlineServer, _cleanup, sightline_bin, wait_for
from test_ui import (DEMO_SERVICES, DEMO_TIMEOUT_S, TRACE_HREF, expect_drawn_charts, goto, hrefs, parse_time,
                     save_screenshot, texts, ui)

RANGE = "1h"
ROUTE = "/api/orders/{order_id}"
ORDER_READS, ORDERS_ERRORS, ALWAYS, GHOST_SLO, GHOST_RULE = (
    "order-reads", "orders-errors", "always-requests", "ghost-availability", "ghost-errors")
GHOST = "ghost"
ALWAYS_RUNBOOK = "https://runbooks.example/always-requests"
SECTIONS = ("firing", "pending", "no-data", "silenced", "resolved")
# The burn-rate windows in the order of their length.
BURN_WINDOWS = ["5m", "30m", "1h", "6h", "1d", "3d"]
SPAN_HREF = re.compile(r"^/traces/([0-9a-f]{32})\?span=([0-9a-f]{16})$")
SETTLE_TIMEOUT_S = 30.0
RED, BLUE = (0xd9, 0x53, 0x4f), (0x3b, 0x82, 0xf6)  # the pages' series colours (layout::RED, BLUE)

# Before any script of a page runs: keep every uPlot made, with its element, in window.__uplots,
# so that a test can read the scales a chart was drawn with.
RECORD_UPLOTS = """(() => {
    window.__uplots = [];
    let wrapped;
    Object.defineProperty(window, 'uPlot', {configurable: true, get: () => wrapped, set: (real) => {
        wrapped = function (opts, data, el) {
            const u = new real(opts, data, el);
            window.__uplots.push({el, u});
            return u;
        };
        Object.assign(wrapped, real);
        wrapped.prototype = real.prototype;
    }});
})()"""
# The y range a chart's uPlot was drawn with: [min, max].
Y_RANGE = """el => {
    const found = (window.__uplots || []).filter(c => c.el === el).pop();
    return found ? [found.u.scales.y.min, found.u.scales.y.max] : null;
}"""
# How many opaque pixels of a canvas are (about) a given colour: a series was drawn, not just axes.
INK_OF = """([canvas, rgb]) => {
    const ctx = canvas.getContext('2d');
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3] > 200 && Math.abs(data[i] - rgb[0]) + Math.abs(data[i + 1] - rgb[1])
            + Math.abs(data[i + 2] - rgb[2]) < 60) n++;
    }
    return n;
}"""


# ----------------------------------------------------------------- the receiver


class Receiver:
    """Notifications land here: a ThreadingHTTPServer on 127.0.0.1:0 in a thread, answering 200."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        lock, posts = threading.Lock(), self.posts

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    posts.append({"path": self.path, "body": body})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="ui-monitor-hook", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def monitor_config(hook_url: str) -> str:
    """The README's config, evaluated every second, plus rules and an SLO whose outcome is certain."""
    return f'''
[monitor]
evaluation_interval = "1s"
external_url = "http://127.0.0.1:4319"

[[slo]]
name = "{ORDER_READS}"
service = "orders"
route = "{ROUTE}"
indicator = "availability"
objective = 99
window = "1d"
runbook_url = "https://runbooks.example/order-reads"

[[slo]]
name = "{GHOST_SLO}"
service = "{GHOST}"
indicator = "availability"
objective = 99.5
window = "1d"

[[alert]]
name = "{ORDERS_ERRORS}"
service = "orders"
measure = "error_rate"
window = "2m"
above = 0.05
for = "1m"
min_requests = 20

[[alert]]
name = "{ALWAYS}"
service = "orders"
measure = "request_rate"
window = "1h"
above = 0
for = "0s"
runbook_url = "{ALWAYS_RUNBOOK}"

[[alert]]
name = "{GHOST_RULE}"
service = "{GHOST}"
measure = "error_rate"
window = "2m"
above = 0.05

[[notify]]
name = "oncall"
kind = "webhook"
url = "{hook_url}"
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"
'''


# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def monitor_server(tmp_path_factory) -> SightlineServer:
    """A server watching fifteen minutes of the demo shop, its alerts settled."""
    base = tmp_path_factory.mktemp("ui-monitor")
    receiver = Receiver()
    config = base / "sightline.toml"
    config.write_text(monitor_config(receiver.url("/hook")))
    server = SightlineServer(base / "data", base / "logs", extra_args=["--config", str(config)],
                             name="ui-monitor").start()
    try:
        out = subprocess.run(
            [sightline_bin(), "demo", "--endpoint", server.otlp_http_url, "--backfill", "15m", "--duration", "4s",
             "--rate", "10"],
            capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, f"sightline demo exited with {out.returncode}\n--- stderr ---\n{out.stderr}"
        oldest = server.rows("SELECT min(start_time) AS t FROM spans")[0]["t"]
        assert parse_time(oldest) < datetime.now(timezone.utc) - timedelta(minutes=10), \
            f"--backfill 15m sent nothing older than {oldest}"
        wait_settled(server)
    except BaseException:
        _cleanup(server)
        receiver.stop()
        raise
    yield server
    _cleanup(server)
    receiver.stop()


def wait_settled(server: SightlineServer) -> None:
    """Until the certain states hold and the numbers stay put between two evaluations."""
    def certain():
        alerts = api_alerts(server)
        always = [a for a in alerts if a["name"] == ALWAYS]
        ticket = [a for a in alerts if a["name"] == ORDER_READS and a["labels"].get("severity") == "ticket"]
        ghosts = [a for a in alerts if a["name"] == GHOST_SLO]
        return (len(always) == 1 and always[0]["state"] == "firing" and len(ticket) == 1
                and ticket[0]["state"] == "firing" and len(ghosts) == 2
                and all(a["state"] == "no_data" for a in ghosts))
    wait_for(certain, timeout=SETTLE_TIMEOUT_S, interval=0.5, what="always-requests and order-reads' ticket "
             f"firing, the ghost SLO's alerts no_data: {api_alerts(server)}")

    def numbers():
        # (always-requests' rate moves by itself: its window is counted in whole minutes of
        # rollups, over the time they cover)
        return {s["name"]: (s["good"], s["total"], s["sli"]) for s in api_slos(server)}

    def stable():
        first = numbers()
        time.sleep(1.5)  # more than an evaluation interval
        return first == numbers()
    wait_for(stable, timeout=SETTLE_TIMEOUT_S, interval=0.1, what="the SLO counts to stay put")


# ----------------------------------------------------------------- helpers


def api_slos(server: SightlineServer) -> list[dict]:
    resp = server.get("/api/v1/slos")
    assert resp.status_code == 200, resp.text
    return resp.json()["slos"]


def api_alerts(server: SightlineServer) -> list[dict]:
    resp = server.get("/api/v1/alerts")
    assert resp.status_code == 200, resp.text
    return resp.json()["alerts"]


def api_alert(server: SightlineServer, alert_id: str) -> dict:
    resp = server.get(f"/api/v1/alerts/{alert_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def the_alert(server: SightlineServer, name: str, **labels: str) -> dict:
    found = [a for a in api_alerts(server) if a["name"] == name
             and all(a["labels"].get(k) == v for k, v in labels.items())]
    assert len(found) == 1, f"{len(found)} alerts named {name} {labels}: {found}"
    return found[0]


def percent(value: float | None, digits: int) -> str:
    """A share as the pages show it: 0.92166 -> '92.166%' (3 digits), None -> '–'."""
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def burn_text(value: float | None) -> str:
    """A burn rate as the pages show it: one decimal below 10, none from 10 on."""
    if value is None:
        return "–"
    return f"{value:.1f}×" if value < 10 else f"{value:.0f}×"


def number_text(value: float) -> str:
    """A float as Rust's Display writes it for the thresholds of this config (1.0 -> '1', 0.05 -> '0.05')."""
    return str(int(value)) if float(value).is_integer() else repr(value)


def watch_console(page: Page) -> list[str]:
    """Collect the console errors and warnings of the page from now on (and failed loads)."""
    said: list[str] = []
    page.on("console", lambda msg: said.append(f"console.{msg.type}: {msg.text} ({page.url})")
            if msg.type in ("error", "warning") else None)
    page.on("pageerror", lambda exc: said.append(f"uncaught: {exc} ({page.url})"))
    page.on("requestfailed", lambda req: said.append(f"request failed: {req.url} ({req.failure})"))
    return said


def section_rows(page: Page) -> dict[str, dict[str, str]]:
    """/alerts: {section id: {alert id: data-state}}; a section without a table maps to {}."""
    out = {}
    for section in SECTIONS:
        rows = page.locator(f"table#{section} tbody tr[data-alert]")
        out[section] = dict(rows.evaluate_all("rs => rs.map(r => [r.dataset.alert, r.dataset.state])"))
    return out


def expected_section(alert: dict) -> str:
    if alert["state"] == "resolved":
        return "resolved"
    if alert["silenced_by"]:
        return "silenced"
    return {"firing": "firing", "pending": "pending", "no_data": "no-data"}[alert["state"]]


def states(alerts: list[dict]) -> dict[str, tuple]:
    return {a["id"]: (a["state"], a["silenced_by"]) for a in alerts}


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def agrees(shown: str, before: str, after: str) -> bool:
    """Whether a sentence of the page is the API's, read before or after the page: the same words,
    and each number between the two readings (a value that moved meanwhile)."""
    if shown in (before, after):
        return True
    if not (NUMBER.sub("#", shown) == NUMBER.sub("#", before) == NUMBER.sub("#", after)):
        return False
    for s, b, a in zip(*(map(float, NUMBER.findall(t)) for t in (shown, before, after))):
        if not min(a, b) - 0.01 <= s <= max(a, b) + 0.01:
            return False
    return True


def chart_spec(page: Page, selector: str) -> dict:
    return json.loads(page.locator(selector).first.get_attribute("data-chart"))


def series_pixels(page: Page, selector: str, rgb: tuple[int, int, int]) -> int:
    """Pixels of a series colour on the (drawn) canvas of the chart at selector."""
    canvas = page.locator(f"{selector} .uplot canvas").first
    return page.evaluate(f"args => ({INK_OF})(args)", [canvas.element_handle(), list(rgb)])


def y_range(page: Page, selector: str) -> list[float]:
    """[min, max] of the y scale the chart at selector was drawn with (needs RECORD_UPLOTS)."""
    found = page.locator(selector).first.evaluate(Y_RANGE)
    assert found is not None, f"no uPlot was made for {selector}"
    return found


def matchers_of(text: str) -> dict[str, str]:
    pairs = [p.split("=", 1) for p in text.split()]
    assert all(len(p) == 2 for p in pairs), f"matchers that are not name=value: {text!r}"
    return dict(pairs)


def alert_row(page: Page, section: str, alert_id: str):
    return page.locator(f'table#{section} tr[data-alert="{alert_id}"]')


# --------------------------------------------------------------- every page


def monitor_pages(server: SightlineServer) -> dict[str, tuple[str, str]]:
    """name -> (path, the nav link that is current)"""
    always = the_alert(server, ALWAYS)
    return {"slos": ("/slos", "/slos"), "slo": (f"/slos/{ORDER_READS}", "/slos"),
            "alerts": ("/alerts", "/alerts"), "alert": (f"/alerts/{always['id']}", "/alerts")}


@pytest.mark.parametrize("name", ["slos", "slo", "alerts", "alert"])
def test_monitor_page_loads_cleanly_with_the_nav(page, monitor_server, name):
    path, current = monitor_pages(monitor_server)[name]
    said = watch_console(page)
    goto(page, ui(monitor_server, path))
    links = dict(page.locator("nav a[href]").evaluate_all(
        "as => as.map(a => [a.getAttribute('href'), a.textContent.trim()])"))
    assert {"/": "Services", "/logs": "Logs", "/query": "Query", "/alerts": "Alerts", "/slos": "SLOs"}.items() \
        <= links.items(), f"{name}: the nav links are {links}"
    current_links = hrefs(page.locator('nav a[aria-current="page"]'))
    assert current_links == [current], f"{name}: the nav marks {current_links} as the current page"
    expect(page.locator("main h1")).to_have_count(1)
    expect(page.locator("main h1")).to_have_text(re.compile(r"\w"))
    expect(page.locator("main p.error, main [role=alert]")).to_have_count(0)
    # Every chart of the page gets its uPlot canvas (a sparkline of no data may stay blank).
    charts = page.locator("main .chart[data-chart]")
    for i in range(charts.count()):
        expect(charts.nth(i).locator(".uplot canvas").first, f"{name}: chart #{i + 1} has no canvas").to_be_visible()
    page.wait_for_load_state("networkidle")
    assert not said, f"{name}: the browser said:\n" + "\n".join(said)


def test_unknown_slo_and_alert_answer_not_found(page, monitor_server):
    for path, says in (("/slos/no-such-slo", "no-such-slo"), ("/alerts/0123456789abcdef", "0123456789abcdef")):
        response = page.goto(ui(monitor_server, path))
        assert response is not None and response.status == 404, f"GET {path} answered {response and response.status}"
        expect(page.locator("main .error")).to_contain_text(says)
        expect(page.locator("nav a[href='/alerts']")).to_be_visible()


# --------------------------------------------------------------------- /slos


def test_slos_page_shows_each_slo_as_the_api_does(page, monitor_server):
    before = api_slos(monitor_server)
    goto(page, ui(monitor_server, "/slos"))
    after = api_slos(monitor_server)
    table = page.locator("table#slos")
    rows = table.locator("tbody tr[data-slo]")
    shown_names = rows.evaluate_all("rs => rs.map(r => r.dataset.slo)")
    assert shown_names == [s["name"] for s in after], f"table#slos lists {shown_names}, the API {after}"

    columns = [h.lower() for h in texts(table.locator("thead th"))]
    col = {key: next(i for i, h in enumerate(columns) if re.search(pattern, h))
           for key, pattern in {"sli": r"^sli$", "budget": r"budget left", "burn1h": r"burn 1h",
                                "burn6h": r"burn 6h"}.items()}
    for slo in after:
        row = table.locator(f'tr[data-slo="{slo["name"]}"]')
        link = row.locator("a")
        expect(link.first).to_have_text(slo["name"])
        assert link.first.get_attribute("href") == f"/slos/{slo['name']}", link.first.get_attribute("href")
        cells = texts(row.locator("th, td"))
        then = next(s for s in before if s["name"] == slo["name"])
        for key, shown, api_value in (
                ("sli", cells[col["sli"]], lambda s: percent(s["sli"], 3)),
                ("budget", row.locator("td[data-budget]").inner_text().strip(),
                 lambda s: percent(s["budget_remaining"], 1)),
                ("burn1h", cells[col["burn1h"]], lambda s: burn_text(s["burn_rates"]["1h"])),
                ("burn6h", cells[col["burn6h"]], lambda s: burn_text(s["burn_rates"]["6h"]))):
            assert shown in {api_value(then), api_value(slo)}, \
                f"{slo['name']}: {key} shows {shown!r}, the API says {api_value(slo)!r}"
        assert cells[col["budget"]] == row.locator("td[data-budget]").inner_text().strip()
        badge = row.locator("span.badge[data-state]")
        expect(badge).to_have_count(1)
        assert badge.get_attribute("data-state") in {then["state"], slo["state"]}, \
            f"{slo['name']}: badge {badge.get_attribute('data-state')}, API {slo['state']}"

    reads = next(s for s in after if s["name"] == ORDER_READS)
    assert reads["total"] > 0 and reads["sli"] < 0.99 and reads["budget_remaining"] < 0, \
        f"fifteen minutes of the demo should have spent order-reads' budget: {reads}"
    ghost = next(s for s in after if s["name"] == GHOST_SLO)
    assert ghost["state"] == "no_data" and ghost["total"] == 0, ghost
    ghost_row = table.locator(f'tr[data-slo="{GHOST_SLO}"]')
    expect(ghost_row.locator("span.badge[data-state]")).to_have_attribute("data-state", "no_data")
    expect(ghost_row.locator("td[data-budget]")).to_have_text("–")
    # A budget overspent is marked.
    expect(table.locator(f'tr[data-slo="{ORDER_READS}"] td[data-budget]')).to_have_class(re.compile(r"\bbad\b"))

    # The sparkline: order-reads' budget burned down to what is left now.
    expect_drawn_charts(table.locator(f'tr[data-slo="{ORDER_READS}"] .chart[data-chart]'), 1,
                        "order-reads sparkline")
    spark = chart_spec(page, f'tr[data-slo="{ORDER_READS}"] .chart[data-chart]')
    left = [v for v in spark["series"][0]["values"] if v is not None]
    assert left and abs(left[-1] - reads["budget_remaining"] * 100) < 0.05, \
        f"the sparkline ends at {left[-1:]}%, the budget left is {reads['budget_remaining'] * 100}%"
    assert left[0] == pytest.approx(100.0), f"the window begins with {left[0]}% of the budget, not 100%"
    expect(ghost_row.locator(".chart .uplot canvas").first).to_be_visible()
    save_screenshot(page, "slos")

    # The name leads to the SLO's page.
    table.locator(f'tr[data-slo="{ORDER_READS}"] a[href="/slos/{ORDER_READS}"]').click()
    expect(page).to_have_url(re.compile(rf"/slos/{ORDER_READS}$"))
    expect(page.locator("main h1")).to_contain_text(ORDER_READS)


# ------------------------------------------------------------- /slos/{name}


def test_slo_page_shows_its_numbers_burn_rates_charts_and_alerts(page, monitor_server):
    page.add_init_script(RECORD_UPLOTS)
    before = monitor_server.get(f"/api/v1/slos/{ORDER_READS}").json()
    ticket_before = the_alert(monitor_server, ORDER_READS, severity="ticket")
    goto(page, ui(monitor_server, f"/slos/{ORDER_READS}"))
    slo = monitor_server.get(f"/api/v1/slos/{ORDER_READS}").json()
    h1 = page.locator("main h1")
    expect(h1).to_contain_text(ORDER_READS)
    # The state moves by itself once the demo's last minutes leave the page alert's short
    # window (firing, then no_data): the page shows what the API said around its loading.
    badge = h1.locator("span.badge[data-state]")
    badge.wait_for()
    shown_state = badge.get_attribute("data-state")
    assert shown_state in {before["state"], slo["state"]}, \
        f"the page shows {shown_state}, the API said {before['state']} then {slo['state']}"
    expect(page.locator("dl.facts #sli")).to_have_text(percent(slo["sli"], 3))
    expect(page.locator("dl.facts #budget")).to_have_text(percent(slo["budget_remaining"], 1))
    expect(page.locator("dl.facts")).to_contain_text(f"{slo['good']} / {slo['total']}")
    expect(page.locator("dl.facts a[href='https://runbooks.example/order-reads']")).to_have_count(1)

    burn = page.locator("table#burn-rates")
    windows = texts(burn.locator("thead th"))
    values = texts(burn.locator("tbody td"))
    assert sorted(windows) == sorted(slo["burn_rates"]), f"burn-rate columns {windows}, API {list(slo['burn_rates'])}"
    for window, shown in zip(windows, values):
        if window != "5m":  # the 5-minute burn moves as the minutes pass
            assert shown == burn_text(slo["burn_rates"][window]), \
                f"burn over {window}: {shown!r}, API {slo['burn_rates'][window]}"
    expect_drawn_charts(page.locator("main #budget-chart"), 1, "budget chart")
    expect_drawn_charts(page.locator("main #burn-chart"), 1, "burn chart")
    budget = [v for v in chart_spec(page, "#budget-chart")["series"][0]["values"] if v is not None]
    assert abs(budget[-1] - slo["budget_remaining"] * 100) < 0.05, \
        f"#budget-chart ends at {budget[-1]}%, #budget says {slo['budget_remaining'] * 100}%"

    # Its alerts, as the API lists them, each linking to its incident page.
    ours = [a for a in api_alerts(monitor_server) if a["source"] == "slo" and a["name"] == ORDER_READS]
    rows = page.locator("table#slo-alerts tbody tr[data-alert]")
    shown = dict(rows.evaluate_all("rs => rs.map(r => [r.dataset.alert, r.dataset.state])"))
    assert set(shown) == {a["id"] for a in ours}, f"table#slo-alerts shows {shown}, the API {ours}"
    # The ticket fires on the demo's bad release, and resolves once that leaves its 12m window:
    # the table says what the API said around the page's loading.
    ticket = the_alert(monitor_server, ORDER_READS, severity="ticket")
    assert shown[ticket["id"]] in {ticket_before["state"], ticket["state"]}, (shown, ticket_before, ticket)
    for a in ours:
        assert rows.locator(f'a[href="/alerts/{a["id"]}"]').count() == 1, f"no link to /alerts/{a['id']}"
    save_screenshot(page, "slo")

    wrong = []
    # The window order of the burn rates: shortest first, as the page's own text reads them.
    if windows != BURN_WINDOWS:
        wrong.append(f"table#burn-rates orders its windows {windows}, not {BURN_WINDOWS}")
    # The charts show their data: the budget chart reaches down to the budget left (below 0 when
    # overspent), and the burn chart draws its buckets, not only its axes.
    low, high = y_range(page, "#budget-chart")
    if not low <= min(budget):
        wrong.append(f"#budget-chart's y axis spans {low}..{high} %: the budget left, {min(budget):.1f} %, "
                     "is below the chart")
    burns = [v for v in chart_spec(page, "#burn-chart")["series"][0]["values"] if v is not None]
    assert burns and max(burns) > 1, f"order-reads burned its budget, but the burn chart holds {burns}"
    if not series_pixels(page, "#burn-chart", RED):
        wrong.append(f"#burn-chart draws no burn rate: its {len(burns)} bucket(s) with a value ({burns}) "
                     "leave no red on the canvas")
    if not series_pixels(page, "#budget-chart", BLUE):
        wrong.append("#budget-chart draws no line")
    assert not wrong, "\n".join(wrong)


def test_slo_of_a_silent_service_shows_no_data(page, monitor_server):
    goto(page, ui(monitor_server, f"/slos/{GHOST_SLO}"))
    expect(page.locator("main h1 span.badge[data-state]")).to_have_attribute("data-state", "no_data")
    expect(page.locator("#sli")).to_have_text("–")
    expect(page.locator("#budget")).to_have_text("–")
    expect(page.locator("table#burn-rates tbody td").filter(has_not_text="–")).to_have_count(0)
    rows = page.locator("table#slo-alerts tbody tr[data-alert]")
    expect(rows).to_have_count(2)  # page and ticket
    expect(rows.filter(has=page.locator('[data-state="no_data"]'))).to_have_count(2)


# ------------------------------------------------------------------ /alerts


def test_alerts_page_sorts_every_alert_into_its_section(page, monitor_server):
    for _ in range(3):  # the README's rule may change state while the page renders: retry then
        before = api_alerts(monitor_server)
        goto(page, ui(monitor_server, "/alerts"))
        after = api_alerts(monitor_server)
        if states(before) == states(after):
            break
    else:
        pytest.fail("the alerts kept changing state")
    shown = section_rows(page)
    expected: dict[str, dict[str, str]] = {s: {} for s in SECTIONS}
    for a in after:
        expected[expected_section(a)][a["id"]] = a["state"]
    assert shown == expected, f"the sections show {shown}; by the API they hold {expected}"

    for section in SECTIONS:
        if expected[section]:
            expect(page.locator(f"table#{section}")).to_be_visible()
        else:
            expect(page.locator(f"table#{section}"), f"an empty {section} section has a table").to_have_count(0)
    expect(page.locator("main p.empty")).to_have_count(
        sum(1 for s in SECTIONS if not expected[s]) + (0 if monitor_server.get("/api/v1/silences").json()["silences"]
                                                      else 1))

    always = the_alert(monitor_server, ALWAYS)
    assert always["id"] in shown["firing"], shown
    ghosts = [a for a in after if a["name"] == GHOST_SLO]
    assert {a["id"] for a in ghosts} <= set(shown["no-data"]), shown
    assert not [a for a in after if a["name"] == GHOST_RULE], "a rule of a silent service has an alert"
    expect(page.locator("main")).not_to_contain_text(GHOST_RULE)

    summaries_before = {a["id"]: a["summary"] for a in before}
    for a in after:
        row = page.locator(f'tr[data-alert="{a["id"]}"]')
        expect(row.locator(f'a[href="/alerts/{a["id"]}"]')).to_have_text(a["name"])
        expect(row.locator("span.badge[data-state]")).to_have_attribute("data-state", a["state"])
        summary = row.locator("td").nth(2).inner_text().strip()
        assert agrees(summary, summaries_before[a["id"]], a["summary"]), \
            f"{a['name']} {a['labels']}: the row says {summary!r}, the API {a['summary']!r}"
        for k, v in a["labels"].items():
            if k != "alertname":
                expect(row.locator("td.labels")).to_contain_text(f"{k}={v}")
    expect(page.locator("p.lede")).to_contain_text("2 SLOs and 3 rules, evaluated every 1s")
    save_screenshot(page, "alerts")


# ------------------------------------------------------------- /alerts/{id}


def check_request_table(page: Page, table_id: str, server: SightlineServer, service: str,
                        route: str | None, failed: bool) -> None:
    links = page.locator(f"table#{table_id} tbody tr a.trace-link")
    # The page is rendered by the server: what it lists is there once it has loaded.
    if not links.count():
        said = page.locator(f"table#{table_id} + p.empty")
        raise AssertionError(f"table#{table_id} lists no request"
                             + (f" and says {said.inner_text()!r}" if said.count() else "") + f" ({page.url})")
    expect(links.first).to_be_visible()
    for link_href, name in zip(hrefs(links), texts(links)):
        assert SPAN_HREF.match(link_href), f"table#{table_id}: {link_href} is not /traces/<id>?span=<id>"
        if route:
            assert route in name, f"table#{table_id} lists {name!r}, not a request of {route}"
    trace_id, span_id = SPAN_HREF.match(hrefs(links)[0]).groups()
    spans = server.get(f"/api/v1/traces/{trace_id}").json()["spans"]
    span = next((s for s in spans if s["span_id"] == span_id), None)
    assert span is not None and span["service_name"] == service, f"{table_id}: span {span_id} of {trace_id}: {span}"
    if failed:
        assert span["status"] == "error", f"{table_id}: span {span_id} did not fail: {span}"


def test_incident_page_of_a_rule(page, monitor_server):
    always = the_alert(monitor_server, ALWAYS)
    # Its rate moves a little with every evaluation (see wait_settled): the page shows what the
    # API said just before or just after it, or a value between; at a minute's turn, look again.
    for _ in range(5):
        before = api_alert(monitor_server, always["id"])
        goto(page, ui(monitor_server, f"/alerts/{always['id']}"))
        detail = api_alert(monitor_server, always["id"])
        summary = page.locator("p#summary").inner_text().strip()
        value = page.locator("dl.facts #value").inner_text().strip()
        fmt = lambda d: f"{d['value']:.4f} (threshold {number_text(d['threshold'])})"  # noqa: E731
        if agrees(summary, before["summary"], detail["summary"]) and agrees(value, fmt(before), fmt(detail)):
            break
    else:
        pytest.fail(f"p#summary {summary!r} and #value {value!r}; the API said {detail['summary']!r}, "
                    f"{fmt(detail)!r}")
    h1 = page.locator("main h1")
    expect(h1).to_contain_text(ALWAYS)
    expect(h1.locator("span.badge[data-state]")).to_have_attribute("data-state", "firing")
    expect(h1).not_to_contain_text("silenced")
    assert re.search(r"\d", summary) and "orders" in summary, summary
    assert detail["value"] > 0 and detail["threshold"] == 0, detail
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("service=orders")
    expect(facts.locator("a#runbook")).to_have_attribute("href", ALWAYS_RUNBOOK)
    expect(facts.locator("#delivery-error"), "the receiver answers 200: nothing failed").to_have_count(0)

    expect_drawn_charts(page.locator("main #value-chart"), 1, "value chart")
    spec = chart_spec(page, "#value-chart")
    assert [s["label"] for s in spec["series"]] == ["value", "threshold"], spec["series"]
    assert 1 <= len(before["samples"]) <= len(spec["x"]) <= len(detail["samples"]), \
        f"#value-chart has {len(spec['x'])} points; the API had {len(before['samples'])}, then {len(detail['samples'])}"

    timeline = page.locator("table#timeline tbody tr.transition")
    expect(timeline).to_have_count(len(detail["timeline"]))
    shown_states = timeline.locator("span.badge[data-state]").evaluate_all("bs => bs.map(b => b.dataset.state)")
    assert shown_states == [t["state"] for t in reversed(detail["timeline"])], \
        f"timeline {shown_states}, API {detail['timeline']}"
    assert shown_states[0] == "firing", shown_states

    check_request_table(page, "failing-requests", monitor_server, "orders", None, failed=True)
    check_request_table(page, "slowest-requests", monitor_server, "orders", None, failed=False)
    logs = page.locator("table.logs tbody tr.log-line")
    expect(logs.first).to_be_visible()
    expect(logs.filter(has_not_text="orders")).to_have_count(0)
    expect(logs.locator("td.body").filter(has_text="shipping_address").first).to_be_visible()
    for href in hrefs(logs.locator("a.trace-link")):
        assert TRACE_HREF.search(href), f"an error log links to {href}"

    form = page.locator("form.silence")
    expect(form).to_have_attribute("method", "post")
    expect(form).to_have_attribute("action", "/silences")
    for field in ("matchers", "duration", "comment"):
        expect(form.locator(f'[name="{field}"]')).to_be_editable()
    save_screenshot(page, "alert")


def test_incident_page_of_an_slo_lists_requests_of_its_route(page, monitor_server):
    ticket = the_alert(monitor_server, ORDER_READS, severity="ticket")
    goto(page, ui(monitor_server, f"/alerts/{ticket['id']}"))
    detail = api_alert(monitor_server, ticket["id"])
    expect(page.locator("p#summary")).to_contain_text(ROUTE)
    assert agrees(page.locator("p#summary").inner_text().strip(), ticket["summary"], detail["summary"]), \
        (page.locator("p#summary").inner_text(), detail["summary"])
    expect(page.locator("dl.facts a#runbook")).to_have_attribute("href", "https://runbooks.example/order-reads")
    value = page.locator("dl.facts #value").inner_text()
    assert value.endswith(f"(threshold {number_text(detail['threshold'])})"), value
    expect_drawn_charts(page.locator("main #value-chart"), 1, "value chart")

    # The page looks from half an hour before the hour before the alert to now: all of the demo.
    # Its route served thousands of requests there, hundreds of them failed.
    served = monitor_server.rows(
        "SELECT count(*) AS total, sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS failed FROM spans "
        f"WHERE service_name = 'orders' AND kind = 'server' AND name = 'GET {ROUTE}'")[0]
    assert served["total"] > 100 and served["failed"] > 10, served
    wrong = []
    for table_id, failed in (("failing-requests", True), ("slowest-requests", False)):
        try:
            check_request_table(page, table_id, monitor_server, "orders", ROUTE, failed=failed)
        except AssertionError as exc:
            wrong.append(f"{exc} (GET {ROUTE} has {served['total']} requests, {served['failed']} failed, "
                         "in the page's range)")
    assert not wrong, "\n".join(wrong)


def test_silence_form_proposes_matchers_of_that_alert_only(page, monitor_server):
    """The form's matchers, as proposed, silence the alert whose page it is and no other."""
    alerts = api_alerts(monitor_server)
    wrong = []
    for a in (the_alert(monitor_server, ORDER_READS, severity="ticket"), the_alert(monitor_server, ALWAYS)):
        goto(page, ui(monitor_server, f"/alerts/{a['id']}"))
        proposed = matchers_of(page.locator('form.silence input[name="matchers"]').input_value())
        hit = sorted(f"{b['name']} {b['labels']}" for b in alerts
                     if all(b["labels"].get(k) == v for k, v in proposed.items()))
        if hit != [f"{a['name']} {a['labels']}"]:
            wrong.append(f"/alerts/{a['id']} ({a['name']}) proposes {proposed}, which also silences {hit}")
    assert not wrong, "\n".join(wrong)


# ---------------------------------------------------------------- journeys


def test_from_alerts_to_an_incident_to_a_trace(page, monitor_server):
    always = the_alert(monitor_server, ALWAYS)
    goto(page, ui(monitor_server, "/"))
    page.locator("nav a[href='/alerts']").click()
    expect(page).to_have_url(re.compile(r"/alerts$"))
    alert_row(page, "firing", always["id"]).locator(f'a[href="/alerts/{always["id"]}"]').click()
    expect(page).to_have_url(re.compile(rf"/alerts/{always['id']}$"))
    expect(page.locator("main h1")).to_contain_text(ALWAYS)

    link = page.locator("table#failing-requests a.trace-link").first
    trace_id, span_id = SPAN_HREF.match(link.get_attribute("href")).groups()
    name = link.inner_text().strip()
    link.click()
    expect(page).to_have_url(re.compile(rf"/traces/{trace_id}\?span={span_id}$"))
    expect(page.locator(f'#waterfall .span-row[data-span-id="{span_id}"]')).to_be_visible()
    expect(page.locator("#span-panel")).to_contain_text(name)
    span = next(s for s in monitor_server.get(f"/api/v1/traces/{trace_id}").json()["spans"] if s["span_id"] == span_id)
    assert span["service_name"] == "orders" and span["status"] == "error", span


def test_services_page_marks_the_service_with_a_firing_alert(page, monitor_server):
    firing = {a["service"] for a in api_alerts(monitor_server) if a["state"] == "firing"}
    assert "orders" in firing, firing
    goto(page, ui(monitor_server, "/", range=RANGE))
    table = page.locator("table#services")
    for service in DEMO_SERVICES:
        row = table.locator(f'tr[data-service="{service}"]')
        expect(row).to_have_count(1)
        if service in firing:
            expect(row).to_have_attribute("data-firing", "")
            expect(row.locator("a.badge.firing")).to_have_attribute("href", "/alerts")
        else:
            assert row.get_attribute("data-firing") is None, f"{service} is marked firing"
            expect(row.locator("a.badge.firing")).to_have_count(0)
    expect(table.locator(f'tr[data-service="{GHOST}"]'), "a service that never sent is listed").to_have_count(0)
    table.locator('tr[data-service="orders"] a.badge.firing').click()
    expect(page).to_have_url(re.compile(r"/alerts$"))
    expect(page.locator("table#firing")).to_be_visible()


def test_silence_round_trip(page, monitor_server):
    always = the_alert(monitor_server, ALWAYS)
    alert_id = always["id"]
    comment = f"ui test {time.time_ns()}"
    goto(page, ui(monitor_server, f"/alerts/{alert_id}"))
    form = page.locator("form.silence")
    matchers = form.locator('input[name="matchers"]').input_value()
    assert matchers_of(matchers).items() <= always["labels"].items(), \
        f"the proposed matchers {matchers!r} do not all hold for the alert's labels {always['labels']}"
    expect(form.locator('input[name="duration"]')).to_have_value("2h")
    form.locator('input[name="duration"]').fill("10m")
    form.locator('input[name="comment"]').fill(comment)
    with page.expect_response(lambda r: urlsplit(r.url).path == "/silences" and r.request.method == "POST") as posted:
        with page.expect_navigation():
            form.locator("button[type=submit]").click()
    assert posted.value.status in (302, 303), f"POST /silences answered {posted.value.status}"
    silence = None
    try:
        # Back on the incident page, silenced.
        expect(page).to_have_url(re.compile(rf"/alerts/{alert_id}$"))
        found = [s for s in monitor_server.get("/api/v1/silences").json()["silences"] if s["comment"] == comment]
        assert len(found) == 1, f"the API lists {len(found)} silences with the comment {comment!r}"
        silence = found[0]
        assert silence["active"] and silence["matchers"] == matchers_of(matchers), silence
        left_s = silence["ends_at_ns"] / 1e9 - time.time()
        assert 9 * 60 < left_s <= 10 * 60 + 5, f"a 10m silence ends in {left_s:.0f} s"
        assert api_alert(monitor_server, alert_id)["silenced_by"] == silence["id"]
        expect(page.locator("main h1 span.badge.muted")).to_have_text("silenced")
        expect(page.locator("main h1 span.badge[data-state]")).to_have_attribute("data-state", "firing")

        # /alerts: in the Silenced table, no longer among the firing; the silence listed with End now.
        goto(page, ui(monitor_server, "/alerts"))
        expect(alert_row(page, "silenced", alert_id)).to_have_attribute("data-state", "firing")
        expect(alert_row(page, "silenced", alert_id).locator("span.badge.muted")).to_have_text("silenced")
        expect(alert_row(page, "firing", alert_id)).to_have_count(0)
        listed = page.locator(f'table#silences tr[data-silence="{silence["id"]}"]')
        expect(listed).to_contain_text(comment)
        for k, v in matchers_of(matchers).items():
            expect(listed).to_contain_text(f"{k}={v}")
        end_now = listed.locator("form button", has_text="End now")
        expect(end_now).to_have_count(1)
        expect(listed.locator("form")).to_have_attribute("action", f"/silences/{silence['id']}/expire")
        save_screenshot(page, "alerts-silenced")

        with page.expect_navigation():
            end_now.click()
        expect(page).to_have_url(re.compile(r"/alerts$"))
        ended = next(s for s in monitor_server.get("/api/v1/silences").json()["silences"] if s["id"] == silence["id"])
        assert not ended["active"], ended
        assert api_alert(monitor_server, alert_id)["silenced_by"] is None
        expect(listed.locator("form button", has_text="End now")).to_have_count(0)
        expect(alert_row(page, "firing", alert_id)).to_have_count(1)
        expect(alert_row(page, "silenced", alert_id)).to_have_count(0)
        goto(page, ui(monitor_server, f"/alerts/{alert_id}"))
        expect(page.locator("main h1 span.badge[data-state]")).to_have_attribute("data-state", "firing")
        expect(page.locator("main h1")).not_to_contain_text("silenced")
    finally:
        if silence is not None:  # leave no silence behind for the other tests, whatever happened
            monitor_server.session.delete(f"{monitor_server.api_url}/api/v1/silences/{silence['id']}", timeout=10)
