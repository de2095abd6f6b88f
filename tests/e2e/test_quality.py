"""Data quality (issue 16), end to end: findings about the telemetry itself and `[[check]]` data
checks, each with a known answer.

One server (module fixture) evaluates its checks every second and receives:

- `shop`, a real FastAPI app under `opentelemetry-instrument uvicorn` (`apps/quality_app.py`),
  run twice, one version after the other, 30 requests each on the same route: 1.4.0 with the old
  HTTP semantic conventions recording its histogram `checkout.latency` in ms, then 2.0.0 with
  OTEL_SEMCONV_STABILITY_OPT_IN=http recording the same latencies in s. Known answer: exactly one
  `schema` finding (warn, version 2.0.0) naming http.status_code -> http.response.status_code as
  a rename, and exactly one `units` finding (error, version 2.0.0) naming checkout.latency, ms and
  s. (The instrumentation's other metrics share no name across versions but
  http.server.active_requests, whose unit is the same and whose value is 0 in both.)
- `ledger`, hand-made server spans on two routes every minute from 3 hours ago until 40 minutes
  ago, then nothing: exactly one `freshness` finding, severity error (the whole service is
  silent), and none for its routes.
- `mailer`, 50 log records of which 45 carry no trace id: one `correlation` finding.
- `etl` (`etl.load` spans, `rows_written` about 1000 a day ago, 0 in the last hour) and `orders`
  (`order.placed` spans: `order.amount` missing or "" on 30 % of the last hour's, `payment.method`
  70/25/5 % card/paypal/invoice a day ago and 20/20/60 % now, `user.email` on 10 of them): the
  data checks below fire or pass with values computed from what was sent (KS statistic 1, null
  rate 0.3, PSI about 2.0, volume ratios 40/70 and 2.0, 10 records with a forbidden key, the
  age of the newest `order.placed`).
- `catalog`, the healthy control: server spans on two routes every minute for 3 hours, each
  with a log line carrying its trace id, kept fresh by a feeder thread while the module runs:
  no finding at all.

Every timestamp is computed from one `now` taken when the module starts. The data is shaped so
that no rule finds what the test does not expect:
- a rule that needs a history (freshness: 5 distinct active minutes; volume: 2 previous days)
  sees only the services meant for it: etl and orders are active in 4 distinct minutes (two a
  day ago, two about half an hour ago), mailer in one, shop in one or two, and no service has
  data on 2 previous days;
- clock_skew calls records that arrive more than an hour after their time a backlog when they
  are more than half of a service's records, so every backfilled service sends most of its
  records less than an hour old (ledger and catalog send more per minute in the last hour than
  before; etl and orders send twice as many now as a day ago);
- every span carries service.version, every HTTP server span a route and a status code, no
  span has a parent that was not sent, and nothing is redacted, truncated or refused.
The windows of the checks (1h, and 1d before it) hold their data with 25 minutes to spare.

Also: `sightline check` (exit 1 here naming the failing checks, `--json` equal to the API, exit
0 on a server with only the healthy control, exit 2 when the server cannot be asked), the pages
(`/quality`, the service page's `section#quality`, the `.quality-error` badge on the services
page, and /quality in Chromium with a screenshot), a firing check's notification, and `[[check]]`
configuration mistakes refused at start naming the key.

Waiting is by polling the API (wait_for), never by sleeping.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from conftest import SightlineServer, _cleanup, free_port, sightline_bin, wait_for
from test_monitor import (alerts, api_json, assert_refused, minute_start, notify_table, parse_time_ns, run_serve,
                          start_server, write_config)
from test_otlp_json import av
from test_python_sdk import App, common_env
from test_ui import goto, save_screenshot, ui
from webhook_receiver import WebhookReceiver

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
SETTLE_TIMEOUT_S = 90.0  # for every finding and check state to be there
WINDOW = "24h"  # the API's and the pages' default window (since=24h)

SEVERITY_RANK = {"error": 0, "warn": 1, "info": 2}
FINDING_KEYS = {"check", "service", "version", "severity", "summary", "detail", "first_seen", "last_seen"}
CHECK_KEYS = {"name", "kind", "table", "state", "value", "threshold", "summary", "last_evaluated", "history"}
NOT_PASSING = ("firing", "pending", "no_data")

# service -> service.version of the hand-made data
VERSIONS = {"catalog": "4.2.0", "ledger": "7.0.1", "mailer": "1.0.3", "etl": "3.1.0", "orders": "5.2.0"}

# The findings, and nothing else: (check, service, severity).
EXPECTED_FINDINGS = [
    ("freshness", "ledger", "error"),
    ("units", "shop", "error"),
    ("correlation", "mailer", "warn"),
    ("schema", "shop", "warn"),
]


# ----------------------------------------------------------------- OTLP/JSON


def kvs(attrs: dict) -> list[dict]:
    return [{"key": k, "value": av(v)} for k, v in attrs.items()]


def new_span(start_ns: int, name: str, kind: int, attrs: dict, ms: float = 10.0) -> dict:
    """A root span (no parent) of its own trace."""
    return {"traceId": os.urandom(16).hex(), "spanId": os.urandom(8).hex(), "name": name, "kind": kind,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + int(ms * 1e6)),
            "attributes": kvs(attrs)}


def request_span(start_ns: int, route: str, method: str = "GET", status: int = 200, ms: float = 20.0) -> dict:
    """A server span of an HTTP request with its route, method and status code (stable conventions)."""
    return new_span(start_ns, f"{method} {route}", 2, {"http.route": route, "http.request.method": method,
                                                        "http.response.status_code": status}, ms)


def log_record(time_ns: int, body: str, trace_id: str | None = None, span_id: str | None = None,
               severity: int = 9) -> dict:
    record = {"timeUnixNano": str(time_ns), "observedTimeUnixNano": str(time_ns), "severityNumber": severity,
              "severityText": "INFO" if severity == 9 else "WARN", "body": av(body)}
    if trace_id:
        record.update(traceId=trace_id, spanId=span_id)
    return record


def resource(service: str, version: str) -> dict:
    return {"attributes": kvs({"service.name": service, "service.version": version,
                               "deployment.environment.name": "e2e"})}


def post_spans(srv: SightlineServer, service: str, spans: list[dict], session=None) -> None:
    """POST the spans of one service (its version from VERSIONS) in requests of at most 1000."""
    for i in range(0, len(spans), 1000):
        body = {"resourceSpans": [{"resource": resource(service, VERSIONS[service]),
                                   "scopeSpans": [{"scope": {"name": "e2e.quality"}, "spans": spans[i:i + 1000]}]}]}
        resp = (session or srv.session).post(f"{srv.otlp_http_url}/v1/traces", data=json.dumps(body),
                                             headers={"Content-Type": "application/json"}, timeout=60)
        assert resp.status_code == 200, f"{service} spans refused ({resp.status_code}): {resp.text}"
        assert not resp.json().get("partialSuccess"), resp.text


def post_logs(srv: SightlineServer, service: str, records: list[dict], session=None) -> None:
    for i in range(0, len(records), 1000):
        body = {"resourceLogs": [{"resource": resource(service, VERSIONS[service]),
                                  "scopeLogs": [{"scope": {"name": "e2e.quality"},
                                                 "logRecords": records[i:i + 1000]}]}]}
        resp = (session or srv.session).post(f"{srv.otlp_http_url}/v1/logs", data=json.dumps(body),
                                             headers={"Content-Type": "application/json"}, timeout=60)
        assert resp.status_code == 200, f"{service} logs refused ({resp.status_code}): {resp.text}"
        assert not resp.json().get("partialSuccess"), resp.text


def attr_of(span: dict, key: str):
    for kv in span["attributes"]:
        if kv["key"] == key:
            return next(iter(kv["value"].values()), None)
    return None


# ----------------------------------------------------------------- the data, with its known answers

# catalog: two routes, every minute for 3 hours up to now, each request with a log line in its
# trace; one request per route and minute until RECENT minutes ago, then CATALOG_RECENT per route
# and minute, so that most of its records arrive less than an hour after their time.
CATALOG_ROUTES = ("/catalog/items", "/catalog/items/{id}")
BACKFILL_MINUTES = 180
RECENT = 58  # minutes ago: from here on, records arrive well within an hour of their time
CATALOG_RECENT = 4
FEED_EVERY_S = 5.0

# ledger: two routes every minute from LEDGER_FROM to LEDGER_UNTIL minutes ago, then nothing.
LEDGER_ROUTES = (("/ledger/entries", "POST"), ("/ledger/balance", "GET"))
LEDGER_FROM, LEDGER_UNTIL = 180, 40
LEDGER_RECENT = 8

# mailer: MAILER_LOGS lines in one minute, every tenth in a trace.
MAILER_LOGS = 50
MAILER_WITH_TRACE = 5

# etl and orders: two groups in two minutes this long ago, now and a day earlier.
GROUP_MINUTES_AGO = (30, 26)
ETL_BASELINE_PER_GROUP, ETL_CURRENT_PER_GROUP = 20, 40
ORDER_BASELINE_MIX = {"card": 70, "paypal": 25, "invoice": 5}
ORDER_CURRENT_MIX = {"card": 40, "paypal": 40, "invoice": 120}
ORDER_EMAILS = 10  # current order.placed spans carrying the forbidden user.email


def catalog_request(start_ns: int, route: str, n: int) -> tuple[dict, dict]:
    span = request_span(start_ns, route, status=200, ms=15.0 + n % 5)
    log = log_record(start_ns + 1_000_000, f"served {route}", span["traceId"], span["spanId"])
    return span, log


def catalog_backfill(now_ns: int) -> tuple[list[dict], list[dict]]:
    """catalog's requests from 3 hours ago up to a few seconds before now_ns, with their logs."""
    spans, logs = [], []
    for k in range(BACKFILL_MINUTES, -1, -1):
        per = CATALOG_RECENT if k <= RECENT else 1
        base = now_ns - k * MINUTE_NS - 10 * NS
        for r, route in enumerate(CATALOG_ROUTES):
            for j in range(per):
                span, log = catalog_request(base + j * 2 * NS + r * 500_000_000, route, k + j)
                spans.append(span)
                logs.append(log)
    return spans, logs


