"""The one way to wait: poll a predicate until it holds, bounded in count and in time.

``wait_until`` blocks (plain code: process tests, benchmarks); ``wait_for`` sleeps in
trio (in-process nodes, whose event loop must keep running while the test waits). Both
return the predicate's first truthy value, so that a wait can also fetch what it waited
for, and both fail with ``WaitTimeout`` naming what was awaited. A timeout is a failed
test, so ``WaitTimeout`` is an ``AssertionError``.

Both bounds hold: the deadline, and at most ``timeout / step + 1`` polls, so that a
predicate that returns at once cannot spin and one that is slow cannot run past the
deadline by more than one call.
"""

from __future__ import annotations

import time
from typing import Any, Callable


class WaitTimeout(AssertionError):
    """A wait ran out of time (or polls) before its predicate held."""


def _polls(timeout: float, step: float) -> int:
    if timeout < 0 or step <= 0:
        raise ValueError(f"timeout must be >= 0 and step > 0, not {timeout!r} and {step!r}")
    return int(timeout / step) + 1


def _timed_out(timeout: float, polls: int, what: str) -> WaitTimeout:
    return WaitTimeout(f"timed out after {timeout:g} s ({polls} polls) waiting for {what}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` every ``step`` s until it returns something truthy, and return
    that; raise ``WaitTimeout`` naming ``what`` once ``timeout`` s have passed."""
    limit = _polls(timeout, step)
    deadline = time.monotonic() + timeout
    for n in range(1, limit + 1):
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0 or n == limit:
            break
        time.sleep(min(step, left))
    raise _timed_out(timeout, n, what)


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """``wait_until`` for trio code: the same bounds and failure, sleeping with
    ``trio.sleep`` (and reading trio's clock, so that a test's mock clock applies)."""
    import trio  # here, not at the top: plain code (benchmarks) imports this module too

    limit = _polls(timeout, step)
    deadline = trio.current_time() + timeout
    for n in range(1, limit + 1):
        value = predicate()
        if value:
            return value
        left = deadline - trio.current_time()
        if left <= 0 or n == limit:
            break
        await trio.sleep(min(step, left))
    raise _timed_out(timeout, n, what)
