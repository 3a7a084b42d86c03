#!/usr/bin/env bash
# The deployment of deploy/README.md on this machine, every piece a real server on loopback:
# `up` starts Postgres, Redis, an S3 server, two Celery workers, the Dagster daemon and UI, and
# prints what it started and where the logs are; `down` stops exactly that. Needs Debian's
# postgresql and redis-server (.ci/run installs them). State and logs: $PLANNR_CLUSTER_DIR (./.cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh >&2
exec .venv/bin/python deploy/local_cluster.py "$@"