def ledger_spans(now_ns: int) -> list[dict]:
    spans = []
    for k in range(LEDGER_FROM, LEDGER_UNTIL - 1, -1):
        per = LEDGER_RECENT if k <= RECENT else 1
        m = minute_start(now_ns - k * MINUTE_NS)
        for r, (route, method) in enumerate(LEDGER_ROUTES):
            for j in range(per):
                spans.append(request_span(m + 5 * NS + j * 5 * NS + r * 500_000_000, route, method,
                                          status=201 if method == "POST" else 200, ms=30.0))
    return spans


def ledger_last_ns(now_ns: int) -> int:
    return max(int(s["endTimeUnixNano"]) for s in ledger_spans(now_ns))


def mailer_minute(now_ns: int) -> int:
    """The minute of mailer's lines: less than an hour old, and when the clock allows, in a clock
    hour that ended at least 6 minutes ago (the last minute of the previous hour), so that they
    count however the correlation rule reads its hours."""
    hour = now_ns - now_ns % HOUR_NS
    into = (now_ns - hour) // MINUTE_NS
    if 6 <= into <= 50:
        return hour - MINUTE_NS
    return minute_start(now_ns - 20 * MINUTE_NS)


def mailer_logs(now_ns: int) -> list[dict]:
    m = mailer_minute(now_ns)
    out = []
    for i in range(MAILER_LOGS):
        t = m + 5 * NS + i * 500_000_000
        if i % (MAILER_LOGS // MAILER_WITH_TRACE) == 0:
            out.append(log_record(t, f"receipt {i} sent while serving a request", os.urandom(16).hex(),
                                  os.urandom(8).hex()))
        else:
            out.append(log_record(t, f"receipt {i} sent"))
    return out


def group_starts(now_ns: int, days_back: int) -> list[int]:
    """The first span's time of each group: 5 s into the minute GROUP_MINUTES_AGO ago."""
    return [minute_start(now_ns - days_back * DAY_NS - ago * MINUTE_NS) + 5 * NS for ago in GROUP_MINUTES_AGO]


def baseline_rows_written(i: int) -> int:
    return 1000 + (i * 37) % 101 - 50  # 950..1050


def etl_spans(now_ns: int) -> tuple[list[dict], list[dict]]:
    """(a day ago, the last hour): etl.load spans, root spans of kind internal."""
    def load(t: int, i: int, rows: int) -> dict:
        return new_span(t, "etl.load", 1, {"rows_written": rows, "etl.table": "orders_daily", "etl.partition": i},
                        ms=200.0)

    baseline = [load(t + i * 500_000_000, g * ETL_BASELINE_PER_GROUP + i, baseline_rows_written(g * 100 + i))
                for g, t in enumerate(group_starts(now_ns, 1)) for i in range(ETL_BASELINE_PER_GROUP)]
    current = [load(t + i * 300_000_000, g * ETL_CURRENT_PER_GROUP + i, 0)
               for g, t in enumerate(group_starts(now_ns, 0)) for i in range(ETL_CURRENT_PER_GROUP)]
    return baseline, current


def mix(counts: dict[str, int], seed: int) -> list[str]:
    values = [method for method, n in counts.items() for _ in range(n)]
    random.Random(seed).shuffle(values)
    return values


def order_span(t: int, i: int, method: str, amount, email: str | None) -> dict:
    attrs = {"order.id": f"ord-{i:06d}", "payment.method": method}
    if amount is not None:
        attrs["order.amount"] = amount
    if email is not None:
        attrs["user.email"] = email
    return new_span(t, "order.placed", 1, attrs, ms=5.0)


def current_amount(i: int):
    """order.amount of the i-th current order: missing for i % 10 in (0, 2), "" for 1 (30 %)."""
    return {0: None, 1: "", 2: None}.get(i % 10, round(20.0 + (i % 13) * 3.5, 2))


def orders_spans(now_ns: int) -> tuple[list[dict], list[dict]]:
    """(a day ago, the last hour): order.placed spans, root spans of kind internal."""
    baseline_methods = mix(ORDER_BASELINE_MIX, 1)
    current_methods = mix(ORDER_CURRENT_MIX, 2)
    per_b, per_c = len(baseline_methods) // 2, len(current_methods) // 2
    baseline = [order_span(t + j * 200_000_000, g * per_b + j, baseline_methods[g * per_b + j],
                           round(20.0 + (j % 13) * 3.5, 2), None)
                for g, t in enumerate(group_starts(now_ns, 1)) for j in range(per_b)]
    current = []
    for g, t in enumerate(group_starts(now_ns, 0)):
        for j in range(per_c):
            i = g * per_c + j
            email = f"buyer{i}@shop.example" if i % 20 == 7 else None
            current.append(order_span(t + j * 200_000_000, 100_000 + i, current_methods[i], current_amount(i), email))
    return baseline, current


def psi(expected: dict[str, int], actual: dict[str, int]) -> float:
    """Population stability index of actual against expected (no empty category here)."""
    e_total, a_total = sum(expected.values()), sum(actual.values())
    out = 0.0
    for k in expected:
        e, a = expected[k] / e_total, actual[k] / a_total
        out += (a - e) * math.log(a / e)
    return out


ORDERS_CURRENT = sum(ORDER_CURRENT_MIX.values())
NULL_RATE = sum(1 for i in range(ORDERS_CURRENT) if current_amount(i) in (None, "")) / ORDERS_CURRENT
PAYMENT_PSI = psi(ORDER_BASELINE_MIX, ORDER_CURRENT_MIX)
CARD_RATIO = ORDER_CURRENT_MIX["card"] / ORDER_BASELINE_MIX["card"]
ORDERS_RATIO = ORDERS_CURRENT / sum(ORDER_BASELINE_MIX.values())
assert NULL_RATE == 0.3 and PAYMENT_PSI > 1.9 and CARD_RATIO < 0.8 and ORDERS_RATIO == 2.0
assert sum(1 for i in range(ORDERS_CURRENT) if i % 20 == 7) == ORDER_EMAILS


class CatalogFeeder:
    """Keeps catalog fresh while the module runs: one request per route (and its log line)
    stamped now, every FEED_EVERY_S seconds."""

    def __init__(self, srv: SightlineServer):
        self.srv = srv
        self.stop_event = threading.Event()
        self.errors: list[str] = []
        self.sent = 0
        self.thread = threading.Thread(target=self._run, name="catalog-feeder", daemon=True)

    def start(self) -> "CatalogFeeder":
        self.thread.start()
        return self

    def _run(self) -> None:
        session = requests.Session()
        while True:  # at once, then every FEED_EVERY_S seconds
            try:
                now = time.time_ns() - 100_000_000
                pairs = [catalog_request(now + r * 1_000_000, route, self.sent) for r, route in enumerate(CATALOG_ROUTES)]
                post_spans(self.srv, "catalog", [s for s, _ in pairs], session)
                post_logs(self.srv, "catalog", [log for _, log in pairs], session)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - reported by the healthy-control test
                self.errors.append(repr(exc))
            if self.stop_event.wait(FEED_EVERY_S):
                return

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=15)


