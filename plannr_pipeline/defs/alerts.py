"""Alerts: a JSON POST to PLANNR_ALERT_WEBHOOK_URL, when one is configured.

The URL itself may carry a secret (Slack and Teams webhooks do), so it is never logged, and it
must be https: an alert crosses networks we do not own (plain http only to this machine, for
tests). An alert says that something needs looking at and where (counts, the import's uuid, a
link to the UI), never what the client data was: the failed rows themselves stay in
`import_errors`, behind whatever protects the data folder and the UI.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlparse

import dagster as dg
import httpx

from plannr_pipeline.defs.deployment import FixedByDeployment

DEFAULT_UI_URL = "http://127.0.0.1:3000"


def ui_link(path: str) -> str:
    """Where in the Dagster UI to look: PLANNR_UI_URL (what people open), else scripts/dev.sh's."""
    return (os.environ.get("PLANNR_UI_URL") or DEFAULT_UI_URL).rstrip("/") + path


def insecure(url: str) -> str | None:
    """Why an alert must not go to `url` (never showing the URL: it may hold a secret), or None."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    loopback = host in ("localhost", "::1") or host.startswith("127.")
    if parsed.scheme == "https" and host or parsed.scheme == "http" and loopback:
        return None
    return (
        "PLANNR_ALERT_WEBHOOK_URL must be an https:// URL (plain http:// only to 127.0.0.1 or "
        "localhost); the alert was not sent"
    )


class AlertWebhook(FixedByDeployment, dg.ConfigurableResource):
    """Where alerts go is the deployment's (PLANNR_ALERT_WEBHOOK_URL), never run config."""

    DEPLOYMENT_FIELDS: ClassVar[Mapping[str, str]] = {"url": "PLANNR_ALERT_WEBHOOK_URL"}

    url: str | None = None
    timeout_seconds: float = 10.0

    @classmethod
    def from_env(cls) -> AlertWebhook:
        return cls(
            url=dg.EnvVar("PLANNR_ALERT_WEBHOOK_URL") if os.environ.get("PLANNR_ALERT_WEBHOOK_URL") else None
        )

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def send(self, payload: dict[str, Any]) -> str | None:
        """POST the alert; return None when delivered (or nothing is configured), else why not."""
        if not self.url:
            return None
        if problem := insecure(self.url):
            return problem
        try:
            # No redirects: a 3xx could lead the alert off https or to another host.
            response = httpx.post(
                self.url, json=payload, timeout=self.timeout_seconds, follow_redirects=False
            )
        except (httpx.HTTPError, httpx.InvalidURL) as error:  # a malformed URL too: logged, retried next tick
            return f"alert webhook unreachable ({type(error).__name__}); check PLANNR_ALERT_WEBHOOK_URL"
        if response.status_code >= 300:
            return f"alert webhook answered {response.status_code}"
        return None
