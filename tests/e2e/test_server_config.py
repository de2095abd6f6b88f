"""`sightline serve` configuration and the behaviour it controls.

- sightline.toml (in the working folder, or named by --config / SIGHTLINE_CONFIG), and the
  precedence flags > SIGHTLINE_* env > file > defaults, seen through where the data lands, how
  soon it is flushed, which addresses are bound and which body size is refused; a relative data
  folder (the default ./sightline-data is one) stays queryable once rows are in segments;
- a file with an unknown key is refused at start, naming the file;
- a full buffer ([storage] max_buffer_bytes): 503 + Retry-After over HTTP, UNAVAILABLE over gRPC,
  nothing of the refused request kept, the server up, the refusals counted in /metrics;
- a torn or corrupt write-ahead log tail: dropped and reported, acknowledged rows kept once;
- OTLP/gRPC with gzip from the Python SDK exporter;
- the flush of the buffer into Parquet segments, and restarts after it;
- [query] memory_limit_bytes and timeout.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import server_env, sightline_bin, wait_for

TAIL_DROPPED = "write-ahead log tail dropped: it was torn or corrupt"
WAL_MAGIC = b"SLWAL\x00\x01\n"
FLUSH_TIMEOUT_S = 15.0  # flush_interval 1s, checked every 0.5 s: a segment is due within ~1.5 s


# ----------------------------------------------------------------- helpers


def hex_id(n: int) -> str:
    return os.urandom(n).hex()


def span_at(name: str, start_ns: int, dur_ns: int = 1_000_000, **attributes: str) -> dict:
    return {"traceId": hex_id(16), "spanId": hex_id(8), "name": name, "kind": 2,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(start_ns + dur_ns),
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]}


def traces_body(service: str, spans: list[dict]) -> dict:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "e2e.config"}, "spans": spans}],
    }]}


def fixed_start_ns(seconds_ago: int = 120) -> int:
    """A recent timestamp (the spans of one batch are microseconds apart from it)."""
    return time.time_ns() - seconds_ago * 10**9


def send_spans(srv, service: str, n: int, start_ns: int | None = None, **attributes: str) -> set[str]:
    """POST n spans over OTLP/HTTP JSON; they must be acknowledged. Returns their span ids."""
    t0 = start_ns if start_ns is not None else fixed_start_ns()
    spans = [span_at(f"op-{i}", t0 + i * 1000, **attributes) for i in range(n)]
    resp = srv.post_otlp("/v1/traces", traces_body(service, spans))
    assert resp.status_code == 200, f"export refused ({resp.status_code}): {resp.text}"
    assert not resp.json().get("partialSuccess"), resp.text
    return {s["spanId"] for s in spans}


def span_counts(srv, service: str) -> dict[str, int]:
    rows = srv.rows(f"SELECT span_id, count(*) AS n FROM spans WHERE service_name = '{service}' GROUP BY span_id")
    return {r["span_id"]: r["n"] for r in rows}


def assert_exactly_once(srv, service: str, acked: set[str]) -> None:
    counts = span_counts(srv, service)
    missing = acked - set(counts)
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged spans lost, e.g. {sorted(missing)[:3]}"
    doubled = {k: n for k, n in counts.items() if n != 1}
    assert not doubled, f"spans stored more than once: {dict(list(doubled.items())[:5])}"
    unknown = set(counts) - acked
    assert not unknown, f"spans nobody acknowledged: {sorted(unknown)[:5]}"


def segment_files(data_dir: Path, signal_name: str = "spans") -> list[Path]:
    return sorted((Path(data_dir) / "segments" / signal_name).glob("*/*/*.parquet"))


def wait_segments(data_dir: Path, signal_name: str = "spans", at_least: int = 1) -> list[Path]:
    return wait_for(lambda: len(segment_files(data_dir, signal_name)) >= at_least
                    and segment_files(data_dir, signal_name),
                    timeout=FLUSH_TIMEOUT_S, interval=0.1,
                    what=f"{at_least} {signal_name} segment file(s) under {data_dir}/segments")


def toml_str(value) -> str:
    """A TOML basic string (JSON escapes are valid TOML escapes)."""
    return json.dumps(str(value))


def write_toml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def newest_wal(data_dir: Path) -> Path:
    files = sorted((Path(data_dir) / "wal").glob("*.wal"))
    assert files, f"no write-ahead log file in {data_dir}/wal"
    assert all(re.fullmatch(r"\d{20}\.wal", f.name) for f in files), [f.name for f in files]
    return files[-1]


def proto_request(service: str, n: int, start_ns: int, **attributes: str) -> tuple[set[str], bytes]:
    spans = []
    for i in range(n):
        sid = os.urandom(8)
        spans.append(trace_pb2.Span(
            trace_id=os.urandom(16), span_id=sid, name=f"grpc-{i}", kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=start_ns + i, end_time_unix_nano=start_ns + i + 1_000_000,
            attributes=[common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v))
                        for k, v in attributes.items()]))
    req = trace_service_pb2.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(
        resource=resource_pb2.Resource(attributes=[
            common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))]),
        scope_spans=[trace_pb2.ScopeSpans(spans=spans)])])
    return {s.span_id.hex() for s in spans}, req.SerializeToString()


def process_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


# ------------------------------------------- 1. sightline.toml and precedence


def test_toml_in_working_folder_sets_data_dir_and_flush_interval(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    toml_data = tmp_path / "toml-data"
    write_toml(cwd / "sightline.toml", f"""
