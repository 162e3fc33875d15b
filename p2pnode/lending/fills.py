"""Fractional funding on the running node (protocol/lending/fill.py): the parts of an offer
or request, read from the agreements its author's chain holds.

Promises:

- ``parts_of`` reads the principals of the contracts ``author`` countersigned taking
  ``offer_id`` (its ``loan.agreement`` entries, found by their ``TAKEN_INDEX`` keys), in
  the order of its chain, at most ``fill.MAX_PARTS + 1`` of them (one more than an honest
  offer has, so that an overfilled one shows as such). Every node holding the author's
  chain reads the same parts, so every book shows the same ``funded`` and ``remaining``.
- A part is counted from the very write that recorded the agreement (its index key is
  in that write), so a node killed after it counts the part at restart, and one killed
  before never signed it.
"""

from __future__ import annotations

from typing import Any

from protocol.envelope import peek_document
from protocol.errors import ProtocolError
from protocol.lending import fill
from protocol.lending.contract import TAKEN_INDEX

from p2pnode.context import Context


def parts_of(ctx: Context, offer_id: bytes, author: bytes) -> list[int]:
    """The principals of ``author``'s agreements taking ``offer_id``, by seq."""
    start = len(TAKEN_INDEX) + 64
    out: list[int] = []
    for n, k in enumerate(ctx.index.keys(TAKEN_INDEX + offer_id + author)):
        if n > fill.MAX_PARTS:
            break
        e = ctx.chains.entry(author, int.from_bytes(k[start:start + 8], "big"))
        if e is None:
            continue
        try:
            out.append(peek_document(e.body["contract"])["principal"])
        except (ProtocolError, KeyError, TypeError):  # (the kind's validator admitted it: not expected)
            continue
    return out


def fill_now(ctx: Context, offer: Any) -> fill.Fill:
    """The fill of ``offer`` as this node's store shows it now."""
    return fill.fill_of(offer, parts_of(ctx, offer.id, offer.author))


def refusal(ctx: Context, offer: Any, principal: int) -> tuple[str, str] | None:
    """``(code, message)`` if a part of ``principal`` does not fit what remains of
    ``offer`` (fill.py rule 3), else None."""
    r = fill.admit(offer, parts_of(ctx, offer.id, offer.author), principal)
    return None if r is None else (r.code, r.message)
