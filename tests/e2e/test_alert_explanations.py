"""Alerts explained as they begin firing: the monitor asks what sets the alert's bad requests
apart (GET /api/v1/explain's question, over the alert's window ending at the firing), keeps the
top three causes on the alert, sends them in the notification's annotations, and keeps them
across a restart.

One server (module fixture) evaluating every second, notifying a real webhook receiver
(`webhook_receiver.py`), on hand-made spans of the last few minutes whose cause is known:

- the explanation is there as soon as the alert is seen firing: a watcher reads the alerts
  every few milliseconds from before the data is sent, and no look may show a firing alert
  with a known cause and no explanation;
- the rule `orders-errors` (error rate over 5m above 10%): only orders 1.5.0 fails, so the
  alert's explanation[0] is service.version=1.5.0 with every failure, and `explained` holds the
  question (errors, over 15 minutes, the shortest explanation window, ending when it fired),
  the counts sent and the same causes `GET /api/v1/explain` gives for that window;
- the SLO `billing-availability` (30d, route /pay): tenant acme fails on /pay, and globex fails
  on another route the SLO does not watch: the cause is tenant.id=acme, counted on /pay only;
- the rule `calm-errors`: failures spread at random explain nothing: no causes, a summary that
  says the requests look alike, and no explanation annotations;
- the first notification of each alert (Alertmanager's webhook payload) carries
  `explanation_1`… and `explanation` (the causes joined by "; ");
- after a SIGTERM restart on the same data folder the alerts still fire with the same
  explanation and question (persisted, not asked again).
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from conftest import SightlineServer, _cleanup, wait_for
from otlp_spans import request, text_attr
from test_explain import describe, times_between, wait_stored
from test_monitor import (EXTERNAL_URL, MINUTE_NS, alert_by_labels, api_json, notify_table, parse_time_ns,
                          slo_labels, wait_firing, write_config)
from webhook_receiver import WebhookReceiver

EXPLAIN_WINDOW_NS = 15 * MINUTE_NS  # a 5m rule's window, raised to the shortest an explanation reads
SLO_EXPLAIN_WINDOW_NS = 30 * MINUTE_NS
TENANTS = ["acme", "globex", "initech", "umbrella", "hooli"]
ORDERS = {"alertname": "orders-errors", "service": "orders"}
CALM = {"alertname": "calm-errors", "service": "calm"}
BILLING_PAGE = slo_labels("billing-availability", "billing", "page", route="/pay")


def rule(name: str, service: str) -> str:
    return (f'[[alert]]\nname = "{name}"\nservice = "{service}"\nmeasure = "error_rate"\nwindow = "5m"\n'
            f'above = 0.1\nmin_requests = 20\nnotify = ["oncall"]\n\n')


def config(rx: WebhookReceiver) -> str:
    return (f'[monitor]\nevaluation_interval = "1s"\nexternal_url = "{EXTERNAL_URL}"\n\n'
            + rule("orders-errors", "orders") + rule("calm-errors", "calm")
            + '[[slo]]\nname = "billing-availability"\nservice = "billing"\nroute = "/pay"\n'
              'indicator = "availability"\nobjective = 99\nwindow = "30d"\nnotify = ["oncall"]\n\n'
            + notify_table("oncall", rx.url("/oncall"), ["alertname", "service"], "1s", "1s", "1h"))


class AlertWatcher:
    """Reads GET /api/v1/alerts over and over from before the data is sent, and keeps every
    firing alert it saw as it was then (with the time it looked)."""

    def __init__(self, url: str):
        self.url = url
        self.seen: list[tuple[float, dict]] = []
        self.looks = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alert-watcher", daemon=True)

    def start(self) -> "AlertWatcher":
        self._thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            try:
                alerts = session.get(f"{self.url}/api/v1/alerts", timeout=10).json()["alerts"]
            except Exception as exc:  # noqa: BLE001 - reported by the test that reads it
                self.errors.append(repr(exc))
                time.sleep(0.05)
                continue
            now = time.monotonic()
            self.looks += 1
            self.seen += [(now, a) for a in alerts if a["state"] == "firing"]
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def firing(self, **labels: str) -> list[tuple[float, dict]]:
        return [(t, a) for t, a in self.seen if all(a["labels"].get(k) == v for k, v in labels.items())]


@dataclass
class Incident:
    srv: SightlineServer
    rx: WebhookReceiver
    orders_failed: int
    orders_total: int
    billing_failed: int  # on /pay
    billing_total: int  # on /pay
    watcher: AlertWatcher | None = field(default=None)


ORDERS_OLD, ORDERS_NEW, ORDERS_NEW_FAILED = 1200, 1000, 400  # 400 of 2200 failing: 18%
CALM_TOTAL, CALM_FAILED = 2000, 300  # 15%, at random


def send_at_once(srv: SightlineServer, service: str, by_version: dict[str, list[dict]]) -> None:
    """One export for all of a service's spans, so that no evaluation sees part of them (the
    counts in an explanation are those of the whole scenario)."""
    body = {"resourceSpans": [{"resource": {"attributes": [text_attr("service.name", service),
                                                           text_attr("service.version", version)]},
                               "scopeSpans": [{"scope": {"name": "e2e.explained"}, "spans": spans}]}
                              for version, spans in by_version.items()]}
    resp = srv.post_otlp("/v1/traces", body)
    assert resp.status_code == 200 and not resp.json().get("partialSuccess"), resp.text


def send_data(srv: SightlineServer, rx: WebhookReceiver) -> Incident:
    dice = random.Random(50)
    # orders: 1.4.2 never fails, 1.5.0 fails 400 of its 1000; tenants and routes by turn for both.
    times = times_between(ORDERS_OLD + ORDERS_NEW, 3, 0.2)
    dice.shuffle(times)
    failing = set(dice.sample(range(ORDERS_NEW), ORDERS_NEW_FAILED))
    routes = ["/orders", "/orders/{id}"]
    send_at_once(srv, "orders", {
        "1.4.2": [request(t, routes[i % 2], False, attrs={"tenant.id": TENANTS[i % 5]})
                  for i, t in enumerate(times[:ORDERS_OLD])],
        "1.5.0": [request(t, routes[i % 2], i in failing, attrs={"tenant.id": TENANTS[i % 5]})
                  for i, t in enumerate(times[ORDERS_OLD:])]})
    # billing /pay: 2000 requests, acme (every fifth) fails 360 of its 400, the others 10 of
    # 1600 (18.5%: a 18.5x burn of the 1% budget); /refund: 300 of globex, all failing.
    pay_times = times_between(2000, 3, 0.2)
    acme = [i for i in range(2000) if i % 5 == 0]
    others = [i for i in range(2000) if i % 5 != 0]
    pay_failing = set(dice.sample(acme, 360)) | set(dice.sample(others, 10))
    spans = [request(t, "/pay", i in pay_failing, attrs={"tenant.id": TENANTS[i % 5]}) for i, t in enumerate(pay_times)]
    spans += [request(t, "/refund", True, attrs={"tenant.id": "globex"}) for t in times_between(300, 3, 0.2)]
    send_at_once(srv, "billing", {"8.0.0": spans})
    # calm: two versions, tenants and routes at random; 300 of 2000 fail, at random.
    calm_failing = set(dice.sample(range(CALM_TOTAL), CALM_FAILED))
    by_version: dict[str, list[dict]] = {"4.0.0": [], "4.1.0": []}
    for i, t in enumerate(times_between(CALM_TOTAL, 3, 0.2)):
        by_version[dice.choice(sorted(by_version))].append(
            request(t, dice.choice(["/a", "/b"]), i in calm_failing, attrs={"tenant.id": dice.choice(TENANTS)}))
    send_at_once(srv, "calm", by_version)
    wait_stored(srv, "orders", ORDERS_OLD + ORDERS_NEW)
    wait_stored(srv, "billing", 2300)
    wait_stored(srv, "calm", CALM_TOTAL)
    return Incident(srv=srv, rx=rx, orders_failed=ORDERS_NEW_FAILED, orders_total=ORDERS_OLD + ORDERS_NEW,
                    billing_failed=len(pay_failing), billing_total=2000)


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    base = tmp_path_factory.mktemp("explained")
    rx = WebhookReceiver().start()
    srv = SightlineServer(base / "data", base / "logs",
                          extra_args=["--config", str(write_config(base / "sightline.toml", config(rx)))],
                          name="explained")
    watcher = None
    try:
        srv.start()
        watcher = AlertWatcher(srv.api_url).start()
        found = send_data(srv, rx)
        found.watcher = watcher
        yield found
    finally:
        if watcher is not None:
            watcher.stop()
        if srv.running():
            _cleanup(srv)
        rx.stop()


def detail(srv: SightlineServer, alert_id: str) -> dict:
    return api_json(srv, f"/api/v1/alerts/{alert_id}")


def explained_detail(srv: SightlineServer, **labels: str) -> dict:
    """The alert once firing and explained (`explained` set: the question was answered)."""
    alert = wait_firing(srv, timeout=20, **labels)
    return wait_for(lambda: (d := detail(srv, alert["id"]))["explained"] is not None and d, timeout=25, interval=0.1,
                    what=f"the explanation of {labels}")


def first_firing_post(rx: WebhookReceiver, alertname: str, service: str) -> dict:
    def find():
        for p in rx.delivered("/oncall"):
            body = p.json()
            if body["status"] == "firing" and body["groupLabels"] == {"alertname": alertname, "service": service}:
                return body
        return None
    return wait_for(find, timeout=15, interval=0.1, what=f"the first notification of {alertname}")


def check_annotations(alert: dict, causes: list[dict]) -> None:
    notes = alert["annotations"]
    told = {k: v for k, v in notes.items() if k.startswith("explanation")}
    expected = {f"explanation_{n + 1}": c["summary"] for n, c in enumerate(causes)}
    if causes:
        expected["explanation"] = "; ".join(c["summary"] for c in causes)
    assert told == expected, f"annotations of {alert['labels']}: {told} (expected {expected})"


def same_as_explain(srv: SightlineServer, explained: dict) -> None:
    """The causes are what GET /api/v1/explain answers for the alert's question and window."""
    params = {"service": explained["service"], "start": str(explained["start_ns"]), "end": str(explained["end_ns"]),
              "what": explained["what"], "limit": "3"}
    if explained["route"]:
        params["route"] = explained["route"]
    answer = api_json(srv, "/api/v1/explain", **params)
    assert [(c["key"], c["value"]) for c in explained["causes"]] == [(d["key"], d["value"]) for d in answer["dimensions"]], \
        (explained["causes"], answer["dimensions"])
    for cause, d in zip(explained["causes"], answer["dimensions"]):
        for key in ("selection_share", "baseline_share", "risk_ratio", "grouped"):
            assert cause[key] == d[key], (key, cause, d)
    assert explained["summary"] == answer["summary"], (explained["summary"], answer["summary"])
    assert (explained["bad_requests"], explained["other_requests"]) == \
        (answer["selection"]["requests"], answer["baseline"]["requests"]), (explained, answer["selection"])


