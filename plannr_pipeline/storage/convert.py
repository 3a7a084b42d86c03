"""Casts from Plannr's wire formats to the types an analyst can trust (docs/plannr-api.md section 5).

Every converter returns None for a missing value and raises ValueError for one it cannot read;
the normaliser keeps such a value in the row's `extra_json` rather than losing it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

LONDON = ZoneInfo("Europe/London")
PLACEHOLDER_PREFIX = "App\\Http\\Resources\\"


def is_placeholder(value: Any) -> bool:
    """An unexpanded relationship as the docs show it: a resource class name, or a schema blob."""
    if isinstance(value, str):
        return value.startswith(PLACEHOLDER_PREFIX) or value == "Object"
    if isinstance(value, dict) and value:
        return all(
            isinstance(v, dict) and "description" in v and ("example" in v or "collection" in v)
            for v in value.values()
        )
    return False


def _missing(value: Any) -> bool:
    return value is None or value == "" or is_placeholder(value)


def to_utc(value: Any) -> datetime | None:
    """ISO with offset, naive `YYYY-MM-DD HH:MM:SS` (Europe/London), a date, or Zulu -> UTC."""
    if _missing(value):
        return None
    text = str(value).strip()
    if len(text) == 10:  # a date alone: midnight in London
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), LONDON).astimezone(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=LONDON)  # naive Plannr times are UK local
    return moment.astimezone(UTC)


def uk_day(moment: datetime) -> str:
    """The UK calendar day of an instant, `YYYY-MM-DD`."""
    return moment.astimezone(LONDON).date().isoformat()


def to_date(value: Any) -> date | None:
    if _missing(value):
        return None
    return date.fromisoformat(str(value)[:10])


def to_int(value: Any) -> int | None:
    if _missing(value):
        return None
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    whole, _, fraction = text.partition(".")
    if whole.lstrip("+-").isdigit() and fraction.strip("0") == "":
        return int(whole)  # exact: through float, 9007199254740993 would become ...992
    number = float(text)  # "1e3" and the like
    if not number.is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


# What each signed integer column can hold.
INTEGER_BOUNDS = {
    type_: (-(2 ** (type_.bit_width - 1)), 2 ** (type_.bit_width - 1) - 1)
    for type_ in (pa.int8(), pa.int16(), pa.int32(), pa.int64())
}


def fitting(value: Any, type_: pa.DataType) -> Any:
    """`value` unchanged, unless it is a whole number a column of integer type `type_` cannot hold:
    that is a ValueError, so one wild number lands in `_unparsed` instead of sinking the batch."""
    return within(value, INTEGER_BOUNDS.get(type_), type_)


def within(value: Any, bounds: tuple[int, int] | None, type_: object = "its column") -> Any:
    """`fitting` with the column's bounds already looked up (the normaliser's hot path)."""
    if bounds and type(value) is int and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{value} does not fit {type_}")
    return value


def to_bool(value: Any) -> bool | None:
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


def to_text(value: Any) -> str | None:
    if _missing(value):
        return None
    if isinstance(value, (dict, list)):
        raise ValueError("expected text, got a structure")
    return str(value)


def money_minor(value: Any) -> int | None:
    """Money `{amount: "4000", currency, formatted}`: the amount is already in minor units."""
    if _missing(value):
        return None
    if not isinstance(value, dict) or "amount" not in value:
        raise ValueError(f"expected a money object, got {value!r}")
    return to_int(value["amount"])


def money_currency(value: Any) -> str | None:
    if _missing(value) or not isinstance(value, dict):
        return None
    return to_text(value.get("currency"))
