"""Retention periods as `PLANNR_HISTORY_RETENTION` and `PLANNR_DELETED_PERSONAL_RETENTION` give
them (`retention.py` says what each keeps): read without DuckDB or Arrow, so `sync` checks them
before anything heavy loads."""

from __future__ import annotations

import calendar
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

HISTORY_VARIABLE = "PLANNR_HISTORY_RETENTION"
DELETED_VARIABLE = "PLANNR_DELETED_PERSONAL_RETENTION"
DEFAULT_PERIOD = "6y"
_PERIOD = re.compile(r"^\s*(\d{1,4})\s*([dwmy])\s*$")


class RetentionSettingError(ValueError):
    """A period that does not parse: the message is one line naming the variable and the fix."""


@dataclass(frozen=True)
class Period:
    amount: int
    unit: str  # d, w, m, y

    def cutoff(self, now: datetime) -> datetime:
        if self.unit in "dw":
            return now - timedelta(days=self.amount * (7 if self.unit == "w" else 1))
        months = now.year * 12 + now.month - 1 - self.amount * (12 if self.unit == "y" else 1)
        year, month = divmod(months, 12)
        day = min(now.day, calendar.monthrange(year, month + 1)[1])  # 29 February -> 28
        return now.replace(year=year, month=month + 1, day=day)


def period_from(variable: str, environ: dict[str, str] | None = None) -> Period | None:
    """The period a variable sets (None: `forever`); a bad value raises one clear line."""
    text = (environ if environ is not None else os.environ).get(variable) or DEFAULT_PERIOD
    if text.strip().lower() == "forever":
        return None
    if not (match := _PERIOD.match(text.lower())) or int(match[1]) == 0:
        raise RetentionSettingError(
            f"{variable}={text!r} is not a period: write a whole number (1 or more) and a unit, e.g. 6y, 18m, 8w, 90d "
            "(or 'forever')"
        )
    return Period(int(match[1]), match[2])


def check_retention_settings(environ: dict[str, str] | None = None) -> None:
    period_from(HISTORY_VARIABLE, environ)
    period_from(DELETED_VARIABLE, environ)
