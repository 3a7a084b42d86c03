"""A sandbox whose rate-limit clock runs faster (`plannr-pipeline sandbox --time-scale K`), and
a pipeline told so (PLANNR_RATE_WINDOW_SECONDS=60/K): a sweep that takes hours under Plannr's
500 a minute takes minutes, paced as it would be, with its progress and ETA to watch."""

from __future__ import annotations

import httpx

from tests.cli import clean_env, run_cli, sandbox_cli

TOKEN = "sandbox-token"  # the CLI sandbox's own when no --token is given


def test_a_sync_keeps_to_a_sandbox_whose_clock_runs_twenty_times_faster(tmp_path):
    """30 requests per 3 s on both sides. The sync needs three windows of requests: on a minute's
    window its budget could not finish within the 50 s allowed here, and on a window shorter than
    the sandbox's it draws 429s (16 in a run on a 1.5 s window). The budget's slack on this clock is 50 ms, so a
    stall of a loaded machine may let one or two through; they are retried, nothing is lost."""
    flags = ("--clients", "60", "--rate-limit", "30", "--time-scale", "20")
    with sandbox_cli(*flags, cwd=tmp_path) as (banner, url):
        assert "time scale 20: 30 requests per 3 s" in banner
        env = clean_env(
            {
                "PLANNR_BASE_URL": url,
                "PLANNR_API_TOKEN": TOKEN,
                "PLANNR_RATE_WINDOW_SECONDS": "3",
                "PLANNR_BUDGET_DIR": str(tmp_path / "budget"),
                "DAGSTER_HOME": str(tmp_path / "home"),
                "PLANNR_DATA_DIR": str(tmp_path / "data"),
            }
        )
        done = run_cli("sync", env=env, cwd=tmp_path, timeout=50)
        stats = httpx.get(f"{url}/__sandbox/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert stats["by_status"].get("200", 0) > 60  # more than two windows' worth
    assert stats["by_status"].get("429", 0) <= 2, stats["by_status"]


def test_the_embedded_sandbox_keeps_its_own_minute_whatever_window_is_set():
    """PLANNR_RATE_WINDOW_SECONDS describes a sandbox started on its own with --time-scale; the
    embedded one counts over a minute, so a budget on a 3 s window would run 20 times too fast."""
    from plannr_pipeline.defs.resources import PlannrApi

    embedded = PlannrApi(sandbox_clients=5, rate_window_seconds=3.0)
    assert embedded.uses_sandbox
    assert embedded.settings().rate_window_seconds == 60.0
