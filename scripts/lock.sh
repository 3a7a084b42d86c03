#!/usr/bin/env bash
# Regenerate requirements/dev.lock: every package of `.[dev]` and the venv's own tools, each pinned
# with the sha256 of every file PyPI has for it. Run after changing a pin in pyproject.toml; needs
# uv (`pip install uv`). setup.sh installs the lock with --require-hashes.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
"$UV" pip compile pyproject.toml requirements/venv-tools.in --extra dev \
  --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  --no-strip-extras --no-emit-package plannr_pipeline --custom-compile-command "bash scripts/lock.sh" \
  --index-url https://pypi.org/simple -o requirements/dev.lock
