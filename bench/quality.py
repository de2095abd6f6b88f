#!/usr/bin/env python3
"""The telemetry-quality benchmark: the quality report over the query benchmark's data.

It fills a data folder with `sightline bench dataset` (10 million spans and 10 million logs over
7 days by default) unless the folder already holds one, starts `sightline serve` on it and asks
`GET /api/v1/quality` for the last 24 hours of the data:

- once at first, when the monitor has no hour summaries yet: every hour of the last week is
  summarized (attribute key sets with their types, the minutes each group was active, logs with
  and without trace ids, metric units and magnitudes, distinct counts of span names and labels,
  orphan spans);
- then `--runs` times, when only the hours whose data changed (none here) are summarized again:
  the report reads the summaries it keeps (the target: under 2 s);

against a reference in the same run: one plain scan of the same 24 hours of spans (`count(*)`
per service and span name), the least a report that rescanned its window would read. It prints
one Markdown table for bench/README.md. Not a test.

    bench/quality.sh                       # the release build, 10M + 10M
    bench/quality.py --sightline BIN --data-dir DIR --spans 1M --logs 1M --runs 3
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from changes import dataset_args, first_row, get, median_ms, sql, ts  # noqa: E402
from queries import Server  # noqa: E402

HOUR_NS = 3_600_000_000_000


def main() -> int:
    args = dataset_args(__doc__.split("\n\n")[0], "timed runs of the warm report (after the first)")
    # The hour summaries are the monitor's (kept under monitor/): start without them, so the
    # first report makes them all.
    kept = args.data_dir / "monitor" / "quality_hours.jsonl"
    if kept.exists():
        kept.unlink()

    work = Path(tempfile.mkdtemp(prefix="sightline-bench-quality-"))
    server = Server(args.sightline, args.data_dir, work)
    try:
        _, found = sql(server, "SELECT CAST(max(start_time) AS BIGINT) AS end_ns, count(*) AS spans FROM spans")
        end_ns = int(first_row(found)["end_ns"]) + 1
        span_count = first_row(found)["spans"]
        day = {"start": str(end_ns - 24 * HOUR_NS), "end": str(end_ns)}
        started = time.perf_counter()
        _, first = get(server, "/api/v1/quality", day)
        first_ms = (time.perf_counter() - started) * 1000
        warm_ms, answer = median_ms(lambda: get(server, "/api/v1/quality", day), args.runs)
        scan = ("SELECT service_name, name, count(*) AS n FROM spans "
                f"WHERE start_time >= {ts(end_ns - 24 * HOUR_NS)} AND start_time < {ts(end_ns)} GROUP BY 1, 2")
        reference_ms, counted = median_ms(lambda: sql(server, f"SELECT count(*) AS groups, sum(n) AS spans FROM ({scan})"),
                                          args.runs)
        day_spans = first_row(counted)["spans"]
        kept_hours = sum(1 for _ in kept.open()) if kept.exists() else 0
    finally:
        server.stop()

    findings = answer["findings"]
    by_check: dict[str, int] = {}
    for f in findings:
        by_check[f["check"]] = by_check.get(f["check"], 0) + 1
    note = ", ".join(f"{k} {v}" for k, v in sorted(by_check.items())) or "none"
    print(f"{span_count:,} spans ({day_spans:,} in the last 24 hours); median of {args.runs} runs, wall time over loopback\n")
    print("| question | Sightline | reference | ratio | answer |")
    print("| --- | ---: | ---: | ---: | --- |")
    print(f"| first report, last 24 h (summarizes the week: {kept_hours} hours kept) | {first_ms:,.0f} ms | "
          f"{reference_ms:,.0f} ms | {first_ms / max(reference_ms, 0.001):.2f} | {len(first['findings'])} findings |")
    print(f"| report, last 24 h (summaries kept) | {warm_ms:,.0f} ms | {reference_ms:,.0f} ms | "
          f"{warm_ms / max(reference_ms, 0.001):.2f} | {len(findings)} findings: {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
