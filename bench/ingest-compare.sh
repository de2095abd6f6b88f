#!/usr/bin/env bash
# Ingest throughput of two server builds in one run: each round starts the baseline, then the
# candidate, on a fresh data folder, and drives it with the same `sightline bench ingest` load;
# prints every run and the medians with their ratio. Not a test.
#
#   bench/ingest-compare.sh BASELINE_BIN [CANDIDATE_BIN]   # candidate: the release build
#   ROUNDS=5 DURATION=30s bench/ingest-compare.sh /tmp/sightline-before
set -euo pipefail

baseline="${1:?usage: bench/ingest-compare.sh BASELINE_BIN [CANDIDATE_BIN]}"
target="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-target}"
candidate="${2:-$target/release/sightline}"
for bin in "$baseline" "$candidate"; do
  [ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
done
rounds="${ROUNDS:-3}"
duration="${DURATION:-20s}"
work="$(mktemp -d)"
server=""
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

run() {
  local bin="$1" name="$2" round="$3"
  rm -rf "$work/data" "$work/ready.json"
  "$bin" serve --data-dir "$work/data" --flush-interval 2s --otlp-grpc 127.0.0.1:0 \
    --otlp-http 127.0.0.1:0 --listen 127.0.0.1:0 --ready-file "$work/ready.json" \
    2>"$work/serve.log" &
  server=$!
  for _ in $(seq 100); do [ -s "$work/ready.json" ] && break; sleep 0.1; done
  local otlp
  otlp="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["otlp_http"])' "$work/ready.json")"
  # The candidate's load generator drives both, so only the server differs.
  "$candidate" bench ingest --endpoint "http://$otlp" --clients 8 --duration "$duration" \
    --server-pid "$server" 2>&1 \
    | awk -v name="$name" -v round="$round" -F'┆' '
        /accepted spans\/s/ { gsub(/[│ ]/, "", $2); spans = $2 }
        /answer latency p99/ { gsub(/[│ ]/, "", $2); p99 = $2 }
        /server peak RSS/ { gsub(/[│ ]/, "", $2); rss = $2 }
        END { printf "%s\t%s\t%s\t%s\t%s\n", round, name, spans, p99, rss }' \
    | tee -a "$work/runs.tsv"
  kill "$server"
  wait "$server" 2>/dev/null || true
  server=""
}

printf "round\tbuild\tspans/s\tp99\tpeak RSS\n"
for round in $(seq "$rounds"); do
  run "$baseline" baseline "$round"
  run "$candidate" candidate "$round"
done
python3 - "$work/runs.tsv" <<'PY'
import statistics, sys
runs = [line.rstrip("\n").split("\t") for line in open(sys.argv[1])]
median = {name: statistics.median(float(r[2]) for r in runs if r[1] == name) for name in ("baseline", "candidate")}
print(f"median spans/s: baseline {median['baseline']:,.0f}, candidate {median['candidate']:,.0f}, "
      f"ratio {median['candidate'] / median['baseline']:.2f}x")
PY
