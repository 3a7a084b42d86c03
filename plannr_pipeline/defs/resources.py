"""Dagster resources: the Plannr API and the storage location."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import ClassVar, TypeVar
from urllib.parse import urlparse

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from plannr_pipeline.api import PlannrClient, PlannrSettings, RequestStats
from plannr_pipeline.api.budget import budget_of
from plannr_pipeline.api.budget_share import BudgetShare
from plannr_pipeline.api.config import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONCURRENCY,
    PLANNR_RATE_WINDOW_SECONDS,
    budget_from_env,
    concurrency_from_env,
    positive_int,
    rate_window_from_env,
    sandbox_wanted,
)
from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.deployment import FixedByDeployment
from plannr_pipeline.private_files import make_private_dir
from plannr_pipeline.storage.lake import ALIAS as LAKE_ALIAS
from plannr_pipeline.storage.lake import LakeSettings, open_lake
from plannr_pipeline.storage.warehouse import CONNECT_CONFIG, DATABASE_FILE, Warehouse, data_dir_from_env

T = TypeVar("T")


class PlannrApi(FixedByDeployment, dg.ConfigurableResource):
    """The Plannr REST API, or the embedded sandbox when neither token nor base URL is set.

    Where the token goes is the deployment's to say (defs/deployment.py): run config cannot
    change base_url, token or account_uuid, nor the rate window (a shorter one would multiply the
    token's pace against the real API). The rest (budget ceiling, concurrency, the sandbox's firm)
    may be tuned per run.
    """

    DEPLOYMENT_FIELDS: ClassVar[Mapping[str, str]] = {
        "base_url": "PLANNR_BASE_URL",
        "token": "PLANNR_API_TOKEN",
        "account_uuid": "PLANNR_ACCOUNT_UUID",
        "rate_window_seconds": "PLANNR_RATE_WINDOW_SECONDS",
    }

    base_url: str | None = None
    token: str | None = None
    account_uuid: str | None = None
    rate_limit_per_minute: int | None = None  # a ceiling; unset: follow the server's announced limit
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    rate_window_seconds: float = (
        PLANNR_RATE_WINDOW_SECONDS  # Plannr's minute; shorter for a --time-scale sandbox
    )
    sandbox_seed: int = 42
    sandbox_clients: int = 250

    @classmethod
    def from_env(cls) -> PlannrApi:
        """Secrets as EnvVar, so they are read at run time and never shown in the UI."""
        env = os.environ
        return cls(
            base_url=dg.EnvVar("PLANNR_BASE_URL") if env.get("PLANNR_BASE_URL") else None,
            token=dg.EnvVar("PLANNR_API_TOKEN") if env.get("PLANNR_API_TOKEN") else None,
            account_uuid=dg.EnvVar("PLANNR_ACCOUNT_UUID") if env.get("PLANNR_ACCOUNT_UUID") else None,
            rate_limit_per_minute=budget_from_env(env),
            max_concurrency=concurrency_from_env(env),
            rate_window_seconds=rate_window_from_env(env),
            sandbox_seed=positive_int(env, "PLANNR_SANDBOX_SEED", 42),
            sandbox_clients=positive_int(env, "PLANNR_SANDBOX_CLIENTS", 250),
        )

    @property
    def uses_sandbox(self) -> bool:
        return sandbox_wanted(self.token, self.base_url)

    def settings(self) -> PlannrSettings:
        if self.uses_sandbox:
            # Loaded only when it serves: the sandbox and Faker cost a sync from the real API
            # 8 MB and 0.1 s otherwise.
            from plannr_pipeline.sandbox import embedded_sandbox

            sandbox = embedded_sandbox(self.sandbox_seed, self.sandbox_clients)
            return PlannrSettings(
                base_url=sandbox.url,
                token=sandbox.options.token,
                rate_limit_per_minute=self.rate_limit_per_minute,
                max_concurrency=self.max_concurrency,
                rate_window_seconds=sandbox.options.rate_window_seconds,  # its own, whatever is set
            )
        return PlannrSettings(
            base_url=(self.base_url or DEFAULT_BASE_URL).rstrip("/"),
            token=self.token or "",
            account_uuid=self.account_uuid,
            rate_limit_per_minute=self.rate_limit_per_minute,
            max_concurrency=self.max_concurrency,
            rate_window_seconds=self.rate_window_seconds,
        )

    def source(self) -> str:
        """Where data comes from, for logs and metadata (never the token)."""
        if self.uses_sandbox:
            return f"embedded sandbox (seed {self.sandbox_seed}, {self.sandbox_clients} clients)"
        return urlparse(self.base_url or DEFAULT_BASE_URL).netloc

    def client(
        self,
        on_warning: Callable[[str], None] | None = None,
        stats: RequestStats | None = None,
        share: float | None = None,
    ) -> PlannrClient:
        """`share`: take at most that share of the token's budget (the rolling refresh)."""
        settings = self.settings()
        budget = None
        if share is not None:
            budget = BudgetShare(budget_of(settings), share)
        return PlannrClient(settings, on_warning=on_warning, stats=stats, budget=budget)

    def run(
        self,
        work: Callable[[PlannrClient], Awaitable[T]],
        on_warning: Callable[[str], None] | None = None,
        stats: RequestStats | None = None,
        share: float | None = None,
    ) -> T:
        """The one bridge from Dagster's synchronous code to the async client.

        Assets, sensors and checks all come through here, so each gets the same connection
        setup, retries, budget and counters; pass `stats` to read the counts even on failure.
        """
        api = self.client(on_warning, stats, share)

        async def main() -> T:
            async with api:
                return await work(api)

        return asyncio.run(main())


