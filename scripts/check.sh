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

# The dashboard's browser test drives Debian's chromium through Playwright, never
# a browser that Playwright downloads. Under CI=true it fails when chromium is missing.
if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
        echo "installing chromium for the dashboard's browser test"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "The dashboard's browser test needs chromium at /usr/bin/chromium;" \
            "install it with: sudo apt-get install chromium" >&2
    fi
fi

.venv/bin/ruff format --check src tests bench
.venv/bin/ruff check src tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
