#!/usr/bin/env bash
# The telemetry-quality benchmark (bench/quality.py) with the release build: the quality report
# over 10 million spans and 10 million logs (7 days), first and with its hour summaries kept,
# against a plain scan of the same day. Uses ./.venv like the test command. Arguments go to quality.py (--runs,
# --data-dir, --spans, --logs). Not a test: it prints a Markdown table for bench/README.md.
#
#   cargo build --release -p sightline && bench/quality.sh
#   SIGHTLINE=path/to/sightline bench/quality.sh --runs 10
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
exec .venv/bin/python bench/quality.py "$@"
