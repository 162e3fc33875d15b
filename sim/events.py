"""Virtual time: a clock that moves only when the next event is taken, an event queue
(a heap of ``(time, seq, event)``: ties run in the order they were scheduled, so one
seed is one order), and the trace of what ran.

Invariants: time never goes back; every run is bounded both in events and in virtual
time (``run`` stops at whichever limit comes first and says which).
"""

from __future__ import annotations

import hashlib
import heapq
from collections import deque
from typing import Callable

TRACE_KEEP = 200  # events a failure report shows (the last ones)


class Stop(Exception):
    """Raised by an invariant check to end the run: ``invariant`` names it."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


class Scheduler:
    """The clock (``now``, virtual milliseconds) and the events to come."""

    def __init__(self, *, trace_keep: int = TRACE_KEEP, keep_all: bool = False) -> None:
        self.now = 0
        self._heap: list[tuple[int, int, str, Callable[[], None]]] = []  # (at, seq, what, act): seq breaks ties
        self._seq = 0
        self.ran = 0  # events taken so far
        self.trace: deque[str] = deque(maxlen=None if keep_all else trace_keep)
        self.trace_on = True  # off in scale runs: formatting every line costs more than the event
        self.halted = False
        self.digest = hashlib.sha256()  # of every trace line: two runs with one seed have one digest

    def at(self, when: int, what: str, act: Callable[[], None]) -> None:
        """Run ``act`` at virtual time ``when`` (not before now); ``what`` names it in the trace."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, what, act))

    def after(self, delay: int, what: str, act: Callable[[], None]) -> None:
        self.at(self.now + delay, what, act)

    def note(self, text: str) -> None:
        """Add a line to the trace at the current time (what an event did)."""
        if not self.trace_on:
            return
        line = f"{self.now:>9} {text}"
        self.trace.append(line)
        self.digest.update(line.encode() + b"\n")

    def halt(self) -> None:
        """End the run after the event under way (the run has reached its end early)."""
        self.halted = True

    @property
    def pending(self) -> int:
        return len(self._heap)

    def run(self, *, until: int, max_events: int, check: Callable[[], None] | None = None,
            check_every: int = 1) -> str:
        """Take events in order until the queue is empty (``"idle"``), the next one is past
        ``until`` (``"time"``) or ``max_events`` have run (``"events"``). ``check`` runs after
        every ``check_every`` events; it raises ``Stop`` when an invariant fails."""
        for _ in range(max_events):
            if not self._heap:
                return "idle"
            if self._heap[0][0] > until:
                self.now = until
                return "time"
            at, _, what, act = heapq.heappop(self._heap)
            assert at >= self.now, "time went back"
            self.now = at
            self.ran += 1
            if self.trace_on:
                self.note(what)
            act()
            if check is not None and self.ran % check_every == 0:
                check()
            if self.halted:
                return "halted"
        return "events"


def short(key: bytes) -> str:
    """A key or id as people read it in a trace."""
    return key.hex()[:8]
