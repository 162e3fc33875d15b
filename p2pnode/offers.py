"""The offer book on the running node: offers and requests received by gossip or made
here, kept until they expire or are cancelled, and the ``offer.*`` control methods.

Store keys (docs/architecture.md, "Store"):

    b"O" + id(32)                  -> offer envelope bytes
    b"X" + expires(8) + id(32)     -> b"" (expiry index: purging reads only what expired)
    b"C" + offer id(32)            -> cancellation envelope bytes (kept even if the offer
                                      has not arrived yet, so that it never will)

Promises: an offer in the book verified (protocol/offer.py), is not expired when it came,
and has no cancellation; each change is one write batch. The book holds at most
``MAX_BOOK`` offers and ``MAX_PER_AUTHOR`` live ones per author. Gossip is best effort, so
the node publishes its own live offers again every ``REPUBLISH_S`` seconds and soon
after a peer connects.
"""

from __future__ import annotations

import logging
import struct
from typing import Any

import trio

from protocol import wire
from protocol.envelope import open_envelope
from protocol.errors import ProtocolError
from protocol.keys import public_key_from_peer_id
from protocol.money import MoneyError, parse_amount, parse_rate
from protocol.offer import Offer, cancel_of, make_cancel, make_offer, matches, offer_json, offer_of, parse_book_message

from .errors import ApiError, bad_params, id_prefix, unique

log = logging.getLogger("p2pnode.offers")

P_OFFER, P_EXPIRY, P_CANCEL = b"O", b"X", b"C"
MAX_BOOK = 10_000
MAX_PER_AUTHOR = 100
REPUBLISH_S = 30.0
JOIN_DELAY_S = 1.0  # after a peer connects, so that the gossip mesh includes it
DEFAULT_EXPIRY_S = 7 * 24 * 3600
_U64 = struct.Struct(">Q")