# every section the documentation shows
data_dir = {toml_str(toml_data)}
max_body_bytes = 16777216

[storage]
flush_interval = "1s"
flush_rows = 250000
max_buffer_bytes = 536870912
queue_capacity = 1024
compaction_target_rows = 1000000

[retention]
spans = "7d"
logs = "forever"
metrics = "30d"

[query]
memory_limit_bytes = 1073741824
timeout = "30s"
max_result_rows = 10000
""")
    srv = sightline_factory(name="toml", cwd=cwd, data_dir_flag=False).start()
    t0 = fixed_start_ns()
    acked = send_spans(srv, "toml-file", 5, start_ns=t0)

    files = wait_segments(toml_data)
    # segments/<signal>/<YYYY-MM-DD>/<HH>/*.parquet, by the hour of the rows' time
    hour = datetime.fromtimestamp(t0 / 1e9, tz=timezone.utc).strftime("%Y-%m-%d/%H")
    assert {f.parent.relative_to(toml_data / "segments" / "spans").as_posix() for f in files} == {hour}, files
    assert (toml_data / "catalog.db").is_file()
    assert list((toml_data / "wal").glob("*.wal")), "the write-ahead log lives in DATA/wal"
    assert not (cwd / "sightline-data").exists(), "the default data folder was used despite data_dir in the file"
    wait_for(lambda: srv.metric("sightline_buffer_rows", signal="spans") == 0, timeout=FLUSH_TIMEOUT_S,
             what="the buffer to be empty after the flush")
    assert_exactly_once(srv, "toml-file", acked)


@pytest.mark.parametrize("where", ["default", "toml", "env"])
def test_relative_data_dir_is_queryable_after_flush(sightline_factory, tmp_path, where):
    """The default data folder ./sightline-data is relative, and so may data_dir be: rows that
    moved from the buffer into segments must stay queryable."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {"SIGHTLINE_FLUSH_INTERVAL": "1s"}
    rel = "sightline-data"
    if where == "toml":
        rel = "relative/data"
        write_toml(cwd / "sightline.toml", f"data_dir = {toml_str(rel)}\n")
    elif where == "env":
        rel = "env-relative-data"
        env["SIGHTLINE_DATA_DIR"] = rel
    srv = sightline_factory(name=f"relative-{where}", cwd=cwd, data_dir_flag=False, env=env).start()
    service = f"relative-{where}"
    t0 = fixed_start_ns()
    spans = [span_at(f"rel-{i}", t0 + i) for i in range(3)]
    spans[1]["traceId"] = spans[2]["traceId"] = spans[0]["traceId"]
    resp = srv.post_otlp("/v1/traces", traces_body(service, spans))
    assert resp.status_code == 200, resp.text
    acked = {s["spanId"] for s in spans}
    assert_exactly_once(srv, service, acked)  # from the buffer

    wait_segments(cwd / rel)
    wait_for(lambda: srv.metric("sightline_buffer_rows", signal="spans") == 0, timeout=FLUSH_TIMEOUT_S,
             what="the buffer to be empty after the flush")
    assert_exactly_once(srv, service, acked)  # from the segment
    resp = srv.get(f"/api/v1/traces/{spans[0]['traceId']}")
    assert resp.status_code == 200, f"trace API over a segment: {resp.status_code} {resp.text}"
    assert sorted(s["span_id"] for s in resp.json()["spans"]) == sorted(acked)


