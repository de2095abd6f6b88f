"""The pages that say what changed, in headless Chromium, over the bad-release drill.

One server per module watches with the SLO that `sightline demo --list` gives for bad-release
(order reads of orders, 99.5 %), evaluated every second, and is fed by `sightline demo --scenario
bad-release --backfill 30m`: twenty minutes of a healthy shop on orders 1.4.2, then ten of 1.5.0
failing 30 % of the order reads with a KeyError. Its page alert fires with an explanation, and the
new version is recorded as an observed deploy. Then:

- the incident page `/alerts/{id}`: section#next-steps names orders 1.5.0, says how long after its
  deploy this began and links a.compare-link to /compare of 1.4.2 and 1.5.0 (which lands on the
  verdict `worse`); table#causes holds the API's explanation (tr[data-key][data-value], shares);
  table#example-traces links (a.trace-link) to spans that ran 1.5.0 and failed; section#around-start
  draws its two charts, the errors only from the fault on; table#timeline holds the API's changes
  of state (tr.transition) and the deploy of 1.5.0 (tr.deploy[data-version]), newest first;
  section#log-patterns marks the KeyError pattern new;
- `/compare`: #compare-verdict's badge and tr.compare-route rows (data-route, data-verdict, the
  requests on each side) are GET /api/v1/compare's answer, the order reads worse, the KeyError in
  #new-errors-table with a trace that raised it, #compare-cli the command line that gives the same
  verdict; without parameters the form proposes the newest version as candidate and the one before
  as baseline, and #versions-seen lists both;
- `/logs?view=patterns`: table#log-patterns-table rows (data-count, data-new, span.new-pattern,
  svg.sparkline) are GET /api/v1/logs/patterns' answer for the same window, and the tabs of
  nav#log-views switch between lines and patterns.
Screenshots: incident, compare.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from conftest import SightlineServer, _cleanup, wait_for
from test_monitor import api_json, start_server, write_config
from test_scenarios import ANNOUNCED, run_demo, scenario_list
from test_ui import TRACE_HREF, expect_drawn_charts, goto, hrefs, parse_time, save_screenshot, texts, ui
from test_ui_monitor import SPAN_HREF, api_alert, chart_spec

SERVICE, BASELINE, CANDIDATE = "orders", "1.4.2", "1.5.0"
ROUTE = "/api/orders/{order_id}"
COMPARE_PATH = f"/compare?service={SERVICE}&baseline={BASELINE}&candidate={CANDIDATE}"
KEY_ERROR = "KeyError"
SETTLE_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def drill(tmp_path_factory) -> dict:
    """The server of the bad-release drill, its page alert firing with an explanation and the
    deploy of 1.5.0 recorded: {"server", "alert" (the page alert), "fault_start", "demo_end"}."""
    base = tmp_path_factory.mktemp("ui-changes")
    snippet = scenario_list()["bad-release"]["alert"]
    config = write_config(base / "sightline.toml", '[monitor]\nevaluation_interval = "1s"\n\n' + snippet)
    server = start_server(base, "ui-changes", config)
    try:
        out = run_demo(server, "bad-release")
        demo_end = datetime.now(timezone.utc)
        announced = ANNOUNCED.search(out.stderr)
        assert announced, f"the demo did not announce its scenario:\n{out.stderr}"

        def page_alert():
            return next((a for a in api_json(server, "/api/v1/alerts")["alerts"]
                         if a["labels"].get("severity") == "page" and a["state"] == "firing" and a["explanation"]),
                        None)
        alert = wait_for(page_alert, timeout=SETTLE_TIMEOUT_S, interval=0.5,
                         what="order-reads' page alert firing with an explanation")
        wait_for(lambda: deploys_of(server, CANDIDATE), timeout=SETTLE_TIMEOUT_S, interval=0.5,
                 what=f"the observed deploy of {SERVICE} {CANDIDATE}")
    except BaseException:
        _cleanup(server)
        raise
    yield {"server": server, "alert": alert, "fault_start": parse_time(announced.group(3)), "demo_end": demo_end}
    _cleanup(server)


# ----------------------------------------------------------------- helpers


def deploys_of(server: SightlineServer, version: str) -> list[dict]:
    return [d for d in api_json(server, "/api/v1/deploys", service=SERVICE)["deploys"] if d["version"] == version]


def shown_time(api_time: str) -> str:
    """An API time as the pages write it: 2026-11-22T05:31:02.123456789Z -> 2026-11-22 05:31:02.123."""
    return f"{api_time[:10]} {api_time[11:23]}"


def percent(share: float) -> str:
    """A share as the tables show it (layout::percent)."""
    if share == 0:
        return "0%"
    return "<0.1%" if share < 0.001 else f"{share * 100:.1f}%"


def span_row(server: SightlineServer, trace_id: str, span_id: str) -> dict | None:
    rows = server.rows("SELECT service_name, service_version, status, exception_type, http_route FROM spans "
                       f"WHERE trace_id = '{trace_id}' AND span_id = '{span_id}'")
    return rows[0] if rows else None


def ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1000


def pattern_rows(page: Page) -> list[dict]:
    """table#log-patterns-table on the page: one dict per row."""
    return page.locator("table#log-patterns-table tbody tr.pattern").evaluate_all("""rs => rs.map(r => ({
        pattern: r.querySelector('code.pattern-text').textContent,
        count: Number(r.dataset.count), baseline: Number(r.dataset.baseline), new: r.dataset.new,
        marked_new: r.querySelectorAll('span.new-pattern').length,
        sparklines: r.querySelectorAll('svg.sparkline').length,
        series: (r.querySelector('svg.sparkline') || {getAttribute: () => ''}).getAttribute('aria-label'),
    }))""")


