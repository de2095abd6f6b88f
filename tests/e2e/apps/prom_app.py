"""A small WSGI app instrumented with prometheus_client, scraped by Sightline in test_scrape.py.

Every value it exposes is decided by the requests it is sent, so a test can compute what a
scraper must store:

- `GET /work?route=R&duration=D&size=S[&depth=Q][&temp=C][&sleep=T][&trace_id=..&span_id=..[&user=U]]`
  counts `app_requests_total{route=R,method=GET}` (counter), observes D (not the time it really
  took) in `app_request_duration_seconds{route=R}` (histogram, buckets BUCKETS) and in
  `app_batch_latency_seconds` (a summary with quantiles, single process only), observes S in
  `app_response_size_bytes` (summary without quantiles, as prometheus_client makes them), sets
  `app_queue_depth` to Q and `app_temperature_celsius` (made with unit="celsius", so OpenMetrics
  says `# UNIT app_temperature_celsius celsius`; TEMPERATURE at start) to C when given, sleeps T seconds when given (to keep a gunicorn worker busy),
  and, with trace_id and span_id, attaches an exemplar {trace_id, span_id[, user]} to the counter
  increment and the histogram observation (shown in OpenMetrics only; single process only).
  It answers JSON {"pid": worker pid, "served": requests this process served}.
- `GET /metrics`: prometheus_client's own WSGI exposition, negotiated by the Accept header
  (`application/openmetrics-text` selects OpenMetrics 1.0.0, anything else text 0.0.4).
- `GET /metrics/text` and `GET /metrics/openmetrics`: the same exposition with the format forced
  (the Accept header is replaced; gzip is still honoured).
- `GET /fail`: 500 with a plain-text body. `GET /garbage`: 200 `text/plain; version=0.0.4` whose
  line 4 is not a sample (GARBAGE_LINE).
- `GET /debug/scrapes`: the Accept, Accept-Encoding and User-Agent headers of the requests to
  /metrics* this process answered (JSON list).
- Also always there: `app_build_info` (Info) and `app_state` (Enum) in single-process mode;
  `app_workers_alive` (gauge, multiprocess_mode "livesum": 1 per live worker) and
  `app_worker_requests` (gauge, multiprocess_mode "all": a `pid` label per worker) in both.

Single process (wsgiref, a thread per request):

    python prom_app.py --port 0 --ready-file /tmp/prom-app.json

  binds 127.0.0.1 (`--host` to change), then writes {"port": N, "pid": P} to the ready file
  (written whole: temporary file, then rename).

Multiprocess, under gunicorn with 2 workers (this file is also the gunicorn config: its
`child_exit` hook marks a dead worker's gauges dead, and `when_ready` writes the ready file named
by PROM_APP_READY_FILE with the bound port):

    export PROMETHEUS_MULTIPROC_DIR=$(mktemp -d)       # empty, set before anything imports
    cd tests/e2e/apps && PROM_APP_READY_FILE=/tmp/gunicorn-ready.json \\
        gunicorn -c prom_app.py --workers 2 --bind 127.0.0.1:0 prom_app:app

  /metrics is then answered from every worker's files by a MultiProcessCollector (counters and
  histograms summed over the workers, no `_created` samples, no exemplars; Info, Enum and custom
  collectors are not available in this mode, so they are left out).

Only prometheus_client and the standard library are used (and gunicorn for the second mode).
Module-level names are UPPERCASE or start with an underscore, except `app`, gunicorn's hooks and
`control_socket_disable`: gunicorn applies every lowercase module-level name that is one of its
settings (gunicorn 27 would otherwise open a control socket at $HOME/.gunicorn/gunicorn.ctl,
shared by every gunicorn of the user).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# gunicorn runs this file as its config module named "__config__" in the master: only the hooks
# are wanted there, no metrics (their files would belong to the master's pid).
AS_GUNICORN_CONFIG = __name__ == "__config__"

BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
QUANTILES = (0.5, 0.9)
GARBAGE_LINE = 4
GARBAGE_BODY = (
    "# HELP ok_metric A fine line.\n"
    "# TYPE ok_metric gauge\n"
    "ok_metric 1\n"
    'ok_metric{broken="x" 2\n'
    "another_metric 3\n"
)
BUILD = {"version": "1.4.2", "commit": "9f8e7d6"}
STATES = ("starting", "serving", "draining")
TEMPERATURE = 21.5


def nearest_rank(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank (what app_batch_latency_seconds exposes); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


if not AS_GUNICORN_CONFIG:
    from prometheus_client import (CollectorRegistry, Counter, Enum, Gauge, Histogram, Info, Summary,
                                   make_wsgi_app, multiprocess)
    from prometheus_client.core import Metric

    if MULTIPROCESS:
        # Metrics are created in the default registry (ignored here) and written to files; the
        # exposition reads every process's files.
        _METRICS_REGISTRY = CollectorRegistry()
        multiprocess.MultiProcessCollector(_METRICS_REGISTRY)
        _REG = None
    else:
        _METRICS_REGISTRY = CollectorRegistry()
        _REG = _METRICS_REGISTRY
    _KW = {"registry": _REG} if _REG is not None else {}

    REQUESTS = Counter("app_requests", "Requests handled by /work.", ["route", "method"], **_KW)
    DURATION = Histogram("app_request_duration_seconds", "Request duration (the duration parameter).",
                         ["route"], buckets=BUCKETS, **_KW)
    SIZE = Summary("app_response_size_bytes", "Response sizes (the size parameter).", **_KW)
    QUEUE = Gauge("app_queue_depth", "Jobs waiting (the depth parameter).", multiprocess_mode="mostrecent", **_KW)
    TEMP = Gauge("app_temperature", "Room temperature (the temp parameter).", unit="celsius",
                 multiprocess_mode="mostrecent", **_KW)
    ALIVE = Gauge("app_workers_alive", "Live worker processes.", multiprocess_mode="livesum", **_KW)
    SERVED = Gauge("app_worker_requests", "Requests served by this worker.", multiprocess_mode="all", **_KW)
    ALIVE.inc()
    TEMP.set(TEMPERATURE)

    _LOCK = threading.Lock()
    _DURATIONS: list[float] = []
    _SERVED = [0]
    _SCRAPES: list[dict] = []

    if not MULTIPROCESS:
        Info("app_build", "Build of this app.", **_KW).info(BUILD)
        Enum("app_state", "Lifecycle state.", states=list(STATES), **_KW).state("serving")

        class _BatchLatency:
            """A summary with quantiles (prometheus_client's Summary has none): nearest-rank
            quantiles of every duration observed."""

            def collect(self):
                with _LOCK:
                    values = list(_DURATIONS)
                m = Metric("app_batch_latency_seconds", "Durations observed, with quantiles.", "summary")
                for q in QUANTILES:
                    m.add_sample("app_batch_latency_seconds", {"quantile": str(q)}, nearest_rank(values, q))
                m.add_sample("app_batch_latency_seconds_count", {}, float(len(values)))
                m.add_sample("app_batch_latency_seconds_sum", {}, float(sum(values)))
                yield m

        _METRICS_REGISTRY.register(_BatchLatency())

    _METRICS_APP = make_wsgi_app(_METRICS_REGISTRY)
    _FORCED_ACCEPT = {
        "/metrics/text": "text/plain; version=0.0.4",
        "/metrics/openmetrics": "application/openmetrics-text; version=1.0.0",
    }


def _respond(start_response, status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _work(environ, start_response):
    params = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}
    route = params.get("route", "/checkout")
    duration = float(params.get("duration", "0.1"))
    size = float(params.get("size", "100"))
    exemplar = None
    if params.get("trace_id") and params.get("span_id"):
        exemplar = {"trace_id": params["trace_id"], "span_id": params["span_id"]}
        if params.get("user"):
            exemplar["user"] = params["user"]
    if params.get("sleep"):
        import time
        time.sleep(float(params["sleep"]))
    if exemplar and not MULTIPROCESS:
        REQUESTS.labels(route, environ["REQUEST_METHOD"]).inc(1, exemplar=exemplar)
        DURATION.labels(route).observe(duration, exemplar=exemplar)
    else:
        REQUESTS.labels(route, environ["REQUEST_METHOD"]).inc()
        DURATION.labels(route).observe(duration)
    SIZE.observe(size)
    if "depth" in params:
        QUEUE.set(float(params["depth"]))
    if "temp" in params:
        TEMP.set(float(params["temp"]))
    with _LOCK:
        _DURATIONS.append(duration)
        _SERVED[0] += 1
        served = _SERVED[0]
    SERVED.set(served)
    body = json.dumps({"pid": os.getpid(), "served": served}).encode()
    return _respond(start_response, "200 OK", body, "application/json")


def app(environ, start_response):
    """The WSGI application."""
    path = environ.get("PATH_INFO", "/")
    if path == "/work":
        return _work(environ, start_response)
    if path == "/metrics" or path in _FORCED_ACCEPT:
        with _LOCK:
            _SCRAPES.append({"path": path, "accept": environ.get("HTTP_ACCEPT"),
                             "accept_encoding": environ.get("HTTP_ACCEPT_ENCODING"),
                             "user_agent": environ.get("HTTP_USER_AGENT")})
            del _SCRAPES[:-200]
        if path in _FORCED_ACCEPT:
            environ = dict(environ, HTTP_ACCEPT=_FORCED_ACCEPT[path], PATH_INFO="/metrics")
        return _METRICS_APP(environ, start_response)
    if path == "/fail":
        return _respond(start_response, "500 Internal Server Error", b"boom: the metrics are broken\n",
                        "text/plain; charset=utf-8")
    if path == "/garbage":
        return _respond(start_response, "200 OK", GARBAGE_BODY.encode(), "text/plain; version=0.0.4; charset=utf-8")
    if path == "/debug/scrapes":
        with _LOCK:
            body = json.dumps(_SCRAPES).encode()
        return _respond(start_response, "200 OK", body, "application/json")
    if path == "/healthz":
        return _respond(start_response, "200 OK", json.dumps({"pid": os.getpid()}).encode(), "application/json")
    return _respond(start_response, "404 Not Found", b"not found\n", "text/plain")


# ---------------------------------------------------------------- gunicorn hooks (config module)

control_socket_disable = True


def child_exit(server, worker):
    """gunicorn: a worker exited; its live gauges stop counting."""
    from prometheus_client import multiprocess as _mp
    _mp.mark_process_dead(worker.pid)


def when_ready(server):
    """gunicorn: listeners are bound; write {"port", "pid"} to $PROM_APP_READY_FILE."""
    path = os.environ.get("PROM_APP_READY_FILE")
    if not path:
        return
    port = None
    for listener in server.LISTENERS:
        sock = getattr(listener, "sock", listener)
        addr = sock.getsockname()
        if isinstance(addr, tuple):
            port = addr[1]
            break
    _write_ready(path, {"port": port, "pid": os.getpid()})


def _write_ready(path: str, data: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


# ---------------------------------------------------------------- single process


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (see --ready-file)")
    parser.add_argument("--ready-file", help='where to write {"port": N, "pid": P} once listening')
    args = parser.parse_args(argv)
    if MULTIPROCESS:
        sys.exit("PROMETHEUS_MULTIPROC_DIR is set: run the multiprocess mode under gunicorn (see the docstring)")
    httpd = make_server(args.host, args.port, app, server_class=_ThreadingServer, handler_class=_QuietHandler)
    # SIGTERM ends serve_forever and the process with exit code 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = httpd.server_address[1]
    if args.ready_file:
        _write_ready(args.ready_file, {"port": port, "pid": os.getpid()})
    print(f"prom_app listening on http://{args.host}:{port}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
