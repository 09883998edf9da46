#!/usr/bin/env bash
# The whole test suite on a fresh machine: system tools, a virtual environment with the
# project and its test tools, then lint, type-check and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-test-deps.sh
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
python -m pip install -q -e '.[dev]'
ruff check agent cloud tests bench
mypy
python -m pytest -q -p no:cacheprovider --durations=25 "$@"
