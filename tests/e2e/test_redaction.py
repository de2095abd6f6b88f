"""Redaction at ingest, end to end: secrets sent through every receiver never reach disk or an answer.

One server runs the default rules plus the opt-in `emails` and a custom pattern (`customer-id`,
`CUST-[0-9]{8}`). The same kinds of secret are sent three times, each time with values of its own,
through OTLP/HTTP protobuf, OTLP/HTTP JSON and OTLP/gRPC: spans (resource attributes, span names,
attributes, status messages, exception events with messages and stack traces, links), logs (text
bodies, structured bodies, attributes, exception attributes) and metrics (data point
attributes). Then maintenance flushes everything to segments, and:

- no raw secret is in any cell of any column of `spans`, `logs`, `metrics` or `span_rollups`, nor
  in the bytes of any file under the data folder (write-ahead log, segments, catalog), nor in the
  decompressed values of any segment (every Parquet file read back by DuckDB), nor in the live
  tail of the logs page; the records themselves are all stored, with the masks in their place;
- a control server with `enabled = false` given the same protobuf export does hold the raw values
  in its log files and its segments, so the searches above would see a leak;
- `/metrics` counts the redactions by service, signal and rule, and the service page shows them;
- `mode = "hash"` with the key from SIGHTLINE_REDACTION_KEY writes `hash:` + 16 hex, equal values
  alike; a config mistake (a bad regex, hash without a key, an unknown rule) is refused at start
  naming the key;
- `sightline redact scan` finds what a server stored while redaction was off, per rule and column,
  with the examples masked, and exits 1; over redacted data it finds nothing and exits 0.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import duckdb
import grpc
import pytest
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from google.protobuf import json_format

from conftest import SightlineServer, _cleanup, sightline_bin
from test_monitor import start_server, write_config
from test_server_config import run_serve_expect_failure, write_toml

RECEIVERS = ["protobuf", "json", "grpc"]
# Test card numbers that pass the Luhn check, one per receiver.
CARDS = {"protobuf": "4111 1111 1111 1111", "json": "5555-5555-5555-4444", "grpc": "3782 822463 10005"}
CONFIG = ('[redaction]\nrules = ["keys", "card_numbers", "jwt", "bearer_tokens", "api_keys", "emails"]\n'
          'patterns = [{ name = "customer-id", regex = "CUST-[0-9]{8}" }]\n')


def b64url(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def secrets_for(receiver: str) -> dict[str, str]:
    """The raw values sent through one receiver, by what they are. Each is unique to it."""
    n = RECEIVERS.index(receiver) + 1
    return {
        "password": f"hunter{n}-{receiver}-pw",
        "db_password": f"pg-{receiver}-s3cr3t",
        "url_password": f"urlpw{n}{receiver}",
        "url_token": f"tok{n}{receiver}inurl",
        "bearer": f"BearerTok{n}{receiver}XYZ123",
        "cookie": f"sid-{receiver}-cookie-77{n}",
        "jwt": f"{b64url({'alg': 'HS256'})}.{b64url({'sub': receiver, 'n': n})}.c2lnbmF0dXJl{receiver}",
        "card": CARDS[receiver],
        "aws": f"AKIA{receiver.upper()[:4].ljust(4, 'Q')}{n}OSFODNN7EXA"[:20],
        "github": "ghp_" + (receiver * 12)[:36],
        "stripe": f"sk_live_{receiver}{n}4eC39HqLyjWDarjt",
        "email": f"jane.{receiver}{n}@shop.example",
        "customer": f"CUST-{n}{n}{n}{n}5678",
        "session": f"session-{receiver}-value-{n}",
        "api_key": f"apikey-{receiver}-{n}-value",
    }


def card_digits(card: str) -> str:
    return re.sub(r"\D", "", card)


def needles(receiver: str) -> list[str]:
    """Every raw value that must not be found, card numbers also without their separators."""
    s = secrets_for(receiver)
    return [*s.values(), card_digits(s["card"])]


def kv(key: str, value) -> common_pb2.KeyValue:
    if isinstance(value, common_pb2.AnyValue):
        return common_pb2.KeyValue(key=key, value=value)
    if isinstance(value, int):
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(int_value=value))
    return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))


def resource(service: str, receiver: str) -> resource_pb2.Resource:
    s = secrets_for(receiver)
    return resource_pb2.Resource(attributes=[kv("service.name", service), kv("service.version", "1.0.0"),
                                             kv("db.password", s["db_password"])])


def traces_request(service: str, receiver: str, now_ns: int) -> trace_service_pb2.ExportTraceServiceRequest:
    s = secrets_for(receiver)
    trace_id = bytes.fromhex(f"{RECEIVERS.index(receiver) + 1:032x}")
    span = trace_pb2.Span(
        trace_id=trace_id, span_id=bytes.fromhex("00000000000000a1"), name=f"POST /checkout card {s['card']}",
        kind=trace_pb2.Span.SPAN_KIND_SERVER, start_time_unix_nano=now_ns - 5_000_000, end_time_unix_nano=now_ns,
        attributes=[
            kv("http.route", "/checkout"), kv("http.request.method", "POST"), kv("http.response.status_code", 500),
            kv("http.request.header.authorization", f"Bearer {s['bearer']}"),
            kv("url.full", f"https://bob:{s['url_password']}@shop.example/checkout?token={s['url_token']}&step=2"),
            kv("http.request.header.cookie", common_pb2.AnyValue(array_value=common_pb2.ArrayValue(
                values=[common_pb2.AnyValue(string_value=s["cookie"])]))),
            kv("user.password", s["password"]),
            kv("enduser.email", s["email"]),
            kv("customer.ref", s["customer"]),
            kv("request.body", json.dumps({"card": s["card"], "note": "gift"})),
            kv("gen_ai.usage.input_tokens", 77),
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR, message=f"token rejected: {s['jwt']}"),
        events=[trace_pb2.Span.Event(name="exception", time_unix_nano=now_ns - 1_000_000, attributes=[
            kv("exception.type", "PaymentError"),
            kv("exception.message", f"charge failed for {s['card']} with password={s['password']}"),
            kv("exception.stacktrace", f"Traceback:\n  File \"pay.py\", line 3\n    key = \"{s['aws']}\"\n"
                                       f"    stripe.api_key = '{s['stripe']}'\nPaymentError"),
        ])],
        links=[trace_pb2.Span.Link(trace_id=trace_id, span_id=bytes.fromhex("00000000000000b2"),
                                   attributes=[kv("link.note", f"pushed with {s['github']}")])],
    )
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource(service, receiver), scope_spans=[trace_pb2.ScopeSpans(spans=[span])])])


def logs_request(service: str, receiver: str, now_ns: int) -> logs_service_pb2.ExportLogsServiceRequest:
    s = secrets_for(receiver)
    structured = common_pb2.AnyValue(kvlist_value=common_pb2.KeyValueList(values=[
        kv("event", "login"), kv("session", s["session"]), kv("email", s["email"])]))
    records = [
        logs_pb2.LogRecord(time_unix_nano=now_ns - 3_000_000, severity_number=17, severity_text="ERROR",
                           body=common_pb2.AnyValue(string_value=f"card {s['card']} declined for {s['email']} ({s['customer']})"),
                           attributes=[kv("api_key", s["api_key"]), kv("exception.type", "Declined"),
                                       kv("exception.message", f"Authorization: Bearer {s['bearer']}")]),
        logs_pb2.LogRecord(time_unix_nano=now_ns - 2_000_000, severity_number=9, body=structured,
                           attributes=[kv("http.request.header.cookie", s["cookie"])]),
        logs_pb2.LogRecord(time_unix_nano=now_ns - 1_000_000, severity_number=9,
                           body=common_pb2.AnyValue(string_value=f"retrying with jwt {s['jwt']} and {s['github']}")),
    ]
    return logs_service_pb2.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource=resource(service, receiver), scope_logs=[logs_pb2.ScopeLogs(log_records=records)])])


def metrics_request(service: str, receiver: str, now_ns: int) -> metrics_service_pb2.ExportMetricsServiceRequest:
    s = secrets_for(receiver)
    point = metrics_pb2.NumberDataPoint(time_unix_nano=now_ns, start_time_unix_nano=now_ns - 60_000_000_000,
                                        as_int=3, attributes=[kv("session.id", s["session"]),
                                                              kv("payer", s["email"])])
    metric = metrics_pb2.Metric(name="checkout.attempts", unit="1", sum=metrics_pb2.Sum(
        data_points=[point], aggregation_temporality=metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True))
    return metrics_service_pb2.ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=resource(service, receiver), scope_metrics=[metrics_pb2.ScopeMetrics(metrics=[metric])])])


def send_all(srv: SightlineServer, receiver: str, service: str = "shop") -> None:
    now_ns = time.time_ns()
    requests_ = [("/v1/traces", traces_request(service, receiver, now_ns)),
                 ("/v1/logs", logs_request(service, receiver, now_ns)),
                 ("/v1/metrics", metrics_request(service, receiver, now_ns))]
    if receiver == "grpc":
        channel = grpc.insecure_channel(srv.otlp_grpc_endpoint)
        try:
            trace_service_pb2_grpc.TraceServiceStub(channel).Export(requests_[0][1], timeout=30)
            logs_service_pb2_grpc.LogsServiceStub(channel).Export(requests_[1][1], timeout=30)
            metrics_service_pb2_grpc.MetricsServiceStub(channel).Export(requests_[2][1], timeout=30)
        finally:
            channel.close()
        return
    for path, message in requests_:
        if receiver == "protobuf":
            resp = srv.post_otlp(path, message.SerializeToString(), content_type="application/x-protobuf")
        else:
            resp = srv.post_otlp(path, otlp_json(message))
        assert resp.status_code == 200, f"{receiver} {path}: {resp.status_code} {resp.text}"


def otlp_json(message) -> str:
    """OTLP/JSON: protobuf's JSON mapping with integer enums and ids as hex, not base64."""
    body = json_format.MessageToDict(message, use_integers_for_enums=True)

    def fix(value):
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("traceId", "spanId", "parentSpanId") and isinstance(item, str):
                    value[key] = base64.b64decode(item).hex()
                else:
                    fix(item)
        elif isinstance(value, list):
            for item in value:
                fix(item)
    fix(body)
    return json.dumps(body)


