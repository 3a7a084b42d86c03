"""Each firm's share of the instance: the slot count of its own API pool, `plannr_api_<slug>`.

Every Plannr asset of a firm runs in its firm's pool, so what one firm does (a backfill of
every month, say) can hold only its own firm's slots: the queued run coordinator leaves a run
queued while its pool is full (`block_op_concurrency_limited_runs`, on by default) and launches
another firm's run past it, and a `sync` waits only for its own firm's pool. The count is the
firm file's `concurrency_share`, written into the instance (where Dagster reads pool limits) by
`plannr-pipeline instance` (so by scripts/dev.sh) and by every `sync` of firms; without it a
firm's pool would take the instance's `concurrency.pools.default_limit`.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from plannr_pipeline.defs.assets.common import API_POOL
from plannr_pipeline.firms.settings import FirmSettings


def pool_of(firm: FirmSettings) -> str:
    return firm.firm.pool(API_POOL)


def write_pool_limits(instance: dg.DagsterInstance, firms: Iterable[FirmSettings]) -> list[str]:
    """Set each firm's pool to its share where the instance says otherwise; a line per change."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    # Pools set explicitly (by us, or with `dagster instance concurrency set`); others take the default.
    explicit = {p.name: p.limit for p in storage.get_pool_limits() if not p.from_default}
    said = []
    for firm in firms:
        pool = pool_of(firm)
        if explicit.get(pool) != firm.concurrency_share:
            storage.set_concurrency_slots(pool, firm.concurrency_share)
            said.append(
                f"{pool} pool: {firm.concurrency_share} slot(s), firm {firm.slug}'s concurrency_share"
            )
    return said
