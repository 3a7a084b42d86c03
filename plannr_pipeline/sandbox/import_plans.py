"""Imports that move over wall-clock time: pending -> processing -> completed or failed.

Each import is a plan fixed at generation; its visible state is a pure function of the clock,
so any number of sandbox processes agree on it, and a test can drive it with a fake clock.
Besides a month of finished history, a new "live" import is created every
`live_interval` from the reference moment on, so a sensor always has something to watch.
"""

from __future__ import annotations

import csv
import io
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from plannr_pipeline.sandbox.formats import iso_london

IMPORT_TYPES = ["clients", "clients", "tasks", "notes", "plans", "valuations"]
MODES = ["store", "store", "update", "validate"]
FIELD_ERRORS = {
    "send_welcome_email": "The send welcome email field is required.",
    "email": "The email must be a valid email address.",
    "date_of_birth": "The date of birth does not match the format Y-m-d.",
}
HEADERS = ["fname", "lname", "email", "dob"]
MAPPING = {"first_name": "fname", "last_name": "lname", "email": "email", "date_of_birth": "dob"}
ERRORS_SHOWN = 25  # the docs: "array of failed imports, limited to 25 rows"


@dataclass(frozen=True)
class ImportPlan:
    uuid: str
    type: str
    mode: str
    created: datetime
    pending_seconds: int
    run_seconds: int
    total_jobs: int
    failing_jobs: tuple[int, ...]
    fatal: bool
    account: dict[str, Any]
    report_uuid: str
    client_names: tuple[str, ...]

    def state_at(self, now: datetime, detail: bool = False, *, base_url: str) -> dict[str, Any] | None:
        """The import as GET /api/v1/import shows it at `now`; None before it was created.

        `base_url` is the serving sandbox's own root: the error report's `download_url` points
        there (GET /file/{uuid}/download), never at the real API host.
        """
        elapsed = (now - self.created).total_seconds()
        if elapsed < 0:
            return None
        if elapsed < self.pending_seconds:
            status, done = "pending", 0
        elif elapsed < self.pending_seconds + self.run_seconds:
            status = "processing"
            done = int(self.total_jobs * (elapsed - self.pending_seconds) / self.run_seconds)
        else:
            status, done = ("failed" if self.fatal else "completed"), self.total_jobs
        failed = [job for job in self.failing_jobs if job < done]
        finished = status in ("completed", "failed")
        updated = self.created + timedelta(seconds=min(elapsed, self.pending_seconds + self.run_seconds))
        record: dict[str, Any] = {
            "uuid": self.uuid,
            "type": self.type,
            "mode": self.mode,
            "status": status,
            "created_at": iso_london(self.created),
            "updated_at": iso_london(updated.replace(microsecond=0)),
            "total_jobs": self.total_jobs,
            "jobs_remaining": self.total_jobs - done,
            "failed_jobs": len(failed),
            "progress": int(100 * done / self.total_jobs),
            "errors": [self._error_row(job) for job in failed[:ERRORS_SHOWN]],
            "error_report": self._error_report(updated, base_url) if finished and failed else None,
            "account": self.account,
        }
        if detail:  # headers and mapping are "not visible on index route"
            record["headers"] = HEADERS
            record["mapping"] = MAPPING
        return record

    def _error_row(self, job: int) -> dict[str, Any]:
        name = self.client_names[job % len(self.client_names)]
        field = list(FIELD_ERRORS)[job % len(FIELD_ERRORS)]
        first, _, last = name.partition(" ")
        return {
            "client": {"row": job + 2, "first_name": first, "last_name": last},
            "errors": {field: [FIELD_ERRORS[field]]},
        }

    def has_error_report(self, now: datetime) -> bool:
        """Whether the report exists at `now`: once the import has finished with failed rows."""
        return (
            bool(self.failing_jobs)
            and (now - self.created).total_seconds() >= self.pending_seconds + self.run_seconds
        )

    def error_report_csv(self) -> str:
        """The error report file: every failed row (not only the 25 the API lists), one line per error."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["row", "first_name", "last_name", "field", "error"])
        for job in self.failing_jobs:
            row = self._error_row(job)
            client = row["client"]
            for field, messages in row["errors"].items():
                for message in messages:
                    writer.writerow(
                        [client["row"], client["first_name"], client["last_name"], field, message]
                    )
        return out.getvalue()

    def _error_report(self, uploaded: datetime, base_url: str) -> dict[str, Any]:
        return {
            "uuid": self.report_uuid,
            "name": f"Import errors {self.uuid[:8]}",
            "filename": f"import-errors-{self.uuid}.csv",
            "extension": "csv",
            "size": str(len(self.error_report_csv().encode())),
            "path": f"Imports/import-errors-{self.uuid}.csv",
            "status": "uploaded",
            "progress": "100",
            "download_url": f"{base_url}/file/{self.report_uuid}/download",
            "navigator": {"model_type": "import", "model_uuid": self.uuid},
            "uploaded_at": iso_london(uploaded),
            "created_at": iso_london(uploaded),
            "updated_at": iso_london(uploaded),
        }


def _plan(
    rng: random.Random,
    new_uuid: Callable[[], str],
    created: datetime,
    staff: list[dict],
    names: tuple[str, ...],
) -> ImportPlan:
    total = rng.randint(5, 400)
    failure_share = rng.choice([0.0, 0.0, 0.02, 0.1, 0.6])
    failing = tuple(sorted(rng.sample(range(total), k=int(total * failure_share))))
    account = rng.choice(staff)
    return ImportPlan(
        uuid=new_uuid(),
        type=rng.choice(IMPORT_TYPES),
        mode=rng.choice(MODES),
        created=created,
        pending_seconds=rng.randint(5, 60),
        run_seconds=rng.randint(60, 600),
        total_jobs=total,
        failing_jobs=failing,
        fatal=failure_share >= 0.5,
        account={k: account[k] for k in ("uuid", "type", "role", "first_name", "last_name", "name", "email")},
        report_uuid=new_uuid(),
        client_names=names,
    )


def plan_imports(
    rng: random.Random,
    new_uuid: Callable[[], str],
    reference: datetime,
    staff: list[dict],
    clients: list[dict],
    history_days: int,
    per_day: float,
) -> list[ImportPlan]:
    """A month of finished imports before the reference moment."""
    names = tuple(c["name"] for c in clients[:50]) or ("Ann Example",)
    plans = []
    for day in range(history_days, 0, -1):
        for _ in range(sum(rng.random() < per_day / 3 for _ in range(3))):
            created = reference - timedelta(days=day) + timedelta(seconds=rng.randrange(86_400))
            plans.append(_plan(rng, new_uuid, created, staff, names))
    return plans


def live_import(
    seed: int, index: int, reference: datetime, interval: timedelta, staff: list[dict], clients: list[dict]
) -> ImportPlan:
    """The index-th import created after the reference moment (deterministic per seed and index)."""
    rng = random.Random(f"{seed}:live:{index}")

    def new_uuid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    names = tuple(c["name"] for c in clients[:50]) or ("Ann Example",)
    return _plan(rng, new_uuid, reference + interval * index, staff, names)
