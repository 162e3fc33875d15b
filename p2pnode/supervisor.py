"""Every task the node runs in the background, supervised: one that fails is logged,
counted and, if it is meant to run for the node's life, started again after a backoff.
Nothing a task raises ends the node (issue 9: a resend that failed to dial once took a
whole node down).

Promises:

- ``spawn(name, fn, *args)`` runs ``fn(*args)`` once in the nursery. If it raises, the
  error is logged with ``name`` and counted; it is not run again.
- ``loop(name, fn, *args)`` runs ``fn(*args)`` for the node's life: if it raises, it is
  logged, counted and started again after a backoff on the node's clock that doubles from
  ``BACKOFF_FIRST_S`` to ``BACKOFF_MAX_S`` and falls back to the first once the task has
  run ``BACKOFF_RESET_S`` without failing. A task that returns has finished: it is not
  started again.
- Cancellation (the node stopping) passes through untouched: only ``Exception`` is caught.
- ``json()`` is what ``status`` shows: failures by task name (at most ``MAX_NAMES``
  names; the rest are counted under ``"other"``), restarts, and the last failure.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

import trio

from p2pnode.clock import Clock

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 60.0
BACKOFF_RESET_S = 60.0
MAX_NAMES = 64  # task names status counts one by one: names made from peers must not grow it
MAX_ERROR_TEXT = 300


class Supervisor:
    """The node's background tasks, run in ``nursery`` (module docstring)."""

    def __init__(self, nursery: trio.Nursery, clock: Clock) -> None:
        self.nursery = nursery
        self.clock = clock
        self.failures: dict[str, int] = {}
        self.restarts = 0
        self.last: dict[str, Any] | None = None

    def spawn(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` once; a failure is logged and counted, never raised."""

        async def once() -> None:
            try:
                await fn(*args)
            except Exception as e:
                self._failed(name, e)

        self.nursery.start_soon(once)

    def loop(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` for the node's life, started again after each failure."""
        self.nursery.start_soon(self._keep, name, fn, args)

    async def _keep(self, name: str, fn: Callable[..., Awaitable[Any]], args: tuple) -> None:
        backoff = BACKOFF_FIRST_S
        while True:  # bounded by the node's life: each turn is a run of the task, then a backoff
            began = self.clock.monotonic()
            try:
                await fn(*args)
                return
            except Exception as e:
                self._failed(name, e)
            if self.clock.monotonic() - began >= BACKOFF_RESET_S:
                backoff = BACKOFF_FIRST_S
            log.info("task %s starts again in %.0f s", name, backoff)
            await self.clock.sleep(backoff)
            self.restarts += 1
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _failed(self, name: str, e: Exception) -> None:
        log.error("task %s failed: %s: %s", name, type(e).__name__, e, exc_info=e)
        key = name if name in self.failures or len(self.failures) < MAX_NAMES else "other"
        self.failures[key] = self.failures.get(key, 0) + 1
        self.last = {"task": name, "error": f"{type(e).__name__}: {e}"[:MAX_ERROR_TEXT],
                     "at_ms": self.clock.now_ms()}

    def json(self) -> dict:
        return {"failures": sum(self.failures.values()), "by_task": dict(sorted(self.failures.items())),
                "restarts": self.restarts, "last_failure": self.last}
