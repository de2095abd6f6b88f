"""A short run of `sightline bench ingest` against a real server: the harness works and its
figures are consistent with what the server stored. (A smoke run, not a benchmark: no figure is
compared with a speed.)"""

import re
import subprocess

from conftest import sightline_bin


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
