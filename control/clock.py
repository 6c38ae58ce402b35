"""Time, injectable.

Everything with a deadline (token expiry, credit accrual, empty-room timeout, the recording janitor) reads time
through a `Clock` so tests move time forward instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime


class Clock:
    """Wall-clock milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def now_s(self) -> float:
        return self.now_ms() / 1000.0


class FakeClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start_ms: int = 1_705_309_350_000) -> None:  # 2024-01-15T09:02:30Z
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += round(seconds * 1000)

    def set(self, ms: int) -> None:
        self._now = ms


def iso(ms: int | None) -> str | None:
    """The seeds' timestamp form: UTC, milliseconds, `Z` (JavaScript `toISOString`)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def day_start_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def utc_date(ms: int) -> date:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date()
