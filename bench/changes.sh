#!/usr/bin/env bash
# The "what changed" benchmark (bench/changes.py) with the release build: explain, compare and log
# patterns over 10 million spans and 10 million logs (7 days), each timed against a reference in
# the same run. Uses ./.venv like the test command. Arguments go to changes.py (--runs,
# --data-dir, --spans, --logs). Not a test: it prints a Markdown table for bench/README.md.
#
#   cargo build --release -p sightline && bench/changes.sh
#   SIGHTLINE=path/to/sightline bench/changes.sh --runs 10
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
exec .venv/bin/python bench/changes.py "$@"
