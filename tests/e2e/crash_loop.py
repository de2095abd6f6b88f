#!/usr/bin/env python3
"""Crash loop: SIGKILL the server at random moments under load, restart it, and check that every
acknowledged record is stored exactly once.

One run:

  * starts `sightline serve` on a fresh data folder (every listener on 127.0.0.1:0, addresses
    read from --ready-file, a short --flush-interval so that flushes happen during each life);
  * runs several sender threads that POST OTLP/JSON spans and logs, each record with an id that
    is never sent again, and writes down what became of every request:
      - acknowledged: a 2xx answer with no rejected records -> must be stored, exactly once;
      - refused: an answer that is not 2xx (429/503/...) -> should not be stored, never twice;
      - unknown: no answer (connection reset by the kill, timeout) -> may or may not be stored,
        never twice;
  * after a random delay (seeded RNG) kills the server with SIGKILL, looks at what the kill left
    in the folder, restarts the server on the same folder, and repeats for N cycles;
  * every `check_every` cycles and at the end, checks the stored rows against that ledger: the
    duplicate query `SELECT span_id, count(*) FROM spans GROUP BY span_id HAVING count(*) > 1`
    (and the same for logs) must be empty, every acknowledged id must be there, no row may carry
    an id that nobody sent, no request may be stored in part, and `span_rollups` must count
    every stored span of the loop (all are server spans) once as a request. The end also stops
    the server with SIGTERM, restarts it once more and checks again (a replay after a clean
    shutdown must not double anything either).

The seed fixes the kill schedule and each sender's mix of requests; thread timing is not
reproducible, so a seed makes a failure likely, not certain, to come back.

Plain functions and classes, no pytest: tests/e2e/test_crash_loop.py runs a short form, and

    python tests/e2e/crash_loop.py --cycles 300 --seed 7 [--bin PATH] [--json out.json]

runs the long form (see RELIABILITY.md). Exit status: 0 pass, 1 a guarantee broken, 2 the run
could not be carried out (e.g. the binary is missing).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

DEFAULT_BIN = Path.home() / ".cache" / "sightline-target" / "debug" / "sightline"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
QUERY_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
# The server answers at most 10,000 rows per query (query.max_result_rows): id ranges are cut so
# that each holds at most this many sent records.
CHUNK_RECORDS = 8000
# Each record's id: 10 hex digits of request number, 6 of position in the request.
REQ_HEX, POS_HEX = 10, 6
LOG_BODY_PREFIX = "crashloop-"
SPAN_SERVICES = ("crashloop-api", "crashloop-worker")
# Records per request; the large ones make long log records, so that a kill can cut one.
REQUEST_SIZES = (1, 5, 20, 20, 50, 200)
LOG_SHARE = 0.3
# The background loop runs compaction at its 120th 500 ms tick, ~59.5 s after the server starts
# listening; in a debug build one pass took ~0.1-0.2 s. A long life is killed in this window.
COMPACTION_WINDOW_S = (59.2, 60.2)
COMPACTION_TICK_S = 59.5
# During those long lives each sender pauses this long between requests (less data to check).
LONG_LIFE_PACE_S = 0.25
SAMPLE = 10  # ids shown per problem in a report


class CrashLoopFailure(AssertionError):
    """A guarantee was broken (or the server could not restart); the message has the evidence."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


class SetupError(RuntimeError):
    """The run could not be carried out at all (binary missing, ...)."""


# ---- the server --------------------------------------------------------------------------


