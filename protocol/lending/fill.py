"""Fractional funding: an offer or request is filled in parts until it is used up.

Each part is its own countersigned contract (contract.py) naming the offer in its
``offer`` field; the offer's author is a party to every part. ``admit`` is a pure
function of the offer's bounds, the parts already agreed and the principal asked for:
no I/O, no clock, no store, so every node reading the same agreements computes the same
``funded`` and ``remaining``, and the author's node decides with the same rule it shows.

Rules of this file (docs/portfolio.md, "Fractional funding"):

1. The *parts* of an offer are the principals of the contracts taking it that its
   author countersigned (its ``loan.agreement`` entries with ``TAKEN_INDEX`` keys for
   the offer), in the order the author signed them. Each is an integer from 1 to
   ``money.MAX_AMOUNT`` minor units; there are at most ``MAX_PARTS``.
2. ``funded`` is the sum of the parts; ``remaining`` is ``max_amount - funded``, never
   below 0. An honest author's parts never sum past ``max_amount`` (rule 4); an offer
   whose parts do (a dishonest author, seen from elsewhere) or that has more than
   ``MAX_PARTS`` is shown ``overfilled``, with 0 remaining.
3. A part of ``principal`` is admitted unless the first of these applies (the table
   ``GATES``, in order; codes and messages are stable):

   ===================================  ===============  ===============================================
   admitted only if                     else             message
   ===================================  ===============  ===============================================
   principal is an int, 1 to            bad_amount       the principal is not 1 to MAX_AMOUNT minor units
   MAX_AMOUNT
   remaining > 0 and principal <=       offer_exhausted  {remaining} of {max_amount} remain
   remaining
   fewer than MAX_PARTS parts           too_many_parts   the offer is split into {MAX_PARTS} parts already
   principal >= min_amount, or          below_minimum    {principal} is below the minimum of {min_amount}
   principal == remaining                                 and does not take all that remains ({remaining})
   ===================================  ===============  ===============================================

   So the last part may be smaller than ``min_amount`` when it takes exactly what is
   left: a 25..1000 offer filled to 990 still takes a part of 10, and nothing is
   stranded. A part above ``max_amount`` is ``offer_exhausted`` too (it exceeds what
   remains even of an untouched offer).
4. Invariant: parts admitted one after another by ``admit``, each appended before the
   next decision, sum to at most ``max_amount`` whatever the order of the requests
   (``decide_in_order`` is that fold; a Hypothesis test feeds it every interleaving).

How the author's node must use it (the wiring is in p2pnode/lending/, not here):

- Decide in order under one lock. Every decision about an offer (the acceptor's
  ``countersign`` move on a ``ProposalReceived`` or ``OwnerAccepted``) takes one lock
  (per offer, or one for all offers), reads the parts from its own chain's
  ``TAKEN_INDEX`` keys for the offer, calls ``admit``, and on ``None`` appends the
  agreement before it releases the lock. A concurrent proposal waits for the lock and
  then sees the part just agreed.
- Durable with the countersignature. The part is counted from the write that records
  the agreement (``agreement_index`` adds its ``TAKEN_INDEX`` key in that same write),
  never from a separate counter: a node killed after the write counts it on restart,
  one killed before never signed. Nothing is reserved for a proposal that is held for
  review: ``admit`` runs again when the owner accepts (``OwnerAccepted``), and may then
  refuse with ``offer_exhausted``.
- The offer leaves the book (``ConsumeOffer``) only when ``remaining`` reaches 0; until
  then every node shows ``remaining`` and ``funded`` from the agreements it holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple, Protocol, Sequence

from .money import MAX_AMOUNT

MAX_PARTS = 10_000
"""The most contracts one offer or request is split into (rule 1)."""


class Fillable(Protocol):
    """What the rules read of an offer or request (offer.py's ``Offer`` is one)."""

    @property
    def min_amount(self) -> int: ...

    @property
    def max_amount(self) -> int: ...


@dataclass(frozen=True)
class Refusal:
    """A part not admitted: a stable code (``REFUSALS``) and a message."""

    code: str
    message: str


@dataclass(frozen=True)
class Fill:
    """How far an offer is filled (rule 2), as every node that holds its parts shows it."""

    min_amount: int
    max_amount: int
    funded: int
    remaining: int
    parts: int
    overfilled: bool

    @property
    def exhausted(self) -> bool:
        """Nothing is left to take: the offer leaves the book."""
        return self.remaining == 0

    @property
    def smallest(self) -> int:
        """The smallest part ``admit`` takes now (0 if none): ``min_amount``, or all
        that remains if that is less (rule 3)."""
        return min(self.min_amount, self.remaining)

    def to_json(self) -> dict[str, Any]:
        return {"min_amount": self.min_amount, "max_amount": self.max_amount, "funded": self.funded,
                "remaining": self.remaining, "parts": self.parts, "overfilled": self.overfilled,
                "exhausted": self.exhausted, "smallest": self.smallest}


def _check_bounds(offer: Fillable) -> tuple[int, int]:
    lo, hi = offer.min_amount, offer.max_amount
    if type(lo) is not int or type(hi) is not int or not 1 <= lo <= hi <= MAX_AMOUNT:
        raise ValueError(f"an offer's bounds are 1 <= min_amount <= max_amount <= {MAX_AMOUNT}: {lo!r}, {hi!r}")
    return lo, hi


def _check_part(part: Any) -> int:
    if type(part) is not int or not 1 <= part <= MAX_AMOUNT:
        raise ValueError(f"a part is 1 to {MAX_AMOUNT} minor units: {part!r}")
    return part


def fill_of(offer: Fillable, parts: Sequence[int]) -> Fill:
    """Rule 2: ``funded``, ``remaining`` and whether the offer is ``overfilled``. Reads at
    most ``MAX_PARTS + 1`` parts: more is overfilled, whatever they add up to."""
    lo, hi = _check_bounds(offer)
    count = len(parts)
    funded = sum(_check_part(p) for p in parts[:MAX_PARTS + 1])
    overfilled = funded > hi or count > MAX_PARTS
    return Fill(lo, hi, funded, 0 if overfilled else hi - funded, count, overfilled)


def funded(offer: Fillable, parts: Sequence[int]) -> int:
    """The sum of the parts agreed (rule 2)."""
    return fill_of(offer, parts).funded


def remaining(offer: Fillable, parts: Sequence[int]) -> int:
    """What is left to take (rule 2): ``max_amount - funded``, 0 if overfilled."""
    return fill_of(offer, parts).remaining


class _Ask(NamedTuple):
    fill: Fill
    principal: Any


class Gate(NamedTuple):
    """One row of rule 3's table: ``test`` must hold, else ``code`` and ``message``."""

    condition: str
    code: str
    message: str
    test: Callable[[_Ask], bool]


def _amount_ok(q: _Ask) -> bool:
    return type(q.principal) is int and 1 <= q.principal <= MAX_AMOUNT


GATES: tuple[Gate, ...] = (
    Gate("principal is an int, 1 to MAX_AMOUNT", "bad_amount",
         "the principal is not 1 to {max_total} minor units", _amount_ok),
    Gate("remaining > 0 and principal <= remaining", "offer_exhausted",
         "{remaining} of {max_amount} remain", lambda q: 0 < q.principal <= q.fill.remaining),
    Gate("fewer than MAX_PARTS parts", "too_many_parts",
         "the offer is split into {max_parts} parts already", lambda q: q.fill.parts < MAX_PARTS),
    Gate("principal >= min_amount, or principal == remaining", "below_minimum",
         "{principal} is below the minimum of {min_amount} and does not take all that remains ({remaining})",
         lambda q: q.principal >= q.fill.min_amount or q.principal == q.fill.remaining),
)
"""Rule 3, in order."""

REFUSALS = {g.code: g.condition for g in GATES}
"""Every code ``admit`` may refuse with, and the condition it broke."""


def admit(offer: Fillable, parts: Sequence[int], principal: int) -> Refusal | None:
    """Rule 3: None if a part of ``principal`` may be agreed after ``parts``, else the
    first ``Refusal`` of ``GATES``."""
    return admit_to(fill_of(offer, parts), principal)


def admit_to(fill: Fill, principal: int) -> Refusal | None:
    """``admit`` against a ``Fill`` already computed (the node may keep one per offer
    under its lock instead of summing the parts again)."""
    q = _Ask(fill, principal)
    for gate in GATES:
        if not gate.test(q):
            return Refusal(gate.code, gate.message.format(
                max_total=MAX_AMOUNT, remaining=fill.remaining, max_amount=fill.max_amount, max_parts=MAX_PARTS,
                principal=principal, min_amount=fill.min_amount))
    assert principal <= fill.remaining, "rule 4: an admitted part fits in what remains"
    return None


def with_part(fill: Fill, principal: int) -> Fill:
    """``fill`` after a part of ``principal`` that ``admit_to`` admitted is agreed."""
    assert admit_to(fill, principal) is None, "only an admitted part is added"
    f = Fill(fill.min_amount, fill.max_amount, fill.funded + principal, fill.remaining - principal, fill.parts + 1,
             False)
    assert f.funded + f.remaining == f.max_amount and f.remaining >= 0, "rule 4"
    return f


def decide_in_order(offer: Fillable, parts: Sequence[int],
                    requests: Iterable[int]) -> tuple[Fill, list[Refusal | None]]:
    """Rule 4 as the author's node runs it under its lock: each request in the order
    given is decided by ``admit`` and, if admitted, counted before the next. Returns
    the fill after all of them and each request's decision. Decides at most
    ``MAX_PARTS`` requests in one run."""
    fill = fill_of(offer, parts)
    decisions: list[Refusal | None] = []
    for principal in requests:
        if len(decisions) >= MAX_PARTS:
            raise ValueError(f"more than {MAX_PARTS} requests in one run")
        verdict = admit_to(fill, principal)
        if verdict is None:
            fill = with_part(fill, principal)
        decisions.append(verdict)
    return fill, decisions
