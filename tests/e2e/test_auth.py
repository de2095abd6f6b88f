"""Access: tokens with scopes on both receivers and on the UI and API, browser sessions after a
login, and a server that will not listen beyond loopback without tokens."""

from __future__ import annotations

import subprocess
import time
import uuid

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from playwright.sync_api import expect

from conftest import server_env, sightline_bin

INGEST = "ingest-token-7f3a9c1e5b2d4a60"
READ = "read-token-2b8e6d4f0a1c3e57"
ADMIN = "admin-token-9d1f3b5a7c2e4f68"

CONFIG = f"""
[[auth.tokens]]
name = "collector"
token = "{INGEST}"
scopes = ["ingest"]

[[auth.tokens]]
name = "oncall"
token = "{READ}"
scopes = ["read"]

[[auth.tokens]]
name = "ops"
token = "{ADMIN}"
scopes = ["admin"]
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def span_body(service: str) -> dict:
    now = time.time_ns()
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{"traceId": uuid.uuid4().hex, "spanId": uuid.uuid4().hex[:16], "name": "op",
                                   "kind": 2, "startTimeUnixNano": str(now), "endTimeUnixNano": str(now + 1000)}]}]}]}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A server with tokens, listening on every interface (reached here over loopback)."""
    from conftest import SightlineServer, _cleanup
    base = tmp_path_factory.mktemp("auth")
    (base / "auth.toml").write_text(CONFIG)
    server = SightlineServer(base / "data", base / "logs", name="guarded", address_flags=False, extra_args=[
        "--config", str(base / "auth.toml"), "--otlp-grpc", "0.0.0.0:0", "--otlp-http", "0.0.0.0:0",
        "--listen", "0.0.0.0:0"]).start()
    yield server
    _cleanup(server)


def local(server, key: str) -> str:
    """The server's address for `key` reached over loopback (it listens on 0.0.0.0)."""
    return "127.0.0.1:" + server.ready[key].rsplit(":", 1)[1]


def test_open_access_beyond_loopback_is_refused(tmp_path):
    out = subprocess.run([sightline_bin(), "serve", "--data-dir", str(tmp_path / "d"), "--listen", "0.0.0.0:0",
                          "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"],
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=server_env({}),
                         cwd=tmp_path)
    assert out.returncode != 0
    assert "refusing to listen on 0.0.0.0:0 (--listen) without access tokens" in out.stderr, out.stderr


def test_receivers_need_an_ingest_token(guarded):
    url = f"http://{local(guarded, 'otlp_http')}/v1/traces"
    none = requests.post(url, json=span_body("nobody"), timeout=10)
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized", none.text
    assert "ingest scope" in none.json()["error"]["message"] and none.headers.get("WWW-Authenticate")
    wrong = requests.post(url, json=span_body("reader"), headers=bearer(READ), timeout=10)
    assert wrong.status_code == 403 and "lacks the ingest scope" in wrong.json()["error"]["message"], wrong.text
    assert requests.post(url, json=span_body("raw"), headers=bearer(INGEST), timeout=10).status_code == 200

    # The real OpenTelemetry exporters, with their headers, over HTTP and gRPC.
    for exporter, service in [
        (HttpSpanExporter(endpoint=url, headers={"authorization": f"Bearer {INGEST}"}), "sdk-http"),
        (GrpcSpanExporter(endpoint=local(guarded, "otlp_grpc"), insecure=True,
                          headers=(("authorization", f"Bearer {ADMIN}"),)), "sdk-grpc"),
    ]:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("auth-test").start_as_current_span("checkout"):
            pass
        provider.shutdown()
    rows = requests.post(f"http://{local(guarded, 'listen')}/api/v1/query", headers=bearer(READ), timeout=10,
                         json={"sql": "SELECT DISTINCT service_name FROM spans ORDER BY 1"}).json()["rows"]
    assert [r[0] for r in rows] == ["raw", "sdk-grpc", "sdk-http"], rows

    # gRPC without a token: UNAUTHENTICATED, and nothing stored.
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
    with grpc.insecure_channel(local(guarded, "otlp_grpc")) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED and "ingest scope" in info.value.details()


def test_api_and_metrics_need_a_read_token_and_health_stays_open(guarded):
    base = f"http://{local(guarded, 'listen')}"
    sql = {"sql": "SELECT 1 AS one"}
    assert requests.post(f"{base}/api/v1/query", json=sql, timeout=10).status_code == 401
    forbidden = requests.post(f"{base}/api/v1/query", json=sql, headers=bearer(INGEST), timeout=10)
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden", forbidden.text
    for token in (READ, ADMIN):
        assert requests.post(f"{base}/api/v1/query", json=sql, headers=bearer(token), timeout=10).json()["rows"] == [[1]]
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{base}/metrics", headers=bearer(READ), timeout=10).status_code == 200
    assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
    # A page without a session goes to the login; the SQL page's query never runs.
    page = requests.get(f"{base}/query?sql=SELECT%201", allow_redirects=False, timeout=10)
    assert page.status_code == 303 and page.headers["Location"] == "/login?next=%2Fquery%3Fsql%3DSELECT%25201"


