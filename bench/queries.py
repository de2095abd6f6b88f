#!/usr/bin/env python3
"""The query benchmark: Sightline and DuckDB asked the same questions over the same Parquet files.

It fills a data folder with `sightline bench dataset` (10 million spans and 10 million logs over
7 days by default) unless the folder already holds one, starts `sightline serve` on it, and asks
each question `--runs` times through Sightline's API and through DuckDB (the Python package,
in-process, reading the segment files the server reads). It prints one Markdown table: per
question, the median time of each and their ratio (Sightline / DuckDB; below 1 is Sightline
faster).

Sightline's time is the engine's own (`elapsed_ms` of /api/v1/query: planning, segment pruning,
execution and rows to JSON), so that both sides are measured in-process; the wall time of the
HTTP round trip is shown beside it. The trace question uses the trace API (`/api/v1/traces/ID`:
the spans and logs of one trace), timed by the client over loopback.

Both engines get the same questions with absolute time bounds (the last hour and the last day of
the data, whenever the benchmark runs) and must agree on the answers' row counts; the counts per
service must match exactly, as a check that both read the same rows.

With `--baseline OTHER_BIN`, the same questions are also asked of a second Sightline build on
the same folder (one server at a time), and a before/after column compares the two: how an
optimization is measured in one run.

    bench/queries.sh                        # the release build, 10M + 10M (a few minutes to fill)
    bench/queries.py --sightline BIN --data-dir DIR --spans 1M --logs 1M --runs 3
    bench/queries.sh --baseline /tmp/sightline-before
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path


@dataclass
class Question:
    name: str
    sightline: str  # SQL for Sightline (DataFusion dialect), or "trace:" for the trace API
    duckdb: str  # SQL for DuckDB over the views `spans` and `logs`
    kind: str  # "window" (time-bounded, served by pruning) or "full" (a scan of everything)


def questions(end: datetime, trace_id: str, phrase: str) -> list[Question]:
    hour = (end - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    day = (end - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stop = (end + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def both(sql: str) -> tuple[str, str]:
        """The two dialects differ in percentiles and timestamp literals only."""
        ours = (sql.replace("{P99}", "approx_percentile_cont(duration_ns, 0.99)")
                .replace("{P95}", "approx_percentile_cont(duration_ns, 0.95)")
                .replace("{T}", "TIMESTAMP"))
        theirs = (sql.replace("{P99}", "approx_quantile(duration_ns, 0.99)")
                  .replace("{P95}", "approx_quantile(duration_ns, 0.95)")
                  .replace("{T}", "TIMESTAMPTZ"))
        return ours, theirs

    route_hour = both(f"""
        SELECT service_name, http_route, count(*) / 3600.0 AS per_second,
               sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors,
               {{P99}} / 1e6 AS p99_ms
        FROM spans
        WHERE start_time >= {{T}} '{hour}' AND start_time < {{T}} '{stop}'
          AND kind IN ('server', 'consumer')
        GROUP BY service_name, http_route ORDER BY service_name, http_route""")
    slowest_day = both(f"""
        SELECT service_name, http_route, {{P95}} / 1e6 AS p95_ms, count(*) AS requests
        FROM spans
        WHERE start_time >= {{T}} '{day}' AND start_time < {{T}} '{stop}'
          AND kind IN ('server', 'consumer')
        GROUP BY service_name, http_route ORDER BY p95_ms DESC LIMIT 10""")
    phrase_day = both(f"""
        SELECT time, service_name, body FROM logs
        WHERE time >= {{T}} '{day}' AND time < {{T}} '{stop}'
          AND severity_number >= 17 AND body LIKE '%{phrase}%'
        ORDER BY time DESC LIMIT 100""")
    phrase_all = both(f"""
        SELECT count(*) AS lines FROM logs WHERE body LIKE '%{phrase}%'""")
    per_service = both("""
        SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name ORDER BY service_name""")
    p99_all = both("""
        SELECT service_name, http_route, {P99} / 1e6 AS p99_ms FROM spans
        WHERE kind IN ('server', 'consumer')
        GROUP BY service_name, http_route ORDER BY service_name, http_route""")
    trace_duckdb = (f"SELECT (SELECT count(*) FROM spans WHERE trace_id = '{trace_id}') AS spans, "
                    f"(SELECT count(*) FROM logs WHERE trace_id = '{trace_id}') AS logs")
    return [
        Question("trace by id (spans and logs)", f"trace:{trace_id}", trace_duckdb, "window"),
        Question("rate, errors, p99 per route, last hour", *route_hour, "window"),
        Question("10 slowest routes (p95), last 24 h", *slowest_day, "window"),
        Question(f"error logs containing '{phrase}', last 24 h", *phrase_day, "window"),
        Question(f"logs containing '{phrase}', everything", *phrase_all, "full"),
        Question("spans per service, everything", *per_service, "full"),
        Question("p99 per route, everything", *p99_all, "full"),
    ]


class Server:
    """`sightline serve` on the data folder, every listener on a free loopback port."""

    def __init__(self, binary: str, data_dir: Path, work: Path):
        self.ready = work / "ready.json"
        self.ready.unlink(missing_ok=True)  # left by a server before this one
        self.log = open(work / "serve.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--data-dir", str(data_dir), "--otlp-grpc", "127.0.0.1:0",
             "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0", "--ready-file", str(self.ready)],
            stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 120
        while not (self.ready.exists() and self.ready.stat().st_size > 0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sightline serve did not start; see {work / 'serve.log'}")
            time.sleep(0.1)
        self.api = "http://" + json.loads(self.ready.read_text())["listen"]

    def query(self, sql: str) -> tuple[float, float, int]:
        """(engine ms, wall ms, rows)"""
        body = json.dumps({"sql": sql}).encode()
        request = urllib.request.Request(self.api + "/api/v1/query", data=body,
                                         headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=600) as answer:
                result = json.load(answer)
        except urllib.error.HTTPError as e:
            raise SystemExit(f"Sightline refused the query ({e.code}): {e.read().decode()}\n{sql}")
        wall = (time.perf_counter() - started) * 1000
        return result["elapsed_ms"], wall, len(result["rows"])

    def trace(self, trace_id: str) -> tuple[float, float, int]:
        started = time.perf_counter()
        with urllib.request.urlopen(f"{self.api}/api/v1/traces/{trace_id}", timeout=600) as answer:
            result = json.load(answer)
        wall = (time.perf_counter() - started) * 1000
        return wall, wall, len(result.get("spans", []))

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def ask_of(server: Server, q: Question, trace_id: str):
    """The call that asks one question of a server, returning (engine ms, wall ms, rows)."""
    if q.sightline.startswith("trace:"):
        return lambda: server.trace(trace_id)
    return lambda: server.query(q.sightline)


def fmt_ms(ms: float) -> str:
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sightline-target")) / "release/sightline"
    parser.add_argument("--sightline", default=os.environ.get("SIGHTLINE", str(default_bin)),
                        help="the sightline binary (default: the release build)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "sightline-bench-queries",
                        help="kept between runs; filled by `sightline bench dataset` when empty")
    parser.add_argument("--spans", default="10M")
    parser.add_argument("--logs", default="10M")
    parser.add_argument("--days", default="7")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per question (after one warm-up)")
    parser.add_argument("--phrase", default="timed out")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="DuckDB threads (Sightline uses every core)")
    parser.add_argument("--baseline", help="another sightline binary to compare with (before/after)")
    args = parser.parse_args()

    try:
        import duckdb
    except ImportError:
        raise SystemExit("the duckdb package is missing: pip install -r tests/e2e/requirements.txt")
    if not os.access(args.sightline, os.X_OK):
        raise SystemExit(f"no sightline binary at {args.sightline}: cargo build --release -p sightline, or pass --sightline")

    if not (args.data_dir / "catalog.db").exists():
        print(f"filling {args.data_dir} ({args.spans} spans, {args.logs} logs, {args.days} days)...", file=sys.stderr)
        subprocess.run([args.sightline, "bench", "dataset", "--data-dir", str(args.data_dir),
                        "--spans", args.spans, "--logs", args.logs, "--days", args.days], check=True)

    segments = args.data_dir / "segments"
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet('{segments}/spans/**/*.parquet')")
    con.execute(f"CREATE VIEW logs AS SELECT * FROM read_parquet('{segments}/logs/**/*.parquet')")
    span_count, log_count, end_ns = con.execute(
        "SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM logs), "
        "(SELECT epoch_ns(max(start_time)) FROM spans)").fetchone()
    end = datetime.fromtimestamp(end_ns / 1e9, tz=timezone.utc)
    # A trace from the last hour with many spans: what an incident link opens.
    trace_id = con.execute(
        "SELECT trace_id FROM spans WHERE start_time >= ? GROUP BY trace_id ORDER BY count(*) DESC, trace_id LIMIT 1",
        [end - timedelta(hours=1)]).fetchone()[0]
    files = sum(1 for _ in segments.rglob("*.parquet"))
    size = sum(p.stat().st_size for p in segments.rglob("*.parquet"))

    work = Path(tempfile.mkdtemp(prefix="sightline-bench-"))
    asked = questions(end, trace_id, args.phrase)
    before: dict[str, float] = {}
    if args.baseline:
        server = Server(args.baseline, args.data_dir, work)
        try:
            for q in asked:
                ask = ask_of(server, q, trace_id)
                ask()
                before[q.name] = statistics.median(ask()[0] for _ in range(args.runs))
        finally:
            server.stop()
    server = Server(args.sightline, args.data_dir, work)
    rows_out = []
    mismatches = []
    try:
        for q in asked:
            ask = ask_of(server, q, trace_id)
            ask()  # warm-up: file metadata and page cache, for both engines alike
            ours = [ask() for _ in range(args.runs)]
            con.execute(q.duckdb).fetchall()
            theirs = []
            duck_rows = None
            for _ in range(args.runs):
                started = time.perf_counter()
                result = con.execute(q.duckdb).fetchall()
                theirs.append((time.perf_counter() - started) * 1000)
                duck_rows = result
            engine = statistics.median(r[0] for r in ours)
            wall = statistics.median(r[1] for r in ours)
            duck = statistics.median(theirs)
            our_rows = ours[-1][2]
            expected = duck_rows[0][0] if q.sightline.startswith("trace:") else len(duck_rows)
            if our_rows != expected:
                mismatches.append(f"{q.name}: Sightline {our_rows} rows, DuckDB {expected}")
            rows_out.append((q, engine, wall, duck, our_rows))
        # Exact agreement on what both read.
        theirs_counts = dict(con.execute("SELECT service_name, count(*) FROM spans GROUP BY service_name").fetchall())
        body = json.dumps({"sql": "SELECT service_name, count(*) AS n FROM spans GROUP BY service_name"}).encode()
        request = urllib.request.Request(server.api + "/api/v1/query", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as answer:
            ours_counts = {}
            for row in json.load(answer)["rows"]:
                values = list(row.values()) if isinstance(row, dict) else row
                ours_counts[values[0]] = values[1]
        if ours_counts != theirs_counts:
            mismatches.append(f"spans per service differ: Sightline {ours_counts}, DuckDB {theirs_counts}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{span_count:,} spans and {log_count:,} logs in {files} Parquet files ({size / 2**20:.0f} MiB), "
          f"up to {end:%Y-%m-%d %H:%M} UTC; median of {args.runs} runs after a warm-up; "
          f"DuckDB {duckdb.__version__} with {args.threads} threads\n")
    extra = " baseline | baseline / Sightline |" if before else ""
    print("| question | kind | rows | Sightline | (API wall) | DuckDB | Sightline / DuckDB |" + extra)
    print("| --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if before else ""))
    for q, engine, wall, duck, n in rows_out:
        ratio = engine / duck if duck > 0 else float("inf")
        line = f"| {q.name} | {q.kind} | {n} | {fmt_ms(engine)} | {fmt_ms(wall)} | {fmt_ms(duck)} | {ratio:.2f}x |"
        if before:
            line += f" {fmt_ms(before[q.name])} | {before[q.name] / engine:.2f}x |"
        print(line)
    if mismatches:
        print("\nthe engines disagree:\n  " + "\n  ".join(mismatches), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
