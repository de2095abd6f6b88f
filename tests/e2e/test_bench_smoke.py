"""A short run of `sightline bench ingest` against a real server: the harness works and its
figures are consistent with what the server stored. (A smoke run, not a benchmark: no figure is
compared with a speed.)"""

import re
import subprocess
import sys
from pathlib import Path

from conftest import sightline_bin

REPO = Path(__file__).resolve().parents[2]


def figure(out: str, name: str) -> str:
    match = re.search(rf"│ {re.escape(name)}\s*┆ ([^│]+?)\s*│", out)
    assert match, f"{name!r} missing from:\n{out}"
    return match.group(1)


def test_bench_ingest_reports_what_the_server_stored(sightline_factory):
    server = sightline_factory(extra_args=["--flush-interval", "1s"], name="bench").start()
    out = subprocess.run(
        [sightline_bin(), "bench", "ingest", "--endpoint", server.otlp_http_url, "--clients", "2",
         "--duration", "2s", "--requests-per-body", "5", "--server-pid", str(server.proc.pid),
         "--api-url", server.api_url],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    spans, logs = (int(x) for x in figure(out.stdout, "accepted spans / logs").split(" / "))
    assert spans > 0 and logs > 0
    stored = server.rows("SELECT count(*) AS n, count(DISTINCT span_id) AS ids FROM spans")[0]
    assert stored == {"n": spans, "ids": spans}, "every acknowledged span is stored once, with unique ids"
    assert server.rows("SELECT count(*) AS n FROM logs")[0]["n"] == logs
    assert figure(out.stdout, "requests failed") == "0"
    assert figure(out.stdout, "server peak RSS").endswith("MiB")
    per_span = float(figure(out.stdout, "bytes on disk per span").split()[0])
    assert per_span > 0


def test_bench_pages_times_every_page_from_the_server_timing_header(sightline_factory):
    server = sightline_factory(name="pages").start()
    demo = subprocess.run(
        [sightline_bin(), "demo", "--endpoint", server.otlp_http_url, "--backfill", "2m", "--duration", "1s",
         "--rate", "5"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert demo.returncode == 0, demo.stderr
    out = subprocess.run(
        [sightline_bin(), "bench", "pages", "--url", server.api_url, "--runs", "2", "--ranges", "15m"],
        capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| `")]
    pages = [row.split("`")[1] for row in rows]
    assert "/?range=15m" in pages and "/logs?range=15m" in pages, out.stdout
    assert {f"/services/{s}?range=15m" for s in ("api-gateway", "orders", "payments", "email-worker")} <= set(pages)
    assert any(p.startswith("/traces/") for p in pages), out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1] == "200", row
        assert re.fullmatch(r"\d+\.\d ms", cells[2]), f"no server time read from Server-Timing: {row}"
    assert re.search(r"\d+ of \d+ pages answered under 300 ms", out.stdout), out.stdout


def test_bench_queries_asks_sightline_and_duckdb_the_same_questions(tmp_path):
    """A small dataset through the whole query benchmark: generation into a data folder, a server
    on it, DuckDB over the same Parquet files; the engines must agree on every answer's size."""
    data = tmp_path / "data"
    dataset = subprocess.run(
        [sightline_bin(), "bench", "dataset", "--data-dir", str(data), "--spans", "30k", "--logs", "20k",
         "--days", "1"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert dataset.returncode == 0, dataset.stderr
    assert re.search(r"wrote 30000 spans and 20000 logs", dataset.stdout), dataset.stdout
    assert re.search(r"\d+\.\d bytes per span", dataset.stdout), dataset.stdout
    again = subprocess.run(
        [sightline_bin(), "bench", "dataset", "--data-dir", str(data), "--spans", "1k"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert again.returncode == 1 and "already holds" in again.stderr, again.stderr
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "queries.py"), "--sightline", sightline_bin(), "--data-dir", str(data),
         "--runs", "1"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "30,000 spans and 20,000 logs" in out.stdout, out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 7, out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"\d+(\.\d+)? (ms|s)", cells[3]) and re.fullmatch(r"\d+\.\d\dx", cells[6]), row
    counts = {cells[0]: int(cells[2]) for cells in ([c.strip() for c in r.strip("|").split("|")] for r in rows)}
    assert counts["spans per service, everything"] == 4, counts
    assert counts["trace by id (spans and logs)"] > 1, counts


def test_bench_monitor_evaluates_generated_slos_and_rules_over_a_dataset(tmp_path):
    """`sightline bench monitor` over a small dataset written with latency thresholds: every cycle
    evaluates every SLO's two alerts and the rules' instances without a failed rule, and the
    report gives the cycle against its reference scan."""
    data = tmp_path / "data"
    dataset = subprocess.run(
        [sightline_bin(), "bench", "dataset", "--data-dir", str(data), "--spans", "20k", "--logs", "5k",
         "--days", "1", "--latency-thresholds", "100ms,300ms,1s"],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert dataset.returncode == 0, dataset.stderr
    out = subprocess.run(
        [sightline_bin(), "bench", "monitor", "--data-dir", str(data), "--slos", "10", "--rules", "12",
         "--cycles", "2"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    cycles = re.findall(r"cycle \d+: \d+ ms, (\d+) instances, (\d+) failed rules", out.stderr)
    assert len(cycles) == 2, out.stderr
    for instances, failed in cycles:
        assert int(instances) >= 10 * 2 + 12, out.stderr
        assert failed == "0", out.stderr
    assert re.search(r"median \d+ ms .*target under 1000 ms", out.stdout), out.stdout
    assert re.search(r"ratio to the reference: \d+\.\d×", out.stdout), out.stdout
    missing = subprocess.run(
        [sightline_bin(), "bench", "monitor", "--data-dir", str(tmp_path / "empty")],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert missing.returncode == 1 and "holds no Sightline data" in missing.stderr, missing.stderr


def test_bench_changes_times_explain_compare_and_patterns_against_their_references(tmp_path):
    """bench/changes.py over a small dataset: every question answered, each row a time, a
    reference time and their ratio, and the answers' own numbers (lines in patterns, requests
    compared) from the server."""
    data = tmp_path / "data"
    dataset = subprocess.run(
        [sightline_bin(), "bench", "dataset", "--data-dir", str(data), "--spans", "30k", "--logs", "20k",
         "--days", "1"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert dataset.returncode == 0, dataset.stderr
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "changes.py"), "--sightline", sightline_bin(), "--data-dir", str(data),
         "--runs", "1"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "30,000 spans and 20,000 logs" in out.stdout, out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and " ms |" in line]
    names = [r.strip("|").split("|")[0].strip() for r in rows]
    assert len(rows) == 5 and any(n.startswith("explain errors") for n in names) \
        and any(n.startswith("compare") for n in names), out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"[\d,]+ ms", cells[1]) and re.fullmatch(r"[\d,]+ ms", cells[2]) \
            and re.fullmatch(r"\d+\.\d\d", cells[3]), row
    everything = next(r for r in rows if "every log line" in r)
    assert "20,000 lines in" in everything, everything


def test_bench_quality_times_the_first_and_the_kept_report_against_a_scan(tmp_path):
    """bench/quality.py over a small dataset of two days: the first report summarizes every
    hour with data and keeps them on disk, the next reads them; both rows a time, the scan's time
    and their ratio."""
    data = tmp_path / "data"
    dataset = subprocess.run(
        [sightline_bin(), "bench", "dataset", "--data-dir", str(data), "--spans", "30k", "--logs", "10k",
         "--days", "2"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert dataset.returncode == 0, dataset.stderr
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "quality.py"), "--sightline", sightline_bin(), "--data-dir", str(data),
         "--runs", "1"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("30,000 spans"), out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and " ms |" in line]
    assert len(rows) == 2 and rows[0].startswith("| first report") and rows[1].startswith("| report"), out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert re.fullmatch(r"[\d,]+ ms", cells[1]) and re.fullmatch(r"[\d,]+ ms", cells[2]) \
            and re.fullmatch(r"\d+\.\d\d", cells[3]), row
    # Two days of data: at least 48 hours were summarized and kept.
    kept = int(re.search(r"summarizes the week: (\d+) hours kept", rows[0]).group(1))
    assert kept >= 48, rows[0]


def test_bench_sampling_reports_bytes_per_day_and_the_pass_with_and_without(tmp_path):
    """bench/sampling.py over a small dataset of three days: both runs finish, the sampled days'
    bytes fell, the last day's did not, and the rollups did not move."""
    data = tmp_path / "data"
    dataset = subprocess.run(
        [sightline_bin(), "bench", "dataset", "--data-dir", str(data), "--spans", "60k", "--logs", "5k",
         "--days", "3"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert dataset.returncode == 0, dataset.stderr
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "sampling.py"), "--sightline", sightline_bin(), "--data-dir", str(data),
         "--work", str(tmp_path / "work"), "--rare-route-below", "5"], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "60,000 spans over" in out.stdout, out.stdout
    ratio = lambda label: float(next(l for l in out.stdout.splitlines() if l.startswith(f"| {label}")).rstrip(" |").split("|")[-1])  # noqa: E731
    assert ratio("span bytes per day, days older") < 0.7, out.stdout
    assert 0.9 < ratio("span bytes, the last day") < 1.1, out.stdout
    assert "rollups unchanged: True" in out.stdout, out.stdout
