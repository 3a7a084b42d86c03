"""What a listing remembers of each record it has shown: its uuid, and the `updated_at` of the
copy it kept (a record shown twice keeps its newest copy).

A listing of 500,000 tasks remembers 500,000 records until its last page. As a dict of numbers
that is ~118 bytes a record (56 MB traced in a probe of 500,000), and its small objects stay
scattered over the heap after the listing. Past a few thousand records a canonical uuid is kept
as its 16 bytes and the time as 8, packed into byte arrays by a hash of the uuid: ~28 bytes a
record (13 MB traced, 24 MB of RSS in the same probe), for ~1 microsecond more a record. A
100,000-client sync, one run each: the tasks listing's peak 311 -> 274 MB, and 25 MB less held
after it. The sync's process runs without NumPy (see `cli.main`), so the arrays are the standard
library's.
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def seen_key(uuid: Any) -> object:
    """How a listing tells records apart: a canonical uuid as its number (one to one), any other
    string as sent, anything else in a tuple (so the number 5 is never the uuid ...0005)."""
    if type(uuid) is str:
        return int(uuid.replace("-", ""), 16) if _CANONICAL_UUID.fullmatch(uuid) else uuid
    return (uuid,)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# updated_at absent or unreadable: before any time there is (microseconds since 1970 fit 64 bits
# from the year 1 to 9999), so any copy with a time is newer than one without.
_NO_TIME = -(2**63)


def instant(value: Any) -> int:
    """An ISO 8601 `updated_at` as microseconds since 1970 (`_NO_TIME` when absent or unreadable):
    a number, not the datetime, as the packed records hold it."""
    if not isinstance(value, str):
        return _NO_TIME
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return _NO_TIME
    return ((moment if moment.tzinfo else moment.replace(tzinfo=UTC)) - _EPOCH) // _MICROSECOND


class Shown(Enum):
    FIRST = "first"  # never shown before: remembered now
    NEWER = "newer"  # shown before, and this copy is newer: kept now
    NOT_NEWER = "not newer"  # shown before, and this copy is not newer


_RECORD = struct.Struct(">16sq")  # the uuid's 16 bytes, then updated_at as `instant` gives it
_PACK_FROM = 4_096  # records held as a dict first: most listings (a client's goals) stay below
_BUCKETS = 1 << 14  # ~30 records a bucket at 500,000: a lookup scans ~750 bytes in C


class SeenRecords:
    """The records a listing has shown (see the module)."""

    def __init__(self) -> None:
        # Every record until there are _PACK_FROM, then those whose uuid is not canonical.
        self._few: dict[object, int] = {}
        self._buckets: list[bytearray] | None = None
        self._packed = 0

    def __len__(self) -> int:
        return len(self._few) + self._packed

    def show(self, uuid: Any, updated_at: Any) -> Shown:
        """Take in one copy of a record: whether the listing had shown it before, and if so
        whether this copy is newer than the one kept (then it is kept instead)."""
        key, this = seen_key(uuid), instant(updated_at)
        if self._buckets is None or type(key) is not int:
            return self._show_few(key, this)
        bucket = self._buckets[hash(key) % _BUCKETS]
        packed = key.to_bytes(16, "big")
        at = _find(bucket, packed)
        if at < 0:
            bucket += _RECORD.pack(packed, this)
            self._packed += 1
            return Shown.FIRST
        if this > _RECORD.unpack_from(bucket, at)[1]:
            _RECORD.pack_into(bucket, at, packed, this)
            return Shown.NEWER
        return Shown.NOT_NEWER

    def _show_few(self, key: object, this: int) -> Shown:
        if key in self._few:
            if this > self._few[key]:
                self._few[key] = this
                return Shown.NEWER
            return Shown.NOT_NEWER
        self._few[key] = this
        if self._buckets is None and len(self._few) >= _PACK_FROM:
            self._pack()
        return Shown.FIRST

    def _pack(self) -> None:
        self._buckets = [bytearray() for _ in range(_BUCKETS)]
        few, self._few = self._few, {}
        for key, kept in few.items():
            if type(key) is int:
                self._buckets[hash(key) % _BUCKETS] += _RECORD.pack(key.to_bytes(16, "big"), kept)
                self._packed += 1
            else:
                self._few[key] = kept


def _find(bucket: bytearray, packed: bytes) -> int:
    """Where the record of uuid `packed` starts in `bucket` (-1: not there). A match must start on
    a record's boundary: 16 bytes that straddle two records are not a uuid."""
    at = bucket.find(packed)
    while at >= 0 and at % _RECORD.size:
        at = bucket.find(packed, at + 1)
    return at