def lake_of(catalog: str | None, data: str | None, schema: str | None = None) -> LakeSettings | None:
    """The lake the resource fields name (checked as the PLANNR_LAKE_* variables are), or None;
    `schema` is a firm's own lake in the catalog (LakeSettings.for_firm)."""
    lake = LakeSettings.from_env({"PLANNR_LAKE_CATALOG": catalog or "", "PLANNR_LAKE_DATA": data or ""})
    return replace(lake, schema=schema) if lake and schema else lake


class PlannrStorage(FixedByDeployment, dg.ConfigurableResource):
    """Where the data of record lives: Parquet under `data_dir` with the views in a DuckDB database
    beside it (by default `plannr.duckdb`; the definitions take it from the `duckdb` resource), or,
    with `lake_catalog` and `lake_data`, a DuckLake (then `data_dir` only stages writes). All are
    the deployment's (PLANNR_DATA_DIR, PLANNR_LAKE_*), never run config."""

    DEPLOYMENT_FIELDS: ClassVar[Mapping[str, str]] = {
        "data_dir": "PLANNR_DATA_DIR",
        "database": "PLANNR_DATA_DIR",
        "lake_catalog": "PLANNR_LAKE_CATALOG",
        "lake_data": "PLANNR_LAKE_DATA",
        "lake_schema": "PLANNR_LAKE_CATALOG",
    }

    data_dir: str = "data"
    database: str | None = None
    lake_catalog: str | None = None
    lake_data: str | None = None
    lake_schema: str | None = None  # a firm's own lake in the catalog (LakeSettings.for_firm)

    def lake(self) -> LakeSettings | None:
        return lake_of(self.lake_catalog, self.lake_data, self.lake_schema)

    def warehouse(self) -> Warehouse:
        data_dir = os.path.abspath(self.data_dir)
        make_private_dir(Path(data_dir))  # client data: the owner's alone, whoever created the run
        return Warehouse(data_dir, self.database, self.lake())


class PlannrDuckDB(FixedByDeployment, DuckDBResource):
    """The Plannr database for a user's own assets. Before a run uses it, views left pointing at
    another folder (the data folder was moved or copied) are pointed at `data_dir`. Which file
    and folder are the deployment's (PLANNR_DATA_DIR), never run config."""

    DEPLOYMENT_FIELDS: ClassVar[Mapping[str, str]] = {
        "data_dir": "PLANNR_DATA_DIR",
        "database": "PLANNR_DATA_DIR",
        "lake_catalog": "PLANNR_LAKE_CATALOG",
        "lake_data": "PLANNR_LAKE_DATA",
        "lake_schema": "PLANNR_LAKE_CATALOG",
    }

    data_dir: str
    lake_catalog: str | None = None
    lake_data: str | None = None
    lake_schema: str | None = None  # a firm's own lake in the catalog (LakeSettings.for_firm)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if self.lake_catalog:
            return  # the relations live in the lake; nothing points at a folder
        if moved := Warehouse(os.path.abspath(self.data_dir), self.database).follow_a_move():
            context.log.warning(moved)

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The database, or on the lake a connection with it attached read-only (a user's asset
        reads the data of record; only the Plannr assets write it)."""
        lake = lake_of(self.lake_catalog, self.lake_data, self.lake_schema)
        if lake is None:
            with super().get_connection() as connection:
                yield connection
            return
        connection = open_lake(lake, os.environ, read_only=True)
        try:
            connection.execute(f"USE {LAKE_ALIAS}")
            yield connection
        finally:
            connection.close()


def storage_resources_from_env() -> tuple[PlannrStorage, PlannrDuckDB]:
    """One setting (PLANNR_DATA_DIR) places both: the DuckDB resource a user's own assets read
    through, and the storage the Plannr assets write, which keeps its views in that database."""
    data_dir = data_dir_from_env()
    lake = LakeSettings.from_env()
    lake_fields = {"lake_catalog": lake.catalog, "lake_data": lake.data} if lake else {}
    database = PlannrDuckDB(
        database=str(Path(data_dir).absolute() / DATABASE_FILE),
        connection_config=CONNECT_CONFIG,
        data_dir=data_dir,
        **lake_fields,
    )
    return PlannrStorage(data_dir=data_dir, database=database.database, **lake_fields), database


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The single firm's resources, by the keys its assets ask for, from the PLANNR_* variables."""
    storage, duckdb = storage_resources_from_env()
    return {
        "plannr": PlannrApi.from_env(),
        "storage": storage,
        "duckdb": duckdb,
        "alert_webhook": AlertWebhook.from_env(),
    }
