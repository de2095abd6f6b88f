#!/usr/bin/env bash
# The tail-sampling benchmark (bench/sampling.py) with the release build: bytes per day with and
# without sampling over 10 million spans (7 days), and the maintenance pass it adds to, against
# a pass without it. Uses ./.venv like the test command. Arguments go to sampling.py (--spans,
# --days, --data-dir). Not a test: it prints a Markdown table for bench/README.md.
#
#   cargo build --release -p sightline && bench/sampling.sh
#   SIGHTLINE=path/to/sightline bench/sampling.sh --spans 1M --days 3
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
exec .venv/bin/python bench/sampling.py "$@"
