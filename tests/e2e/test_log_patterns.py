"""`GET /api/v1/logs/patterns`: log lines grouped by their message with the variable parts masked,
counted with a series and an example, each compared with the baseline window just before it, on
hand-made OTLP/JSON logs whose patterns and counts the test chose.

One server (module fixture) and one window of ten minutes given by `start` and `end` (so that
every series bucket is known), its baseline the ten minutes before:

- 1000 payment timeouts that differ only in their numbers and order ids are one pattern of
  count 1000, its series the lines per 20 s bucket, summing to the count, its example the most
  recent line as sent; written only in the window, it is new;
- a pattern with six times its baseline's lines grew; one as steady as before, or up by a third,
  did not; one five times its baseline but with only five lines did not (ten lines at least);
  one written only in the baseline is not listed;
- a pattern written by two services names both, and `service` keeps one service's lines;
- `severity` is the lowest level counted; `baseline=0` compares with nothing; `limit` and
  `buckets` shape the answer;
- a bad severity, baseline, limit or window is a 400 naming the parameter.
"""

from __future__ import annotations

import math
import random
import time

import pytest

from conftest import _cleanup
from otlp_spans import text_attr
from test_monitor import NS, api_json, start_server, write_config

WINDOW_NS = 600 * NS
BUCKETS = 30
STEP_NS = WINDOW_NS // BUCKETS  # 20 s
SEVERITY = {"info": 9, "warn": 13, "error": 17}
TIMEOUT_PATTERN = "payment <num> timed out after <num> ms for order <id>"


def log(t: int, body: str, severity: str) -> dict:
    return {"timeUnixNano": str(t), "observedTimeUnixNano": str(t), "severityNumber": SEVERITY[severity],
            "severityText": severity.upper(), "body": {"stringValue": body}}


def send_logs(srv, service: str, records: list[dict]) -> None:
    for i in range(0, len(records), 500):
        body = {"resourceLogs": [{"resource": {"attributes": [text_attr("service.name", service)]},
                                  "scopeLogs": [{"scope": {"name": "e2e.patterns"}, "logRecords": records[i:i + 500]}]}]}
        resp = srv.post_otlp("/v1/logs", body)
        assert resp.status_code == 200 and not resp.json().get("partialSuccess"), resp.text


def order_id(dice: random.Random) -> str:
    """Like ord_9f3k2: digits and letters, so the mask reads it as an id."""
    return "ord_" + str(dice.randrange(10)) + "".join(dice.choice("abcdefghjkmnpqrstuvwxyz0123456789")
                                                       for _ in range(3)) + str(dice.randrange(10))


