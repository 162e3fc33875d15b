"""Trust: how much of the viewer's trust reaches a key through loans that were really repaid.

Keys cost nothing, so a key's own history proves nothing until the viewer can tie it to
itself: a ring of fresh keys can lend to and repay each other without end, and every
document in it is validly signed. What a ring cannot make is a repaid loan with a key the
viewer already trusts. So trust starts at the viewer and flows along repaid loans only.

The walk: personalized random walks with restart, as in MeritRank (Nasrulin, Ishmaev,
Pouwelse 2022), computed exactly and deterministically by forward push (Andersen, Chung,
Lang 2006) in integer arithmetic. A walker starts at the viewer; at each key it stops
with probability ``alpha`` (transitivity decay: trust fades with every hop), or else moves
to a neighbour with probability proportional to the repaid loans between them. A key's
*mass* is the share of walkers that stop at it, in units of ``SCALE``.

Why walks and not TrustChain's NetFlow max-flow: max-flow bounds what each identity
behind an attack edge gets (the cut), but one max-flow per identity lets every one of
them get the whole cut again, so 100 identities behind one real edge would each look as
trusted as the one edge allows. Walks conserve mass: whatever reaches a set of keys
crossed its boundary, so the *sum* over all of an attacker's identities is bounded by its
real edges (rule 4), whatever their number. Walks are also cheap to bound (rule 2) and
need one pass for every key, where max-flow needs one per target.

Rules of this file:

1. The graph is undirected: ``neighbours(key)`` gives ``(other, weight)`` pairs, the
   weight being the number of loans between the two keys that were repaid (either was
   lender), capped at ``MAX_EDGE_WEIGHT`` so that one pair cannot pull all of a key's
   trust. Both sides performed in a repaid loan: the lender lent, the borrower repaid.
   Keys in ``excluded`` (forked keys) take no mass and pass none on.
2. ``walk(viewer, neighbours, ...)`` pushes mass from the viewer: a key whose residue is
   at least ``min_push`` keeps ``alpha`` of it and spreads the rest over its neighbours
   by weight (integer division; what the rounding drops, and what reaches a key with no
   neighbours, is lost: mass is never created). At most ``max_pushes`` pushes, at most
   ``max_keys`` keys hold mass or residue, at most ``max_neighbours`` neighbours read of
   a key (the heaviest, ties by key). The answer is ``{key: mass}`` for keys with mass
   > 0; it depends on the graph as a set (neighbours are sorted), not on list order.
3. ``weight_pm(mass)`` is a key's trust weight in per mille: ``min(1000, mass * 1000 //
   full_mass)``; the viewer's own weight is 1000 (``trust_weight``).
4. Bound. For any set S of keys not holding the viewer, the mass S gets is at most
   ``(1 - alpha) / alpha`` times the sum, over edges (h, s) from outside S into S, of
   ``mass(h) * w(h, s) / W(h)`` (W: the total weight h spreads over): every walker that
   stops in S entered it over such an edge. So a ring of keys with no repaid loan with
   anyone outside gets nothing, and what an attacker's identities get together is
   bounded by its real repaid loans with honest keys, not by their number
   (tests/protocol/test_trust.py checks both, and rule 2's losses only lower it).
5. What a lender vouches for. A key's mass is what stops at it; what it *passes on* to
   a neighbour is ``(1 - alpha) / alpha * mass * w / W`` (rule 4's term). So the weight
   of a loan repaid by ``key`` to ``lender`` is ``weight_pm`` of what ``lender`` passes
   to ``key``, shared among the repaid loans between them (``lender_weights``): a
   trusted key that lends to a hundred puppets passes each a hundredth, and the sum over
   all of a region's keys is bounded like its mass. The viewer's own loans weigh 1000
   each: it vouches for its own word. The masses must come from a walk that excludes
   ``key`` (a borrower never vouches for its own lenders: its puppets would hand its own
   trust back to it).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, Mapping

SCALE = 1_000_000_000
"""All the viewer's trust: the masses of one walk sum to at most this."""
ALPHA_PM = 200
"""Per mille of a key's residue that stops there (transitivity decay)."""
MIN_PUSH = 50_000
"""A residue below this (5e-5 of the whole, a twentieth of ``FULL_MASS``) is not pushed on."""
FULL_MASS = SCALE // 1000
"""The mass at which a key's weight is full: 0.1 % of the viewer's trust."""
MAX_PUSHES = 200_000
MAX_KEYS = 20_000
MAX_NEIGHBOURS = 1_000
MAX_EDGE_WEIGHT = 5

