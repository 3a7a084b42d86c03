"""Where a run's steps execute: on Celery workers when the deployment has a broker.

With DAGSTER_CELERY_BROKER_URL set (deploy/README.md), every job's default executor is
dagster-celery's, its broker and result backend that URL (read when a run starts, on the run's
host), so steps go to whichever worker is free, on any machine. Unset, Dagster's default
(multiprocess, on the run's host), as on one machine.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

BROKER_ENV = "DAGSTER_CELERY_BROKER_URL"


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    env = os.environ if env is None else env
    if not env.get(BROKER_ENV):
        return None
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {"broker": {"env": BROKER_ENV}, "backend": {"env": BROKER_ENV}}, name="celery"
    )