def test_login_gives_a_locked_down_session_cookie_and_logout_ends_it(guarded):
    base = f"http://{local(guarded, 'listen')}"
    session = requests.Session()
    refused = session.post(f"{base}/login", data={"token": INGEST, "next": "/logs"}, allow_redirects=False, timeout=10)
    assert refused.status_code == 401 and "lacks the read scope" in refused.text
    signed = session.post(f"{base}/login", data={"token": READ, "next": "/logs"}, allow_redirects=False, timeout=10)
    assert signed.status_code == 303 and signed.headers["Location"] == "/logs", signed.text
    cookie = signed.headers["Set-Cookie"]
    for part in ("sightline_session=", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert part in cookie, cookie
    assert "Secure" not in cookie, "Secure is for TLS; over plain HTTP the browser would drop the cookie"
    assert session.get(f"{base}/logs", timeout=10).status_code == 200
    assert session.post(f"{base}/api/v1/query", json={"sql": "SELECT 2"}, timeout=10).json()["rows"] == [[2]]
    # Only this server's paths are followed after a login.
    away = session.post(f"{base}/login", data={"token": READ, "next": "//evil.example/"}, allow_redirects=False,
                        timeout=10)
    assert away.headers["Location"] == "/"
    session.get(f"{base}/logout", timeout=10)
    assert session.get(f"{base}/", allow_redirects=False, timeout=10).status_code == 303


def test_a_browser_signs_in_and_lands_where_it_was_going(guarded, page):
    base = f"http://{local(guarded, 'listen')}"
    page.goto(f"{base}/logs?range=15m")
    expect(page).to_have_url(f"{base}/login?next=%2Flogs%3Frange%3D15m")
    page.fill("#token", "not-a-token-at-all-0000")
    page.click("#login-form button[type=submit]")
    expect(page.locator(".error")).to_contain_text("unknown or lacks the read scope")
    page.fill("#token", READ)
    page.click("#login-form button[type=submit]")
    expect(page).to_have_url(f"{base}/logs?range=15m")
    expect(page.locator("main h1")).to_have_text("Logs")
    cookie = next(c for c in page.context.cookies() if c["name"] == "sightline_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax", cookie
    # Signing out from the header ends the session: the next page asks for the token again.
    page.click("header a.sign-out")
    expect(page).to_have_url(f"{base}/login")
    page.goto(f"{base}/logs?range=15m")
    expect(page).to_have_url(f"{base}/login?next=%2Flogs%3Frange%3D15m")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A server with tokens and a self-signed certificate for 127.0.0.1 (made with openssl)."""
    from conftest import SightlineServer, _cleanup
    base = tmp_path_factory.mktemp("tls")
    cert, key = base / "cert.pem", base / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=sightline-test",
         "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    (base / "auth.toml").write_text(CONFIG + f'\n[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    server = SightlineServer(base / "data", base / "logs", name="tls",
                             extra_args=["--config", str(base / "auth.toml")]).start()
    server.cert = str(cert)
    yield server
    _cleanup(server)


def test_tls_on_every_listener_with_secure_session_cookies(tls_server):
    cert = tls_server.cert
    assert tls_server.ready["tls"] is True
    api = f"https://{tls_server.ready['listen']}"
    assert requests.get(f"{api}/healthz", verify=cert, timeout=10).json()["ready"] is True
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://{tls_server.ready['listen']}/healthz", timeout=10)

    # OTLP/HTTP over HTTPS (the body the SDK's exporter sends: protobuf), and the SDK's gRPC
    # exporter with TLS, trusting the server's certificate.
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2
    from opentelemetry.proto.trace.v1 import trace_pb2
    now = time.time_ns()
    export = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[common_pb2.KeyValue(
            key="service.name", value=common_pb2.AnyValue(string_value="tls-http"))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=[trace_pb2.Span(
            trace_id=uuid.uuid4().bytes, span_id=uuid.uuid4().bytes[:8], name="checkout", kind=2,
            start_time_unix_nano=now, end_time_unix_nano=now + 1000)])])])
    sent = requests.post(f"https://{tls_server.ready['otlp_http']}/v1/traces", data=export.SerializeToString(),
                         headers={**bearer(INGEST), "Content-Type": "application/x-protobuf"}, verify=cert,
                         timeout=10)
    assert sent.status_code == 200, sent.content
    for exporter, service in [
        (GrpcSpanExporter(endpoint=f"https://{tls_server.ready['otlp_grpc']}",
                          credentials=grpc.ssl_channel_credentials(open(cert, "rb").read()),
                          headers=(("authorization", f"Bearer {INGEST}"),)), "tls-grpc"),
    ]:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("tls-test").start_as_current_span("checkout"):
            pass
        provider.shutdown()
    rows = requests.post(f"{api}/api/v1/query", headers=bearer(READ), verify=cert, timeout=10,
                         json={"sql": "SELECT DISTINCT service_name FROM spans ORDER BY 1"}).json()["rows"]
    assert [r[0] for r in rows] == ["tls-grpc", "tls-http"], rows

    signed = requests.post(f"{api}/login", data={"token": READ}, allow_redirects=False, verify=cert, timeout=10)
    assert signed.status_code == 303 and "Secure" in signed.headers["Set-Cookie"], signed.headers
