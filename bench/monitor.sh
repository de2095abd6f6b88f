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

# SLOs and rules of the same shape as a config file for the server, over the demo shop's routes.
python3 - "$work/monitor.toml" "$slos" "$rules" "$eval_interval" <<'PY'
import sys
out, slos, rules, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
services = [("api-gateway", "/api/products"), ("orders", "/api/orders/{order_id}"),
            ("orders", "/api/checkout"), ("payments", "/charges"), ("api-gateway", "/api/checkout")]
lines = ['[monitor]', f'evaluation_interval = "{interval}"', '']
for i in range(slos):
    service, route = services[i % len(services)]
    lines += ['[[slo]]', f'name = "slo-{i}"', f'service = "{service}"', f'route = "{route}"']
    if i % 2:
        lines += ['indicator = "latency"', f'threshold = "{["100ms", "300ms", "1s"][i % 3]}"']
    else:
        lines += ['indicator = "availability"']
    lines += [f'objective = {[99.9, 99.5, 99.0][i % 3]}', 'window = "30d"', '']
for i in range(rules):
    service, route = services[i % len(services)]
    measure = ["error_rate", "request_rate", "p99", "p95", "error_rate", "sql"][i % 6]
    lines += ['[[alert]]', f'name = "rule-{i}"', f'measure = "{measure}"', 'window = "5m"']
    if measure == "sql":
        lines += ['sql = "SELECT service_name, count(*) AS value FROM logs WHERE severity = \'error\' '
                  'AND time > now() - INTERVAL \'5 minutes\' GROUP BY 1"', 'above = 100']
    else:
        if i % 4:
            lines += [f'service = "{service}"']
        if i % 3 == 0:
            lines += [f'route = "{route}"']
        lines += ['above = 2.0' if measure in ("p99", "p95") or i % 6 == 4 else
                  ('above = 1000' if measure == "request_rate" else 'above = 0.05')]
        if i % 6 == 4:
            lines += ['baseline = "1d"']
    lines += ['']
open(out, "w").write("\n".join(lines))
PY
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
