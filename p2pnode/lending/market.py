"""The secondary market on the running node: listings made here and listings gossiped by
others, ``loan sell``, ``loan buy`` and ``market list`` (protocol/lending/market.py has
the rules; docs/portfolio.md, "The secondary market").

Keys in lending's record space (``Context.records``):

    b"M" + listing id(32) -> listing envelope bytes: this node's own listings, kept
                             until they expire, are sold or withdrawn, and published
                             again every ``REPUBLISH_S`` (republish.py: gossip is best effort).

Listings of others are kept in memory only: their sellers publish them again.

Promises:

- A sale is made only by the holder's node, on a transfer the buyer signed first, when
  it carries out a listing of the holder's own that stands (``sale_fault`` and
  ``listing_fault`` find nothing), passes the claim after exactly the receipts that
  count now, and leaves the buyer the holder. The holder decides one sale at a time
  (``_sale_lock``), and the countersigned transfer is stored in its chain before the
  answer leaves: two buyers of one listing never both get the claim, since the second
  finds the seller no longer holds it.
- A transfer without a price is never accepted on its own (``no_price``): the claim
  changes hands only by a sale.
- The listings of others are bounded: ``MAX_LISTINGS`` in all, ``MAX_PER_SELLER`` per
  seller, one per seller and loan (the newest). When full, a listing whose seller has
  more standing (credit's) than the weakest seller held evicts one of that seller's; a
  stranger's listing never pushes out an established peer's.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

import trio

from protocol.envelope import countersign, open_envelope, peek_document, seal
from protocol.errors import ProtocolError
from protocol.keys import peer_id
from protocol.lending import agree, rules
from protocol.lending.contract import open_transfer
from protocol.lending.loanstate import SignedTransfer, loan_state
from protocol.lending.market import (
    MAX_LISTING_MS, TOPIC_MARKET, Listing, check_gossip, is_live, listing_fault, listing_of, listing_view,
    make_listing, sale_fault, sale_refusal, sale_transfer,
)
from protocol.lending.money import MoneyError, format_amount, parse_amount

from p2pnode.context import Context
from p2pnode.errors import ApiError, bad_params, id_prefix, unique
from p2pnode.lending.ask import Unreachable
from p2pnode.lending.countersigning import HEAD_SYNC_WAIT, Countersigning
from p2pnode.lending.credit import Credit
from p2pnode.lending.documents import LoanDocuments
from p2pnode.lending.loanview import LoanRecord
from p2pnode.lending.republish import Republisher
from p2pnode.net.sync import PeerMisbehaved

log = logging.getLogger(__name__)

P_LISTING = b"M"
MAX_LISTINGS = 5_000
"""Listings of others held at most (about 1 KiB each in memory)."""
MAX_PER_SELLER = 100
DEFAULT_DAYS = 7
"""How long a listing lives unless ``loan sell --days`` says otherwise (at most 30)."""
DEFAULT_LIST = 100
"""Listings ``market list`` shows unless asked for more (at most ``MAX_LIST``)."""
MAX_LIST = 1000
STALE_TRIES = 3
"""Times a buyer asks again after the seller said its copy of the loan was behind."""


class Market:
    """The secondary market of a node running lending."""

    def __init__(self, ctx: Context, docs: LoanDocuments, countersigning: Countersigning, credit: Credit) -> None:
        self.ctx = ctx
        self.docs = docs
        self.countersigning = countersigning
        self.credit = credit
        self.me = ctx.me
        self._own: dict[bytes, Listing] | None = None  # id -> listing: the store's M records
        self._others: dict[bytes, Listing] = {}  # id -> listing, bounded (module docstring)
        self._sale_lock = trio.Lock()  # one sale decided at a time
        self._views: dict[bytes, tuple[Any, dict | None]] = {}  # listing id -> (day and entries, view or None)
        self.republisher = Republisher(ctx, TOPIC_MARKET, self._own_live, self.purge, "market")

    def now_ms(self) -> int:
        return self.ctx.clock.now_ms()

    def today(self) -> date:
        return self.ctx.clock.today()

    # -- the listings ---------------------------------------------------------------------

    @property
    def own(self) -> dict[bytes, Listing]:
        if self._own is None:
            self._own = {}
            for k, v in self.ctx.records.items(P_LISTING):
                try:
                    self._own[k[1:]] = listing_of(open_envelope(v))
                except ProtocolError as e:  # a damaged record is left out, and said so
                    log.warning("stored listing %s unreadable: %s", k[1:].hex()[:16], e.message)
        return self._own

    def live(self) -> list[Listing]:
        """Every live listing held, own first, newest first within each."""
        now = self.now_ms()
        mine = sorted((x for x in self.own.values() if is_live(x, now)), key=lambda x: -x.created)
        theirs = sorted((x for x in self._others.values() if is_live(x, now)), key=lambda x: -x.created)
        return mine + theirs

    def _store_own(self, listing: Listing) -> None:
        """Keep ``listing`` as our own, replacing an older one of the same loan (one write)."""
        older = [i for i, x in self.own.items() if x.loan == listing.loan]
        self.ctx.records.write([(P_LISTING + listing.id, listing.envelope)], [P_LISTING + i for i in older])
        for i in older:
            del self.own[i]
        self.own[listing.id] = listing

    def _drop_own(self, loan: bytes) -> list[bytes]:
        gone = [i for i, x in self.own.items() if x.loan == loan]
        if gone:
            self.ctx.records.write([], [P_LISTING + i for i in gone])
            for i in gone:
                del self.own[i]
        return gone

    def purge(self) -> int:
        """Forget the listings that expired (our own records too); how many went."""
        now = self.now_ms()
        mine = [i for i, x in self.own.items() if not is_live(x, now)]
        if mine:
            self.ctx.records.write([], [P_LISTING + i for i in mine])
            for i in mine:
                del self.own[i]
        theirs = [i for i, x in self._others.items() if not is_live(x, now)]
        for i in theirs:
            del self._others[i]
        return len(mine) + len(theirs)

    def admit(self, listing: Listing) -> str:
        """Hold ``listing`` of another seller, within the bounds (module docstring):
        ``added``, ``duplicate``, ``stale`` (a newer one of that loan by that seller is
        held), ``replaced``, ``evicted`` (it took the place of a weaker seller's), or
        ``ApiError`` (``market_full``, ``seller_full``, ``listing_expired``)."""
        if not is_live(listing, self.now_ms()):
            raise ApiError("the listing has expired", code="listing_expired")
        if listing.id in self._others or listing.id in self.own:
            return "duplicate"
        same = [x for x in self._others.values() if x.seller == listing.seller and x.loan == listing.loan]
        if any(x.created >= listing.created for x in same):
            return "stale"
        for x in same:
            del self._others[x.id]
        if same:
            self._others[listing.id] = listing
            return "replaced"
        if sum(1 for x in self._others.values() if x.seller == listing.seller) >= MAX_PER_SELLER:
            raise ApiError(f"this node holds {MAX_PER_SELLER} listings of that seller", code="seller_full")
        outcome = "added"
        if len(self._others) >= MAX_LISTINGS:
            self.purge()
        if len(self._others) >= MAX_LISTINGS:
            weakest = min(self._others.values(), key=lambda x: (self.credit.standing(x.seller), -x.created))
            if self.credit.standing(weakest.seller) >= self.credit.standing(listing.seller):
                raise ApiError(f"the market holds {MAX_LISTINGS} listings of sellers with as much standing",
                               code="market_full")
            del self._others[weakest.id]
            outcome = "evicted"
        self._others[listing.id] = listing
        return outcome

    def find(self, ref: Any) -> Listing:
        """The live listing an id or unique id prefix names."""
        ref = id_prefix(ref, "listing")
        return unique([x for x in self.live() if x.id.hex().startswith(ref)], ref, "listing", "unknown_listing")

    # -- gossip ---------------------------------------------------------------------------

    async def on_gossip(self, data: bytes, sender: bytes | None = None) -> None:
        """A listing from the market topic (its validator has checked it already)."""
        self.ctx.count("market.received")
        try:
            listing = check_gossip(data)
            if listing.seller == self.me:
                return
            outcome = self.admit(listing)
        except (ApiError, ProtocolError) as e:
            self.ctx.count(f"market.refused.{e.code}")
            return
        self.ctx.count(f"market.{outcome}")
        if outcome in ("added", "replaced", "evicted") and self.docs.read(listing.loan).contract is None:
            self.ctx.peers.request_sync(listing.seller)  # the loan's documents, to price it

    def peer_joined(self) -> None:
        """Publish our live listings again shortly: the new peer may have missed them."""
        self.republisher.peer_joined()

    async def republish(self) -> None:
        await self.republisher.republish()

    async def loop(self) -> None:
        """Every ``REPUBLISH_S``: forget what expired, publish our live listings again."""
        await self.republisher.loop()

    def _own_live(self) -> list[bytes]:
        now = self.now_ms()
        return [x.envelope for x in self.own.values() if is_live(x, now)]

    # -- loan sell --------------------------------------------------------------------------

    async def sell(self, ref: Any, price: Any, days: int, withdraw: bool) -> dict:
        """``loan.sell``: list our loan at ``price`` for ``days`` days (a new listing of a
        loan replaces the old), or withdraw its listing."""
        rec = self.docs.find(ref)
        if withdraw:
            gone = self._drop_own(rec.loan)
            if not gone:
                raise ApiError("this node lists that loan nowhere", code="not_listed")
            return {"loan": rec.loan.hex(), "withdrawn": [i.hex() for i in gone]}
        if not isinstance(days, int) or not 1 <= days <= MAX_LISTING_MS // 86_400_000:
            raise bad_params(f'"days" is 1 to {MAX_LISTING_MS // 86_400_000}')
        currency = rec.contract["currency"]
        try:
            minor = parse_amount(price, currency)
        except MoneyError as e:
            raise ApiError(e.message, code=e.code) from None
        now = self.now_ms()
        try:
            env = make_listing(self.ctx.key, loan=rec.loan, price=minor, currency=currency, created=now,
                               expires=now + days * 86_400_000)
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        listing = listing_of(env)
        fault = listing_fault(listing, rec.contract, rec.state(self.today()), now)
        if fault is not None:
            raise ApiError(fault[1], code=fault[0])
        self._store_own(listing)
        await self.ctx.publish(TOPIC_MARKET, env.raw)
        self.ctx.count("market.listed")
        return self._view(listing, rec)

    # -- market list ------------------------------------------------------------------------

    def list(self, loan: Any = None, limit: int = DEFAULT_LIST) -> dict:
        """``market.list``: the live listings that stand for the loan as this node holds
        its documents, own first then newest first, at most ``limit`` (the rest counted in
        ``more``); the listings of loans not held here are only counted. A listing's view
        is computed once per day and set of its loan's entries (``_views``)."""
        today, now = self.today(), self.now_ms()
        shown, unknown, gone, more = [], 0, 0, 0
        for x in self.live():
            if loan is not None and not x.loan.hex().startswith(loan):
                continue
            if len(shown) >= limit:
                more += 1
                continue
            rec = self.docs.read(x.loan)
            if rec.contract is None:
                unknown += 1
                continue
            key = (today, frozenset((e.author, e.seq) for e in rec.entries))
            kept = self._views.get(x.id)
            if kept is None or kept[0] != key:
                fault = listing_fault(x, rec.contract, rec.state(today), now)
                kept = (key, None if fault is not None else self._view(x, rec))
                self._views[x.id] = kept
            if kept[1] is None or not is_live(x, now):
                gone += 1
                continue
            shown.append(kept[1])
        for i in [i for i in self._views if i not in self._others and i not in self.own]:
            del self._views[i]  # (bounded by the listings held)
        return {"as_of": today.isoformat(), "listings": shown, "unknown_loans": unknown, "not_standing": gone,
                "more": more}

    def _view(self, listing: Listing, rec: LoanRecord) -> dict:
        st = rec.state(self.today())
        view = listing_view(listing, st, self.today(), self.credit.grade(rec.contract["borrower"]))
        view["borrower"] = peer_id(rec.contract["borrower"])
        view["mine"] = listing.seller == self.me
        return view

    # -- loan buy (the buyer's side) --------------------------------------------------------

    async def buy(self, ref: Any) -> dict:
        """``loan.buy``: propose the transfer that carries out the listing, signed by us,
        to its seller; store the countersigned transfer in our chain."""
        listing = self.find(ref)
        if listing.seller == self.me:
            raise ApiError("this is a listing of this node's own", code="own_listing")
        for attempt in range(STALE_TRIES + 1):
            rec = await self._loan_of(listing)
            st = rec.state(self.today())
            fault = listing_fault(listing, rec.contract, st, self.now_ms())
            if fault is not None:
                raise ApiError(fault[1], code=fault[0])
            why = rules.refusal("take_transfer", listing.seller, rec.contract, st, to=self.me)
            if why is not None:
                raise ApiError(why.message, code=why.code)
            env = seal(sale_transfer(listing, self.me, after=len(st.counted), day=self.today()), self.ctx.key)
            answer = await self._ask(listing.seller, agree.Transfer(env.raw))
            if isinstance(answer, agree.Refused) and answer.code == "stale_after" and attempt < STALE_TRIES:
                await self._catch_up(listing.seller, rec.loan, len(st.counted))
                continue
            break
        if isinstance(answer, agree.Refused):
            raise ApiError(f"{peer_id(listing.seller)} refused the sale: {answer.reason}", code=answer.code)
        if not isinstance(answer, agree.Accepted) or answer.field != "transfer":
            raise ApiError("the seller's node answered something else", code="bad_answer")
        try:
            full = open_transfer(answer.document)
        except ProtocolError as e:
            raise ApiError(f"the seller's node answered a transfer that does not open: {e.message}",
                           code="bad_answer") from None
        if full.payload != env.payload:
            raise ApiError("the seller signed another transfer", code="bad_answer")
        await self.docs.record(listing.loan, full.id, "loan.transfer", {"transfer": full.raw})
        self._others.pop(listing.id, None)
        self.ctx.count("market.bought")
        doc = full.document
        return {"loan": listing.loan.hex(), "listing": listing.id.hex(), "transfer": full.id.hex(),
                "from": peer_id(listing.seller), "price": doc["price"], "currency": listing.currency,
                "price_text": format_amount(listing.price, listing.currency), "after": doc["after"], "date": doc["date"]}

    async def _ask(self, seller: bytes, msg: Any) -> Any:
        try:
            return await self.countersigning.ask(seller, msg)
        except (Unreachable, PeerMisbehaved, trio.TooSlowError, OSError) as e:
            raise ApiError(f"cannot reach {peer_id(seller)}: {e}", code="unreachable") from None

    async def _loan_of(self, listing: Listing) -> LoanRecord:
        """The loan's documents as held here, pulling the seller's chain first if the
        agreement is not held yet (bounded by ``HEAD_SYNC_WAIT``)."""
        rec = self.docs.read(listing.loan)
        if rec.contract is None:
            self.ctx.peers.request_sync(listing.seller)
            with trio.move_on_after(HEAD_SYNC_WAIT):
                for _ in range(int(HEAD_SYNC_WAIT / 0.1) + 1):
                    if (rec := self.docs.read(listing.loan)).contract is not None:
                        break
                    await self.ctx.clock.sleep(0.1)
        if rec.contract is None:
            raise ApiError("this node holds no agreement for the listed loan, and could not get it from the seller",
                           code="unknown_loan")
        return rec

    async def _catch_up(self, seller: bytes, loan: bytes, counted: int) -> None:
        """Pull the seller's chain until more receipts of ``loan`` count here (bounded)."""
        self.ctx.peers.request_sync(seller)
        with trio.move_on_after(HEAD_SYNC_WAIT):
            for _ in range(int(HEAD_SYNC_WAIT / 0.1) + 1):
                if len(self.docs.read(loan).state(self.today()).counted) > counted:
                    return
                await self.ctx.clock.sleep(0.1)

    # -- loan buy (the seller's side) -------------------------------------------------------

    async def sale_offered(self, data: bytes, buyer: bytes) -> Any:
        """The answer to a buyer's transfer on the agree stream: countersigned if it
        carries out a listing of ours that stands (module docstring), else refused."""
        try:
            env = open_transfer(data, complete=False, signed_by="to" if _priced(data) else "from")
        except ProtocolError as e:
            return agree.Refused(bytes(32), "bad_proposal", e.message)
        doc = env.document
        if "price" not in doc:
            return agree.Refused(doc["loan"], "no_price", "a transfer without a price is never accepted: the claim "
                                                          "changes hands by a sale (loan sell, then loan buy)")
        loan = doc["loan"]
        if doc["to"] != buyer or doc["from"] != self.me:
            return agree.Refused(loan, "not_party", "this transfer is not from this node to the sender")
        async with self._sale_lock:
            return await self._decide_sale(env, buyer)

    async def _decide_sale(self, env: Any, buyer: bytes) -> Any:
        doc = env.document
        loan = doc["loan"]
        now, today = self.now_ms(), self.today()
        listing = max((x for x in self.own.values() if x.loan == loan), key=lambda x: x.created, default=None)
        if listing is None:
            return agree.Refused(loan, "not_listed", "this node lists that loan for sale nowhere")
        rec = self.docs.read(loan)
        full = countersign(env, self.ctx.key)
        if rec.contract is None:
            fault = sale_fault(doc, listing) or ("unknown_loan", "this node holds no agreement for that loan")
        else:
            fault = sale_refusal(doc, listing, rec.contract, rec.state(today), today, now, lambda: loan_state(
                loan, rec.contract, list(rec.receipts.values()),
                [*rec.transfers.values(), SignedTransfer(full.id, doc, frozenset(full.signers))], rec.notices, today,
                list(rec.amendments.values())))
        if fault is not None:
            self.ctx.count(f"market.sale_refused.{fault[0]}")
            return agree.Refused(loan, fault[0], fault[1])
        await self.docs.record(loan, full.id, "loan.transfer", {"transfer": full.raw})
        self._drop_own(loan)
        self.ctx.count("market.sold")
        log.info("loan %s sold to %s for %d", loan.hex()[:16], peer_id(buyer), doc["price"])
        return agree.Accepted(full.raw, "transfer")


def _priced(data: bytes) -> bool:
    """Whether the transfer in ``data`` carries a price (read before its signatures are
    checked, to know whose they must be; ``open_transfer`` then checks everything)."""
    try:
        doc = peek_document(data)
    except ProtocolError:
        return False
    return isinstance(doc, dict) and "price" in doc
