"""Sensors driven tick by tick with Dagster's test contexts, against a sandbox whose imports
progress on a clock the test moves."""

from __future__ import annotations

import json
import socket
from collections import defaultdict
from datetime import datetime, timedelta

import dagster as dg
import duckdb
import pytest

from plannr_pipeline.definitions import ASSETS
from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.resources import PlannrApi, PlannrStorage
from plannr_pipeline.defs.sensors.clients import changed_clients_sensor
from plannr_pipeline.defs.sensors.import_sensors import import_failures_sensor, import_progress_sensor
from plannr_pipeline.defs.sensors.run_failures import pipeline_run_failure_sensor


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def moving_sandbox(make_sandbox):
    """Live imports every 10 minutes from midnight; the clock starts at 00:05."""
    clock = Clock(datetime.min)
    sandbox = make_sandbox(clients=30, clock=clock, live_import_interval=timedelta(minutes=10))
    clock.now = sandbox.firm.reference + timedelta(minutes=5)
    return sandbox, clock


def api_for(sandbox) -> PlannrApi:
    return PlannrApi(base_url=sandbox.url, token=sandbox.options.token, rate_limit_per_minute=100_000)


def tick(sensor, cursor, **resources):
    context = dg.build_sensor_context(cursor=cursor, resources=resources)
    result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return result, cursor
    return result, result.cursor if result.cursor is not None else cursor


def test_progress_sensor_records_rising_progress_and_one_run_per_finished_import(moving_sandbox, tmp_path):
    sandbox, clock = moving_sandbox
    plannr, storage = api_for(sandbox), PlannrStorage(data_dir=str(tmp_path / "data"))
    result, cursor = tick(import_progress_sensor, None, plannr=plannr, storage=storage)
    assert result.run_requests == []  # the first tick is a baseline
    progress: dict[str, list[int]] = defaultdict(list)
    runs: list[dg.RunRequest] = []
    for _ in range(120):  # an hour, in 30-second ticks
        clock.now += timedelta(seconds=30)
        result, cursor = tick(import_progress_sensor, cursor, plannr=plannr, storage=storage)
        runs += result.run_requests
        for event in result.asset_events:
            progress[event.metadata["import_uuid"].value].append(event.metadata["progress"].value)
    observed = sum(len(values) for values in progress.values())

    finished_keys = [r.run_key for r in runs if r.run_key.startswith("import-finished:")]
    assert finished_keys and len(finished_keys) == len(set(finished_keys))  # exactly one per import
    for run_key in finished_keys:
        uuid = run_key.split(":", 1)[1]
        assert progress[uuid] == sorted(progress[uuid]) and progress[uuid][-1] == 100
    assert max(len(set(values)) for values in progress.values()) >= 3  # progress seen rising
    day = sandbox.firm.reference.date().isoformat()
    assert all(
        r.partition_key is None for r in runs if r.job_name == "imports_job"
    )  # imports are swept whole
    clients_imports = [r for r in runs if r.job_name == "clients_job"]
    assert all(r.partition_key == day[:7] for r in clients_imports)

    again, _ = tick(
        import_progress_sensor, cursor, plannr=plannr, storage=storage
    )  # nothing moved: nothing new
    assert again.run_requests == [] and again.asset_events == []
    assert again.skip_reason.skip_message == "no import changed"

    # every observation after the baseline is a row of import_progress_history, in order
    with duckdb.connect(str(tmp_path / "data" / "plannr.duckdb"), read_only=True) as db:
        stored = db.execute(
            "select import_uuid, progress from import_progress_history order by observed_at"
        ).fetchall()
    baseline = len(stored) - observed
    by_import: dict[str, list[int]] = defaultdict(list)
    for uuid, value in stored[baseline:]:
        by_import[uuid].append(value)
    assert dict(by_import) == {uuid: values for uuid, values in progress.items() if values}


