#!/usr/bin/env bash
# Runs every Sightline test: the Rust unit and integration tests, then the end-to-end suite that
# drives a real server with real Python clients (OpenTelemetry SDK over HTTP and gRPC, Logfire,
# hand-written OTLP/JSON). Installs what the tests need into ./.venv first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> Python test dependencies (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt

echo "==> building sightline"
cargo build --locked -p sightline

echo "==> Rust tests"
cargo test --locked --workspace

echo "==> end-to-end tests"
SIGHTLINE_BIN="$CARGO_TARGET_DIR/debug/sightline" .venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"
