"""The node's one clock.

Two kinds of time run through a node, and both come from here:

- *wall time*, milliseconds since the Unix epoch: what the node writes into what it signs
  (entry ``ts``, offer and contract times, receipt dates) and the day loan state is
  computed for;
- *waiting time*: every sleep, timeout, backoff and "how long ago" inside the node. It is
  trio's clock (``trio.current_time``), so a test that runs the node under trio's
  ``MockClock`` moves it by ``clock.jump(seconds)``.

``Clock`` reads the system's wall time. ``VirtualClock`` derives wall time from trio's
clock (``epoch_ms`` at trio time 0), so that under a ``MockClock`` one jump moves both: a
test makes a proposal expire, an installment fall due or a loan reach its default
threshold without sleeping. Both are usable outside trio for wall time only (the CLI).
"""

from __future__ import annotations

import time
from datetime import date, datetime, timezone

MS_PER_DAY = 86_400_000


def utc_date(ms: int) -> date:
    """The UTC calendar day of a time in milliseconds since the epoch."""
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date()


class Clock:
    """Wall time from the system; waiting time from trio."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch (the protocol's ``ts`` unit)."""
        return time.time_ns() // 1_000_000

    def today(self) -> date:
        """Today's UTC date by ``now_ms``."""
        return utc_date(self.now_ms())

    def monotonic(self) -> float:
        """Seconds on trio's clock: for intervals inside a running node only."""
        import trio

        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        import trio

        await trio.sleep(seconds)


class VirtualClock(Clock):
    """Wall time that follows trio's clock: ``epoch_ms`` plus trio time.

    Under ``trio.testing.MockClock`` (use ``rate=1`` when real libp2p hosts take part, so
    that their own timeouts still pass at the speed of real I/O) ``MockClock.jump(s)``
    advances the wall time by ``s`` seconds too."""

    def __init__(self, epoch_ms: int | None = None) -> None:
        self.epoch_ms = time.time_ns() // 1_000_000 if epoch_ms is None else epoch_ms

    def now_ms(self) -> int:
        import trio

        return self.epoch_ms + int(trio.current_time() * 1000)


SYSTEM = Clock()
"""The clock of every node that is not under test."""


def now_ms() -> int:
    """The system's wall time in ms: for code that runs outside a node (the CLI, init)."""
    return SYSTEM.now_ms()
