"""What every Plannr asset declares alike: group, owners, kinds, pool, freshness, schema, checks,
and how API trouble becomes a step outcome."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from plannr_pipeline.api import PlannrClient, PlannrError, RetriesExhaustedError, endpoints
from plannr_pipeline.api.client import gone
from plannr_pipeline.api.errors import UnreachableError
from plannr_pipeline.defs.assets.landing import Landing, check_specs, column_schema
from plannr_pipeline.defs.resources import PlannrApi
from plannr_pipeline.firms import DEFAULT_FIRM, Firm, rename_resources
from plannr_pipeline.storage.normalise import Drift
from plannr_pipeline.storage.tables import Table

# BackfillPolicy.single_run is marked beta in 1.13 and says so on every import; it is the point
# of a range run here (one filtered listing for many months), chosen knowingly.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

GROUP = "plannr"
OWNERS = ["team:data-engineering"]
KINDS = {"python", "parquet", "duckdb"}
# One Plannr token: API-bound steps share a pool so concurrent runs queue instead of fighting
# over the same 500 requests a minute (the limiter in the API client is shared too).
API_POOL = "plannr_api"

# Matching the schedules (schedules.py): what the hourly refresh touches should be at most an
# hour and a bit old; what only the nightly refresh touches should have run since 02:00.
HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=timedelta(hours=3), warn_window=timedelta(minutes=90)
)
NIGHTLY_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 4 * * *", lower_bound_delta=timedelta(hours=2), timezone="Europe/London"
)


# How each collection asset is built, by asset name, for `collection_assets_for` (firms.py):
# the modules define each asset once, and a firm gets its own copy with its own keys.
_RECIPES: dict[str, Callable[[Firm], dg.AssetsDefinition]] = {}


def collection_asset(
    tables: Sequence[Table],
    listing: str,
    freshness: dg.FreshnessPolicy,
    deps: Sequence[str] = (),
    **asset_args: Any,
) -> Callable:
    """`@dg.asset` for one Plannr collection: its first table names the asset, the others are
    child tables written in the same validated commit. The decorated name is the single firm's
    asset (today's keys); `collection_assets_for(firm)` builds any firm's from the same body."""
    root, children = tables[0], tables[1:]
    description = root.description
    if children:
        description += " Also writes " + ", ".join(f"`{t.name}`" for t in children) + " in the same commit."

    def build(fn: Callable, firm: Firm) -> dg.AssetsDefinition:
        return dg.asset(
            name=root.name,
            key_prefix=[firm.slug] if firm.slug else None,
            description=description,
            group_name=firm.group(GROUP),
            owners=OWNERS,
            kinds=KINDS,
            deps=[firm.key(dep) for dep in deps],
            pool=firm.pool(API_POOL),
            freshness_policy=freshness,
            check_specs=check_specs(root, listing, firm.key(root.name)),
            metadata={
                "dagster/column_schema": column_schema(root),
                "dagster/table_name": root.name,
                "tables": dg.MetadataValue.json([t.name for t in tables]),
            },
            **asset_args,
        )(rename_resources(fn, firm.resource_keys()))

    def decorate(fn: Callable) -> dg.AssetsDefinition:
        _RECIPES[root.name] = functools.partial(build, fn)
        return build(fn, DEFAULT_FIRM)

    return decorate


def collection_asset_for(name: str, firm: Firm) -> dg.AssetsDefinition:
    return _RECIPES[name](firm)


# A fan-out that outlasted the client's retries pauses this long, then resumes with the parents
# it has not finished, keeping what it fetched (a step retry would start from the first again).
RESUME_PAUSE_SECONDS = 60.0
RESUME_ROUNDS = 2


class SkippedUnreachable(dg.Failure):
    """A step not tried because an earlier step of its run found nobody answering at the API
    (the sync reports these as skipped, not as failures of their own)."""


# Runs (by id) in which a step found nobody answering at the API: the next steps of the same
# run (the sync's one run holds every asset) fail at once instead of each waiting to find out.
_UNREACHABLE_IN_RUN: dict[str, str] = {}


def fetch(
    context: dg.AssetExecutionContext,
    plannr: PlannrApi,
    work: Callable[[PlannrClient], Awaitable[None]],
    landing: Landing,
    left_to_do: Callable[[], int] | None = None,
) -> None:
    """Run `work` through the API bridge, counting requests into the landing's stats.

    Transient trouble that outlasted the client's own retries asks Dagster to retry the step
    later; errors that retrying cannot fix (401, 403, 404, 422, a malformed body) fail it as they
    are. A resumable `work` (one that only does what `left_to_do` still counts, like the goals
    fan-out) is instead resumed in this step after a pause, with what it fetched kept.
    """
    stats = landing.stats
    asset = context.asset_key.to_user_string()
    if (unreachable := _UNREACHABLE_IN_RUN.get(context.run_id)) is not None:
        landing.abort()
        raise SkippedUnreachable(
            description=f"{asset}: not tried: the API at {unreachable} was unreachable earlier in this run"
        )
    for round_number in range(RESUME_ROUNDS + 1):
        try:
            plannr.run(work, on_warning=context.log.warning, stats=stats)
            break
        except RetriesExhaustedError as error:
            if left_to_do is None:
                landing.abort()
                raise dg.RetryRequested(max_retries=2, seconds_to_wait=60) from error
            if round_number == RESUME_ROUNDS:
                landing.abort()
                raise dg.Failure(
                    description=f"{asset}: {error} ({left_to_do():,} left after {RESUME_ROUNDS} resumptions; nothing replaced)"
                ) from error
            context.log.warning(
                f"{asset}: {error} Resuming in {RESUME_PAUSE_SECONDS:g}s with the {left_to_do():,} not yet "
                "fetched; what was fetched is kept."
            )
            time.sleep(RESUME_PAUSE_SECONDS)
        except BaseException as error:
            landing.abort()  # nothing staged survives a failed or interrupted fetch
            if isinstance(error, UnreachableError):
                _UNREACHABLE_IN_RUN[context.run_id] = error.base_url
            if isinstance(error, PlannrError):  # the message already says what went wrong and what to do
                raise dg.Failure(description=f"{asset}: {error}") from error
            raise
    context.log.info(
        f"{stats.requests} requests, {stats.retries} retries, {stats.budget_wait_seconds:.1f}s waiting on the budget"
    )


async def land_listing(
    api: PlannrClient,
    landing: Landing,
    endpoint: endpoints.Endpoint,
    rows_of: Callable[[list[dict], Drift], dict[str, list[dict]]],
) -> None:
    """A whole listing, page by page (flat memory), counted against its meta.total.

    Asks for a stable order (oldest created first), so records added while we read land on
    later pages instead of shifting earlier ones.
    """
    listing = endpoint.with_params(**endpoints.OLDEST_CREATED_FIRST)
    received, total = 0, None
    async for page in api.iter_pages(listing.path, listing.params):
        received += len(page.records)
        total = page.total
        landing.stage(rows_of(landing.accept(page.records), landing.drift), page.requested_at)
        if page.newer_copies:
            landing.stage_newer_copies(
                rows_of(landing.accept(page.newer_copies), landing.drift), page.requested_at
            )
        landing.progress(received, total)
    landing.count_listing(listing.path, total, received)


async def confirm_deletions(api: PlannrClient, landing: Landing, path_of: Callable[[str], str]) -> None:
    """Confirm one by one, with the API's show route, the deletions a finished listing implies.

    Page-number paging over a list that changes while it is read can skip a live record with
    the total unchanged (one record deleted from page 1 shifts another off page 2 unseen), so a
    record missing from a listing is only recorded deleted once the API says 404 for it. A
    record it still shows is kept as stored, to be re-read by the next sweep. Costs one request
    per record missing since the last sweep; nothing when none is.
    """
    candidates = landing.deletion_candidates()
    if not landing.deletions_plausible(len(candidates)):
        return  # so many that the commit refuses them, naming the numbers: none is asked about
    landing.proven_gone = await gone(api, candidates, path_of) if candidates else set()
    alive = set(candidates) - landing.proven_gone
    landing.seen_alive.update(alive)
    if alive:
        landing.context.log.warning(
            f"{landing.root.name}: {len(alive)} record(s) missing from the listing still exist (the listing "
            "shifted while it was read); kept as stored, re-read by the next sweep"
        )