class OfferService:
    """The offer book of a ``Node``."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._soon = False
        self._book: dict[bytes, Offer] | None = None  # the stored offers, verified once, in memory

    @property
    def store(self) -> Any:
        return self.node.store

    def now_ms(self) -> int:
        return self.node.loans.now_ms()

    # -- the book ----------------------------------------------------------------------

    @property
    def book(self) -> dict[bytes, Offer]:
        """Offers by id: the store's ``O`` records, read (and verified) once per run."""
        if self._book is None:
            book = {}
            for k, v in self.store.scan_raw(P_OFFER):
                try:
                    book[k[1:]] = offer_of(open_envelope(v))
                except ProtocolError as e:  # a damaged record is left out, and said so
                    log.warning("stored offer %s unreadable: %s", k[1:].hex()[:16], e.message)
            self._book = book
        return self._book

    def get(self, offer_id: bytes) -> Offer | None:
        """The offer with this id if the book holds it (cancelled offers are removed)."""
        return self.book.get(offer_id)

    def all(self) -> list[Offer]:
        return list(self.book.values())

    def live(self) -> list[Offer]:
        now = self.now_ms()
        return [o for o in self.all() if o.expires > now]

    def find(self, ref: Any) -> Offer:
        """The offer an id or unique id prefix (8+ hex digits) names; ``ApiError`` if none or several."""
        ref = id_prefix(ref, "an offer id")
        return unique([o for o in self.all() if o.id.hex().startswith(ref)], ref, "offer or request", "unknown_offer")

    def add(self, data: bytes) -> str:
        """Take one offers-topic document into the book: ``added``, ``duplicate``,
        ``cancelled`` (a cancellation stored, its offer removed if held) or a refusal
        raised as ``ApiError`` (``offer_expired``, ``offer_cancelled``, ``book_full``)."""
        item = parse_book_message(data)
        if isinstance(item, dict):
            return self._cancel(item, data)
        o = item
        if o.id in self.book:
            return "duplicate"
        if o.expires <= self.now_ms():
            raise ApiError("the offer has expired", code="offer_expired")
        c = self.store.get_raw(P_CANCEL + o.id)
        if c is not None and cancel_of(open_envelope(c))["author"] == o.author:
            raise ApiError("the offer was cancelled", code="offer_cancelled")
        held = self.all()
        if len(held) >= MAX_BOOK:
            raise ApiError(f"the offer book holds {MAX_BOOK} offers", code="book_full")
        now = self.now_ms()
        if sum(1 for x in held if x.author == o.author and x.expires > now) >= MAX_PER_AUTHOR:
            raise ApiError(f"the author has {MAX_PER_AUTHOR} live offers already", code="too_many_offers")
        self.store.put_raw([(P_OFFER + o.id, o.envelope), (P_EXPIRY + _U64.pack(o.expires) + o.id, b"")], sync=False)
        self.book[o.id] = o
        return "added"

    def _cancel(self, doc: dict, data: bytes) -> str:
        offer_id = doc["offer"]
        if self.store.get_raw(P_CANCEL + offer_id) is not None:
            return "duplicate"
        o = self.get(offer_id)
        if o is not None and o.author != doc["author"]:
            raise ApiError("a cancellation by someone other than the offer's author", code="not_yours")
        puts = [(P_CANCEL + offer_id, data)]
        deletes = [] if o is None else [P_OFFER + o.id, P_EXPIRY + _U64.pack(o.expires) + o.id]
        self._write(puts, deletes)
        self.book.pop(offer_id, None)
        return "cancelled"

    def _write(self, puts: list, deletes: list) -> None:
        import plyvel

        from .store import _wrap_io

        try:
            with self.store.db.write_batch(sync=False, transaction=True) as wb:
                for k, v in puts:
                    wb.put(k, v)
                for k in deletes:
                    wb.delete(k)
        except plyvel.Error as e:
            raise _wrap_io(e, self.store.path) from None

    def purge(self, limit: int = 1000) -> int:
        """Remove up to ``limit`` expired offers (their cancellations go with them)."""
        now = self.now_ms()
        gone = []
        for k, _ in self.store.scan_raw(P_EXPIRY)[:limit]:
            if _U64.unpack_from(k, 1)[0] > now:
                break
            gone.append(k)
        if gone:
            self._write([], [k for g in gone for k in (g, P_OFFER + g[9:], P_CANCEL + g[9:])])
            for g in gone:
                self.book.pop(g[9:], None)
        return len(gone)

    # -- gossip ------------------------------------------------------------------------

    async def on_gossip(self, data: bytes) -> None:
        try:
            outcome = self.add(data)
        except ApiError as e:
            self.node.count(f"offers.refused.{e.code}")
            return
        self.node.count(f"offers.{outcome}")

    def peer_joined(self) -> None:
        """Publish our live offers again shortly: the new peer may have missed them."""
        if not self._soon:
            self._soon = True
            self.node._nursery.start_soon(self._republish_soon)

    async def _republish_soon(self) -> None:
        await trio.sleep(JOIN_DELAY_S)
        self._soon = False
        await self.republish()

    async def republish(self) -> None:
        me = self.node.key.public_key
        for o in self.live():
            if o.author == me:
                await self.node._publish(wire.TOPIC_OFFERS, o.envelope)

    async def loop(self) -> None:
        """Every ``REPUBLISH_S``: purge what expired, publish our live offers again."""
        while True:
            await trio.sleep(REPUBLISH_S)
            try:
                self.purge()
                await self.republish()
            except Exception:
                log.exception("offer book upkeep failed")

    # -- control methods ---------------------------------------------------------------

    async def create(self, p: dict) -> dict:
        side = p.get("side", "lend")
        if side not in ("lend", "borrow"):
            raise bad_params('"side" is "lend" or "borrow"')
        currency = p.get("currency")
        try:
            if p.get("amount") is not None:
                lo = hi = parse_amount(p["amount"], currency)
            else:
                lo, hi = parse_amount(p.get("min_amount"), currency), parse_amount(p.get("max_amount"), currency)
            rate = parse_rate(p.get("rate"))
            late_fee = parse_amount(p.get("late_fee") or "0", currency)
        except MoneyError as e:
            raise ApiError(e.message, code=e.code) from None
        ttl = p.get("expires_in_s", DEFAULT_EXPIRY_S)
        if not isinstance(ttl, int) or not 1 <= ttl <= 90 * 24 * 3600:
            raise bad_params('"expires_in_s" is 1 to 7776000 seconds')
        ints = {k: p.get(k, d) for k, d in (("grace_days", 5), ("default_days", 90), ("period_days", None))}
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in ints.values()):
            raise bad_params('"grace_days", "default_days" and "period_days" are integers')
        now = self.now_ms()
        try:
            env = make_offer(self.node.key, side=side, currency=currency, min_amount=lo, max_amount=hi, rate_bp=rate,
                             term=p.get("term"), schedule=p.get("schedule") or "annuity", late_fee=late_fee,
                             created=now, expires=now + ttl * 1000, min_grade=p.get("min_grade"), **ints)
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        self.add(env.raw)
        await self.node._publish(wire.TOPIC_OFFERS, env.raw)
        return offer_json(offer_of(env))

    async def cancel(self, p: dict) -> dict:
        o = self.find(p.get("id"))
        if o.author != self.node.key.public_key:
            raise ApiError("only its author cancels an offer", code="not_yours")
        env = make_cancel(self.node.key, o.id, self.now_ms())
        self.add(env.raw)
        await self.node._publish(wire.TOPIC_OFFERS, env.raw)
        return {"id": o.id.hex(), "cancelled": True}

    def list(self, p: dict) -> dict:
        currency = p.get("currency")
        try:
            amount = parse_amount(p["amount"], currency) if p.get("amount") is not None else None
            max_rate = parse_rate(p["max_rate"]) if p.get("max_rate") is not None else None
            min_rate = parse_rate(p["min_rate"]) if p.get("min_rate") is not None else None
            author = public_key_from_peer_id(p["author"]) if p.get("author") else None
        except MoneyError as e:
            raise ApiError(e.message, code=e.code) from None
        except ProtocolError as e:
            raise bad_params(f'"author": {e.message}') from None
        if p.get("own"):
            author = self.node.key.public_key
        got = [o for o in self.live() if matches(o, side=p.get("side"), currency=currency, amount=amount,
                                                  max_rate_bp=max_rate, min_rate_bp=min_rate, author=author)]
        got.sort(key=lambda o: (o.rate_bp, o.created))
        return {"offers": [offer_json(o) for o in got]}

    def methods(self) -> dict:
        async def create(p: dict) -> dict:
            return await self.create(p)

        async def cancel(p: dict) -> dict:
            return await self.cancel(p)

        async def list_(p: dict) -> dict:
            return self.list(p)

        async def show(p: dict) -> dict:
            return offer_json(self.find(p.get("id")))

        return {"offer.create": create, "offer.cancel": cancel, "offer.list": list_, "offer.show": show}
