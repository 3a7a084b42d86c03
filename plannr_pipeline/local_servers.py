"""Real servers on loopback, for trying the deployment on one machine and for the tests and
benchmarks: Debian's PostgreSQL (DuckLake catalogs, Dagster's storage, the shared budget), moto's
S3 server (the lake's bucket) and Debian's redis-server (the Celery broker, a budget store).

Not a production tool: Postgres trusts every local connection and nothing persists past `stop`
unless the folder is kept (scripts/cluster.sh keeps it). Every server runs in its own process
group, so stopping one stops all it started; each logs to `<folder>/logs/<name>.log`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Debian's postgresql package (installed by .ci/run), whichever major version it brings.
POSTGRES_BIN = max(
    Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), default=Path("/nonexistent")
)
BUCKET = "plannr-lake"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "lake-test-key",
    "AWS_SECRET_ACCESS_KEY": "lake-test-secret-value",
    "AWS_REGION": "eu-west-2",
}
USER = "plannr"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, what: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it listened on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


def start_logged(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `command` in a process group of its own, its output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop_group(pid: int, seconds: float = 20) -> None:
    """SIGTERM to the process group `pid` leads, SIGKILL if it is not gone within `seconds`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it when it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _as_postgres() -> list[str]:
    """The prefix that runs a Postgres program as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass(frozen=True)
class Lake:
    """One lake's settings: the environment a sync or the CLI needs to use it."""

    catalog: str
    data: str
    env: dict[str, str]


class LocalServers:
    """Postgres and an S3 server (and Redis, when asked) on free loopback ports under `folder`."""

    def __init__(self, folder: Path | None = None, redis: bool = False, s3: bool = True) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="plannr-servers-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        self._keep_folder = folder is not None
        self.logs = self.folder / "logs"
        self.pg_port, self.s3_port = free_port(), free_port()
        self.redis_port = free_port() if redis else None
        self.processes: dict[str, subprocess.Popen] = {}
        self._names = itertools.count()
        try:
            self._start_postgres()
            if s3:
                self._start_s3()
            if redis:
                self._start_redis()
        except BaseException:
            self.stop()
            raise

    def _start_postgres(self) -> None:
        # initdb refuses root: the cluster belongs to the postgres user, in a folder it owns and
        # can reach (not under a private folder of root's, such as pytest's temporary ones).
        self.pg_data = data = Path(tempfile.mkdtemp(prefix="plannr-pg-")) / "pg"
        data.mkdir()
        as_postgres = _as_postgres()
        if as_postgres:
            shutil.chown(data.parent, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run(
            [*as_postgres, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", USER],
            check=True,
            capture_output=True,
        )
        self._run_postgres()

    def _run_postgres(self) -> None:
        import psycopg2

        data, as_postgres = self.pg_data, _as_postgres()
        # fsync off: a cluster for trying and testing, speed over durability across a power cut.
        settings = ["-c", "listen_addresses=127.0.0.1", "-p", str(self.pg_port), "-k", str(data)]
        settings += ["-c", "fsync=off", "-c", "max_connections=300"]
        self.processes["postgres"] = process = start_logged(
            [*as_postgres, str(POSTGRES_BIN / "postgres"), "-D", str(data), *settings],
            self.logs / "postgres.log",
        )
        wait_for_port(self.pg_port, "postgres", process)
        deadline = time.monotonic() + 30
        while True:  # listening comes a moment before accepting connections
            try:
                psycopg2.connect(self.conninfo("postgres")).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _start_s3(self) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        self.processes["s3"] = process = start_logged(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.s3_port)], self.logs / "s3.log"
        )
        wait_for_port(self.s3_port, "moto_server", process)
        self.bucket().create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": CREDENTIALS["AWS_REGION"]}
        )

    def _start_redis(self) -> None:
        redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
        # No persistence, no protected-mode surprises: loopback only, for this machine's tests.
        self.processes["redis"] = process = start_logged(
            [
                redis_server,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            self.logs / "redis.log",
        )
        wait_for_port(self.redis_port, "redis-server", process)

    def restart_postgres(self) -> None:
        """Stop Postgres and start it again on the same port and data: every open session ends,
        as when the catalog's server restarts under a running deployment."""
        process = self.processes.pop("postgres")
        stop_group(process.pid)
        process.wait(timeout=30)
        self._run_postgres()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}"

    def conninfo(self, database: str) -> str:
        return f"dbname={database} host=127.0.0.1 port={self.pg_port} user={USER}"

    def postgres_url(self, database: str) -> str:
        """The SQLAlchemy-style URL (Dagster's storage, PLANNR_BUDGET_URL) of `database`."""
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.pg_port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        connection = psycopg2.connect(self.conninfo("postgres"))
        try:
            connection.autocommit = True  # CREATE DATABASE runs outside a transaction
            connection.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        return name

    def bucket(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            **{k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_REGION"},
            region_name=CREDENTIALS["AWS_REGION"],
        )

    def lake_env(self, catalog_database: str, prefix: str) -> dict[str, str]:
        return {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "PLANNR_LAKE_CATALOG": f"postgres:{self.conninfo(catalog_database)}",
            "PLANNR_LAKE_DATA": f"s3://{BUCKET}/{prefix}/",
        }

    def new_lake(self) -> Lake:
        """A lake of its own: a new catalog database and a new prefix in the bucket."""
        name = self.create_database(f"lake_{os.getpid()}_{next(self._names)}")
        env = self.lake_env(name, name)
        return Lake(env["PLANNR_LAKE_CATALOG"], env["PLANNR_LAKE_DATA"], env)

    def objects(self, lake: Lake) -> list[str]:
        prefix = lake.data.removeprefix(f"s3://{BUCKET}/")
        keys, token = [], None
        while True:
            page = self.bucket().list_objects_v2(
                Bucket=BUCKET, Prefix=prefix, **({"ContinuationToken": token} if token else {})
            )
            keys += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return keys
            token = page["NextContinuationToken"]

    def stop(self) -> None:
        for process in self.processes.values():
            stop_group(process.pid)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if hasattr(self, "pg_data"):
            shutil.rmtree(self.pg_data.parent, ignore_errors=True)
        if not self._keep_folder:
            shutil.rmtree(self.folder, ignore_errors=True)
