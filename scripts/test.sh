#!/usr/bin/env bash
# Set everything up, lint (ruff), then run the whole test suite (offline: loopback HTTP and temp folders only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