# ------------------------------------------------------------ the incident page


def test_incident_next_steps_name_the_release_and_propose_the_comparison(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    detail = api_alert(server, alert["id"])
    top = detail["explanation"][0]
    assert (top["key"], top["value"]) == ("service.version", CANDIDATE), detail["explanation"]
    goto(page, ui(server, f"/alerts/{alert['id']}"))
    steps = page.locator("section#next-steps")
    expect(steps.locator("li").first).to_be_visible()
    began = max(parse_time(t["time"]) for t in detail["timeline"] if t["state"] in ("pending", "firing"))
    deployed = parse_time(deploys_of(server, CANDIDATE)[0]["time"])
    minutes = int((began - deployed).total_seconds() // 60)
    after = {0: "less than a minute", 1: "1 minute"}.get(minutes, f"{minutes} minutes")
    first = steps.locator("li").first.inner_text().strip()
    expected = (f"This began {after} after {SERVICE} {CANDIDATE} was deployed, and "
                f"{top['selection_share'] * 100:.0f}% of the failing requests run {CANDIDATE} "
                f"(vs {top['baseline_share'] * 100:.0f}% of the others): compare {BASELINE} and {CANDIDATE}, "
                f"or roll back to {BASELINE}.")
    assert first == expected, f"the first next step says {first!r}, expected {expected!r}"
    link = steps.locator("a.compare-link")
    expect(link).to_have_count(1)
    href = link.get_attribute("href")
    assert urlsplit(href).path == "/compare" and parse_qs(urlsplit(href).query) == {
        "service": [SERVICE], "baseline": [BASELINE], "candidate": [CANDIDATE]}, \
        f"a.compare-link goes to {href}, expected {COMPARE_PATH}"


def test_incident_causes_are_the_apis_explanation(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    detail = api_alert(server, alert["id"])
    causes = detail["explained"]["causes"]
    assert [(c["key"], c["value"]) for c in causes] == [(c["key"], c["value"]) for c in detail["explanation"]], \
        f"the alert's explanation {detail['explanation']} is not its explained causes {causes}"
    goto(page, ui(server, f"/alerts/{alert['id']}"))
    rows = page.locator("table#causes tbody tr")
    expect(rows).to_have_count(len(causes))
    shown = rows.evaluate_all("""rs => rs.map(r => ({key: r.dataset.key, value: r.dataset.value,
        cells: [...r.querySelectorAll('td')].map(td => td.textContent.trim())}))""")
    wrong = []
    for i, (row, cause) in enumerate(zip(shown, causes)):
        expected = [cause["key"], cause["value"] + (" (pattern)" if cause["grouped"] else ""),
                    percent(cause["selection_share"]), percent(cause["baseline_share"]),
                    "all" if cause["risk_ratio"] is None else f"{cause['risk_ratio']:.1f}×", cause["summary"]]
        if (row["key"], row["value"]) != (cause["key"], cause["value"]) or row["cells"] != expected:
            wrong.append(f"row {i + 1}: {row}, the API: {expected}")
    assert not wrong, "table#causes differs from the API's explanation:\n" + "\n".join(wrong)
    hint = page.locator("section#explanation p.hint").first
    expect(hint).to_contain_text(f"{detail['explained']['bad_requests']} failing requests against "
                                 f"{detail['explained']['other_requests']} others")


def test_incident_example_traces_ran_the_release_and_failed(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    goto(page, ui(server, f"/alerts/{alert['id']}"))
    expect(page.locator("section#examples h2")).to_contain_text(f"service.version={CANDIDATE}")
    links = page.locator("table#example-traces tbody tr a.trace-link")
    assert links.count() >= 1, "table#example-traces links no trace"
    wrong = []
    for href, name in zip(hrefs(links), texts(links)):
        m = SPAN_HREF.match(href)
        if not m:
            wrong.append(f"{href} is not /traces/<trace id>?span=<span id>")
            continue
        span = span_row(server, *m.groups())
        if not (span and span["service_name"] == SERVICE and span["service_version"] == CANDIDATE
                and span["status"] == "error"):
            wrong.append(f"{name} ({href}) is {span}: expected a failed span of {SERVICE} {CANDIDATE}")
    assert not wrong, "\n".join(wrong)
    expect(page.locator("table#example-traces tbody tr span.version").first).to_have_text(CANDIDATE)

    trace_id, span_id = SPAN_HREF.match(hrefs(links)[0]).groups()
    links.first.click()
    expect(page).to_have_url(re.compile(rf"/traces/{trace_id}\?span={span_id}$"))
    expect(page.locator(f'#waterfall .span-row[data-span-id="{span_id}"]')).to_be_visible()


def test_incident_charts_around_the_start_show_errors_from_the_fault_on(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    goto(page, ui(server, f"/alerts/{alert['id']}"))
    section = page.locator("section#around-start")
    expect(section.locator("div.chart")).to_have_count(2)
    expect_drawn_charts(section.locator("div.chart"), 2, "section#around-start")
    errors = chart_spec(page, "section#around-start #chart-errors")
    x, values = errors["x"], errors["series"][0]["values"]
    bucket = x[1] - x[0]
    fault = drill["fault_start"].timestamp()
    failing = [t for t, v in zip(x, values) if v]
    assert failing, f"#chart-errors shows no error over {len(x)} buckets"
    assert min(failing) >= fault - bucket, \
        f"#chart-errors shows errors from {min(failing)}, the fault began at {fault} (buckets of {bucket} s)"
    assert [t for t in x if t < fault - bucket], "#chart-errors does not reach back before the fault"


def test_incident_timeline_holds_the_transitions_and_the_deploy(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    deploy = deploys_of(server, CANDIDATE)[0]

    def agrees():
        before = api_alert(server, alert["id"])["timeline"]
        goto(page, ui(server, f"/alerts/{alert['id']}"))
        after = api_alert(server, alert["id"])["timeline"]
        return (before, after) if before == after else None
    timeline, _ = wait_for(agrees, timeout=20, interval=0.5, what="the timeline to stay put while the page loads")
    rows = page.locator("table#timeline tbody tr").evaluate_all("""rs => rs.map(r => ({
        kind: r.className, version: r.dataset.version || null,
        time: r.querySelector('td.time').textContent.trim(),
        state: (r.querySelector('span.badge[data-state]') || {dataset: {}}).dataset.state || null}))""")
    transitions = [r for r in rows if r["kind"] == "transition"]
    expected = [{"kind": "transition", "version": None, "time": shown_time(t["time"]), "state": t["state"]}
                for t in reversed(timeline)]
    assert transitions == expected, f"tr.transition rows {transitions}, the API's timeline (newest first) {expected}"
    deploys = [r for r in rows if r["kind"] == "deploy"]
    assert deploys == [{"kind": "deploy", "version": CANDIDATE, "time": shown_time(deploy["time"]), "state": None}], \
        f"tr.deploy rows {deploys}, the API's deploy {deploy}"
    expect(page.locator(f"table#timeline tr.deploy[data-version='{CANDIDATE}']")).to_contain_text(
        f"{SERVICE} {CANDIDATE} (observed)")
    times = [r["time"] for r in rows]
    assert times == sorted(times, reverse=True), f"the timeline is not newest first: {times}"
    assert [r["state"] for r in transitions][0] == "firing", transitions


def test_incident_log_patterns_mark_the_key_error_new(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    goto(page, ui(server, f"/alerts/{alert['id']}"))
    rows = page.locator("section#log-patterns table#log-patterns-table tbody tr.pattern")
    key_error = rows.filter(has_text=KEY_ERROR)
    expect(key_error).to_have_count(1)
    expect(key_error).to_have_attribute("data-new", "true")
    expect(key_error.locator("span.new-pattern")).to_have_text("new")
    expect(key_error.locator("td.body")).to_contain_text("shipping_address")
    count = int(key_error.get_attribute("data-count"))
    logged = server.rows(f"SELECT count(*) AS n FROM logs WHERE service_name = '{SERVICE}' "
                         f"AND body LIKE '%{KEY_ERROR}%'")[0]["n"]
    assert 0 < count <= logged, f"the KeyError pattern counts {count} lines, orders logged {logged} such lines"
    assert int(key_error.get_attribute("data-baseline")) == 0, key_error.get_attribute("data-baseline")
    save_screenshot(page, "incident")


def test_incident_compare_link_lands_on_the_verdict_worse(page: Page, drill):
    server, alert = drill["server"], drill["alert"]
    goto(page, ui(server, f"/alerts/{alert['id']}"))
    page.locator("section#next-steps a.compare-link").click()
    expect(page).to_have_url(re.compile(r"/compare\?"))
    assert parse_qs(urlsplit(page.url).query) == {"service": [SERVICE], "baseline": [BASELINE],
                                                  "candidate": [CANDIDATE]}, page.url
    expect(page.locator("#compare-verdict span.badge[data-verdict]")).to_have_attribute("data-verdict", "worse")
    expect(page.locator("#compare-verdict h2")).to_contain_text(f"service.version={CANDIDATE} against {BASELINE}")


# ------------------------------------------------------------- the compare page


def test_compare_page_is_the_apis_answer_route_by_route(page: Page, drill):
    server = drill["server"]
    goto(page, ui(server, COMPARE_PATH))
    answer = api_json(server, "/api/v1/compare", service=SERVICE, baseline=BASELINE, candidate=CANDIDATE)
    assert answer["verdict"] == "worse", f"the API's verdict on {CANDIDATE}: {answer['verdict']}"
    expect(page.locator("#compare-verdict span.badge[data-verdict]")).to_have_attribute("data-verdict",
                                                                                        answer["verdict"])
    shown = page.locator("table#compare-routes tbody tr.compare-route").evaluate_all("""rs => rs.map(r => ({
        route: r.dataset.route, verdict: r.dataset.verdict,
        requests: r.querySelectorAll('td')[1].textContent.trim()}))""")
    expected = [{"route": r["route"], "verdict": r["verdict"],
                 "requests": f"{r['baseline']['requests']} → {r['candidate']['requests']}"} for r in answer["routes"]]
    assert shown == expected, f"tr.compare-route rows {shown}, the API's routes {expected}"
    verdicts = {r["route"]: r["verdict"] for r in shown}
    assert verdicts.get(ROUTE) == "worse", f"{ROUTE} is {verdicts.get(ROUTE)!r} on the page: {verdicts}"
    reasons = page.locator(f'tr.compare-route[data-route="{ROUTE}"] td.reasons')
    expect(reasons).to_contain_text("error rate")


def test_compare_page_lists_the_new_key_error_with_a_trace_that_raised_it(page: Page, drill):
    server = drill["server"]
    answer = api_json(server, "/api/v1/compare", service=SERVICE, baseline=BASELINE, candidate=CANDIDATE)
    new = {e["error"]: e for e in answer["new_errors"]}
    assert KEY_ERROR in new, f"the API's new errors: {answer['new_errors']}"
    goto(page, ui(server, COMPARE_PATH))
    row = page.locator(f"#new-errors-table tr.new-error[data-error='{KEY_ERROR}']")
    expect(row).to_have_count(1)
    expect(row.locator("td.num")).to_have_text(str(new[KEY_ERROR]["count"]))
    # (Any trace that raised it: the API picks its example afresh at every answer.)
    link = row.locator("a.trace-link")
    expect(link).to_have_attribute("href", re.compile(r"^/traces/[0-9a-f]{32}$"))
    trace_id = TRACE_HREF.search(link.get_attribute("href")).group(1)
    expect(link).to_have_text(f"{trace_id[:8]}…")
    raised = server.rows(f"SELECT service_name, service_version FROM spans WHERE trace_id = '{trace_id}' "
                         f"AND exception_type = '{KEY_ERROR}'")
    assert {(r["service_name"], r["service_version"]) for r in raised} == {(SERVICE, CANDIDATE)}, \
        f"the example trace {trace_id} raised KeyError in {raised}, expected in {SERVICE} {CANDIDATE}"
    save_screenshot(page, "compare")


def test_compare_page_gives_the_command_line_of_its_verdict(page: Page, drill):
    server = drill["server"]
    goto(page, ui(server, COMPARE_PATH))
    cli = page.locator("#compare-cli").inner_text().strip()
    expected = f"sightline compare --service {SERVICE} --baseline {BASELINE} --candidate {CANDIDATE} --since 1h"
    assert cli == expected, f"#compare-cli says {cli!r}, expected {expected!r}"
    # The command, run against this server, comes to the page's verdict: a regression, exit 1.
    out = server.cli(*cli.split()[1:])
    assert out.returncode == 1, (f"`{cli}` exited {out.returncode}; the page says worse\n"
                                 f"--- stdout ---\n{out.stdout}\n--- stderr ---\n{out.stderr}")
    assert ROUTE in out.stdout + out.stderr, f"`{cli}` does not name the worse route:\n{out.stdout}{out.stderr}"


def test_compare_page_without_parameters_proposes_the_newest_release(page: Page, drill):
    server = drill["server"]
    goto(page, ui(server, "/compare"))
    expect(page.locator("#compare-form select[name=service]")).to_have_value(SERVICE)
    expect(page.locator("input#baseline")).to_have_value(BASELINE)
    expect(page.locator("input#candidate")).to_have_value(CANDIDATE)
    seen = page.locator("#versions-seen")
    versions = seen.locator("code").all_inner_texts()
    assert versions == [BASELINE, CANDIDATE], f"#versions-seen lists {versions}, expected {BASELINE}, {CANDIDATE}"
    answer = api_json(server, "/api/v1/compare", service=SERVICE, baseline=BASELINE, candidate=CANDIDATE)
    expect(seen).to_contain_text(f"{BASELINE} ({answer['baseline_requests']} requests)")
    expect(seen).to_contain_text(f"{CANDIDATE} ({answer['candidate_requests']} requests)")
    expect(page.locator("#compare-verdict span.badge[data-verdict]")).to_have_attribute("data-verdict",
                                                                                        answer["verdict"])


# ------------------------------------------------------------- the log patterns


def test_log_patterns_are_the_apis_for_the_same_window(page: Page, drill):
    """The ten minutes of the fault against the ten healthy minutes before: the KeyError is new,
    the receipts logged all along are not."""
    server = drill["server"]
    start = drill["fault_start"]
    end = min(drill["demo_end"], start + timedelta(minutes=10))
    window = {"service": SERVICE, "start": str(ns(start)), "end": str(ns(end))}
    goto(page, ui(server, "/logs", view="patterns", **window))
    answer = api_json(server, "/api/v1/logs/patterns", limit="100", **window)
    assert answer["patterns"], f"the API finds no pattern of {SERVICE} in {window}"
    shown = pattern_rows(page)
    expected = [{"pattern": p["pattern"], "count": p["count"], "baseline": p["baseline_count"],
                 "new": "true" if p["new"] else "false", "marked_new": 1 if p["new"] else 0, "sparklines": 1,
                 "series": "lines per bucket: " + " ".join(str(v) for v in p["series"])}
                for p in answer["patterns"]]
    assert shown == expected, f"table#log-patterns-table:\n{shown}\nthe API for the same window:\n{expected}"
    by_text = {p["pattern"]: p for p in shown}
    key_error = [p for t, p in by_text.items() if KEY_ERROR in t]
    assert len(key_error) == 1 and key_error[0]["marked_new"], f"the KeyError pattern is not marked new: {shown}"
    receipts = [p for t, p in by_text.items() if "receipt queued" in t]
    assert len(receipts) == 1 and receipts[0]["baseline"] > 0 and not receipts[0]["marked_new"], \
        f"the receipts, logged before the fault too, are marked new: {receipts}"
    expect(page.locator("#patterns-summary")).to_contain_text(
        f"{answer['lines']} lines in {answer['distinct']} patterns")


def test_log_view_tabs_switch_between_lines_and_patterns(page: Page, drill):
    server = drill["server"]
    goto(page, ui(server, "/logs", service=SERVICE))
    tabs = page.locator("nav#log-views")
    lines_tab, patterns_tab = tabs.get_by_role("link", name="Lines"), tabs.get_by_role("link", name="Patterns")
    expect(lines_tab).to_have_attribute("aria-current", "page")
    expect(page.locator("table.logs tbody tr.log-line").first).to_be_visible()
    expect(page.locator("table#log-patterns-table")).to_have_count(0)

    patterns_tab.click()
    expect(page).to_have_url(re.compile(r"[?&]view=patterns(&|$)"))
    assert parse_qs(urlsplit(page.url).query).get("service") == [SERVICE], f"the service filter is lost: {page.url}"
    expect(page.locator("nav#log-views a#patterns-view")).to_have_attribute("aria-current", "page")
    expect(page.locator("table#log-patterns-table")).to_be_visible()
    expect(page.locator("table.logs tr.log-line")).to_have_count(0)
    # The default window (the last hour) holds the whole drill: the API's patterns of the last hour.
    answer = api_json(server, "/api/v1/logs/patterns", service=SERVICE, since="1h", limit="100")
    shown = {p["pattern"]: p["count"] for p in pattern_rows(page)}
    expected = {p["pattern"]: p["count"] for p in answer["patterns"]}
    assert shown == expected, f"the Patterns tab shows {shown}; the API's patterns of the last hour: {expected}"
    assert all(p["sparklines"] == 1 for p in pattern_rows(page)), "a pattern row without its svg.sparkline"

    page.locator("nav#log-views").get_by_role("link", name="Lines").click()
    expect(page).not_to_have_url(re.compile(r"view=patterns"))
    assert parse_qs(urlsplit(page.url).query).get("service") == [SERVICE], f"the service filter is lost: {page.url}"
    expect(page.locator("nav#log-views").get_by_role("link", name="Lines")).to_have_attribute("aria-current", "page")
    expect(page.locator("table.logs tbody tr.log-line").first).to_be_visible()
    expect(page.locator("table#log-patterns-table")).to_have_count(0)
    services = set(page.locator("table.logs tbody tr.log-line").evaluate_all(
        "rs => rs.map(r => r.textContent.includes('orders'))"))
    assert services == {True}, "the Lines tab shows lines of other services than orders"