def test_an_alert_is_never_seen_firing_without_its_explanation(incident):
    """The explanation is made as the alert begins firing: no reader of the API may see the
    alert firing with no causes (which says "nothing sets the failures apart") meanwhile."""
    srv, watcher = incident.srv, incident.watcher
    for labels in (ORDERS, BILLING_PAGE):
        explained_detail(srv, **labels)
    watcher.stop()
    assert not watcher.errors, watcher.errors[:3]
    problems = []
    for labels in (ORDERS, BILLING_PAGE):
        seen = watcher.firing(**labels)
        assert seen, f"{labels} was never seen firing in {watcher.looks} looks"
        bare = [(t, a) for t, a in seen if not a["explanation"]]
        if bare:
            problems.append(f"{labels['alertname']} ({labels.get('severity', 'rule')}): {len(bare)} of {len(seen)} "
                            f"looks at it firing showed explanation [] for "
                            f"{1000 * (bare[-1][0] - seen[0][0]):.0f} ms after it was first seen firing")
    assert not problems, "; ".join(problems)


def test_a_rule_alert_is_explained_by_the_failing_version(incident):
    srv, rx = incident.srv, incident.rx
    d = explained_detail(srv, **ORDERS)
    alert = {"id": d["id"]}
    assert d["state"] == "firing" and d["explanation"], f"a firing alert with a known cause has no explanation: {d}"
    top = d["explanation"][0]
    assert (top["key"], top["value"]) == ("service.version", "1.5.0"), d["explanation"]
    assert top["selection_share"] == pytest.approx(1.0), top
    good = incident.orders_total - incident.orders_failed
    assert top["baseline_share"] == pytest.approx((ORDERS_NEW - ORDERS_NEW_FAILED) / good), top
    assert top["risk_ratio"] is None and top["grouped"] is False and top["p_value"] < 1e-6, top
    assert top["summary"] == describe(top) == "100% of failing requests have service.version=1.5.0 (vs 33% of the others)", \
        top["summary"]
    assert len(d["explanation"]) <= 3, d["explanation"]

    explained = d["explained"]
    assert explained is not None, d
    assert (explained["what"], explained["service"], explained["route"], explained["threshold_ms"]) == \
        ("errors", "orders", None, None), explained
    assert explained["end_ns"] - explained["start_ns"] == EXPLAIN_WINDOW_NS, \
        f"a 5m rule is explained over 15 minutes: {(explained['end_ns'] - explained['start_ns']) / MINUTE_NS} min"
    assert explained["end_ns"] == parse_time_ns(d["fired_at"]), (explained["end_ns"], d["fired_at"])
    assert (explained["bad_requests"], explained["other_requests"]) == (incident.orders_failed, good), explained
    assert explained["causes"] == d["explanation"], (explained["causes"], d["explanation"])
    assert explained["summary"] == top["summary"], explained["summary"]
    same_as_explain(srv, explained)
    assert alert_by_labels(srv, **ORDERS)["explanation"] == d["explanation"], "the list of alerts carries it too"

    body = first_firing_post(rx, "orders-errors", "orders")
    assert [a["fingerprint"] for a in body["alerts"]] == [alert["id"]], body
    check_annotations(body["alerts"][0], d["explanation"])
    assert body["alerts"][0]["annotations"]["explanation_1"].startswith("100% of failing requests have "
                                                                       "service.version=1.5.0"), body["alerts"][0]
    assert body["commonAnnotations"].get("explanation") == body["alerts"][0]["annotations"]["explanation"], body


