#!/usr/bin/env bash
# Set everything up, then open the Dagster UI (webserver and daemon) on the instance that
# `plannr-pipeline sync` uses too: $DAGSTER_HOME, default ./.dagster_home. An existing
# dagster.yaml there is kept; a new instance gets the project's. Extra arguments go to
# `dagster dev` (e.g. -p 3001).
set -euo pipefail
umask 077  # the webserver's and daemon's runs.db, event and compute logs: the owner's alone
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DAGSTER_HOME=$(.venv/bin/plannr-pipeline instance)
export DAGSTER_HOME
exec .venv/bin/dagster dev -w workspace.yaml "$@"