# ----------------------------------------------------------------- the checks

FRESH_MAX_AGE_S = 600

CHECKS_CONFIG = f'''
[[check]]
name = "etl-rows-written"
kind = "distribution"
table = "spans"
where = "name = 'etl.load'"
attribute = "rows_written"
window = "1h"
baseline = "1d"
for = "0s"
labels = {{ team = "data" }}
notify = ["data"]

[[check]]
name = "order-amount-nulls"
kind = "nulls"
where = "name = 'order.placed'"
attribute = "order.amount"
window = "1h"
max_null_rate = 0.1
for = "0s"

[[check]]
name = "payment-mix"
kind = "distribution"
where = "name = 'order.placed'"
attribute = "payment.method"
window = "1h"
baseline = "1d"
max_psi = 0.2
for = "0s"

[[check]]
name = "orders-fresh"
kind = "freshness"
where = "name = 'order.placed'"
max_age = "{FRESH_MAX_AGE_S // 60}m"
for = "0s"

[[check]]
name = "catalog-logs-fresh"
kind = "freshness"
table = "logs"
where = "service_name = 'catalog'"
max_age = "{FRESH_MAX_AGE_S // 60}m"
for = "0s"

[[check]]
name = "card-volume"
kind = "volume"
where = "name = 'order.placed' AND json_get_str(attributes, 'payment.method') = 'card'"
window = "1h"
baseline = "1d"
min_ratio = 0.8
for = "0s"

[[check]]
name = "orders-volume"
kind = "volume"
where = "name = 'order.placed'"
window = "1h"
baseline = "1d"
min_ratio = 0.5
max_ratio = 4
for = "0s"

[[check]]
name = "orders-no-email"
kind = "schema"
where = "name = 'order.placed'"
required = ["order.id"]
forbidden = ["user.email"]
for = "0s"

[[check]]
name = "orders-ids"
kind = "schema"
where = "name = 'order.placed'"
required = ["order.id", "payment.method"]
types = {{ "order.id" = "string", "payment.method" = "string" }}
for = "0s"
'''


@dataclass
class CheckCase:
    kind: str
    table: str
    firing: bool
    threshold: float | None  # asserted when the contract makes it plain
    value: str  # what the value must be, in words (for the failure message; value_ok checks it)


CHECKS = {
    "etl-rows-written": CheckCase("distribution", "spans", True, None, "KS statistic D = 1 (every value moved)"),
    "order-amount-nulls": CheckCase("nulls", "spans", True, 0.1, f"null rate {NULL_RATE} +- 0.05"),
    "payment-mix": CheckCase("distribution", "spans", True, 0.2, f"PSI {PAYMENT_PSI:.4f} (> 0.2)"),
    "orders-fresh": CheckCase("freshness", "spans", True, float(FRESH_MAX_AGE_S), "age of the newest order.placed"),
    "catalog-logs-fresh": CheckCase("freshness", "logs", False, float(FRESH_MAX_AGE_S), "a few seconds"),
    "card-volume": CheckCase("volume", "spans", True, None, f"ratio {CARD_RATIO:.4f}"),
    "orders-volume": CheckCase("volume", "spans", False, None, f"ratio {ORDERS_RATIO}"),
    "orders-no-email": CheckCase("schema", "spans", True, None, f"{ORDER_EMAILS} violating records"),
    "orders-ids": CheckCase("schema", "spans", False, None, "0 violating records"),
}
FIRING = [n for n, c in CHECKS.items() if c.firing]
PASSING = [n for n, c in CHECKS.items() if not c.firing]