def test_an_slo_alert_is_explained_by_a_tenant_on_its_route(incident):
    srv, rx = incident.srv, incident.rx
    d = explained_detail(srv, **BILLING_PAGE)
    page = {"id": d["id"]}
    assert d["explanation"], f"no explanation: {d['explained']}"
    top = d["explanation"][0]
    assert (top["key"], top["value"]) == ("tenant.id", "acme"), d["explanation"]
    assert top["selection_share"] == pytest.approx(360 / incident.billing_failed), top
    assert top["baseline_share"] == pytest.approx(40 / (incident.billing_total - incident.billing_failed)), top
    assert top["summary"] == describe(top), top["summary"]
    explained = d["explained"]
    assert explained["route"] == "/pay" and explained["what"] == "errors", explained
    assert explained["end_ns"] - explained["start_ns"] == SLO_EXPLAIN_WINDOW_NS, explained
    assert explained["bad_requests"] == incident.billing_failed, \
        f"only /pay's failures (not /refund's 300): {explained['bad_requests']}"
    assert explained["other_requests"] == incident.billing_total - incident.billing_failed, explained
    assert all(c["key"] != "http.route" for c in explained["causes"]), explained["causes"]
    same_as_explain(srv, explained)

    body = first_firing_post(rx, "billing-availability", "billing")
    told = {a["fingerprint"]: a for a in body["alerts"]}
    assert page["id"] in told, body["alerts"]
    for fingerprint, alert in told.items():
        check_annotations(alert, detail(srv, fingerprint)["explanation"])
    assert told[page["id"]]["annotations"]["explanation_1"] == top["summary"], told[page["id"]]["annotations"]


