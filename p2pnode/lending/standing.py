"""Standing of authors on the running node: ``protocol.lending.standing`` walked over
lending's graph index (``G`` + author + counterparty, one key per pair that signed a
loan, written with each ``loan.agreement`` entry).

Promises:

- ``of(author)`` answers from a walk at most ``REFRESH_S`` old, or made after the last
  agreement this node stored (``changed``): cheap enough to ask for every offer that
  arrives. It may be asked from a worker thread (the store asks, through the node's
  interest, while it ingests a large batch there), so its age is read from
  ``time.monotonic``, not from trio.
- A walk reads at most ``MAX_KEYS`` keys and ``MAX_NEIGHBOURS`` edges of each.
"""

from __future__ import annotations

import time
from typing import Iterator

from protocol.lending.contract import GRAPH_INDEX
from protocol.lending.standing import DEPTH, hops_from, standing

from p2pnode.context import Context

REFRESH_S = 60.0


class Standing:
    def __init__(self, ctx: Context, depth: int = DEPTH) -> None:
        self.ctx = ctx
        self.depth = depth
        self._hops: dict[bytes, int] | None = None
        self._at = 0.0

    def _neighbours(self, key: bytes) -> Iterator[bytes]:
        n = len(GRAPH_INDEX) + 32
        for k in self.ctx.index.keys(GRAPH_INDEX + key):
            yield k[n:n + 32]

    def changed(self) -> None:
        """A loan agreement was stored: the next ``of`` walks again."""
        self._hops = None

    def hops(self) -> dict[bytes, int]:
        now = time.monotonic()
        if self._hops is None or now - self._at > REFRESH_S:
            self._hops, self._at = hops_from(self.ctx.me, self._neighbours, self.depth), now
        return self._hops

    def of(self, author: bytes) -> int:
        """``author``'s standing in this node's eyes (0: a stranger)."""
        return standing(self.hops().get(author), self.depth)
