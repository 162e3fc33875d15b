"""Wall time without a running node: milliseconds since the Unix epoch (the protocol's
``ts`` unit) and UTC days. Imports no trio (the CLI uses it); a running node reads wall
time through its one clock (p2pnode/clock.py) instead, so that tests can drive it."""

from __future__ import annotations

import time
from datetime import date, datetime, timezone

MS_PER_DAY = 86_400_000


def now_ms() -> int:
    """The system's wall clock in ms since the Unix epoch."""
    return time.time_ns() // 1_000_000


def utc_date(ms: int) -> date:
    """The UTC calendar day of a time in milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()
