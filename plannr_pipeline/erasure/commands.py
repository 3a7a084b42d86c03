"""`plannr-pipeline erase | unerase | retention`: one line and exit 2 for bad input, never a
traceback; the work is `erase.py` and `retention.py`, shared with the Dagster jobs."""

from __future__ import annotations

import argparse
import os
import sys

EXIT_BAD_INPUT = 2


def _data_dir(args: argparse.Namespace) -> str:
    """The firm's data folder (`--firm SLUG`), else PLANNR_DATA_DIR."""
    from plannr_pipeline.storage.warehouse import data_dir_from_env

    if args.firm:
        from plannr_pipeline.firms.files import firm_named

        return os.path.abspath(firm_named(args.firm).folder())
    return os.path.abspath(data_dir_from_env())


def _guarded(work):
    """Run a command; a known mistake becomes one line on stderr and exit 2."""

    def run(args: argparse.Namespace) -> int:
        from plannr_pipeline.api import PlannrError
        from plannr_pipeline.erasure.erase import ErasureError
        from plannr_pipeline.erasure.retention import RetentionSettingError
        from plannr_pipeline.firms.files import FirmFileError
        from plannr_pipeline.storage.lake import LakeSettingsError

        try:
            return work(args)
        except (ErasureError, RetentionSettingError, FirmFileError, PlannrError, LakeSettingsError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except TimeoutError as error:  # the commit lock, held by a run that does not end
            print(f"error: {error}", file=sys.stderr)
            return 1

    return run


def _store(args: argparse.Namespace):
    """The firm's store (`--firm`: its own lake in the deployment's where PLANNR_LAKE_* name
    one, else its folder), else the store of the PLANNR_* variables."""
    from plannr_pipeline.storage.warehouse import Warehouse

    if args.firm:
        from plannr_pipeline.firms.files import firm_named

        return Warehouse(_data_dir(args), lake=firm_named(args.firm).lake())
    return Warehouse.from_env(_data_dir(args))


@_guarded
def _erase(args: argparse.Namespace) -> int:
    from plannr_pipeline.erasure.erase import check_input, erase_client

    check_input(args.client, args.reason)  # before any folder is touched
    warehouse = _store(args)
    result = erase_client(warehouse.store, args.client, args.reason)
    for line in result.lines():
        print(line)
    if problem := warehouse.refresh_views():
        print(
            f"note: {problem}; `plannr-pipeline views` shows erasure_log once it is closed", file=sys.stderr
        )
    return 0


@_guarded
def _unerase(args: argparse.Namespace) -> int:
    from plannr_pipeline.erasure.erase import check_input, lift_erasure

    check_input(args.client, args.reason)
    print(lift_erasure(_store(args).store, args.client, args.reason))
    return 0


@_guarded
def _retention(args: argparse.Namespace) -> int:
    from plannr_pipeline.erasure.retention import (
        DELETED_VARIABLE,
        HISTORY_VARIABLE,
        apply_retention,
        period_from,
    )

    history, deleted = period_from(HISTORY_VARIABLE), period_from(DELETED_VARIABLE)
    done = apply_retention(_store(args).store, history, deleted)
    for name, changed in sorted(done.items()):
        print(f"{name}: {changed.removed} version(s) dropped, {changed.cleared} with personal fields cleared")
    if not any(c.removed or c.cleared for c in done.values()):
        print("retention: nothing is past its period")
    return 0


def add_commands(commands) -> None:
    erase = commands.add_parser(
        "erase", help="erase a client's personal data from every file (UK GDPR art. 17)"
    )
    erase.add_argument("--client", required=True, metavar="UUID", help="the client's uuid")
    erase.add_argument("--reason", required=True, help="why (kept in erasure_log; no names)")
    erase.add_argument("--firm", metavar="SLUG", help="the firm whose data folder (default PLANNR_DATA_DIR)")
    erase.set_defaults(run=_erase)

    unerase = commands.add_parser(
        "unerase",
        help="lift an erasure: later syncs store the client again if the API sends it; nothing is restored",
    )
    unerase.add_argument("--client", required=True, metavar="UUID")
    unerase.add_argument("--reason", required=True)
    unerase.add_argument("--firm", metavar="SLUG")
    unerase.set_defaults(run=_unerase)

    retention = commands.add_parser(
        "retention", help="apply PLANNR_HISTORY_RETENTION and PLANNR_DELETED_PERSONAL_RETENTION now"
    )
    retention.add_argument("--firm", metavar="SLUG")
    retention.set_defaults(run=_retention)
    for parser in (erase, unerase, retention):
        # One line naming the flag, exit 2 (no usage block to scroll past), as `sandbox` does.
        parser.error = lambda message, p=parser: p.exit(EXIT_BAD_INPUT, f"{p.prog}: error: {message}\n")
