"""Lending's service on a running node: the offer book and loans, behind the handlers its
declaration (p2pnode/lending/__init__.py) routes to it. Built with a ``Context`` like any
extension's service; it reaches the node through nothing else."""

from __future__ import annotations

import logging
from typing import Any

from protocol.lending.offer import offer_json

from protocol.errors import ProtocolError
from protocol.keys import peer_id, public_key_from_peer_id
from protocol.lending import agree

from p2pnode.context import Context
from p2pnode.lending.ask import ANSWER_TIMEOUT
from p2pnode.lending.countersigning import Countersigning
from p2pnode.lending.credit import Credit, profile_json, summary
from p2pnode.lending.fills import fill_now
from p2pnode.lending.documents import LoanDocuments
from p2pnode.lending.loans import Loans
from p2pnode.lending.market import Market
from p2pnode.lending.offers import OfferBook
from p2pnode.net.sync import PeerGone, PeerMisbehaved
from p2pnode.lending.policies import PolicyInForce
from p2pnode.lending.reserve import LossReserve
from p2pnode.lending.autoinvest import AutoInvest
from p2pnode.lending.amendments import Amendments
from p2pnode.lending.settings import credit_params_of
from p2pnode.net.streams import FramedStream

log = logging.getLogger(__name__)


class Lending:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        settings = dict(ctx.settings)
        settings.setdefault("review", False)
        self.policy = PolicyInForce(ctx, settings)
        self.credit = Credit(ctx, credit_params_of(settings))
        self.policy.credit = self.credit  # the borrower rules run on credit's profiles
        self.book = OfferBook(ctx, self.credit, policy=self.policy)
        self.documents = LoanDocuments(ctx)
        self.countersigning = Countersigning(ctx, self.book, self.documents, settings, self.policy)
        self.loans = Loans(ctx, self.documents, self.countersigning, settings)
        self.reserve = LossReserve(ctx, self.documents, self.loans, settings)
        self.market = Market(ctx, self.documents, self.countersigning, self.credit)
        self.autoinvest = AutoInvest(ctx, self.book, self.credit, self.countersigning, self.loans, settings)
        self.amendments = Amendments(ctx, self.documents, self.countersigning.ask)

    async def start(self) -> None:
        """Find the proposals a previous run left open."""
        await self.countersigning.load()

    # -- the node's hooks ----------------------------------------------------------------

    async def on_offers(self, data: bytes, sender: bytes | None) -> None:
        await self.book.on_gossip(data, sender)

    async def serve_agree(self, stream: FramedStream, peer: bytes) -> None:
        """Answer the requests on an inbound agree stream in turn (agree rule 1), until the
        other side ends it or sends nothing for ``ANSWER_TIMEOUT`` seconds: a transfer is
        the market's, the rest countersigning's. A request whose document breaks the rules
        is misbehaviour, and ends the stream."""
        stream.timeout = ANSWER_TIMEOUT
        for n in range(agree.MAX_REQUESTS_PER_STREAM):
            try:
                msg = await stream.recv()
            except PeerGone:
                if n == 0:
                    raise
                return  # (the stream ended, or stayed silent, after an answer: its end)
            try:
                if isinstance(msg, agree.Transfer):
                    answer = await self.market.sale_offered(msg.transfer, peer)
                elif isinstance(msg, agree.Amend):
                    answer = await self.amendments.offered(msg.amendment, peer)
                else:
                    answer = await self.countersigning.answer(msg, peer)
            except ProtocolError as e:
                raise PeerMisbehaved(e.message, e.code) from None
            await stream.send(answer)

    async def on_entries(self, entries: list) -> None:
        self.credit.take(entries)
        await self.loans.on_entries(entries)

    async def on_market(self, data: bytes, sender: bytes | None) -> None:
        await self.market.on_gossip(data, sender)

    async def on_peer_connected(self, peer: bytes) -> None:
        self.book.peer_joined()
        self.market.peer_joined()

    def standing(self, author: bytes) -> int:
        """What this node's credit vouches for ``author`` (p2pnode/lending/credit.py: 0 for
        a stranger); the node holds the chains of authors with standing whatever its
        budget for strangers (p2pnode/net/interest.py)."""
        return self.credit.standing(author)

    def check_append(self, kind: str, body: Any) -> None:
        self.loans.check_append(kind, body)

    async def book_upkeep(self) -> None:
        await self.book.loop()

    async def holdings_upkeep(self) -> None:
        await self.loans.keep_holdings()

    async def market_upkeep(self) -> None:
        await self.market.loop()

    async def proposal_retries(self) -> None:
        await self.countersigning.retry_loop()

    async def reserve_upkeep(self) -> None:
        await self.reserve.upkeep()

    async def autoinvest_runs(self) -> None:
        await self.autoinvest.loop()

    async def autoinvest_set(self, on: bool) -> dict:
        return await self.autoinvest.set(on)

    async def autoinvest_status(self) -> dict:
        return self.autoinvest.status()

    async def autoinvest_dry_run(self) -> dict:
        return self.autoinvest.dry_run()

    async def _reserve_follows(self) -> None:
        """After a receipt or a write-off this node signed: its reserve follows (a failure
        there is logged; the receipt or notice is already stored and answered for)."""
        try:
            await self.reserve.reconcile()
        except Exception:
            log.exception("the loss reserve did not follow")

    # -- offer.* ---------------------------------------------------------------------------

    async def offer_create(self, **p: Any) -> dict:
        return await self.book.create(p)

    async def offer_cancel(self, id: str) -> dict:
        return await self.book.cancel(id)

    async def offer_list(self, **p: Any) -> dict:
        listed = self.book.list(p)
        for o in listed["offers"]:  # the grade of the peer behind each offer and request
            o["grade"] = self.credit.grade(public_key_from_peer_id(o["author"]))
        return listed

    async def offer_show(self, id: str) -> dict:
        o = self.book.find(id)
        return dict(offer_json(o), author_forked=o.author in self.ctx.chains.forked_authors(),
                    grade=self.credit.grade(o.author), fill=fill_now(self.ctx, o).to_json())

    # -- loan.* ----------------------------------------------------------------------------

    async def loan_propose(self, offer: str, amount: str | None, start: str | None, ttl_s: int) -> dict:
        return await self.countersigning.propose(offer, amount, start, ttl_s)

    async def loan_proposal(self, loan: str) -> dict:
        return self.countersigning.proposal(loan)

    async def loan_pending(self) -> dict:
        pending = self.countersigning.pending()
        for p in pending["pending"]:  # the proposer's credit, for the owner's review
            p["proposer_credit"] = summary(self.credit.profile(public_key_from_peer_id(p["proposer"])))
        return pending

    async def loan_accept(self, loan: str) -> dict:
        return await self.countersigning.accept(loan)

    async def loan_reject(self, loan: str, reason: str) -> dict:
        return await self.countersigning.reject(loan, reason)

    async def loan_disburse(self, loan: str, date: str | None) -> dict:
        return await self.loans.disburse(loan, date)

    async def loan_confirm(self, loan: str, date: str | None) -> dict:
        return await self.loans.confirm(loan, date)

    async def loan_repay(self, loan: str, amount: str, date: str | None) -> dict:
        return await self.loans.repay(loan, amount, date)

    async def loan_receipt(self, loan: str, amount: str, date: str | None) -> dict:
        answer = await self.loans.receipt(loan, amount, date)
        await self._reserve_follows()
        return answer

    async def loan_default(self, loan: str) -> dict:
        return await self.loans.default(loan)

    async def loan_writeoff(self, loan: str) -> dict:
        answer = await self.loans.writeoff(loan)
        await self._reserve_follows()
        return answer

    async def reserve_show(self) -> dict:
        return self.reserve.show()

    async def reserve_update(self) -> dict:
        appended = await self.reserve.reconcile()
        return dict(self.reserve.show(), appended=[dict(b, loan=b["loan"].hex()) if "loan" in b else b
                                                   for b in appended])

    async def loan_dispute(self, loan: str, reason: str) -> dict:
        return await self.loans.dispute(loan, reason)

    # -- the secondary market -------------------------------------------------------------

    async def loan_sell(self, loan: str, price: str | None, days: int, withdraw: bool) -> dict:
        if not withdraw and price is None:
            from p2pnode.errors import bad_params

            raise bad_params('"price" is required unless "withdraw"')
        return await self.market.sell(loan, price, days, withdraw)

    async def loan_buy(self, listing: str) -> dict:
        return await self.market.buy(listing)

    async def market_list(self, loan: str | None = None, limit: int = 100) -> dict:
        return self.market.list(loan.lower() if loan else None, limit)

    # -- policy.* --------------------------------------------------------------------------

    async def policy_list(self) -> dict:
        return self.policy.list()

    async def policy_show(self, name: str | None) -> dict:
        return self.policy.show(name)

    async def policy_set(self, name: str, lpr: str | None, apr_cap: str | None, min_grade: str | None,
                         max_term: str | None) -> dict:
        return self.policy.set(name, {"lpr": lpr, "apr_cap": apr_cap, "min_grade": min_grade, "max_term": max_term})

    async def loan_show(self, loan: str, at: str | None) -> dict:
        view = self.loans.show(loan, at)
        view["amendment_pending"] = self.amendments.pending(self.documents.find(loan))
        return view

    async def loan_reschedule(self, loan: str, rate: str, term: str, schedule: str | None = None,
                              period_days: int | None = None, date: str | None = None) -> dict:
        return await self.amendments.reschedule(loan, rate, term, schedule, period_days, date)

    async def loan_list(self, role: str | None, state: str | None, at: str | None) -> dict:
        return self.loans.list(role, state, at)

    # -- credit.* --------------------------------------------------------------------------

    async def portfolio_show(self, at: str | None = None) -> dict:
        """This node's loans as a lender (protocol/lending/portfolio.py, per currency, its
        borrowers graded by credit) and what it owes as a borrower."""
        from protocol.errors import ProtocolError
        from protocol.lending.portfolio import obligations, portfolios

        from p2pnode.errors import ApiError

        today, lent, owed = await self.loans.holdings_soon(at)
        grades = {b: self.credit.grade(b) for b in {h.borrower for h in lent}}
        try:
            mine = portfolios(lent, today, grades, self.reserve.params)
            debts = {cur: obligations([h for h in owed if h.currency == cur], cur, today)
                     for cur in sorted({h.currency for h in owed})}
        except ProtocolError as e:
            raise ApiError(f"the portfolio cannot be computed: {e.message}", code=e.code) from None
        lender = {}
        for cur, p in mine.items():
            view = p.to_json()
            view["by_borrower"] = {peer_id(bytes.fromhex(k)): v for k, v in view["by_borrower"].items()}
            if view["top_borrower"]:
                view["top_borrower"] = peer_id(bytes.fromhex(view["top_borrower"]))
            lender[cur] = view
        return {"as_of": today.isoformat(), "lender": lender,
                "borrower": {cur: o.to_json() for cur, o in debts.items()}}

    async def credit_show(self, peer: str, explain: bool = False) -> dict:
        return profile_json(self.credit.profile(public_key_from_peer_id(peer)), explain)

