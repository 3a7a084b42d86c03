#!/usr/bin/env bash
# Set everything up, lint (ruff), then run the whole test suite (offline: loopback servers and temp folders only).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Three workers, one test module each at a time: a module's fixtures (a synced sandbox, the lake's
# servers) are built once, in the worker that runs it. Many tests wait on paced servers, so a
# third worker on two cores still helps (fresh-clone .ci/run: 27 min against 31-32 with two).
# PYTEST_WORKERS=0 runs everything in one.
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