def server_env() -> dict[str, str]:
    """Our environment without SIGHTLINE_* (which would change the server's config)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGHTLINE_")}
    env.setdefault("RUST_BACKTRACE", "1")
    return env


class Server:
    """`sightline serve` on one data folder, restarted many times; one stderr file per life."""

    def __init__(self, binary: str, data_dir: Path, log_dir: Path, flush_interval: str,
                 extra_args: list[str] | None = None):
        self.bin = str(binary)
        self.data_dir = Path(data_dir)
        self.log_dir = Path(log_dir)
        self.flush_interval = flush_interval
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.ready: dict = {}
        self.stderr_path: Path | None = None
        self.session = requests.Session()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def start(self) -> float:
        """Start and wait for the ready file; return the seconds it took. A server that exits
        or does not get ready is a CrashLoopFailure: restarting after a kill must work."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        self.starts += 1
        ready_file = self.log_dir / f"ready-{self.starts}.json"
        self.stderr_path = self.log_dir / f"stderr-{self.starts:04d}.log"
        cmd = [self.bin, "serve", "--data-dir", str(self.data_dir),
               "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0",
               "--ready-file", str(ready_file), "--flush-interval", self.flush_interval, *self.extra_args]
        t0 = time.monotonic()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         env=server_env(), cwd=str(self.log_dir))
        while True:
            code = self.proc.poll()
            if code is not None:
                raise CrashLoopFailure(f"the server exited with code {code} before it was ready "
                                       f"(start #{self.starts})\ncommand: {' '.join(cmd)}\n"
                                       f"--- stderr ---\n{self.stderr_tail()}")
            if ready_file.exists():
                try:
                    self.ready = json.loads(ready_file.read_text())
                    break
                except (json.JSONDecodeError, OSError):
                    pass
            if time.monotonic() - t0 > READY_TIMEOUT_S:
                self.kill()
                raise CrashLoopFailure(f"the server was not ready within {READY_TIMEOUT_S}s "
                                       f"(start #{self.starts})\n--- stderr ---\n{self.stderr_tail()}")
            time.sleep(0.01)
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> int:
        """SIGTERM; the server must exit 0 in time."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise CrashLoopFailure(f"the server did not exit within {STOP_TIMEOUT_S}s of SIGTERM\n"
                                   f"--- stderr ---\n{self.stderr_tail()}")
        if code != 0:
            raise CrashLoopFailure(f"the server exited with {code} after SIGTERM\n--- stderr ---\n"
                                   f"{self.stderr_tail()}")
        return code

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def otlp_http_url(self) -> str:
        return "http://" + self.ready["otlp_http"]

    @property
    def api_url(self) -> str:
        return "http://" + self.ready["listen"]

    def query(self, sql: str) -> dict:
        resp = self.session.post(f"{self.api_url}/api/v1/query", json={"sql": sql}, timeout=QUERY_TIMEOUT_S)
        if resp.status_code != 200:
            raise CrashLoopFailure(f"query failed ({resp.status_code}): {resp.text[:2000]}\nSQL: {sql[:500]}")
        return resp.json()

    def rows(self, sql: str) -> list[list]:
        answer = self.query(sql)
        if answer.get("truncated"):
            raise CrashLoopFailure(f"query answer truncated ({len(answer['rows'])} rows): {sql[:500]}")
        return answer["rows"]

    def stderr_text(self) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        return self.stderr_path.read_text(errors="replace")

    def stderr_tail(self, chars: int = 6000) -> str:
        text = self.stderr_text()
        return text[-chars:] if text else "(no stderr)"


# ---- what a life wrote to stderr ---------------------------------------------------------

_TORN_RE = re.compile(r"tail dropped.*?path=(\S+) offset=(\d+) reason=(.*?)$")
_OPENED_RE = re.compile(r"data folder opened .*?wal_files=(\d+) records=(\d+) torn_tails=(\d+)")


def parse_stderr(text: str) -> dict:
    """Torn tails reported at start, flushes and compactions done, warnings and panics."""
    torn = []
    opened: dict[str, int] = {}
    flushes = compactions = 0
    warnings: list[str] = []
    panics: list[str] = []
    listening_at: float | None = None
    compaction_at: list[float] = []
    for line in text.splitlines():
        if "sightline is listening" in line:
            listening_at = _line_time(line)
        if "torn" in line and "tail dropped" in line:
            m = _TORN_RE.search(line)
            torn.append({"path": m.group(1), "offset": int(m.group(2)), "reason": m.group(3).strip()}
                        if m else {"line": line})
        m = _OPENED_RE.search(line)
        if m:
            opened = {"wal_files": int(m.group(1)), "records": int(m.group(2)), "torn_tails": int(m.group(3))}
        if "buffer flushed to segments" in line:
            flushes += 1
        if "segments compacted" in line:
            compactions += 1
            at = _line_time(line)
            if at is not None and listening_at is not None:
                compaction_at.append(round(at - listening_at, 2))
        if " WARN " in line and "tail dropped" not in line:
            warnings.append(line)
        if " ERROR " in line or "panicked" in line:
            panics.append(line)
    return {"torn": torn, "opened": opened, "flushes": flushes, "compactions": compactions,
            "compaction_at_s": compaction_at, "listening_at": listening_at, "warnings": warnings,
            "errors": panics}


def _line_time(line: str) -> float | None:
    """Seconds since the epoch of a log line that starts with an RFC 3339 UTC time."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z", line)
    if not m:
        return None
    text = m.group(1)
    if "." in text:
        head, frac = text.split(".")
        text = f"{head}.{frac[:6]}"
    try:
        return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


# ---- the ledger of requests --------------------------------------------------------------

ACKED, REFUSED, UNKNOWN, PENDING = "acked", "refused", "unknown", "pending"


@dataclasses.dataclass
class Request:
    no: int          # global request number (the first REQ_HEX hex digits of each id)
    signal: str      # "spans" | "logs"
    size: int        # records in it
    cycle: int       # the server life it was sent in
    sent_at: float   # seconds after that life's start
    outcome: str = PENDING
    detail: str = ""

    def ids(self) -> list[str]:
        return [record_id(self.signal, self.no, i) for i in range(self.size)]


def record_id(signal: str, req_no: int, pos: int) -> str:
    raw = f"{req_no:0{REQ_HEX}x}{pos:0{POS_HEX}x}"
    return raw if signal == "spans" else LOG_BODY_PREFIX + raw


