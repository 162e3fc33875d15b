"""What the node derives from each loan's documents on a day, kept between calls: a second
``portfolio`` (or auto-invest's or the reserve's look at the holdings) on the same day
reads the store's heads, and recomputes only the loans whose documents changed.

Promises:

- ``StateCache.each(chains, index, day, derive)`` gives ``derive(record)`` for every loan
  the loan index names, in the index's order (loan id), exactly as a fresh computation
  on the same store and day would: a value is reused only when it was derived on ``day``
  from the same documents.
- "The same documents" is judged by keys that change whenever they do: a loan's index
  keys (author and seq of every entry about it; a stored entry never changes, and one
  added or dropped adds or removes its key), and, for the whole store, every chain's
  head. Heads unchanged and the same day: nothing is read but the heads. Else one scan
  of the loan index, and every loan whose keys changed is read and derived again.
- ``derive`` must depend only on the record and the day (and on what is fixed for the
  node's life, such as its key): it is called again only when those change. A loan the
  index no longer names is forgotten.
- ``each_soon`` is ``each`` for the node's event loop: it yields to other tasks every
  few loans it derives, and runs one pass at a time.
- At most ``MAX_LOANS`` loans are kept (the portfolio's own limit); past it the cache
  is cleared and holds the latest pass only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Callable, Iterator

import trio

from protocol.lending.contract import LOAN_INDEX

from p2pnode.lending.loanview import LoanRecord, entries_at, record_of

CHECKPOINT_EVERY = 16
"""Loans derived between two checkpoints of ``each_soon`` (a few ms of CPU)."""
MAX_LOANS = 1_000_000
"""Loans kept at most (``protocol.lending.portfolio.MAX_LOANS``)."""


@dataclass
class _Kept:
    keys: tuple[bytes, ...]  # the loan's index keys when derived
    value: Any


class StateCache:
    """Values derived per loan, for one day at a time (the latest asked)."""

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self._result: list[tuple[bytes, Any]] = []
        self._day: date | None = None
        self._heads: dict | None = None  # chains.heads() when the last pass began
        self._loans: dict[bytes, _Kept] = {}
        self.derived = 0  # loans derived (not reused) so far: what tests and benches look at

    def clear(self) -> None:
        self._day, self._heads, self._loans = None, None, {}

    def each(self, chains: Any, index: Any, day: date, derive: Callable[[LoanRecord], Any]) -> list[tuple[bytes, Any]]:
        """``(loan, derive(record of loan))`` for every loan the index names, by loan id."""
        run = self._pass(chains, index, day, derive)
        for _ in run:  # (a plain caller derives straight through)
            pass
        return self._result

    async def each_soon(self, chains: Any, index: Any, day: date, derive: Callable[[LoanRecord], Any],
                        every: int = CHECKPOINT_EVERY) -> list[tuple[bytes, Any]]:
        """``each``, for the node's event loop: a checkpoint after every ``every`` loans
        derived, so that a pass over thousands of changed loans (the first of a day)
        never holds the loop for more than a few milliseconds at a time. One pass at a
        time: a second caller waits for the first, then finds its work done."""
        async with self._lock:
            for n, _ in enumerate(self._pass(chains, index, day, derive), 1):
                if n % every == 0:
                    await trio.sleep(0)
            return self._result

    def _pass(self, chains: Any, index: Any, day: date, derive: Callable[[LoanRecord], Any]) -> Iterator[None]:
        """One pass; yields after each loan derived; leaves its answer in ``_result``."""
        heads = chains.heads()  # before the scan: a write during it is seen by the next pass
        if day != self._day:
            self._loans = {}
        elif heads == self._heads:
            self._result = [(loan, kept.value) for loan, kept in self._loans.items()]
            return
        by_loan: dict[bytes, list[bytes]] = {}
        for k in index.keys(LOAN_INDEX):
            by_loan.setdefault(k[1:33], []).append(k)
        kept: dict[bytes, _Kept] = {}
        for loan, keys in by_loan.items():  # (the index's order: by loan id)
            old = self._loans.get(loan)
            if old is None or old.keys != tuple(keys):
                old = _Kept(tuple(keys), derive(record_of(loan, entries_at(chains, keys))))
                self.derived += 1
                yield
            kept[loan] = old
        self._result = [(loan, k.value) for loan, k in kept.items()]
        if len(kept) > MAX_LOANS:
            self.clear()
            return
        self._day, self._heads, self._loans = day, heads, kept
