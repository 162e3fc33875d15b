"""The offer book on the running node: offers and requests received by gossip or made
here, kept until they expire or are cancelled, and the ``offer.*`` control methods.

Keys in lending's record space (``Context.records``; docs/architecture.md, "Store"):

    b"O" + id(32)                  -> offer envelope bytes
    b"C" + offer id(32) + author(32) -> a cancellation of that offer by that author (kept
                                      even if the offer has not arrived yet, so that it
                                      never will; one per author, so that a stranger's
                                      never takes the place of the author's)
    b"X" + until(8) + id(32)       -> b"": the expiry index. One key per id that has an
                                      ``O`` or ``C`` record; at ``until`` (ms) they all go,
                                      so purging reads only what is due.

Whether an offer or a cancellation enters the book is ``protocol.lending.book.admit``'s
to decide (its limits and rules); this module keeps the records and applies the decision
in one write batch. Every ``REPUBLISH_S`` the node purges what is due (at most
``PURGE_BATCH`` ids a pass) and publishes its own live offers again, and does so too
``JOIN_DELAY_S`` after a peer connects: gossip is best effort (republish.py).
"""

from __future__ import annotations

import logging
import struct
from typing import Any


from protocol.envelope import open_envelope
from protocol.errors import ProtocolError
from protocol.keys import public_key_from_peer_id
from protocol.lending.money import MoneyError, parse_amount, parse_rate
from protocol.lending.policy import terms_of_offer
from protocol.lending.book import LIMITS, Add, Cancel, Duplicate, Limits, Refresh, Refuse, admit
from protocol.lending.offer import (
    MAX_OFFER_MS, SIDES, TOPIC_OFFERS, Offer, cancel_of, is_live, make_cancel, make_offer, matches, offer_json,
    offer_of, parse_book_message,
)

from p2pnode.context import Context
from p2pnode.errors import ApiError, bad_params, id_prefix, unique
from p2pnode.lending.credit import Credit
from p2pnode.lending.fills import fill_now
from p2pnode.lending.republish import Republisher

log = logging.getLogger(__name__)

P_OFFER, P_EXPIRY, P_CANCEL = b"O", b"X", b"C"

PURGE_BATCH = 1000
MAX_TAKEN_MEMO = 20_000  # offer ids remembered as taken in full (the book holds at most 10,000 offers)
_U64 = struct.Struct(">Q")


def _xkey(until: int, offer_id: bytes) -> bytes:
    return P_EXPIRY + _U64.pack(until) + offer_id


def _until(xkey: bytes) -> int:
    return _U64.unpack_from(xkey, 1)[0]


