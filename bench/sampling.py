#!/usr/bin/env python3
"""The tail-sampling benchmark: bytes on disk per day of the demo shop with and without sampling,
and what sampling adds to a maintenance pass.

It fills a data folder with `sightline bench dataset` (10 million spans over 7 days by default)
unless it already holds one, makes two copies of it, and on each starts `sightline serve`:

- the reference: `[sampling]` off; one `POST /api/v1/admin/maintenance` (compaction of what the
  dataset wrote, retention);
- sampled: `[sampling] enabled = true` with the defaults (full fidelity 24 h, keep_share 0.1,
  p99, rare routes under 100 an hour); one maintenance pass, which samples every hour older than
  a day and compacts, then a second that deletes the replaced files (`delete_grace = "0s"`).

It prints a Markdown table for bench/README.md: span bytes per day (sampled days, and the last day
at full fidelity), the pass's wall time on each side and their ratio, traces seen and kept, and the
check that rollup totals did not move. Not a test.

    bench/sampling.sh                                  # the release build, 10M spans
    bench/sampling.py --sightline BIN --spans 1M --days 3
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DAY_NS = 86_400_000_000_000


class Server:
    def __init__(self, binary: str, data: Path, config: str, work: Path, name: str):
        work.mkdir(parents=True, exist_ok=True)
        self.ready = work / f"{name}.ready.json"
        self.ready.unlink(missing_ok=True)
        (work / f"{name}.toml").write_text(config)
        self.log = open(work / f"{name}.log", "wb")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(work / f"{name}.toml"), "--data-dir", str(data),
             "--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0", "--listen", "127.0.0.1:0",
             "--ready-file", str(self.ready)], stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 300
        while not (self.ready.exists() and self.ready.stat().st_size > 0):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sightline serve did not start; see {work / f'{name}.log'}")
            time.sleep(0.1)
        self.api = "http://" + json.loads(self.ready.read_text())["listen"]

    def post(self, path: str) -> tuple[float, dict]:
        started = time.perf_counter()
        request = urllib.request.Request(self.api + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=3600) as answer:
            body = json.load(answer)
        return (time.perf_counter() - started) * 1000, body

    def sql(self, text: str) -> list:
        request = urllib.request.Request(self.api + "/api/v1/query", data=json.dumps({"sql": text}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as answer:
            return json.load(answer)["rows"]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def span_bytes_by_day(data: Path, end_ns: int) -> dict[int, int]:
    """Span segment bytes by day back from the data's end (0: the last day)."""
    out: dict[int, int] = {}
    for path in (data / "segments" / "spans").rglob("*.parquet"):
        day, hour = path.parent.parent.name, path.parent.name
        t = calendar.timegm(time.strptime(f"{day} {hour}", "%Y-%m-%d %H"))
        back = int((end_ns - int(t * 1e9)) // DAY_NS)
        out[back] = out.get(back, 0) + path.stat().st_size
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--sightline", default=os.environ.get("SIGHTLINE", str(here / "target/release/sightline")))
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "sightline-bench-queries",
                        help="the dataset (filled when empty; never changed: the runs use copies)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "sightline-bench-sampling")
    parser.add_argument("--spans", default="10M")
    parser.add_argument("--days", default="7")
    parser.add_argument("--rare-route-below", type=int, default=100,
                        help="[sampling] rare_route_below (a small dataset's routes are all rare at 100)")
    args = parser.parse_args()
    if not (args.data_dir / "catalog.db").exists():
        print(f"filling {args.data_dir} ({args.spans} spans, {args.days} days)...", file=sys.stderr)
        subprocess.run([args.sightline, "bench", "dataset", "--data-dir", str(args.data_dir), "--spans", args.spans,
                        "--logs", args.spans, "--days", args.days], check=True)
    shutil.rmtree(args.work, ignore_errors=True)
    rows = {}
    for name, config in (("reference", '[storage]\ndelete_grace = "0s"\n'),
                         ("sampled", f'[sampling]\nenabled = true\nrare_route_below = {args.rare_route_below}\n'
                                     '[storage]\ndelete_grace = "0s"\n')):
        copy = args.work / name / "data"
        print(f"copying the dataset for {name}...", file=sys.stderr)
        shutil.copytree(args.data_dir, copy)
        server = Server(args.sightline, copy, config, args.work / name, name)
        try:
            end_ns = int(server.sql("SELECT CAST(max(start_time) AS BIGINT) AS t FROM spans")[0][0])
            rollups = server.sql("SELECT sum(requests) FROM span_rollups")[0][0]
            spans = server.sql("SELECT count(*) FROM spans")[0][0]
            ms, report = server.post("/api/v1/admin/maintenance")
            server.post("/api/v1/admin/maintenance")  # deletes the replaced files
            rows[name] = {
                "ms": ms, "report": report, "bytes": span_bytes_by_day(copy, end_ns), "spans_before": spans,
                "spans_after": server.sql("SELECT count(*) FROM spans")[0][0],
                "estimate": server.sql("SELECT sum(1.0 / sample_rate) FROM spans")[0][0],
                "rollups_same": server.sql("SELECT sum(requests) FROM span_rollups")[0][0] == rollups,
            }
        finally:
            server.stop()
    ref, sam = rows["reference"], rows["sampled"]
    days = sorted(ref["bytes"])
    old = [d for d in days if d >= 1]
    mib = lambda b: b / 2**20  # noqa: E731
    per_day = lambda r, ds: sum(r["bytes"].get(d, 0) for d in ds) / max(len(ds), 1)  # noqa: E731
    report = sam["report"]["sampling"]
    print(f"{ref['spans_before']:,} spans over {len(days)} days; one maintenance pass each, wall time\n")
    print("| | without sampling | with sampling | ratio |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| span bytes per day, days older than full fidelity | {mib(per_day(ref, old)):.1f} MiB | "
          f"{mib(per_day(sam, old)):.1f} MiB | {per_day(sam, old) / per_day(ref, old):.2f} |")
    print(f"| span bytes, the last day (full fidelity) | {mib(per_day(ref, [0])):.1f} MiB | "
          f"{mib(per_day(sam, [0])):.1f} MiB | {per_day(sam, [0]) / max(per_day(ref, [0]), 1):.2f} |")
    print(f"| spans stored | {ref['spans_after']:,} | {sam['spans_after']:,} | "
          f"{sam['spans_after'] / ref['spans_after']:.2f} |")
    pass_ratio = f"{sam['ms'] / ref['ms']:.2f}" if ref["ms"] >= 100 else "— (nothing to compact)"
    print(f"| maintenance pass | {ref['ms'] / 1000:.1f} s | {sam['ms'] / 1000:.1f} s | {pass_ratio} |")
    if report["hours"]:
        print(f"\nsampling: {sam['ms'] / report['hours']:.0f} ms per hour of spans "
              f"({report['spans_before'] / report['hours']:,.0f} spans read, {report['spans_after'] / report['hours']:,.0f} written)")
    print(f"\nsampled {report['hours']} hours: {report['traces_kept']:,} of {report['traces_seen']:,} traces kept "
          f"({json.dumps(report['kept_by_reason'])}); sum(1/sample_rate) = {sam['estimate']:,.0f} "
          f"for {sam['spans_before']:,} spans; rollups unchanged: {sam['rollups_same'] and ref['rollups_same']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