Neighbours = Callable[[bytes], Iterable[tuple[bytes, int]]]


def walk(viewer: bytes, neighbours: Neighbours, *, excluded: frozenset[bytes] | set[bytes] = frozenset(),
         alpha_pm: int = ALPHA_PM, min_push: int = MIN_PUSH, max_pushes: int = MAX_PUSHES,
         max_keys: int = MAX_KEYS, max_neighbours: int = MAX_NEIGHBOURS) -> dict[bytes, int]:
    """Rule 2: the mass of every key the viewer's trust reaches, ``viewer`` included."""
    if not 0 < alpha_pm <= 1000 or min_push < 1 or max_pushes < 0 or max_keys < 1 or max_neighbours < 0:
        raise ValueError("0 < alpha_pm <= 1000, min_push >= 1, max_pushes >= 0, max_keys >= 1, max_neighbours >= 0")
    if viewer in excluded:
        return {}
    mass: dict[bytes, int] = {}
    residue: dict[bytes, int] = {viewer: SCALE}
    queue = deque([viewer])
    queued = {viewer}
    known = {viewer}  # every key that held mass or residue
    pushes = 0
    read: dict[bytes, tuple[list[tuple[bytes, int]], int]] = {}  # a key's edges, read once a walk
    while queue and pushes < max_pushes:
        key = queue.popleft()
        queued.discard(key)
        r = residue.pop(key, 0)
        if r < min_push:
            if r:
                residue[key] = r  # (kept: more may arrive and push it over)
            continue
        pushes += 1
        kept = r * alpha_pm // 1000
        mass[key] = mass.get(key, 0) + kept
        if key not in read:
            edges = _heaviest(neighbours(key), excluded, max_neighbours)
            read[key] = edges, sum(w for _, w in edges)
        edges, total = read[key]
        if not total:
            continue  # a dead end: the rest is lost
        spread = r - kept
        for other, w in edges:
            add = spread * w // total
            if not add:
                continue
            got = residue.get(other)
            if got is None:
                if other not in known:
                    if len(known) >= max_keys:
                        continue  # rule 2: bounded keys, the mass is lost
                    known.add(other)
                got = add
            else:
                got += add
            residue[other] = got
            if got >= min_push and other not in queued:
                queue.append(other)
                queued.add(other)
    assert sum(mass.values()) <= SCALE, "mass is never created"
    return {k: v for k, v in mass.items() if v > 0}


def _heaviest(edges: Iterable[tuple[bytes, int]], excluded: frozenset[bytes] | set[bytes],
              limit: int, cap: bool = True) -> list[tuple[bytes, int]]:
    """Rule 1 and 2: one entry per neighbour (weights of repeats add up, then capped unless
    ``cap`` is False), not excluded, the ``limit`` heaviest, ties by key; in key order."""
    merged: dict[bytes, int] = {}
    for n, (other, w) in enumerate(edges):
        if n >= 4 * MAX_NEIGHBOURS:  # a bounded read, whatever the caller hands over
            break
        if w > 0 and other not in excluded:
            merged[other] = merged.get(other, 0) + w
    top = MAX_EDGE_WEIGHT if cap else 1 << 62
    if len(merged) <= limit:
        return sorted((k, min(w, top)) for k, w in merged.items())
    ranked = sorted(((min(w, top), k) for k, w in merged.items()), key=lambda x: (-x[0], x[1]))
    return sorted(((k, w) for w, k in ranked[:limit]))


