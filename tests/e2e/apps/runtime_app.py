"""A Python process reporting its runtime metrics the way real services do, for test_runtime_metrics.py.

opentelemetry-instrumentation-system-metrics (its default configuration: process.*, cpython.gc.*,
the deprecated process.runtime.cpython.* and the host's system.*) observed by the OpenTelemetry
SDK's PeriodicExportingMetricReader, which exports OTLP/HTTP protobuf every --interval-ms:

    python runtime_app.py --endpoint http://127.0.0.1:4318 --service runtime-otel --exports 4

While it waits for the exports it works a little, so that every essential metric moves: CPU time
(a busy loop), memory (objects kept), threads (a few started and left waiting), context switches
(the threads waking), garbage collections of each generation (gc.collect(0/1/2)) and open file
descriptors (files held open). Once --exports exports succeeded it flushes and shuts the SDK down,
prints one JSON line {"exports": N, "failed": F, "pid": P} and exits 0 (1 when an export failed
or they did not all happen within --timeout seconds).

`--console` prints the metrics with the SDK's ConsoleMetricExporter instead (no endpoint needed):
a way to see by hand what the instrumentation emits.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time

from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (ConsoleMetricExporter, MetricExportResult,
                                              PeriodicExportingMetricReader)
from opentelemetry.sdk.resources import Resource


class _Counted:
    """Wraps an exporter: counts successful and failed exports, sets `done` after `wanted` successes."""

    def __init__(self, inner, wanted: int):
        self.inner = inner
        self.wanted = wanted
        self.ok = 0
        self.failed = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __getattr__(self, name):  # temporality, aggregation, shutdown, force_flush
        return getattr(self.inner, name)

    def export(self, metrics_data, timeout_millis: float = 10_000, **kwargs):
        result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        with self._lock:
            if result is MetricExportResult.SUCCESS:
                self.ok += 1
                if self.ok >= self.wanted:
                    self.done.set()
            else:
                self.failed += 1
        return result


def _exporter(args):
    if args.console:
        return ConsoleMetricExporter()
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter(endpoint=args.endpoint.rstrip("/") + "/v1/metrics", timeout=10)


def _sleeper(stop: threading.Event) -> None:
    """Wake every 10 ms until stopped."""
    while not stop.wait(0.01):
        pass


def _work(kept: list, files: list) -> None:
    """One round of work: CPU, allocations, a collection of every generation, one more open file."""
    deadline = time.perf_counter() + 0.02
    n = 0
    while time.perf_counter() < deadline:  # a little CPU
        n += sum(i * i for i in range(200))
    kept.append([object() for _ in range(2000)])  # memory that stays
    junk = [[i] for i in range(2000)]  # garbage, with cycles for the collector
    for a, b in zip(junk, junk[1:]):
        a.append(b)
        b.append(a)
    del junk
    for generation in (0, 1, 2):
        gc.collect(generation)
    if len(files) < 8:
        files.append(tempfile.TemporaryFile())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", help="OTLP/HTTP base URL, e.g. http://127.0.0.1:4318 (/v1/metrics is added)")
    parser.add_argument("--service", default="runtime-otel", help="service.name")
    parser.add_argument("--exports", type=int, default=4, help="successful exports to wait for")
    parser.add_argument("--interval-ms", type=int, default=500, help="export interval")
    parser.add_argument("--threads", type=int, default=3, help="extra threads kept alive while running")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the exports")
    parser.add_argument("--console", action="store_true", help="print the metrics instead of exporting")
    args = parser.parse_args(argv)
    if not args.console and not args.endpoint:
        parser.error("--endpoint is required (or --console)")

    exporter = _Counted(_exporter(args), args.exports)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=args.interval_ms)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": args.service, "service.instance.id": f"pid-{os.getpid()}"}),
    )
    SystemMetricsInstrumentor().instrument(meter_provider=provider)

    stop = threading.Event()
    # Threads that wake now and then: more threads, and voluntary context switches.
    sleepers = [threading.Thread(target=_sleeper, args=(stop,), name=f"sleeper-{i}", daemon=True)
                for i in range(args.threads)]
    for t in sleepers:
        t.start()
    kept: list = []
    files: list = []
    started = time.monotonic()
    while not exporter.done.wait(0.05):
        _work(kept, files)
        if time.monotonic() - started > args.timeout:
            break
    stop.set()
    for t in sleepers:
        t.join(timeout=5)
    # One more export with the latest values, then stop the reader (it exports once more itself).
    provider.force_flush(timeout_millis=10_000)
    provider.shutdown()
    for f in files:
        f.close()
    print(json.dumps({"exports": exporter.ok, "failed": exporter.failed, "pid": os.getpid()}), flush=True)
    return 0 if exporter.ok >= args.exports and exporter.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
