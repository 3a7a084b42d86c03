#!/usr/bin/env bash
# Create .venv (if missing) and install plannr_pipeline with its dev extras, pinned.
# Needs only Python 3.11+ and pip; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