def split_id(signal: str, rid: str) -> tuple[int, int] | None:
    raw = rid if signal == "spans" else rid[len(LOG_BODY_PREFIX):] if rid.startswith(LOG_BODY_PREFIX) else ""
    if len(raw) != REQ_HEX + POS_HEX:
        return None
    try:
        return int(raw[:REQ_HEX], 16), int(raw[REQ_HEX:], 16)
    except ValueError:
        return None


class Ledger:
    """Every request sent, and what became of it. Thread-safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[Request] = []  # index = no - 1

    def new(self, signal: str, size: int, cycle: int, sent_at: float) -> Request:
        with self.lock:
            req = Request(no=len(self.requests) + 1, signal=signal, size=size, cycle=cycle, sent_at=sent_at)
            self.requests.append(req)
            return req

    def settle(self, req: Request, outcome: str, detail: str = "") -> None:
        with self.lock:
            req.outcome, req.detail = outcome, detail

    def snapshot(self) -> list[Request]:
        with self.lock:
            return list(self.requests)

    def records(self, outcome: str) -> int:
        return sum(r.size for r in self.snapshot() if r.outcome == outcome)


# ---- the senders -------------------------------------------------------------------------


def spans_body(req: Request, trace_prefix: str, now_ns: int, kind: int = 2) -> dict:
    """The spans of one request: server spans (kind 2), so that span_rollups counts each one as
    a request; the request number is in an attribute, the span name is the same for all."""
    by_service: dict[str, list] = {s: [] for s in SPAN_SERVICES}
    trace_id = f"{trace_prefix}{req.no:016x}"
    for pos, sid in enumerate(req.ids()):
        start = now_ns - 5_000_000 - pos * 1000
        by_service[SPAN_SERVICES[pos % 2]].append({
            "traceId": trace_id, "spanId": sid, "name": "crash-loop", "kind": kind,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + 1_000_000 + pos),
            "attributes": [{"key": "crashloop.request", "value": {"intValue": str(req.no)}}],
        })
    return {"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": svc}}]},
         "scopeSpans": [{"scope": {"name": "crash_loop"}, "spans": spans}]}
        for svc, spans in by_service.items() if spans]}


def logs_body(req: Request, now_ns: int) -> dict:
    records = [{"timeUnixNano": str(now_ns - pos * 1000), "severityNumber": 9, "body": {"stringValue": rid}}
               for pos, rid in enumerate(req.ids())]
    return {"resourceLogs": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": SPAN_SERVICES[0]}}]},
         "scopeLogs": [{"scope": {"name": "crash_loop"}, "logRecords": records}]}]}


def judge(resp: requests.Response, signal: str) -> tuple[str, str]:
    """(outcome, detail) of an answer."""
    if not 200 <= resp.status_code < 300:
        return REFUSED, f"HTTP {resp.status_code}: {resp.text[:200]}"
    try:
        partial = (resp.json() or {}).get("partialSuccess") or {}
    except ValueError:
        return UNKNOWN, f"HTTP {resp.status_code} with a body that is not JSON: {resp.text[:200]}"
    rejected = partial.get("rejectedSpans" if signal == "spans" else "rejectedLogRecords")
    if rejected and str(rejected) != "0":
        # Which ones is not said: the request is not acknowledged as a whole.
        return UNKNOWN, f"partial success, {rejected} rejected: {partial.get('errorMessage', '')[:200]}"
    return ACKED, ""


class Load:
    """Sender threads that post to whichever server life is up (none while it is down)."""

    def __init__(self, ledger: Ledger, senders: int, seed: int):
        self.ledger = ledger
        self.senders = senders
        self.seed = seed
        self.trace_prefix = f"{random.Random(seed).getrandbits(64):016x}"
        self.up = threading.Event()
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.url = ""
        self.cycle = 0
        self.life_started = 0.0
        self.pace = 0.0
        self.in_flight = 0
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), name=f"crash-loop-sender-{i}", daemon=True)
                        for i in range(senders)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def resume(self, url: str, cycle: int, pace: float = 0.0) -> None:
        """Send to url; each sender sleeps `pace` seconds between requests (0: flat out)."""
        with self.lock:
            self.url, self.cycle, self.life_started, self.pace = url, cycle, time.monotonic(), pace
        self.up.set()

    def pause(self) -> None:
        self.up.clear()

    def wait_idle(self, timeout: float = REQUEST_TIMEOUT_S + 5) -> None:
        """After pause() and a kill: until every request in flight has its outcome."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.in_flight == 0:
                    return
            time.sleep(0.005)

    def close(self) -> None:
        self.stop_event.set()
        self.up.set()
        for t in self.threads:
            t.join(timeout=REQUEST_TIMEOUT_S + 5)
        if self.errors:
            raise self.errors[0]

    def _run(self, idx: int) -> None:
        try:
            self._loop(idx)
        except BaseException as exc:  # noqa: BLE001 - surfaced by close()
            self.errors.append(exc)

    def _loop(self, idx: int) -> None:
        rng = random.Random(f"{self.seed}/sender/{idx}")
        session, session_cycle = requests.Session(), -1
        while not self.stop_event.is_set():
            if not self.up.wait(timeout=0.1):
                continue
            with self.lock:
                if not self.up.is_set() or self.stop_event.is_set():
                    continue
                url, cycle, started, pace = self.url, self.cycle, self.life_started, self.pace
                self.in_flight += 1
            try:
                if cycle != session_cycle:
                    session.close()
                    session, session_cycle = requests.Session(), cycle
                signal_ = "logs" if rng.random() < LOG_SHARE else "spans"
                size = rng.choice(REQUEST_SIZES)
                req = self.ledger.new(signal_, size, cycle, time.monotonic() - started)
                now = time.time_ns()
                if signal_ == "spans":
                    body, path = spans_body(req, self.trace_prefix, now), "/v1/traces"
                else:
                    body, path = logs_body(req, now), "/v1/logs"
                try:
                    resp = session.post(url + path, data=json.dumps(body).encode(),
                                        headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT_S)
                except requests.RequestException as exc:
                    self.ledger.settle(req, UNKNOWN, type(exc).__name__)
                else:
                    outcome, detail = judge(resp, signal_)
                    self.ledger.settle(req, outcome, detail)
                    if outcome == REFUSED:
                        time.sleep(0.05)  # 429/503: back off a little
            finally:
                with self.lock:
                    self.in_flight -= 1
            if pace:
                time.sleep(pace)


