#!/usr/bin/env bash
# Install the development extras into .venv and run the whole test suite:
# formatting, lint, strict typing, then pytest. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3.11}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

bash scripts/services.sh

.venv/bin/ruff format --check src tests bench
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
