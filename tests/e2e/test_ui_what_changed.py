"""The incident and compare pages in headless Chromium, over the bad-release drill: orders 1.5.0
fails order reads, the order-reads SLO pages. The incident page proposes comparing 1.4.2 with
1.5.0 (its link lands on /compare with the verdict `worse`), lists the explanation the API has,
example traces that run 1.5.0 and failed, the deploy of 1.5.0 in its timeline and the KeyError log
pattern as new; /compare shows the API's verdict and routes; /logs?view=patterns groups the
lines as the API does."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from conftest import SightlineServer, _cleanup, sightline_bin, wait_for
from test_drills import listed
from test_monitor import api_json, start_server, write_config
from test_ui import expect_drawn_charts, goto, save_screenshot, ui


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> tuple[SightlineServer, dict]:
    base = tmp_path_factory.mktemp("ui-drill")
    alert = "\n".join(listed()["bad-release"]["alert"]) + "\n"
    config = write_config(base / "sightline.toml", '[monitor]\nevaluation_interval = "1s"\n\n' + alert)
    srv = start_server(base, "ui-drill", config)
    try:
        out = subprocess.run(
            [sightline_bin(), "demo", "--endpoint", srv.otlp_http_url, "--scenario", "bad-release", "--backfill",
             "30m", "--duration", "2s", "--rate", "8"], capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr
        page_alert = wait_for(lambda: next((a for a in api_json(srv, "/api/v1/alerts")["alerts"]
                                            if a["labels"].get("severity") == "page" and a["state"] == "firing"
                                            and a["explanation"]), None),
                              timeout=60, interval=0.5, what="the page alert firing with an explanation")
        # The observed deploy of 1.5.0 is recorded by the cycle that follows.
        wait_for(lambda: any(d["version"] == "1.5.0" for d in api_json(srv, "/api/v1/deploys")["deploys"]),
                 timeout=30, interval=0.5, what="the observed deploy of 1.5.0")
    except BaseException:
        _cleanup(srv)
        raise
    yield srv, page_alert
    _cleanup(srv)


def test_the_incident_page_starts_from_the_cause(page: Page, drill):
    srv, alert = drill
    detail = api_json(srv, f"/api/v1/alerts/{alert['id']}")
    goto(page, ui(srv, f"/alerts/{alert['id']}"))
    steps = page.locator("section#next-steps")
    expect(steps).to_contain_text("orders 1.5.0 was deployed")
    expect(steps).to_contain_text("of the failing requests run 1.5.0")
    link = steps.locator("a.compare-link")
    expect(link).to_have_count(1)
    query = parse_qs(urlsplit(link.get_attribute("href")).query)
    assert query == {"service": ["orders"], "baseline": ["1.4.2"], "candidate": ["1.5.0"]}, query

    causes = page.locator("table#causes tbody tr")
    expect(causes).to_have_count(len(detail["explanation"]))
    shown = causes.evaluate_all("rs => rs.map(r => [r.dataset.key, r.dataset.value])")
    assert shown == [[c["key"], c["value"]] for c in detail["explanation"]], shown

    examples = page.locator("table#example-traces tbody tr")
    assert examples.count() >= 1, "no example traces of the top cause"
    for href in page.locator("table#example-traces a.trace-link").evaluate_all("as => as.map(a => a.href)"):
        trace_id = re.search(r"/traces/([0-9a-f]{32})", href).group(1)
        rows = srv.rows(f"SELECT service_version, status FROM spans WHERE trace_id = '{trace_id}' "
                        "AND service_name = 'orders' AND kind = 'server'")
        assert rows and rows[0]["service_version"] == "1.5.0" and rows[0]["status"] == "error", (trace_id, rows)

    expect(page.locator("table#timeline tr.deploy[data-version='1.5.0']")).to_have_count(1)
    expect(page.locator("table#timeline tr.transition")).to_have_count(len(detail["timeline"]))
    expect_drawn_charts(page.locator("section#around-start figure"), 2, "errors and latency around the start")
    new_patterns = page.locator("section#log-patterns tr.pattern[data-new='true']")
    expect(new_patterns.filter(has_text="KeyError")).to_have_count(1)
    save_screenshot(page, "incident")

    link.click()
    expect(page.locator("#compare-verdict span.badge[data-verdict]")).to_have_attribute("data-verdict", "worse")


def test_the_compare_page_shows_the_apis_verdict_route_by_route(page: Page, drill):
    srv, _ = drill
    goto(page, ui(srv, "/compare"))
    # Without parameters: the newest version as the candidate, the one before as the baseline.
    expect(page.locator("input#baseline")).to_have_value("1.4.2")
    expect(page.locator("input#candidate")).to_have_value("1.5.0")
    expect(page.locator("#versions-seen")).to_contain_text("1.4.2")
    answer = api_json(srv, "/api/v1/compare", service="orders", baseline="1.4.2", candidate="1.5.0", since="1h")
    expect(page.locator("#compare-verdict span.badge[data-verdict]")).to_have_attribute("data-verdict",
                                                                                        answer["verdict"])
    rows = page.locator("table#compare-routes tr.compare-route")
    shown = dict(rows.evaluate_all("rs => rs.map(r => [r.dataset.route, r.dataset.verdict])"))
    assert shown == {r["route"]: r["verdict"] for r in answer["routes"]}, (shown, answer["routes"])
    assert shown["/api/orders/{order_id}"] == "worse", shown
    expect(page.locator("#new-errors-table tr.new-error[data-error='KeyError'] a.trace-link")).to_have_count(1)
    expect(page.locator("#compare-cli")).to_contain_text("sightline compare --service orders --baseline 1.4.2 "
                                                         "--candidate 1.5.0")
    save_screenshot(page, "compare")


def test_the_logs_page_groups_lines_into_patterns(page: Page, drill):
    srv, _ = drill
    goto(page, ui(srv, "/logs", service="orders", range="1h"))
    page.locator("nav#log-views a#patterns-view").click()
    table = page.locator("table#log-patterns-table")
    expect(table).to_be_visible()
    answer = api_json(srv, "/api/v1/logs/patterns", service="orders", since="1h", limit="100")
    rows = table.locator("tr.pattern")
    expect(rows).to_have_count(len(answer["patterns"]))
    counts = sorted(int(c) for c in rows.evaluate_all("rs => rs.map(r => r.dataset.count)"))
    assert counts == sorted(p["count"] for p in answer["patterns"]), counts
    expect(rows.filter(has_text="KeyError").locator("span.new-pattern")).to_have_count(1)
    assert table.locator("svg.sparkline").count() == rows.count()
