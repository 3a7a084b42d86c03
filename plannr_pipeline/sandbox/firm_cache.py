"""A generated firm kept on disk, so a large sandbox starts in seconds (issue 26).

Generating a 100,000-client firm takes 2-3 minutes of Faker and `random` calls; reading the
same records back with `marshal` takes seconds. The file is named by everything the records
depend on: the seed, the size, the reference moment, the source of the modules that make them,
Faker's version and Python's (marshal's format). A change to any of these names another file, so
a stale one is never read; the default reference is midnight UTC today, so each day's first
start generates and writes the day's file.

marshal over pickle: it reads plain dicts, lists and strings about a third faster (a 5,000-client
firm: 0.48 s against 0.68), and the firm's records are nothing else. The few parts that are not
(the reference and the import plans) travel pickled inside it.
"""

from __future__ import annotations

import gc
import hashlib
import marshal
import os
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from plannr_pipeline import private_files
from plannr_pipeline.sandbox import firm as firm_module
from plannr_pipeline.sandbox import formats, import_plans, people
from plannr_pipeline.sandbox.firm import Firm, FirmSize, generate_firm, reference_moment

# The modules whose code decides the generated records: a change to one must miss the cache.
_GENERATING_MODULES = (firm_module, formats, import_plans, people)
# `plannr-pipeline sandbox` caches firms from this size on (generated in ~15 s; read in ~1).
CACHE_FIRMS_FROM_CLIENTS = 10_000
KEEP_FILES = 4  # older firms are deleted when a new one is written: each is ~8 KB a client


def default_cache_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """`$PLANNR_SANDBOX_CACHE`, else `$XDG_CACHE_HOME/plannr-pipeline/sandbox`, else
    `~/.cache/plannr-pipeline/sandbox`."""
    if raw := env.get("PLANNR_SANDBOX_CACHE", "").strip():
        return Path(raw).expanduser()
    cache = env.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "plannr-pipeline" / "sandbox"


def cache_key(seed: int, size: FirmSize, reference: datetime) -> str:
    digest = hashlib.sha256()
    for part in (
        repr(seed),
        repr(sorted(asdict(size).items())),
        reference.isoformat(),
        metadata.version("faker"),
        f"{sys.version_info[:2]} marshal {marshal.version}",
    ):
        digest.update(part.encode() + b"\0")
    for module in _GENERATING_MODULES:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:32]


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Millions of new dicts and lists would set the cyclic collector off again and again, each
    pass walking everything made so far (a 5,000-client firm: 2.1 s to read instead of 0.7)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _dump(firm: Firm) -> bytes:
    small = pickle.dumps((firm.reference, firm.imports))
    return marshal.dumps(
        (
            small,
            firm.clients,
            firm.staff,
            firm.goals_by_client,
            firm.circles,
            firm.tasks,
            firm.assignments,
            firm.goal_owners,
        )
    )


def _load(data: bytes) -> Firm:
    with _collector_paused():
        small, clients, staff, goals_by_client, circles, tasks, assignments, goal_owners = marshal.loads(data)
    reference, imports = pickle.loads(small)
    return Firm(reference, clients, staff, goals_by_client, circles, tasks, imports, assignments, goal_owners)


def firm_from_cache(
    seed: int, size: FirmSize, reference: datetime | date | None, directory: Path, say: Any = None
) -> Firm:
    """`generate_firm(seed, size, reference)`: read from `directory` if an earlier start wrote it,
    else generated and written there for the next start. A folder that is not ours alone (a
    symlink, another user's, writable by others) is neither read nor written: marshal trusts
    what it reads."""
    say = say or (lambda line: None)
    reference = reference_moment(reference)
    path = directory / f"firm-{cache_key(seed, size, reference)}.marshal"
    if why := private_files.not_ours(directory):
        say(f"not caching the generated firm: {directory} {why}")
        return generate_firm(seed, size, reference)
    if path.is_file() and not private_files.not_ours(path):
        return _load(path.read_bytes())
    firm = generate_firm(seed, size, reference)
    try:
        _write(path, _dump(firm))
    except OSError as error:
        say(f"could not cache the generated firm in {directory}: {error.strerror}")
    return firm


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: another sandbox starting meanwhile never reads half a firm."""
    private_files.make_private_dir(path.parent)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    os.replace(partial, path)
    older = sorted(path.parent.glob("firm-*.marshal"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in older[KEEP_FILES:]:
        stale.unlink(missing_ok=True)
