"""`GET /api/v1/compare` and `sightline compare`: a candidate release against its baseline, route
by route, with the exit code a CI job gates on (0 better or the same, 1 worse, 2 cannot say), on
hand-made OTLP/JSON spans whose answer the test chose.

One server (module fixture), a service per scenario, every request within the last 20 minutes:

- an error regression on one route of two: worse, exit 1, that route named with its error
  rates in the reasons and the regressions, the other route the same; the numbers (requests,
  errors, error rate) are those sent;
- a slower tail (p95) is worse at p95, not at p50;
- changes that are significant but below the floors (1.0% to 1.4% errors over 20 000 requests
  each, 5% slower) are the same, exit 0, until the floor is lowered;
- a faster candidate is better, exit 0;
- too few requests, an unknown version (either side) and an unreachable server are exit 2 with
  the reason in words;
- an exception type only the candidate raises is listed in new_errors with its count and a
  trace that exists in spans (and of that type and version), and makes the candidate worse
  from ten requests on, not below;
- cohorts by an attribute (the feature flag feature.new_checkout, false against true) count only
  the requests that carry it;
- `--format json` prints the answer with the verdict and each route's baseline and candidate
  {requests, error_rate, p50_ms, p95_ms, p99_ms};
- bad questions are a 400 naming the parameter (and exit 2 from the CLI).
"""

from __future__ import annotations

import json
import random

import pytest

from conftest import SightlineServer, _cleanup, free_port
from otlp_spans import request, send, spread
from test_explain import run_cli, table_rows, wait_stored
from test_monitor import api_json, start_server, write_config

