"""`plannr-pipeline sync | refresh | sandbox | instance | views | erase | unerase | retention`."""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib.abc
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import NoReturn

from plannr_pipeline import progress
from plannr_pipeline.api import PlannrError, PlannrSettings
from plannr_pipeline.api.config import DEFAULT_BASE_URL, budget_dir_from_env, check_settings
from plannr_pipeline.erasure.commands import add_commands as add_erasure_commands
from plannr_pipeline.erasure.periods import check_retention_settings
from plannr_pipeline.instance import prepare_instance
from plannr_pipeline.private_files import make_private_dir, owner_only_umask, report_looser
from plannr_pipeline.refresh.command import add_command as add_refresh_command


def _sync(args: argparse.Namespace) -> int:
    try:  # the firm settings import the definitions, which read settings such as PLANNR_START_DATE
        from plannr_pipeline.firms.files import FirmFileError, firm_files_exist, firm_named
    except PlannrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    firm = None
    if args.one_firm:  # a child of `sync_firms`: this one firm, in its own data folder
        try:
            firm = firm_named(args.one_firm)
        except FirmFileError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        # Fixed before PLANNR_DATA_DIR becomes the firm's folder (the default is relative to it).
        firm = firm.model_copy(update={"data_dir": os.path.abspath(firm.folder())})
        os.environ["PLANNR_DATA_DIR"] = firm.folder()
    elif args.firm or firm_files_exist():
        from plannr_pipeline.firms.sync import sync_firms

        return sync_firms(args.firm or [], ["--pool-wait", str(args.pool_wait)], args.select)
    try:
        check_settings()  # fail now, clearly, rather than inside every step
        budget_dir_from_env(os.environ)  # the sandbox's token has a budget file too
        # Importing the definitions reads the rest of the settings (partitions, budget).
        from plannr_pipeline.defs.assets.landing import delete_share_from_env
        from plannr_pipeline.storage.lake import LakeSettings
        from plannr_pipeline.sync import ASSET_NAMES, run_sync

        delete_share_from_env()
        LakeSettings.from_env()
        check_retention_settings()  # read by the nightly retention job: said now, not at 03:30
    except (PlannrError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from plannr_pipeline.storage.warehouse import Warehouse, data_dir_from_env

    selected = set(args.select.split(",")) if args.select else None
    if selected and (unknown := selected - ASSET_NAMES):
        print(
            f"error: unknown asset(s) {', '.join(sorted(unknown))}; choose from {', '.join(sorted(ASSET_NAMES))}",
            file=sys.stderr,
        )
        return 2

    data_dir = os.path.abspath(data_dir_from_env())
    firm_run: dict = {}
    if firm is not None:
        from plannr_pipeline.defs.assets.common import API_POOL
        from plannr_pipeline.firms.build import firm_run_parts

        firm_run = firm_run_parts(firm, pool=firm.firm.pool(API_POOL))
        if selected:
            selected = {firm.firm.key(name).to_user_string() for name in selected}
        source = f"firm {firm.slug}: {firm_run['resources_by_key'][firm.firm.name('plannr')].source()}"
    elif PlannrSettings.wants_sandbox():
        source = "the embedded sandbox (no PLANNR_API_TOKEN or PLANNR_BASE_URL set)"
    else:
        source = os.environ.get("PLANNR_BASE_URL") or DEFAULT_BASE_URL
    try:
        for line in prepare_instance():
            print(line)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        make_private_dir(Path(data_dir))
    except OSError as error:
        print(
            f"error: PLANNR_DATA_DIR={data_dir} cannot be used ({error.strerror}): point it at a folder you can write.",
            file=sys.stderr,
        )
        return 2
    print(f"plannr-pipeline sync: from {source} into {data_dir}", flush=True)
    _report_open_folders(data_dir)
    if moved := Warehouse.from_env(data_dir).follow_a_move():
        print(moved, flush=True)
    recovered = Warehouse.from_env(data_dir).store.recover()  # what a sync killed earlier left staged
    for line in recovered[:3]:  # a killed goals write leaves a file per month: the gist will do
        print(line, flush=True)
    if len(recovered) > 3:
        print(f"... and {len(recovered) - 3} more like it", flush=True)
    on_terminal = sys.stderr.isatty()
    if on_terminal:  # live bars instead of the run log's progress lines
        progress.SINK = bars = progress.TerminalBars()
    signals = _SignalLog()
    if args.program:
        # Everything loaded so far (Dagster, Arrow, DuckDB, the definitions: ~170,000 objects)
        # lives as long as the process. Out of the collector's sight, its full collections stay
        # cheap and come often enough to free what the fetch drops in reference cycles (every
        # HTTP response and its body is one) before it piles up: ~15 MB less at the peak.
        gc.collect()
        gc.freeze()
    try:
        with signals:
            report = run_sync(
                selected,
                log_level="WARNING" if on_terminal else "INFO",
                should_stop=signals.received,
                pool_wait=args.pool_wait,
                **firm_run,
            )
    except KeyboardInterrupt:  # between steps, where no step is there to unwind
        signals.received()
        signals.names = signals.names or ["SIGINT"]
    finally:
        if on_terminal:
            bars.close()
            progress.SINK = None
    if signals.names:
        print(
            f"\nsync stopped by {signals.names[0]}: the step under way left stored data as it was "
            "(its staged files are removed); run sync again to finish.",
            file=sys.stderr,
        )
        return 143 if signals.names[0] == "SIGTERM" else 130
    # Each write brought the views in line (writing the database only where one changed); try
    # again only where that did not happen.
    warehouse = Warehouse.from_env(data_dir)
    if report.views_problems or not report.ok or not (warehouse.lake or warehouse.db_path.exists()):
        report.views_problems = [problem] if (problem := warehouse.refresh_views()) else []
    _print_summary(report, warehouse.where)
    if not report.ok:
        print("\nsync FAILED:", file=sys.stderr)
        for failure in report.failures:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    if report.views_problems:
        # The data landed and the views already there read it; what waits is a view whose
        # definition changed, which the next sync (or `views`) writes. Not a failed sync.
        print(
            f"\nnote: the DuckDB views could not be updated yet: {report.views_problems[-1]}.\n"
            "The next sync updates them, or run `plannr-pipeline views` once the program holding the "
            "database read-write has closed it.",
            file=sys.stderr,
        )
    print("sync finished: all assets landed.")
    return 0


class _SignalLog:
    """Which of SIGTERM and Ctrl-C arrived during the sync.

    Dagster takes both over while a step runs (it interrupts the step, which unwinds and removes
    what it staged) and cannot say which it was; the interpreter's wakeup pipe still records
    every signal number, whoever handles it. The sync starts no step after one arrived.
    """

    def __init__(self) -> None:
        self.names: list[str] = []

    def __enter__(self) -> _SignalLog:
        self._read, write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(write, False)
        self._write = write
        self._previous_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        self._previous_term = signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # as Ctrl-C
        return self

    def received(self) -> bool:
        try:
            numbers = os.read(self._read, 64)
        except BlockingIOError:
            numbers = b""
        self.names += [signal.Signals(n).name for n in numbers if n in (signal.SIGTERM, signal.SIGINT)]
        return bool(self.names)

    def __exit__(self, *exc_info: object) -> None:
        self.received()
        signal.set_wakeup_fd(self._previous_fd)
        signal.signal(signal.SIGTERM, self._previous_term)
        os.close(self._read)
        os.close(self._write)


def _views(args: argparse.Namespace) -> int:
    from plannr_pipeline.storage.warehouse import Warehouse, data_dir_from_env

    data_dir = os.path.abspath(data_dir_from_env())
    warehouse = Warehouse.from_env(data_dir)
    if problem := warehouse.refresh_views():
        print(f"error: {problem}. Close the other program holding it and run this again.", file=sys.stderr)
        return 3
    print(f"views refreshed in {warehouse.db_path if warehouse.lake is None else warehouse.lake.data}")
    return 0


def _lake_sql(args: argparse.Namespace) -> int:
    from plannr_pipeline.storage.lake import LakeSettings, analyst_sql

    try:
        lake = LakeSettings.from_env()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if lake is None:
        print(
            "error: no lake is configured (PLANNR_LAKE_CATALOG and PLANNR_LAKE_DATA are unset); the data is "
            "in the local store: duckdb -readonly $PLANNR_DATA_DIR/plannr.duckdb",
            file=sys.stderr,
        )
        return 2
    if args.firm:  # that firm's own lake in the deployment's (LakeSettings.for_firm)
        from plannr_pipeline.firms.files import FirmFileError, firm_named

        try:
            lake = firm_named(args.firm).lake() or lake
        except FirmFileError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    print(analyst_sql(lake, os.environ))
    return 0


def _report_open_folders(data_dir: str) -> None:
    """One line for each folder of client data that other users can reach, with the fix."""
    from plannr_pipeline.api.config import budget_dir_from_env
    from plannr_pipeline.storage.warehouse import data_dir_from_env

    folders = [Path(data_dir or data_dir_from_env()), Path(os.environ["DAGSTER_HOME"])]
    try:
        folders.append(budget_dir_from_env(os.environ))
    except PlannrError:
        pass  # sync has said so already; `instance` does not need it
    report_looser(folders, lambda line: print(line, file=sys.stderr, flush=True))


def _write_firm_pool_limits() -> list[str]:
    from plannr_pipeline.firms.files import FIRMS_DIR, firm_files_exist, read_firm_files

    if not firm_files_exist():
        return []
    import dagster as dg

    from plannr_pipeline.firms.concurrency import write_pool_limits

    with dg.DagsterInstance.get() as instance:
        return write_pool_limits(instance, read_firm_files(FIRMS_DIR))


def _instance(args: argparse.Namespace) -> int:
    try:
        said = prepare_instance()
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for line in said:
        print(line, file=sys.stderr)
    try:  # each firm's pool limit, before the UI's daemon queues a run of it
        for line in _write_firm_pool_limits():
            print(line, file=sys.stderr)
    except (ValueError, PlannrError) as error:  # a firm file's mistake (FirmFileError), a bad setting
        print(f"error: {error}", file=sys.stderr)
        return 2
    _report_open_folders("")  # scripts/dev.sh calls this before the UI starts: said once there
    print(os.environ["DAGSTER_HOME"])
    return 0


def _print_summary(report, where: str) -> None:
    print(f"\n{'table':<22}{'rows':>10}")
    for table, rows in sorted(report.rows.items()):
        print(f"{table:<22}{rows:>10}")
    failed_checks = [name for name, passed in report.checks.items() if not passed]
    print(
        f"\n{len(report.checks) - len(failed_checks)}/{len(report.checks)} checks passed"
        + (f"; FAILED: {', '.join(failed_checks)}" if failed_checks else "")
    )
    if report.rejected:
        print(
            f"{report.rejected} record(s) could not be stored and were quarantined: select * from rejected_records"
        )
    if report.erased_still_sent:
        print(
            f"the API still sends {report.erased_still_sent} client(s) erased here (withheld, not stored): "
            "erase them in Plannr too (select uuid, recorded_at from erasure_log)"
        )
    print(f"{report.requests} API requests in {report.seconds:.1f}s. {where}")


def _whole(least: int):
    """An argparse type: a whole number, `least` or more."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"takes a whole number, {least} or more (not {text!r})"
            ) from None
        if value < least:
            raise argparse.ArgumentTypeError(f"takes a whole number, {least} or more (not {text})")
        return value

    return parse


def _time_scale(text: str) -> float:
    """--time-scale: from 1 (Plannr's minute) to 120 (a half-second window)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= 120:
        raise argparse.ArgumentTypeError(f"takes a number from 1 to 120 (not {text!r})")
    return value


def _amount(most: float = float("inf")):
    """An argparse type: a number (decimals allowed) from 0 up to `most`."""
    bounds = "0 or more" if most == float("inf") else f"from 0 to {most:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes a number, {bounds} (not {text!r})") from None
        if not 0 <= value <= most or value == float("inf"):  # also refuses nan
            raise argparse.ArgumentTypeError(f"takes a number, {bounds} (not {text})")
        return value

    return parse


# The FirmSize fields `plannr-pipeline sandbox` sets, each from the flag of the same name
# (--max-goals-per-client -> max_goals_per_client). An unset flag leaves FirmSize's own default.
FIRM_SHAPE = (
    "clients",
    "staff",
    "max_goals_per_client",
    "tasks_per_client",
    "circles_per_client",
    "imports_per_day",
)


def firm_size_from_args(args: argparse.Namespace):
    """The `FirmSize` the `sandbox` flags ask for (FirmSize's defaults for any not given)."""
    from plannr_pipeline.sandbox.firm import FirmSize

    given = {field: getattr(args, field) for field in FIRM_SHAPE if getattr(args, field, None) is not None}
    return FirmSize(**given)


# `plannr-pipeline sandbox` takes its token from here when --token is not given: a flag shows in
# `ps` to every local user, the environment of another user's process does not.
SANDBOX_TOKEN_ENV = "PLANNR_SANDBOX_TOKEN"


def _sandbox(args: argparse.Namespace) -> int:
    from plannr_pipeline.sandbox.firm import FirmSize
    from plannr_pipeline.sandbox.firm_cache import CACHE_FIRMS_FROM_CLIENTS, default_cache_dir
    from plannr_pipeline.sandbox.server import SandboxOptions, SandboxServer

    size = firm_size_from_args(args)
    options = SandboxOptions(
        seed=args.seed,
        size=size,
        token=args.token,
        rate_limit_per_minute=args.rate_limit,
        rate_window_seconds=60.0 / args.time_scale,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        # A small firm is generated in seconds; a large one is kept on disk for the next start.
        firm_cache_dir=default_cache_dir() if size.clients >= CACHE_FIRMS_FROM_CLIENTS else None,
    )
    server = SandboxServer(options)
    # The firm lives as long as the process: out of the cyclic collector's sight, its full passes
    # no longer walk millions of records (seconds each at 100,000 clients) while pages are served.
    gc.freeze()
    server.advance(args.advance)
    server.start(port=args.port)
    moved = f", advanced {args.advance} step(s) to {server.changes[-1]['moment']}" if args.advance else ""
    scaled = ""
    if args.time_scale != 1:
        scaled = f", time scale {args.time_scale:g}: {args.rate_limit} requests per {options.rate_window_seconds:g} s"
    shape = "".join(
        f", {field.replace('_', ' ')} {getattr(size, field)}"
        for field in FIRM_SHAPE
        if field != "clients" and getattr(size, field) != getattr(FirmSize(), field)
    )
    print(
        f"Plannr sandbox (seed {args.seed}, {size.clients} clients{shape}{moved}{scaled}) serving at {server.url}",
        flush=True,
    )
    print(f"  export PLANNR_BASE_URL={server.url}", flush=True)
    print(
        f"  export PLANNR_API_TOKEN=<the --token you passed, or ${SANDBOX_TOKEN_ENV}>"
        if args.token_given
        else f"  export PLANNR_API_TOKEN={args.token}",
        flush=True,
    )
    if args.time_scale != 1:
        print(f"  export PLANNR_RATE_WINDOW_SECONDS={options.rate_window_seconds:g}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    # Before anything is created: the data, the instance and the budget are the owner's alone.
    owner_only_umask()
    parser = argparse.ArgumentParser(prog="plannr-pipeline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    sync = commands.add_parser("sync", help="materialise every asset, all partitions, in one process")
    sync.add_argument(
        "--select",
        help="comma-separated asset names (default: all); with firm files FIRM/NAME is one firm's, NAME every firm's",
    )
    sync.add_argument(
        "--pool-wait",
        type=_amount(),
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for a slot in the plannr_api pool held by another run before giving up (default 600)",
    )
    sync.add_argument(
        "--firm",
        action="append",
        metavar="SLUG",
        help="with firm files: sync this firm (repeatable; default every firm), firms side by side",
    )
    sync.add_argument("--one-firm", help=argparse.SUPPRESS)  # what `--firm` runs, one process per firm
    sync.set_defaults(run=_sync)

    add_refresh_command(commands, _amount())

    views = commands.add_parser("views", help="(re)create the DuckDB views over the stored Parquet")
    views.set_defaults(run=_views)

    lake_sql = commands.add_parser(
        "lake-sql", help="print the SQL that attaches the lake read-only in the DuckDB command-line client"
    )
    lake_sql.add_argument("--firm", metavar="SLUG", help="that firm's own lake (firm files on the lake)")
    lake_sql.set_defaults(run=_lake_sql)

    instance = commands.add_parser(
        "instance", help="prepare the Dagster instance (DAGSTER_HOME) sync and the UI share; print its path"
    )
    instance.set_defaults(run=_instance)

    sandbox = commands.add_parser("sandbox", help="serve the imitation Plannr API on 127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8765)
    sandbox.add_argument("--seed", type=int, default=42)
    # One line naming the flag, exit 2, for a bad value (no usage block to scroll past).
    sandbox.error = lambda message: sandbox.exit(2, f"{sandbox.prog}: error: {message}\n")  # type: ignore[method-assign]
    shape = sandbox.add_argument_group("firm shape (defaults: the sandbox's FirmSize)")
    shape.add_argument("--clients", type=_whole(0), default=250, help="client accounts (default 250)")
    shape.add_argument(
        "--staff",
        type=_whole(1),
        default=None,
        help="members of staff (default: one per 40 clients, at least 3)",
    )
    shape.add_argument(
        "--max-goals-per-client",
        type=_whole(0),
        default=None,
        metavar="N",
        help="each client has 0..N goals, evenly drawn (default 4)",
    )
    shape.add_argument(
        "--tasks-per-client",
        type=_amount(),
        default=None,
        metavar="X",
        help="tasks = clients * X (default 1.5)",
    )
    shape.add_argument(
        "--circles-per-client",
        type=_amount(),
        default=None,
        metavar="X",
        help="circles = clients * X (default 0.3)",
    )
    # The sandbox draws up to 3 imports a day (imports.plan_imports), so more than 3 would not be what was asked.
    shape.add_argument(
        "--imports-per-day",
        type=_amount(3),
        default=None,
        metavar="X",
        help="finished imports per day, on average, over the 30 days of history; at most 3 (default 0.5)",
    )
    sandbox.add_argument(
        "--token",
        default=None,
        help="the only Bearer token accepted, by the API and the /__sandbox/ controls (default: "
        f"${SANDBOX_TOKEN_ENV}, which keeps it out of `ps`; else sandbox-token)",
    )
    sandbox.add_argument(
        "--rate-limit", type=int, default=500, help="requests per minute per token (default 500, as Plannr)"
    )
    sandbox.add_argument(
        "--time-scale",
        type=_time_scale,
        default=1.0,
        metavar="K",
        help="run the rate limit's clock K times faster: --rate-limit requests per 60/K seconds, so a "
        "sweep that takes hours under the real budget takes minutes (the pipeline then needs "
        "PLANNR_RATE_WINDOW_SECONDS=60/K)",
    )
    sandbox.add_argument("--latency-ms", type=float, default=0.0)
    sandbox.add_argument("--error-rate", type=float, default=0.0, help="share of requests answered 500")
    sandbox.add_argument(
        "--advance",
        type=_whole(0),
        default=0,
        metavar="N",
        help="apply N steps of change (one hour each after the reference) before serving; "
        "POST /__sandbox/advance?steps=N moves it on while it serves",
    )
    sandbox.set_defaults(run=_sandbox)
    add_erasure_commands(commands)

    args = parser.parse_args(argv)
    if args.command == "sandbox":
        args.token = args.token or os.environ.get(SANDBOX_TOKEN_ENV) or None
        args.token_given = args.token is not None
        args.token = args.token or "sandbox-token"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "alembic"):  # a line per request or migration drowns the progress
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # The program itself, not a caller in the same process, whose interpreter is not ours to tune.
    args.program = program = argv is None
    if program and args.command == "sync" and not set(_Unloaded.PACKAGES) & set(sys.modules):
        # pyarrow imports NumPy when it loads and pandas (whenever installed: the dev and examples
        # extras bring it) on its first conversion from Python lists, only to ask whether the list
        # is a pandas object or an array: 45 MB and 0.4 s that nothing in a sync uses. pyarrow and
        # DuckDB take both being absent in their stride. Only the program does this: a caller in
        # the same process may want them after the sync.
        sys.meta_path.insert(0, _Unloaded())
    if args.command in ("sync", "refresh"):
        # Arrow's default allocator (mimalloc or jemalloc) keeps what it frees for reuse, memory a
        # sync or refresh then holds to its end. Read once, as pyarrow loads: so before the command
        # imports anything (set after the firm settings had loaded pyarrow, it was ignored: a
        # 1,000-client sync 291 -> 318 MB).
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    code = args.run(args)
    if program and args.command == "sync":
        _exit_now(code)
    return code


class _Unloaded(importlib.abc.MetaPathFinder):
    """Makes importing pandas or NumPy fail as if they were not installed (see `main`)."""

    PACKAGES = ("pandas", "numpy")

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.partition(".")[0] in self.PACKAGES:
            raise ModuleNotFoundError(f"{name} is not loaded in a sync", name=name)


def _exit_now(code: int) -> NoReturn:
    """End the process without tearing the interpreter down: after a sync the heap holds Dagster,
    Arrow and DuckDB, and freeing it module by module takes over a second and does nothing for
    anyone. Exit handlers still run and the output is flushed first."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
