#!/usr/bin/env bash
# Set everything up, then open the Dagster UI (webserver and daemon) with run history kept in
# $DAGSTER_HOME (default ./.dagster_home; see scripts/instance.sh: an existing dagster.yaml there
# is kept). Extra arguments go to `dagster dev` (e.g. -p 3001).
set -euo pipefail
. "$(dirname "$0")/instance.sh"
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dagster dev -w workspace.yaml "$@"