STATS_KEYS = {"requests", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"}
DEFAULT_FLOORS = {"min_requests": 50, "latency_ratio": 0.1, "error_rate_points": 0.5, "significance": 0.05,
                  "new_error_min": 10}


# ----------------------------------------------------------------- helpers


def cohort(times: list[int], route: str, failing: set[int], dice: random.Random, low_ms: float, high_ms: float,
           exceptions: dict[int, str] | None = None, attrs: dict | None = None) -> list[dict]:
    """One request per time on route, the i-th failing when i is in `failing` (raising
    exceptions[i] if given), taking a uniform low_ms..high_ms."""
    return [request(t, route, i in failing, ms=low_ms + dice.random() * (high_ms - low_ms), attrs=attrs,
                    exception=(exceptions or {}).get(i)) for i, t in enumerate(times)]


def compare(srv: SightlineServer, **params) -> dict:
    return api_json(srv, "/api/v1/compare", **params)


def compare_cli(srv: SightlineServer, service: str, baseline: str, candidate: str, *args: str):
    return run_cli("compare", "--service", service, "--baseline", baseline, "--candidate", candidate, *args,
                   url=srv.api_url)


def route_of(answer: dict, route: str) -> dict:
    found = [r for r in answer["routes"] if r["route"] == route]
    assert len(found) == 1, f"route {route} in {[r['route'] for r in answer['routes']]}"
    return found[0]


def check(route: dict, measure: str) -> dict:
    found = [c for c in route["checks"] if c["measure"] == measure]
    assert len(found) == 1, route["checks"]
    return found[0]


def stats(answer: dict, route: str, side: str) -> tuple[int, int]:
    s = route_of(answer, route)[side]
    return s["requests"], s["errors"]


# ----------------------------------------------------------------- the data


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    server = start_server(base, "compare", write_config(base / "sightline.toml", "# defaults\n"))
    yield server
    _cleanup(server)


@pytest.fixture(scope="module")
def pay(srv):
    """/api/pay: 1500 requests each, 15 failing in 1.0.0 (1%), 180 in 1.1.0 (12%); /api/health:
    600 each, none failing; every request 20-30 ms."""
    dice = random.Random(30)
    t_pay, t_health = spread(3000), spread(1200)
    base = cohort(t_pay[0::2], "/api/pay", set(dice.sample(range(1500), 15)), dice, 20, 30)
    cand = cohort(t_pay[1::2], "/api/pay", set(dice.sample(range(1500), 180)), dice, 20, 30)
    base += cohort(t_health[0::2], "/api/health", set(), dice, 20, 30)
    cand += cohort(t_health[1::2], "/api/health", set(), dice, 20, 30)
    send(srv, "pay", "1.0.0", base)
    send(srv, "pay", "1.1.0", cand)
    wait_stored(srv, "pay", 4200)
    return srv


@pytest.fixture(scope="module")
def slow_tail(srv):
    """2000 requests each on /search: 2% of 3.0.0's take 250-300 ms, 15% of 3.1.0's; the rest 20-30 ms."""
    dice = random.Random(31)
    times = spread(4000)
    spans = {}
    for version, share, ts in (("3.0.0", 0.02, times[0::2]), ("3.1.0", 0.15, times[1::2])):
        slow = set(dice.sample(range(2000), int(2000 * share)))
        spans[version] = [request(t, "/search", False, ms=(250 + dice.random() * 50) if i in slow
                                  else (20 + dice.random() * 10)) for i, t in enumerate(ts)]
    for version, s in spans.items():
        send(srv, "search", version, s)
    wait_stored(srv, "search", 4000)
    return srv


TINY_N = 20_000


@pytest.fixture(scope="module")
def tiny(srv):
    """20 000 requests each on /feed: 200 of 1.0.0 fail (1.0%), 280 of 1.1.0 (1.4%); 1.0.0 takes
    20-30 ms, 1.1.0 5% longer (21-31.5 ms)."""
    dice = random.Random(32)
    times = spread(2 * TINY_N)
    send(srv, "feed", "1.0.0", cohort(times[0::2], "/feed", set(dice.sample(range(TINY_N), 200)), dice, 20, 30))
    send(srv, "feed", "1.1.0", cohort(times[1::2], "/feed", set(dice.sample(range(TINY_N), 280)), dice, 21, 31.5))
    wait_stored(srv, "feed", 2 * TINY_N)
    return srv


@pytest.fixture(scope="module")
def faster(srv):
    """1000 requests each on /x: 2.0.0 takes 40-50 ms, 2.1.0 20-25 ms, 1% failing in both."""
    dice = random.Random(33)
    times = spread(2000)
    send(srv, "fast", "2.0.0", cohort(times[0::2], "/x", set(dice.sample(range(1000), 10)), dice, 40, 50))
    send(srv, "fast", "2.1.0", cohort(times[1::2], "/x", set(dice.sample(range(1000), 10)), dice, 20, 25))
    # Too few: 30 requests each.
    few = spread(60)
    send(srv, "few", "1.0.0", cohort(few[0::2], "/y", set(), dice, 20, 30))
    send(srv, "few", "1.1.0", cohort(few[1::2], "/y", set(), dice, 20, 30))
    wait_stored(srv, "fast", 2000)
    wait_stored(srv, "few", 60)
    return srv


def new_error_cohorts(srv: SightlineServer, service: str, timeouts: int, dice: random.Random) -> None:
    """2000 requests each on /orders, 40 failing in both: 5.0.0's all raise ValueError; 5.1.0's
    `timeouts` raise httpx.ReadTimeout (never seen in 5.0.0) and the rest ValueError."""
    times = spread(4000)
    base_failing = dice.sample(range(2000), 40)
    cand_failing = dice.sample(range(2000), 40)
    base_exc = {i: "ValueError" for i in base_failing}
    cand_exc = {i: ("httpx.ReadTimeout" if n < timeouts else "ValueError") for n, i in enumerate(cand_failing)}
    send(srv, service, "5.0.0", cohort(times[0::2], "/orders", set(base_failing), dice, 20, 30, base_exc))
    send(srv, service, "5.1.0", cohort(times[1::2], "/orders", set(cand_failing), dice, 20, 30, cand_exc))
    wait_stored(srv, service, 4000)


@pytest.fixture(scope="module")
def new_errors(srv):
    dice = random.Random(34)
    new_error_cohorts(srv, "orders", 15, dice)
    new_error_cohorts(srv, "orders-few", 5, dice)
    return srv


FLAG = "feature.new_checkout"


@pytest.fixture(scope="module")
def flag(srv):
    """One version; /checkout with the flag false (1500 requests, 15 failing) or true (1500, 150
    failing), as a boolean attribute; 200 requests without the flag, half failing, count in
    neither cohort."""
    dice = random.Random(35)
    times = spread(3200)
    spans = []
    for value, failed, ts in ((False, 15, times[0:3000:2]), (True, 150, times[1:3000:2])):
        for s in cohort(ts, "/checkout", set(dice.sample(range(1500), failed)), dice, 20, 30):
            s["attributes"].append({"key": FLAG, "value": {"boolValue": value}})
            spans.append(s)
    spans += cohort(times[3000:], "/checkout", set(range(100)), dice, 20, 30)
    send(srv, "checkout", "7.0.0", spans)
    wait_stored(srv, "checkout", 3200)
    return srv


# ----------------------------------------------------------------- the tests


def test_an_error_regression_is_worse_and_names_the_route(pay):
    srv = pay
    answer = compare(srv, service="pay", baseline="1.0.0", candidate="1.1.0")
    assert (answer["service"], answer["by"], answer["baseline"], answer["candidate"]) == \
        ("pay", "service.version", "1.0.0", "1.1.0"), answer
    assert answer["verdict"] == "worse", answer["summary"]
    assert [r["route"] for r in answer["routes"]] == ["/api/pay", "/api/health"], "busiest route first"
    assert (answer["baseline_requests"], answer["candidate_requests"]) == (2100, 2100), answer
    assert answer["floors"] == DEFAULT_FLOORS, answer["floors"]
    assert answer["per_test_significance"] == pytest.approx(0.05 / 8), "two routes, four tests each"
    assert answer["sampled"] is False and answer["new_errors"] == [], answer["new_errors"]

    route = route_of(answer, "/api/pay")
    assert stats(answer, "/api/pay", "baseline") == (1500, 15) and stats(answer, "/api/pay", "candidate") == (1500, 180)
    assert route["baseline"]["error_rate"] == pytest.approx(0.01) and route["candidate"]["error_rate"] == pytest.approx(0.12)
    assert route["verdict"] == "worse" and check(route, "error_rate")["verdict"] == "worse", route
    assert check(route, "error_rate")["p_value"] < answer["per_test_significance"], route["checks"]
    assert [c["verdict"] for c in route["checks"] if c["measure"] != "error_rate"] == ["same"] * 3, route["checks"]
    reason = "error rate 12.00% vs 1.00% (+11.00 points, p < 0.001)"
    assert route["reasons"] == [reason], route["reasons"]
    assert answer["regressions"] == [f"/api/pay: {reason}"], answer["regressions"]
    assert answer["summary"] == f"service.version=1.1.0 is worse than service.version=1.0.0: /api/pay: {reason}", \
        answer["summary"]

    health = route_of(answer, "/api/health")
    assert health["verdict"] == "same" and health["reasons"] == [], health
    assert stats(answer, "/api/health", "baseline") == (600, 0) and stats(answer, "/api/health", "candidate") == (600, 0)
    for side in ("baseline", "candidate"):
        s = health[side]
        assert 20 <= s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"] <= 30.5, s

    out = compare_cli(srv, "pay", "1.0.0", "1.1.0")
    assert out.returncode == 1, f"a regression exits 1: {out.returncode}\n{out.stdout}{out.stderr}"
    first = out.stdout.splitlines()[0]
    assert first.startswith("pay service.version=1.1.0 against 1.0.0 (") and first.endswith("): WORSE"), first
    rows = table_rows(out.stdout)
    assert rows[0] == ["route", "requests", "errors", "p50", "p95", "p99", "verdict"], rows
    assert rows[1][:3] == ["/api/pay", "1500 → 1500", "1.0% → 12.0%"] and rows[1][-1] == "worse", rows[1]
    assert rows[2][0] == "/api/health" and rows[2][-1] == "same", rows[2]
    assert f"Regressions:\n  - /api/pay: {reason}\n" in out.stdout, out.stdout

    # Only the healthy route: the same, exit 0.
    healthy = compare_cli(srv, "pay", "1.0.0", "1.1.0", "--route", "/api/health", "--format", "json")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    judged = json.loads(healthy.stdout)
    assert judged["verdict"] == "same" and [r["route"] for r in judged["routes"]] == ["/api/health"], judged
    assert judged["summary"] == "no difference that matters between service.version=1.0.0 and service.version=1.1.0 " \
                                "on 1 routes", judged["summary"]


def test_a_slower_tail_is_worse_at_p95_not_at_p50(slow_tail):
    answer = compare(slow_tail, service="search", baseline="3.0.0", candidate="3.1.0")
    assert answer["verdict"] == "worse", answer["summary"]
    route = route_of(answer, "/search")
    b, c = route["baseline"], route["candidate"]
    assert (b["requests"], c["requests"], b["errors"], c["errors"]) == (2000, 2000, 0, 0), route
    assert 20 <= b["p95_ms"] <= 30.5 and 247 <= c["p95_ms"] <= 303, (b, c)
    assert check(route, "p95")["verdict"] == "worse", route["checks"]
    assert check(route, "p50")["verdict"] == "same" and check(route, "error_rate")["verdict"] == "same", route["checks"]
    p95_reasons = [r for r in route["reasons"] if r.startswith("p95 ")]
    assert len(p95_reasons) == 1 and "p < 0.001" in p95_reasons[0], route["reasons"]
    assert answer["regressions"] and answer["regressions"][0].startswith("/search: "), answer["regressions"]
    out = compare_cli(slow_tail, "search", "3.0.0", "3.1.0")
    assert out.returncode == 1 and "p95 " in out.stdout, out.stdout + out.stderr


def test_significant_changes_below_the_floors_are_the_same(tiny):
    srv = tiny
    answer = compare(srv, service="feed", baseline="1.0.0", candidate="1.1.0")
    route = route_of(answer, "/feed")
    assert stats(answer, "/feed", "baseline") == (TINY_N, 200) and stats(answer, "/feed", "candidate") == (TINY_N, 280)
    errors, p50 = check(route, "error_rate"), check(route, "p50")
    alpha = answer["per_test_significance"]
    assert errors["p_value"] < alpha, f"1.0% → 1.4% over 20 000 requests each is significant: {errors}"
    assert p50["p_value"] < alpha, f"5% slower over 20 000 requests each is significant: {p50}"
    assert errors["verdict"] == "same", "+0.4 points is below the 0.5-point floor"
    assert p50["verdict"] == "same", "+5% is below the 10% floor"
    assert route["verdict"] == "same" and answer["verdict"] == "same", answer["summary"]
    assert route["reasons"] == [] and answer["regressions"] == [], route
    out = compare_cli(srv, "feed", "1.0.0", "1.1.0")
    assert out.returncode == 0 and "SAME" in out.stdout.splitlines()[0], out.stdout + out.stderr

    # Lower floors: the same numbers are now regressions.
    by_errors = compare(srv, service="feed", baseline="1.0.0", candidate="1.1.0", error_floor="0.3")
    assert by_errors["floors"]["error_rate_points"] == 0.3, by_errors["floors"]
    assert check(route_of(by_errors, "/feed"), "error_rate")["verdict"] == "worse", by_errors["routes"]
    assert by_errors["verdict"] == "worse", by_errors["summary"]
    by_latency = compare_cli(srv, "feed", "1.0.0", "1.1.0", "--latency-floor", "2", "--format", "json")
    assert by_latency.returncode == 1, by_latency.stdout + by_latency.stderr
    judged = json.loads(by_latency.stdout)
    assert judged["floors"]["latency_ratio"] == pytest.approx(0.02), judged["floors"]
    assert check(route_of(judged, "/feed"), "p50")["verdict"] == "worse", route_of(judged, "/feed")["checks"]
    assert check(route_of(judged, "/feed"), "error_rate")["verdict"] == "same", "the error floor is still 0.5 points"


def test_a_faster_candidate_is_better_and_passes(faster):
    answer = compare(faster, service="fast", baseline="2.0.0", candidate="2.1.0")
    assert answer["verdict"] == "better", answer["summary"]
    route = route_of(answer, "/x")
    assert route["verdict"] == "better" and check(route, "p50")["verdict"] == "better", route["checks"]
    assert check(route, "error_rate")["verdict"] == "same", route["checks"]
    assert answer["regressions"] == [], answer["regressions"]
    assert answer["summary"].startswith("service.version=2.1.0 is better than service.version=2.0.0: /x: p50 "), \
        answer["summary"]
    out = compare_cli(faster, "fast", "2.0.0", "2.1.0")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].endswith(": BETTER"), out.stdout