# ---- checking what is stored -------------------------------------------------------------


def _chunks(reqs: list[Request]) -> list[list[Request]]:
    """Consecutive requests (by number) of one signal, at most CHUNK_RECORDS records each."""
    out: list[list[Request]] = []
    cur: list[Request] = []
    n = 0
    for r in sorted(reqs, key=lambda r: r.no):
        if cur and n + r.size > CHUNK_RECORDS:
            out.append(cur)
            cur, n = [], 0
        cur.append(r)
        n += r.size
    if cur:
        out.append(cur)
    return out


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def check_store(server: Server, ledger: Ledger) -> dict:
    """Compare what is stored with the ledger; return counts and samples (never raises on a
    finding: problems_of() says what is wrong). Runs while no sender is sending."""
    reqs = ledger.snapshot()  # a request still pending (none should be) counts as not acknowledged
    result: dict[str, Any] = {"missing": [], "duplicates": [], "foreign": [], "partial_requests": [],
                              "rollups": []}
    t0 = time.monotonic()
    for signal_, table, col in (("spans", "spans", "span_id"), ("logs", "logs", "body")):
        # 1. The duplicate query, exactly as a person would type it.
        dup_rows = server.rows(f"SELECT {col}, count(*) AS n FROM {table} GROUP BY {col} HAVING count(*) > 1")
        for rid, n in dup_rows:
            result["duplicates"].append({"signal": signal_, "id": rid, "count": n})
        total = server.rows(f"SELECT count(*) AS n FROM {table}")[0][0]
        # 2. Every id sent, fetched range by range and compared with the ledger.
        fetched_total = 0
        mine = [r for r in reqs if r.signal == signal_]
        stored_per_req: collections.Counter = collections.Counter()
        for chunk in _chunks(mine):
            lo = record_id(signal_, chunk[0].no, 0)
            hi = record_id(signal_, chunk[-1].no, 16 ** POS_HEX - 1)
            stored = [row[0] for row in server.rows(
                f"SELECT {col} FROM {table} WHERE {col} >= {_sql_str(lo)} AND {col} <= {_sql_str(hi)}")]
            fetched_total += len(stored)
            counts = collections.Counter(stored)
            by_no = {r.no: r for r in chunk}
            for rid, n in counts.items():
                parts = split_id(signal_, rid)
                req = by_no.get(parts[0]) if parts else None
                if req is None or parts[1] >= req.size:
                    result["foreign"].append({"signal": signal_, "id": rid, "count": n})
                    continue
                stored_per_req[req.no] += 1
                if n > 1 and not any(d["id"] == rid for d in result["duplicates"]):
                    result["duplicates"].append({"signal": signal_, "id": rid, "count": n})
            for req in chunk:
                if req.outcome == ACKED:
                    for rid in req.ids():
                        if rid not in counts:
                            result["missing"].append({"signal": signal_, "id": rid, "request": req.no,
                                                      "cycle": req.cycle, "size": req.size,
                                                      "sent_at_s": round(req.sent_at, 3)})
        # 3. Rows outside every range sent (ids nobody sent, or sent in a later cycle).
        if fetched_total != total:
            result["foreign"].append({"signal": signal_, "id": f"({total - fetched_total} rows outside the ids sent)",
                                      "count": total - fetched_total})
        result[f"{signal_}_rows"] = total
        result[f"{signal_}_acked"] = sum(r.size for r in mine if r.outcome == ACKED)
        result[f"{signal_}_not_acked_stored"] = sum(stored_per_req[r.no] for r in mine if r.outcome != ACKED)
        for r in mine:
            # One request is one log record: it is stored whole or not at all. (An answer that
            # said some records were rejected would explain a part; the loop never sees one.)
            if r.outcome != ACKED and 0 < stored_per_req[r.no] < r.size \
                    and not r.detail.startswith("partial success"):
                result["partial_requests"].append({"signal": signal_, "request": r.no, "size": r.size,
                                                   "stored": stored_per_req[r.no], "outcome": r.outcome})
    # 4. span_rollups against the spans: every span the loop sends is a server span, so the
    # rollups of the loop's services must count each stored one once as a request, in the
    # buffer as in segments; and none of them failed.
    scope = f"service_name IN ({', '.join(_sql_str(s) for s in SPAN_SERVICES)})"
    (rollup_requests, rollup_errors), = server.rows(
        f"SELECT sum(requests) AS requests, sum(errors) AS errors FROM span_rollups WHERE {scope}")
    (stored_spans, failed_spans), = server.rows(
        f"SELECT count(*) AS n, sum(CASE WHEN status = 'error' OR http_status_code >= 500 THEN 1 ELSE 0 END) "
        f"AS failed FROM spans WHERE {scope}")
    rollup_requests, rollup_errors, failed_spans = rollup_requests or 0, rollup_errors or 0, failed_spans or 0
    ledger_spans = result["spans_acked"] + result["spans_not_acked_stored"]
    if not rollup_requests == stored_spans == ledger_spans:
        result["rollups"].append({"column": "requests", "span_rollups": rollup_requests, "spans": stored_spans,
                                  "ledger": ledger_spans})
    if rollup_errors != failed_spans:
        result["rollups"].append({"column": "errors", "span_rollups": rollup_errors, "spans": failed_spans})
    result["rollup_requests"] = rollup_requests
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


