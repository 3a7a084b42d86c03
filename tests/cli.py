"""The command line as a child process: `plannr-pipeline` (python -m plannr_pipeline.cli) and
`dagster`, each started in an environment that holds only the settings the test gives.

A developer's shell may set PLANNR_ or DAGSTER_ variables (a real token, their own DAGSTER_HOME);
none of them reaches a child started here unless the test passes it in `settings`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plannr_pipeline.sandbox.server import SandboxServer

PREFIXES = ("PLANNR_", "DAGSTER_")


def clean_env(settings: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment without any PLANNR_ or DAGSTER_ variable, plus `settings`
    (a None value: that variable stays unset)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PREFIXES)}
    for name, value in (settings or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def sandbox_env(sandbox: SandboxServer, tmp_path: Path, **settings: str) -> dict[str, str]:
    """`clean_env` for a run against `sandbox` (its URL and token, no rate limit to speak of), with
    DAGSTER_HOME tmp_path/home and PLANNR_DATA_DIR tmp_path/data; `settings` add or override."""
    return clean_env(
        {
            "PLANNR_BASE_URL": sandbox.url,
            "PLANNR_API_TOKEN": sandbox.options.token,
            "DAGSTER_HOME": str(tmp_path / "home"),
            "PLANNR_DATA_DIR": str(tmp_path / "data"),
            "PLANNR_RATE_LIMIT_PER_MINUTE": "100000",
            **settings,
        }
    )


def cli_command(*args: str, installed: bool = False) -> list[str]:
    """`plannr-pipeline <args>`: through the interpreter, or (installed=True) the console script
    the virtualenv holds, as scripts/quickstart.sh and scripts/dev.sh run it."""
    if installed:
        return [str(Path(sys.executable).with_name("plannr-pipeline")), *args]
    return [sys.executable, "-m", "plannr_pipeline.cli", *args]


def run_cli(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 300, installed: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run `plannr-pipeline <args>` to the end; its output captured as text, any exit code kept."""
    return _run(cli_command(*args, installed=installed), env, cwd, timeout)


def run_dagster(
    *args: str, env: Mapping[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `dagster <args>` (python -m dagster) to the end; its output captured, any exit code kept."""
    return _run([sys.executable, "-m", "dagster", *args], env, cwd, timeout)


def start_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    stdout: int = subprocess.PIPE,
    stderr: int = subprocess.PIPE,
    **popen: object,
) -> subprocess.Popen[str]:
    """Start `plannr-pipeline <args>` in a session of its own (so os.killpg(pid, ...) reaches it
    and every process it starts) and return at once. Output goes to pipes unless the test points
    `stdout`/`stderr` elsewhere: DEVNULL for a child nobody reads, whose pipes would fill."""
    return subprocess.Popen(
        cli_command(*args),
        env=dict(env),
        cwd=cwd,
        stdout=stdout,
        stderr=stderr,
        text=True,
        start_new_session=True,
        **popen,  # type: ignore[arg-type]
    )


def stop_group(process: subprocess.Popen) -> None:
    """Stop a child started in a session of its own, and everything it started: SIGTERM, then
    SIGKILL if it has not ended within 30 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _run(
    command: list[str], env: Mapping[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def sandbox_cli(*flags: str, cwd: Path) -> Iterator[tuple[str, str]]:
    """`plannr-pipeline sandbox --port 0 <flags>` while the block runs: (its banner, its URL)."""
    process = start_cli(
        "sandbox",
        "--port",
        "0",
        *flags,
        env=clean_env({"PYTHONPATH": str(cwd)}),
        cwd=cwd,
        stderr=subprocess.DEVNULL,
    )
    try:
        banner = process.stdout.readline()  # type: ignore[union-attr]
        yield banner, banner.rsplit(" ", 1)[1].strip()
    finally:
        stop_group(process)
