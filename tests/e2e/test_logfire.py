"""Pydantic Logfire SDK -> Sightline.

Logfire sends everything as spans: a `logfire.span(...)` is a span whose
message (`logfire.msg`) is the formatted template, and `logfire.info(...)` etc.
are zero-length "log-spans" (`logfire.span_type = "log"`, level in
`logfire.level_num`). Sightline stores the span in `spans` with its message in
the `message` column and every log-span as a record in `logs`, attached to the
span it was emitted in.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import APPS_DIR


@pytest.fixture(scope="module")
def pipeline(sightline) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LOGFIRE_"))}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = sightline.otlp_http_url
    proc = subprocess.run([sys.executable, str(APPS_DIR / "logfire_pipeline.py")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"logfire script failed:\n{proc.stdout}\n{proc.stderr}"
    # logfire reports failed exports on stderr; any such line means lost data.
    assert "Failed to export" not in proc.stderr, proc.stderr
    ids = json.loads(proc.stdout.strip().splitlines()[-1])
    sightline.wait_rows(
        f"SELECT span_id FROM spans WHERE trace_id = '{ids['trace_id']}'", lambda rows: len(rows) >= 1)
    sightline.wait_rows(
        f"SELECT body FROM logs WHERE trace_id = '{ids['trace_id']}'", lambda rows: len(rows) >= 2)
    return ids


def test_span_has_message(sightline, pipeline):
    rows = sightline.rows(
        "SELECT span_id, parent_span_id, name, message, kind, status, service_name, service_version, environment, "
        "scope_name, start_time, end_time "
        f"FROM spans WHERE trace_id = '{pipeline['trace_id']}'"
    )
    # Only the real span: the two log-spans are not spans.
    assert len(rows) == 1, rows
    span = rows[0]
    assert span["span_id"] == pipeline["span_id"]
    assert span["parent_span_id"] is None
    assert span["name"] == "load batch {batch_id}"
    assert span["message"] == "load batch 7"
    assert span["kind"] == "internal"
    assert span["status"] == "unset"
    assert span["service_name"] == "pipeline"
    assert span["service_version"] == "0.9.0"
    assert span["environment"] == "test"
    assert span["scope_name"] == "logfire"

    rows = sightline.rows(
        f"SELECT json_get_int(attributes, 'batch_id') AS batch_id FROM spans WHERE span_id = '{pipeline['span_id']}'"
    )
    assert rows == [{"batch_id": 7}]


def test_log_spans_become_logs(sightline, pipeline):
    logs = sightline.rows(
        "SELECT time, trace_id, span_id, severity, severity_number, body, service_name, environment, "
        "json_get_int(attributes, 'n') AS n, json_get_int(attributes, 'row') AS row "
        f"FROM logs WHERE trace_id = '{pipeline['trace_id']}' ORDER BY time"
    )
    assert [(l["body"], l["severity"]) for l in logs] == [("loaded 42 rows", "info"), ("bad row 3", "error")], logs
    info, error = logs
    for log in logs:
        assert log["trace_id"] == pipeline["trace_id"]
        # The log belongs to the span it was emitted in.
        assert log["span_id"] == pipeline["span_id"]
        assert log["service_name"] == "pipeline"
        assert log["environment"] == "test"
    assert info["severity_number"] == 9
    assert error["severity_number"] == 17
    assert info["n"] == 42
    assert error["row"] == 3

    span = sightline.rows(f"SELECT start_time, end_time FROM spans WHERE span_id = '{pipeline['span_id']}'")[0]
    for log in logs:
        # RFC 3339 with 9 fractional digits in UTC compares correctly as text.
        assert span["start_time"] <= log["time"] <= span["end_time"]


def test_log_spans_in_trace_view(sightline, pipeline):
    resp = sightline.get(f"/api/v1/traces/{pipeline['trace_id']}")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [s["name"] for s in body["spans"]] == ["load batch {batch_id}"]
    assert body["spans"][0]["message"] == "load batch 7"
    assert [l["body"] for l in body["logs"]] == ["loaded 42 rows", "bad row 3"]
