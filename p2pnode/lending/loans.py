"""Loans on the running node, once agreed: money declared and receipted, notices,
transfers of the claim, and the views of loans (``loan.*``, docs/api.md). Whether an action
is allowed is ``protocol.lending.rules``'s to say; what counts, ``protocol.lending.loanstate``'s.

Promises:

- Each party records every two-party document it is part of (receipt, transfer) in its
  own chain, whichever way it learns of it (``on_entries``: gossip, sync, import), once;
  agreements go to countersigning (p2pnode/lending/countersigning.py).
- Receipt numbers are handed out one at a time, one after the receipts that count.
- Nothing here trusts the other side: a transfer offered is checked against its
  signatures, the rules and this node's own copy of the chains before it is signed.
- Every wait is on the node's clock.
"""

from __future__ import annotations

import logging
from datetime import date
from typing import Any, Iterator, Mapping

import trio

from protocol.envelope import countersign, peek_document, seal
from protocol.errors import ProtocolError
from protocol.keys import peer_id, public_key_from_peer_id
from protocol.lending import agree, rules
from protocol.lending.contract import loan_of, make_receipt, open_agreement, open_transfer, parse_date
from protocol.lending.money import MoneyError, format_amount, parse_amount

from p2pnode.context import Context
from p2pnode.errors import ApiError, bad_params
from p2pnode.lending.ask import Unreachable
from p2pnode.lending.countersigning import HEAD_SYNC_WAIT, Countersigning
from p2pnode.lending.documents import LoanDocuments
from p2pnode.lending.loanview import LoanRecord, loan_ids, loan_json, role_of
from p2pnode.net.sync import PeerMisbehaved

log = logging.getLogger(__name__)


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
        to and have not recorded (agreements we signed, receipts, transfers)."""
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

    def _day(self, value: Any) -> date:
        if value is None:
            return self.today()
        try:
            d = parse_date(value)
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        if d > self.today():
            raise ApiError(f"date {value} is in the future", code="bad_date")
        return d

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
        d = self._day(day)
        e = await self.docs.append("loan.declared", {"loan": rec.loan, "what": "disbursement",
                                                 "amount": rec.contract["principal"], "date": d.isoformat()})
        return {"loan": rec.loan.hex(), "declared": "disbursement", "amount": rec.contract["principal"],
                "amount_text": _money(rec, rec.contract["principal"]), "date": d.isoformat(), "seq": e.seq}

    async def confirm(self, ref: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        c = rec.contract
        self._allowed("confirm", rec, rec.state(self.today()))
        d = self._day(day) if day is not None else _declared_day(rec, "disbursement") or self.today()
        return await self._receipt(rec, "disbursement", c["principal"], d, payer=c["lender"])

    async def repay(self, ref: Any, amount: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("repay", rec, rec.state(self.today()))
        d = self._day(day)
        minor = self._amount(rec, amount, "repay", d)
        e = await self.docs.append("loan.declared", {"loan": rec.loan, "what": "repayment", "amount": minor,
                                                 "date": d.isoformat()})
        return {"loan": rec.loan.hex(), "declared": "repayment", "amount": minor, "amount_text": _money(rec, minor),
                "date": d.isoformat(), "seq": e.seq}

    async def receipt(self, ref: Any, amount: Any, day: Any) -> dict:
        rec = self.docs.find(ref)
        self._allowed("receipt", rec, rec.state(self.today()))
        d = self._day(day)
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

    async def transfer(self, ref: Any, to: Any) -> dict:
        rec = self.docs.find(ref)
        st = rec.state(self.today())
        try:
            new = public_key_from_peer_id(to) if isinstance(to, str) else None
        except ProtocolError:
            new = None
        if new is None:
            raise bad_params('"to" must be the new lender\'s peer ID')
        self._allowed("transfer", rec, st, to=new)
        doc = {"type": "transfer", "loan": rec.loan, "from": self.me, "to": new, "after": len(st.counted),
               "date": self.today().isoformat()}
        offer_env = seal(doc, self.ctx.key)
        try:
            answer = await self.countersigning.ask(new, agree.Transfer(offer_env.raw))
        except (Unreachable, PeerMisbehaved, trio.TooSlowError, OSError) as e:
            raise ApiError(f"cannot reach {peer_id(new)}: {e}", code="unreachable") from None
        if isinstance(answer, agree.Refused):
            raise ApiError(f"{peer_id(new)} refused the transfer: {answer.reason}", code=answer.code)
        if not isinstance(answer, agree.Accepted) or answer.field != "transfer":
            raise ApiError("the new lender's node answered something else", code="bad_answer")
        env = open_transfer(answer.document)
        if env.payload != offer_env.payload:
            raise ApiError("the new lender signed another transfer", code="bad_answer")
        await self.docs.record(rec.loan, env.id, "loan.transfer", {"transfer": env.raw})
        return {"loan": rec.loan.hex(), "transfer": env.id.hex(), "to": peer_id(new), "after": doc["after"]}

    async def transfer_offered(self, data: bytes, sender: bytes) -> Any:
        try:
            env = open_transfer(data, complete=False)
        except ProtocolError as e:
            return agree.Refused(bytes(32), "bad_proposal", e.message)
        doc = env.document
        if doc["to"] != self.me or doc["from"] != sender:
            return agree.Refused(doc["loan"], "not_party", "this transfer is not from the sender to this node")
        rec = self.docs.read(doc["loan"])
        if rec.contract is None:
            self.ctx.peers.request_sync(sender)
            with trio.move_on_after(HEAD_SYNC_WAIT):
                for _ in range(int(HEAD_SYNC_WAIT / 0.1) + 1):  # a sync brings the agreement, or time runs out
                    if (rec := self.docs.read(doc["loan"])).contract is not None:
                        break
                    await self.ctx.clock.sleep(0.1)
        if rec.contract is None:
            return agree.Refused(doc["loan"], "unknown_loan", "this node holds no agreement for that loan")
        why = rules.refusal("take_transfer", sender, rec.contract, rec.state(self.today()), to=self.me)
        if why is not None:
            return agree.Refused(doc["loan"], why.code, why.message)
        full = countersign(env, self.ctx.key)
        await self.docs.record(rec.loan, full.id, "loan.transfer", {"transfer": full.raw})
        return agree.Accepted(full.raw, "transfer")

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

    def holdings(self, at: Any) -> tuple[date, list[Any], list[Any]]:
        """``(day, as lender, as borrower)``: the ``portfolio.Holding`` of every agreed loan
        this node holds the claim of, and of every one it owes, on ``at`` (default today);
        at most ``portfolio.MAX_LOANS`` of each (a loan whose state cannot be made is left
        out, as in ``list``)."""
        from protocol.lending.portfolio import MAX_LOANS, holding_of

        today = self._at(at)
        lent: list[Any] = []
        owed: list[Any] = []
        for loan, rec, st in self._agreed(today):
            r = role_of(rec.contract, st.holder, self.me)
            into = lent if r == "lender" else owed if r == "borrower" else None
            if into is not None and len(into) < MAX_LOANS:
                try:
                    into.append(holding_of(rec.contract, st, rec.receipts))
                except ProtocolError as e:  # (its cash flows cannot be replayed: counted without them)
                    log.warning("loan %s: %s", loan.hex()[:16], e.message)
                    into.append(holding_of(rec.contract, st))
        return today, lent, owed

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
