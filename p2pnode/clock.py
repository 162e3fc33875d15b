"""The node's one clock.

Two kinds of time run through a node, and both come from here:

- *wall time*, milliseconds since the Unix epoch: what the node writes into what it signs
  (entry ``ts``, the times and dates of extensions' documents) and the calendar day an
  extension computes its state for;
- *waiting time*: every sleep, timeout, backoff and "how long ago" inside the node. It is
  trio's clock (``trio.current_time``), so a test that runs the node under trio's
  ``MockClock`` moves it by ``clock.jump(seconds)``.

``Clock`` reads the system's wall time. ``VirtualClock`` derives wall time from trio's
clock (``epoch_ms`` at trio time 0), so that under a ``MockClock`` one jump moves both: a
test makes a document expire or a day pass without sleeping. (Outside a node, the CLI
reads wall time from p2pnode/walltime.py, which imports no trio.)
"""

from __future__ import annotations

from datetime import date

import trio

from p2pnode.walltime import now_ms, utc_date


class Clock:
    """Wall time from the system; waiting time from trio."""

    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch (the protocol's ``ts`` unit)."""
        return now_ms()

    def today(self) -> date:
        """Today's UTC date by ``now_ms``."""
        return utc_date(self.now_ms())

    def monotonic(self) -> float:
        """Seconds on trio's clock: for intervals inside a running node only."""
        return trio.current_time()

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


class VirtualClock(Clock):
    """Wall time that follows trio's clock: ``epoch_ms`` plus trio time.

    Under ``trio.testing.MockClock`` (use ``rate=1`` when real libp2p hosts take part, so
    that their own timeouts still pass at the speed of real I/O) ``MockClock.jump(s)``
    advances the wall time by ``s`` seconds too."""

    def __init__(self, epoch_ms: int | None = None) -> None:
        self.epoch_ms = now_ms() if epoch_ms is None else epoch_ms

    def now_ms(self) -> int:
        return self.epoch_ms + int(trio.current_time() * 1000)


SYSTEM = Clock()
"""The clock of every node that is not under test."""