def test_too_few_requests_cannot_be_judged(faster):
    answer = compare(faster, service="few", baseline="1.0.0", candidate="1.1.0")
    assert answer["verdict"] == "insufficient_data", answer
    route = route_of(answer, "/y")
    assert route["verdict"] == "insufficient_data" and route["checks"] == [], route
    assert route["reasons"] == ["30 baseline and 30 candidate requests: each needs at least 50 (min_requests)"], route
    assert answer["summary"] == ("too few requests to compare (30 baseline, 30 candidate; each route needs 50 in both): "
                                 "wait longer or widen the window"), answer["summary"]
    out = compare_cli(faster, "few", "1.0.0", "1.1.0")
    assert out.returncode == 2, f"insufficient data exits 2: {out.returncode}\n{out.stdout}{out.stderr}"
    assert "INSUFFICIENT DATA" in out.stdout.splitlines()[0], out.stdout
    # With a lower bar the same requests are judged.
    lower = compare_cli(faster, "few", "1.0.0", "1.1.0", "--min-requests", "20", "--format", "json")
    judged = json.loads(lower.stdout)
    assert judged["floors"]["min_requests"] == 20 and judged["verdict"] != "insufficient_data", judged
    assert lower.returncode == (1 if judged["verdict"] == "worse" else 0), (lower.returncode, judged["verdict"])