def main_config(rx: WebhookReceiver) -> str:
    return ('[monitor]\nevaluation_interval = "1s"\n'
            + CHECKS_CONFIG + "\n"
            + notify_table("data", rx.url("/data"), ["alertname"], "1s", "1s", "1h"))


# ----------------------------------------------------------------- the shop, under the real SDK

SHOP_REQUESTS = 30
SHOP_RUNS = (("1.4.0", "ms", None), ("2.0.0", "s", "http"))  # version, unit, OTEL_SEMCONV_STABILITY_OPT_IN
SHOP_ROUTE = "/checkout/{item}"


def latency_ms(n: int) -> float:
    """apps/quality_app.py's latency of item sku-<n>."""
    return 20.0 + 5.0 * (n % 7)


SHOP_LATENCY_SUM_MS = sum(latency_ms(n) for n in range(SHOP_REQUESTS))


def run_shop(srv: SightlineServer, log_dir: Path, version: str, unit: str, semconv: str | None) -> list[str]:
    """Start one version of the shop, send SHOP_REQUESTS requests one after the other, stop it
    (its lifespan flushes the SDK); the trace ids the app reported."""
    env = {
        **common_env("shop"),
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": srv.otlp_http_url,
        "OTEL_RESOURCE_ATTRIBUTES": f"service.version={version},deployment.environment.name=e2e",
        # No logs: uvicorn's own lines would be logs outside any span, which is mailer's story.
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "false",
        # One export, at shutdown: every request has ended, so active_requests is 0 in both versions.
        "OTEL_METRIC_EXPORT_INTERVAL": "60000",
        # Host and process metrics are not this test's subject (and differ from run to run).
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "system_metrics",
        "CHECKOUT_LATENCY_UNIT": unit,
    }
    if semconv:
        env["OTEL_SEMCONV_STABILITY_OPT_IN"] = semconv
    app = App(f"shop-{version}", "quality_app", env=env, log_dir=log_dir)
    traces = []
    try:
        app.start()
        app.wait_up()
        for n in range(SHOP_REQUESTS):
            resp = requests.get(f"{app.url}/checkout/sku-{n}", timeout=10)
            assert resp.status_code == 200, resp.text
            assert resp.json()["unit"] == unit, resp.json()
            traces.append(resp.json()["trace_id"])
    finally:
        code = app.stop() if app.proc is not None else None
    out = app.output()
    assert code in (0, -signal.SIGTERM), f"shop {version} exited with {code}\n{out}"
    assert "Application shutdown complete" in out, out
    assert "Failed to export" not in out, out
    return traces


# ----------------------------------------------------------------- the server