def problems_of(check: dict) -> list[str]:
    """What is wrong, one phrase per kind of error; empty when the store matches the ledger."""
    out = []
    for key, what in (("missing", "acknowledged records missing"), ("duplicates", "records stored more than once"),
                      ("foreign", "stored records nobody sent"), ("partial_requests", "requests stored in part")):
        if check[key]:
            out.append(f"{len(check[key])} {what}")
    for r in check["rollups"]:
        if r["column"] == "requests":
            out.append(f"span_rollups count {r['span_rollups']} requests, the spans stored are {r['spans']}, "
                       f"the ledger says {r['ledger']}")
        else:
            out.append(f"span_rollups count {r['span_rollups']} errors, the failed spans stored are {r['spans']}")
    return out


# ---- the loop ----------------------------------------------------------------------------


@dataclasses.dataclass
class Config:
    binary: str
    cycles: int = 10
    seed: int = 1
    senders: int = 4
    min_delay: float = 0.05
    max_delay: float = 1.5
    flush_interval: str = "500ms"
    check_every: int = 5           # 0: only at the end
    compaction_every: int = 0      # every Nth life runs into the compaction window; 0: never
    workdir: Path | None = None
    keep: bool = False
    progress: bool = False
    # Run a private copy of the binary: the loop starts it hundreds of times, and a rebuild in
    # the middle would otherwise mix two builds in one run (or catch a half-linked file).
    copy_binary: bool = False


def _listing(data_dir: Path) -> dict:
    """What is on disk (read by listing only: the folder is never touched between lives)."""
    seg = data_dir / "segments"
    return {"parquet": {str(p.relative_to(seg)) for p in seg.rglob("*.parquet")},
            "tmp": sorted(str(p.relative_to(seg)) for p in seg.rglob("*.tmp")),
            "wal": len(list((data_dir / "wal").glob("*.wal")))}


def _evidence(cfg: Config, cycle: int, check: dict, ledger: Ledger, lives: list[dict], server: Server,
              data_dir: Path, recheck: dict | None) -> str:
    lines = [f"CRASH LOOP FAILED: seed={cfg.seed} cycle={cycle} ({', '.join(problems_of(check))})",
             f"data folder kept at {data_dir}; server stderr per life in {server.log_dir}"]
    for key in ("missing", "duplicates", "foreign", "partial_requests", "rollups"):
        if check[key]:
            lines.append(f"{key} (first {SAMPLE} of {len(check[key])}):")
            lines += [f"  {json.dumps(x)}" for x in check[key][:SAMPLE]]
    by_no = {r.no: r for r in ledger.snapshot()}
    involved = sorted({x["request"] for x in check["missing"] + check["partial_requests"]}
                      | {p[0] for x in check["duplicates"] if (p := split_id(x["signal"], str(x["id"])))})
    if involved:
        lines.append(f"requests involved ({len(involved)}):")
        for no in involved[:SAMPLE]:
            r = by_no.get(no)
            if r:
                lines.append(f"  request {no}: {r.signal} x{r.size}, cycle {r.cycle}, sent {r.sent_at:.3f}s after "
                             f"that life's load began, outcome {r.outcome} {r.detail}")
        by_cycle = {l["cycle"]: l for l in lives}
        for c in sorted({by_no[no].cycle for no in involved if no in by_no})[:5]:
            for cc in (c, c + 1):
                if cc in by_cycle:
                    lines.append(f"  life {cc}: {json.dumps(by_cycle[cc])}")
    if recheck is not None:
        lines.append(f"same check again 2 s later: {', '.join(problems_of(recheck)) or 'clean'} "
                     f"(a difference points at query visibility rather than storage)")
    lines.append(f"--- stderr of the current life ---\n{server.stderr_tail(4000)}")
    return "\n".join(lines)