def test_a_tick_that_only_recorded_observations_says_so(moving_sandbox, tmp_path):
    sandbox, clock = moving_sandbox
    plannr, storage = api_for(sandbox), PlannrStorage(data_dir=str(tmp_path / "data"))
    _, cursor = tick(import_progress_sensor, None, plannr=plannr, storage=storage)
    while True:
        clock.now += timedelta(seconds=30)
        result, cursor = tick(import_progress_sensor, cursor, plannr=plannr, storage=storage)
        if result.asset_events and not result.run_requests:
            break
    assert (
        result.skip_reason.skip_message
        == f"recorded {len(result.asset_events)} import observation(s); no run needed"
    )


def test_failure_sensor_alerts_once_per_new_failure_and_lands_the_errors(
    moving_sandbox, alert_receiver, tmp_path
):
    sandbox, clock = moving_sandbox
    plannr, webhook = api_for(sandbox), AlertWebhook(url=alert_receiver.url)
    _, cursor = tick(import_failures_sensor, None, plannr=plannr, alert_webhook=webhook)
    assert alert_receiver.received == []
    runs: list[dg.RunRequest] = []
    for _ in range(120):
        clock.now += timedelta(seconds=30)
        result, cursor = tick(import_failures_sensor, cursor, plannr=plannr, alert_webhook=webhook)
        runs += result.run_requests
    alerts = alert_receiver.received
    assert alerts, "no import failed in an hour of sandbox time"
    by_import = defaultdict(list)
    for alert in alerts:
        by_import[alert["import_uuid"]].append(alert)
    for sequence in by_import.values():
        counts = [a["failed_jobs"] for a in sequence]
        assert counts == sorted(counts)  # each alert is about failures not alerted before
        for previous, alert in zip(
            sequence, sequence[1:], strict=False
        ):  # no failure counted twice or skipped
            assert alert["failed_jobs"] - alert["new_failed_jobs"] == previous["failed_jobs"]
        assert len({(a["failed_jobs"], a["status"]) for a in sequence}) == len(sequence)
    assert sandbox.options.token not in json.dumps(alerts)

    quiet, _ = tick(import_failures_sensor, cursor, plannr=plannr, alert_webhook=webhook)
    assert quiet.run_requests == [] and len(alert_receiver.received) == len(alerts)

    data_dir = tmp_path / "data"
    assert {r.job_name for r in runs} == {"imports_job"}
    result = dg.materialize(
        ASSETS,
        selection=["imports"],
        resources={"plannr": plannr, "storage": PlannrStorage(data_dir=str(data_dir))},
    )
    assert result.success
    failed = next(iter(by_import))
    with duckdb.connect(str(data_dir / "plannr.duckdb"), read_only=True) as db:
        rows = db.execute("select count(*) from import_errors where import_uuid = ?", [failed]).fetchone()[0]
    assert rows == min(25, by_import[failed][-1]["failed_jobs"])  # the API shows at most 25 rows


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/alerts"


def test_an_undelivered_alert_is_retried_not_lost(moving_sandbox, alert_receiver):
    sandbox, clock = moving_sandbox
    plannr = api_for(sandbox)
    down, up = AlertWebhook(url=closed_port_url(), timeout_seconds=1), AlertWebhook(url=alert_receiver.url)
    _, cursor = tick(import_failures_sensor, None, plannr=plannr, alert_webhook=down)
    while True:  # move on until a failure is noticed while the receiver is down
        clock.now += timedelta(seconds=30)
        result, cursor = tick(import_failures_sensor, cursor, plannr=plannr, alert_webhook=down)
        if result.run_requests:
            break
    result, cursor = tick(import_failures_sensor, cursor, plannr=plannr, alert_webhook=up)
    assert alert_receiver.received and alert_receiver.received[0]["new_failed_jobs"] > 0


def test_an_api_error_skips_the_tick_and_keeps_the_cursor(moving_sandbox, tmp_path):
    sandbox, _ = moving_sandbox
    wrong = PlannrApi(base_url=sandbox.url, token="wrong-token-123", rate_limit_per_minute=100_000)
    for sensor, extra in (
        (import_progress_sensor, {"storage": PlannrStorage(data_dir=str(tmp_path))}),
        (import_failures_sensor, {"alert_webhook": AlertWebhook()}),
        (changed_clients_sensor, {}),
    ):
        _, cursor = tick(sensor, None, plannr=api_for(sandbox), **extra)
        assert cursor is not None
        result, kept = tick(sensor, cursor, plannr=wrong, **extra)
        assert isinstance(result, dg.SkipReason) and "401" in result.skip_message
        assert "wrong-token-123" not in result.skip_message
        assert kept == cursor


