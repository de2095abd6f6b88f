"""`sightline record [--contract FILE] [--out DIR] -- COMMAND…`: a real Python program under the
OpenTelemetry SDK's auto-configuration (opentelemetry-instrument), its exporters pointed at the
recording server by the OTEL_EXPORTER_OTLP_* variables record sets, judged against a contract.

apps/record_app.py emits three checkouts (each with a charge and a log line inside the span); with
`bad` it also leaves order.id off one checkout, sends a span whose parent never arrives with a
user.email attribute, puts 30 request ids in an attribute, and logs 30 lines outside any span. So
every rule's verdict and numbers are known."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import APPS_DIR, VENV_BIN, SightlineServer, _cleanup, server_env, sightline_bin

CONTRACT = """
[[span]]
name = "checkout"
service = "record-app"
attributes = ["order.id"]
min_count = 3

[[span]]
name = "charge"
attributes = ["payment.provider"]

[logs]
trace_context_min = 0.9

[forbid]
attributes = ["user.email", "password"]
max_distinct_values = 20
orphans = false
"""

RULES = ["span[0]", "span[1]", "logs.trace_context_min", "forbid.attributes", "forbid.max_distinct_values",
         "forbid.orphans"]
APP_ENV = {
    "OTEL_SERVICE_NAME": "record-app",
    "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "none",
    # Whatever the test process says, record's variables must win: point them elsewhere.
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
}


def app_command(*args: str) -> list[str]:
    return [str(VENV_BIN / "opentelemetry-instrument"), str(VENV_BIN / "python"), str(APPS_DIR / "record_app.py"),
            *args]


def record(tmp_path: Path, *flags: str, command: list[str], contract: str | None = CONTRACT) -> subprocess.CompletedProcess:
    args = [sightline_bin(), "record", *flags]
    if contract is not None:
        path = tmp_path / "contract.toml"
        path.write_text(contract)
        args += ["--contract", str(path)]
    return subprocess.run([*args, "--", *command], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, cwd=tmp_path, env=server_env(APP_ENV))


def answer(done: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def verdicts(body: dict) -> dict[str, dict]:
    return {v["rule"]: v for v in body["rules"]}


def test_a_program_that_keeps_its_contract_exits_0(tmp_path):
    done = record(tmp_path, command=app_command("good"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    out = done.stdout
    assert "recorded 6 span(s), 3 log line(s) and 0 metric point(s) from 1 service(s): record-app" in out, out
    assert "6 of 6 rule(s) hold" in out, out
    for rule in RULES:
        assert f"ok    {rule}: " in out, (rule, out)
    assert "FAIL" not in out
    assert 'span[0]: 3 spans named "checkout" of record-app, each with order.id' in out, out
    assert "3 of 3 log lines (100.0%) carry a trace id" in out, out
    assert "recording: OTLP/HTTP http://127.0.0.1:" in done.stderr, done.stderr
    # The command's own output comes first, then the report.
    assert out.startswith("record-app: good run done\n"), out


def test_each_broken_rule_is_named_with_what_broke_it(tmp_path):
    done = record(tmp_path, "--format", "json", command=app_command("bad"))
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    body = answer(done)
    assert body["ok"] is False and body["command"]["status"] == 0, body
    assert body["recorded"] == {"spans": 3 + 3 + 1 + 30, "logs": 3 + 30, "metric_points": 0,
                                "services": ["record-app"]}, body["recorded"]
    by_rule = verdicts(body)
    assert list(by_rule) == RULES
    assert {r for r, v in by_rule.items() if v["ok"]} == {"span[1]"}, by_rule

    checkout = by_rule["span[0]"]
    assert checkout["summary"] == "1 of 3 lack order.id", checkout
    assert len(checkout["examples"]) == 1 and 'record-app span "checkout"' in checkout["examples"][0], checkout
    logs = by_rule["logs.trace_context_min"]
    assert logs["summary"] == "3 of 33 log lines (9.1%) carry a trace id; at least 90.0% required", logs
    assert logs["examples"] == ["record-app: 3 of 33 log lines carry a trace id"], logs
    forbidden = by_rule["forbid.attributes"]
    assert forbidden["examples"] == ["user.email: 1 row of spans.attributes (record-app)"], forbidden
    distinct = by_rule["forbid.max_distinct_values"]
    assert distinct["examples"] == ["request.id takes 30 distinct values"], distinct
    orphans = by_rule["forbid.orphans"]
    assert orphans["summary"] == "1 span(s) name a parent that never arrived", orphans
    assert orphans["examples"] == [
        f'record-app span "reconcile" (trace {"ab" * 16}) names parent {"cd" * 8}, which never arrived'], orphans


def test_the_text_report_marks_the_broken_rules(tmp_path):
    done = record(tmp_path, command=app_command("bad"))
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    assert "1 of 6 rule(s) hold" in done.stdout, done.stdout
    failed = [line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.startswith("  FAIL ")]
    assert failed == [r for r in RULES if r != "span[1]"], done.stdout


def test_a_failing_command_passes_its_status_through_after_the_report(tmp_path):
    done = record(tmp_path, "--format", "json", command=app_command("good", "3"))
    assert done.returncode == 3, f"{done.stdout}\n{done.stderr}"
    body = answer(done)  # the command's own output went to stderr: stdout is the JSON alone
    assert "record-app: good run done" in done.stderr, done.stderr
    assert body["command"]["status"] == 3 and body["ok"] is False, body
    assert all(v["ok"] for v in body["rules"]), body["rules"]
    # Without a contract: only what was recorded, and the command's status.
    plain = record(tmp_path, command=app_command("good", "4"), contract=None)
    assert plain.returncode == 4, plain.stderr
    assert plain.stdout.startswith("record-app: good run done\nrecorded 6 span(s), 3 log line(s)"), plain.stdout
    assert "contract" not in plain.stdout and "exited with status 4" in plain.stdout, plain.stdout


def test_a_missing_span_and_route_are_counted_as_absent(tmp_path):
    contract = '[[span]]\nroute = "/orders/{id}"\n\n[[span]]\nname = "checkout"\nmin_count = 4\n'
    done = record(tmp_path, "--format", "json", command=app_command("good"), contract=contract)
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}"
    by_rule = verdicts(answer(done))
    assert by_rule["span[0]"]["summary"] == '0 spans of route "/orders/{id}" recorded; at least 1 expected', by_rule
    assert by_rule["span[1]"]["summary"] == '3 spans named "checkout" recorded; at least 4 expected', by_rule


def test_out_keeps_a_data_folder_a_server_opens(tmp_path):
    out = tmp_path / "recorded"
    done = record(tmp_path, "--out", str(out), command=app_command("good"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert f"kept in {out}" in done.stdout, done.stdout
    srv = SightlineServer(out, tmp_path / "logs", name="recorded").start()
    try:
        rows = srv.rows("SELECT name, count(*) AS n FROM spans GROUP BY name ORDER BY name")
        assert rows == [{"name": "charge", "n": 3}, {"name": "checkout", "n": 3}], rows
        assert srv.rows("SELECT count(*) AS n FROM logs WHERE trace_id IS NOT NULL")[0]["n"] == 3
    finally:
        _cleanup(srv)


def test_without_out_nothing_is_left_behind(tmp_path):
    import tempfile
    before = {p.name for p in Path(tempfile.gettempdir()).glob("sightline-record-*")}
    done = record(tmp_path, command=app_command("good"), contract=None)
    assert done.returncode == 0, done.stderr
    after = {p.name for p in Path(tempfile.gettempdir()).glob("sightline-record-*")}
    assert after <= before, f"left behind: {after - before}"


@pytest.mark.parametrize("contract, named", [
    ('[[span]]\nnmae = "checkout"\n', "span[0]"),
    ('[[span]]\nname = "checkout"\nmin_count = "three"\n', "span[0].min_count"),
    ('[[span]]\nname = "a"\nroute = "/a"\n', "span[0]: give name or route, not both"),
    ('[[span]]\nattributes = ["x"]\n', "span[0]: give the span's name or its route"),
    ("[logs]\ntrace_context_min = 90\n", "logs.trace_context_min: 90 is not a share"),
    ("[forbid]\nmax_distinct_values = 0\n", "forbid.max_distinct_values"),
    ("[forbidden]\norphans = false\n", "forbidden"),
])
def test_an_invalid_contract_is_refused_before_the_command_runs(tmp_path, contract, named):
    marker = tmp_path / "ran"
    done = record(tmp_path, command=["touch", str(marker)], contract=contract)
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert "invalid contract file" in done.stderr and named in done.stderr, done.stderr
    assert not marker.exists(), "the command ran despite the invalid contract"


def test_a_command_that_cannot_start_is_exit_2(tmp_path):
    done = record(tmp_path, command=["no-such-program-anywhere"], contract=None)
    assert done.returncode == 2, f"{done.stdout}\n{done.stderr}"
    assert 'cannot run "no-such-program-anywhere"' in done.stderr, done.stderr
    missing = subprocess.run([sightline_bin(), "record", "--contract", str(tmp_path / "absent.toml"), "--", "true"],
                             capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert missing.returncode == 2 and "cannot read contract file" in missing.stderr, missing.stderr
    bare = subprocess.run([sightline_bin(), "record"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert bare.returncode == 2 and "COMMAND" in bare.stderr, bare.stderr


def test_the_teams_redaction_rules_apply_with_config(tmp_path):
    """--config brings a server config's [redaction] (here a pattern of the app's order ids) and
    nothing else: its addresses, data folder and tokens do not apply to the recording."""
    config = tmp_path / "sightline.toml"
    config.write_text('listen = "127.0.0.1:1"\ndata_dir = "/nonexistent/elsewhere"\n\n'
                      '[auth]\ntokens = [{ name = "ci", token = "a-token-of-at-least-32-characters-long", scopes = ["ingest"] }]\n\n'
                      '[redaction]\npatterns = [{ name = "order-id", regex = "o-[0-9]+" }]\n')
    out = tmp_path / "recorded"
    done = record(tmp_path, "--config", str(config), "--out", str(out), command=app_command("good"))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    srv = SightlineServer(out, tmp_path / "logs", name="redacted").start()
    try:
        ids = [json.loads(r["attributes"])["order.id"] for r in srv.rows(
            "SELECT attributes FROM spans WHERE name = 'checkout'")]
        assert ids == ["[REDACTED:order-id]"] * 3, ids
    finally:
        _cleanup(srv)
    bad = tmp_path / "bad.toml"
    bad.write_text('[redaction]\npatterns = [{ name = "broken", regex = "(" }]\n')
    refused = record(tmp_path, "--config", str(bad), command=["true"], contract=None)
    assert refused.returncode == 2 and "redaction" in refused.stderr, refused.stderr
