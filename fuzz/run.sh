#!/usr/bin/env bash
# Runs the fuzz targets for a bounded time each (see fuzz/README.md).
#   fuzz/run.sh                  # every target, 300 s each
#   fuzz/run.sh otlp_json 600    # one target
set -euo pipefail
cd "$(dirname "$0")"
targets=("${1:-otlp_protobuf otlp_json wal_reader}")
seconds="${2:-300}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-fuzz-target}"
for target in ${targets[@]}; do
  mkdir -p "corpus/$target" "artifacts/$target"
  echo "==> $target for ${seconds}s"
  cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1
done
