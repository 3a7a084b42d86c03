"""`plannr-pipeline refresh --for SECONDS [--firm SLUG]`: the rolling refresh in the foreground,
as one run of `rolling_refresh_job` in the instance the UI shows, then how stale each table is."""

from __future__ import annotations

import argparse
import os
import sys

EXIT_BAD_INPUT = 2


def add_command(commands: argparse._SubParsersAction, seconds_type) -> None:
    refresh = commands.add_parser(
        "refresh", help="re-read the stalest records for SECONDS, as fast as the token's budget allows"
    )
    refresh.add_argument(
        "--for", dest="seconds", type=seconds_type, required=True, metavar="SECONDS", help="how long to run"
    )
    refresh.add_argument(
        "--firm", metavar="SLUG", help="with firm files: the firm to refresh (one per process)"
    )
    refresh.set_defaults(run=_refresh)


def _job_name(firm: str | None) -> str:
    """The refresh job of `--firm`, or of the one firm there is; a line naming the fix otherwise."""
    from plannr_pipeline.api import PlannrError
    from plannr_pipeline.firms.files import FIRMS_DIR, firm_files_exist, firm_named, read_firm_files

    if firm is None and firm_files_exist():
        slugs = [f.slug for f in read_firm_files(FIRMS_DIR)]
        if len(slugs) > 1:
            raise PlannrError(
                f"there are {len(slugs)} firms ({', '.join(slugs)}): refresh one with --firm SLUG "
                "(each firm's token has a budget of its own, so run one refresh per firm)"
            )
        firm = slugs[0]
    if firm is None:
        return "rolling_refresh_job"
    return f"{firm_named(firm).slug}_rolling_refresh_job"


def _refresh(args: argparse.Namespace) -> int:
    from plannr_pipeline.api import PlannrError
    from plannr_pipeline.api.config import check_settings
    from plannr_pipeline.firms.files import FirmFileError
    from plannr_pipeline.instance import prepare_instance

    try:
        check_settings()
        from plannr_pipeline.defs.refresh import reserve_from_env
        from plannr_pipeline.storage.lake import LakeSettings

        reserve_from_env()
        LakeSettings.from_env()
        job_name = _job_name(args.firm)
        for line in prepare_instance():
            print(line)
    except (PlannrError, FirmFileError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from plannr_pipeline import dead_runs
    from plannr_pipeline.definitions import defs
    from plannr_pipeline.sync import sync_instance

    job = defs.get_job_def(job_name)
    op_name = job.graph.node_defs[0].name
    print(f"plannr-pipeline refresh: {job_name} for {args.seconds:g} s", flush=True)
    with sync_instance() as instance:
        # A refresh killed earlier left its run STARTED, which the schedule would wait on for ever:
        # end it, and leave this run's process in its tags so the next one (or dead_runs_sensor) can.
        for line in dead_runs.end_dead_runs(instance, by=f"plannr-pipeline refresh (pid {os.getpid()})"):
            print(line, flush=True)
        result = job.execute_in_process(
            run_config={"ops": {op_name: {"config": {"seconds": float(args.seconds)}}}},
            instance=instance,
            tags=dead_runs.process_tags(),
            raise_on_error=False,
        )
    if not result.success:
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        data = failure.step_failure_data if failure else None
        reason = data.user_failure_data.description if data and data.user_failure_data else None
        error = data.error.message.strip() if data and data.error else "see the run in the UI"
        print(f"refresh FAILED: {reason or error}", file=sys.stderr)
        return 1
    metadata = result.output_for_node(op_name)
    print(
        f"refresh finished: {metadata.get('changed_clients', 0)} new or changed client(s), "
        f"goals of {metadata.get('clients_goals_read', 0)} client(s) re-read, {metadata.get('sweeps', 0)} sweep(s), "
        f"{metadata.get('requests', 0)} request(s)"
    )
    if progress := metadata.get("progress"):
        print(f"  {progress}")
    return 0
