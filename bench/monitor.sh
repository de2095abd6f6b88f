#!/usr/bin/env bash
# The monitor's cost: one evaluation cycle of SLOS SLOs and RULES rules over the 10-million-span
# dataset (`sightline bench monitor`, beside a plain scan of the same rollups), then ingest
# throughput with and without a monitor evaluating that many every EVAL (the default 30s; 1s
# to stress it), rounds alternating. Not a test.
#
#   cargo build --release -p sightline && bench/monitor.sh
#   SPANS=10M SLOS=100 RULES=200 ROUNDS=2 DURATION=60s EVAL=30s bench/monitor.sh [SIGHTLINE_BIN]
set -euo pipefail

target="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-target}"
bin="${1:-$target/release/sightline}"
[ -x "$bin" ] || { echo "no binary at $bin: cargo build --release -p sightline" >&2; exit 1; }
spans="${SPANS:-10M}"
slos="${SLOS:-100}"
rules="${RULES:-200}"
rounds="${ROUNDS:-2}"
duration="${DURATION:-60s}"
eval_interval="${EVAL:-30s}"
dataset="${DATASET:-/tmp/sightline-bench-monitor-$spans}"
work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ ! -f "$dataset/catalog.db" ]; then
  echo "filling $dataset ($spans spans and logs over 7 days, rollups counting 100ms, 300ms, 1s)..." >&2
  "$bin" bench dataset --data-dir "$dataset" --spans "$spans" --logs "$spans" --days 7 \
    --latency-thresholds 100ms,300ms,1s >&2
fi

echo "== one evaluation cycle over $dataset"
"$bin" bench monitor --data-dir "$dataset" --slos "$slos" --rules "$rules" --cycles 5

# The same SLOs and rules as a config file for the server.
"$bin" bench monitor --data-dir "$dataset" --slos "$slos" --rules "$rules" \
  --evaluation-interval "$eval_interval" --write-config "$work/monitor.toml"
: > "$work/none.toml"

run_round() {  # $1: config file; prints spans/s
  rm -rf "$work/data" "$work/ready.json"
  cp -r "$dataset" "$work/data"
  "$bin" serve --config "$1" --data-dir "$work/data" --flush-interval 2s --otlp-grpc 127.0.0.1:0 \
    --otlp-http 127.0.0.1:0 --listen 127.0.0.1:0 --ready-file "$work/ready.json" 2>"$work/serve.log" &
  server=$!
  for _ in $(seq 300); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
  [ -s "$work/ready.json" ] || { cat "$work/serve.log" >&2; exit 1; }
  local http
  http="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["otlp_http"])' "$work/ready.json")"
  "$bin" bench ingest --endpoint "http://$http" --duration "$duration" --clients 8 2>&1 \
    | awk -F'┆' '/accepted spans\/s/ { gsub(/[│ ,]/, "", $2); print $2 }'
  kill "$server"; wait "$server" 2>/dev/null || true; server=""
}

echo "== ingest with and without the monitor evaluating every $eval_interval ($rounds rounds of $duration)"
for round in $(seq "$rounds"); do
  alone="$(run_round "$work/none.toml")"
  watched="$(run_round "$work/monitor.toml")"
  echo "round $round: without monitor ${alone} spans/s, with ${slos} SLOs + ${rules} rules ${watched} spans/s" \
    "($(python3 -c "import sys; a, b = float(sys.argv[1] or 0), float(sys.argv[2] or 0); print(f'{b / a:.0%}' if a else '?')" "$alone" "$watched") of it)"
done
