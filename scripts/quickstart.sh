#!/usr/bin/env bash
# Set everything up, then run the main job: every asset, every partition.
# With no PLANNR_API_TOKEN / PLANNR_BASE_URL this runs against the embedded sandbox.
set -euo pipefail
umask 077  # the data folder, the instance and the budget: the owner's alone
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/plannr-pipeline sync "$@"