def weight_pm(mass: int, full_mass: int = FULL_MASS) -> int:
    """Rule 3: a key's trust weight in per mille from its mass."""
    if full_mass < 1:
        raise ValueError("full_mass >= 1")
    return min(1000, max(0, mass) * 1000 // full_mass)


def trust_weight(key: bytes, viewer: bytes, masses: Mapping[bytes, int], full_mass: int = FULL_MASS) -> int:
    """Rule 3: ``key``'s weight in the viewer's eyes (the viewer's own is 1000)."""
    return 1000 if key == viewer else weight_pm(masses.get(key, 0), full_mass)


def lender_weights(key: bytes, viewer: bytes, neighbours: Neighbours, masses: Mapping[bytes, int], *,
                   excluded: frozenset[bytes] | set[bytes] = frozenset(), alpha_pm: int = ALPHA_PM,
                   full_mass: int = FULL_MASS, max_neighbours: int = MAX_NEIGHBOURS) -> dict[bytes, int]:
    """Rule 5: the weight, per mille and per repaid loan, of each key ``key`` repaid loans
    to (``masses``: a walk that excludes ``key``; ``excluded``: the forked keys)."""
    out: dict[bytes, int] = {}
    for lender, count in _heaviest(neighbours(key), excluded, max_neighbours, cap=False):
        if lender == viewer:
            out[lender] = 1000
            continue
        mass = masses.get(lender, 0)
        if not mass:
            continue
        edges = _heaviest(neighbours(lender), excluded, max_neighbours)
        total = sum(w for _, w in edges)
        share = next((w for k, w in edges if k == key), 0)
        if total and share:
            passed = mass * (1000 - alpha_pm) * share // (alpha_pm * total)
            out[lender] = weight_pm(passed // count, full_mass)
    return out


def bound(viewer: bytes, region: set[bytes], neighbours: Neighbours, masses: dict[bytes, int],
          alpha_pm: int = ALPHA_PM, max_neighbours: int = MAX_NEIGHBOURS, min_push: int = MIN_PUSH,
          excluded: frozenset[bytes] | set[bytes] = frozenset()) -> int:
    """Rule 4: the most mass ``region`` can hold, from the edges into it and the masses
    of their outer ends (``masses`` of the same walk, with the same parameters), plus
    what integer rounding may add: under ``1000 / alpha_pm + 1`` units a push, and a key
    is pushed at most ``mass // (min_push * alpha_pm // 1000)`` times. ``viewer`` must be
    outside the region."""
    assert viewer not in region
    inflow = 0
    outside = {k for k in masses if k not in region}
    for h in outside:
        edges = _heaviest(neighbours(h), excluded, max_neighbours)
        total = sum(w for _, w in edges)
        into = sum(w for k, w in edges if k in region)
        if total and into:
            # all h ever spreads is mass(h) / alpha * (1 - alpha); the share into the region
            inflow += -(-masses[h] * (1000 - alpha_pm) * into // (alpha_pm * total))
            pushes = masses[h] // max(1, min_push * alpha_pm // 1000) + 1
            inflow += pushes * (1000 // alpha_pm + 2)
    return inflow


class TrustGraph:
    """The undirected graph of rule 1, built one repaid loan at a time: ``add(loan, a, b)``
    records that ``loan`` between ``a`` and ``b`` was repaid (once per loan id), and
    ``neighbours(key)`` is what ``walk`` reads. Holds at most ``max_loans`` loans: one more
    is refused (``add`` answers False), so memory is bounded whatever a peer sends."""

    def __init__(self, max_loans: int = 1_000_000) -> None:
        self.max_loans = max_loans
        self._loans: dict[bytes, tuple[bytes, bytes]] = {}
        self._adj: dict[bytes, dict[bytes, int]] = {}

    def __len__(self) -> int:
        return len(self._loans)

    def add(self, loan: bytes, a: bytes, b: bytes) -> bool:
        """Record a repaid loan; False if it was known already, joins a key to itself, or
        the graph is full."""
        if loan in self._loans or a == b or len(self._loans) >= self.max_loans:
            return False
        self._loans[loan] = (a, b)
        for x, y in ((a, b), (b, a)):
            row = self._adj.setdefault(x, {})
            row[y] = row.get(y, 0) + 1
        return True

    def has(self, loan: bytes) -> bool:
        return loan in self._loans

    def neighbours(self, key: bytes) -> list[tuple[bytes, int]]:
        return list(self._adj.get(key, {}).items())

    def keys(self) -> set[bytes]:
        return set(self._adj)
