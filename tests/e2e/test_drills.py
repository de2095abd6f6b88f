"""Drills end to end: `sightline demo --scenario NAME` against a server watching with the alert
that `sightline demo --list` prints for it. For each of the five scenarios (a bad release, a
slow dependency for one tenant, a payment provider down, a worker backlog, a noisy neighbour),
with half an hour of backfilled history, the listed alert fires and its explanation, computed
when it began firing, names the injected cause first; the incident page proposes what to do."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import _cleanup, sightline_bin, wait_for
from test_monitor import api_json, start_server, write_config

DEMO_TIMEOUT_S = 120


def listed() -> dict[str, dict]:
    """The scenarios as `--list` prints them: summary, cause, and the alert's TOML."""
    out = subprocess.run([sightline_bin(), "demo", "--list"], capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    scenarios: dict[str, dict] = {}
    current = None
    for line in out.stdout.splitlines():
        if line and not line.startswith(" "):
            name, summary = line.split(None, 1)
            current = scenarios.setdefault(name, {"summary": summary.strip(), "alert": []})
        elif current is not None and (m := re.match(r"\s+cause: (\S+?)=(\S+)$", line)):
            current["cause"] = (m.group(1), m.group(2))
        elif current is not None and line.startswith(" " * 18):
            current["alert"].append(line[18:])
    return scenarios


SCENARIOS = ["bad-release", "slow-dependency", "dependency-down", "queue-backlog", "noisy-neighbour"]


def test_the_list_names_every_scenario_with_its_cause_and_alert():
    scenarios = listed()
    assert list(scenarios) == SCENARIOS, scenarios
    for name, s in scenarios.items():
        assert s.get("cause") and s["alert"] and s["alert"][0] in ("[[slo]]", "[[alert]]"), (name, s)
    unknown = subprocess.run([sightline_bin(), "demo", "--scenario", "meteor-strike"], capture_output=True,
                             text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert unknown.returncode != 0 and "bad-release" in unknown.stderr and "--list" in unknown.stderr, unknown.stderr


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_scenario_fires_its_alert_and_the_injected_cause_comes_first(tmp_path, name):
    scenario = listed()[name]
    alert_toml = "\n".join(scenario["alert"]) + "\n"
    alert_name = re.search(r'name = "([^"]+)"', alert_toml).group(1)
    config = write_config(tmp_path / "sightline.toml", '[monitor]\nevaluation_interval = "1s"\n\n' + alert_toml)
    srv = start_server(tmp_path, name, config)
    try:
        check_scenario(srv, name, scenario, alert_name)
    finally:
        _cleanup(srv)


def check_scenario(srv, name: str, scenario: dict, alert_name: str) -> None:
    out = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", srv.otlp_http_url, "--scenario", name, "--backfill", "30m",
         "--duration", "2s", "--rate", "8"],
        capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert f"scenario {name}" in out.stderr, out.stderr

    def fired():
        return [a for a in api_json(srv, "/api/v1/alerts")["alerts"]
                if a["name"] == alert_name and a["state"] == "firing" and a["explanation"]]
    firing = wait_for(fired, timeout=60, interval=0.5, what=f"{alert_name} firing with an explanation")
    key, value = scenario["cause"]
    for alert in firing:
        top = alert["explanation"][0]
        assert (top["key"], top["value"]) == (key, value), \
            f"{name}: the first explanation is {top['key']}={top['value']}, the injected cause {key}={value}: " \
            f"{[c['summary'] for c in alert['explanation']]}"
        assert top["selection_share"] > top["baseline_share"] + 0.3, top
        assert top["summary"].startswith(f"{round(top['selection_share'] * 100)}% of "), top
        detail = api_json(srv, f"/api/v1/alerts/{alert['id']}")
        assert detail["explained"]["causes"][0]["key"] == key and detail["explained"]["bad_requests"] >= 10, detail
        page = srv.get(f"/alerts/{alert['id']}")
        assert page.status_code == 200
        steps = re.search(r'<section id="next-steps">(.*?)</section>', page.text, re.S)
        assert steps and value in steps.group(1), f"the next steps do not name {value}: {steps and steps.group(1)}"
    if name == "bad-release":
        # Healthy before the fault: nothing failed in the first half of the backfill.
        early = srv.rows("SELECT count(*) AS n FROM spans WHERE service_name = 'orders' AND status = 'error' "
                         "AND start_time < now() - INTERVAL '20 minutes'")
        assert early[0]["n"] == 0, early
    if name == "queue-backlog":
        depth = srv.rows("SELECT min(value) AS low, max(value) AS high FROM metrics "
                         "WHERE name = 'celery.queue.depth'")
        assert depth[0]["high"] > depth[0]["low"] + 500, f"the queue did not grow: {depth}"
