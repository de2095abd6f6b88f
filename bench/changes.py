#!/usr/bin/env python3
"""The "what changed" benchmark: explain, compare and log patterns over the query benchmark's data.

It fills a data folder with `sightline bench dataset` (10 million spans and 10 million logs over
7 days by default) unless the folder already holds one, starts `sightline serve` on it and asks,
`--runs` times each after a warm-up, with absolute time bounds at the end of the data:

- `GET /api/v1/explain` for the orders service over the last hour (failing requests, and slow
  ones: slower than each route's p95), against a reference in the same run: reading the same
  rows' promoted columns and attributes through `/api/v1/query` (what any answer must read);
- `GET /api/v1/compare` of orders 1.4.2 against 1.5.0 over the last 24 hours, against counting
  the same requests per route and version;
- `GET /api/v1/logs/patterns` over every log line (all 7 days) and over the last 24 hours, against
  counting the same lines per exact body (`GROUP BY body`), the grouping without the masking.

It prints one Markdown table for bench/README.md: per question the median wall time over
loopback, the reference's, and their ratio. Not a test.

    bench/changes.sh                       # the release build, 10M + 10M
    bench/changes.py --sightline BIN --data-dir DIR --spans 1M --logs 1M --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from queries import Server  # noqa: E402  (the same server wrapper as the query benchmark)

HOUR_NS = 3_600_000_000_000


def get(server: Server, path: str, params: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    url = f"{server.api}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=600) as answer:
        body = json.load(answer)
    return (time.perf_counter() - started) * 1000, body


def sql(server: Server, text: str) -> tuple[float, dict]:
    started = time.perf_counter()
    request = urllib.request.Request(server.api + "/api/v1/query", data=json.dumps({"sql": text}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as answer:
        body = json.load(answer)
    return (time.perf_counter() - started) * 1000, body


def first_row(body: dict) -> dict:
    """The first row of a query's answer, by column name."""
    row = body["rows"][0]
    if isinstance(row, dict):
        return row
    return dict(zip([c["name"] if isinstance(c, dict) else c for c in body["columns"]], row))


def median_ms(ask, runs: int) -> tuple[float, dict]:
    ask()  # warm-up: file metadata and page cache, for both sides alike
    timed = [ask() for _ in range(runs)]
    return statistics.median(t for t, _ in timed), timed[-1][1]


def ts(ns: int) -> str:
    """A time as an SQL literal (to the microsecond)."""
    from datetime import datetime, timezone
    return "TIMESTAMP '" + datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "'"


def dataset_args(description: str, runs_help: str) -> argparse.Namespace:
    """The arguments of a benchmark over the query benchmark's data folder: the binary, the
    folder and its size, and the timed runs; the folder is filled when empty."""
    parser = argparse.ArgumentParser(description=description)
    default_bin = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/sightline-target")) / "release/sightline"
    parser.add_argument("--sightline", default=os.environ.get("SIGHTLINE", str(default_bin)),
                        help="the sightline binary (default: the release build)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "sightline-bench-queries",
                        help="kept between runs (shared with bench/queries.py); filled when empty")
    parser.add_argument("--spans", default="10M")
    parser.add_argument("--logs", default="10M")
    parser.add_argument("--days", default="7")
    parser.add_argument("--runs", type=int, default=5, help=runs_help)
    args = parser.parse_args()
    if not os.access(args.sightline, os.X_OK):
        raise SystemExit(f"no sightline binary at {args.sightline}: cargo build --release -p sightline, or pass --sightline")
    if not (args.data_dir / "catalog.db").exists():
        print(f"filling {args.data_dir} ({args.spans} spans, {args.logs} logs, {args.days} days)...", file=sys.stderr)
        subprocess.run([args.sightline, "bench", "dataset", "--data-dir", str(args.data_dir),
                        "--spans", args.spans, "--logs", args.logs, "--days", args.days], check=True)
    return args