def found_in(text: str, receivers=RECEIVERS) -> list[str]:
    return [n for r in receivers for n in needles(r) if n in text]


def all_cells(srv: SightlineServer, table: str) -> str:
    result = srv.query(f"SELECT * FROM {table}")
    assert not result["truncated"]
    return json.dumps(result["rows"])


@pytest.fixture(scope="module")
def redacting(tmp_path_factory):
    base = tmp_path_factory.mktemp("redaction")
    srv = start_server(base, "redacting", write_config(base / "sightline.toml", CONFIG))
    tail: list[str] = []
    stop, ready = threading.Event(), threading.Event()

    def follow() -> None:
        # The logs page's live tail, subscribed before anything is sent: the stream subscribes
        # before it answers, and its first event is `ready`.
        with requests.get(f"{srv.api_url}/logs/stream", stream=True, timeout=(30, 60)) as resp:
            for line in resp.iter_lines(decode_unicode=True):
                if line == "event: ready":
                    ready.set()
                if line:
                    tail.append(line)
                if stop.is_set():
                    return

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    assert ready.wait(30), "the live tail never said it was ready"
    for receiver in RECEIVERS:
        send_all(srv, receiver)
    maintenance = srv.session.post(f"{srv.api_url}/api/v1/admin/maintenance", timeout=60)
    assert maintenance.status_code == 200, maintenance.text
    # Every one of the nine log records reaches the tail as a table row.
    srv.wait_for(lambda: sum(l.count("<tr") for l in tail) >= 9, timeout=15, what="the live tail's nine lines")
    stop.set()
    yield srv, maintenance.json(), tail
    _cleanup(srv)


