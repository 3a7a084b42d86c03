"""Real servers for the lake backend, on loopback: Debian's PostgreSQL (the DuckLake catalog) and
moto's S3 server (the bucket), started by the tests and stopped after them.

Each lake a test asks for is a new catalog database and a new prefix in one bucket, so tests
never see each other's data.
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

import boto3
import psycopg2

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port: int, what: str, process: subprocess.Popen, seconds: float = 30) -> None:
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


@dataclass(frozen=True)
class Lake:
    """One lake's settings: the environment a sync or the CLI needs to use it."""

    catalog: str
    data: str
    env: dict[str, str]


class LakeServers:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="plannr-lake-servers-"))
        self.pg_port, self.s3_port = free_port(), free_port()
        self._names = itertools.count()
        self._start_postgres()
        self._start_s3()

    def _start_postgres(self) -> None:
        # initdb refuses root: the cluster belongs to the postgres user, in a folder it owns.
        data = self.folder / "pg"
        data.mkdir()
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if as_postgres:
            shutil.chown(self.folder, "postgres")
            shutil.chown(data, "postgres")
        subprocess.run(
            [*as_postgres, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "plannr"],
            check=True,
            capture_output=True,
        )
        self.postgres = subprocess.Popen(
            [
                *as_postgres,
                str(POSTGRES_BIN / "postgres"),
                "-D",
                str(data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-p",
                str(self.pg_port),
                "-k",
                str(data),
                "-c",
                "fsync=off",  # a test cluster: speed over durability across a power cut
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for(self.pg_port, "postgres", self.postgres)
        deadline = time.monotonic() + 30
        while True:  # listening comes a moment before accepting connections
            try:
                psycopg2.connect(self._conninfo("postgres")).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _start_s3(self) -> None:
        moto = Path(sys.executable).with_name("moto_server")
        self.s3 = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.s3_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _wait_for(self.s3_port, "moto_server", self.s3)
        self.bucket().create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": CREDENTIALS["AWS_REGION"]}
        )

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _conninfo(self, database: str) -> str:
        return f"dbname={database} host=127.0.0.1 port={self.pg_port} user=plannr"

    def bucket(self):
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            **{k.lower(): v for k, v in CREDENTIALS.items() if k != "AWS_REGION"},
            region_name=CREDENTIALS["AWS_REGION"],
        )

    def new_lake(self) -> Lake:
        name = f"lake_{os.getpid()}_{next(self._names)}"
        connection = psycopg2.connect(self._conninfo("postgres"))
        try:
            connection.autocommit = True  # CREATE DATABASE runs outside a transaction
            connection.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            connection.close()
        catalog = f"postgres:{self._conninfo(name)}"
        data = f"s3://{BUCKET}/{name}/"
        env = {
            **CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "PLANNR_LAKE_CATALOG": catalog,
            "PLANNR_LAKE_DATA": data,
        }
        return Lake(catalog, data, env)

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
        for process in (self.postgres, self.s3):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)
