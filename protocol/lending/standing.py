"""Standing: how near an author is to the viewer in the graph of countersigned loans.

Keys cost nothing, so nothing a stranger says about itself can earn it a place: not its
chain's length, not its age, not loans between keys it holds. What the viewer can verify
is who countersigned a loan with whom, and where that is from itself. The anchor is
Secure Scuttlebutt's replication by hops in the follow graph; here an edge is a loan
contract both keys signed (a ``loan.agreement`` entry, whose validator checks both
signatures), which no key can make alone.

Rules of this file:

1. ``hops_from(me, neighbours, depth)`` is a breadth-first walk from ``me`` over
   ``neighbours(key)`` (the keys that signed a loan with ``key``), ``depth`` steps at
   most, visiting at most ``max_keys`` keys and reading at most ``max_neighbours`` of
   each: the answer is ``{key: hops}`` for every key reached, ``me`` at 0.
2. ``standing(hops, depth)`` is ``depth + 1 - hops`` for a key reached (so ``me`` has
   ``depth + 1``, its own counterparties ``depth``), and 0 for a key not reached: a
   stranger.
3. So a ring of fresh keys that lend to each other gains nothing in the viewer's eyes
   unless one of them signed a loan with a key already within ``depth - 1`` hops, and
   then only the keys within ``depth`` hops of the viewer gain, each less the further
   it is: what an attacker gains is bounded by its real loans with honest keys (at most
   ``1 + max_neighbours`` keys for each, at depth 2), not by how many keys it makes. A
   viewer that lends to a key vouches a little for that key's own counterparties: that
   is what depth 2 means. (Whether those loans were repaid is credit's to weigh; this is
   only who is known.)
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable

DEPTH = 2
"""Hops from the viewer at which keys still have standing (its counterparties' counterparties)."""
MAX_KEYS = 10_000
"""Keys one walk visits at most."""
MAX_NEIGHBOURS = 1_000
"""Neighbours one walk reads of each key at most."""


def hops_from(me: bytes, neighbours: Callable[[bytes], Iterable[bytes]], depth: int = DEPTH, *,
              max_keys: int = MAX_KEYS, max_neighbours: int = MAX_NEIGHBOURS) -> dict[bytes, int]:
    """Rule 1: ``{key: hops}`` of every key within ``depth`` hops of ``me``."""
    if depth < 0 or max_keys < 1 or max_neighbours < 0:
        raise ValueError("depth >= 0, max_keys >= 1 and max_neighbours >= 0")
    hops = {me: 0}
    queue = deque([me])
    while queue and len(hops) < max_keys:
        key = queue.popleft()
        if hops[key] == depth:
            continue
        for n, other in enumerate(neighbours(key)):
            if n >= max_neighbours or len(hops) >= max_keys:
                break
            if other not in hops:
                hops[other] = hops[key] + 1
                queue.append(other)
    return hops


def standing(hops: int | None, depth: int = DEPTH) -> int:
    """Rule 2: the standing of a key ``hops`` away (None: not reached)."""
    return 0 if hops is None or hops > depth else depth + 1 - hops
