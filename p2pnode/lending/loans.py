"""Loans on the running node, once agreed: money declared and receipted, notices,
transfers of the claim, and the views of loans (``loan.*``, docs/api.md). Whether an action
is allowed is ``protocol.lending.rules``'s to say; what counts, ``protocol.lending.loanstate``'s.

Promises:

- Each party records every two-party document it is part of (receipt, transfer) in its
  own chain, whichever way it learns of it (``on_entries``: gossip, sync, import), once;
  agreements go to countersigning (p2pnode/lending/countersigning.py).
- Receipt numbers are handed out one at a time, one after the receipts that count.
- Nothing here trusts the other side. Transfers of the claim are sales, made by the
  market (p2pnode/lending/market.py), which checks a buyer's transfer against its
  signatures, the rules and this node's own copy of the chains before it signs.
- Every wait is on the node's clock.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Iterator, Mapping

import trio

from protocol.envelope import peek_document
from protocol.errors import ProtocolError
from protocol.keys import peer_id
from protocol.lending import rules
from protocol.lending.contract import loan_of, make_receipt, open_agreement, parse_date
from protocol.lending.money import MoneyError, format_amount, parse_amount

from p2pnode.context import Context
from p2pnode.errors import ApiError, bad_params
from p2pnode.lending.countersigning import Countersigning
from p2pnode.lending.documents import LoanDocuments
from p2pnode.lending.loanview import LoanRecord, loan_ids, loan_json, role_of
from p2pnode.lending.statecache import StateCache

log = logging.getLogger(__name__)

HOLDINGS_EVERY_S = 60.0
"""How often the holdings are brought up to date in the background (Loans.keep_holdings)."""
HOLDINGS_SOON_S = 1.0
"""How soon after new loan entries they are."""


class Loans:
    """Agreed loans: ``settings`` are lending's."""

    def __init__(self, ctx: Context, docs: LoanDocuments, countersigning: Countersigning,
                 settings: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.docs = docs
        self.countersigning = countersigning
        self.settings = settings
        self.me = ctx.me
        self._receipts_lock = trio.Lock()  # receipt numbers are handed out one at a time

    def now_ms(self) -> int:
        return self.ctx.clock.now_ms()

    def today(self) -> date:
        return self.ctx.clock.today()

    async def on_entries(self, entries: list[Any]) -> None:
        """Record in our own chain the documents of others' new entries that we are party
        to and have not recorded (agreements we signed, receipts, transfers); and have the
        holdings brought up to date soon (``keep_holdings``)."""
        if any(e.kind.startswith("loan.") for e in entries):
            self._holdings_stale = True
        for e in entries:
            if e.author == self.me or not e.kind.startswith("loan."):
                continue
            try:
                await self._react(e)
            except ProtocolError as err:
                log.info("loan entry %s/%d not taken up: %s", peer_id(e.author), e.seq, err.message)

    async def _react(self, e: Any) -> None:
        if e.kind == "loan.agreement":
            env = open_agreement(e.body["contract"])
            if self.me in env.signers:
                await self.countersigning.agreed_elsewhere(env.raw)
        elif e.kind in ("loan.receipt", "loan.transfer", "loan.amendment"):
            await self._record_what_counts(loan_of(e.kind, e.body))
        # A `loan.declared` changes nothing here: a receipt says money arrived, which only
        # the owner knows (`loan confirm`), never a declaration (rules.py, rule 3).

    async def _record_what_counts(self, loan: bytes | None) -> None:
        """Record in our own chain what ``rules.to_record`` says we must of ``loan`` and our
        chain lacks; a document that counts only once its predecessor arrives is recorded
        then. Nothing for a loan whose agreement is not held here."""
        rec = None if loan is None else self.docs.read(loan)
        if rec is None or rec.contract is None:
            return
        mine = rec.recorded_by(self.me)
        for did in rules.to_record(self.me, rec.contract, rec.state(self.today()), rec.receipts, rec.transfers,
                                   rec.amendments):
            if did not in mine:
                kind, field = _embedding(rec, did)
                await self.docs.record(loan, did, kind, {field: rec.raw[did]})

    def check_append(self, kind: str, body: Any) -> None:
        """Refuse (``duplicate_document``) a ``ledger.append`` of a loan document this
        chain already records: a replay adds nothing but noise to the ledger."""
        from protocol.lending.contract import embedded_id, loan_of

        doc_id, loan = embedded_id(kind, body), loan_of(kind, body)
        if doc_id is None or loan is None:
            return  # not a two-party document, or unreadable: the kind's own rules decide
        if doc_id in self.docs.read(loan).recorded_by(self.me):
            raise ApiError(f"this chain already records {kind[5:]} {doc_id.hex()[:16]}...", code="duplicate_document")

    def _amount(self, rec: LoanRecord, value: Any, action: str, paid_on: date) -> int:
        """The minor units of ``value`` for ``action`` (rules.py, rule 8: at most the payoff
        on the payment's date, or today if that is later), or ``ApiError``."""
        if not isinstance(value, str):
            raise bad_params('"amount" is decimal text in the loan\'s currency, e.g. "250.00"')
        try:
            minor = parse_amount(value, rec.contract["currency"])
        except MoneyError as e:
            raise ApiError(e.message, code=e.code) from None
        st = rec.state(max(paid_on, self.today()))
        r = rules.amount_refusal(action, minor, st, rec.contract["currency"])
        if r is not None:
            raise ApiError(r.message, code=r.code)
        return minor

    def _allowed(self, action: str, rec: LoanRecord, st: Any, to: bytes | None = None) -> None:
        """Raise the refusal ``protocol.lending.rules`` gives ``action`` by this node, if any."""
        r = rules.refusal(action, self.me, rec.contract, st, to=to)
        if r is not None:
            raise ApiError(r.message, code=r.code)

    async def disburse(self, ref: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("disburse", rec, rec.state(self.today()))
        d = self.docs.day(day)
        e = await self.docs.append("loan.declared", {"loan": rec.loan, "what": "disbursement",
                                                 "amount": rec.contract["principal"], "date": d.isoformat()})
        return {"loan": rec.loan.hex(), "declared": "disbursement", "amount": rec.contract["principal"],
                "amount_text": _money(rec, rec.contract["principal"]), "date": d.isoformat(), "seq": e.seq}

    async def confirm(self, ref: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        c = rec.contract
        self._allowed("confirm", rec, rec.state(self.today()))
        d = self.docs.day(day) if day is not None else _declared_day(rec, "disbursement") or self.today()
        return await self._receipt(rec, "disbursement", c["principal"], d, payer=c["lender"])

    async def repay(self, ref: Any, amount: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("repay", rec, rec.state(self.today()))
        d = self.docs.day(day)
        minor = self._amount(rec, amount, "repay", d)
        e = await self.docs.append("loan.declared", {"loan": rec.loan, "what": "repayment", "amount": minor,
                                                 "date": d.isoformat()})
        return {"loan": rec.loan.hex(), "declared": "repayment", "amount": minor, "amount_text": _money(rec, minor),
                "date": d.isoformat(), "seq": e.seq}

    async def receipt(self, ref: Any, amount: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("receipt", rec, rec.state(self.today()))
        d = self.docs.day(day)
        return await self._receipt(rec, "repayment", self._amount(rec, amount, "receipt", d), d,
                                   payer=rec.contract["borrower"])

    async def _receipt(self, rec: LoanRecord, what: str, amount: int, d: date, *, payer: bytes) -> dict:
        async with self._receipts_lock:  # receipt numbers are handed out one at a time
            rec = self.docs.read(rec.loan)
            n = rec.next_receipt_number(self.today())
            env = make_receipt(self.ctx.key, loan=rec.loan, n=n, what=what, amount=amount, day=d, payer=payer)
            e = await self.docs.append("loan.receipt", {"receipt": env.raw})
        self.ctx.count("loans.receipts")
        return {"loan": rec.loan.hex(), "receipt": env.id.hex(), "n": n, "what": what, "amount": amount,
                "amount_text": _money(rec, amount), "date": d.isoformat(), "seq": e.seq}

    async def default(self, ref: Any) -> dict:
        rec = self.docs.find(ref)
        st = rec.state(self.today())
        self._allowed("default", rec, st)
        e = await self.docs.append("loan.default", {"loan": rec.loan, "date": self.today().isoformat()})
        return {"loan": rec.loan.hex(), "notice": "default", "seq": e.seq, "days_past_due": st.days_past_due}

    async def writeoff(self, ref: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("writeoff", rec, rec.state(self.today()))
        e = await self.docs.append("loan.writeoff", {"loan": rec.loan, "date": self.today().isoformat()})
        return {"loan": rec.loan.hex(), "notice": "writeoff", "seq": e.seq}

    async def dispute(self, ref: Any, reason: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("dispute", rec, rec.state(self.today()))
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
            raise bad_params('"reason" is text of 1 to 1000 characters')
        e = await self.docs.append("loan.dispute", {"loan": rec.loan, "reason": reason})
        return {"loan": rec.loan.hex(), "notice": "dispute", "seq": e.seq}

    def show(self, ref: Any, at: Any) -> dict:
        rec = self.docs.find(ref)
        view = loan_json(rec, self._at(at), self.me)
        view["forked"] = _forked(rec.contract, self.ctx.chains.forked_authors())
        return view

    def _at(self, at: Any) -> date:
        if at is None:
            return self.today()
        try:
            return parse_date(at, "at")
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None

    def _agreed(self, today: date) -> Iterator[tuple[bytes, LoanRecord, Any]]:
        """``(loan, record, state at today)`` of every agreed loan the store holds; one
        whose state cannot be made is logged and left out."""
        for loan in loan_ids(self.ctx.index):
            rec = self.docs.read(loan)
            if rec.contract is None:
                continue
            try:
                st = rec.state(today)
            except ProtocolError as e:
                log.info("loan %s cannot be evaluated: %s", loan.hex()[:16], e.message)
                continue
            yield loan, rec, st

    _states: StateCache | None = None  # (made on first use: holdings' per-loan cache)
    _holdings_stale = False  # loan entries arrived since the last pass of keep_holdings

    def holdings(self, at: Any) -> tuple[date, list[Any], list[Any]]:
        """``(day, as lender, as borrower)``: the ``portfolio.Holding`` of every agreed loan
        this node holds the claim of, and of every one it owes, on ``at`` (default today);
        at most ``portfolio.MAX_LOANS`` of each (a loan whose state cannot be made is left
        out, as in ``list``). Each loan's holding is derived once per day and set of its
        documents (statecache.py): the same as computing it afresh."""
        today = self._at(at)
        return self._split(today, self._cache().each(self.ctx.chains, self.ctx.index, today,
                                                     lambda rec: self._holding(rec, today)))

    async def holdings_soon(self, at: Any) -> tuple[date, list[Any], list[Any]]:
        """``holdings``, deriving what changed a few loans at a time between checkpoints
        (the node's loop stays responsive through the first pass of a day)."""
        today = self._at(at)
        return self._split(today, await self._cache().each_soon(self.ctx.chains, self.ctx.index, today,
                                                                lambda rec: self._holding(rec, today)))

    async def keep_holdings(self) -> None:
        """Keep today's holdings derived: a pass (it reads the heads only if nothing
        changed, else derives the loans that did) every ``HOLDINGS_EVERY_S``, and within
        ``HOLDINGS_SOON_S`` of new loan entries; so a ``portfolio`` finds the work done,
        the first of a day, after a start, or after a receipt."""
        while True:
            self._holdings_stale = False
            try:
                await self.holdings_soon(None)
            except Exception:
                log.exception("keeping the holdings derived failed")
            for _ in range(int(HOLDINGS_EVERY_S / HOLDINGS_SOON_S)):
                await self.ctx.clock.sleep(HOLDINGS_SOON_S)
                if self._holdings_stale:
                    break

    def _cache(self) -> StateCache:
        if self._states is None:
            self._states = StateCache()
        return self._states

    @staticmethod
    def _split(today: date, held: list) -> tuple[date, list[Any], list[Any]]:
        from protocol.lending.portfolio import MAX_LOANS

        lent: list[Any] = []
        owed: list[Any] = []
        for _, h in held:
            if h is None:
                continue
            into = lent if h[0] == "lender" else owed
            if len(into) < MAX_LOANS:
                into.append(h[1])
        return today, lent, owed

    def _holding(self, rec: LoanRecord, today: date) -> tuple[str, Any] | None:
        """``(role, holding)`` of a loan on ``today`` if this node lends it (holds the claim)
        or owes it, else None; None too (logged) if its state cannot be made. Depends only
        on the loan's record and the day (statecache.py's rule)."""
        from protocol.lending.portfolio import holding_of

        if rec.contract is None:
            return None
        try:
            st = rec.state(today)
        except ProtocolError as e:
            log.info("loan %s cannot be evaluated: %s", rec.loan.hex()[:16], e.message)
            return None
        r = role_of(rec.contract, st.holder, self.me)
        if r not in ("lender", "borrower"):
            return None
        try:
            return r, holding_of(rec.contract, st, rec.receipts)
        except ProtocolError as e:  # (its cash flows cannot be replayed: counted without them)
            log.warning("loan %s: %s", rec.loan.hex()[:16], e.message)
            return r, holding_of(rec.contract, st)

    def list(self, role: Any, state: Any, at: Any) -> dict:
        today = self._at(at)
        forked = self.ctx.chains.forked_authors()  # (read once: the fork proofs, for every loan)
        out = []
        for loan, rec, st in self._agreed(today):
            r = role_of(rec.contract, st.holder, self.me)
            shown = "transferred" if r == "former_lender" else st.state
            if role not in (None, "any") and r != role:
                continue
            if state is not None and shown != state:
                continue
            c = rec.contract
            out.append({
                "loan": loan.hex(), "role": r, "state": shown, "days_past_due": st.days_past_due,
                "bucket": st.bucket, "lender": peer_id(st.holder), "borrower": peer_id(c["borrower"]),
                "currency": c["currency"], "principal": c["principal"],
                "principal_text": format_amount(c["principal"], c["currency"]),
                "outstanding": st.outstanding_principal,
                "outstanding_text": format_amount(st.outstanding_principal, c["currency"]),
                "start": c["start"], "term": c["term"], "forked": _forked(c, forked),
            })
        for p in self.countersigning.unagreed():  # proposals never agreed, so the owner sees them too
            if state is not None and p.state != state:
                continue
            loan = p.loan
            d = peek_document(p.contract)
            r = "lender" if d["lender"] == self.me else "borrower"
            if role not in (None, "any") and r != role:
                continue
            out.append({"loan": loan.hex(), "role": r, "state": p.state, "days_past_due": 0, "bucket": None,
                        "lender": peer_id(d["lender"]), "borrower": peer_id(d["borrower"]),
                        "currency": d["currency"], "principal": d["principal"],
                        "principal_text": format_amount(d["principal"], d["currency"]), "outstanding": 0,
                        "outstanding_text": format_amount(0, d["currency"]), "start": d["start"], "term": d["term"],
                        "forked": []})
        return {"as_of": today.isoformat(), "loans": out}


def _embedding(rec: LoanRecord, doc_id: bytes) -> tuple[str, str]:
    """The entry kind that records document ``doc_id`` of ``rec``, and its body's field."""
    if doc_id in rec.receipts:
        return "loan.receipt", "receipt"
    if doc_id in rec.amendments:
        return "loan.amendment", "amendment"
    return "loan.transfer", "transfer"


def _forked(contract: dict, forked: set[bytes]) -> list[str]:
    """The parties of a loan that signed two histories (``forked``: the authors of whom a
    fork proof is held): every loan and offer of a forker says so, wherever it is shown."""
    return sorted(peer_id(k) for k in {contract["lender"], contract["borrower"]} if k in forked)


def _money(rec: LoanRecord, minor: int) -> str:
    return f"{format_amount(minor, rec.contract['currency'])} {rec.contract['currency']}"


def _declared_day(rec: LoanRecord, what: str) -> date | None:
    """The latest day the payer of ``what`` declared it (only the payer's word counts)."""
    payer = rec.contract["lender" if what == "disbursement" else "borrower"]
    days = [d["date"] for d in rec.declared if d["what"] == what and d["by"] == payer]
    return parse_date(max(days)) if days else None