@dataclass
class Quality:
    srv: SightlineServer
    rx: WebhookReceiver
    feeder: CatalogFeeder
    now_ns: int
    sent: dict[str, int] = field(default_factory=dict)  # service -> spans sent before the feeder's
    shop_traces: dict[str, list[str]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def quality(tmp_path_factory):
    base = tmp_path_factory.mktemp("quality")
    rx = WebhookReceiver().start()
    srv = feeder = None
    try:
        now = time.time_ns()
        srv = start_server(base, "quality", write_config(base / "sightline.toml", main_config(rx)))
        feeder = CatalogFeeder(srv).start()
        q = Quality(srv=srv, rx=rx, feeder=feeder, now_ns=now)

        spans, logs = catalog_backfill(now)
        post_spans(srv, "catalog", spans)
        post_logs(srv, "catalog", logs)
        q.sent["catalog"] = len(spans)
        spans = ledger_spans(now)
        post_spans(srv, "ledger", spans)
        q.sent["ledger"] = len(spans)
        post_logs(srv, "mailer", mailer_logs(now))
        baseline, current = etl_spans(now)
        post_spans(srv, "etl", baseline + current)
        q.sent["etl"] = len(baseline + current)
        baseline, current = orders_spans(now)
        post_spans(srv, "orders", baseline + current)
        q.sent["orders"] = len(baseline + current)

        (base / "apps").mkdir()
        for version, unit, semconv in SHOP_RUNS:
            q.shop_traces[version] = run_shop(srv, base / "apps", version, unit, semconv)

        # Every request's server span and each version's one histogram point are in.
        srv.wait_rows("SELECT service_version, count(*) AS n FROM spans WHERE service_name = 'shop' "
                      "AND kind = 'server' GROUP BY service_version",
                      lambda rows: {r["service_version"]: r["n"] for r in rows} ==
                      {v: SHOP_REQUESTS for v, _, _ in SHOP_RUNS}, timeout=15)
        srv.wait_rows("SELECT service_version, max(count) AS n FROM metrics WHERE service_name = 'shop' "
                      "AND name = 'checkout.latency' GROUP BY service_version",
                      lambda rows: {r["service_version"]: r["n"] for r in rows} ==
                      {v: SHOP_REQUESTS for v, _, _ in SHOP_RUNS}, timeout=15)
        yield q
    finally:
        if feeder is not None:
            feeder.stop()
        if srv is not None:
            _cleanup(srv)
        rx.stop()


def quality_api(srv: SightlineServer, **params) -> dict:
    return api_json(srv, "/api/v1/quality", **params)


def check_of(body: dict, name: str) -> dict | None:
    found = [c for c in body["checks"] if c["name"] == name]
    assert len(found) <= 1, f"check {name} listed {len(found)} times: {found}"
    return found[0] if found else None


@pytest.fixture(scope="module")
def settled(quality) -> dict:
    """The quality answer once every expected finding is there and every check has its state."""
    srv = quality.srv
    last: list[dict] = []

    def ready():
        body = quality_api(srv)
        last[:] = [body]
        have = Counter((f["check"], f["service"]) for f in body["findings"])
        if any(have[(check, service)] < 1 for check, service, _ in EXPECTED_FINDINGS):
            return None
        for name in FIRING:
            if (check_of(body, name) or {}).get("state") != "firing":
                return None
        for name in PASSING:
            c = check_of(body, name)
            if not c or c.get("last_evaluated") is None or c.get("state") in NOT_PASSING:
                return None
        return body

    try:
        return wait_for(ready, timeout=SETTLE_TIMEOUT_S, interval=0.5,
                        what="every expected finding and every check's state on /api/v1/quality")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe last answer:\n{json.dumps(last[0] if last else None, indent=1)}") from None


def findings_of(body: dict, check: str | None = None, service: str | None = None) -> list[dict]:
    return [f for f in body["findings"]
            if (check is None or f["check"] == check) and (service is None or f["service"] == service)]


def one_finding(body: dict, check: str, service: str) -> dict:
    found = findings_of(body, check, service)
    assert len(found) == 1, f"expected one {check} finding for {service}, got {len(found)}: " \
                            f"{json.dumps(body['findings'], indent=1)}"
    return found[0]


def text_of(finding: dict) -> str:
    return f"{finding['summary']}\n{finding.get('detail') or ''}"


def finding_key(f: dict) -> tuple:
    return (f["check"], f["service"], f["version"], f["severity"])


# ----------------------------------------------------------------- what was sent


def test_the_data_landed_as_sent(quality):
    """The inputs of the known answers, read back: if one of these fails, the data is wrong, not
    the detection."""
    srv, now = quality.srv, quality.now_ns
    for service in ("ledger", "etl", "orders"):
        n = srv.rows(f"SELECT count(*) AS n FROM spans WHERE service_name = '{service}'")[0]["n"]
        assert n == quality.sent[service], (service, n, quality.sent[service])
    assert srv.rows("SELECT count(*) AS n FROM spans WHERE service_name = 'catalog'")[0]["n"] >= quality.sent["catalog"]
    rows = srv.rows("SELECT count(*) AS n, count(trace_id) AS traced FROM logs WHERE service_name = 'mailer'")
    assert rows == [{"n": MAILER_LOGS, "traced": MAILER_WITH_TRACE}], rows
    rows = srv.rows("SELECT count(*) AS n, count(trace_id) AS traced FROM logs WHERE service_name = 'catalog'")
    assert rows[0]["n"] >= quality.sent["catalog"] and rows[0]["traced"] == rows[0]["n"], rows
    last = srv.rows("SELECT max(end_time) AS t FROM spans WHERE service_name = 'ledger'")[0]["t"]
    assert now - parse_time_ns(last) >= (LEDGER_UNTIL - 1) * MINUTE_NS, last

    # orders in the last hour: 30 % without an amount, 10 with user.email, the new payment mix.
    hour = f"start_time >= to_timestamp_nanos({now - HOUR_NS})"
    rows = srv.rows("SELECT count(*) AS n, "
                    "sum(CASE WHEN coalesce(attributes->>'order.amount', '') = '' THEN 1 ELSE 0 END) AS nulls, "
                    "sum(CASE WHEN json_contains(attributes, 'user.email') THEN 1 ELSE 0 END) AS emails "
                    f"FROM spans WHERE name = 'order.placed' AND {hour}")
    assert rows == [{"n": ORDERS_CURRENT, "nulls": int(NULL_RATE * ORDERS_CURRENT), "emails": ORDER_EMAILS}], rows
    day = (f"start_time >= to_timestamp_nanos({now - DAY_NS - HOUR_NS}) "
           f"AND start_time < to_timestamp_nanos({now - DAY_NS})")
    for window, expected in ((hour, ORDER_CURRENT_MIX), (day, ORDER_BASELINE_MIX)):
        rows = srv.rows("SELECT attributes->>'payment.method' AS m, count(*) AS n FROM spans "
                        f"WHERE name = 'order.placed' AND {window} GROUP BY 1")
        assert {r["m"]: r["n"] for r in rows} == expected, (window, rows)
    for window, lo, hi, n in ((hour, 0, 0, 2 * ETL_CURRENT_PER_GROUP), (day, 950, 1050, 2 * ETL_BASELINE_PER_GROUP)):
        rows = srv.rows("SELECT count(*) AS n, min(json_get_int(attributes, 'rows_written')) AS lo, "
                        "max(json_get_int(attributes, 'rows_written')) AS hi "
                        f"FROM spans WHERE name = 'etl.load' AND {window}")
        assert rows[0]["n"] == n and lo <= rows[0]["lo"] and rows[0]["hi"] <= hi, (window, rows)
    # etl and orders are active in 4 distinct minutes (freshness needs 5), mailer in one.
    for service, table, col in (("etl", "spans", "start_time"), ("orders", "spans", "start_time"),
                                ("mailer", "logs", "time")):
        rows = srv.rows(f"SELECT count(DISTINCT date_trunc('minute', {col})) AS m FROM {table} "
                        f"WHERE service_name = '{service}'")
        assert rows[0]["m"] == (1 if service == "mailer" else 4), (service, rows)

    # shop: the old conventions on 1.4.0, the stable ones on 2.0.0; checkout.latency in ms, then s.
    rows = srv.rows("SELECT service_version AS v, "
                    "sum(CASE WHEN json_contains(attributes, 'http.status_code') THEN 1 ELSE 0 END) AS old, "
                    "sum(CASE WHEN json_contains(attributes, 'http.response.status_code') THEN 1 ELSE 0 END) AS new "
                    "FROM spans WHERE service_name = 'shop' AND kind = 'server' GROUP BY 1 ORDER BY 1")
    assert rows == [{"v": "1.4.0", "old": SHOP_REQUESTS, "new": 0},
                    {"v": "2.0.0", "old": 0, "new": SHOP_REQUESTS}], rows
    for version, traces in quality.shop_traces.items():
        ids = ", ".join(f"'{t}'" for t in traces)
        rows = srv.rows(f"SELECT DISTINCT service_version FROM spans WHERE trace_id IN ({ids})")
        assert rows == [{"service_version": version}], (version, rows)
    rows = srv.rows("SELECT DISTINCT http_route FROM spans WHERE service_name = 'shop' AND kind = 'server'")
    assert rows == [{"http_route": SHOP_ROUTE}], rows
    rows = srv.rows("SELECT service_version AS v, unit, max(count) AS n, max(sum) AS total FROM metrics "
                    "WHERE service_name = 'shop' AND name = 'checkout.latency' GROUP BY 1, 2 ORDER BY 1")
    assert [(r["v"], r["unit"], r["n"]) for r in rows] == [("1.4.0", "ms", SHOP_REQUESTS), ("2.0.0", "s", SHOP_REQUESTS)]
    assert rows[0]["total"] == pytest.approx(SHOP_LATENCY_SUM_MS)
    assert rows[1]["total"] == pytest.approx(SHOP_LATENCY_SUM_MS / 1000)
    # The only other metric name both versions share keeps its unit and its value (0).
    rows = srv.rows("SELECT name, count(DISTINCT service_version) AS versions, count(DISTINCT unit) AS units, "
                    "max(value) AS hi FROM metrics WHERE service_name = 'shop' GROUP BY name "
                    "HAVING count(DISTINCT service_version) = 2 ORDER BY name")
    assert [(r["name"], r["units"]) for r in rows] == [("checkout.latency", 2), ("http.server.active_requests", 1)], rows
    assert rows[1]["hi"] == 0, rows


# ----------------------------------------------------------------- findings


def test_the_findings_are_exactly_the_known_ones(quality, settled):
    body = quality_api(quality.srv)
    assert set(body) >= {"findings", "checks", "start", "end"}, sorted(body)
    got = sorted((f["check"], f["service"], f["severity"]) for f in body["findings"])
    assert got == sorted(EXPECTED_FINDINGS), json.dumps(body["findings"], indent=1)
    # Sorted by severity (error first), then service.
    order = [(SEVERITY_RANK[f["severity"]], f["service"]) for f in body["findings"]]
    assert order == sorted(order), order
    for f in body["findings"]:
        assert FINDING_KEYS <= set(f), sorted(f)
        assert f["summary"], f
        first, last = parse_time_ns(f["first_seen"]), parse_time_ns(f["last_seen"])
        assert first <= last <= time.time_ns() + 5 * NS, f
        if f["check"] in ("schema", "units"):
            assert f["version"] == "2.0.0", f
        else:
            assert f["version"] in (None, VERSIONS.get(f["service"])), f
    start, end = parse_time_ns(body["start"]), parse_time_ns(body["end"])
    assert abs((end - start) - DAY_NS) <= 2 * MINUTE_NS, (body["start"], body["end"])
    assert abs(end - time.time_ns()) <= 2 * MINUTE_NS, body["end"]


def test_new_http_conventions_are_one_schema_finding_naming_the_rename(quality, settled):
    f = one_finding(quality_api(quality.srv), "schema", "shop")
    assert f["version"] == "2.0.0" and f["severity"] == "warn", f
    assert "1.4.0" in f["summary"] and "2.0.0" in f["summary"], f["summary"]
    text = text_of(f)
    for old, new in (("http.status_code", "http.response.status_code"), ("http.method", "http.request.method")):
        assert old in text and new in text, (old, new, text)
    assert re.search(r"renam", text, re.I), f"not reported as a rename:\n{text}"
    # The pair is said together: one line holds the old key and, after it, the new one.
    assert any(re.search(r"http\.status_code(?!\w).*http\.response\.status_code", line)
               for line in text.splitlines()), text
    # One finding for the version change, whatever the number of span names and keys.
    assert len(findings_of(quality_api(quality.srv), "schema")) == 1


def test_a_unit_change_is_one_units_finding_naming_the_metric_and_both_units(quality, settled):
    f = one_finding(quality_api(quality.srv), "units", "shop")
    assert f["version"] == "2.0.0" and f["severity"] == "error", f
    summary = f["summary"]
    assert "checkout.latency" in summary, summary
    assert re.search(r"(?<![\w.])ms(?!\w)", summary), f"summary does not name ms: {summary}"
    assert re.search(r"(?<![\w.])s(?![\w.])", summary), f"summary does not name s: {summary}"
    # Not also the instrumentation's metrics: only checkout.latency changed.
    assert len(findings_of(quality_api(quality.srv), "units")) == 1


def test_a_service_that_stopped_is_one_error_freshness_finding(quality, settled):
    body = quality_api(quality.srv)
    fresh = findings_of(body, "freshness")
    assert len(fresh) == 1, json.dumps(fresh, indent=1)  # not also each of ledger's routes
    f = fresh[0]
    assert f["service"] == "ledger" and f["severity"] == "error", f
    summary = f["summary"]
    assert "ledger" in summary, summary
    m = re.search(r"has sent nothing for (\d+) minutes?", summary)
    assert m, f"summary does not say for how long: {summary}"
    silent = (time.time_ns() - ledger_last_ns(quality.now_ns)) / MINUTE_NS
    assert LEDGER_UNTIL - 2 <= int(m.group(1)) <= silent + 1, (summary, silent)
    assert re.search(r"usually reports every", summary), summary
    assert [finding_key(x) for x in quality_api(quality.srv, service="ledger")["findings"]] == [finding_key(f)]


def test_logs_outside_spans_are_a_correlation_finding(quality, settled):
    body = quality_api(quality.srv)
    assert len(findings_of(body, "correlation")) == 1, json.dumps(body["findings"], indent=1)
    f = one_finding(body, "correlation", "mailer")
    assert f["severity"] == "warn", f
    assert "mailer" in f["summary"] and re.search(r"trace", text_of(f), re.I), f


def test_the_healthy_control_has_no_finding(quality, settled):
    srv = quality.srv
    assert quality_api(srv, service="catalog")["findings"] == []
    assert not findings_of(quality_api(srv), service="catalog")
    assert quality.feeder.sent > 0 and not quality.feeder.errors, quality.feeder.errors
    # Nor etl or orders, whose trouble is in their data, which only the checks look at.
    for service in ("etl", "orders"):
        assert quality_api(srv, service=service)["findings"] == [], service


def test_the_service_filter_keeps_that_services_findings(quality, settled):
    body = quality_api(quality.srv, service="shop")
    assert sorted((f["check"], f["severity"]) for f in body["findings"]) == [("schema", "warn"), ("units", "error")]
    assert [f["check"] for f in body["findings"]] == ["units", "schema"], "error first"


# ----------------------------------------------------------------- data checks


def value_ok(quality: Quality, name: str, value) -> bool:
    """Whether a check's value is the known answer."""
    if value is None:
        return False
    if name == "etl-rows-written":
        return value == pytest.approx(1.0, abs=1e-9)
    if name == "order-amount-nulls":
        return abs(value - NULL_RATE) <= 0.05
    if name == "payment-mix":
        return value > 0.2 and value == pytest.approx(PAYMENT_PSI, rel=0.05)
    if name == "orders-fresh":
        newest = max(int(s["startTimeUnixNano"]) for s in orders_spans(quality.now_ns)[1])
        lo = (quality.now_ns - newest) / NS - 5
        hi = (time.time_ns() - newest) / NS + 5
        return value > FRESH_MAX_AGE_S and lo <= value <= hi
    if name == "catalog-logs-fresh":
        return 0 <= value < 60
    if name == "card-volume":
        return value == pytest.approx(CARD_RATIO, rel=1e-6)
    if name == "orders-volume":
        return value == pytest.approx(ORDERS_RATIO, rel=1e-6)
    if name == "orders-no-email":
        return value == ORDER_EMAILS
    if name == "orders-ids":
        return value == 0
    raise AssertionError(name)


@pytest.mark.parametrize("name", list(CHECKS))
def test_each_check_has_its_known_state_and_value(quality, settled, name):
    srv, case = quality.srv, CHECKS[name]
    body = quality_api(srv)
    assert sorted(c["name"] for c in body["checks"]) == sorted(CHECKS), [c["name"] for c in body["checks"]]
    c = check_of(body, name)
    assert CHECK_KEYS <= set(c), sorted(c)
    assert (c["kind"], c["table"]) == (case.kind, case.table), c
    parse_time_ns(c["last_evaluated"])
    if case.firing:
        assert c["state"] == "firing", c
    else:
        assert c["state"] not in NOT_PASSING, c
    assert value_ok(quality, name, c["value"]), f"{name}: value {c['value']}, expected {case.value}: {c}"
    if case.threshold is not None:
        assert c["threshold"] == pytest.approx(case.threshold), c
    assert c["summary"], c
    # (history: per evaluation or per change of state, the contract does not say; a firing check has
    # at least the point where it fired)
    assert isinstance(c["history"], list) and (c["history"] or not case.firing), c
    for point in c["history"]:
        assert {"time", "value", "state"} <= set(point), point
        parse_time_ns(point["time"])
    if name == "etl-rows-written":
        # numbers: the KS statistic is the value, its p-value is said in the summary
        assert re.search(r"\bp\b|p-value|p value", c["summary"], re.I), c["summary"]

    # As an alert: source "check", its own state; a passing check is neither firing nor pending.
    mine = [a for a in alerts(srv) if a.get("source") == "check" and a["name"] == name]
    if case.firing:
        assert len(mine) == 1 and mine[0]["state"] == "firing", mine
        assert value_ok(quality, name, mine[0]["value"]), mine[0]
    else:
        assert all(a["state"] not in ("firing", "pending") for a in mine), mine
    firing_checks = sorted(a["name"] for a in alerts(srv, "firing") if a.get("source") == "check")
    assert firing_checks == sorted(FIRING), firing_checks


def test_a_firing_check_is_notified_like_a_rule(quality, settled):
    rx = quality.rx

    def notified():
        for post in rx.delivered("/data"):
            body = post.json()
            for a in body["alerts"]:
                if a["labels"].get("alertname") == "etl-rows-written" and a["status"] == "firing":
                    return a
        return None

    a = wait_for(notified, timeout=20, interval=0.2, what="the etl-rows-written notification")
    assert a["labels"].get("team") == "data", a["labels"]
    assert a["annotations"].get("summary"), a
    alert = [x for x in alerts(quality.srv) if x.get("source") == "check" and x["name"] == "etl-rows-written"]
    assert alert and a["fingerprint"] == alert[0]["id"], (a, alert)


# ----------------------------------------------------------------- the CLI


def test_cli_check_fails_on_error_findings_and_names_the_failing_checks(quality, settled):
    srv = quality.srv
    for args in ((), ("--fail-on", "error"), ("--fail-on", "warn"), ("--since", WINDOW)):
        out = srv.cli("check", *args)
        assert out.returncode == 1, (args, out.returncode, out.stdout, out.stderr)
    out = srv.cli("check", "--fail-on", "error")
    for name in FIRING:
        assert name in out.stdout, f"{name} not named:\n{out.stdout}"
    for service in ("ledger", "shop", "mailer"):
        assert service in out.stdout, f"{service}'s finding not printed:\n{out.stdout}"


def cli_json(out: subprocess.CompletedProcess) -> dict:
    body = json.loads(out.stdout)
    return body if isinstance(body, dict) else {"findings": body}


def test_cli_check_json_prints_the_same_findings(quality, settled):
    srv = quality.srv
    out = srv.cli("check", "--json")
    assert out.returncode == 1, (out.stdout, out.stderr)
    body = cli_json(out)
    api = quality_api(srv)
    assert sorted(map(finding_key, body["findings"])) == sorted(map(finding_key, api["findings"])), body
    for f in body["findings"]:
        assert FINDING_KEYS <= set(f), sorted(f)
    if "checks" in body:
        assert {c["name"]: c["state"] for c in body["checks"]} == {c["name"]: c["state"] for c in api["checks"]}

    out = srv.cli("check", "--service", "shop", "--json")
    assert out.returncode == 1, (out.stdout, out.stderr)
    assert sorted(f["check"] for f in cli_json(out)["findings"]) == ["schema", "units"]
    out = srv.cli("check", "--service", "catalog", "--json")
    assert cli_json(out)["findings"] == [], out.stdout


HEALTHY_CONFIG = ('[monitor]\nevaluation_interval = "1s"\n\n'
                  '[[check]]\nname = "catalog-logs-fresh"\nkind = "freshness"\ntable = "logs"\n'
                  'where = "service_name = \'catalog\'"\nmax_age = "10m"\n')


def test_cli_check_passes_on_a_server_with_only_the_healthy_control(tmp_path):
    srv = start_server(tmp_path, "healthy", write_config(tmp_path / "sightline.toml", HEALTHY_CONFIG))
    try:
        spans, logs = catalog_backfill(time.time_ns())
        post_spans(srv, "catalog", spans)
        post_logs(srv, "catalog", logs)
        srv.wait_rows("SELECT count(*) AS n FROM logs WHERE service_name = 'catalog'",
                      lambda rows: rows[0]["n"] == len(logs), timeout=10)
        wait_for(lambda: (c := check_of(quality_api(srv), "catalog-logs-fresh")) and c["last_evaluated"]
                 and c["state"] not in NOT_PASSING and c, timeout=30, interval=0.3,
                 what="the healthy server's check to pass")
        body = quality_api(srv)
        assert body["findings"] == [], json.dumps(body["findings"], indent=1)
        for args in ((), ("--fail-on", "error"), ("--fail-on", "warn")):
            out = srv.cli("check", *args)
            assert out.returncode == 0, (args, out.returncode, out.stdout, out.stderr)
        out = srv.cli("check", "--json")
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert cli_json(out)["findings"] == [], out.stdout
    finally:
        _cleanup(srv)


def test_cli_check_exits_2_when_the_server_cannot_be_asked():
    # (2 is also what an unknown subcommand or flag exits with: the command and its flags exist)
    out = subprocess.run([sightline_bin(), "check", "--help"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, (out.returncode, out.stdout, out.stderr)
    for flag in ("--url", "--service", "--since", "--fail-on", "--json"):
        assert flag in out.stdout, f"`sightline check --help` does not list {flag}:\n{out.stdout}"
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for args in ((), ("--json",)):
        out = subprocess.run([sightline_bin(), "check", "--url", url, *args], capture_output=True, text=True,
                             timeout=60, stdin=subprocess.DEVNULL)
        assert out.returncode == 2, (args, out.returncode, out.stdout, out.stderr)
        assert out.stderr.startswith("error:") and out.stdout == "", (args, out.stdout, out.stderr)


# ----------------------------------------------------------------- the pages (HTML)

VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
             "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict
    children: list = field(default_factory=list)

    def classes(self) -> list[str]:
        return (self.attrs.get("class") or "").split()

    def iter(self):
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, id: str | None = None, cls: str | None = None) -> list["Node"]:
        return [n for n in self.iter() if n is not self and (tag is None or n.tag == tag)
                and (id is None or n.attrs.get("id") == id) and (cls is None or cls in n.classes())]

    def find(self, tag: str | None = None, id: str | None = None, cls: str | None = None) -> "Node | None":
        found = self.find_all(tag, id, cls)
        return found[0] if found else None

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)


class DomParser(HTMLParser):
    """A tree of the page (the server renders well-formed HTML)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID_TAGS:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, {k: (v if v is not None else "") for k, v in attrs}))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        self.stack[-1].children.append(data)


def page_dom(srv: SightlineServer, path: str, **params) -> Node:
    resp = srv.get(path, params=params or None)
    assert resp.status_code == 200, f"GET {path} {params}: {resp.status_code} {resp.text[:500]}"
    parser = DomParser()
    parser.feed(resp.text)
    return parser.root


def finding_rows(container: Node) -> list[tuple[str, str, str]]:
    return [(tr.attrs.get("data-check"), tr.attrs.get("data-service"), tr.attrs.get("data-severity"))
            for tr in container.find_all("tr", cls="finding")]


def test_quality_page_lists_the_findings_and_the_checks(quality, settled):
    srv = quality.srv
    api = quality_api(srv)
    dom = page_dom(srv, "/quality", range=WINDOW)
    table = dom.find("table", id="findings")
    assert table is not None, "no table#findings on /quality"
    assert sorted(finding_rows(table)) == sorted((f["check"], f["service"], f["severity"]) for f in api["findings"])
    assert [r[2] for r in finding_rows(table)][:2] == ["error", "error"], "errors first"
    for tr in table.find_all("tr", cls="finding"):
        if tr.attrs["data-check"] == "units":
            assert "checkout.latency" in tr.text(), tr.text()
        if tr.attrs["data-check"] == "freshness":
            assert "ledger" in tr.text(), tr.text()
    checks = dom.find("table", id="data-checks")
    assert checks is not None, "no table#data-checks on /quality"
    rows = {tr.attrs.get("data-name"): tr.attrs.get("data-state") for tr in checks.find_all("tr", cls="data-check")}
    assert rows == {c["name"]: c["state"] for c in api["checks"]}, rows
    assert dom.find("form", id="time-picker") is not None

    shop = page_dom(srv, "/quality", service="shop", range=WINDOW).find("table", id="findings")
    assert sorted(finding_rows(shop)) == [("schema", "shop", "warn"), ("units", "shop", "error")]


def test_service_page_has_a_quality_section_with_its_findings(quality, settled):
    srv = quality.srv
    section = page_dom(srv, "/services/shop", range=WINDOW).find("section", id="quality")
    assert section is not None, "no section#quality on shop's page"
    assert sorted(finding_rows(section)) == [("schema", "shop", "warn"), ("units", "shop", "error")]
    assert "checkout.latency" in section.text() and "http.status_code" in section.text(), section.text()
    section = page_dom(srv, "/services/catalog", range=WINDOW).find("section", id="quality")
    assert section is None or finding_rows(section) == [], "catalog has no finding"


def test_services_page_marks_a_service_with_an_error_finding(quality, settled):
    table = page_dom(quality.srv, "/", range="6h").find("table", id="services")
    assert table is not None, "no table#services"
    rows = {tr.attrs["data-service"]: tr for tr in table.find_all("tr") if "data-service" in tr.attrs}
    for service in ("shop", "ledger", "catalog"):
        assert service in rows, f"{service} not on the services page: {sorted(rows)}"
    for service in ("shop", "ledger"):
        assert rows[service].find(cls="quality-error") is not None, f"{service}'s row has no .quality-error"
    for service in ("catalog", "mailer", "etl", "orders"):  # no finding, or warn only (mailer)
        if service in rows:
            assert rows[service].find(cls="quality-error") is None, f"{service} is marked"


# ----------------------------------------------------------------- the page in a browser


def test_quality_page_in_a_browser(page, quality, settled):
    srv = quality.srv
    api = quality_api(srv)
    goto(page, ui(srv, "/quality", range=WINDOW))
    rows = page.locator("table#findings tr.finding")
    expect(rows).to_have_count(len(api["findings"]))
    seen = rows.evaluate_all("trs => trs.map(tr => [tr.dataset.check, tr.dataset.service, tr.dataset.severity])")
    assert sorted(map(tuple, seen)) == sorted(EXPECTED_FINDINGS), seen
    expect(page.locator("table#data-checks tr.data-check")).to_have_count(len(CHECKS))
    for name in FIRING:
        expect(page.locator(f'table#data-checks tr.data-check[data-name="{name}"]')).to_have_attribute(
            "data-state", "firing")
    expect(page.locator("table#findings tr.finding[data-check=units]")).to_contain_text("checkout.latency")
    expect(page.locator("form#time-picker")).to_have_count(1)
    save_screenshot(page, "quality")


# ----------------------------------------------------------------- configuration refusals

REFUSAL_BASE = ('[monitor]\nevaluation_interval = "30s"\n\n'
                '[[check]]\nname = "orders-fresh"\nkind = "freshness"\ntable = "spans"\n'
                'where = "name = \'order.placed\'"\nmax_age = "15m"\n\n'
                '[[check]]\nname = "order-amount-nulls"\nkind = "nulls"\nwhere = "name = \'order.placed\'"\n'
                'attribute = "order.amount"\nmax_null_rate = 0.01\n')

# (id, (old, new) replaced once in REFUSAL_BASE, keys of which one must be named, text it must say)
CHECK_REFUSALS = [
    ("unknown-kind", ('kind = "freshness"', 'kind = "completeness"'), ("check[0].kind",), "completeness"),
    ("freshness-without-max-age", ('max_age = "15m"\n', ""), ("check[0].max_age",), None),
    ("where-not-sql", ("where = \"name = 'order.placed'\"", "where = \"name = = 'order.placed' AND\""),
     ("check[0].where",), None),
    ("where-unknown-column", ("where = \"name = 'order.placed'\"", 'where = "no_such_column = 1"'),
     ("check[0].where",), None),
    ("duplicate-name", ('name = "order-amount-nulls"', 'name = "orders-fresh"'),
     ("check[1].name", "check[0].name"), "orders-fresh"),
    ("name-with-capitals-and-space", ('name = "orders-fresh"', 'name = "Orders Fresh"'), ("check[0].name",), None),
    ("unknown-table", ('table = "spans"', 'table = "traces"'), ("check[0].table",), "traces"),
]


def test_the_base_config_of_the_check_refusals_is_accepted(tmp_path):
    started, code, err = run_serve(tmp_path, REFUSAL_BASE)
    assert started, f"the valid config was refused (exit {code}):\n{err}"


@pytest.mark.parametrize("change, keys, says", [r[1:] for r in CHECK_REFUSALS], ids=[r[0] for r in CHECK_REFUSALS])
def test_check_config_mistakes_are_refused_naming_the_key(tmp_path, change, keys, says):
    assert_refused(tmp_path, REFUSAL_BASE, change, keys, says)