def test_an_unknown_candidate_exits_2_saying_it_has_no_requests(pay):
    srv = pay
    unknown = compare(srv, service="pay", baseline="1.0.0", candidate="9.9.9")
    assert unknown["verdict"] == "insufficient_data" and unknown["candidate_requests"] == 0, unknown
    assert unknown["baseline_requests"] == 2100, unknown
    assert unknown["summary"] == ("no requests of pay with service.version=9.9.9 in the window: "
                                  "is the candidate deployed and serving?"), unknown["summary"]
    out = compare_cli(srv, "pay", "1.0.0", "9.9.9")
    assert out.returncode == 2 and unknown["summary"] in out.stdout, (out.returncode, out.stdout, out.stderr)


def test_an_unknown_baseline_exits_2_saying_it_has_no_requests(pay):
    """A typo in the baseline's version must not pass for a regression: with no baseline request,
    nothing the candidate does can be judged (DESIGN: exit 2 for an unknown version)."""
    srv = pay
    summary = "no requests of pay with service.version=0.0.1 in the window: is the baseline right?"
    answer = compare(srv, service="pay", baseline="0.0.1", candidate="1.1.0")
    assert answer["baseline_requests"] == 0 and answer["candidate_requests"] == 2100, answer
    assert (answer["verdict"], answer["summary"]) == ("insufficient_data", summary), \
        f"verdict {answer['verdict']!r}, summary {answer['summary']!r}, regressions {answer['regressions']}"
    out = compare_cli(srv, "pay", "0.0.1", "1.1.0")
    assert out.returncode == 2 and summary in out.stdout, (out.returncode, out.stdout)