def test_every_record_is_stored_with_the_masks_in_place(redacting):
    srv, maintenance, _ = redacting
    assert maintenance["flush"]["segments_written"] >= 3, maintenance
    counts = {t: srv.rows(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in ("spans", "logs", "metrics")}
    assert counts == {"spans": 3, "logs": 9, "metrics": 3}, counts
    spans = srv.rows("SELECT name, status_message, attributes, resource_attributes, events, links, "
                     "exception_message, http_route, http_status_code FROM spans ORDER BY trace_id")
    for span in spans:
        assert span["name"] == "POST /checkout card [REDACTED:card_numbers]", span
        assert span["status_message"] == "token rejected: [REDACTED:jwt]", span
        assert span["http_route"] == "/checkout" and span["http_status_code"] == 500
        attrs = json.loads(span["attributes"])
        assert attrs["http.request.header.authorization"] == "[REDACTED:keys]"
        assert attrs["user.password"] == "[REDACTED:keys]"
        assert attrs["http.request.header.cookie"] == "[REDACTED:keys]"
        assert attrs["enduser.email"] == "[REDACTED:emails]"
        assert attrs["customer.ref"] == "[REDACTED:customer-id]"
        assert attrs["gen_ai.usage.input_tokens"] == 77, "a count under a sensitive-looking key is kept"
        assert attrs["url.full"] == ("https://bob:[REDACTED:keys]@shop.example/checkout?token=[REDACTED:keys]&step=2")
        assert json.loads(attrs["request.body"])["card"] == "[REDACTED:card_numbers]"
        assert json.loads(span["resource_attributes"])["db.password"] == "[REDACTED:keys]"
        assert span["exception_message"] == "charge failed for [REDACTED:card_numbers] with password=[REDACTED:keys]"
        assert "[REDACTED:api_keys]" in span["events"] and "[REDACTED:api_keys]" in span["links"]
    bodies = [r["body"] for r in srv.rows("SELECT body FROM logs ORDER BY time")]
    assert sum("card [REDACTED:card_numbers] declined for [REDACTED:emails] ([REDACTED:customer-id])" == b
               for b in bodies) == 3, bodies
    assert sum("retrying with jwt [REDACTED:jwt] and [REDACTED:api_keys]" == b for b in bodies) == 3, bodies


@pytest.mark.parametrize("table", ["spans", "logs", "metrics", "span_rollups"])
def test_no_column_of_any_table_holds_a_secret(redacting, table):
    srv, _, _ = redacting
    cells = all_cells(srv, table)
    assert found_in(cells) == [], f"{table} holds raw secrets"


def test_no_file_on_disk_holds_a_secret(redacting):
    srv, _, _ = redacting
    files = [p for p in Path(srv.data_dir).rglob("*") if p.is_file()]
    wal = [p for p in files if "wal" in p.parts or p.suffix == ".wal"]
    segments = [p for p in files if p.suffix == ".parquet"]
    assert wal and segments, f"expected log files and segments under {srv.data_dir}: {files}"
    for path in files:
        data = path.read_bytes()
        leaked = [n for r in RECEIVERS for n in needles(r) if n.encode() in data]
        assert leaked == [], f"{path} holds {leaked}"
    for path in segments:
        rows = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
        assert rows, path
        assert found_in(json.dumps(rows, default=str)) == [], f"{path}'s values hold raw secrets"


def test_the_live_tail_sees_only_redacted_lines(redacting):
    _, _, tail = redacting
    events = "\n".join(tail)
    assert "[REDACTED:card_numbers]" in events, events[:2000]
    assert found_in(events) == []


def test_metrics_count_by_service_signal_and_rule_and_the_service_page_shows_it(redacting):
    srv, _, _ = redacting
    metrics = srv.metrics()
    by = {(dict(labels)["signal"], dict(labels)["rule"]): v for (name, labels), v in metrics.items()
          if name == "sightline_redactions_total" and dict(labels).get("service") == "shop"}
    # Per receiver, spans: keys 6 (db.password, authorization, url password and token, cookie,
    # user.password) + 2 in the exception (password=, and stripe.api_key = '…', where the key
    # rule finds the value before the Stripe shape does); card 3 (name, request.body,
    # exception); jwt 1; emails 1; customer-id 1; api keys 2 (AWS in the stack trace, GitHub).
    assert by[("spans", "keys")] == 3 * 8, by
    assert by[("spans", "card_numbers")] == 3 * 3, by
    assert by[("spans", "jwt")] == 3 and by[("spans", "emails")] == 3 and by[("spans", "customer-id")] == 3, by
    assert by[("spans", "api_keys")] == 3 * 2, by
    # Logs: db.password, api_key, the Authorization header in the exception, session, cookie.
    assert by[("logs", "keys")] == 3 * 5, by
    assert by[("logs", "card_numbers")] == 3 and by[("logs", "jwt")] == 3, by
    assert by[("logs", "emails")] == 3 * 2, by
    # Metrics: db.password and session.id (keys), payer (email).
    assert by[("metrics", "keys")] == 3 * 2 and by[("metrics", "emails")] == 3, by
    page = srv.get("/services/shop")
    assert page.status_code == 200
    section = re.search(r'<section id="redaction" data-service="shop" data-total="(\d+)">(.*?)</section>', page.text, re.S)
    assert section, page.text[:3000]
    assert int(section.group(1)) == int(sum(by.values())), (section.group(1), by)
    rows = dict(re.findall(r'data-rule="([^"]+)" data-count="(\d+)"', section.group(2)))
    assert int(rows["keys"]) == by[("spans", "keys")] + by[("logs", "keys")] + by[("metrics", "keys")], rows


def test_a_server_without_redaction_keeps_the_values_where_the_searches_look(tmp_path):
    """The control: with redaction off, the raw values are in the log files and the segments, so
    the searches above are able to see a leak."""
    srv = start_server(tmp_path, "open", write_config(tmp_path / "open.toml", "[redaction]\nenabled = false\n"))
    try:
        send_all(srv, "protobuf")
        secrets = secrets_for("protobuf")
        wal = b"".join(p.read_bytes() for p in Path(srv.data_dir).rglob("*") if p.is_file())
        assert secrets["password"].encode() in wal and secrets["jwt"].encode() in wal
        assert srv.session.post(f"{srv.api_url}/api/v1/admin/maintenance", timeout=60).status_code == 200
        segments = [p for p in Path(srv.data_dir).rglob("*.parquet")]
        values = json.dumps([duckdb.sql(f"SELECT * FROM read_parquet('{p}')").fetchall() for p in segments], default=str)
        assert secrets["password"] in values and secrets["card"] in values and secrets["email"] in values
        assert found_in(all_cells(srv, "spans"), ["protobuf"]), "redaction is off: the values are stored"
    finally:
        _cleanup(srv)


def test_hash_mode_with_the_key_from_the_environment(tmp_path):
    config = write_config(tmp_path / "hash.toml", CONFIG + 'mode = "hash"\n')
    srv = SightlineServer(tmp_path / "hash-data", tmp_path / "logs", extra_args=["--config", str(config)],
                          name="hash", env={"SIGHTLINE_REDACTION_KEY": "a key of more than sixteen bytes"}).start()
    try:
        send_all(srv, "json")
        send_all(srv, "json", service="shop-2")  # the same values again
        rows = srv.rows("SELECT service_name, attributes FROM spans ORDER BY service_name")
        hashed = [json.loads(r["attributes"])["user.password"] for r in rows]
        assert all(re.fullmatch(r"hash:[0-9a-f]{16}", h) for h in hashed), hashed
        assert hashed[0] == hashed[1], "equal values hash alike, so they stay joinable"
        other = json.loads(rows[0]["attributes"])["http.request.header.authorization"]
        assert other != hashed[0] and re.fullmatch(r"hash:[0-9a-f]{16}", other)
        assert found_in(all_cells(srv, "spans"), ["json"]) == []
    finally:
        _cleanup(srv)


@pytest.mark.parametrize("text, key", [
    ('[redaction]\npatterns = [{ name = "order", regex = "ORD-[0-9" }]\n', "redaction.patterns[0].regex"),
    ('[redaction]\nmode = "hash"\n', "redaction.hash_key"),
    ('[redaction]\nrules = ["keys", "passport_numbers"]\n', "redaction.rules"),
    ('[redaction]\nmode = "scramble"\n', "mode"),
])
def test_a_redaction_mistake_is_refused_at_start_naming_the_key(tmp_path, text, key):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", text)
    result = run_serve_expect_failure(cwd)
    assert key in result.stderr, f"stderr does not name {key!r}:\n{result.stderr}"


def scan(srv: SightlineServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sightline_bin(), "redact", "scan", "--url", srv.api_url, *args], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_redact_scan_finds_what_was_stored_before_the_rules(tmp_path):
    data = tmp_path / "scan-data"
    off = write_config(tmp_path / "off.toml", "[redaction]\nenabled = false\n")
    srv = SightlineServer(data, tmp_path / "logs", extra_args=["--config", str(off)], name="scan-off").start()
    try:
        send_all(srv, "protobuf")
    finally:
        _cleanup(srv)
    on = write_config(tmp_path / "on.toml", CONFIG)
    srv = SightlineServer(data, tmp_path / "logs", extra_args=["--config", str(on)], name="scan-on").start()
    try:
        send_all(srv, "json")  # redacted as it arrives: the scan must not count it
        result = scan(srv, "--since", "1h", "--json")
        assert result.returncode == 1, result.stderr
        report = json.loads(result.stdout)
        assert report["rows_scanned"] == {"spans": 2, "logs": 6, "metrics": 2}, report["rows_scanned"]
        found = {(f["rule"], f["table"], f["column"]): f for f in report["findings"]}
        assert found[("keys", "spans", "attributes")]["rows"] == 1, found.keys()
        assert found[("card_numbers", "spans", "name")]["count"] == 1
        assert found[("card_numbers", "logs", "body")]["count"] == 1
        assert found[("jwt", "spans", "status_message")]["count"] == 1
        assert found[("api_keys", "spans", "exception_stacktrace")]["count"] == 1, found.keys()
        assert found[("keys", "spans", "exception_stacktrace")]["count"] == 1, found.keys()
        assert found[("emails", "metrics", "attributes")]["count"] == 1
        assert found[("customer-id", "logs", "body")]["count"] == 1
        assert found[("keys", "spans", "resource_attributes")]["count"] == 1
        assert found_in(result.stdout) == [], "the report shows the examples masked"
        example = found[("card_numbers", "spans", "name")]["examples"][0]
        assert example == "41…11 (19 characters)", example
        table = scan(srv, "--since", "1h")
        assert table.returncode == 1
        assert "still match" in table.stdout and "spans.attributes" in table.stdout, table.stdout
        assert found_in(table.stdout) == []
    finally:
        _cleanup(srv)


def test_redact_scan_of_redacted_data_finds_nothing(redacting):
    srv, _, _ = redacting
    result = scan(srv, "--since", "1h")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Nothing stored matches the redaction rules." in result.stdout, result.stdout
    assert "Scanned 3 spans, 9 log records and 3 metric points" in result.stdout, result.stdout
