"""A sandbox whose rate-limit clock runs faster (`plannr-pipeline sandbox --time-scale K`), and
a pipeline told so (PLANNR_RATE_WINDOW_SECONDS=60/K): a sweep that takes hours under Plannr's
500 a minute takes minutes, paced as it would be, with its progress and ETA to watch."""

from __future__ import annotations

import httpx

from tests.cli import clean_env, run_cli, sandbox_cli

TOKEN = "sandbox-token"  # the CLI sandbox's own when no --token is given


def test_a_sync_keeps_to_a_sandbox_whose_clock_runs_forty_times_faster(tmp_path):
    """30 requests per 1.5 s on both sides. The sync needs several windows of requests: on a
    minute's window its budget could not finish within the 50 s allowed here, and on a window
    shorter than the sandbox's it would draw 429s."""
    flags = ("--clients", "60", "--rate-limit", "30", "--time-scale", "40")
    with sandbox_cli(*flags, cwd=tmp_path) as (banner, url):
        assert "time scale 40: 30 requests per 1.5 s" in banner
        env = clean_env(
            {
                "PLANNR_BASE_URL": url,
                "PLANNR_API_TOKEN": TOKEN,
                "PLANNR_RATE_WINDOW_SECONDS": "1.5",
                "PLANNR_BUDGET_DIR": str(tmp_path / "budget"),
                "DAGSTER_HOME": str(tmp_path / "home"),
                "PLANNR_DATA_DIR": str(tmp_path / "data"),
            }
        )
        done = run_cli("sync", env=env, cwd=tmp_path, timeout=50)
        stats = httpx.get(f"{url}/__sandbox/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert stats["requests"] > 60  # more than two windows' worth
    assert stats["by_status"] == {"200": stats["requests"]}  # not one 429
