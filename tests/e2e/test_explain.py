"""`GET /api/v1/explain` and `sightline explain`: what sets a service's failing (or slow) requests
apart, on hand-made OTLP/JSON spans whose answer is known because the test chose it.

One server (module fixture) holds a service per scenario, every request within the last half
hour (the default window) unless a scenario puts some in the half hour before it:

- the cause is a promoted column: only service.version 2.0.0 fails, so it is the one dimension
  ranked, with every failure (selection share 1, no risk ratio), its counts exactly those sent,
  the summary in the documented words; 2.0.0 is new since the window before (`changes`), the
  version that was already there is not;
- the cause is a span attribute: tenant acme fails, or (a latency question) tenant acme is slow,
  against a fixed `threshold_ms` and against each route's p95; a `route` narrows the question
  to that route's requests and stops ranking the route;
- ids unique to each request are never a cause: an id with digits is grouped by its pattern,
  one of letters only (whose patterns stay many) is left out and named;
- failures spread at random (seeded) over every value of every dimension rank nothing and the
  summary says the requests look alike; too few failures, or none, say so;
- bad questions are a 400 naming the parameter;
- the CLI prints the summary and the ranked table (top row: the cause), and `--json` the answer.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import time

import pytest

from conftest import SightlineServer, _cleanup, free_port, sightline_bin, wait_for
from otlp_spans import request, send, spread
from test_monitor import MINUTE_NS, api_json, start_server, write_config

TENANTS = ["acme", "globex", "initech", "umbrella"]
ROUTES = ["/api/items", "/api/cart"]


# ----------------------------------------------------------------- helpers


def times_between(n: int, from_min: float, to_min: float) -> list[int]:
    """n start times spread evenly from `from_min` to `to_min` minutes ago (from_min > to_min)."""
    now = time.time_ns()
    start = now - int(from_min * MINUTE_NS)
    step = int((from_min - to_min) * MINUTE_NS) // n
    return [start + i * step for i in range(n)]


def wait_stored(srv: SightlineServer, service: str, n: int) -> None:
    """Until the server answers with all n requests of the service."""
    wait_for(lambda: srv.rows(f"SELECT count(*) AS n FROM spans WHERE service_name = '{service}'")[0]["n"] == n,
             timeout=15, what=f"the {n} spans of {service}")


def percent(share: float) -> str:
    """A share as the summaries write it: whole percents from 10% (and 0%), one decimal below."""
    p = share * 100
    return f"{p:.0f}%" if p >= 10 or p == 0 else f"{p:.1f}%"


def describe(d: dict, bad: str = "failing") -> str:
    return (f"{percent(d['selection_share'])} of {bad} requests have {d['key']}={d['value']} "
            f"(vs {percent(d['baseline_share'])} of the others)")


def explain(srv: SightlineServer, **params) -> dict:
    return api_json(srv, "/api/v1/explain", **params)


def ranked(answer: dict) -> list[tuple[str, str]]:
    return [(d["key"], d["value"]) for d in answer["dimensions"]]


def table_rows(text: str) -> list[list[str]]:
    """The rows of the first table the CLI printed (comfy-table's UTF8_FULL_CONDENSED), header first."""
    rows, started = [], False
    for line in text.splitlines():
        if line.startswith("│"):
            started = True
            rows.append([cell.strip() for cell in line.strip("│").split("┆")])
        elif started and not line.startswith(("├", "┌", "╞", "└")):
            break
        elif started and line.startswith("└"):
            break
    return rows


def differences(a, b, path: str = "") -> list[tuple[str, object, object]]:
    """Where two JSON values differ: (path, a's value, b's value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [(path, a, b)]


def run_cli(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sightline_bin(), *args, "--url", url], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


# ----------------------------------------------------------------- the data


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("explain")
    server = start_server(base, "explain", write_config(base / "sightline.toml", "# defaults\n"))
    yield server
    _cleanup(server)


# "release": 1000 requests of 1.9.0 (none failing) and 1000 of 2.0.0 (300 failing) in the window,
# 1000 of 1.9.0 only in the half hour before it. Tenants and routes by turn, the same for both.
RELEASE_FAILED = 300


@pytest.fixture(scope="module")
def release(srv):
    dice = random.Random(20)
    failing = set(dice.sample(range(1000), RELEASE_FAILED))
    window = spread(2000)
    old = [request(t, ROUTES[i % 2], False, attrs={"tenant.id": TENANTS[i % 4]}) for i, t in enumerate(window[0::2])]
    new = [request(t, ROUTES[i % 2], i in failing, attrs={"tenant.id": TENANTS[i % 4]})
           for i, t in enumerate(window[1::2])]
    before = [request(t, ROUTES[i % 2], False, attrs={"tenant.id": TENANTS[i % 4]})
              for i, t in enumerate(times_between(1000, 55, 35))]
    send(srv, "release", "1.9.0", old + before)
    send(srv, "release", "2.0.0", new)
    wait_stored(srv, "release", 3000)
    return srv


# "tenants": 3000 requests over 5 tenants by turn; acme fails 300 of its 600, the others 20 of
# their 2400 together. Each request has an order.id (digits and letters: one pattern) and a
# request.id of letters only (as many patterns as values).
TENANT_NAMES = TENANTS + ["hooli"]


def letters_id(dice: random.Random) -> str:
    return "".join(dice.choice("ghijklmnopqrstuvwxyz") for _ in range(12))


@pytest.fixture(scope="module")
def tenants(srv):
    dice = random.Random(21)
    acme = [i for i in range(3000) if i % 5 == 0]
    others = [i for i in range(3000) if i % 5 != 0]
    failing = set(dice.sample(acme, 300)) | set(dice.sample(others, 20))
    spans = []
    for i, t in enumerate(spread(3000)):
        spans.append(request(t, ROUTES[(i // 5) % 2], i in failing,
                             attrs={"tenant.id": TENANT_NAMES[i % 5], "order.id": f"ord_{i:06d}k{dice.randrange(16**4):04x}",
                                    "request.id": letters_id(dice)}))
    send(srv, "tenants", "3.1.0", spans)
    wait_stored(srv, "tenants", 3000)
    return srv, spans, failing


# "latency": 3000 requests, none failing; acme's (every fourth) are slow (300-400 ms) half the
# time, 15 of the others' 2250 are too; the rest take 20-60 ms.
@pytest.fixture(scope="module")
def latency(srv):
    dice = random.Random(22)
    acme = [i for i in range(3000) if i % 4 == 0]
    others = [i for i in range(3000) if i % 4 != 0]
    slow = set(dice.sample(acme, 375)) | set(dice.sample(others, 15))
    spans = []
    for i, t in enumerate(spread(3000)):
        ms = 300 + dice.random() * 100 if i in slow else 20 + dice.random() * 40
        spans.append(request(t, ROUTES[dice.randrange(2)], False, ms=ms, attrs={"tenant.id": TENANTS[i % 4]}))
    send(srv, "latency", "1.0.0", spans)
    wait_stored(srv, "latency", 3000)
    return srv, spans, slow


# "calm": 3000 requests, two versions, three routes, tenants and regions at random; 150 fail,
# chosen at random: nothing sets them apart.
CALM_FAILED = 150


@pytest.fixture(scope="module")
def calm(srv):
    dice = random.Random(23)
    failing = set(dice.sample(range(3000), CALM_FAILED))
    by_version: dict[str, list[dict]] = {"4.0.0": [], "4.1.0": []}
    for i, t in enumerate(spread(3000)):
        by_version[dice.choice(sorted(by_version))].append(
            request(t, dice.choice(["/a", "/b", "/c"]), i in failing,
                    attrs={"tenant.id": dice.choice(TENANTS), "region": dice.choice(["eu-west", "us-east"])}))
    for version, spans in by_version.items():
        send(srv, "calm", version, spans)
    wait_stored(srv, "calm", 3000)
    return srv


# ----------------------------------------------------------------- the tests


def test_a_failing_version_is_the_one_dimension_ranked(release):
    srv = release
    answer = explain(srv, service="release", since="30m")
    assert answer["what"] == "errors" and answer["service"] == "release" and answer["route"] is None, answer
    assert answer["threshold_ms"] is None and answer["sampled"] is False, answer
    assert answer["selection"] == {"requests": RELEASE_FAILED}, answer["selection"]
    assert answer["baseline"] == {"requests": 2000 - RELEASE_FAILED}, answer["baseline"]
    assert ranked(answer) == [("service.version", "2.0.0")], \
        f"only the failing version sets the failures apart; ranked: {answer['dimensions']}"
    top = answer["dimensions"][0]
    assert top["selection_share"] == pytest.approx(1.0) and top["selection_count"] == RELEASE_FAILED, top
    good_new = 1000 - RELEASE_FAILED
    assert top["baseline_count"] == good_new, top
    assert top["baseline_share"] == pytest.approx(good_new / (2000 - RELEASE_FAILED)), top
    assert top["risk_ratio"] is None, f"every failure runs 2.0.0: no risk without it to divide by; {top}"
    assert 0 <= top["p_value"] < 1e-6 and top["grouped"] is False, top
    assert answer["summary"] == describe(top), answer["summary"]
    assert answer["summary"].startswith("100% of failing requests have service.version=2.0.0 (vs 41%"), answer["summary"]
    # Since the half hour before: 2.0.0 is new (half the window's requests), 1.9.0 shrank.
    changes = [(c["key"], c["value"]) for c in answer["changes"]]
    assert changes == [("service.version", "2.0.0")], answer["changes"]
    change = answer["changes"][0]
    assert change["new"] is True and change["before_count"] == 0 and change["window_count"] == 1000, change
    assert change["window_share"] == pytest.approx(0.5) and change["before_share"] == 0, change
    assert answer["left_out"] == [], answer["left_out"]
    for key in ("start", "end"):
        assert isinstance(answer[key], str) and answer[key].endswith("Z"), answer[key]


def test_a_span_attribute_is_the_cause_and_ids_are_never_ranked(tenants):
    srv, spans, failing = tenants
    answer = explain(srv, service="tenants", since="30m")
    assert answer["selection"]["requests"] == len(failing) == 320, answer["selection"]
    assert answer["baseline"]["requests"] == 3000 - 320, answer["baseline"]
    assert answer["dimensions"], answer["summary"]
    top = answer["dimensions"][0]
    assert (top["key"], top["value"]) == ("tenant.id", "acme"), answer["dimensions"][:3]
    assert top["selection_count"] == 300 and top["baseline_count"] == 300, top
    assert top["selection_share"] == pytest.approx(300 / 320) and top["baseline_share"] == pytest.approx(300 / 2680), top
    # risk with acme (300 of 600) over risk without it (20 of 2400)
    assert top["risk_ratio"] == pytest.approx((300 / 600) / (20 / 2400), rel=1e-6), top
    assert answer["summary"] == describe(top), answer["summary"]
    for d in answer["dimensions"]:
        assert d["key"] not in ("order.id", "request.id") or d["grouped"], f"an id was ranked as a cause: {d}"
    left_out = {entry["key"]: entry["distinct_values"] for entry in answer["left_out"]}
    assert "request.id" in left_out and left_out["request.id"] >= 200, \
        f"request.id (3000 values of letters only) must be left out: {answer['left_out']}"
    assert "order.id" not in left_out, f"order.id has a single pattern (ord_<id>): grouped, not left out; {left_out}"
    assert "tenant.id" not in left_out and "http.route" not in left_out, left_out


def test_a_route_narrows_the_question_to_its_requests(tenants):
    srv, spans, failing = tenants
    route = ROUTES[1]
    on_route = [i for i, s in enumerate(spans) if (i // 5) % 2 == 1]
    bad = sum(1 for i in on_route if i in failing)
    answer = explain(srv, service="tenants", route=route, since="30m")
    assert answer["route"] == route, answer
    assert answer["selection"]["requests"] == bad, (answer["selection"], bad)
    assert answer["baseline"]["requests"] == len(on_route) - bad, (answer["baseline"], len(on_route) - bad)
    assert ranked(answer)[:1] == [("tenant.id", "acme")], answer["dimensions"]
    assert all(d["key"] != "http.route" for d in answer["dimensions"]), "the route asked about is not a dimension"


def test_a_slow_tenant_explains_slow_requests_past_a_threshold_and_past_the_p95(latency):
    srv, spans, slow = latency
    fixed = explain(srv, service="latency", since="30m", what="latency", threshold_ms="250")
    assert fixed["what"] == "latency" and fixed["threshold_ms"] == 250, fixed
    assert fixed["selection"]["requests"] == len(slow) == 390, fixed["selection"]
    assert fixed["baseline"]["requests"] == 3000 - 390, fixed["baseline"]
    top = fixed["dimensions"][0] if fixed["dimensions"] else None
    assert top and (top["key"], top["value"]) == ("tenant.id", "acme"), fixed["dimensions"][:3]
    assert top["selection_count"] == 375 and top["baseline_count"] == 750 - 375, top
    assert fixed["summary"] == describe(top, "slow"), fixed["summary"]
    assert fixed["summary"].startswith("96% of slow requests have tenant.id=acme"), fixed["summary"]

    # Without a threshold, slow is slower than its route's p95 over the window.
    expected = 0
    for route in ROUTES:
        durations = sorted(int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"]) for s in spans
                           if s["attributes"][0]["value"]["stringValue"] == route)
        p95 = durations[math.ceil(len(durations) * 0.95) - 1]
        expected += sum(1 for d in durations if d > p95)
    p95 = explain(srv, service="latency", since="30m", what="latency")
    assert p95["threshold_ms"] is None, p95
    assert p95["selection"]["requests"] == expected, (p95["selection"], expected)
    assert ranked(p95)[:1] == [("tenant.id", "acme")], p95["dimensions"]
    # The same requests asked about failures: there are none.
    errors = explain(srv, service="latency", since="30m")
    assert errors["dimensions"] == [] and errors["selection"]["requests"] == 0, errors
    assert errors["summary"] == "no failing requests in the window: nothing to explain", errors["summary"]


def test_failures_spread_at_random_rank_nothing_and_look_alike(calm):
    srv = calm
    answer = explain(srv, service="calm", since="30m")
    assert answer["selection"]["requests"] == CALM_FAILED, answer["selection"]
    assert answer["baseline"]["requests"] == 3000 - CALM_FAILED, answer["baseline"]
    assert answer["dimensions"] == [], f"noise was ranked as a cause: {answer['dimensions'][:3]}"
    assert answer["summary"] == (f"no dimension sets the {CALM_FAILED} failing requests apart from the "
                                 f"{3000 - CALM_FAILED} others: they look alike"), answer["summary"]
    out = run_cli("explain", "--service", "calm", "--since", "30m", url=srv.api_url)
    assert out.returncode == 0, out.stderr
    assert "they look alike" in out.stdout and table_rows(out.stdout) == [], out.stdout


def test_too_few_failures_are_not_ranked_and_say_so(srv):
    dice = random.Random(24)
    failing = set(dice.sample(range(500), 4))
    send(srv, "rare", "1.0.0", [request(t, "/x", i in failing, attrs={"tenant.id": "acme" if i in failing else "globex"})
                                for i, t in enumerate(spread(500))])
    wait_stored(srv, "rare", 500)
    answer = explain(srv, service="rare", since="30m")
    assert answer["dimensions"] == [], f"4 failures, all acme, still cannot rank (at least 10): {answer['dimensions']}"
    assert answer["summary"] == ("only 4 failing requests: too few to tell what sets them apart "
                                 "(at least 10 are needed)"), answer["summary"]


def test_limit_caps_the_dimensions(tenants):
    srv = tenants[0]
    every = explain(srv, service="tenants", since="30m")
    one = explain(srv, service="tenants", since="30m", limit="1")
    assert len(every["dimensions"]) >= 1 and ranked(one) == ranked(every)[:1], (ranked(one), ranked(every))


BAD_QUESTIONS = [
    ("no-service", {"since": "30m"}, "parameter service is required (e.g. service=orders)"),
    ("empty-service", {"service": ""}, "parameter service is required (e.g. service=orders)"),
    ("unknown-what", {"service": "tenants", "what": "bogus"},
     'parameter what "bogus" is not known: expected errors or latency'),
    ("threshold-without-latency", {"service": "tenants", "threshold_ms": "250"},
     "parameter threshold_ms goes with what=latency"),
    ("threshold-with-errors", {"service": "tenants", "what": "errors", "threshold_ms": "250"},
     "parameter threshold_ms goes with what=latency"),
    ("negative-threshold", {"service": "tenants", "what": "latency", "threshold_ms": "-5"},
     'parameter threshold_ms "-5" must be a positive number of milliseconds'),
    ("limit-zero", {"service": "tenants", "limit": "0"}, 'parameter limit "0" must be a whole number from 1 to 100'),
    ("bad-since", {"service": "tenants", "since": "yesterday"}, "parameter since"),
    ("bad-start", {"service": "tenants", "start": "noon", "end": "1"}, 'parameter start "noon" is not a time'),
]


@pytest.mark.parametrize("params, message", [q[1:] for q in BAD_QUESTIONS], ids=[q[0] for q in BAD_QUESTIONS])
def test_bad_questions_are_a_400_naming_the_parameter(srv, params, message):
    resp = srv.get("/api/v1/explain", params=params)
    assert resp.status_code == 400, f"{params}: {resp.status_code} {resp.text}"
    error = resp.json()["error"]
    assert error["code"] == "bad_request", error
    assert error["message"].startswith(message), f"{params}: {error['message']!r} does not say {message!r}"


def test_the_cli_prints_the_summary_and_the_ranked_table(tenants):
    srv = tenants[0]
    api = explain(srv, service="tenants", since="30m")
    out = run_cli("explain", "--service", "tenants", "--since", "30m", url=srv.api_url)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("tenants: 320 failing requests against 2680 others ("), lines[0]
    assert lines[1] == api["summary"], (lines[1], api["summary"])
    rows = table_rows(out.stdout)
    assert rows and rows[0] == ["dimension", "value", "of failing", "of others", "risk ratio", "p"], rows[:1]
    assert len(rows) - 1 == len(api["dimensions"]), (rows, api["dimensions"])
    assert rows[1][:5] == ["tenant.id", "acme", "93.8%", "11.2%", "60.0×"], rows[1]
    assert "Left out for their many values (ids): request.id" in out.stdout, out.stdout

    latency = run_cli("explain", "--service", "latency", "--what", "latency", "--threshold-ms", "250", url=srv.api_url)
    assert latency.returncode == 0, latency.stderr
    assert latency.stdout.startswith("latency: 390 slow requests against 2610 others"), latency.stdout
    rows = table_rows(latency.stdout)
    assert rows[0][2] == "of slow" and rows[1][:2] == ["tenant.id", "acme"], latency.stdout

    release = run_cli("explain", "--service", "release", url=srv.api_url)
    assert release.returncode == 0, release.stderr
    rows = table_rows(release.stdout)
    assert rows[1][:3] == ["service.version", "2.0.0", "100.0%"] and rows[1][4] == "all", \
        f"every failure runs 2.0.0: its risk ratio reads 'all'; {rows}"
    assert "Since the window before:" in release.stdout, release.stdout

    refused = run_cli("explain", "--service", "tenants", "--what", "bogus", url=srv.api_url)
    assert refused.returncode != 0 and "bogus" in refused.stderr, (refused.returncode, refused.stderr)
    gone = run_cli("explain", "--service", "tenants", url=f"http://127.0.0.1:{free_port()}")
    assert gone.returncode != 0 and gone.stderr.startswith("error:"), (gone.returncode, gone.stderr)


def test_the_cli_json_is_the_servers_answer(tenants):
    srv = tenants[0]
    api = explain(srv, service="tenants", since="30m")
    out = run_cli("explain", "--service", "tenants", "--since", "30m", "--json", url=srv.api_url)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert ranked(answer) == ranked(api) and answer["summary"] == api["summary"], answer
    # The server's answer as it is (start and end aside: a moment later, the window moved).
    served = {k: v for k, v in api.items() if k not in ("start", "end")}
    printed = {k: v for k, v in answer.items() if k not in ("start", "end")}
    assert printed == served, "sightline explain --json changed the server's answer: " + "; ".join(
        f"{path}: printed {a!r}, served {b!r}" for path, a, b in differences(printed, served))