def life_stats(lives: list[dict]) -> dict:
    """Where the kills landed, from what each life logged and what it left on disk.

    A short life counts as killed inside a flush when its kill left a *.parquet.tmp (a segment
    being written), segment files that the next start removed as unknown to the catalog (written,
    not yet committed), or log files that the next start deleted unread (committed, old log files
    not yet removed). Lives that ran a compaction pass (a check that outlasted the 59.5 s tick) are
    left out of the second sign: the segments a compaction replaced are removed the same way."""
    short = [l for l in lives if not l["long"]]
    long_ = [l for l in lives if l["long"]]

    def uncommitted(l: dict) -> bool:
        return bool(l.get("orphans_removed_at_restart")) and not l["compactions"]

    def in_flush(l: dict) -> bool:
        return bool(l["tmp_segment_files"] or uncommitted(l) or l.get("wal_files_below_checkpoint"))

    return {
        "short_lives": len(short),
        "short_lives_with_a_completed_flush": sum(1 for l in short if l["flushes"] > 0),
        "short_lives_that_ran_a_compaction": sum(1 for l in short if l["compactions"]),
        "flushes_completed": sum(l["flushes"] for l in lives),
        "kills_inside_a_flush": sum(1 for l in short if in_flush(l)),
        "kills_leaving_a_tmp_segment": sum(1 for l in short if l["tmp_segment_files"]),
        "kills_before_a_flush_commit": sum(1 for l in short if uncommitted(l)),
        "kills_between_commit_and_log_cleanup": sum(1 for l in short if l.get("wal_files_below_checkpoint")),
        "long_lives": len(long_),
        # Killed before the compaction tick / after a compaction pass logged its end / in between
        # (the pass had begun, or the tick was late).
        "long_lives_killed_before_compaction": sum(1 for l in long_ if not l["compactions"]
                                                   and l.get("killed_at_s", 0) < COMPACTION_TICK_S),
        "long_lives_killed_after_a_compaction": sum(1 for l in long_ if l["compactions"]),
        "long_lives_killed_after_the_tick_before_a_compaction_logged": sum(
            1 for l in long_ if not l["compactions"] and l.get("killed_at_s", 0) >= COMPACTION_TICK_S),
        # ... of which the kill left a .tmp or uncommitted segment files (of that compaction, or of
        # a flush running at the same time: long lives flush every second).
        "long_lives_killed_with_tmp_or_uncommitted_files": sum(1 for l in long_ if l["tmp_segment_files"]
                                                               or uncommitted(l)),
        "compaction_at_s": sorted(t for l in long_ for t in l["compaction_at_s"]),
    }


