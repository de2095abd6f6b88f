"""Per-record limits: attributes above the limit are dropped and long values cut with a marker;
both are counted in Sightline's own metrics, and the record itself is kept."""

import json
import subprocess
import time
import uuid

from conftest import sightline_bin


def span_body(service: str, attributes: list[dict], name: str = "op") -> dict:
    now = time.time_ns()
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{
            "traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": name, "kind": 2,
            "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000), "attributes": attributes,
        }]}],
    }]}


def attr(key: str, value: str) -> dict:
    return {"key": key, "value": {"stringValue": value}}


def test_configured_limits_drop_and_cut_but_keep_the_record(sightline_factory, tmp_path):
    config = tmp_path / "limits.toml"
    config.write_text("[limits]\nmax_attributes_per_record = 10\nmax_attribute_value_bytes = 100\n")
    server = sightline_factory(extra_args=["--config", str(config)], name="limits").start()
    attributes = [attr("big", "x" * 5_000_000)] + [attr(f"k{i:03}", "v") for i in range(99)]
    resp = server.post_otlp("/v1/traces", span_body("limited", attributes, name="n" * 300))
    assert resp.status_code == 200 and "partialSuccess" not in resp.json(), resp.text

    row = server.rows("SELECT name, attributes FROM spans WHERE service_name = 'limited'")[0]
    stored = json.loads(row["attributes"])
    assert len(stored) == 10
    assert stored["big"] == "x" * 100 + "…[truncated 4999900 bytes]"
    assert row["name"].startswith("n" * 100) and "truncated 200 bytes" in row["name"]
    assert server.metric("sightline_ingest_attributes_dropped_total") == 90
    assert server.metric("sightline_ingest_values_truncated_total") == 2


def test_default_limit_cuts_a_ten_megabyte_value(sightline):
    service = f"bigvalue-{uuid.uuid4().hex[:6]}"
    resp = sightline.post_otlp("/v1/traces", span_body(service, [attr("payload", "y" * 10_000_000)]))
    assert resp.status_code == 200, resp.text
    value = sightline.rows(
        f"SELECT json_get_str(attributes, 'payload') AS v FROM spans WHERE service_name = '{service}'")[0]["v"]
    assert value.startswith("y" * 65536) and value.endswith("…[truncated 9934464 bytes]")
    assert sightline.get("/healthz").status_code == 200


def test_a_limit_too_small_is_refused_at_start(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text("[limits]\nmax_attribute_value_bytes = 3\n")
    out = subprocess.run(
        [sightline_bin(), "serve", "--config", str(config), "--data-dir", str(tmp_path / "data"),
         "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "limits.max_attribute_value_bytes must be at least 16" in out.stderr, out.stderr
    assert str(config) in out.stderr, out.stderr
