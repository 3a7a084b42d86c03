#!/usr/bin/env bash
# Prepare the Dagster instance: DAGSTER_HOME (default ./.dagster_home in the repository) and its
# dagster.yaml. An instance that already has a dagster.yaml (Postgres storage, say) keeps it
# untouched; the project's dagster.yaml is written only where there is none. Prints the
# DAGSTER_HOME in use and which dagster.yaml it reads.
#
#   . scripts/instance.sh      # as scripts/dev.sh does: also exports DAGSTER_HOME to the caller
#   bash scripts/instance.sh   # just prepare and print
# A relative DAGSTER_HOME is taken from the current folder and made absolute (Dagster wants it so).

_plannr_prepare_instance() {
  local repo home config
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
  home=${DAGSTER_HOME:-$repo/.dagster_home}
  mkdir -p "$home" || return 1
  home=$(cd "$home" && pwd) || return 1
  config=$home/dagster.yaml
  if [ -e "$config" ] || [ -L "$config" ]; then
    echo "DAGSTER_HOME=$home"
    echo "dagster.yaml: $config (already there, kept as it is)"
  else
    cp "$repo/dagster.yaml" "$config" || return 1
    echo "DAGSTER_HOME=$home"
    echo "dagster.yaml: $config (written from $repo/dagster.yaml)"
  fi
  export DAGSTER_HOME=$home
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  _plannr_prepare_instance
else
  _plannr_prepare_instance || return 1
fi
