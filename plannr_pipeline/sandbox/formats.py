"""Plannr's wire formats, as the docs show them (docs/plannr-api.md section 5)."""

from __future__ import annotations

from datetime import date, datetime

from plannr_pipeline.storage.convert import LONDON  # one UK zone for the whole package

PLACEHOLDER = "App\\Http\\Resources\\{}Resource"


def iso_london(moment: datetime) -> str:
    """`2025-04-02T13:27:55+01:00`: ISO 8601 with the UK offset of the day."""
    return moment.astimezone(LONDON).isoformat(timespec="seconds")


def naive_london(moment: datetime) -> str:
    """`2025-04-02 13:27:55`: the zone-less form used by task dates and last_interaction_at."""
    return moment.astimezone(LONDON).strftime("%Y-%m-%d %H:%M:%S")


def london_date(moment: datetime) -> date:
    return moment.astimezone(LONDON).date()


def money(pennies: int, currency: str = "GBP") -> dict[str, str]:
    pounds, pence = divmod(pennies, 100)
    return {"amount": str(pennies), "currency": currency, "formatted": f"£{pounds:,}.{pence:02d}"}


def placeholder(resource: str) -> str:
    """How an unexpanded relationship shows in Plannr's examples: the resource class name."""
    return PLACEHOLDER.format(resource)
