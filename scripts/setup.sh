#!/usr/bin/env bash
# Create .venv (if missing) and install plannr_pipeline with its dev extras from the lock file:
# every package of the tree pinned and checked against its sha256 (requirements/dev.lock, made by
# scripts/lock.sh), pip and setuptools included. Needs only Python 3.11+ and pip; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --require-hashes -r requirements/dev.lock
# The project itself: no dependencies of its own left to resolve (the lock has them all), and built
# with the venv's locked setuptools rather than whatever an isolated build would download.
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
