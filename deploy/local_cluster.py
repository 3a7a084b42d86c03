"""`scripts/cluster.sh up|down`: the deployment of deploy/README.md on one machine, every piece a
real server on loopback, for trying it and for the tests (tests/test_cluster.py).

`up` starts Postgres (Dagster's storage, the lake's catalog, the shared request budget), Redis
(the Celery broker), an S3 server (the lake's data), two Celery workers (PLANNR_CLUSTER_WORKERS;
each runs PLANNR_CLUSTER_WORKER_CONCURRENCY steps at once, default 2), the daemon and the UI;
writes `<dir>/env` (the variables every host would have; `source` it to use the cluster from a
shell) and `<dir>/state.json` (what it started); prints both. `down` stops exactly the process
groups `state.json` names. `<dir>` is PLANNR_CLUSTER_DIR, by default `./.cluster`.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from plannr_pipeline.local_servers import LocalServers, free_port, start_logged, stop_group

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def cluster_dir() -> Path:
    return Path(os.environ.get("PLANNR_CLUSTER_DIR") or REPO / ".cluster").absolute()


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _environment(servers: LocalServers, home: Path) -> dict[str, str]:
    """What every host of the deployment needs (deploy/README.md), pointing at these servers."""
    for database in ("dagster", "lake", "budget"):
        servers.create_database(database)
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": servers.postgres_url("dagster"),
        "DAGSTER_CELERY_BROKER_URL": f"{servers.redis_url}/0",
        "PLANNR_BUDGET_URL": servers.postgres_url("budget"),
        **servers.lake_env("lake", "lake"),
    }


def _wait_for_ui(url: str, process: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the UI exited with {process.returncode}: see its log")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the UI did not answer on {url} within {seconds} s")


def _wait_for_worker(log: Path, pid: int, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if " ready." in log.read_text(errors="replace"):  # celery's own "celery@<name> ready."
            return
        if not _alive(pid):
            raise RuntimeError(f"a Celery worker exited before it was ready: see {log}")
        time.sleep(0.5)
    raise RuntimeError(f"a Celery worker was not ready within {seconds} s: see {log}")


def _workspace(folder: Path) -> Path:
    """The repository's workspace.yaml, loading the package from where this process imports it
    (a checkout, or a copy first on PYTHONPATH, as the tests use): Dagster puts a workspace's
    working directory first on sys.path, which would otherwise be the repository's."""
    import plannr_pipeline

    path = folder / "workspace.yaml"
    root = Path(plannr_pipeline.__file__).resolve().parent.parent
    location = yaml.safe_load((REPO / "workspace.yaml").read_text())
    location["load_from"][0]["python_module"]["working_directory"] = str(root)
    path.write_text(yaml.safe_dump(location))
    return path


def up() -> int:
    folder = cluster_dir()
    state_file = folder / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        if any(_alive(pid) for pid in state["processes"].values()):
            print(f"a cluster is already up ({state_file}): scripts/cluster.sh down first", file=sys.stderr)
            return 1
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    servers = LocalServers(folder / "servers", redis=True)
    processes = {name: process.pid for name, process in servers.processes.items()}
    logs = servers.logs
    # Written before anything else starts, and again after: `down` finds whatever did start.
    state = {"processes": processes, "logs": str(logs), "env": str(folder / "env")}
    state["remove"] = [str(servers.pg_data.parent)]  # Postgres's files, outside the folder
    state_file.write_text(json.dumps(state, indent=2))
    try:
        home = folder / "dagster_home"
        home.mkdir()
        shutil.copyfile(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
        cluster_env = _environment(servers, home)
        (folder / "env").write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in cluster_env.items()))
        # dagster-celery starts `celery` by name: this environment's, not whatever PATH finds first.
        env = {**os.environ, **cluster_env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        # The instance's tables in Postgres, and each firm's pool limit, before anything queues a run.
        prepared = subprocess.run(
            [str(BIN / "plannr-pipeline"), "instance"], env=env, capture_output=True, text=True
        )
        if prepared.returncode != 0:
            raise RuntimeError(f"plannr-pipeline instance failed: {prepared.stderr.strip()}")
        concurrency = os.environ.get("PLANNR_CLUSTER_WORKER_CONCURRENCY", "2")
        workers = [f"worker{n + 1}" for n in range(int(os.environ.get("PLANNR_CLUSTER_WORKERS", "2")))]
        for name in workers:
            command = [str(BIN / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app"]
            command += ["-y", str(REPO / "deploy" / "celery.yaml"), "-n", f"{name}@%h", "-q", "dagster"]
            command += ["--", f"--concurrency={concurrency}"]
            # Each worker its own budget folder, as on its own host: only PLANNR_BUDGET_URL is shared.
            own = {
                **env,
                "PLANNR_BUDGET_DIR": str(folder / name / "budget"),
                "PLANNR_DATA_DIR": str(folder / name / "data"),
            }
            processes[name] = start_logged(command, logs / f"{name}.log", own).pid
            state_file.write_text(json.dumps(state, indent=2))
        state["workspace"] = str(_workspace(folder))
        workspace = ["-w", state["workspace"]]
        processes["daemon"] = start_logged(
            [str(BIN / "dagster-daemon"), "run", *workspace], logs / "daemon.log", env
        ).pid
        port = int(os.environ.get("PLANNR_CLUSTER_UI_PORT") or free_port())
        ui = start_logged(
            [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), *workspace],
            logs / "ui.log",
            env,
        )
        processes["ui"] = ui.pid
        url = state["ui"] = f"http://127.0.0.1:{port}"
        state_file.write_text(json.dumps(state, indent=2))
        _wait_for_ui(url, ui)
        for name in workers:
            _wait_for_worker(logs / f"{name}.log", processes[name])
    except BaseException:
        down()
        raise
    print(f"cluster up in {folder}")
    for name, pid in processes.items():
        print(f"  {name:<9} process group {pid:<8} log {logs / (name + '.log')}")
    print(f"  Postgres  127.0.0.1:{servers.pg_port} (databases dagster, lake, budget; user plannr, trust)")
    print(f"  Redis     {servers.redis_url} (Celery broker)")
    print(f"  S3        {servers.endpoint} (bucket plannr-lake)")
    print(f"  UI        {url}")
    print(f"  workspace {state['workspace']}")
    print(f"use it from a shell: source {folder / 'env'}; stop it: scripts/cluster.sh down")
    return 0


def down() -> int:
    state_file = cluster_dir() / "state.json"
    if not state_file.exists():
        print(f"no cluster is up ({state_file} not found)")
        return 0
    state = json.loads(state_file.read_text())
    processes = state["processes"]
    # The clients first (UI, daemon, workers), then the servers they use.
    for name in reversed(list(processes)):
        stop_group(processes[name])
        print(f"stopped {name} (process group {processes[name]})")
    for leftover in state.get("remove", []):
        shutil.rmtree(leftover, ignore_errors=True)
    state_file.unlink()
    return 0


if __name__ == "__main__":
    commands = {"up": up, "down": down}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        print("usage: scripts/cluster.sh up|down", file=sys.stderr)
        sys.exit(2)
    sys.exit(commands[sys.argv[1]]())
