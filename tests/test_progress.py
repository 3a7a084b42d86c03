"""Long work shows how far it is and how long is left: run-log lines at a steady cadence, and a live
bar per step when `sync` runs on a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import termios

import pytest

from plannr_pipeline import progress
from tests.cli import run_cli, sandbox_env, start_cli


def test_lines_come_at_a_steady_cadence_with_the_time_left(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    step = progress.Progress("goals", "clients", lines.append)
    for second in range(1, 13):  # 10 clients a second, 120 in all, 2 requests each
        now[0] += 1
        step.update(second * 10, 120, second * 20, 490)
    assert lines == [
        "goals: 50/120 clients, 1,200 requests/min (budget 490/min), about 7s left",
        "goals: 100/120 clients, 1,200 requests/min (budget 490/min), about 2s left",
        "goals: 120/120 clients, 1,200 requests/min (budget 490/min), 12s so far",
    ]


def test_not_on_a_terminal_the_run_log_carries_the_progress(make_sandbox, tmp_path):
    sandbox = make_sandbox(clients=40)
    done = run_cli(
        "sync",
        "--select",
        "clients,goals",
        env=sandbox_env(sandbox, tmp_path, PLANNR_MAX_CONCURRENCY="4"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "goals: 40/40 clients" in done.stderr  # the final line of the step, in the run log
    assert "\r" not in done.stderr  # plain lines, no bar


@pytest.mark.parametrize("rows_columns", [(30, 120), (0, 0)], ids=["sized", "reports-no-size"])
def test_on_a_terminal_each_step_shows_a_live_bar(make_sandbox, tmp_path, rows_columns):
    sandbox = make_sandbox(clients=40)
    controller, terminal = pty.openpty()
    # A pty nobody sized reports 0 x 0 (some CI runners, `docker exec`): tqdm alone draws nothing.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", *rows_columns, 0, 0))
    sync = start_cli(
        "sync",
        "--select",
        "clients,goals",
        env=sandbox_env(sandbox, tmp_path, PLANNR_MAX_CONCURRENCY="4"),
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the sync is done
            break
        if not chunk:
            break
        output += chunk
    assert sync.wait(timeout=300) == 0, output.decode(errors="replace")[-2000:]
    text = output.decode(errors="replace")
    assert "goals: 100%|" in text and "40/40" in text  # tqdm's bar, driven by the same counts
    assert "sync finished: all assets landed." in text
