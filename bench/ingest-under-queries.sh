#!/usr/bin/env bash
# Ingest while queries hammer the server: one server on a folder holding a few million spans and
# logs; `sightline bench ingest` alone, then again while QUERY_CLIENTS clients run full-scan
# queries in a loop through the API; prints both runs side by side (spans/s, answer p99) and
# the loaded run's share of the unloaded throughput. Rounds alternate alone/loaded. Not a test.
#
#   cargo build --release -p sightline && bench/ingest-under-queries.sh
#   ROUNDS=3 DURATION=30s QUERY_CLIENTS=8 bench/ingest-under-queries.sh [SIGHTLINE_BIN]
set -euo pipefail

target="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-target}"
bin="${1:-$target/release/sightline}"
[ -x "$bin" ] || { echo "no binary at $bin: cargo build --release -p sightline" >&2; exit 1; }
rounds="${ROUNDS:-2}"
duration="${DURATION:-20s}"
clients="${QUERY_CLIENTS:-8}"
dataset="${DATASET:-/tmp/sightline-bench-ingest-queries}"
work="$(mktemp -d)"
server=""
queries=""
cleanup() {
  if [ -n "$queries" ]; then kill "$queries" 2>/dev/null || true; fi
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A folder with something to scan, written once and copied for each round.
if [ ! -f "$dataset/catalog.db" ]; then
  echo "filling $dataset (2M spans, 2M logs over a day)..." >&2
  "$bin" bench dataset --data-dir "$dataset" --spans 2M --logs 2M --days 1 >&2
fi

start_server() {
  rm -rf "$work/data" "$work/ready.json"
  cp -r "$dataset" "$work/data"
  "$bin" serve --data-dir "$work/data" --flush-interval 2s --otlp-grpc 127.0.0.1:0 \
    --otlp-http 127.0.0.1:0 --listen 127.0.0.1:0 --ready-file "$work/ready.json" \
    2>"$work/serve.log" &
  server=$!
  for _ in $(seq 200); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
  [ -s "$work/ready.json" ] || { cat "$work/serve.log" >&2; exit 1; }
}

addr() {
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$work/ready.json" "$1"
}

# QUERY_CLIENTS threads asking full-scan questions until told to stop; counts answers by status.
start_queries() {
  python3 - "http://$(addr listen)" "$clients" "$work/queries.json" <<'PY' &
import json, signal, sys, threading, urllib.error, urllib.request
url, clients, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# SIGTERM ends the run; blocked before the threads start, so only sigwait below takes it.
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
questions = [
    "SELECT service_name, count(*), avg(duration_ns) FROM spans GROUP BY service_name",
    "SELECT http_route, approx_percentile_cont(duration_ns, 0.99) FROM spans GROUP BY http_route",
    "SELECT count(*) FROM logs WHERE body LIKE '%timed out%'",
]
stop = threading.Event()
counts: dict[str, int] = {}
lock = threading.Lock()
def ask(i: int) -> None:
    n = i
    while not stop.is_set():
        body = json.dumps({"sql": questions[n % len(questions)]}).encode()
        n += 1
        request = urllib.request.Request(f"{url}/api/v1/query", data=body,
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                answer.read()
                status = str(answer.status)
        except urllib.error.HTTPError as e:
            e.read()
            status = str(e.code)
        except Exception as e:  # a refused connection would be a finding
            status = type(e).__name__
        with lock:
            counts[status] = counts.get(status, 0) + 1
threads = [threading.Thread(target=ask, args=(i,), daemon=True) for i in range(clients)]
for t in threads:
    t.start()
signal.sigwait([signal.SIGTERM])
stop.set()
json.dump(counts, open(out, "w"))
PY
  queries=$!
}

stop_queries() {
  kill -TERM "$queries"
  wait "$queries" 2>/dev/null || true
  queries=""
}

# One `sightline bench ingest` run: "spans/s<TAB>p99".
ingest() {
  "$bin" bench ingest --endpoint "http://$(addr otlp_http)" --clients 8 --duration "$duration" \
    --server-pid "$server" 2>&1 \
    | awk -F'┆' '
        /accepted spans\/s/ { gsub(/[│ ,]/, "", $2); spans = $2 }
        /answer latency p99/ { gsub(/[│ ]/, "", $2); p99 = $2 }
        END { printf "%s\t%s\n", spans, p99 }'
}

printf "round\tload\tspans/s\tanswer p99\tqueries answered\n" | tee "$work/runs.tsv"
for round in $(seq "$rounds"); do
  start_server
  printf "%s\talone\t%s\t-\n" "$round" "$(ingest)" | tee -a "$work/runs.tsv"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""

  start_server
  start_queries
  loaded="$(ingest)"
  stop_queries
  answered="$(python3 -c 'import json,sys; print(" ".join(f"{k}:{v}" for k,v in sorted(json.load(open(sys.argv[1])).items())))' "$work/queries.json")"
  printf "%s\t%s queries\t%s\t%s\n" "$round" "$clients" "$loaded" "$answered" | tee -a "$work/runs.tsv"
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
done
python3 - "$work/runs.tsv" <<'PY'
import statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])][1:]
alone = [float(r[2]) for r in rows if r[1] == "alone"]
loaded = [float(r[2]) for r in rows if r[1] != "alone"]
p99 = [r[3] for r in rows if r[1] != "alone"]
a, l = statistics.median(alone), statistics.median(loaded)
print(f"median spans/s: alone {a:,.0f}, under queries {l:,.0f} ({l / a:.0%} of alone); "
      f"answer p99 under queries: {', '.join(p99)}")
PY