def run(cfg: Config) -> dict:
    """Run the crash loop; return the summary, or raise CrashLoopFailure with the evidence."""
    import shutil
    import tempfile

    if not (os.path.isfile(cfg.binary) and os.access(cfg.binary, os.X_OK)):
        raise SetupError(f"{cfg.binary!r} is not an executable file (set --bin or SIGHTLINE_BIN)")
    t_start = time.monotonic()
    own_workdir = cfg.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix=f"crash-loop-{cfg.seed}-")) if own_workdir else Path(cfg.workdir)
    data_dir, log_dir = workdir / "data", workdir / "logs"
    if (data_dir / "wal").exists():
        raise SetupError(f"{data_dir} is not empty: give a new --workdir")
    binary = cfg.binary
    binary_info = {"binary_mtime": datetime.datetime.fromtimestamp(os.path.getmtime(cfg.binary), datetime.timezone.utc)
                   .isoformat(timespec="seconds")}
    if cfg.copy_binary:
        (workdir / "bin").mkdir(parents=True, exist_ok=True)
        binary = str(workdir / "bin" / Path(cfg.binary).name)
        shutil.copy2(cfg.binary, binary)
        binary_info["binary_copied_to"] = binary
    server = Server(binary, data_dir, log_dir, cfg.flush_interval)
    ledger = Ledger()
    load = Load(ledger, cfg.senders, cfg.seed)
    rng = random.Random(cfg.seed)
    lives: list[dict] = []   # one per killed life
    checks: list[dict] = []
    failed = False
    torn_seen: dict[tuple, dict] = {}
    torn_reports = 0
    after_kill: dict | None = None  # the listing taken after the last kill

    def note(msg: str) -> None:
        if cfg.progress:
            print(f"[{time.monotonic() - t_start:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def restart() -> dict:
        """Start the server; read what its start reported; settle the evidence of the last kill."""
        nonlocal torn_reports
        ready_s = server.start()
        info = parse_stderr(server.stderr_text())
        start = {"ready_s": round(ready_s, 3), "opened": info["opened"], "torn": info["torn"]}
        torn_reports += len(info["torn"])
        for t in info["torn"]:
            torn_seen.setdefault((t.get("path"), t.get("offset")), t)
        if after_kill is not None and lives:
            now = _listing(data_dir)
            prev = lives[-1]
            # Segment files the catalog did not list, removed by this start: written by a flush
            # (or a compaction) that the kill cut before its catalog commit.
            prev["orphans_removed_at_restart"] = len(after_kill["parquet"] - now["parquet"])
            # Log files this start deleted without replaying: below the checkpoint, i.e. the kill
            # came between a flush's catalog commit and its removal of the old log files.
            prev["wal_files_below_checkpoint"] = after_kill["wal"] - info["opened"].get("wal_files", after_kill["wal"])
            prev["torn_at_next_start"] = info["torn"]
        if info["errors"]:
            raise CrashLoopFailure(f"seed={cfg.seed} start #{server.starts}: the server logged errors or panicked:\n"
                                   + "\n".join(info["errors"][:20]))
        return start

    def check(cycle: int, when: str = "periodic") -> dict:
        c = check_store(server, ledger)
        c["cycle"], c["when"] = cycle, when
        checks.append({k: (len(v) if isinstance(v, list) else v) for k, v in c.items()})
        if problems_of(c):
            time.sleep(2)
            recheck = check_store(server, ledger)
            raise CrashLoopFailure(_evidence(cfg, cycle, c, ledger, lives, server, data_dir, recheck))
        note(f"check after cycle {cycle} ({when}): {c['spans_acked']} spans and {c['logs_acked']} logs "
             f"acknowledged, all present once; {c['spans_not_acked_stored'] + c['logs_not_acked_stored']} "
             f"unacknowledged ones stored once; span_rollups count {c['rollup_requests']} requests "
             f"({c['seconds']}s)")
        return c

    load.start()
    try:
        for cycle in range(1, cfg.cycles + 1):
            long_life = cfg.compaction_every > 0 and cycle % cfg.compaction_every == 0
            delay = rng.uniform(*COMPACTION_WINDOW_S) if long_life else rng.uniform(cfg.min_delay, cfg.max_delay)
            start = restart()
            if cfg.check_every and cycle > 1 and (cycle - 1) % cfg.check_every == 0:
                check(cycle - 1)  # on the life just restarted, before it gets new load
            life = {"cycle": cycle, "delay_s": round(delay, 3), "long": long_life, **start}
            before = ledger.records(ACKED)
            load.resume(server.otlp_http_url, cycle, pace=LONG_LIFE_PACE_S if long_life else 0.0)
            time.sleep(delay)
            load.pause()
            server.kill()
            killed_wall = time.time()
            load.wait_idle()
            after_kill = _listing(data_dir)
            info = parse_stderr(server.stderr_text())
            if info["listening_at"] is not None:
                life["killed_at_s"] = round(killed_wall - info["listening_at"], 3)  # after "listening"
            life.update(acked=ledger.records(ACKED) - before, flushes=info["flushes"],
                        compactions=info["compactions"], compaction_at_s=info["compaction_at_s"],
                        tmp_segment_files=len(after_kill["tmp"]), wal_files_after_kill=after_kill["wal"],
                        warnings=info["warnings"][:5])
            lives.append(life)
            if info["errors"]:
                raise CrashLoopFailure(f"seed={cfg.seed} cycle={cycle}: the server logged errors or panicked:\n"
                                       + "\n".join(info["errors"][:20]))
            note(f"cycle {cycle}/{cfg.cycles}: killed after {delay:.2f}s, +{life['acked']} acked, "
                 f"{info['flushes']} flush(es), {info['compactions']} compaction(s), "
                 f"{len(after_kill['tmp'])} .tmp left, torn tails at its start: {len(start['torn'])}")

        # The end: restart, check, stop cleanly, restart, check again.
        restart()
        after_kill = None
        check(cfg.cycles, "after the last kill")
        server.stop()
        restart()
        final2 = check(cfg.cycles, "after SIGTERM and a restart")
        server.stop()
    except BaseException:
        failed = True
        raise
    finally:
        load.pause()
        if server.running():
            server.kill()
        try:
            load.close()
        except BaseException:  # noqa: BLE001 - a sender bug must not hide the first error
            if not failed:
                raise
        if not failed and own_workdir and not cfg.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    reqs = ledger.snapshot()
    by_outcome: collections.Counter = collections.Counter()
    for r in reqs:
        by_outcome[r.outcome] += r.size
    summary = {
        "result": "pass",
        "seed": cfg.seed,
        "cycles": cfg.cycles,
        "binary": cfg.binary,
        **binary_info,
        "config": {"senders": cfg.senders, "kill_delay_s": [cfg.min_delay, cfg.max_delay],
                   "flush_interval": cfg.flush_interval, "check_every": cfg.check_every,
                   "compaction_every": cfg.compaction_every, "compaction_window_s": list(COMPACTION_WINDOW_S)},
        "requests": len(reqs),
        "acknowledged_records": by_outcome[ACKED],
        "acknowledged_spans": final2["spans_acked"],
        "acknowledged_logs": final2["logs_acked"],
        "unknown_records": by_outcome[UNKNOWN],
        "refused_records": by_outcome[REFUSED],
        "not_acknowledged_but_stored": final2["spans_not_acked_stored"] + final2["logs_not_acked_stored"],
        "partially_stored_requests": len(final2["partial_requests"]),
        "rows_stored": {"spans": final2["spans_rows"], "logs": final2["logs_rows"]},
        "span_rollup_requests": final2["rollup_requests"],
        "duplicates": 0,
        "missing": 0,
        "foreign": 0,
        "checks": len(checks),
        "torn_tail_reports": torn_reports,
        "torn_tails_distinct": len(torn_seen),
        "torn_tail_reasons": dict(collections.Counter(t.get("reason", "?") for t in torn_seen.values())),
        **life_stats(lives),
        "warnings": sum(len(l["warnings"]) for l in lives),
        "refusals_sample": sorted({r.detail[:120] for r in reqs if r.outcome == REFUSED})[:5],
        "unknown_requests_by_reason": dict(collections.Counter(r.detail.split(":")[0] for r in reqs if r.outcome == UNKNOWN)),
        "mean_ready_s": round(sum(l["ready_s"] for l in lives) / max(1, len(lives)), 3),
        "max_ready_s": max((l["ready_s"] for l in lives), default=0),
        "final_check_s": final2["seconds"],
        "total_seconds": round(time.monotonic() - t_start, 1),
        "lives": lives,
        "check_log": checks,
    }
    return summary


# ---- command line ------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="SIGKILL Sightline at random moments under load; check that every "
                                            "acknowledged record is stored exactly once.")
    p.add_argument("--cycles", type=int, default=300)
    p.add_argument("--seed", type=int, default=None, help="default: chosen from the clock and printed")
    p.add_argument("--bin", default=os.environ.get("SIGHTLINE_BIN") or str(DEFAULT_BIN))
    p.add_argument("--json", type=Path, help="write the summary (with every life) to this file")
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--min-delay", type=float, default=0.05)
    p.add_argument("--max-delay", type=float, default=1.5)
    p.add_argument("--flush-interval", default="500ms")
    p.add_argument("--check-every", type=int, default=25, help="check the store every N cycles (0: at the end)")
    p.add_argument("--compaction-every", type=int, default=20,
                   help="every Nth life lasts %s-%ss so the kill lands around the first compaction pass "
                        "(0: never)" % COMPACTION_WINDOW_S)
    p.add_argument("--workdir", type=Path, help="default: a new temporary folder, removed after a pass")
    p.add_argument("--keep", action="store_true", help="keep the work folder after a pass")
    p.add_argument("--no-copy", action="store_true",
                   help="run --bin in place instead of a copy taken at the start (a rebuild during the run "
                        "would then mix builds)")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    seed = a.seed if a.seed is not None else int(time.time()) % 1_000_000
    cfg = Config(binary=a.bin, cycles=a.cycles, seed=seed, senders=a.senders, min_delay=a.min_delay,
                 max_delay=a.max_delay, flush_interval=a.flush_interval, check_every=a.check_every,
                 compaction_every=a.compaction_every, workdir=a.workdir, keep=a.keep, progress=not a.quiet,
                 copy_binary=not a.no_copy)
    meta = {"started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": _git("rev-parse", "HEAD"), "git_dirty_files": _git("status", "--porcelain").splitlines(),
            "argv": sys.argv[1:]}
    try:
        meta["version"] = subprocess.run([a.bin, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        pass
    print(f"crash loop: seed={seed} cycles={cfg.cycles} bin={cfg.binary}", file=sys.stderr, flush=True)
    try:
        summary = run(cfg)
    except SetupError as exc:
        print(f"crash loop could not run: {exc}", file=sys.stderr)
        return 2
    except CrashLoopFailure as exc:
        print(str(exc), file=sys.stderr)
        if a.json:
            a.json.write_text(json.dumps({"result": "FAIL", "seed": seed, **meta, "evidence": str(exc)}, indent=2))
        return 1
    summary.update(meta)
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2))
    short = {k: v for k, v in summary.items() if k not in ("lives", "check_log", "git_dirty_files")}
    print(json.dumps(short, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
