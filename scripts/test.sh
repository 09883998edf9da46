#!/usr/bin/env bash
# Set up a virtual environment with the project and its test tools, lint, type-check, test.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e '.[dev]'
ruff check agent tests bench
mypy
python -m pytest -q -p no:cacheprovider "$@"