class OfferBook:
    """The offer book of a node running lending."""

    def __init__(self, ctx: Context, standing: Credit | None = None, policy: Any = None) -> None:
        self.ctx = ctx
        self.standing = standing or Credit(ctx)
        self.policy = policy  # the policy in force (policies.PolicyInForce): checks this node's own offers
        self.records = ctx.records
        self.republisher = Republisher(ctx, TOPIC_OFFERS, self._own_live, self.purge, "offer book")
        self._loaded = False
        # the store's records, read (and verified) once per run, then kept in step with it
        self._book: dict[bytes, Offer] = {}
        self._cancels: dict[bytes, set[bytes]] = {}  # offer id -> the authors of its cancellations
        self._xkeys: dict[bytes, bytes] = {}  # offer id -> its X key
        self.limits: Limits = LIMITS
        self._taken: set[bytes] = set()  # ids of held offers seen taken in full (taken_in_full)

    def now_ms(self) -> int:
        return self.ctx.clock.now_ms()

    # -- the book ----------------------------------------------------------------------

    def _load(self) -> None:
        if self._loaded:
            return
        for k, v in self.records.items(P_OFFER):
            try:
                self._book[k[1:]] = offer_of(open_envelope(v))
            except ProtocolError as e:  # a damaged record is left out, and said so
                log.warning("stored offer %s unreadable: %s", k[1:].hex()[:16], e.message)
        old_keys = []
        for k, v in self.records.items(P_CANCEL):
            try:
                author = cancel_of(open_envelope(v))["author"]
            except ProtocolError as e:
                log.warning("stored cancellation %s unreadable: %s", k[1:33].hex()[:16], e.message)
                continue
            self._cancels.setdefault(k[1:33], set()).add(author)
            if len(k) == 33:  # one cancellation per offer, as a version before kept them
                old_keys.append((k, v, author))
        if old_keys:
            self.records.write([(k + a, v) for k, v, a in old_keys], [k for k, _, _ in old_keys])
        for k in self.records.keys(P_EXPIRY):
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

    def held_until(self, offer_id: bytes) -> int | None:
        """When (ms) the book may purge this offer's records unless its author refreshes
        it (book.py rule 4), or None if it holds none."""
        self._load()
        key = self._xkeys.get(offer_id)
        return None if key is None or offer_id not in self._book else _until(key)

    def all(self) -> list[Offer]:
        return list(self.book.values())

    def find(self, ref: Any) -> Offer:
        """The offer an id or unique id prefix (8+ hex digits) names; ``ApiError`` if none or several."""
        ref = id_prefix(ref, "offer or request")
        return unique([o for o in self.all() if o.id.hex().startswith(ref)], ref, "offer or request", "unknown_offer")

    def live(self) -> list[Offer]:
        now = self.now_ms()
        return [o for o in self.all() if is_live(o, now)]

    def taken_in_full(self, offer: Offer) -> bool:
        """Whether the agreements of the author's chain that this node holds take all of
        ``offer`` (fills.py). Remembered once true: parts are never taken back."""
        if offer.id in self._taken:
            return True
        if not fill_now(self.ctx, offer).exhausted:
            return False
        if len(self._taken) >= MAX_TAKEN_MEMO:
            self._taken.clear()  # (a memory only: what it forgets is read again)
        self._taken.add(offer.id)
        return True

    def cancelled_by(self, offer_id: bytes, author: bytes) -> bool:
        """Whether the book keeps a cancellation of ``offer_id`` signed by ``author``."""
        self._load()
        return author in self._cancels.get(offer_id, ())

    def orphans(self) -> int:
        """How many cancellations the book keeps of offers it does not hold."""
        self._load()
        return sum(len(a) for i, a in self._cancels.items() if i not in self._book)

    # -- taking documents in -----------------------------------------------------------------

    def add(self, data: bytes) -> str:
        """Take one offers-topic document into the book: ``added`` (perhaps in place of a
        weaker author's offer, book.py rule 5), ``refreshed`` (held already: kept longer),
        ``duplicate``, ``cancelled`` (a cancellation stored, its offer removed if held), or a refusal
        raised as ``ApiError`` (``book.admit``'s) or ``ProtocolError`` (it does not verify)."""
        item = parse_book_message(data)
        self._load()
        d = admit(item, _View(self), self.now_ms(), self.limits)
        if isinstance(d, Refuse):
            raise ApiError(d.message, code=d.code)
        if isinstance(d, Add):
            evicted = []
            if d.evicts is not None:  # its X key goes too, unless it must purge cancellations kept of it (I7)
                evicted.append(P_OFFER + d.evicts)
                if not self._cancels.get(d.evicts):
                    evicted.append(self._xkeys.pop(d.evicts))
            self._write(item.id, d.until, [(P_OFFER + item.id, item.envelope)], evicted)
            if d.evicts is not None:
                self._book.pop(d.evicts)
                self.ctx.count("offers.evicted")
            self._book[item.id] = item
        elif isinstance(d, Refresh):
            self._write(item.id, d.until, [])
        elif isinstance(d, Cancel):
            self._write(d.offer_id, d.until, [(P_CANCEL + d.offer_id + d.author, data)],
                        [P_OFFER + d.offer_id] if d.removes else [])
            self._cancels.setdefault(d.offer_id, set()).add(d.author)
            self._book.pop(d.offer_id, None)
        else:
            assert isinstance(d, Duplicate), d
        return d.outcome

    def _write(self, offer_id: bytes, until: int, puts: list, deletes: list = ()) -> None:
        """One batch: ``puts`` and ``deletes``, and the id's X key moved to ``until`` (or
        later, if it was due later already)."""
        old = self._xkeys.get(offer_id)
        if old is not None:
            until = max(until, _until(old))
        key = _xkey(until, offer_id)
        if key == old and not puts and not deletes:
            return  # (a refresh that moves nothing: no write)
        self.records.write([*puts, (key, b"")], [*deletes, *([old] if old not in (None, key) else [])],
                           sync=False)
        self._xkeys[offer_id] = key

    def purge(self, limit: int = PURGE_BATCH) -> int:
        """Remove the records of up to ``limit`` ids that are due (expired offers, and
        cancellations that can no longer cancel anything); how many went."""
        self._load()
        now = self.now_ms()
        gone: list[bytes] = []
        keys = self.records.keys(P_EXPIRY)
        try:
            for k in keys:
                if len(gone) >= limit or _until(k) > now:
                    break
                gone.append(k)
        finally:
            keys.close()
        if gone:
            cancels = [P_CANCEL + g[9:] + a for g in gone for a in self._cancels.get(g[9:], ())]
            self.records.write([], [k for g in gone for k in (g, P_OFFER + g[9:])] + cancels, sync=False)
            for g in gone:
                for d in (self._book, self._cancels, self._xkeys):
                    d.pop(g[9:], None)
        return len(gone)

    # -- gossip ------------------------------------------------------------------------

    async def on_gossip(self, data: bytes, sender: bytes | None = None) -> None:
        self.ctx.count("offers.received")
        try:
            outcome = self.add(data)
        except (ApiError, ProtocolError) as e:
            self.ctx.count(f"offers.refused.{e.code}")
            return
        self.ctx.count(f"offers.{outcome}")

    def peer_joined(self) -> None:
        """Publish our live offers again shortly: the new peer may have missed them."""
        self.republisher.peer_joined()

    async def republish(self) -> None:
        await self.republisher.republish()

    async def loop(self) -> None:
        """Every ``REPUBLISH_S``: purge what expired, publish our live offers again."""
        await self.republisher.loop()

    def _own_live(self) -> list[bytes]:
        return [o.envelope for o in self.live() if o.author == self.ctx.me]

    # -- control methods ---------------------------------------------------------------

    async def create(self, p: dict) -> dict:
        """``offer.create``: ``p`` as checked by its declaration (p2pnode/lending/methods.py)."""
        side = p["side"]
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
        ttl = p["expires_in_s"]
        ints = {k: p[k] for k in ("grace_days", "default_days", "period_days")}
        now = self.now_ms()
        try:
            env = make_offer(self.ctx.key, side=side, currency=currency, min_amount=lo, max_amount=hi, rate_bp=rate,
                             term=p.get("term"), schedule=p.get("schedule") or "annuity", late_fee=late_fee,
                             created=now, expires=now + ttl * 1000, min_grade=p.get("min_grade"), **ints)
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        offer = offer_of(env)
        if self.policy is not None:  # this node's own policy on its own terms, before anyone sees them
            self.policy.refuse_terms(terms_of_offer(offer), "this offer" if side == "lend" else "this request")
        self.add(env.raw)
        await self.ctx.publish(TOPIC_OFFERS, env.raw)
        return offer_json(offer)

    async def cancel(self, ref: str) -> dict:
        o = self.find(ref)
        if o.author != self.ctx.me:
            raise ApiError("only its author cancels an offer", code="not_yours")
        await self.cancel_own(o.id)
        return {"id": o.id.hex(), "cancelled": True}

    async def cancel_own(self, offer_id: bytes) -> None:
        """Sign, store and gossip the cancellation of our own offer ``offer_id`` (a taken
        offer is consumed this way too: an internal step, not a call of the API)."""
        env = make_cancel(self.ctx.key, offer_id, self.now_ms())
        self.add(env.raw)
        await self.ctx.publish(TOPIC_OFFERS, env.raw)

    def list(self, p: dict) -> dict:
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
            author = self.ctx.me
        got = [o for o in self.live() if matches(o, side=p.get("side"), currency=currency, amount=amount,
                                                  max_rate_bp=max_rate, min_rate_bp=min_rate, author=author)]
        got.sort(key=lambda o: (o.rate_bp, o.created))
        forked = self.ctx.chains.forked_authors()
        return {"offers": [dict(offer_json(o), author_forked=o.author in forked, fill=fill_now(self.ctx, o).to_json())
                           for o in got]}


class _View:
    """The read-only view of the book that ``protocol.lending.book.admit`` decides on."""

    def __init__(self, book: OfferBook) -> None:
        self._b = book

    def held(self, offer_id: bytes) -> Offer | None:
        return self._b.book.get(offer_id)

    def cancelled(self, offer_id: bytes, author: bytes) -> bool:
        return self._b.cancelled_by(offer_id, author)

    def size(self) -> int:
        return len(self._b.book)

    def live(self, author: bytes, now_ms: int) -> int:
        return sum(1 for x in self._b.book.values()
                   if x.author == author and is_live(x, now_ms) and not self._b.taken_in_full(x))

    def orphans(self) -> int:
        return self._b.orphans()

    def standing(self, author: bytes) -> int:
        return self._b.standing.of(author)

    def own(self, author: bytes) -> bool:
        return author == self._b.ctx.me

    def weakest(self) -> tuple[bytes, int] | None:
        book = self._b.book
        if not book:
            return None
        o = min(book.values(), key=lambda o: (self.standing(o.author), -o.created, o.id))
        return o.id, self.standing(o.author)
