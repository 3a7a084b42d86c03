"""Alerts: a JSON POST to PLANNR_ALERT_WEBHOOK_URL, when one is configured.

The URL itself may carry a secret (Slack and Teams webhooks do), so it is never logged.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
import httpx


class AlertWebhook(dg.ConfigurableResource):
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
        try:
            response = httpx.post(self.url, json=payload, timeout=self.timeout_seconds)
        except (httpx.HTTPError, httpx.InvalidURL) as error:  # a malformed URL too: logged, retried next tick
            return f"alert webhook unreachable ({type(error).__name__}); check PLANNR_ALERT_WEBHOOK_URL"
        if response.status_code >= 300:
            return f"alert webhook answered {response.status_code}"
        return None
