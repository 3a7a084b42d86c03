#!/usr/bin/env bash
# Set everything up, then open the Dagster UI (webserver and daemon) with run history kept in
# ./.dagster_home. Extra arguments go to `dagster dev` (e.g. -p 3001).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME=${DAGSTER_HOME:-$PWD/.dagster_home}
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
exec .venv/bin/dagster dev -w workspace.yaml "$@"