def test_env_beats_toml_and_flag_beats_env(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    toml_data, env_data, flag_data = tmp_path / "toml-data", tmp_path / "env-data", tmp_path / "flag-data"
    # The file says: data in toml-data, flush hourly. Each level below overrides both.
    write_toml(cwd / "sightline.toml", f'data_dir = {toml_str(toml_data)}\n[storage]\nflush_interval = "1h"\n')

    env_srv = sightline_factory(name="env", cwd=cwd, data_dir_flag=False,
                                env={"SIGHTLINE_DATA_DIR": str(env_data),
                                     "SIGHTLINE_FLUSH_INTERVAL": "1s"}).start()
    acked = send_spans(env_srv, "env-wins", 3)
    env_segments = wait_segments(env_data)  # within seconds: the env's 1s, not the file's 1h
    assert not toml_data.exists(), "SIGHTLINE_DATA_DIR should win over data_dir in sightline.toml"
    assert_exactly_once(env_srv, "env-wins", acked)
    env_srv.stop()

    flag_srv = sightline_factory(name="flag", cwd=cwd, data_dir_flag=False,
                                 extra_args=["--data-dir", str(flag_data), "--flush-interval", "1s"],
                                 env={"SIGHTLINE_DATA_DIR": str(env_data),
                                      "SIGHTLINE_FLUSH_INTERVAL": "1h"}).start()
    acked = send_spans(flag_srv, "flag-wins", 3)
    wait_segments(flag_data)  # the flag's 1s, not the env's 1h
    assert not toml_data.exists(), "--data-dir should win over sightline.toml"
    assert span_counts(flag_srv, "env-wins") == {}, "--data-dir should win over SIGHTLINE_DATA_DIR"
    assert_exactly_once(flag_srv, "flag-wins", acked)
    assert segment_files(env_data) == env_segments, "the env's data folder was written to although --data-dir won"


def test_config_named_by_flag_or_env_replaces_working_folder_file(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    # A file in the working folder that would fail the start: it must not be read at all.
    write_toml(cwd / "sightline.toml", "this is not toml = = =\n")
    for how in ("flag", "env"):
        data = tmp_path / f"{how}-named-data"
        named = write_toml(tmp_path / "etc" / f"{how}.toml",
                           f'data_dir = {toml_str(data)}\n[storage]\nflush_interval = "1s"\n')
        if how == "flag":
            srv = sightline_factory(name="config-flag", cwd=cwd, data_dir_flag=False,
                                    extra_args=["--config", str(named)])
        else:
            srv = sightline_factory(name="config-env", cwd=cwd, data_dir_flag=False,
                                    env={"SIGHTLINE_CONFIG": str(named)})
        srv.start()
        acked = send_spans(srv, f"named-by-{how}", 2)
        wait_segments(data)
        assert_exactly_once(srv, f"named-by-{how}", acked)
        srv.stop()


def test_listen_addresses_from_toml_and_env(sightline_factory, tmp_path):
    # The file alone decides the three addresses (port 0: whatever is free).
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml",
               'otlp_grpc = "127.0.0.1:0"\notlp_http = "127.0.0.1:0"\nlisten = "127.0.0.1:0"\n')
    srv = sightline_factory(name="toml-addr", cwd=cwd, address_flags=False).start()
    for key in ("otlp_grpc", "otlp_http", "listen"):
        host, port = srv.ready[key].rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0, srv.ready
    acked = send_spans(srv, "toml-addr", 2)
    assert_exactly_once(srv, "toml-addr", acked)
    srv.stop()

    # Addresses the file gets wrong are never used when the env names them.
    bad = tmp_path / "bad-cwd"
    write_toml(bad / "sightline.toml",
               'otlp_grpc = "nowhere"\notlp_http = "nowhere"\nlisten = "nowhere"\n')
    srv = sightline_factory(name="env-addr", cwd=bad, address_flags=False,
                            env={"SIGHTLINE_OTLP_GRPC": "127.0.0.1:0", "SIGHTLINE_OTLP_HTTP": "127.0.0.1:0",
                                 "SIGHTLINE_LISTEN": "127.0.0.1:0"}).start()
    acked = send_spans(srv, "env-addr", 2)
    assert_exactly_once(srv, "env-addr", acked)
    srv.stop()
    # ...and without the env, the same file is refused with a message naming the value.
    ready = bad / "ready.json"
    proc = subprocess.run([sightline_bin(), "serve", "--ready-file", str(ready)], cwd=str(bad), env=server_env(),
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and not ready.exists(), proc.stderr
    assert "nowhere" in proc.stderr and "IP:PORT" in proc.stderr, proc.stderr


def test_max_body_bytes_file_env_flag(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", "max_body_bytes = 2000\n")
    spans = [span_at(f"body-{i}", fixed_start_ns(), pad="x" * 200) for i in range(20)]  # ~6 kB of JSON
    body = json.dumps(traces_body("body-limit", spans))
    assert len(body) > 4000

    small = sightline_factory(name="body-file", cwd=cwd).start()
    resp = small.post_otlp("/v1/traces", body)
    assert resp.status_code == 413, f"the file's max_body_bytes = 2000 was not applied: {resp.status_code} {resp.text}"
    assert resp.json()["error"]["code"] == "payload_too_large", resp.text
    small.stop()

    env_wins = sightline_factory(name="body-env", cwd=cwd, env={"SIGHTLINE_MAX_BODY_BYTES": "100000"}).start()
    resp = env_wins.post_otlp("/v1/traces", body)
    assert resp.status_code == 200, f"SIGHTLINE_MAX_BODY_BYTES did not win over the file: {resp.status_code} {resp.text}"
    env_wins.stop()

    flag_wins = sightline_factory(name="body-flag", cwd=cwd, env={"SIGHTLINE_MAX_BODY_BYTES": "100000"},
                                  extra_args=["--max-body-bytes", "3000"]).start()
    resp = flag_wins.post_otlp("/v1/traces", body)
    assert resp.status_code == 413, f"--max-body-bytes did not win over the env: {resp.status_code} {resp.text}"


# ------------------------------------------------- 2. unknown keys are refused


def run_serve_expect_failure(cwd: Path, extra_args: list[str] = (), env: dict | None = None,
                             timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Run `serve` (ports 0) and require it to exit non-zero on its own before it is ready."""
    ready = cwd / "ready.json"
    cmd = [sightline_bin(), "serve", "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0",
           "--listen", "127.0.0.1:0", "--ready-file", str(ready), *extra_args]
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=server_env(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"serve kept running for {timeout}s instead of refusing the config\n--- stderr ---\n{err}")
    assert proc.returncode != 0, f"serve exited 0 with an invalid config\n--- stderr ---\n{err}"
    assert not ready.exists(), "serve wrote its ready file although it refused its config"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.parametrize("text, key", [
    ('data_dir = "x"\nlisten_addr = "127.0.0.1:0"\n', "listen_addr"),
    ('[storage]\nflush_intervall = "1s"\n', "flush_intervall"),
    ('[query]\ntimeout = "1s"\nmax_rows = 5\n', "max_rows"),
    ('[storage]\nflush_interval = "1s"\n[sampling]\nrate = 0.5\n', "sampling"),
])
def test_unknown_key_refused_naming_the_file(tmp_path, text, key):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", text)
    result = run_serve_expect_failure(cwd)
    assert "sightline.toml" in result.stderr, f"stderr does not name the file:\n{result.stderr}"
    assert key in result.stderr, f"stderr does not name the unknown key {key!r}:\n{result.stderr}"
    assert not (cwd / "sightline-data").exists(), "a data folder was created for a refused config"


def test_unknown_key_in_named_config_file(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    named = write_toml(tmp_path / "conf" / "custom-name.toml", '[retention]\nspans = "7d"\ntraces = "7d"\n')
    for args, env in ((["--config", str(named)], None), ([], {"SIGHTLINE_CONFIG": str(named)})):
        result = run_serve_expect_failure(cwd, extra_args=args, env=env)
        assert str(named) in result.stderr, f"stderr does not name {named}:\n{result.stderr}"
        assert "traces" in result.stderr, result.stderr


# ------------------------------------------------------- 3. saturation


def test_full_buffer_refuses_with_503_and_unavailable(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", '[storage]\nmax_buffer_bytes = 1\nflush_interval = "1h"\n')
    srv = sightline_factory(name="saturated", cwd=cwd).start()
    service = "saturated"
    t0 = fixed_start_ns()

    first = send_spans(srv, service, 3, start_ns=t0)  # the buffer was empty: accepted

    # HTTP/JSON: 503, Retry-After, the OTLP JSON Status beside Sightline's error object.
    refused = [span_at("refused-json", t0) for _ in range(2)]
    resp = srv.post_otlp("/v1/traces", traces_body(service, refused))
    assert resp.status_code == 503, f"expected 503, got {resp.status_code}: {resp.text}"
    retry_after = resp.headers.get("Retry-After")
    assert retry_after is not None and retry_after.strip().isdigit() and int(retry_after) >= 1, resp.headers
    body = resp.json()
    assert body["error"]["code"] == "unavailable", body
    assert body.get("code") == 14 and body.get("message") == body["error"]["message"], body
    assert "retry" in body["error"]["message"].lower(), body

    # HTTP/protobuf: 503 with a google.rpc.Status body, code UNAVAILABLE.
    _, payload = proto_request(service, 2, t0)
    resp = srv.post_otlp("/v1/traces", payload, content_type="application/x-protobuf")
    assert resp.status_code == 503, f"expected 503, got {resp.status_code}: {resp.content[:200]!r}"
    assert resp.headers.get("Retry-After"), resp.headers
    from google.rpc import status_pb2
    status = status_pb2.Status()
    status.ParseFromString(resp.content)
    assert status.code == 14 and status.message, status

    # gRPC: UNAVAILABLE.
    _, payload = proto_request(service, 2, t0)
    with grpc.insecure_channel(srv.otlp_grpc_endpoint) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(payload), timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, (info.value.code(), info.value.details())
    assert info.value.details(), "an UNAVAILABLE answer needs a message"

    # The server is up (and says why it refuses), kept the first request only, and counted the refusals.
    health = srv.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
    buffer = next(c for c in health.json()["checks"] if c["name"] == "buffer")
    assert buffer["level"] == "warn" and "ingest answers 503" in buffer["message"], buffer
    assert srv.running()
    assert_exactly_once(srv, service, first)
    assert srv.metric("sightline_ingest_requests_total", signal="spans", outcome="refused") >= 3
    assert srv.metric("sightline_ingest_requests_total", signal="spans", outcome="ok") == 1
    assert srv.metric("sightline_ingest_records_total", signal="spans", outcome="accepted") == 3


def test_full_buffer_accepts_again_after_flush(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", '[storage]\nmax_buffer_bytes = 1\nflush_interval = "1s"\n')
    srv = sightline_factory(name="saturated-flush", cwd=cwd).start()
    service = "saturated-flush"
    acked = send_spans(srv, service, 3)
    spans = [span_at("retried", fixed_start_ns()) for _ in range(2)]
    resp = srv.post_otlp("/v1/traces", traces_body(service, spans))
    assert resp.status_code == 503, resp.text

    # What an OTLP client does: retry the same request; once the buffer is flushed it is taken.
    def retry() -> bool:
        resp = srv.post_otlp("/v1/traces", traces_body(service, spans))
        assert resp.status_code in (200, 503), f"{resp.status_code}: {resp.text}"
        return resp.status_code == 200

    wait_for(retry, timeout=FLUSH_TIMEOUT_S, interval=0.1, what="the retried export to be accepted after a flush")
    acked |= {s["spanId"] for s in spans}
    assert_exactly_once(srv, service, acked)


# ------------------------------------------------- 4. torn write-ahead log tail


def first_record(wal: bytes) -> tuple[bytes, bytes]:
    """(8-byte header, payload) of the first record of a log file: [len u32 LE][crc32 u32 LE][payload]."""
    assert wal[:8] == WAL_MAGIC, wal[:16]
    length = int.from_bytes(wal[8:12], "little")
    assert 0 < length <= len(wal) - 16, f"implausible first record length {length}"
    return wal[8:16], wal[16:16 + length]


def garbage(wal: bytes) -> bytes:
    return b"\xde\xad\xbe\xef" * 9 + b"garbage after the last record\n"


def half_header(wal: bytes) -> bytes:
    return first_record(wal)[0][:4]  # a plausible length, then the file ends


def cut_record(wal: bytes) -> bytes:
    header, payload = first_record(wal)
    return header + payload[: len(payload) // 2]


def bad_checksum(wal: bytes) -> bytes:
    header, payload = first_record(wal)
    flipped = bytearray(payload)
    flipped[len(flipped) // 2] ^= 0xFF
    return header + bytes(flipped)


@pytest.mark.parametrize("tail", [garbage, half_header, cut_record, bad_checksum],
                         ids=["garbage", "half-header", "cut-record", "bad-checksum"])
def test_torn_wal_tail_is_dropped_and_acknowledged_rows_kept(sightline_factory, tail):
    srv = sightline_factory(name=f"torn-{tail.__name__}").start()
    service = "torn"
    acked: set[str] = set()
    for _ in range(3):
        acked |= send_spans(srv, service, 4)
    srv.kill()

    wal = newest_wal(srv.data_dir)
    content = wal.read_bytes()
    with open(wal, "ab") as f:
        f.write(tail(content))

    srv.start()
    stderr = srv.stderr_tail(100_000)
    assert TAIL_DROPPED in stderr, f"no {TAIL_DROPPED!r} on stderr:\n{stderr}"
    assert wal.name in stderr, f"the report does not name {wal.name}:\n{stderr}"
    assert_exactly_once(srv, service, acked)

    # New data is accepted, and both old and new survive another kill -9 and a clean restart.
    acked |= send_spans(srv, service, 4)
    assert_exactly_once(srv, service, acked)
    srv.kill()
    srv.start()
    assert_exactly_once(srv, service, acked)
    srv.stop()  # the final flush moves every row into segments and retires the torn file
    srv.start()
    assert_exactly_once(srv, service, acked)
    assert TAIL_DROPPED not in srv.stderr_tail(100_000), "the torn log file outlived a clean shutdown"


# ------------------------------------------------------- 5. gRPC with gzip


class CountingProxy:
    """A loopback TCP proxy that counts the bytes clients send through it."""

    def __init__(self, upstream: str):
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.sent = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream, timeout=10)
            server.settimeout(None)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, count: bool) -> None:
        try:
            while data := src.recv(65536):
                if count:
                    with self._lock:
                        self.sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for s in self._sockets:
            s.close()


@pytest.mark.parametrize("how", ["argument", "env", "none"])
def test_grpc_exporter_with_gzip(sightline, monkeypatch, how):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    service = f"grpc-gzip-{how}-{hex_id(3)}"
    # 52 kB of text that gzip shrinks to almost nothing (under the default 64 KiB value limit,
    # so it must arrive whole).
    blob = "compressible " * 4_000
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("e2e.gzip")
    for i in range(3):
        with tracer.start_as_current_span(f"gzip-{i}") as s:
            s.set_attribute("payload", blob)
            s.set_attribute("i", i)
    spans = memory.get_finished_spans()
    assert len(spans) == 3

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", raising=False)
    proxy = CountingProxy(sightline.otlp_grpc_endpoint)
    try:
        kwargs = {"endpoint": f"http://{proxy.address}", "insecure": True, "timeout": 20}
        if how == "argument":
            from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
            kwargs["compression"] = Compression.Gzip
        elif how == "env":
            monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
        exporter = OTLPSpanExporter(**kwargs)
        try:
            assert exporter.export(spans) == SpanExportResult.SUCCESS
        finally:
            exporter.shutdown()
        sent = proxy.sent
    finally:
        proxy.close()

    raw = 3 * len(blob)
    if how == "none":
        assert sent > raw, f"control: without compression {sent} bytes crossed for {raw} bytes of attributes"
    else:
        assert sent < raw // 10, f"{sent} bytes crossed for {raw} bytes of attributes: the export was not gzipped"

    rows = sightline.wait_rows(
        f"SELECT name, length(json_get_str(attributes, 'payload')) AS n, json_get_int(attributes, 'i') AS i "
        f"FROM spans WHERE service_name = '{service}' ORDER BY i",
        lambda r: len(r) >= 3)
    assert rows == [{"name": f"gzip-{i}", "n": len(blob), "i": i} for i in range(3)], rows


# ---------------------------------------------- 6. flush to segments, restart


def test_flush_moves_rows_to_segments_and_restart_keeps_counts(sightline_factory, tmp_path):
    srv = sightline_factory(name="flush", extra_args=["--flush-interval", "1s"]).start()
    service = "flushed"
    acked = send_spans(srv, service, 40)
    acked |= send_spans(srv, service, 60)
    # Buffered until the flush due a second after the first row: unless the machine is slow
    # enough for that flush to come first, all 100 rows are buffered now.
    buffered = srv.metric("sightline_buffer_rows", signal="spans")
    assert buffered == 100 or srv.metric("sightline_segments", signal="spans") >= 1, buffered

    def flushed(at_least: int):
        def check():
            return (srv.metric("sightline_segments", signal="spans") >= at_least
                    and srv.metric("sightline_buffer_rows", signal="spans") == 0)
        wait_for(check, timeout=FLUSH_TIMEOUT_S, interval=0.1, what=f">= {at_least} spans segment(s), empty buffer")

    flushed(1)
    assert segment_files(srv.data_dir), "sightline_segments counts a segment that is not on disk"
    assert srv.metric("sightline_flushes_total", outcome="ok") >= 1
    assert srv.metric("sightline_flushes_total", outcome="failed") == 0
    assert_exactly_once(srv, service, acked)
    health = srv.get("/healthz").json()
    assert health["status"] == "ok" and health["ready"] is True and health["buffered_rows"] == 0, health

    # A second batch, flushed into a second segment: the table reads both segments.
    segments_before = srv.metric("sightline_segments", signal="spans")
    acked |= send_spans(srv, service, 25)
    flushed(segments_before + 1)
    assert_exactly_once(srv, service, acked)
    totals = srv.rows(f"SELECT count(*) AS n, count(DISTINCT span_id) AS d FROM spans WHERE service_name = '{service}'")
    assert totals == [{"n": 125, "d": 125}], totals

    # kill -9 after the flush: the log must not replay rows that segments already hold.
    srv.kill()
    srv.start()
    assert_exactly_once(srv, service, acked)
    assert srv.metric("sightline_buffer_rows", signal="spans") == 0, "flushed rows were replayed from the log"
    # and a clean restart.
    srv.stop()
    srv.start()
    assert_exactly_once(srv, service, acked)
    assert srv.metric("sightline_segments", signal="spans") >= 1
    assert srv.metric("sightline_buffer_rows", signal="spans") == 0


# ------------------------------------------------------------ 7. query limits


def test_query_memory_limit(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", '[query]\nmemory_limit_bytes = 1000000\n[storage]\nflush_interval = "1s"\n')
    srv = sightline_factory(name="memlimit", cwd=cwd).start()
    service = "memory"
    t0 = fixed_start_ns()
    for k in range(3):  # 3000 spans with 1 kB attributes each: ~3 MB of attribute text
        spans = [span_at(f"big-{k}-{i}", t0 + k * 10**6 + i, blob=os.urandom(512).hex()) for i in range(1000)]
        resp = srv.post_otlp("/v1/traces", traces_body(service, spans))
        assert resp.status_code == 200, resp.text

    def check_limits(where: str) -> None:
        for _ in range(3):  # a failed query gives its memory back: the next ones fail the same way
            resp = srv.query_raw("SELECT * FROM spans ORDER BY attributes")
            assert resp.status_code == 400, f"{where}: expected 400, got {resp.status_code}: {resp.text[:500]}"
            body = resp.json()
            assert set(body) == {"error"} and body["error"]["code"] == "bad_request", body
            assert "memory" in body["error"]["message"].lower(), body
        # ...and queries that fit still run: an aggregate, and a sort of a few rows.
        assert srv.rows("SELECT count(*) AS n FROM spans") == [{"n": 3000}], where
        rows = srv.rows("SELECT name FROM spans WHERE name IN ('big-0-1', 'big-2-7') ORDER BY attributes, name")
        assert sorted(r["name"] for r in rows) == ["big-0-1", "big-2-7"], where

    check_limits("rows in the buffer")
    wait_for(lambda: srv.metric("sightline_buffer_rows", signal="spans") == 0
             and srv.metric("sightline_segments", signal="spans") >= 1,
             timeout=FLUSH_TIMEOUT_S, interval=0.1, what="the rows to move into segments")
    check_limits("rows in segments")
    assert srv.metric("sightline_queries_total", outcome="failed") >= 6


def test_query_timeout(sightline_factory, tmp_path):
    cwd = tmp_path / "cwd"
    write_toml(cwd / "sightline.toml", '[query]\ntimeout = "50ms"\n')
    srv = sightline_factory(name="timeout", cwd=cwd).start()

    for sql in ("SELECT count(*) FROM generate_series(1, 2000000000)",
                "SELECT count(*) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b"):
        started = time.monotonic()
        resp = srv.query_raw(sql)
        elapsed = time.monotonic() - started
        assert resp.status_code == 504, f"expected 504, got {resp.status_code} after {elapsed:.1f}s: {resp.text}"
        body = resp.json()
        assert set(body) == {"error"} and body["error"]["code"] == "timeout", body
        assert body["error"]["message"], body
        assert elapsed < 10, f"a 50 ms timeout took {elapsed:.1f}s to answer"

        # A simple query works right after.
        assert srv.rows("SELECT 1 AS one") == [{"one": 1}]

    # The stopped queries do not keep burning CPU behind the answer: the process goes idle.
    pid = srv.proc.pid

    def idle() -> bool:
        before = process_cpu_seconds(pid)
        time.sleep(0.3)  # a measurement window, not a wait: CPU used over it
        return process_cpu_seconds(pid) - before < 0.15  # under half a core

    wait_for(idle, timeout=10, interval=0.05, what="the server to go idle after its queries timed out")
