#!/usr/bin/env bash
# The query benchmark (bench/queries.py) with the release build: 10 million spans and 10 million
# logs over 7 days, asked of Sightline and of DuckDB. Installs the Python packages it needs
# (duckdb) into ./.venv, like the test command. Arguments go to queries.py (--runs, --data-dir,
# --spans, --logs, ...). Not a test: it prints a Markdown table for bench/README.md.
#
#   cargo build --release -p sightline && bench/queries.sh
#   SIGHTLINE=path/to/sightline bench/queries.sh --runs 10
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/e2e/requirements.txt
exec .venv/bin/python bench/queries.py "$@"
