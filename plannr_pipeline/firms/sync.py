"""`plannr-pipeline sync [--firm SLUG ...]` with firm files: one child process per firm, side by
side. Each child is an ordinary sync of one firm (`--one-firm SLUG`: its own definitions, token,
budget, pool and data folder), so a firm that fails (a wrong token, its API down) ends its own
process and no other; every line it prints is shown prefixed with its slug."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from plannr_pipeline.firms.concurrency import write_pool_limits
from plannr_pipeline.firms.files import FIRMS_DIR, FirmFileError, read_firm_files
from plannr_pipeline.firms.selection import SelectionError, per_firm_selection


def sync_firms(slugs: Sequence[str], passthrough: Sequence[str], select: str | None = None) -> int:
    try:
        firms = read_firm_files(FIRMS_DIR)
    except FirmFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    known = [f.slug for f in firms]
    if unknown := [s for s in slugs if s not in known]:
        print(
            f"error: unknown firm(s) {', '.join(unknown)}; firm files name: {', '.join(known) or 'none'}",
            file=sys.stderr,
        )
        return 2
    from plannr_pipeline.defs.assets import ASSETS

    try:
        selection = per_firm_selection(
            select, list(dict.fromkeys(slugs)) or known, (k.to_user_string() for a in ASSETS for k in a.keys)
        )
    except SelectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chosen = list(selection)
    from plannr_pipeline.instance import prepare_instance

    try:  # once, here: children preparing a fresh DAGSTER_HOME at the same moment would race
        for line in prepare_instance():
            print(line)
        import dagster as dg

        # Opening it creates its databases now: two children creating them at once can both
        # stamp the schema's version and leave the instance unusable.
        with dg.DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
            for line in write_pool_limits(instance, firms):  # every firm's, not only those synced now
                print(line)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"plannr-pipeline sync: firms {', '.join(chosen)}, side by side", flush=True)
    lock = threading.Lock()

    def relay(slug: str, child: subprocess.Popen[str]) -> None:
        assert child.stdout is not None
        for line in child.stdout:
            with lock:
                print(f"[{slug}] {line}", end="", flush=True)

    children = {
        slug: subprocess.Popen(
            [
                *(sys.executable, "-m", "plannr_pipeline.cli", "sync", "--one-firm", slug, *passthrough),
                *(["--select", ",".join(names)] if (names := selection[slug]) else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for slug in chosen
    }
    relays = [threading.Thread(target=relay, args=item, daemon=True) for item in children.items()]
    for thread in relays:
        thread.start()
    codes = {slug: child.wait() for slug, child in children.items()}
    for thread in relays:
        thread.join()
    failed = [slug for slug, code in codes.items() if code != 0]
    print()
    _combine(firms)
    for slug, code in codes.items():
        print(f"firm {slug}: {'landed' if code == 0 else f'FAILED (exit {code})'}", flush=True)
    if failed:
        print(f"\nsync FAILED for firm(s): {', '.join(failed)}", file=sys.stderr)
        return 1
    print("sync finished: every firm landed.")
    return 0


def _combine(firms: list) -> None:
    """The read-only view across every firm (not only those synced now), with a `firm` column."""
    import duckdb

    from plannr_pipeline.storage.lake import LakeSettings

    if LakeSettings.from_env():  # each firm's relations are in its own lake: `lake-sql --firm`
        return

    from plannr_pipeline.firms.combined import COMBINED_FILE, write_combined
    from plannr_pipeline.storage.warehouse import data_dir_from_env

    path = Path(data_dir_from_env()).absolute() / COMBINED_FILE
    try:
        views = write_combined(firms, path)
    except (
        duckdb.Error,
        OSError,
    ) as error:  # a full disk, say: the old file's views still read the current Parquet
        print(
            f"note: {path} not rewritten ({type(error).__name__}); its views still read the current Parquet"
        )
        return
    print(f"across firms: {path} ({len(views)} views, each with a `firm` column; one schema per firm)")
