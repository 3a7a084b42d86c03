"""One firm's settings (what its defs.yaml says) and the resources they give it."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, field_validator

from plannr_pipeline.api.config import (
    budget_from_env,
    concurrency_from_env,
    positive_int,
    rate_window_from_env,
)
from plannr_pipeline.defs.resources import PlannrApi, PlannrDuckDB, PlannrStorage
from plannr_pipeline.defs.schedules import HOURLY, NIGHTLY
from plannr_pipeline.firms.firm import RESERVED_SLUGS, SLUG_PATTERN, Firm
from plannr_pipeline.storage.lake import LakeSettings
from plannr_pipeline.storage.warehouse import CONNECT_CONFIG, DATABASE_FILE, data_dir_from_env


class FirmSettings(dg.Model):
    """Anything left out falls back to the `PLANNR_*` variables, as for the single firm."""

    slug: str = Field(
        pattern=f"^{SLUG_PATTERN}$", description="Key prefix, group, job prefix and folder name."
    )
    token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="The NAME of the environment variable holding this firm's API token (read at run time).",
    )
    account_uuid: str | None = None
    base_url: str | None = None
    data_dir: str | None = Field(default=None, description="Default: $PLANNR_DATA_DIR/<slug>.")
    schedules_running: bool = True
    nightly_cron: str = NIGHTLY
    hourly_cron: str = HOURLY
    concurrency_share: int = Field(
        default=1,
        ge=1,
        description=(
            "Slots in this firm's own pool (plannr_api_<slug>): how many of its API-bound steps run "
            "at once. Other firms' runs never wait for these."
        ),
    )
    max_concurrency: int | None = Field(default=None, ge=1, description="This firm's requests in flight.")
    rate_limit_per_minute: int | None = Field(
        default=None, ge=1, description="A ceiling on this firm's budget."
    )
    sandbox_seed: int | None = Field(
        default=None, description="The embedded sandbox's firm, when no token/URL."
    )

    @field_validator("slug")
    @classmethod
    def _not_reserved(cls, slug: str) -> str:
        if slug in RESERVED_SLUGS:  # the firm's schema in firms.duckdb
            raise ValueError(f"{slug!r} is a name DuckDB keeps for itself: choose another slug")
        return slug

    @property
    def firm(self) -> Firm:
        return Firm(self.slug)

    def lake(self) -> LakeSettings | None:
        """With PLANNR_LAKE_* set, this firm's own lake in the deployment's (LakeSettings.for_firm)."""
        lake = LakeSettings.from_env()
        return lake.for_firm(self.slug) if lake else None

    def folder(self) -> str:
        return self.data_dir or str(Path(data_dir_from_env()) / self.slug)

    def resources(self) -> dict[str, dg.ConfigurableResource]:
        """The firm's own API (its own token, so its own budget) and storage (its own folder and
        database), under its own resource keys (`<slug>_plannr`, ...)."""
        env = os.environ
        # A firm with a token and no base_url uses the deployment's PLANNR_BASE_URL; one with
        # neither is a sandbox firm, whatever the deployment points at.
        base_url = self.base_url or (env.get("PLANNR_BASE_URL") if self.token_env else None)
        plannr = PlannrApi(
            base_url=base_url or None,
            # The variable's name only: Dagster reads the value when a run starts, so the token
            # never enters the definitions, their metadata or the UI.
            token=dg.EnvVar(self.token_env) if self.token_env else None,
            account_uuid=self.account_uuid,
            rate_limit_per_minute=self.rate_limit_per_minute or budget_from_env(env),
            max_concurrency=self.max_concurrency or concurrency_from_env(env),
            rate_window_seconds=rate_window_from_env(env),
            sandbox_seed=self.sandbox_seed
            if self.sandbox_seed is not None
            else positive_int(env, "PLANNR_SANDBOX_SEED", 42),
            sandbox_clients=positive_int(env, "PLANNR_SANDBOX_CLIENTS", 250),
        )
        folder = self.folder()
        lake = self.lake()
        # On the lake the folder only stages writes; the data of record is the firm's own lake.
        lake_fields = (
            {"lake_catalog": lake.catalog, "lake_data": lake.data, "lake_schema": lake.schema} if lake else {}
        )
        duckdb = PlannrDuckDB(
            database=str(Path(folder).absolute() / DATABASE_FILE),
            connection_config=CONNECT_CONFIG,
            data_dir=folder,
            **lake_fields,
        )
        storage = PlannrStorage(data_dir=folder, database=duckdb.database, **lake_fields)
        keys = self.firm.resource_keys()
        return {keys["plannr"]: plannr, keys["storage"]: storage, keys["duckdb"]: duckdb}
