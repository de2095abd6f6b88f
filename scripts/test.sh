#!/usr/bin/env bash
# Runs every Sightline test: the Rust unit and integration tests, then the end-to-end suite that
# drives a real server with real Python clients (OpenTelemetry SDK over HTTP and gRPC, Logfire,
# hand-written OTLP/JSON). Installs what the tests need into ./.venv first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sightline-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The browser tests (tests/e2e/test_ui.py) drive Debian's Chromium through Playwright; Playwright's
# own browser download is never used. DejaVu gives headless Chromium a font to render text with.
if [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Chromium for the browser tests (apt-get: chromium fonts-dejavu-core)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
  fi
  apt_log="$(mktemp)"
  if ! { $SUDO apt-get update -q \
         && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
              chromium fonts-dejavu-core; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2
    echo "installing chromium failed (see apt-get's output above)" >&2
    exit 1
  fi
  rm -f "$apt_log"
fi

echo "==> Python test dependencies (.venv)"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt

echo "==> building sightline"
cargo build --locked -p sightline

echo "==> Rust tests"
cargo test --locked --workspace

echo "==> criterion benches, once each as a smoke run (cargo bench measures)"
cargo test --locked --workspace --benches

echo "==> docs: every public item of the library crates documented, every intra-doc link resolves"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps --quiet

echo "==> end-to-end tests"
SIGHTLINE_BIN="$CARGO_TARGET_DIR/debug/sightline" .venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"
