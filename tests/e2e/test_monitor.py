"""The monitor: SLOs, alert rules, their states, silences and notifications, end to end.

Spans go in over OTLP/JSON with the timestamps a scenario needs (backfilled minutes, or now), the
server evaluates every second from `span_rollups`, and notifications are posted to a real HTTP
receiver (`webhook_receiver.py`, a ThreadingHTTPServer on 127.0.0.1:0) that records every body with
its arrival time. Nothing is mocked; time moves only by real data timestamps and short intervals.

- one "incident" server (module fixture): five 1d-window SLOs whose page alerts (14.4x over 2m and
  1m, 6x over 12m and 1m) fire from one batch of failures sent in the current minute, each to its
  own target:
  * a receiver answering 500 twice gets the notification once after the backoff (1s, 2s), the
    alert shows its delivery error meanwhile, /metrics counts the failed attempts;
  * a silenced alert is listed firing with silenced_by and sends nothing until the silence ends;
  * two SLOs of one group_by group arrive in one notification after group_wait (Alertmanager's
    webhook payload version "4", field for field; fingerprints are the alerts' ids), nothing is
    sent while nothing changes, the group is told again after repeat_interval, and once the
    failure minute rolls over (good requests only now) the alerts resolve and a resolved
    notification is sent; grouped by alertname and service, each SLO is its own group and key;
  * a service that stops sending goes to no_data (SLO state and alert state) and neither fires
    nor resolves while silent;
- a restart mid-incident (SIGTERM, same data folder and config) sends nothing twice and keeps the
  alert's id, `since` and its single firing row in alert_events;
- backfilled spans over the last days give 30d-window SLOs (availability and latency) their
  numbers at once: good, total, SLI, budget left and burn rates as computed from what was sent,
  and the page/ticket alerts the workbook's table calls for;
- configuration mistakes are refused at start with the key named;
- the CLI: `sightline slos`, `sightline alerts`, `sightline silence` (create, list, expire).
"""

from __future__ import annotations

import calendar
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from conftest import SightlineServer, _cleanup, server_env, sightline_bin, wait_for
from webhook_receiver import WebhookReceiver

NS = 1_000_000_000
MINUTE_NS = 60 * NS
ZERO_TIME = "0001-01-01T00:00:00Z"
EXTERNAL_URL = "http://sightline.test:4319"
RUNBOOK = "https://runbooks.test/checkout"
HEX16 = re.compile(r"[0-9a-f]{16}")

PAYLOAD_KEYS = {"receiver", "status", "alerts", "groupLabels", "commonLabels", "commonAnnotations",
                "externalURL", "version", "groupKey", "truncatedAlerts"}
ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
ALERT_VIEW_KEYS = {"id", "name", "source", "labels", "state", "value", "threshold", "since", "summary",
                   "explanation", "runbook_url", "url", "silenced_by", "delivery_error"}
SLO_KEYS = {"name", "service", "route", "indicator", "objective", "window", "good", "total", "sli",
            "budget_remaining", "burn_rates", "exhaustion_s", "state"}
BURN_WINDOWS = {"5m": 5, "30m": 30, "1h": 60, "6h": 360, "1d": 1440, "3d": 4320}


# ----------------------------------------------------------------- helpers


def fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's (Prometheus') label-set fingerprint: FNV-1a 64 over the labels sorted by
    name, each name and value followed by the byte 0xFF, as 16 hex digits."""
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for chunk in (name.encode(), b"\xff", labels[name].encode(), b"\xff"):
            for b in chunk:
                h ^= b
                h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def parse_time_ns(text: str) -> int:
    """RFC 3339 in UTC with up to nine fraction digits -> ns since the epoch."""
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|\+00:00)", text)
    assert m, f"not an RFC 3339 UTC time: {text!r}"
    secs = calendar.timegm(tuple(int(g) for g in m.groups()[:6]) + (0, 0, 0))
    return secs * NS + int((m.group(7) or "").ljust(9, "0"))


def minute_start(ns: int) -> int:
    return ns - ns % MINUTE_NS


def span(start_ns: int, route: str, status: int, dur_ms: float = 20.0, method: str = "GET") -> dict:
    attrs = [{"key": "http.route", "value": {"stringValue": route}},
             {"key": "http.request.method", "value": {"stringValue": method}},
             {"key": "http.response.status_code", "value": {"intValue": str(status)}}]
    return {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": f"{method} {route}",
            "kind": 2, "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + int(dur_ms * 1e6)),
            "attributes": attrs}


def batch(start_ns: int, n: int, route: str, failed: int = 0, slow: int = 0, method: str = "GET",
          step_ns: int = 1_000_000) -> list[dict]:
    """n requests from start_ns on, step_ns apart: the first `failed` answer 500 (20 ms), the next
    `slow` take 600 ms, the rest 50 ms."""
    out = []
    for i in range(n):
        if i < failed:
            status, dur = 500, 20.0
        elif i < failed + slow:
            status, dur = 200, 600.0
        else:
            status, dur = 200, 50.0
        out.append(span(start_ns + i * step_ns, route, status, dur, method))
    return out


def traces_body(by_service: dict[str, list[dict]]) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "e2e.monitor"}, "spans": spans}],
    } for service, spans in by_service.items()]}


def post_spans(url: str, by_service: dict[str, list[dict]], session=requests) -> None:
    resp = session.post(f"{url}/v1/traces", data=json.dumps(traces_body(by_service)),
                        headers={"Content-Type": "application/json"}, timeout=60)
    assert resp.status_code == 200, f"export refused ({resp.status_code}): {resp.text}"
    assert not resp.json().get("partialSuccess"), resp.text


def send(srv: SightlineServer, by_service: dict[str, list[dict]]) -> None:
    """POST the spans (in requests of at most 2000 spans); each must be acknowledged whole."""
    for service, spans in by_service.items():
        for i in range(0, len(spans), 2000):
            post_spans(srv.otlp_http_url, {service: spans[i:i + 2000]}, srv.session)


def api_json(srv: SightlineServer, path: str, **params) -> dict:
    resp = srv.get(path, params=params or None)
    assert resp.status_code == 200, f"GET {path} {params}: {resp.status_code} {resp.text}"
    return resp.json()


def alerts(srv: SightlineServer, state: str | None = None) -> list[dict]:
    return api_json(srv, "/api/v1/alerts", **({"state": state} if state else {}))["alerts"]


def alert_by_labels(srv: SightlineServer, **labels: str) -> dict | None:
    for a in alerts(srv):
        if all(a["labels"].get(k) == v for k, v in labels.items()):
            return a
    return None


def slo(srv: SightlineServer, name: str) -> dict | None:
    for s in api_json(srv, "/api/v1/slos")["slos"]:
        if s["name"] == name:
            return s
    return None


def events_of(srv: SightlineServer, alert_id: str) -> list[dict]:
    return srv.rows(f"SELECT time, alert_id, name, source, labels, state, value, threshold FROM alert_events "
                    f"WHERE alert_id = '{alert_id}' ORDER BY time")


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def notify_table(name: str, url: str, group_by: list[str], group_wait: str, group_interval: str,
                 repeat_interval: str, headers: dict | None = None) -> str:
    text = (f'[[notify]]\nname = "{name}"\nkind = "webhook"\nurl = "{url}"\n'
            f'group_by = {json.dumps(group_by)}\ngroup_wait = "{group_wait}"\n'
            f'group_interval = "{group_interval}"\nrepeat_interval = "{repeat_interval}"\nsend_resolved = true\n')
    if headers:
        text += "headers = { " + ", ".join(f'{k} = {json.dumps(v)}' for k, v in headers.items()) + " }\n"
    return text + "\n"


def firing_posts(posts):
    return [p for p in posts if p.json()["status"] == "firing"]


def check_payload_shape(body: dict, receiver: str) -> None:
    assert set(body) == PAYLOAD_KEYS, f"payload fields: {sorted(body)}"
    assert body["receiver"] == receiver
    assert body["version"] == "4"
    assert body["externalURL"] == EXTERNAL_URL
    assert body["truncatedAlerts"] == 0
    assert body["status"] in ("firing", "resolved")
    for a in body["alerts"]:
        assert set(a) == ALERT_KEYS, f"alert fields: {sorted(a)}"
        assert HEX16.fullmatch(a["fingerprint"]), a["fingerprint"]
        assert a["fingerprint"] == fingerprint(a["labels"]), (a["fingerprint"], a["labels"])
        assert a["generatorURL"] == f"{EXTERNAL_URL}/alerts/{a['fingerprint']}", a["generatorURL"]
        assert a["annotations"].get("alert_url") == a["generatorURL"], a["annotations"]
        explanations = [a["annotations"][f"explanation_{n}"] for n in (1, 2, 3)
                        if f"explanation_{n}" in a["annotations"]]
        assert {"summary", "description", "alert_url"} <= set(a["annotations"]) <= \
            {"summary", "description", "alert_url", "runbook_url", "explanation", "explanation_1",
             "explanation_2", "explanation_3"}, a["annotations"]
        # The causes found when it began firing: each in its own annotation, and all in one.
        assert a["annotations"].get("explanation") == ("; ".join(explanations) or None), a["annotations"]
        assert a["annotations"]["summary"], a
        parse_time_ns(a["startsAt"])
        if a["status"] == "firing":
            assert a["endsAt"] == ZERO_TIME, a
        else:
            assert a["status"] == "resolved", a
            assert a["endsAt"] != ZERO_TIME and parse_time_ns(a["endsAt"]) >= parse_time_ns(a["startsAt"]), a
    statuses = {a["status"] for a in body["alerts"]}
    assert body["status"] == ("firing" if "firing" in statuses else "resolved"), body


def common(maps: list[dict]) -> dict:
    out = dict(maps[0])
    for m in maps[1:]:
        out = {k: v for k, v in out.items() if m.get(k) == v}
    return out


def group_key(labels: dict[str, str]) -> str:
    return "{}:{" + ", ".join(sorted(f'{k}={json.dumps(v)}' for k, v in labels.items())) + "}"


def slo_labels(name: str, service: str, severity: str, route: str | None = None,
               method: str | None = None) -> dict[str, str]:
    labels = {"alertname": name, "service": service, "severity": severity, "slo": name}
    if route:
        labels["route"] = route
    if method:
        labels["method"] = method
    return labels


def start_server(base: Path, name: str, config: Path) -> SightlineServer:
    return SightlineServer(base / f"{name}-data", base / "logs", extra_args=["--config", str(config)],
                           name=name).start()


# ------------------------------------------------------ the incident server

# Every SLO of the incident: window 1d (page 14.4x over 2m and 1m, 6x over 12m and 1m; ticket 1x
# over 144m and 12m), objective 99 (1 % budget), min_requests 20.
INCIDENT_SERVICES = ["alpha", "beta", "gamma", "delta", "epsilon"]
BACKFILL_GOOD = 1500  # per service, 90 minutes ago: keeps the ticket's 144m burn below 1x
FIRE_TOTAL, FIRE_FAILED = 20, 10  # per service, now: 50 % failing, a 50x burn over 2m and 1m
# The failure batch is sent only with at least this much of its minute left, so that the firing
# part of the scenarios (first notification, repeat after 10 s, silence, retries) happens before
# the failures stop counting.
MIN_SECONDS_LEFT = 45.0


def incident_config(rx: WebhookReceiver) -> str:
    def slo_table(service: str, notify: list[str], route: str | None = None, method: str | None = None) -> str:
        text = (f'[[slo]]\nname = "{service}-availability"\nservice = "{service}"\nindicator = "availability"\n'
                f'objective = 99\nwindow = "1d"\nmin_requests = 20\nrunbook_url = "{RUNBOOK}"\n'
                f'notify = {json.dumps(notify)}\n')
        if route:
            text += f'route = "{route}"\n'
        if method:
            text += f'method = "{method}"\n'
        return text + "\n"

    return (
        f'[monitor]\nevaluation_interval = "1s"\nexternal_url = "{EXTERNAL_URL}"\n\n'
        + slo_table("alpha", ["team", "oncall"])
        + slo_table("beta", ["team", "oncall"], route="/pay", method="POST")
        + slo_table("gamma", ["muted"])
        + slo_table("delta", ["flaky"])
        + slo_table("epsilon", ["watch"])
        + '[[alert]]\nname = "epsilon-errors"\nservice = "epsilon"\nmeasure = "error_rate"\nwindow = "1m"\n'
          'above = 0.2\nmin_requests = 5\nlabels = { team = "storage" }\nnotify = ["watch"]\n\n'
        + notify_table("team", rx.url("/team"), ["severity"], "2s", "1s", "10s",
                       headers={"authorization": "Bearer team-token"})
        + notify_table("oncall", rx.url("/oncall"), ["alertname", "service"], "2s", "1s", "10s")
        + notify_table("muted", rx.url("/muted"), ["alertname", "service"], "1s", "1s", "1h")
        + notify_table("flaky", rx.url("/flaky"), ["alertname", "service"], "1s", "10s", "1h")
        + notify_table("watch", rx.url("/watch"), ["alertname", "service"], "1s", "1s", "1h")
    )


def route_of(service: str) -> tuple[str, str]:
    return ("/pay", "POST") if service == "beta" else ("/checkout", "GET")


class GoodFeeder:
    """Once the failure minute is over, sends only good requests (5 per service every 0.5 s,
    stamped now) for the services that are to resolve."""

    def __init__(self, url: str, services: list[str], after_ns: int):
        self.url, self.services, self.after_ns = url, services, after_ns
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="good-feeder", daemon=True)

    def start(self) -> "GoodFeeder":
        self.thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop_event.wait(0.5):
            now = time.time_ns()
            if now < self.after_ns:
                continue
            t0 = max(now - 1_000_000, minute_start(now))
            try:
                post_spans(self.url, {s: batch(t0, 5, *route_of(s)[:1], method=route_of(s)[1], step_ns=1000)
                                      for s in self.services}, session)
                self.sent += 5
            except Exception as exc:  # noqa: BLE001 - reported by the tests that rely on it
                self.errors.append(repr(exc))

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


@dataclass
class Incident:
    srv: SightlineServer
    rx: WebhookReceiver
    fire_ns: int  # when the failures were sent
    fire_minute_ns: int  # the minute they count in
    silence_id: str
    feeder: GoodFeeder
    notes: list[str] = field(default_factory=list)

    @property
    def rollover_ns(self) -> int:
        return self.fire_minute_ns + MINUTE_NS


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    base = tmp_path_factory.mktemp("incident")
    rx = WebhookReceiver().start()
    rx.fail_first("/flaky", 2)
    config = write_config(base / "sightline.toml", incident_config(rx))
    srv = None
    feeder = None
    try:
        srv = start_server(base, "incident", config)
        # Good requests 90 minutes ago: inside the ticket's 144m window, outside every page window.
        back = minute_start(time.time_ns()) - 90 * MINUTE_NS + 5 * NS
        send(srv, {s: batch(back, BACKFILL_GOOD, route_of(s)[0], method=route_of(s)[1]) for s in INCIDENT_SERVICES})
        # The silence exists before anything fires.
        resp = srv.session.post(f"{srv.api_url}/api/v1/silences", timeout=30,
                                json={"matchers": {"service": "gamma"}, "duration": "2h", "comment": "gamma maintenance"})
        assert resp.status_code == 201, f"POST /api/v1/silences: {resp.status_code} {resp.text}"
        silence_id = resp.json()["id"]
        # Enough of the minute left for the firing part of the scenarios.
        left = 60 - (time.time() % 60)
        if left < MIN_SECONDS_LEFT:
            time.sleep(left + 0.3)
        fire_ns = time.time_ns()
        fire_minute = minute_start(fire_ns)
        t0 = max(fire_ns - 200_000_000, fire_minute + 1_000_000)
        spans = {s: batch(t0, FIRE_TOTAL, route_of(s)[0], failed=FIRE_FAILED, method=route_of(s)[1], step_ns=1000)
                 for s in INCIDENT_SERVICES}
        # Failures beta's SLO must not count: another method on its route, another route.
        spans["beta"] += batch(t0, 30, "/pay", failed=30, method="GET", step_ns=1000)
        spans["beta"] += batch(t0, 30, "/other", failed=30, method="POST", step_ns=1000)
        post_spans(srv.otlp_http_url, spans, srv.session)  # one request: every SLO fires at one evaluation
        assert minute_start(time.time_ns()) == fire_minute, "the failure batch straddled a minute"
        feeder = GoodFeeder(srv.otlp_http_url, ["alpha", "beta"], fire_minute + MINUTE_NS).start()
        yield Incident(srv=srv, rx=rx, fire_ns=fire_ns, fire_minute_ns=fire_minute, silence_id=silence_id,
                       feeder=feeder)
    finally:
        if feeder is not None:
            feeder.stop()
        if srv is not None:
            _cleanup(srv)
        rx.stop()


def wait_firing(srv: SightlineServer, timeout: float = 10.0, **labels: str) -> dict:
    return wait_for(lambda: (a := alert_by_labels(srv, **labels)) and a["state"] == "firing" and a,
                    timeout=timeout, interval=0.1, what=f"alert {labels} firing")


def test_a_receiver_answering_500_gets_the_notification_once_after_retries(incident):
    srv, rx = incident.srv, incident.rx
    labels = slo_labels("delta-availability", "delta", "page")
    seen_errors = []

    def delivered():
        a = alert_by_labels(srv, **labels)
        if a and a.get("delivery_error"):
            seen_errors.append(a["delivery_error"])
        return len(rx.delivered("/flaky")) >= 1

    wait_for(delivered, timeout=20, interval=0.1, what="the flaky receiver's first 200")
    time.sleep(3)  # anything further would show now (group_interval 10s, repeat 1h: nothing is due)
    posts = rx.posts("/flaky")
    assert [p.status for p in posts] == [500, 500, 200], [(p.status, p.arrived) for p in posts]
    assert len(rx.delivered("/flaky")) == 1
    gaps = [b.arrived - a.arrived for a, b in zip(posts, posts[1:])]
    assert gaps[0] >= 0.9 and gaps[1] >= 1.9, f"retries not backed off 1s then 2s: gaps {gaps}"
    bodies = [p.json() for p in posts]
    for body in bodies:
        check_payload_shape(body, "flaky")
        assert body["status"] == "firing"
        assert [a["labels"] for a in body["alerts"]] == [labels], body["alerts"]
    assert len({json.dumps(b, sort_keys=True) for b in bodies}) == 1, "the retries carried another notification"

    alert = alert_by_labels(srv, **labels)
    assert alert["state"] == "firing" and alert["id"] == bodies[-1]["alerts"][0]["fingerprint"]
    assert seen_errors, "delivery_error was never set while the receiver answered 500"
    assert "500" in json.dumps(seen_errors[0]), seen_errors[0]
    wait_for(lambda: alert_by_labels(srv, **labels)["delivery_error"] is None, timeout=5, interval=0.1,
             what="delivery_error cleared once delivered")
    assert srv.metric("sightline_notifications_failed_total", target="flaky") == 2
    assert srv.metric("sightline_notifications_sent_total", target="flaky") == 1


def test_a_silenced_alert_is_listed_firing_but_sends_nothing(incident):
    srv, rx, sid = incident.srv, incident.rx, incident.silence_id
    assert isinstance(sid, str) and sid, sid
    listed = api_json(srv, "/api/v1/silences")["silences"]
    mine = [s for s in listed if s["id"] == sid]
    assert len(mine) == 1, listed
    assert mine[0]["matchers"] == {"service": "gamma"} and mine[0]["comment"] == "gamma maintenance", mine[0]

    alert = wait_firing(srv, **slo_labels("gamma-availability", "gamma", "page"))
    assert alert["silenced_by"] == sid, alert
    since_ns = parse_time_ns(alert["since"])
    # group_wait is 1s and looks come every second: unsilenced, it would have been sent by now.
    wait_s = since_ns / NS + 4 - time.time()
    if wait_s > 0:
        time.sleep(wait_s)
    assert rx.posts("/muted") == [], [p.json() for p in rx.posts("/muted")]
    assert srv.metric("sightline_silences_active") >= 1
    # Other alerts are not muted by it.
    assert alert_by_labels(srv, service="alpha", severity="page")["silenced_by"] is None

    # The silence ends: the alert still fires and is new to the receiver, so it is told.
    resp = srv.session.delete(f"{srv.api_url}/api/v1/silences/{sid}", timeout=30)
    assert resp.status_code in (200, 204), f"DELETE silence: {resp.status_code} {resp.text}"
    post = wait_for(lambda: rx.delivered("/muted"), timeout=15, interval=0.1, what="the notification after the silence")[0]
    body = post.json()
    check_payload_shape(body, "muted")
    assert body["status"] == "firing" and [a["fingerprint"] for a in body["alerts"]] == [alert["id"]], body
    assert alert_by_labels(srv, **slo_labels("gamma-availability", "gamma", "page"))["silenced_by"] is None


def test_a_page_burn_fires_once_groups_repeats_and_resolves(incident):
    srv, rx = incident.srv, incident.rx
    alpha = slo_labels("alpha-availability", "alpha", "page")
    beta = slo_labels("beta-availability", "beta", "page", route="/pay", method="POST")
    a_alpha = wait_firing(srv, **alpha)
    a_beta = wait_firing(srv, **beta)
    assert time.time_ns() < incident.rollover_ns - 5 * NS, "too late in the minute for this scenario (test bug)"

    # The API: labels, ids, links, the SLOs' numbers from what was sent.
    for a, labels in ((a_alpha, alpha), (a_beta, beta)):
        assert ALERT_VIEW_KEYS <= set(a), sorted(a)
        assert a["labels"] == labels, a["labels"]
        assert a["id"] == fingerprint(labels) and HEX16.fullmatch(a["id"]), a["id"]
        assert a["source"] == "slo" and a["name"] == labels["alertname"], a
        assert a["runbook_url"] == RUNBOOK and a["url"] == f"{EXTERNAL_URL}/alerts/{a['id']}", a
        assert a["silenced_by"] is None and a["delivery_error"] is None, a
        assert a["threshold"] in (14.4, 6.0), a
        assert a["value"] == pytest.approx(50.0, rel=1e-9), a  # 50 % failing over 2m and 12m: 50x
        detail = api_json(srv, f"/api/v1/alerts/{a['id']}")
        assert detail["timeline"] and detail["timeline"][-1]["state"] == "firing", detail["timeline"]
        assert {"time", "state", "value", "threshold"} <= set(detail["timeline"][-1])
        assert "samples" in detail
    tickets = [a for a in alerts(srv) if a["labels"].get("severity") == "ticket" and a["state"] in ("firing", "pending")]
    assert not tickets, f"the 144m window burns below 1x: no ticket may fire; {tickets}"
    for name in ("alpha-availability", "beta-availability"):
        s = slo(srv, name)
        assert SLO_KEYS <= set(s), sorted(s)
        assert (s["good"], s["total"]) == (BACKFILL_GOOD + FIRE_TOTAL - FIRE_FAILED, BACKFILL_GOOD + FIRE_TOTAL), s
        assert s["state"] == "firing" and s["window"] == "1d" and s["objective"] == 99, s
        assert s["sli"] == pytest.approx(s["good"] / s["total"], rel=1e-9)
        day_burn = (FIRE_FAILED / s["total"]) / 0.01
        assert s["budget_remaining"] == pytest.approx(1 - day_burn, rel=1e-6), s
        assert set(s["burn_rates"]) == set(BURN_WINDOWS), s["burn_rates"]
        for w in ("5m", "30m", "1h"):
            assert s["burn_rates"][w] == pytest.approx(50.0, rel=1e-9), (w, s["burn_rates"])
        for w in ("6h", "1d", "3d"):
            assert s["burn_rates"][w] == pytest.approx(day_burn, rel=1e-6), (w, s["burn_rates"])
    assert slo(srv, "beta-availability")["route"] == "/pay"

    # The first notification to "team" (group_by severity): both page alerts, after group_wait.
    first = wait_for(lambda: rx.posts("/team"), timeout=10, interval=0.1, what="team's first notification")[0]
    assert first.status == 200
    assert first.arrived * NS + 15 * NS < incident.rollover_ns, "no room for the repeat before the rollover (test bug)"
    assert first.headers.get("content-type", "").startswith("application/json"), first.headers
    assert first.headers.get("authorization") == "Bearer team-token", first.headers
    body = first.json()
    check_payload_shape(body, "team")
    assert body["status"] == "firing"
    assert sorted(a["fingerprint"] for a in body["alerts"]) == sorted([a_alpha["id"], a_beta["id"]]), body
    assert {a["fingerprint"]: a["labels"] for a in body["alerts"]} == {a_alpha["id"]: alpha, a_beta["id"]: beta}
    assert body["groupLabels"] == {"severity": "page"}
    assert body["groupKey"] == '{}:{severity="page"}'
    assert body["commonLabels"] == {"severity": "page"}
    assert body["commonAnnotations"] == {"runbook_url": RUNBOOK}, body["commonAnnotations"]
    starts = {}
    for a in body["alerts"]:
        assert a["annotations"]["runbook_url"] == RUNBOOK
        api = a_alpha if a["fingerprint"] == a_alpha["id"] else a_beta
        assert a["generatorURL"] == api["url"]
        starts[a["fingerprint"]] = parse_time_ns(a["startsAt"])
        assert starts[a["fingerprint"]] == parse_time_ns(api["since"]), (a["startsAt"], api["since"])
        assert incident.fire_ns - NS <= starts[a["fingerprint"]] <= incident.fire_ns + 10 * NS, a["startsAt"]
        assert first.arrived * NS - starts[a["fingerprint"]] >= 1.95 * NS, "sent before group_wait (2s)"
    assert first.arrived * NS - max(starts.values()) <= 10 * NS, "group_wait 2s, yet the first post came late"

    # "oncall" groups by alertname and service: one group (and key) per SLO.
    def oncall_first():
        keys = {p.json()["groupKey"] for p in rx.posts("/oncall")}
        return len(keys) >= 2 and keys
    wait_for(oncall_first, timeout=10, interval=0.1, what="oncall's two groups")
    by_key = {}
    for p in rx.posts("/oncall"):
        by_key.setdefault(p.json()["groupKey"], []).append(p)
    expected_keys = {group_key({"alertname": "alpha-availability", "service": "alpha"}),
                     group_key({"alertname": "beta-availability", "service": "beta"})}
    assert set(by_key) == expected_keys, set(by_key)
    assert '{}:{alertname="alpha-availability", service="alpha"}' in by_key
    for key, posts in by_key.items():
        b = posts[0].json()
        check_payload_shape(b, "oncall")
        assert len(b["alerts"]) == 1, b
        labels = b["alerts"][0]["labels"]
        assert b["groupLabels"] == {"alertname": labels["alertname"], "service": labels["service"]}
        assert b["commonLabels"] == labels and b["commonAnnotations"] == b["alerts"][0]["annotations"], b

    # Nothing more while nothing changes; then the repeat after repeat_interval (10s).
    second = wait_for(lambda: len(rx.posts("/team")) >= 2 and rx.posts("/team")[1], timeout=16, interval=0.1,
                      what="team's repeat notification")
    gap = second.arrived - first.arrived
    assert 9.8 <= gap <= 16.0, f"repeat_interval 10s, group_interval 1s: the repeat came {gap:.2f}s later"
    repeat = second.json()
    check_payload_shape(repeat, "team")
    assert repeat["status"] == "firing"
    assert {a["fingerprint"]: a["startsAt"] for a in repeat["alerts"]} == \
        {a["fingerprint"]: a["startsAt"] for a in body["alerts"]}, "the repeat is the same incident"

    # Resolution: the failures stop counting when their minute rolls over (only good requests
    # are sent from then on); a resolved notification follows.
    def resolved_post():
        return [p for p in rx.posts("/team") if p.json()["status"] == "resolved"]
    remaining = (incident.rollover_ns - time.time_ns()) / NS
    res = wait_for(resolved_post, timeout=max(remaining, 0) + 15, interval=0.2, what="team's resolved notification")[0]
    assert not incident.feeder.errors, incident.feeder.errors[:3]
    assert res.arrived * NS >= incident.rollover_ns, "resolved before the failure minute was over"
    assert res.arrived * NS <= incident.rollover_ns + 15 * NS, "resolved late"
    rb = res.json()
    check_payload_shape(rb, "team")
    assert sorted(a["fingerprint"] for a in rb["alerts"]) == sorted(starts), rb
    for a in rb["alerts"]:
        assert a["status"] == "resolved"
        assert parse_time_ns(a["startsAt"]) == starts[a["fingerprint"]], a
        assert incident.rollover_ns <= parse_time_ns(a["endsAt"]) <= res.arrived * NS + NS // 10, a
    assert rb["groupKey"] == '{}:{severity="page"}' and rb["groupLabels"] == {"severity": "page"}

    time.sleep(4)  # nothing after the resolved one: no second resolved, no re-fire
    team = rx.posts("/team")
    assert team[-1] is res or team[-1].body == res.body, [p.json()["status"] for p in team]
    assert [p.json()["status"] for p in team].count("resolved") == 1, [p.json()["status"] for p in team]
    fired = firing_posts(team)
    gaps = [b.arrived - a.arrived for a, b in zip(fired, fired[1:])]
    assert all(g >= 9.8 for g in gaps), f"firing notifications closer than repeat_interval: {gaps}"
    assert all(p.status == 200 for p in team)
    for key in expected_keys:
        statuses = [p.json()["status"] for p in rx.posts("/oncall") if p.json()["groupKey"] == key]
        assert statuses[0] == "firing" and statuses.count("resolved") == 1 and statuses[-1] == "resolved", (key, statuses)

    for a, name in ((a_alpha, "alpha-availability"), (a_beta, "beta-availability")):
        now = alert_by_labels(srv, **a["labels"])
        assert now["state"] == "resolved" and now["id"] == a["id"], now
        assert slo(srv, name)["state"] == "ok", slo(srv, name)
        states = [e["state"] for e in events_of(srv, a["id"])]
        assert states.count("firing") == 1 and states[-1] == "resolved", states
        rows = events_of(srv, a["id"])
        assert json.loads(rows[0]["labels"]) == a["labels"] and rows[0]["source"] == "slo", rows[0]
        assert rows[0]["name"] == name


def test_a_service_that_stops_sending_goes_to_no_data_and_stays(incident):
    srv, rx = incident.srv, incident.rx
    page = slo_labels("epsilon-availability", "epsilon", "page")
    rule = {"alertname": "epsilon-errors", "service": "epsilon", "team": "storage"}
    # It fired while it sent: one notification per group.
    a_page = wait_firing(srv, **page) if time.time_ns() < incident.rollover_ns else alert_by_labels(srv, **page)
    a_rule = alert_by_labels(srv, **rule)
    assert a_page and a_rule, alerts(srv)
    assert a_rule["labels"] == rule and a_rule["source"] == "rule", a_rule
    wait_for(lambda: len(rx.posts("/watch")) >= 2, timeout=10, interval=0.1, what="watch's notifications")
    keys = sorted(p.json()["groupKey"] for p in rx.posts("/watch"))
    assert keys == sorted([group_key({"alertname": "epsilon-availability", "service": "epsilon"}),
                           group_key({"alertname": "epsilon-errors", "service": "epsilon"})]), keys
    rule_post = [p.json() for p in rx.posts("/watch") if "epsilon-errors" in p.json()["groupKey"]][0]
    assert rule_post["alerts"][0]["labels"] == rule and rule_post["alerts"][0]["fingerprint"] == a_rule["id"]

    # epsilon sends nothing after its failure minute: once it is over, no data.
    def no_data():
        s = slo(srv, "epsilon-availability")
        p, r = alert_by_labels(srv, **page), alert_by_labels(srv, **rule)
        return s["state"] == "no_data" and p["state"] == "no_data" and r["state"] == "no_data" and (s, p, r)
    remaining = (incident.rollover_ns - time.time_ns()) / NS
    wait_for(no_data, timeout=max(remaining, 0) + 10, interval=0.2, what="epsilon in no_data")
    assert time.time_ns() >= incident.rollover_ns
    posts_before = len(rx.posts("/watch"))
    deadline = time.time() + 6
    while time.time() < deadline:  # frozen: neither fires nor resolves
        s = slo(srv, "epsilon-availability")
        p, r = alert_by_labels(srv, **page), alert_by_labels(srv, **rule)
        assert (s["state"], p["state"], r["state"]) == ("no_data", "no_data", "no_data"), (s, p, r)
        time.sleep(0.5)
    assert len(rx.posts("/watch")) == posts_before == 2, [p.json() for p in rx.posts("/watch")]
    for a in (a_page, a_rule):
        states = [e["state"] for e in events_of(srv, a["id"])]
        # Before its first data an SLO alert is no_data too (the server started without data).
        assert "firing" in states and set(states[:states.index("firing")]) <= {"no_data"}, (a["labels"], states)
        assert states[states.index("firing"):] == ["firing", "no_data"], (a["labels"], states)
    assert srv.metric("sightline_alerts", state="no_data") >= 2
    assert [a["id"] for a in alerts(srv, "no_data") if a["labels"].get("service") == "epsilon"] \
        and all(a["state"] == "no_data" for a in alerts(srv, "no_data"))


# ------------------------------------------------------ restart mid-incident


def test_a_restart_mid_incident_sends_nothing_twice(tmp_path):
    with WebhookReceiver() as rx:
        config = write_config(tmp_path / "sightline.toml", (
            f'[monitor]\nevaluation_interval = "1s"\nexternal_url = "{EXTERNAL_URL}"\n\n'
            '[[slo]]\nname = "orders-availability"\nservice = "orders"\nindicator = "availability"\n'
            'objective = 99.9\nwindow = "30d"\nnotify = ["oncall"]\n\n'
            '[[alert]]\nname = "orders-errors"\nservice = "orders"\nmeasure = "error_rate"\nwindow = "5m"\n'
            'above = 0.2\nmin_requests = 10\nnotify = ["oncall"]\n\n'
            + notify_table("oncall", rx.url("/oncall"), ["alertname", "service"], "1s", "1s", "1h")))
        srv = SightlineServer(tmp_path / "data", tmp_path / "logs", extra_args=["--config", str(config)],
                              name="restart")
        try:
            srv.start()
            # 120 requests, half failing, 20 s ago: the 5m and 1h windows hold them for minutes.
            send(srv, {"orders": batch(time.time_ns() - 20 * NS, 120, "/orders", failed=60, method="POST")})
            rule = wait_firing(srv, alertname="orders-errors", service="orders")
            page = wait_firing(srv, **slo_labels("orders-availability", "orders", "page"))
            ticket = wait_firing(srv, **slo_labels("orders-availability", "orders", "ticket"))
            wait_for(lambda: len(rx.delivered("/oncall")) >= 2, timeout=10, interval=0.1, what="two notifications")
            wait_for(lambda: srv.metric("sightline_notifications_sent_total", target="oncall") == 2, timeout=5,
                     interval=0.1, what="the server to record both deliveries")
            told = sorted(a["fingerprint"] for p in rx.posts("/oncall") for a in p.json()["alerts"])
            assert told == sorted([rule["id"], page["id"], ticket["id"]]), told
            before = {a["id"]: a for a in (rule, page, ticket)}

            assert srv.stop() == 0
            srv.start()
            wait_for(lambda: srv.metric("sightline_monitor_evaluations_total", outcome="ok") >= 4, timeout=20,
                     interval=0.2, what="four evaluations after the restart")
            time.sleep(2)
            posts = rx.posts("/oncall")
            assert len(posts) == 2, [(p.json()["groupKey"], p.json()["status"]) for p in posts]
            assert srv.metric("sightline_notifications_sent_total", target="oncall") == 0
            for alert_id, was in before.items():
                now = [a for a in alerts(srv) if a["id"] == alert_id]
                assert len(now) == 1, alerts(srv)
                assert now[0]["state"] == "firing" and now[0]["since"] == was["since"], (was, now[0])
                states = [e["state"] for e in events_of(srv, alert_id)]
                # (an SLO alert starts in no_data: the server started before any request)
                assert states.count("firing") == 1 and states[-1] == "firing", (was["labels"], states)
                assert set(states[:-1]) <= {"no_data"}, (was["labels"], states)
        finally:
            if srv.running():
                _cleanup(srv)


# ------------------------------------------------------ backfill: 30d SLOs at once

LEDGER_ROUTE = "/api/ledger"
# (minutes before the current minute, requests, failed, slow): 600 ms requests count as bad for
# the latency SLO (threshold 300ms) only. Minute offsets keep clear of every window's edge even
# if the minute rolls over during the test (a window of n minutes holds offsets 0..n-1).
LEDGER_BATCHES = [(2, 100, 40, 5), (10, 100, 0, 3), (40, 50, 0, 2), (120, 200, 2, 4), (1000, 300, 3, 0),
                  (2000, 400, 0, 10), (7200, 6000, 5, 30)]
# Failing requests on another route (counted by neither SLO) and with another method on the
# route (counted by ledger-availability, which names no method, not by ledger-latency).
LEDGER_NOISE = [(2, "/health", "GET", 500), (40, LEDGER_ROUTE, "GET", 200)]
PAGE_ROWS = [(60, 5, 14.4), (360, 30, 6.0)]  # 30d: (long, short minutes, burn rate)
TICKET_ROWS = [(4320, 360, 1.0)]


def expected_counts(minutes: int, latency: bool) -> tuple[int, int]:
    """Good and total requests of ledger-availability (route only: every method) or
    ledger-latency (route and POST) over the last `minutes` minutes."""
    good = total = 0
    for k, n, failed, slow in LEDGER_BATCHES:
        if k < minutes:
            total += n
            good += n - failed - (slow if latency else 0)
    for k, route, method, n in LEDGER_NOISE:  # all failing
        if k < minutes and route == LEDGER_ROUTE and (not latency or method == "POST"):
            total += n
    return good, total


def burn(good: int, total: int, objective: float) -> float:
    return ((total - good) / total) / (1 - objective / 100)


def expected_state(rows, latency: bool, objective: float, min_requests: int = 100) -> bool:
    for long, short, rate in rows:
        lg, lt = expected_counts(long, latency)
        sg, st = expected_counts(short, latency)
        if lt >= min_requests and burn(lg, lt, objective) >= rate and burn(sg, st, objective) >= rate:
            return True
    return False


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    base = tmp_path_factory.mktemp("ledger")
    config = write_config(base / "sightline.toml", (
        f'[monitor]\nevaluation_interval = "1s"\nexternal_url = "{EXTERNAL_URL}"\n\n'
        f'[[slo]]\nname = "ledger-availability"\nservice = "ledger"\nroute = "{LEDGER_ROUTE}"\n'
        f'indicator = "availability"\nobjective = 99\nwindow = "30d"\nrunbook_url = "{RUNBOOK}"\n\n'
        f'[[slo]]\nname = "ledger-latency"\nservice = "ledger"\nroute = "{LEDGER_ROUTE}"\nmethod = "POST"\n'
        'indicator = "latency"\nthreshold = "300ms"\nobjective = 95\nwindow = "30d"\n\n'))
    srv = start_server(base, "ledger", config)
    try:
        m = minute_start(time.time_ns())
        spans = []
        for k, n, failed, slow in LEDGER_BATCHES:
            spans += batch(m - k * MINUTE_NS + 5 * NS, n, LEDGER_ROUTE, failed=failed, slow=slow, method="POST")
        for k, route, method, n in LEDGER_NOISE:
            spans += batch(m - k * MINUTE_NS + 20 * NS, n, route, failed=n, method=method)
        send(srv, {"ledger": spans})
        yield srv
    finally:
        _cleanup(srv)


def test_backfilled_spans_give_a_30d_slo_its_burn_verdict_at_once(ledger):
    srv = ledger
    wait_for(lambda: (s := slo(srv, "ledger-availability")) and s["total"] == expected_counts(43200, False)[1]
             and slo(srv, "ledger-latency")["total"] == expected_counts(43200, True)[1],
             timeout=15, interval=0.2, what="the SLOs to count the backfill")
    for name, latency, objective in (("ledger-availability", False, 99.0), ("ledger-latency", True, 95.0)):
        s = slo(srv, name)
        assert SLO_KEYS <= set(s), sorted(s)
        assert (s["service"], s["route"], s["window"]) == ("ledger", LEDGER_ROUTE, "30d"), s
        assert s["indicator"] == ("latency" if latency else "availability") and s["objective"] == objective, s
        good, total = expected_counts(43200, latency)
        assert (s["good"], s["total"]) == (good, total), (name, s["good"], s["total"], good, total)
        assert s["sli"] == pytest.approx(good / total, rel=1e-9), s
        remaining = 1 - burn(good, total, objective)
        assert s["budget_remaining"] == pytest.approx(remaining, rel=1e-6), (name, s["budget_remaining"], remaining)
        assert set(s["burn_rates"]) == set(BURN_WINDOWS), s["burn_rates"]
        for w, minutes in BURN_WINDOWS.items():
            g, t = expected_counts(minutes, latency)
            assert s["burn_rates"][w] == pytest.approx(burn(g, t, objective), rel=1e-6), (name, w, s["burn_rates"])
        # Time to exhaustion: what is left of the budget at one of the burn rates, over 30 days;
        # none left (availability: overspent by the failing GETs), none to wait.
        if remaining <= 0:
            assert s["exhaustion_s"] == 0, s
        else:
            assert s["exhaustion_s"] is not None and s["exhaustion_s"] > 0, s
            candidates = [remaining / b * 30 * 86400 for b in s["burn_rates"].values() if b]
            assert any(abs(s["exhaustion_s"] - c) <= 1.0 for c in candidates), (s["exhaustion_s"], candidates)

        pages = expected_state(PAGE_ROWS, latency, objective)
        tickets = expected_state(TICKET_ROWS, latency, objective)
        assert s["state"] == ("firing" if pages or tickets else "ok"), (name, s["state"])
        method = "POST" if latency else None
        for severity, fires in (("page", pages), ("ticket", tickets)):
            labels = slo_labels(name, "ledger", severity, route=LEDGER_ROUTE, method=method)
            if fires:
                a = wait_firing(srv, **labels)
                assert a["labels"] == labels and a["id"] == fingerprint(labels), a
                assert a["value"] >= a["threshold"] and a["threshold"] in ((14.4, 6.0) if severity == "page" else (1.0,)), a
                assert a["summary"], a
            else:
                a = alert_by_labels(srv, **labels)
                assert a is None or a["state"] not in ("firing", "pending"), a
    # The workbook's table says: availability pages and tickets; latency only tickets.
    assert expected_state(PAGE_ROWS, False, 99.0) and expected_state(TICKET_ROWS, False, 99.0)
    assert not expected_state(PAGE_ROWS, True, 95.0) and expected_state(TICKET_ROWS, True, 95.0)
    firing = alerts(srv, "firing")
    assert all(a["state"] == "firing" for a in firing) and len(firing) == 3, firing
    assert srv.metric("sightline_alerts", state="firing") == 3
    page = alert_by_labels(srv, **slo_labels("ledger-availability", "ledger", "page", route=LEDGER_ROUTE))
    assert page["runbook_url"] == RUNBOOK
    rows = events_of(srv, page["id"])
    states = [r["state"] for r in rows]
    # no_data until the backfill came (the server started empty), then firing at once.
    assert states[-1] == "firing" and states.count("firing") == 1 and set(states[:-1]) <= {"no_data"}, states
    assert json.loads(rows[0]["labels"]) == page["labels"]


def test_cli_prints_slos_alerts_and_manages_silences(ledger):
    srv = ledger
    page_labels = slo_labels("ledger-availability", "ledger", "page", route=LEDGER_ROUTE)
    page = wait_firing(srv, timeout=15, **page_labels)

    out = srv.cli("slos")
    assert out.returncode == 0, out.stderr
    for text in ("ledger-availability", "ledger-latency", "firing"):
        assert text in out.stdout, out.stdout
    out = srv.cli("slos", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(s["name"] for s in json.loads(out.stdout)["slos"]) == ["ledger-availability", "ledger-latency"]

    out = srv.cli("alerts")
    assert out.returncode == 0, out.stderr
    assert page["id"] in out.stdout and "ledger-availability" in out.stdout and "firing" in out.stdout, out.stdout
    out = srv.cli("alerts", "--state", "firing", "--json")
    assert out.returncode == 0, out.stderr
    assert sorted(a["id"] for a in json.loads(out.stdout)["alerts"]) == sorted(a["id"] for a in alerts(srv, "firing"))
    out = srv.cli("alerts", "--state", "no_data")
    assert out.returncode == 0, out.stderr
    assert page["id"] not in out.stdout
    out = srv.cli("alerts", "--state", "burning")
    assert out.returncode != 0 and "state" in (out.stderr + out.stdout), (out.returncode, out.stderr)

    out = srv.cli("silence", "--match", "service=ledger", "--for", "2h", "--comment", "cli e2e")
    assert out.returncode == 0, out.stderr
    listed = [s for s in api_json(srv, "/api/v1/silences")["silences"] if s.get("comment") == "cli e2e"]
    assert len(listed) == 1 and listed[0]["matchers"] == {"service": "ledger"}, listed
    sid = listed[0]["id"]
    assert sid in out.stdout, out.stdout
    assert alert_by_labels(srv, **page_labels)["silenced_by"] == sid

    out = srv.cli("silence", "--list")
    assert out.returncode == 0, out.stderr
    for text in (sid, "service=ledger", "cli e2e"):
        assert text in out.stdout, out.stdout

    out = srv.cli("silence", "--expire", sid)
    assert out.returncode == 0, out.stderr
    assert alert_by_labels(srv, **page_labels)["silenced_by"] is None
    after = [s for s in api_json(srv, "/api/v1/silences")["silences"] if s["id"] == sid]
    assert all(s.get("active") is False for s in after), after
    assert srv.metric("sightline_silences_active") == 0

    out = srv.cli("silence", "--for", "1h")
    assert out.returncode != 0, "a silence without a matcher would mute everything"
    out = srv.cli("silence", "--expire", "0000000000000000")
    assert out.returncode != 0, out.stdout


# ------------------------------------------------------ configuration refusals

BASE = ('[monitor]\nevaluation_interval = "30s"\n\n'
        '[[slo]]\nname = "orders-availability"\nservice = "orders"\nindicator = "availability"\n'
        'objective = 99.9\nwindow = "30d"\nnotify = ["oncall"]\n\n'
        '[[slo]]\nname = "orders-latency"\nservice = "orders"\nindicator = "latency"\nthreshold = "300ms"\n'
        'objective = 99\nwindow = "7d"\n\n'
        '[[alert]]\nname = "orders-errors"\nservice = "orders"\nmeasure = "error_rate"\nwindow = "5m"\n'
        'above = 0.05\nnotify = ["oncall"]\n\n'
        '[[alert]]\nname = "error-logs"\nmeasure = "sql"\n'
        'sql = "SELECT service_name, count(*) AS value FROM logs WHERE severity = \'error\' GROUP BY 1"\n'
        'above = 10\n\n'
        '[[notify]]\nname = "oncall"\nkind = "webhook"\nurl = "http://127.0.0.1:9/hook"\n')

REFUSALS = [
    ("unknown-notify-target", ('notify = ["oncall"]\n\n[[slo]]', 'notify = ["pager"]\n\n[[slo]]'), "slo[0].notify", "pager"),
    ("unknown-notify-target-rule", ('above = 0.05\nnotify = ["oncall"]', 'above = 0.05\nnotify = ["oncall", "sms"]'),
     "alert[0].notify", "sms"),
    ("slo-window-shorter-than-interval", ('window = "7d"', 'window = "20s"'), "slo[1].window", None),
    ("alert-window-shorter-than-interval", ('window = "5m"', 'window = "10s"'), "alert[0].window", None),
    ("objective-100", ("objective = 99.9", "objective = 100"), "slo[0].objective", None),
    ("objective-0", ("objective = 99\n", "objective = 0\n"), "slo[1].objective", None),
    ("objective-negative", ("objective = 99.9", "objective = -5"), "slo[0].objective", None),
    ("sql-not-read-only", ("sql = \"SELECT service_name, count(*) AS value FROM logs WHERE severity = 'error' GROUP BY 1\"",
                           'sql = "DELETE FROM spans"'), "alert[1].sql", None),
    ("sql-creates-a-table", ("sql = \"SELECT service_name, count(*) AS value FROM logs WHERE severity = 'error' GROUP BY 1\"",
                             "sql = \"CREATE TABLE x AS SELECT 1 AS value\""), "alert[1].sql", None),
    ("sql-without-value", ("count(*) AS value FROM logs", "count(*) AS n FROM logs"), "alert[1].sql", "value"),
    ("sql-text-value", ("count(*) AS value FROM logs", "max(body) AS value FROM logs"), "alert[1].sql", "value"),
]


def run_serve(tmp_path: Path, text: str, timeout: float = 30.0):
    """Start `serve` with this config; (got ready?, exit code, stderr)."""
    config = write_config(tmp_path / "sightline.toml", text)
    ready = tmp_path / "ready.json"
    cmd = [sightline_bin(), "serve", "--config", str(config), "--data-dir", str(tmp_path / "data"),
           "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0",
           "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, cwd=str(tmp_path), env=server_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = ready.exists()
    if proc.poll() is None:
        proc.terminate()
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return started, proc.returncode, err


def test_the_base_config_of_the_refusals_is_accepted(tmp_path):
    started, code, err = run_serve(tmp_path, BASE)
    assert started, f"the valid config was refused (exit {code}):\n{err}"


def assert_refused(tmp_path: Path, base: str, change: tuple[str, str], keys: tuple[str, ...],
                   says: str | None) -> None:
    """`serve` with `base` changed by `change` (old, new) stops before it is ready, exits non-zero,
    names one of `keys` and, if given, says `says`."""
    old, new = change
    assert old in base, old
    started, code, err = run_serve(tmp_path, base.replace(old, new, 1))
    assert not started, f"serve got ready with a bad config ({keys[0]})\n{err}"
    assert code not in (0, None), f"serve exited {code} with a bad config\n{err}"
    assert any(key in err for key in keys), f"stderr names none of {keys}:\n{err}"
    if says:
        assert says in err, f"stderr does not say {says!r}:\n{err}"


@pytest.mark.parametrize("change, key, says", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_config_mistakes_are_refused_naming_the_key(tmp_path, change, key, says):
    assert_refused(tmp_path, BASE, change, (key,), says)
