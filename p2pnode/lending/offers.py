"""The offer book on the running node: offers and requests received by gossip or made
here, kept until they expire or are cancelled, and the ``offer.*`` control methods.

Store keys (docs/architecture.md, "Store"):

    b"O" + id(32)                  -> offer envelope bytes
    b"C" + offer id(32)            -> cancellation envelope bytes (kept even if the offer
                                      has not arrived yet, so that it never will)
    b"X" + until(8) + id(32)       -> b"": the expiry index. One key per id that has an
                                      ``O`` or ``C`` record; at ``until`` (ms) both may go,
                                      so purging reads only what is due.

Rules (each change is one write batch):

1. An offer is added if it verifies (protocol/lending/offer.py), is new, has not expired, was
   not created more than ``MAX_SKEW_MS`` ahead of our clock, and has no cancellation by
   its author; ``until`` is its ``expires``.
2. A cancellation by the offer's author removes the offer; one by anyone else is
   refused (``not_yours``). For an offer not held yet the cancellation is kept (one per
   offer: a later one by another signer replaces it, so a stranger cannot take the place
   of the author's), if its ``created`` is within the last 90 days (``stale_cancel``
   otherwise: any offer it could cancel has expired) and not ahead of our clock; at most
   ``MAX_ORPHANS`` such are kept (``book_full``). Its ``until`` is the offer's
   ``expires`` if the offer is held (the offer is refused after that anyway), else
   ``created + 90 days`` (no offer cancelled after it was created outlives that).
3. The book holds at most ``MAX_BOOK`` offers and ``MAX_PER_AUTHOR`` live ones per
   author (``book_full``, ``too_many_offers``). Every ``REPUBLISH_S`` the node purges
   what is due (at most ``PURGE_BATCH`` ids a pass) and publishes its own live offers
   again, and does so too ``JOIN_DELAY_S`` after a peer connects: gossip is best effort.
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
from protocol.lending.money import MoneyError, parse_amount, parse_rate
from protocol.lending.offer import (
    MAX_OFFER_MS, SIDES, Offer, cancel_of, is_live, make_cancel, make_offer, matches, offer_json, offer_of,
    parse_book_message,
)

from p2pnode.errors import ApiError, bad_params, id_prefix, unique
from p2pnode.ledger.store import P_CANCEL, P_EXPIRY, P_OFFER

log = logging.getLogger("p2pnode.offers")

MAX_BOOK = 10_000
MAX_PER_AUTHOR = 100
MAX_ORPHANS = 10_000
"""Cancellations kept for offers not (or no longer) in the book."""
MAX_SKEW_MS = 24 * 3600 * 1000
"""How far ahead of our clock an offer's or cancellation's ``created`` may be."""
PURGE_BATCH = 1000
REPUBLISH_S = 30.0
JOIN_DELAY_S = 1.0  # after a peer connects, so that the gossip mesh includes it
DEFAULT_EXPIRY_S = 7 * 24 * 3600
_U64 = struct.Struct(">Q")


def _xkey(until: int, offer_id: bytes) -> bytes:
    return P_EXPIRY + _U64.pack(until) + offer_id


def _until(xkey: bytes) -> int:
    return _U64.unpack_from(xkey, 1)[0]


class OfferService:
    """The offer book of a ``Node``."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self._soon = False
        self._loaded = False
        # the store's records, read (and verified) once per run, then kept in step with it
        self._book: dict[bytes, Offer] = {}
        self._cancels: dict[bytes, bytes] = {}  # offer id -> the cancellation's author
        self._xkeys: dict[bytes, bytes] = {}  # offer id -> its X key

    @property
    def store(self) -> Any:
        return self.node.store

    def now_ms(self) -> int:
        return self.node.loans.now_ms()

    # -- the book ----------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        for k, v in self.store.scan_raw(P_OFFER):
            try:
                self._book[k[1:]] = offer_of(open_envelope(v))
            except ProtocolError as e:  # a damaged record is left out, and said so
                log.warning("stored offer %s unreadable: %s", k[1:].hex()[:16], e.message)
        for k, v in self.store.scan_raw(P_CANCEL):
            try:
                self._cancels[k[1:]] = cancel_of(open_envelope(v))["author"]
            except ProtocolError as e:
                log.warning("stored cancellation %s unreadable: %s", k[1:].hex()[:16], e.message)
        for k in self.store.keys_raw(P_EXPIRY):
            self._xkeys[k[9:]] = k
        self._loaded = True
        # records written without an X key (by a version before it) get one, so they go too
        for i in (self._book.keys() | self._cancels.keys()) - self._xkeys.keys():
            o = self._book.get(i)
            self._write(i, o.expires if o else self.now_ms() + MAX_OFFER_MS, [])

    @property
    def book(self) -> dict[bytes, Offer]:
        """Offers by id (the store's ``O`` records)."""
        self._load()
        return self._book

    def get(self, offer_id: bytes) -> Offer | None:
        """The offer with this id if the book holds it: cancelled ones are removed, an
        expired one may linger until purged (check ``expires``, or ``protocol.offer.is_live``)."""
        return self.book.get(offer_id)

    def all(self) -> list[Offer]:
        return list(self.book.values())

    def live(self) -> list[Offer]:
        now = self.now_ms()
        return [o for o in self.all() if is_live(o, now)]

    def find(self, ref: Any) -> Offer:
        """The offer an id or unique id prefix (8+ hex digits) names; ``ApiError`` if none or several."""
        ref = id_prefix(ref, "an offer id")
        return unique([o for o in self.all() if o.id.hex().startswith(ref)], ref, "offer or request", "unknown_offer")

    def add(self, data: bytes) -> str:
        """Take one offers-topic document into the book: ``added``, ``duplicate``,
        ``cancelled`` (a cancellation stored, its offer removed if held), or a refusal
        raised as ``ApiError`` (rules 1 to 3) or ``ProtocolError`` (it does not verify)."""
        item = parse_book_message(data)
        if isinstance(item, dict):
            return self._cancel(item, data)
        o = item
        if o.id in self.book:
            return "duplicate"
        now = self.now_ms()
        if not is_live(o, now):
            raise ApiError("the offer has expired", code="offer_expired")
        if o.created > now + MAX_SKEW_MS:
            raise ApiError("the offer was created more than a day ahead of this node's clock", code="bad_time")
        if self._cancels.get(o.id) == o.author:
            raise ApiError("the offer was cancelled", code="offer_cancelled")
        if len(self.book) >= MAX_BOOK:
            raise ApiError(f"the offer book holds {MAX_BOOK} offers", code="book_full")
        if sum(1 for x in self.book.values() if x.author == o.author and is_live(x, now)) >= MAX_PER_AUTHOR:
            raise ApiError(f"the author has {MAX_PER_AUTHOR} live offers already", code="too_many_offers")
        self._write(o.id, o.expires, [(P_OFFER + o.id, o.envelope)])
        self._book[o.id] = o
        return "added"

    def _cancel(self, doc: dict, data: bytes) -> str:
        offer_id, author, created = doc["offer"], doc["author"], doc["created"]
        if self._cancels.get(offer_id) == author:
            return "duplicate"
        o = self.get(offer_id)
        now = self.now_ms()
        if o is not None and o.author != author:
            raise ApiError("a cancellation by someone other than the offer's author", code="not_yours")
        if created > now + MAX_SKEW_MS:
            raise ApiError("the cancellation was created more than a day ahead of this node's clock", code="bad_time")
        if o is None:
            if created + MAX_OFFER_MS <= now:
                raise ApiError("a cancellation older than any offer it could cancel", code="stale_cancel")
            if offer_id not in self._cancels and sum(1 for i in self._cancels if i not in self._book) >= MAX_ORPHANS:
                raise ApiError(f"{MAX_ORPHANS} cancellations of offers not held are kept already", code="book_full")
        until = created + MAX_OFFER_MS if o is None else o.expires
        self._write(offer_id, until, [(P_CANCEL + offer_id, data)], [] if o is None else [P_OFFER + offer_id])
        self._cancels[offer_id] = author
        self._book.pop(offer_id, None)
        return "cancelled"

    def _write(self, offer_id: bytes, until: int, puts: list, deletes: list = ()) -> None:
        """One batch: ``puts`` and ``deletes``, and the id's X key moved to ``until`` (or
        later, if it was due later already)."""
        old = self._xkeys.get(offer_id)
        if old is not None:
            until = max(until, _until(old))
        key = _xkey(until, offer_id)
        self.store.write_raw([*puts, (key, b"")], [*deletes, *([old] if old not in (None, key) else [])],
                             sync=False)
        self._xkeys[offer_id] = key

    def purge(self, limit: int = PURGE_BATCH) -> int:
        """Remove the records of up to ``limit`` ids that are due (expired offers, and
        cancellations that can no longer cancel anything); how many went."""
        self._load()
        now = self.now_ms()
        gone: list[bytes] = []
        keys = self.store.keys_raw(P_EXPIRY)
        try:
            for k in keys:
                if len(gone) >= limit or _until(k) > now:
                    break
                gone.append(k)
        finally:
            keys.close()
        if gone:
            self.store.write_raw([], [k for g in gone for k in (g, P_OFFER + g[9:], P_CANCEL + g[9:])], sync=False)
            for g in gone:
                for d in (self._book, self._cancels, self._xkeys):
                    d.pop(g[9:], None)
        return len(gone)

    # -- gossip ------------------------------------------------------------------------

    async def on_gossip(self, data: bytes) -> None:
        try:
            outcome = self.add(data)
        except (ApiError, ProtocolError) as e:
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
        _known(p, CREATE_PARAMS)
        side = p.get("side", "lend")
        if side not in SIDES:
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
        if type(ttl) is not int or not 1 <= ttl <= MAX_OFFER_MS // 1000:
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
        _known(p, {"id"})
        o = self.find(p.get("id"))
        if o.author != self.node.key.public_key:
            raise ApiError("only its author cancels an offer", code="not_yours")
        env = make_cancel(self.node.key, o.id, self.now_ms())
        self.add(env.raw)
        await self.node._publish(wire.TOPIC_OFFERS, env.raw)
        return {"id": o.id.hex(), "cancelled": True}

    def list(self, p: dict) -> dict:
        _known(p, LIST_PARAMS)
        if p.get("side") not in (None, *SIDES):
            raise bad_params('"side" is "lend" or "borrow"')
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
            _known(p, {"id"})
            return offer_json(self.find(p.get("id")))

        return {"offer.create": create, "offer.cancel": cancel, "offer.list": list_, "offer.show": show}


CREATE_PARAMS = {"side", "currency", "amount", "min_amount", "max_amount", "rate", "term", "period_days", "schedule",
                 "grace_days", "late_fee", "default_days", "min_grade", "expires_in_s"}
LIST_PARAMS = {"side", "currency", "amount", "max_rate", "min_rate", "author", "own"}


def _known(params: dict, names: set[str]) -> None:
    extra = set(params) - names
    if extra:
        raise bad_params(f"unknown params {sorted(extra)}; known: {sorted(names)}")
