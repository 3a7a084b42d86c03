"""Alerts carry no client data and go only over https (issue 22, case 5).

On today's main the failed-import alert sent the raw failed CSV rows (for a clients import:
names, emails, dates of birth) to the webhook, over plain http if so configured, and stored the
same payload as an observation in the event log. Here the API (the sandbox behind a proxy that
adds what a real clients import's failed rows hold) reports failed clients imports; the webhook
on loopback and the instance's own files on disk must hold none of those people.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import dagster as dg

from plannr_pipeline.defs.alerts import AlertWebhook
from plannr_pipeline.defs.resources import PlannrApi
from plannr_pipeline.defs.sensors.import_sensors import import_failures_sensor
from tests.lying_api import LyingApi
from tests.test_sensors import Clock, moving_sandbox  # noqa: F401 (the fixture)


def test_a_failed_clients_import_tells_nobody_who_was_in_it(moving_sandbox, alert_receiver, tmp_path):  # noqa: F811
    sandbox, clock = moving_sandbox
    people: set[str] = set()

    def as_real_clients_rows(path: str, query: dict, body: dict) -> dict:
        for record in body["data"]:
            record["type"] = "clients"
            for row in record.get("errors") or []:
                client, n = row["client"], row["client"]["row"]
                client["email"] = f"{client['first_name'].lower()}.{n}@example-client.co.uk"
                client["date_of_birth"] = f"19{40 + n % 50}-0{1 + n % 9}-{10 + n % 18}"
                people.update({client["email"], client["date_of_birth"], client["last_name"]})
                people.add(f"{client['first_name']} {client['last_name']}")
        return body

    proxy = LyingApi(sandbox.url)
    proxy.lies["/api/v1/import"] = as_real_clients_rows
    plannr = PlannrApi(base_url=proxy.url, token=sandbox.options.token, rate_limit_per_minute=100_000)
    webhook = AlertWebhook(url=alert_receiver.url)
    (tmp_path / "instance").mkdir()
    try:
        with dg.instance_for_test(temp_dir=str(tmp_path / "instance")) as instance:
            cursor = None
            for _ in range(121):  # an hour of sandbox time, in 30-second ticks
                context = dg.build_sensor_context(
                    cursor=cursor, instance=instance, resources={"plannr": plannr, "alert_webhook": webhook}
                )
                result = import_failures_sensor(context)
                if isinstance(result, dg.SensorResult):
                    cursor = result.cursor or cursor
                    for event in result.asset_events:  # what the daemon does with them
                        instance.report_runless_asset_event(event)
                clock.now += timedelta(seconds=30)
            observations = instance.fetch_observations(dg.AssetKey("imports"), limit=1000).records
    finally:
        proxy.close()

    alerts = alert_receiver.received
    assert alerts and people, "no clients import failed in an hour of sandbox time"
    assert len(observations) == len(alerts)
    assert {a["type"] for a in alerts} == {"clients"} and all(a["failed_jobs"] > 0 for a in alerts)
    assert all(a["link"].endswith("/assets/imports") for a in alerts)

    sent = json.dumps(alerts)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "instance").rglob("*") if p.is_file())
    stored_text = stored.decode("utf-8", "replace") + repr([o.event_log_entry for o in observations])
    for person in people:
        pattern = re.compile(rf"\b{re.escape(person)}\b")
        assert not pattern.search(sent), f"{person!r} was sent to the webhook"
        assert not pattern.search(stored_text), f"{person!r} is in the event log"


def test_an_alert_goes_only_over_https_or_to_this_machine(alert_receiver):
    for url in ("http://alerts.invalid/hook", "ftp://alerts.invalid/hook", "https:///no-host", "not a url"):
        said = AlertWebhook(url=url).send({"event": "test"})
        assert said and said.startswith("PLANNR_ALERT_WEBHOOK_URL must be an https:// URL"), url
        assert "alerts.invalid" not in said  # the URL may hold a secret: never repeated
    assert AlertWebhook(url=alert_receiver.url).send({"event": "test"}) is None  # http to 127.0.0.1
    assert alert_receiver.received == [{"event": "test"}]
    assert AlertWebhook(url=alert_receiver.url.replace("127.0.0.1", "localhost")).send({"n": 2}) is None


def test_nothing_here_keeps_the_rows():
    """The polled snapshot has no field for an import's failed rows or its error report's link."""
    from plannr_pipeline.defs.sensors.import_polling import ImportSnapshot

    fields = set(ImportSnapshot.__dataclass_fields__)
    assert not fields & {"first_errors", "errors", "error_report_url"}, fields
