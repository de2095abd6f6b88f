"""`sightline demo --scenario NAME` and `sightline demo --list`, end to end.

`--list` prints each of the five scenarios (bad-release, slow-dependency, dependency-down,
queue-backlog, noisy-neighbour) as a block: its name and summary, `cause: KEY=VALUE`, and the
alert snippet for sightline.toml that fires on it. The snippet is taken from that output, as a
user would copy it, into the config of a server evaluating every second; `sightline demo
--scenario NAME --backfill 30m` then feeds it half an hour of the shop, healthy at first, then the
fault, and the listed alert must fire with the listed cause first in its explanation. An unknown
name exits non-zero naming the known ones. For bad-release, the shop really is healthy before the
fault (no failed orders request, only 1.4.2) and runs the failing 1.5.0 after it; for
queue-backlog, the worker's `celery.queue.depth` grows from the fault on.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
from datetime import datetime, timedelta, timezone

import pytest

from conftest import SightlineServer, _cleanup, sightline_bin, wait_for
from test_monitor import api_json, start_server, write_config
from test_ui import parse_time

SCENARIOS = ["bad-release", "slow-dependency", "dependency-down", "queue-backlog", "noisy-neighbour"]
DEMO_ARGS = ["--backfill", "30m", "--duration", "2s", "--rate", "8"]
DEMO_TIMEOUT_S = 120
FIRE_TIMEOUT_S = 60.0
# `--list`: the snippet's lines are indented by 18 columns, the other lines of a block by 17.
SNIPPET_INDENT = " " * 18
ALERT_HEADER = "an alert that fires on it (sightline.toml):"
# What `sightline demo --scenario` says first on stderr.
ANNOUNCED = re.compile(r"^scenario (\S+): (.*); from (\S+) \(cause: ([^=\s]+)=(\S+)\)$", re.M)


def scenario_list() -> dict[str, dict]:
    """`sightline demo --list`, read strictly: name -> {"summary", "cause": (key, value), "alert"
    (the snippet's TOML text)}; a block that is not laid out as documented fails."""
    out = subprocess.run([sightline_bin(), "demo", "--list"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"sightline demo --list exited with {out.returncode}\n{out.stderr}"
    blocks = [b for b in out.stdout.split("\n\n") if b.strip()]
    scenarios: dict[str, dict] = {}
    for block in blocks:
        lines = block.splitlines()
        assert len(lines) >= 4, f"a block of --list has fewer than 4 lines:\n{block}"
        head = re.fullmatch(r"(\S+)\s+(\S.*)", lines[0])
        cause = re.fullmatch(r"\s+cause: ([^=\s]+)=(\S+)", lines[1])
        assert head and cause, f"not 'NAME SUMMARY' then 'cause: KEY=VALUE':\n{block}"
        assert lines[2].strip() == ALERT_HEADER, f"{head.group(1)}: the third line is {lines[2]!r}"
        assert all(line.startswith(SNIPPET_INDENT) for line in lines[3:]), \
            f"{head.group(1)}: the snippet is not indented by {len(SNIPPET_INDENT)}:\n{block}"
        assert head.group(1) not in scenarios, f"{head.group(1)} is listed twice"
        scenarios[head.group(1)] = {"summary": head.group(2).strip(), "cause": cause.groups(),
                                    "alert": "\n".join(line[len(SNIPPET_INDENT):] for line in lines[3:]) + "\n"}
    return scenarios


def alert_name(snippet: str) -> str:
    """The name of the one [[slo]] or [[alert]] of a listed snippet."""
    parsed = tomllib.loads(snippet)
    tables = parsed.get("slo", []) + parsed.get("alert", [])
    assert len(tables) == 1 and set(parsed) <= {"slo", "alert"}, f"not one [[slo]] or [[alert]]: {snippet}"
    return tables[0]["name"]


def run_demo(server: SightlineServer, name: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", server.otlp_http_url, "--scenario", name, *DEMO_ARGS],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"sightline demo --scenario {name} exited with {out.returncode}\n{out.stderr}"
    return out


def sql_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture(scope="module")
def listing() -> dict[str, dict]:
    return scenario_list()


@pytest.fixture(scope="module")
def drill(request, listing, tmp_path_factory):
    """A server watching with the listed alert of the scenario request.param, fed by
    `sightline demo --scenario NAME --backfill 30m`: (server, the listed scenario, the fault's
    announced start, the demo's stderr)."""
    name = request.param
    scenario = listing[name]
    base = tmp_path_factory.mktemp(f"scenario-{name}")
    config = write_config(base / "sightline.toml", '[monitor]\nevaluation_interval = "1s"\n\n' + scenario["alert"])
    server = start_server(base, name, config)
    try:
        out = run_demo(server, name)
        announced = ANNOUNCED.search(out.stderr)
        assert announced, f"sightline demo --scenario {name} did not announce the scenario:\n{out.stderr}"
        fault_start = parse_time(announced.group(3))
    except BaseException:
        _cleanup(server)
        raise
    yield server, scenario, fault_start, out.stderr, announced
    _cleanup(server)


# ------------------------------------------------------------------- the list


def test_list_prints_each_scenario_with_summary_cause_and_a_valid_alert(listing):
    assert list(listing) == SCENARIOS, f"--list shows {list(listing)}, expected {SCENARIOS} in this order"
    wrong = []
    for name, s in listing.items():
        if len(s["summary"]) < 20:
            wrong.append(f"{name}: the summary {s['summary']!r} says nothing")
        config = tomllib.loads(s["alert"])
        table = (config.get("slo") or config.get("alert"))[0]
        if not (table.get("name") and table.get("service")):
            wrong.append(f"{name}: the snippet names no alert or no service: {table}")
    assert not wrong, "\n".join(wrong)
    # The causes the README names for the scenarios.
    assert listing["bad-release"]["cause"] == ("service.version", "1.5.0"), listing["bad-release"]
    assert listing["slow-dependency"]["cause"] == ("tenant.id", "acme"), listing["slow-dependency"]
    assert listing["dependency-down"]["cause"] == ("payment.provider", "card"), listing["dependency-down"]
    assert listing["noisy-neighbour"]["cause"] == ("host.name", "orders-8b1e"), listing["noisy-neighbour"]


def test_an_unknown_scenario_exits_non_zero_naming_the_known_ones():
    out = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", "http://127.0.0.1:9", "--scenario", "meteor-strike",
         "--duration", "1s"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode != 0, f"an unknown scenario exited 0\n--- stderr ---\n{out.stderr}"
    assert "meteor-strike" in out.stderr, f"the message does not name what was asked: {out.stderr!r}"
    missing = [n for n in SCENARIOS if n not in out.stderr]
    assert not missing, f"the message does not list {missing}: {out.stderr!r}"
    assert "--list" in out.stderr, f"the message does not point at --list: {out.stderr!r}"
    assert "sending" not in out.stderr, f"it began sending anyway: {out.stderr!r}"


# --------------------------------------------------------------- the drills


@pytest.mark.parametrize("drill", SCENARIOS, indirect=True)
def test_the_listed_alert_fires_with_the_listed_cause_first(drill):
    server, scenario, fault_start, stderr, announced = drill
    name = announced.group(1)
    key, value = scenario["cause"]
    assert announced.groups()[1:] == (scenario["summary"], announced.group(3), key, value), \
        f"the run announces {announced.group(0)!r}; --list says {scenario['summary']!r}, cause {key}={value}"
    now = datetime.now(timezone.utc)
    assert now - timedelta(minutes=30) < fault_start < now - timedelta(minutes=5), \
        f"the fault of a 30m backfill begins at {fault_start}, not within it with time for the alert's windows"

    wanted = alert_name(scenario["alert"])

    def firing():
        return [a for a in api_json(server, "/api/v1/alerts")["alerts"]
                if a["name"] == wanted and a["state"] == "firing" and a["explanation"]]
    fired = wait_for(firing, timeout=FIRE_TIMEOUT_S, interval=0.5,
                     what=f"{wanted} (the alert --list gives for {name}) firing with an explanation; alerts: "
                          f"{[(a['name'], a['state']) for a in api_json(server, '/api/v1/alerts')['alerts']]}")
    wrong = []
    for alert in fired:
        causes = [(c["key"], c["value"], c["selection_share"], c["baseline_share"]) for c in alert["explanation"]]
        if causes[0][:2] != (key, value):
            wrong.append(f"{wanted} {alert['labels']}: the first cause is {causes[0][0]}={causes[0][1]}, "
                         f"--list says {key}={value}; the explanation: {causes}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("drill", ["bad-release"], indirect=True)
def test_bad_release_is_healthy_before_the_fault_and_fails_on_1_5_0_after(drill):
    server, _, fault_start, _, _ = drill
    orders = "FROM spans WHERE service_name = 'orders' AND kind = 'server'"
    oldest = parse_time(server.rows(f"SELECT min(start_time) AS t {orders}")[0]["t"])
    assert oldest < datetime.now(timezone.utc) - timedelta(minutes=25), f"the backfill's orders begin at {oldest}"
    per_version = ("SELECT service_version, count(*) AS n, min(start_time) AS first, max(start_time) AS last, "
                   f"sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS failed {orders} AND ")
    wrong = []
    before = server.rows(per_version + f"start_time < '{sql_time(fault_start)}' GROUP BY service_version "
                         "ORDER BY service_version")
    if [r["service_version"] for r in before] != ["1.4.2"]:
        wrong.append(f"before the fault (announced from {sql_time(fault_start)}) orders ran {before}, "
                     "expected 1.4.2 only")
    if sum(r["failed"] for r in before) or sum(r["n"] for r in before) < 1000:
        wrong.append(f"before the fault orders served {before}: expected over 1000 requests and no failure")
    older = server.rows(f"SELECT count(*) AS n FROM spans WHERE status = 'error' "
                        f"AND start_time < '{sql_time(fault_start - timedelta(minutes=10))}'")
    if older[0]["n"]:
        wrong.append(f"{older[0]['n']} spans of the shop failed more than 20 minutes ago, in its healthy part")

    after = server.rows(per_version + "http_route = '/api/orders/{order_id}' "
                        f"AND start_time >= '{sql_time(fault_start)}' GROUP BY service_version")
    if [r["service_version"] for r in after] != ["1.5.0"]:
        wrong.append(f"from the fault on, order reads ran {after}, expected 1.5.0 only")
    elif not 0.2 < after[0]["failed"] / after[0]["n"] < 0.4:
        wrong.append(f"1.5.0 failed {after[0]['failed']} of {after[0]['n']} order reads, not about 30%")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("drill", ["queue-backlog"], indirect=True)
def test_queue_backlog_grows_the_queue_from_the_fault_on(drill):
    server, _, fault_start, _, _ = drill
    depth = server.rows(
        "SELECT time, value FROM metrics WHERE name = 'celery.queue.depth' ORDER BY time")
    assert len(depth) >= 20, f"only {len(depth)} celery.queue.depth points"
    before = [r["value"] for r in depth if parse_time(r["time"]) < fault_start]
    after = [(parse_time(r["time"]), r["value"]) for r in depth if parse_time(r["time"]) >= fault_start]
    assert before and len(after) >= 10, f"{len(before)} points before the fault, {len(after)} after"
    assert max(before) <= 60, f"the queue was {max(before)} deep before the fault, the healthy shop keeps it short"
    # Growing: each third of the fault deeper than the one before, the last far deeper than healthy.
    third = len(after) // 3
    means = [sum(v for _, v in part) / len(part) for part in (after[:third], after[third:2 * third],
                                                                 after[2 * third:])]
    assert means[0] < means[1] < means[2], f"the queue does not grow over the fault: thirds {means}"
    assert after[-1][1] > max(before) + 500, \
        f"the queue is {after[-1][1]} deep at the end, {max(before)} at most before the fault"
