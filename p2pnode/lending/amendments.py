"""Amendments on the running node: ``loan reschedule``, new terms that borrower and holder
both sign (protocol/lending/amendment.py; what they change is loanstate's rule 12).

The consent of both owners is what makes an amendment, so a node signs one only when its
own owner runs ``loan reschedule`` with those terms:

- The first party to run it *proposes*: its node signs the amendment, keeps it (``out``)
  and sends it over ``/p2plend/agree/1.0.0`` (``amend``).
- The other party's node signs nothing then: it checks the proposal and keeps it for its
  owner (``in``), answering ``held``. Its owner sees it in ``loan show``.
- When the other owner runs ``loan reschedule`` with the same terms (same rate, term,
  schedule, period and date: an unset date, schedule or period takes the proposal's), its
  node countersigns the kept proposal, records ``loan.amendment`` in its own chain and
  pushes the amendment to the proposer; the proposer's node records it too, from the push
  or when it sees the entry (loans.py, ``rules.to_record``).
- A proposal arriving with the same terms as the one this node's owner proposed (both
  ran the command at once) is countersigned at once: both owners consented to it.

Bounds: a node keeps at most one proposal of each side per loan (``P_AMEND + loan +
IN | OUT``), and only for a loan it is the borrower or the holder of, from the loan's other
party; a newer one replaces it. A kept proposal that no longer fits the loan (a receipt
or transfer since) is ignored and replaced. Nothing here trusts the other side: a
proposal is checked against its signature, the rules and this node's copy of the chains,
and would count in loan state, before it is kept or countersigned.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date
from typing import Any

import trio

from protocol import codec
from protocol.envelope import Envelope, countersign, document_id
from protocol.errors import ProtocolError
from protocol.keys import peer_id
from protocol.lending import agree, rules
from protocol.lending.amendment import make_amendment, open_amendment, propose_amendment, same_terms
from protocol.lending.contract import parse_date
from protocol.lending.loanstate import SignedAmendment
from protocol.lending.money import MoneyError, format_rate, parse_rate, parse_term

from p2pnode.context import Context
from p2pnode.errors import ApiError
from p2pnode.lending.ask import Unreachable
from p2pnode.lending.countersigning import HEAD_SYNC_WAIT
from p2pnode.lending.documents import LoanDocuments
from p2pnode.lending.loanview import LoanRecord
from p2pnode.net.sync import PeerMisbehaved

log = logging.getLogger(__name__)

P_AMEND = b"A"  # + loan(32) + IN | OUT: a proposed amendment's envelope, in lending's record space
IN, OUT = b"i", b"o"  # the other party's proposal, kept for our owner / ours, sent


class Amendments:
    """This node's side of reschedules; ``ask`` sends one agree request (countersigning's)."""

    def __init__(self, ctx: Context, docs: LoanDocuments, ask: Any) -> None:
        self.ctx = ctx
        self.docs = docs
        self.ask = ask
        self.me = ctx.me
        self._lock = trio.Lock()  # one decision at a time: a proposal is countersigned once

    def today(self) -> date:
        return self.ctx.clock.today()

    # -- the owner's command ---------------------------------------------------------------

    async def reschedule(self, ref: Any, rate: Any, term: Any, schedule: Any = None, period_days: Any = None,
                         day: Any = None) -> dict:
        """``loan.reschedule``: countersign the other party's kept proposal if it has these
        terms, else propose them (docstring of this module)."""
        rec = self.docs.find(ref)
        st = rec.state(self.today())
        r = rules.refusal("amend", self.me, rec.contract, st)
        if r is not None:
            raise ApiError(r.message, code=r.code)
        async with self._lock:
            theirs = self._kept(rec, IN)
            doc = self._terms(rec, st, rate, term, schedule, period_days, day, theirs)
            self._would_count(rec, doc)
            if theirs is not None and same_terms(theirs.document, doc):
                full = countersign(theirs, self.ctx.key)
                await self._record(rec, full)
                self.ctx.spawn(self._push, self._other(rec, st), full)
                return self._answer(rec, full, "agreed")
            half = propose_amendment(self.ctx.key, doc)
            self.ctx.records.write([(P_AMEND + rec.loan + OUT, half.raw)], [P_AMEND + rec.loan + IN], sync=True)
        return await self._send(rec, self._other(rec, st), half)

    def _other(self, rec: LoanRecord, st: Any) -> bytes:
        return st.holder if self.me == rec.contract["borrower"] else rec.contract["borrower"]

    def _terms(self, rec: LoanRecord, st: Any, rate: Any, term: Any, schedule: Any, period_days: Any, day: Any,
               theirs: Envelope | None) -> dict:
        """The amendment the owner's params make: after the receipts counted today, with
        the holder today; a date, schedule or period not given is the kept proposal's, else
        today, the contract's schedule, and the term's default period."""
        kept = theirs.document if theirs is not None else {}
        try:
            rate_bp = parse_rate(rate)
            parse_term(term)
        except MoneyError as e:
            raise ApiError(e.message, code=e.code) from None
        d = self.docs.day(day if day is not None else kept.get("date"))
        if period_days is None and kept.get("term") == term:
            period_days = kept.get("period_days")
        try:
            return make_amendment(loan=rec.loan, borrower=rec.contract["borrower"], holder=st.holder,
                                  after=len(st.counted), day=d, rate_bp=rate_bp, term=term,
                                  kind=schedule or kept.get("schedule") or rec.contract["schedule"],
                                  period_days=period_days)
        except ProtocolError as e:
            raise ApiError(f"cannot make that amendment: {e.message}", code=e.code) from None

    def _would_count(self, rec: LoanRecord, doc: dict) -> None:
        """Refuse (with loan state's code) terms whose amendment, signed by both, would not
        count today, or would displace one that counts: nobody signs what does nothing,
        and an agreed amendment stays."""
        aid = document_id(codec.encode(doc))
        if any(a.after == doc["after"] and a.id != aid for a in rec.state(self.today()).amendments):
            # (one with a lower id would displace it: loan state keeps one per receipt)
            raise ApiError(f"the loan is amended after receipt {doc['after']} already: another amendment needs a "
                           "receipt first", code="conflict")
        st = self._with(rec, SignedAmendment(aid, doc, frozenset((doc["borrower"], doc["holder"]))))
        if aid not in {a.id for a in st.amendments}:
            why = next((x for x in st.rejected if x.id == aid), None)
            code, message = (why.code, why.message) if why else ("bad_date", "it would not be in effect today")
            raise ApiError(f"that amendment would not count: {message}", code=code)

    def _with(self, rec: LoanRecord, a: SignedAmendment) -> Any:
        """The loan's state today with ``a`` among its documents."""
        return replace(rec, amendments={**rec.amendments, a.id: a}).state(self.today())

    async def _send(self, rec: LoanRecord, to: bytes, half: Envelope) -> dict:
        """Send our proposal; agreed if the other node countersigned (its owner proposed the
        same), proposed if it keeps it for its owner or cannot be reached now."""
        try:
            answer = await self.ask(to, agree.Amend(half.raw))
        except (Unreachable, PeerMisbehaved, trio.TooSlowError, OSError) as e:
            log.info("amendment %s not delivered: %s", half.id.hex()[:16], e)
            return dict(self._answer(rec, half, "proposed"), note=f"{peer_id(to)} cannot be reached now: its owner "
                                                                  "runs the same command to make it, and this node "
                                                                  "countersigns then")
        if isinstance(answer, agree.Refused):
            raise ApiError(f"{peer_id(to)} refused the amendment: {answer.reason}", code=answer.code)
        if isinstance(answer, agree.Held):
            return dict(self._answer(rec, half, "proposed"),
                        note=f"kept for {peer_id(to)}'s owner, who runs the same command to agree")
        if not isinstance(answer, agree.Accepted) or answer.field != "amendment":
            raise ApiError("the other node answered something else", code="bad_answer")
        try:
            full = open_amendment(answer.document)
        except ProtocolError as e:
            raise ApiError(f"the other node answered a bad amendment: {e.message}", code="bad_answer") from None
        if full.payload != half.payload:
            raise ApiError("the other node signed another amendment", code="bad_answer")
        async with self._lock:
            await self._record(self.docs.read(rec.loan), full)
        return self._answer(rec, full, "agreed")

    def _answer(self, rec: LoanRecord, env: Envelope, state: str) -> dict:
        d = env.document
        return {"loan": rec.loan.hex(), "amendment": env.id.hex(), "state": state, "after": d["after"],
                "date": d["date"], "rate_bp": d["rate_bp"], "rate_text": format_rate(d["rate_bp"]), "term": d["term"],
                "schedule": d["schedule"], "period_days": d.get("period_days"),
                "signed_by": sorted(peer_id(k) for k in env.signers)}

    async def _record(self, rec: LoanRecord, full: Envelope) -> None:
        """Our ``loan.amendment`` entry for the amendment both signed (once), and no more
        proposals kept for the loan. The caller holds ``_lock``."""
        await self.docs.record(rec.loan, full.id, "loan.amendment", {"amendment": full.raw})
        self.ctx.records.write([], [P_AMEND + rec.loan + IN, P_AMEND + rec.loan + OUT], sync=True)
        self.ctx.count("loans.amended")

    async def _push(self, to: bytes, full: Envelope) -> None:
        """Give the proposer the countersigned amendment; if it cannot be told now, it
        records it when it sees our entry (gossip, sync)."""
        try:
            await self.ask(to, agree.Amend(full.raw))
        except Exception as e:
            log.info("could not give %s amendment %s: %s", peer_id(to), full.id.hex()[:16], e)

    # -- a peer's request --------------------------------------------------------------------

    async def offered(self, data: bytes, sender: bytes) -> Any:
        """The answer to ``amend`` from ``sender``: a proposal is countersigned if our owner
        proposed the same terms, else kept for our owner (``held``); an amendment signed
        by both is recorded if it counts (``ok``)."""
        try:
            env = open_amendment(data, complete=False)
        except ProtocolError:
            try:
                env = open_amendment(data)
            except ProtocolError as e:
                return agree.Refused(bytes(32), "bad_proposal", e.message)
            return await self._pushed(env, sender)
        doc = env.document
        if env.signers != (sender,) or self.me not in (doc["borrower"], doc["holder"]):
            return agree.Refused(doc["loan"], "not_party", "this amendment is not from the sender to this node")
        rec = await self._agreed(doc["loan"], sender)
        if rec is None:
            return agree.Refused(doc["loan"], "unknown_loan", "this node holds no agreement for that loan")
        st = rec.state(self.today())
        for by in (sender, self.me):
            why = rules.refusal("amend", by, rec.contract, st)
            if why is not None:
                return agree.Refused(doc["loan"], why.code, why.message)
        if doc["after"] != len(st.counted) or doc["holder"] != st.holder:
            return agree.Refused(doc["loan"], "bad_proposal", f"after {len(st.counted)} receipts the holder is "
                                                              f"{peer_id(st.holder)}: the amendment names another point")
        if parse_date(doc["date"]) > self.today():
            return agree.Refused(doc["loan"], "bad_proposal", "the amendment is dated after today")
        try:
            self._would_count(rec, doc)
        except ApiError as e:
            return agree.Refused(doc["loan"], e.code, e.message)
        async with self._lock:
            ours = self._kept(rec, OUT)
            if ours is not None and same_terms(ours.document, doc):
                full = countersign(env, self.ctx.key)  # our owner proposed these very terms
                await self._record(rec, full)
                return agree.Accepted(full.raw, "amendment")
            self.ctx.records.write([(P_AMEND + rec.loan + IN, env.raw)], sync=True)
        log.info("amendment %s from %s kept for the owner", env.id.hex()[:16], peer_id(sender))
        return agree.Held(doc["loan"])

    async def _pushed(self, env: Envelope, sender: bytes) -> Any:
        """An amendment signed by both, pushed by the party that countersigned ours."""
        doc = env.document
        if sender not in env.signers or self.me not in env.signers:
            return agree.Refused(doc["loan"], "not_party", "this amendment is not between the sender and this node")
        rec = self.docs.read(doc["loan"])
        if rec.contract is None:
            return agree.Refused(doc["loan"], "unknown_loan", "this node holds no agreement for that loan")
        a = SignedAmendment(env.id, doc, frozenset(env.signers))
        if env.id not in {x.id for x in self._with(rec, a).amendments}:
            return agree.Refused(doc["loan"], "bad_proposal", "that amendment does not count")
        async with self._lock:
            await self._record(rec, env)
        return agree.Ok(doc["loan"])

    async def _agreed(self, loan: bytes, sender: bytes) -> LoanRecord | None:
        """The loan's record, once its agreement is held (pulling the sender's chain for a
        while if not); None if it never comes."""
        rec = self.docs.read(loan)
        if rec.contract is None:
            self.ctx.peers.request_sync(sender)
            with trio.move_on_after(HEAD_SYNC_WAIT):
                for _ in range(int(HEAD_SYNC_WAIT / 0.1) + 1):  # a sync brings the agreement, or time runs out
                    if (rec := self.docs.read(loan)).contract is not None:
                        break
                    await self.ctx.clock.sleep(0.1)
        return rec if rec.contract is not None else None

    # -- what is kept --------------------------------------------------------------------------

    def _kept(self, rec: LoanRecord, side: bytes) -> Envelope | None:
        """The proposal kept on ``side`` for the loan, if it still fits it (the same point
        and holder today); one that does not is forgotten."""
        raw = self.ctx.records.get(P_AMEND + rec.loan + side)
        if raw is None:
            return None
        try:
            env = open_amendment(raw, complete=False)
            st = rec.state(self.today())
            if env.document["after"] == len(st.counted) and env.document["holder"] == st.holder:
                return env
        except ProtocolError as e:
            log.warning("kept amendment of %s unreadable: %s", rec.loan.hex()[:16], e.message)
        self.ctx.records.write([], [P_AMEND + rec.loan + side])
        return None

    def pending(self, rec: LoanRecord) -> dict[str, Any] | None:
        """For ``loan show``: the proposals kept for the loan that still fit it and are not
        agreed (its amendment is in no chain held), ``{"theirs", "ours"}`` (each the
        amendment's terms and who signed it, or null); None if neither."""
        out = {}
        for side, name in ((IN, "theirs"), (OUT, "ours")):
            env = self._kept(rec, side)
            if env is not None and env.id in rec.amendments:  # agreed: the chains have it
                self.ctx.records.write([], [P_AMEND + rec.loan + side])
                env = None
            out[name] = None if env is None else self._answer(rec, env, "proposed")
        return out if any(out.values()) else None