def test_an_unreachable_server_exits_2():
    gone = run_cli("compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "1.1.0",
                   url=f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 2, f"an unreachable server exits 2: {gone.returncode}\n{gone.stderr}"
    assert gone.stderr.startswith("error:") and gone.stdout == "", (gone.stdout, gone.stderr)


def test_a_new_exception_type_is_listed_with_a_real_trace_and_makes_it_worse(new_errors):
    srv = new_errors
    answer = compare(srv, service="orders", baseline="5.0.0", candidate="5.1.0")
    route = route_of(answer, "/orders")
    assert stats(answer, "/orders", "baseline") == (2000, 40) and stats(answer, "/orders", "candidate") == (2000, 40)
    assert route["verdict"] == "same", f"the same error rate and latency: {route}"
    assert [(e["error"], e["count"]) for e in answer["new_errors"]] == [("httpx.ReadTimeout", 15)], \
        f"ValueError is raised by both; only httpx.ReadTimeout is new: {answer['new_errors']}"
    trace_id = answer["new_errors"][0]["example_trace_id"]
    spans = srv.rows(f"SELECT exception_type, service_version, service_name FROM spans WHERE trace_id = '{trace_id}'")
    assert spans == [{"exception_type": "httpx.ReadTimeout", "service_version": "5.1.0", "service_name": "orders"}], \
        f"example trace {trace_id}: {spans}"
    regression = "new error httpx.ReadTimeout in 15 requests, never seen in service.version=5.0.0"
    assert answer["verdict"] == "worse" and answer["regressions"] == [regression], answer
    assert answer["summary"] == f"service.version=5.1.0 is worse than service.version=5.0.0: {regression}"
    out = compare_cli(srv, "orders", "5.0.0", "5.1.0")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Errors never seen in the baseline:" in out.stdout, out.stdout
    listed = table_rows(out.stdout[out.stdout.index("Errors never seen in the baseline:"):])
    assert listed[0] == ["error", "requests", "example trace"] and len(listed) == 2, listed
    assert listed[1][:2] == ["httpx.ReadTimeout", "15"], listed
    # (any of the 15 is an example: the one printed is one of them)
    assert srv.rows(f"SELECT exception_type FROM spans WHERE trace_id = '{listed[1][2]}'") == \
        [{"exception_type": "httpx.ReadTimeout"}], listed[1]
    assert f"  - {regression}" in out.stdout, out.stdout

    # Five of them: listed, but below new_error_min (10) they do not make it worse.
    few = compare(srv, service="orders-few", baseline="5.0.0", candidate="5.1.0")
    assert [(e["error"], e["count"]) for e in few["new_errors"]] == [("httpx.ReadTimeout", 5)], few["new_errors"]
    assert few["verdict"] == "same" and few["regressions"] == [], few
    assert compare_cli(srv, "orders-few", "5.0.0", "5.1.0").returncode == 0


def test_cohorts_by_a_feature_flag_attribute(flag):
    srv = flag
    answer = compare(srv, service="checkout", by=FLAG, baseline="false", candidate="true")
    assert answer["by"] == FLAG and (answer["baseline"], answer["candidate"]) == ("false", "true"), answer
    assert stats(answer, "/checkout", "baseline") == (1500, 15), "the 200 requests without the flag count in neither"
    assert stats(answer, "/checkout", "candidate") == (1500, 150), route_of(answer, "/checkout")
    assert answer["verdict"] == "worse", answer["summary"]
    reason = "error rate 10.00% vs 1.00% (+9.00 points, p < 0.001)"
    assert route_of(answer, "/checkout")["reasons"] == [reason], route_of(answer, "/checkout")["reasons"]
    assert answer["summary"] == f"{FLAG}=true is worse than {FLAG}=false: /checkout: {reason}", answer["summary"]
    out = compare_cli(srv, "checkout", "false", "true", "--by", FLAG)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.splitlines()[0].startswith(f"checkout {FLAG}=true against false ("), out.stdout
    # The other way round: better.
    back = compare_cli(srv, "checkout", "true", "false", "--by", FLAG)
    assert back.returncode == 0 and back.stdout.splitlines()[0].endswith(": BETTER"), back.stdout + back.stderr


def test_format_json_prints_the_answer_for_ci(pay):
    srv = pay
    out = compare_cli(srv, "pay", "1.0.0", "1.1.0", "--since", "1h", "--format", "json")
    assert out.returncode == 1, out.stderr
    answer = json.loads(out.stdout)
    api = compare(srv, service="pay", baseline="1.0.0", candidate="1.1.0", since="1h")
    assert answer["verdict"] == api["verdict"] == "worse", answer["verdict"]
    assert answer["summary"] == api["summary"] and answer["regressions"] == api["regressions"], answer
    assert {"start", "end", "routes", "new_errors", "floors", "baseline_requests", "candidate_requests"} <= set(answer)
    assert [r["route"] for r in answer["routes"]] == [r["route"] for r in api["routes"]], answer["routes"]
    for printed, served in zip(answer["routes"], api["routes"]):
        assert printed["verdict"] == served["verdict"] and printed["reasons"] == served["reasons"], printed
        for side in ("baseline", "candidate"):
            assert set(printed[side]) == STATS_KEYS, printed[side]
            assert (printed[side]["requests"], printed[side]["errors"]) == \
                (served[side]["requests"], served[side]["errors"]), (side, printed[side], served[side])
            for key in ("error_rate", "p50_ms", "p95_ms", "p99_ms"):
                assert isinstance(printed[side][key], float) and printed[side][key] == pytest.approx(served[side][key]), \
                    (side, key, printed[side], served[side])


BAD_QUESTIONS = [
    ("no-service", {"baseline": "1", "candidate": "2"}, "parameter service is required (e.g. service=orders)"),
    ("no-baseline", {"service": "pay", "candidate": "2"}, "parameter baseline is required (e.g. baseline=1.4.2)"),
    ("no-candidate", {"service": "pay", "baseline": "1"}, "parameter candidate is required (e.g. candidate=1.5.0)"),
    ("same-cohorts", {"service": "pay", "baseline": "1.0.0", "candidate": "1.0.0"},
     'baseline and candidate are both "1.0.0": compare two different values'),
    ("min-requests-zero", {"service": "pay", "baseline": "1", "candidate": "2", "min_requests": "0"},
     'parameter min_requests "0" must be a whole number of requests, at least 1'),
    ("min-requests-fraction", {"service": "pay", "baseline": "1", "candidate": "2", "min_requests": "2.5"},
     'parameter min_requests "2.5" must be a whole number of requests, at least 1'),
    ("negative-latency-floor", {"service": "pay", "baseline": "1", "candidate": "2", "latency_floor": "-1"},
     'parameter latency_floor "-1" must be a percentage, 0 or more'),
    ("text-error-floor", {"service": "pay", "baseline": "1", "candidate": "2", "error_floor": "lots"},
     'parameter error_floor "lots" must be percentage points, 0 or more'),
    ("significance-one", {"service": "pay", "baseline": "1", "candidate": "2", "significance": "1"},
     'parameter significance "1" must be above 0 and below 1'),
    ("bad-since", {"service": "pay", "baseline": "1", "candidate": "2", "since": "forever"}, "parameter since"),
]


@pytest.mark.parametrize("params, message", [q[1:] for q in BAD_QUESTIONS], ids=[q[0] for q in BAD_QUESTIONS])
def test_bad_questions_are_a_400_naming_the_parameter(srv, params, message):
    resp = srv.get("/api/v1/compare", params=params)
    assert resp.status_code == 400, f"{params}: {resp.status_code} {resp.text}"
    error = resp.json()["error"]
    assert error["code"] == "bad_request", error
    assert error["message"].startswith(message), f"{params}: {error['message']!r} does not say {message!r}"


def test_a_refused_question_exits_2_from_the_cli(srv):
    out = run_cli("compare", "--service", "pay", "--baseline", "1.0.0", "--candidate", "1.0.0", url=srv.api_url)
    assert out.returncode == 2, f"a refused question exits 2: {out.returncode}\n{out.stdout}{out.stderr}"
    assert "compare two different values" in out.stderr, out.stderr
    bad_format = run_cli("compare", "--service", "pay", "--baseline", "1", "--candidate", "2", "--format", "yaml",
                         url=srv.api_url)
    assert bad_format.returncode != 0 and "yaml" in bad_format.stderr, bad_format.stderr
