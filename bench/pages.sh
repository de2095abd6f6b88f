#!/usr/bin/env bash
# The web UI's page benchmark: a server holding about one million spans (a day of the demo shop at
# 2 requests per second, about 6 spans each), then `sightline bench pages` loading every page.
# Not a test: it prints a Markdown table for bench/README.md.
#
#   bench/pages.sh                 # uses the release build (cargo build --release -p sightline)
#   SIGHTLINE=path/to/sightline bench/pages.sh
set -euo pipefail

target="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-target}"
bin="${SIGHTLINE:-$target/release/sightline}"
if [ ! -x "$bin" ]; then
  echo "no binary at $bin: run cargo build --release -p sightline, or set SIGHTLINE" >&2
  exit 1
fi
runs="${RUNS:-10}"
data="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$data"' EXIT

"$bin" serve --data-dir "$data/data" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
  --listen 127.0.0.1:0 --ready-file "$data/ready.json" 2>"$data/serve.log" &
server=$!
for _ in $(seq 100); do [ -s "$data/ready.json" ] && break; sleep 0.1; done
otlp_http="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["otlp_http"])' "$data/ready.json")"
listen="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["listen"])' "$data/ready.json")"

echo "filling the server with a day of the demo shop (about one million spans)..." >&2
"$bin" demo --endpoint "http://$otlp_http" --backfill 24h --rate 2 --duration 1s 2>&1 \
  | grep -E "backfilled|stopped" >&2
# Let the buffer flush into segments, as a server that has run for a day would have it.
sleep 12
"$bin" bench pages --url "http://$listen" --runs "$runs"