def evenly(n: int, first_ns: int, last_ns: int) -> list[int]:
    return [first_ns + (last_ns - first_ns) * i // max(n - 1, 1) for i in range(n)]


class Data:
    """What was sent: the window, and each pattern's lines (time, body) in it and before it."""

    def __init__(self, srv, start_ns: int):
        self.srv = srv
        self.start_ns = start_ns
        self.end_ns = start_ns + WINDOW_NS
        self.window: dict[str, list[tuple[int, str]]] = {}
        self.baseline: dict[str, int] = {}

    def params(self, **extra) -> dict:
        return {"start": str(self.start_ns), "end": str(self.end_ns), **extra}

    def series(self, prefix: str, buckets: int = BUCKETS) -> list[int]:
        step = math.ceil(WINDOW_NS / buckets)
        out = [0] * buckets
        for t, _ in self.window[prefix]:
            out[(t - self.start_ns) // step] += 1
        return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("patterns")
    srv = start_server(base, "patterns", write_config(base / "sightline.toml", "# defaults\n"))
    try:
        dice = random.Random(40)
        d = Data(srv, time.time_ns() - WINDOW_NS - 5 * NS)
        s, b0 = d.start_ns, d.start_ns - WINDOW_NS
        pay: list[dict] = []

        def lines(key: str, n: int, first_ns: int, last_ns: int, body, severity: str, in_window: bool):
            for i, t in enumerate(evenly(n, first_ns, last_ns)):
                text = body(i)
                pay.append(log(t, text, severity))
                if in_window:
                    d.window.setdefault(key, []).append((t, text))
            if not in_window:
                d.baseline[key] = d.baseline.get(key, 0) + n

        # 999 timeouts 0.5 s apart from 30 s into the window, and the most recent alone at 590 s.
        timeout = lambda i: (f"payment {dice.randrange(1000, 99999)} timed out after {3000 + 500 * (i % 3)} ms "
                             f"for order {order_id(dice)}")
        lines("payment", 999, s + 30 * NS, s + 30 * NS + 998 * NS // 2, timeout, "error", True)
        lines("payment", 1, s + 590 * NS, s + 590 * NS, timeout, "error", True)
        health = lambda i: f"health check ok in {i % 9 + 1} ms"
        lines("health", 100, b0 + NS, b0 + 590 * NS, health, "info", False)
        lines("health", 100, s + NS, s + 590 * NS, health, "info", True)
        miss = lambda i: f"cache miss for key user:{dice.randrange(10**6)}"
        lines("cache", 10, b0 + 10 * NS, b0 + 500 * NS, miss, "warn", False)
        lines("cache", 60, s + 10 * NS, s + 500 * NS, miss, "warn", True)
        retry = lambda i: f"retrying connection to 10.0.0.{i % 200}:5432 (attempt {i % 5 + 1})"
        lines("retry", 30, b0 + 5 * NS, b0 + 580 * NS, retry, "warn", False)
        lines("retry", 40, s + 5 * NS, s + 580 * NS, retry, "warn", True)
        disk = lambda i: f"disk almost full on volume {i + 1}: {90 + i}% used"
        lines("disk", 1, b0 + 100 * NS, b0 + 100 * NS, disk, "error", False)
        lines("disk", 5, s + 100 * NS, s + 300 * NS, disk, "error", True)
        legacy = lambda i: f"legacy endpoint /v1/orders/{i} called"
        lines("legacy", 25, b0 + 20 * NS, b0 + 400 * NS, legacy, "info", False)
        dice.shuffle(pay)
        send_logs(srv, "pay", pay)
        search = [log(t, f"index rebuilt in {i * 7} ms", "info") for i, t in enumerate(evenly(20, s + NS, s + 500 * NS))]
        search += [log(t, f"health check ok in {i + 2} ms", "info") for i, t in enumerate(evenly(5, s + NS, s + 50 * NS))]
        send_logs(srv, "search", search)
        expected = sum(len(v) for v in d.window.values()) + sum(d.baseline.values()) + 25
        srv.wait_rows("SELECT count(*) AS n FROM logs", lambda rows: rows[0]["n"] == expected, timeout=15)
        yield d
    finally:
        _cleanup(srv)


def patterns(d: Data, **params) -> dict:
    return api_json(d.srv, "/api/v1/logs/patterns", **d.params(**params))


def by_prefix(answer: dict, prefix: str) -> dict:
    found = [p for p in answer["patterns"] if p["pattern"].startswith(prefix)]
    assert len(found) == 1, f"{len(found)} patterns start with {prefix!r}: {[p['pattern'] for p in answer['patterns']]}"
    return found[0]


def test_a_thousand_timeouts_are_one_new_pattern_with_its_series_and_example(data):
    d = data
    answer = patterns(d, service="pay")
    timeouts = [p for p in answer["patterns"] if p["pattern"].startswith("payment ")]
    assert [p["pattern"] for p in timeouts] == [TIMEOUT_PATTERN], [p["pattern"] for p in answer["patterns"]]
    t = timeouts[0]
    sent = d.window["payment"]
    assert (t["count"], t["baseline_count"]) == (1000, 0), t
    assert t["new"] is True and t["grew"] is False, "only in the window: new (and so not 'grew')"
    assert t["severity"] == "error" and t["services"] == ["pay"], t
    assert len(t["series"]) == BUCKETS and sum(t["series"]) == t["count"], t["series"]
    assert t["series"] == d.series("payment"), (t["series"], d.series("payment"))
    assert t["example"] in {body for _, body in sent}, f"the example is not a line that was sent: {t['example']!r}"
    latest = max(sent)[1]
    assert t["example"] == latest, f"the example is the most recent line: {t['example']!r}, not {latest!r}"
    assert answer["bucket_s"] == 20, answer["bucket_s"]
    assert answer["start"].endswith("Z") and answer["baseline_start"].endswith("Z"), answer
    assert answer["patterns"][0]["pattern"] == TIMEOUT_PATTERN, "the most lines first"


def test_new_grew_and_steady_patterns_against_the_baseline(data):
    d = data
    answer = patterns(d, service="pay")
    window_lines = sum(len(v) for v in d.window.values())
    assert (answer["lines"], answer["baseline_lines"]) == (window_lines, sum(d.baseline.values())), answer
    assert answer["distinct"] == 5 and answer["truncated"] is False, answer
    assert [p["count"] for p in answer["patterns"]] == [1000, 100, 60, 40, 5], [
        (p["pattern"], p["count"]) for p in answer["patterns"]]
    cache = by_prefix(answer, "cache miss for key user:")
    assert (cache["count"], cache["baseline_count"], cache["new"], cache["grew"]) == (60, 10, False, True), \
        f"6x its baseline rate, 60 lines: grew; {cache}"
    health = by_prefix(answer, "health check ok in")
    assert (health["count"], health["baseline_count"], health["new"], health["grew"]) == (100, 100, False, False), health
    assert health["severity"] == "info" and health["services"] == ["pay"], health
    retry = by_prefix(answer, "retrying connection to")
    assert (retry["count"], retry["baseline_count"], retry["new"], retry["grew"]) == (40, 30, False, False), \
        f"up by a third is not 2x: not grown; {retry}"
    disk = by_prefix(answer, "disk almost full")
    assert (disk["count"], disk["baseline_count"], disk["new"], disk["grew"]) == (5, 1, False, False), \
        f"5x, but 5 lines (fewer than 10): not grown; {disk}"
    assert not [p for p in answer["patterns"] if p["pattern"].startswith("legacy endpoint")], \
        "a pattern written only in the baseline has no lines in the window: not listed"
    for p in answer["patterns"]:
        prefix = next(k for k, v in d.window.items() if v[0][1].split()[0] == p["pattern"].split()[0])
        assert p["series"] == d.series(prefix), (p["pattern"], p["series"], d.series(prefix))
        assert p["example"] in {body for _, body in d.window[prefix]}, p


def test_the_service_filter_and_a_pattern_of_two_services(data):
    d = data
    every = patterns(d)
    health = by_prefix(every, "health check ok in")
    assert health["count"] == 105 and health["services"] == ["pay", "search"], health
    assert by_prefix(every, "index rebuilt in")["services"] == ["search"]
    assert every["lines"] == sum(len(v) for v in d.window.values()) + 25 and every["distinct"] == 6, every
    search = patterns(d, service="search")
    assert sorted(p["pattern"] for p in search["patterns"]) == ["health check ok in <num> ms", "index rebuilt in <num> ms"], \
        search["patterns"]
    assert search["lines"] == 25 and search["baseline_lines"] == 0, search
    assert all(p["new"] for p in search["patterns"]), "search wrote nothing before the window"


def test_severity_is_the_lowest_level_counted(data):
    d = data
    errors = patterns(d, service="pay", severity="error")
    assert [p["pattern"].split()[0] for p in errors["patterns"]] == ["payment", "disk"], errors["patterns"]
    assert errors["lines"] == 1005 and errors["baseline_lines"] == 1, errors
    warn = patterns(d, service="pay", severity="warn")
    assert [p["pattern"].split()[0] for p in warn["patterns"]] == ["payment", "cache", "retrying", "disk"], \
        warn["patterns"]
    assert warn["lines"] == 1105, warn["lines"]
    assert patterns(d, service="pay", severity="info")["lines"] == patterns(d, service="pay")["lines"]


def test_baseline_limit_and_buckets_shape_the_answer(data):
    d = data
    none = patterns(d, service="pay", baseline="0")
    assert none["baseline_lines"] == 0 and "baseline_start" not in none, none
    assert all(not p["new"] and not p["grew"] and p["baseline_count"] == 0 for p in none["patterns"]), \
        "with no baseline nothing is new or grown"
    longer = patterns(d, service="pay", baseline="20m")
    cache = by_prefix(longer, "cache miss for key user:")
    assert cache["baseline_count"] == 10 and cache["grew"] is True, cache
    assert longer["baseline_lines"] == sum(d.baseline.values()), longer
    top2 = patterns(d, service="pay", limit="2")
    assert [p["count"] for p in top2["patterns"]] == [1000, 100] and top2["distinct"] == 5, top2
    ten = patterns(d, service="pay", buckets="10")
    t = by_prefix(ten, "payment ")
    assert ten["bucket_s"] == 60 and len(t["series"]) == 10, ten["bucket_s"]
    assert t["series"] == d.series("payment", 10) and sum(t["series"]) == 1000, t["series"]
    since = api_json(d.srv, "/api/v1/logs/patterns", service="pay", since="30m", baseline="0")
    assert since["lines"] == sum(len(v) for v in d.window.values()) + sum(d.baseline.values()), since["lines"]


BAD_QUESTIONS = [
    ("unknown-severity", {"severity": "loud"},
     'unknown severity "loud": expected trace, debug, info, warn, error or fatal'),
    ("bad-baseline", {"baseline": "yesterday"}, 'parameter baseline "yesterday" is not a duration'),
    ("limit-zero", {"limit": "0"}, 'parameter limit "0" must be a whole number from 1 to 500'),
    ("too-many-buckets", {"buckets": "501"}, 'parameter buckets "501" must be a whole number from 1 to 500'),
    ("bad-since", {"since": "ages"}, "parameter since"),
    ("start-after-end", {"start": "2000", "end": "1000"}, "parameter start must be before end"),
]


@pytest.mark.parametrize("params, message", [q[1:] for q in BAD_QUESTIONS], ids=[q[0] for q in BAD_QUESTIONS])
def test_bad_questions_are_a_400_naming_the_parameter(data, params, message):
    resp = data.srv.get("/api/v1/logs/patterns", params=params)
    assert resp.status_code == 400, f"{params}: {resp.status_code} {resp.text}"
    error = resp.json()["error"]
    assert error["code"] == "bad_request", error
    assert message in error["message"], f"{params}: {error['message']!r} does not say {message!r}"
