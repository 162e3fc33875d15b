"""Lending's check of its own records, run by ``p2pnode ledger verify``
(p2pnode/ledger/verify.py): the offer book (invariant I7 of docs/architecture.md).

I7: every ``O`` value is a valid offer stored under its own id, every ``C`` value a valid
cancellation stored under the id of the offer it cancels and its author's key, and the
``X`` index holds exactly one key for each id that has an ``O`` or ``C`` record, and no
other.
No trio, no libp2p: the CLI runs it with no node.
"""

from __future__ import annotations

from typing import Callable

from protocol.envelope import open_envelope
from protocol.errors import ProtocolError
from protocol.lending.offer import cancel_of, offer_of

from p2pnode.ledger.store import Store

NAME = "lending"
P_OFFER, P_EXPIRY, P_CANCEL = b"O", b"X", b"C"


def check_book(store: Store, problem: Callable[[str, str], None]) -> None:
    records = store.records(NAME)
    held: set[bytes] = set()
    for prefix, what in ((P_OFFER, "offer"), (P_CANCEL, "cancellation")):
        for key, value in records.items(prefix):
            held.add(key[1:33])
            try:
                env = open_envelope(value)
                if prefix == P_OFFER:
                    ok = len(key) == 33 and offer_of(env).id == key[1:]
                else:
                    c = cancel_of(env)
                    ok = key[1:] in (c["offer"] + c["author"], c["offer"])  # (by-offer: before it was per author)
            except ProtocolError as e:
                problem("bad_offer_book", f"stored {what} {key[1:9].hex()} is invalid: {e.message}")
                continue
            if not ok:
                problem("bad_offer_book", f"stored {what} {key[1:9].hex()} is under another id")
    indexed: dict[bytes, int] = {}
    for key in records.keys(P_EXPIRY):
        offer_id = key[9:]
        indexed[offer_id] = indexed.get(offer_id, 0) + 1
        if len(key) != 41 or offer_id not in held:
            problem("bad_offer_book", f"expiry index key {key[9:17].hex()} names no offer or cancellation")
    for offer_id in held:
        n = indexed.get(offer_id, 0)
        if n != 1:
            problem("bad_offer_book", f"offer {offer_id[:8].hex()} has {n} expiry index keys, not 1")