def test_failures_at_random_fire_without_causes(incident):
    srv, rx = incident.srv, incident.rx
    d = explained_detail(srv, **CALM)
    assert d["explanation"] == [], f"noise was given as a cause: {d['explanation']}"
    explained = d["explained"]
    assert explained is not None and explained["causes"] == [], explained
    assert (explained["bad_requests"], explained["other_requests"]) == (CALM_FAILED, CALM_TOTAL - CALM_FAILED), explained
    assert explained["summary"] == (f"no dimension sets the {CALM_FAILED} failing requests apart from the "
                                    f"{CALM_TOTAL - CALM_FAILED} others: they look alike"), explained["summary"]
    body = first_firing_post(rx, "calm-errors", "calm")
    check_annotations(body["alerts"][0], [])


def test_explanations_survive_a_restart(incident):
    srv = incident.srv
    ids = [explained_detail(srv, **labels)["id"] for labels in (ORDERS, BILLING_PAGE, CALM)]
    before = {i: detail(srv, i) for i in ids}
    posts_before = len(incident.rx.posts("/oncall"))
    assert srv.stop() == 0
    srv.start()
    evaluations = lambda: srv.metric("sightline_monitor_evaluations_total", outcome="ok")
    wait_for(lambda: evaluations() >= 3, timeout=20, interval=0.2, what="three evaluations after the restart")
    for alert_id, was in before.items():
        now = detail(srv, alert_id)
        # The rules' 5m windows hold the fixture's minutes; on a slow run they may have passed out of
        # them by now, and an alert resolve. A restart itself changes no state.
        assert now["state"] in (was["state"], "resolved"), (was["labels"], was["state"], now["state"])
        if now["state"] == was["state"]:
            assert now["since"] == was["since"], (was["labels"], now["state"], now["since"], was["since"])
        assert now["fired_at"] == was["fired_at"], (now["fired_at"], was["fired_at"])
        assert now["explained"] == was["explained"], \
            f"{was['labels']}: the explanation changed across the restart:\n{now['explained']}\nwas\n{was['explained']}"
        assert now["explanation"] == was["explanation"], (now["explanation"], was["explanation"])
    assert before[ids[0]]["explanation"][0]["value"] == "1.5.0"
    # (repeat_interval is 1h: nothing is due; the restart must not tell the same alerts again)
    assert len(incident.rx.posts("/oncall")) == posts_before, "the restart sent the notifications again"
