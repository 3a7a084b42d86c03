"""A firm's identity in the definitions: its key prefix, group, pool and resource keys.

`DEFAULT_FIRM` (no slug) is the single firm of the `PLANNR_*` variables and names everything
exactly as before firms existed, so existing instances keep their asset keys, runs and cursors.
A named firm prefixes all of them with its slug.

Lives outside `defs/` on purpose: `load_from_defs_folder` would otherwise pick up whatever a
module here builds.
"""

from __future__ import annotations

import functools
import inspect
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

SLUG_PATTERN = r"[a-z][a-z0-9_]*"
_SLUG = re.compile(rf"^{SLUG_PATTERN}$")
# A slug is also its firm's schema in firms.duckdb: DuckDB's own schema and catalog names would
# shadow or be shadowed by it.
RESERVED_SLUGS = frozenset({"main", "temp", "system", "memory", "information_schema", "pg_catalog"})

# The resources every firm has its own copy of (the alert webhook is the deployment's, shared).
FIRM_RESOURCES = ("plannr", "storage", "duckdb")


@dataclass(frozen=True)
class Firm:
    slug: str | None = None

    def __post_init__(self) -> None:
        # The slug becomes an asset key part, a job name prefix and a folder name: anything
        # else (a dot, a slash, `..`) could reach another firm's names or folder.
        if self.slug is not None and not _SLUG.match(self.slug):
            raise ValueError(f"firm slug {self.slug!r} must match {SLUG_PATTERN}")
        if self.slug in RESERVED_SLUGS:
            raise ValueError(f"firm slug {self.slug!r} is reserved by DuckDB: choose another")

    @property
    def is_default(self) -> bool:
        return self.slug is None

    def key(self, name: str) -> dg.AssetKey:
        return dg.AssetKey(name) if self.slug is None else dg.AssetKey([self.slug, name])

    def name(self, name: str) -> str:
        """A job, schedule, sensor, op or resource name."""
        return name if self.slug is None else f"{self.slug}_{name}"

    def group(self, default: str) -> str:
        return default if self.slug is None else self.slug

    def pool(self, default: str) -> str:
        # One pool per firm: one firm's backfill never holds the slots another firm's hourly
        # refresh waits for (each firm has its own token, so its own request budget).
        return default if self.slug is None else f"{default}_{self.slug}"

    def resource_keys(self) -> dict[str, str]:
        return {key: self.name(key) for key in FIRM_RESOURCES}


DEFAULT_FIRM = Firm()


def rename_resources(fn: Callable, names: Mapping[str, str]) -> Callable:
    """`fn` with its resource parameters renamed (`plannr` -> `acme_plannr`), for Dagster, which
    takes a Pythonic resource's key from the parameter's name. The body is unchanged and still
    receives `plannr`: one asset module serves every firm."""
    names = {old: new for old, new in names.items() if old != new}
    if not names:
        return fn
    signature = inspect.signature(fn)
    # Resolved here: a string annotation would otherwise be looked up in this module's globals.
    hints = typing.get_type_hints(fn)
    back = {new: old for old, new in names.items()}

    def original_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
        return {back.get(k, k): v for k, v in kwargs.items()}

    # Dagster treats a generator function's yields as events: the wrapper must be one too.
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return (yield from fn(*args, **original_kwargs(kwargs)))
    else:

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **original_kwargs(kwargs))

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[
            p.replace(name=names.get(p.name, p.name), annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
        ]
    )
    wrapper.__annotations__ = {names.get(k, k): v for k, v in hints.items()}
    del wrapper.__wrapped__  # so inspect reads the renamed signature, not the original's
    return wrapper
