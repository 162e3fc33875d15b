"""Which chains a node holds: replication by interest, with a bounded budget for strangers.

Chains cost nothing to make, so a node that stored every chain a peer showed it was
flooded (at 35,000 one-entry chains every node idled at 40% CPU; issue 9). The anchor is
Secure Scuttlebutt's replication by hops in the follow graph. A node holds:

- its own chain, and every chain it holds already (a chain is never refused an entry);
- the chain of any author an extension gives standing (``standing(author) > 0``: for
  lending, its counterparties and the keys its trust reaches, p2pnode/lending/credit.py),
  always;
- the chains of strangers (standing 0) up to ``budget``: to take a new one beyond it,
  the stranger chain least recently stored to is dropped first (``Store.drop_chain``).
  Strangers are evicted, never the chains of authors with standing.

``admits(author)`` is asked by the store for an author whose chain it does not hold yet
(``Store.ingest(admit=...)``), under the writer's lock, perhaps in the worker thread of a
large batch; ``planner`` is asked by the syncer on trio's thread: a lock keeps the two
apart. What it keeps in memory is bounded by the budget.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Callable, Iterable

from protocol.keys import peer_id

from p2pnode.home import DEFAULT_STRANGER_CHAINS

log = logging.getLogger(__name__)

STRANGER_BUDGET = DEFAULT_STRANGER_CHAINS
"""Chains of strangers a node holds at most, unless ``[ledger] stranger_chains`` says otherwise."""


class Interest:
    def __init__(self, me: bytes, store: object, registry: object, standings: Iterable[Callable[[bytes], int]] = (),
                 budget: int = STRANGER_BUDGET, count: Callable[[str, int], None] = lambda n, k=1: None) -> None:
        if budget < 0:
            raise ValueError("budget >= 0")
        self.me, self.store, self.registry = me, store, registry
        self.standings = list(standings)
        self.budget = budget
        self._count = count
        self._strangers: OrderedDict[bytes, None] | None = None  # held strangers, least recently stored first
        self._lock = threading.Lock()  # (admits may run in the ingest's worker thread)

    def standing(self, author: bytes) -> int:
        """The highest standing any extension gives ``author`` (0: a stranger)."""
        best = 0
        for fn in self.standings:
            try:
                best = max(best, int(fn(author)))
            except Exception:  # an extension's bug: it vouches for no one
                log.exception("standing of %s failed", peer_id(author))
        return best

    def _held_strangers(self) -> OrderedDict[bytes, None]:
        if self._strangers is None:  # once per run: the chains held now, in no order of use
            self._strangers = OrderedDict((a, None) for a in self.store.heads()
                                          if a != self.me and self.standing(a) == 0)
        return self._strangers

    def stored(self, authors: Iterable[bytes]) -> None:
        """Entries of ``authors`` were stored: they are the most recently used."""
        with self._lock:
            strangers = self._held_strangers()
            for a in authors:
                if a in strangers:
                    strangers.move_to_end(a)

    def admits(self, author: bytes, evict: bool = True) -> bool:
        """Whether to take the first entries of ``author``'s chain (module docstring);
        without ``evict``, only if the budget has room (a sync pull: a chain a peer
        merely lists never pushes out what the node holds; fresh entries by gossip or a
        proposal, which show the author active now, may)."""
        with self._lock:
            return self._admits(author, evict)

    def _admits(self, author: bytes, evict: bool) -> bool:
        if author == self.me or self.standing(author) > 0:
            return True
        strangers = self._held_strangers()
        if self.budget == 0 or (not evict and len(strangers) >= self.budget):
            self._count("chains.refused.budget", 1)
            return False
        while len(strangers) >= self.budget:
            old, _ = strangers.popitem(last=False)
            if self.standing(old) > 0 or self.store.head(old) is None:
                continue  # (it gained standing since, or is gone: not a stranger's slot)
            dropped = self.store.drop_chain(old, self.registry)
            self._count("chains.evicted", 1)
            log.info("dropped the chain of stranger %s (%d entries) to make room", peer_id(old), dropped)
        strangers[author] = None
        return True

    def state(self) -> dict:
        """For ``status``: strangers' chains held and the budget."""
        with self._lock:
            return {"held": len(self._held_strangers()), "budget": self.budget}

    def planner(self) -> Callable[[bytes], bool]:
        """For one sync pull's plan: whether to pull the chain of an author the node holds
        none of, counting the strangers this plan takes against the room left, so that
        the pull never brings more than the store will admit."""
        with self._lock:
            strangers = self._held_strangers()
            for a in [a for a in strangers if self.standing(a) > 0]:  # (vouched for since: no stranger's slot)
                del strangers[a]
            room = [self.budget - len(strangers)]

        def new_chain(author: bytes) -> bool:
            if author == self.me or self.standing(author) > 0:
                return True
            if room[0] <= 0:
                return False
            room[0] -= 1
            return True

        return new_chain