def test_changed_clients_sensor_requests_only_the_changed_months(make_sandbox):
    sandbox = make_sandbox(clients=300)
    plannr = api_for(sandbox)
    first, cursor = tick(changed_clients_sensor, None, plannr=plannr)
    assert first.run_requests == []  # baseline
    by_month = defaultdict(list)
    for client in sandbox.firm.clients:
        by_month[datetime.fromisoformat(client["created_at"]).strftime("%Y-%m")].append(client)
    months = sorted(m for m, clients in by_month.items() if len(clients) >= 1)[:2]
    now = datetime.fromisoformat(max(c["updated_at"] for c in sandbox.firm.clients)) + timedelta(minutes=5)
    for month in months:  # one client edited in each of two months
        by_month[month][0]["updated_at"] = now.isoformat()
    result, cursor = tick(changed_clients_sensor, cursor, plannr=plannr)
    assert sorted(r.partition_key for r in result.run_requests) == months
    assert {r.job_name for r in result.run_requests} == {"clients_job"}
    again, _ = tick(changed_clients_sensor, cursor, plannr=plannr)
    assert again.run_requests == []


def test_run_failure_sensor_posts_an_alert(make_sandbox, alert_receiver, tmp_path):
    sandbox = make_sandbox(clients=3)
    wrong = PlannrApi(base_url=sandbox.url, token="wrong-token-456", rate_limit_per_minute=100_000)
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            ASSETS,
            selection=["circles"],
            instance=instance,
            resources={"plannr": wrong, "storage": PlannrStorage(data_dir=str(tmp_path))},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        context = dg.build_run_status_sensor_context(
            sensor_name="pipeline_run_failure_sensor",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
            resources={"alert_webhook": AlertWebhook(url=alert_receiver.url)},
        ).for_run_failure()
        pipeline_run_failure_sensor(context)
    [alert] = alert_receiver.received
    assert alert["event"] == "plannr.pipeline.run_failed" and alert["run_id"] == result.run_id
    assert "wrong-token-456" not in json.dumps(alert)


@pytest.mark.parametrize(
    "sensor, extra",
    [
        (import_progress_sensor, "storage"),
        (import_failures_sensor, "alert_webhook"),
        (changed_clients_sensor, None),
    ],
)
def test_a_cursor_that_does_not_parse_is_reset_to_a_fresh_baseline(moving_sandbox, tmp_path, sensor, extra):
    sandbox, _ = moving_sandbox
    resources = {"plannr": api_for(sandbox)}
    if extra == "storage":
        resources["storage"] = PlannrStorage(data_dir=str(tmp_path / "data"))
    elif extra == "alert_webhook":
        resources["alert_webhook"] = AlertWebhook()
    for broken in (
        "{not json",
        '{"something": "else"}',
        '{"watermark": "yesterday", "uuids_at_watermark": []}',
    ):
        result, cursor = tick(sensor, broken, **resources)
        assert result.run_requests == []  # a baseline: nothing replayed
        assert cursor != broken and json.loads(cursor)  # a fresh, readable cursor


def test_a_malformed_webhook_url_is_logged_and_retried_not_fatal(moving_sandbox):
    sandbox, clock = moving_sandbox
    plannr, broken = api_for(sandbox), AlertWebhook(url="not a url at all")
    _, cursor = tick(import_failures_sensor, None, plannr=plannr, alert_webhook=broken)
    for _ in range(240):  # until a failure would be alerted
        clock.now += timedelta(seconds=30)
        result, new_cursor = tick(import_failures_sensor, cursor, plannr=plannr, alert_webhook=broken)
        if result.run_requests:
            break
        cursor = new_cursor
    assert result.run_requests  # the sensor kept working
    assert broken.send({"x": 1}).startswith("PLANNR_ALERT_WEBHOOK_URL must be an https:// URL")