def main() -> int:
    args = dataset_args(__doc__.split("\n\n")[0], "timed runs per question (after one warm-up)")

    work = Path(tempfile.mkdtemp(prefix="sightline-bench-changes-"))
    server = Server(args.sightline, args.data_dir, work)
    rows = []
    try:
        _, found = sql(server, "SELECT CAST(max(start_time) AS BIGINT) AS end_ns, count(*) AS spans FROM spans")
        end_ns = int(first_row(found)["end_ns"]) + 1
        span_count = first_row(found)["spans"]
        _, found = sql(server, "SELECT count(*) AS logs FROM logs")
        log_count = first_row(found)["logs"]
        hour = (end_ns - HOUR_NS, end_ns)
        day = (end_ns - 24 * HOUR_NS, end_ns)
        window = lambda w: {"start": str(w[0]), "end": str(w[1])}  # noqa: E731

        read_hour = (
            "SELECT service_version, environment, http_method, http_status_code, exception_type, "
            "attributes, resource_attributes FROM spans WHERE kind IN ('server', 'consumer') "
            f"AND service_name = 'orders' AND start_time >= {ts(hour[0] - HOUR_NS)} AND start_time < {ts(hour[1])}")
        must_read = ("SELECT count(*) AS n, sum(length(attributes) + length(resource_attributes) "
                     "+ length(coalesce(service_version, '')) + length(coalesce(exception_type, ''))) AS bytes "
                     f"FROM ({read_hour})")
        reference, _ = median_ms(lambda: sql(server, must_read), args.runs)
        for what in ("errors", "latency"):
            ms, answer = median_ms(lambda: get(server, "/api/v1/explain",
                                               {"service": "orders", "what": what, **window(hour)}), args.runs)
            top = answer["dimensions"][0] if answer["dimensions"] else None
            note = f"{answer['selection']['requests']:,} bad of {answer['selection']['requests'] + answer['baseline']['requests']:,}; top: " + (
                f"{top['key']}={top['value']}" if top else "none")
            rows.append((f"explain {what}, orders, last hour (and the hour before)", ms, reference,
                         "reading the same rows' columns", note))

        counted = ("SELECT coalesce(http_route, name) AS route, service_version, count(*) AS n FROM spans "
                   "WHERE kind IN ('server', 'consumer') AND service_name = 'orders' "
                   f"AND service_version IN ('1.4.2', '1.5.0') AND start_time >= {ts(day[0])} AND start_time < {ts(day[1])} "
                   "GROUP BY 1, 2")
        reference, _ = median_ms(lambda: sql(server, counted), args.runs)
        ms, answer = median_ms(lambda: get(server, "/api/v1/compare", {
            "service": "orders", "baseline": "1.4.2", "candidate": "1.5.0", **window(day)}), args.runs)
        rows.append(("compare orders 1.4.2 → 1.5.0, last 24 h", ms, reference, "requests per route and version",
                     f"{answer['baseline_requests'] + answer['candidate_requests']:,} requests; verdict {answer['verdict']}"))

        _, found = sql(server, "SELECT CAST(min(time) AS BIGINT) AS start_ns FROM logs")
        everything = (int(first_row(found)["start_ns"]), end_ns + HOUR_NS)
        for label, w in (("every log line", everything), ("last 24 h", day)):
            grouped = (f"SELECT body, count(*) AS n FROM logs WHERE time >= {ts(w[0])} AND time < {ts(w[1])} "
                       "GROUP BY body")
            reference, _ = median_ms(lambda: sql(server, f"SELECT count(*) AS groups FROM ({grouped})"), args.runs)
            ms, answer = median_ms(lambda: get(server, "/api/v1/logs/patterns",
                                               {**window(w), "baseline": "0", "limit": "50"}), args.runs)
            rows.append((f"log patterns, {label}", ms, reference, "GROUP BY body",
                         f"{answer['lines']:,} lines in {answer['distinct']:,} patterns"))
    finally:
        server.stop()

    print(f"{span_count:,} spans and {log_count:,} logs; median of {args.runs} runs, wall time over loopback\n")
    print("| question | Sightline | reference | ratio | what | answer |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for name, ms, reference, what, note in rows:
        print(f"| {name} | {ms:,.0f} ms | {reference:,.0f} ms | {ms / max(reference, 0.001):.2f} | {what} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
