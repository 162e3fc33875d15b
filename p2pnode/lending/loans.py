"""Loans on the running node: proposals over ``/p2plend/agree/1.0.0``, agreements,
receipts, notices and transfers, and their control methods (``loan.*``, docs/api.md).

Promises:

- A proposal's record (``P`` + loan id in the store) is written durably before any
  message about it leaves this node, and it moves only along ``protocol.agree``'s table;
  so a node killed at any point resumes where it was, and a proposer asks again (the
  same bytes, answered the same way) until an answer or the expiry.
- Each party records every two-party document it is part of (agreement, receipt,
  transfer) in its own chain, whichever way it learns of it: the answer on the agree
  stream, a push, gossip or sync (``on_entries``). A document is recorded once.
- Nothing here trusts the other side: proposals, answers and pushes are checked against
  the signatures, the offer book and this node's own copy of the chains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any, Mapping

import trio

from protocol import codec
from protocol.lending import agree, rules
from protocol.lending.agree import AGREED, EXPIRED, FINAL, HELD, PENDING, PROPOSED
from protocol.lending.contract import (
    acceptor, contract_from, counterparty, make_receipt, open_agreement, open_proposal, open_transfer,
    parse_date, propose, terms_of,
)
from protocol.envelope import countersign, open_envelope, seal
from protocol.errors import ProtocolError
from protocol.keys import peer_id, public_key_from_peer_id
from protocol.lending.money import MoneyError, format_amount, parse_amount
from protocol.lending.offer import is_live

from p2pnode.context import Context
from p2pnode.errors import ApiError, bad_params, id_prefix, unique
from p2pnode.lending.loanview import LoanRecord, loan_ids, loan_json, read_loan, role_of
from p2pnode.lending.offers import OfferBook
from p2pnode.net.streams import FramedStream
from p2pnode.net.sync import PeerGone, PeerMisbehaved

log = logging.getLogger(__name__)

P_PROPOSAL = b"P"  # + loan(32): this node's record of a proposal, in lending's record space

RETRY_INTERVAL = 2.0  # seconds between passes over proposals waiting for an answer
HELD_RETRY = 10.0  # seconds between asking again about a proposal held for review
ANSWER_TIMEOUT = 15.0  # seconds for the acceptor's answer (it may sync our chain first)
HEAD_SYNC_WAIT = 5.0  # seconds the acceptor waits for the proposer's committed head to arrive
SEND_RETRIES = (0.05, 0.2, 0.5)  # pauses between quick resends of a proposal the acceptor did not get


@dataclass
class Proposal:
    """This node's record of one proposal (stored under ``P`` + loan id)."""

    loan: bytes
    role: str  # "out" (we proposed) or "in" (we must countersign)
    state: str
    contract: bytes  # the proposal envelope, or the agreement once agreed
    code: str = ""
    reason: str = ""
    updated: int = 0

    def encode(self) -> bytes:
        return codec.encode({"role": self.role, "state": self.state, "contract": self.contract,
                             "code": self.code, "reason": self.reason, "updated": self.updated})

    @classmethod
    def decode(cls, loan: bytes, data: bytes) -> "Proposal":
        d = codec.decode(data)
        return cls(loan, d["role"], d["state"], d["contract"], d["code"], d["reason"], d["updated"])

    @property
    def document(self) -> dict:
        return open_envelope(self.contract).document

    def json(self) -> dict:
        doc = self.document
        from protocol.lending.money import format_rate

        return {
            "loan": self.loan.hex(), "role": self.role, "state": self.state, "code": self.code or None,
            "reason": self.reason or None, "lender": peer_id(doc["lender"]), "borrower": peer_id(doc["borrower"]),
            "proposer": peer_id(doc["proposer"]), "principal": doc["principal"],
            "principal_text": format_amount(doc["principal"], doc["currency"]), "currency": doc["currency"],
            "rate_bp": doc["rate_bp"], "rate_text": format_rate(doc["rate_bp"]), "term": doc["term"],
            "schedule": doc["schedule"], "start": doc["start"], "offer": doc["offer"].hex(),
            "expires": doc["expires"], "updated": self.updated,
        }


class Loans:
    """Loans on a node running lending: countersigning, receipts, notices, transfers.
    ``settings`` are lending's (``review``, ``auto_confirm``, ``max_rate_bp``)."""

    def __init__(self, ctx: Context, book: OfferBook, settings: Mapping[str, Any]) -> None:
        self.ctx = ctx
        self.book = book
        self.settings = settings
        self.me = ctx.me
        self.records = ctx.records
        self._open: set[bytes] = set()  # proposals not yet final, either role
        self._in_flight: set[bytes] = set()
        self._asked: dict[bytes, float] = {}  # loan -> when a held proposal was last asked about
        self._decide_lock = trio.Lock()  # one decision at a time: an offer is taken once
        self._taken: set[bytes] = set()  # offers taken whose cancellation may still be under way

    def now_ms(self) -> int:
        return self.ctx.clock.now_ms()

    def today(self) -> date:
        return self.ctx.clock.today()

    def read(self, loan: bytes) -> LoanRecord:
        """Everything the chains held here say about ``loan``."""
        return read_loan(self.ctx.chains, self.ctx.index, loan)

    # -- records -------------------------------------------------------------------------

    def load(self) -> None:
        """Find the proposals a previous run left open (bounded by what is stored)."""
        for k, v in self.records.items(P_PROPOSAL):
            try:
                p = Proposal.decode(k[1:], v)
            except Exception:
                log.warning("unreadable proposal record %s ignored", k[1:].hex())
                continue
            if p.state not in FINAL:
                self._open.add(p.loan)

    def get(self, loan: bytes) -> Proposal | None:
        v = self.records.get(P_PROPOSAL + loan)
        return None if v is None else Proposal.decode(loan, v)

    def _save(self, p: Proposal, event: str) -> Proposal:
        """Move ``p`` by ``event`` (protocol.agree's table) and store it durably."""
        old = self.get(p.loan)
        p.state = agree.step(old.state if old else None, event)
        p.updated = self.now_ms()
        self.records.write([(P_PROPOSAL + p.loan, p.encode())], sync=True)
        if p.state in FINAL:
            self._open.discard(p.loan)
        else:
            self._open.add(p.loan)
        log.info("proposal %s (%s): %s on %s", p.loan.hex()[:16], p.role, p.state, event)
        return p

    async def _append(self, kind: str, body: dict, *, once: tuple[bytes, bytes] | None = None) -> Any:
        """Append one entry to our chain (the writer gossips it); with ``once = (loan,
        document id)``, only if our chain does not record that document yet (checked under
        the write lock, so two paths learning of one document at once record it once). The
        entry, or None if it was recorded already."""
        unless = None if once is None else (lambda: once[1] in self.read(once[0]).recorded_by(self.me))
        return await self.ctx.writer.append_one(kind, body, unless=unless)

    async def _record_agreement(self, agreement: bytes) -> None:
        """Append our ``loan.agreement`` entry for ``agreement`` unless our chain has one."""
        env = open_agreement(agreement)
        if await self._append("loan.agreement", {"contract": agreement}, once=(env.id, env.id)) is not None:
            self.ctx.count("loans.agreed")

    # -- proposing -------------------------------------------------------------------------

    async def propose(self, offer_ref: str, amount: str | None, start: str | None, ttl_s: int) -> dict:
        offer = self.book.find(offer_ref)
        if offer.author == self.me:
            raise ApiError("that offer is your own: another node takes it", code="own_offer")
        now = self.now_ms()
        if offer.expires <= now:
            raise ApiError("that offer has expired", code="offer_expired")
        if amount is None:
            principal = offer.max_amount
        else:
            try:
                principal = parse_amount(amount, offer.currency)
            except MoneyError as e:
                raise ApiError(e.message, code=e.code) from None
        if not offer.min_amount <= principal <= offer.max_amount:
            cur = offer.currency
            raise ApiError(
                f"amount {format_amount(principal, cur)} {cur} is outside the offer's "
                f"{format_amount(offer.min_amount, cur)}..{format_amount(offer.max_amount, cur)}", code="bad_amount")
        try:
            start_day = parse_date(start, "start") if start else self.today()
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None
        other = offer.author
        mine, theirs = self.ctx.chains.head(self.me), self.ctx.chains.head(other)
        if theirs is None:
            raise ApiError(f"this node holds no chain of {peer_id(other)} yet: connect to it and let sync run",
                           code="no_chain")
        terms = terms_of(offer)
        heads = {"lend": ((theirs.seq, theirs.id), (mine.seq, mine.id)),
                 "borrow": ((mine.seq, mine.id), (theirs.seq, theirs.id))}[terms.side]
        try:
            doc = contract_from(offer.id, terms, taker=self.me, principal=principal, start=start_day,
                                lender_head=heads[0], borrower_head=heads[1], created=now, expires=now + ttl_s * 1000)
            env = propose(self.ctx.key, doc)
        except ProtocolError as e:
            raise ApiError(f"cannot make that contract: {e.message}", code=e.code) from None
        p = self._save(Proposal(env.id, "out", "", env.raw), "propose")
        for delay in SEND_RETRIES:  # a dropped stream is retried at once; a lost peer by retry_loop
            await self._send_proposal(p)
            if self.get(p.loan).state != PROPOSED or not self.ctx.peers.is_connected(other):
                break
            await trio.sleep(delay)
        return self.get(p.loan).json()

    async def _send_proposal(self, p: Proposal) -> None:
        """Send (or send again) an open proposal of ours and act on the answer; a peer that
        cannot be reached leaves it as it was, for the retry loop."""
        if p.loan in self._in_flight:
            return
        self._in_flight.add(p.loan)
        try:
            doc = p.document
            other = counterparty(doc, self.me)
            try:
                answer = await self._ask(other, agree.Propose(p.contract, self._tail(doc)))
            except (OSError, ProtocolError, PeerMisbehaved, trio.TooSlowError, _Unreachable) as e:
                log.info("proposal %s not delivered: %s", p.loan.hex()[:16], e)
                return
            await self._on_answer(p.loan, answer)
        finally:
            self._in_flight.discard(p.loan)

    def _behind(self, proposal: bytes, pk: bytes) -> bool:
        """Whether our copy of ``pk``'s chain lacks the head a proposal commits for it."""
        from protocol.envelope import peek_document

        try:
            doc = peek_document(proposal)
            seq = doc["lender_head" if doc["lender"] == pk else "borrower_head"][0]
        except Exception:
            return False  # decide() refuses it with the reason
        head = self.ctx.chains.head(pk)
        return head is None or head.seq < seq

    def _tail(self, doc: dict) -> tuple[bytes, ...]:
        """Our last entries up to the head the proposal commits for us."""
        seq = doc["lender_head" if self.me == doc["lender"] else "borrower_head"][0]
        first = max(1, seq - agree.MAX_PROPOSAL_ENTRIES + 1)
        return tuple(self.ctx.chains.chain(self.me, start=first, limit=seq - first + 1))

    async def _on_answer(self, loan: bytes, answer: Any) -> None:
        p = self.get(loan)
        if p is None or p.state in FINAL:
            return
        if isinstance(answer, agree.Accepted):
            env = open_agreement(answer.document)
            if env.id != loan:
                raise ProtocolError("the answer is an agreement to another contract", code="bad_message")
            await self._record_agreement(env.raw)
            p = self.get(loan)  # the agreement may have arrived by gossip meanwhile
            if p.state in FINAL:
                return
            p.contract = env.raw
            self._save(p, "accepted")
        elif isinstance(answer, agree.Held):
            self._save(p, "held")
        elif isinstance(answer, agree.Refused):
            p.code, p.reason = answer.code, answer.reason
            self._save(p, "refused")
        else:
            raise ProtocolError(f"unexpected answer {type(answer).__name__}", code="unexpected_message")

    async def retry_loop(self) -> None:
        """Ask again about our open proposals, and expire proposals (ours and theirs)."""
        while True:
            await trio.sleep(RETRY_INTERVAL)
            now = self.now_ms()
            for loan in list(self._open):
                p = self.get(loan)
                if p is None or p.state in FINAL:
                    self._open.discard(loan)
                    continue
                if p.document["expires"] < now:
                    self._save(p, "expire")
                    continue
                if p.role != "out":
                    continue
                now_s = self.ctx.clock.monotonic()
                if p.state == HELD and now_s - self._asked.get(loan, -HELD_RETRY) < HELD_RETRY:
                    continue
                self._asked[loan] = now_s
                self.ctx.spawn(self._send_proposal, p)

    # -- the agree stream --------------------------------------------------------------------

    async def _ask(self, pk: bytes, msg: Any) -> Any:
        """Send one request to ``pk`` on the agree protocol; its answer."""
        if not self.ctx.peers.is_connected(pk):
            raise _Unreachable(f"{peer_id(pk)} is not connected")
        stream = await self.ctx.open_stream(pk, agree.AGREE_PROTOCOL)
        stream.timeout = ANSWER_TIMEOUT
        try:
            with trio.fail_after(ANSWER_TIMEOUT):
                await stream.send(msg)
                return await stream.recv()
        except PeerGone as e:
            raise _Unreachable(str(e)) from None
        finally:
            await stream.close()

    async def serve(self, stream: FramedStream, pk: bytes) -> None:
        """Answer one request on an inbound agree stream."""
        stream.timeout = ANSWER_TIMEOUT
        msg = await stream.recv()
        try:
            answer = await self._answer(msg, pk)
        except ProtocolError as e:  # a push or request whose document breaks the rules
            raise PeerMisbehaved(e.message, e.code) from None
        await stream.send(answer)

    async def _answer(self, msg: Any, pk: bytes) -> Any:
        if isinstance(msg, agree.Propose):
            if msg.entries and self._behind(msg.contract, pk):
                await self.ctx.writer.ingest(list(msg.entries), pk, via="agree")  # only the sender's own chain
            answer = await self.decide(msg.contract, pk)
        elif isinstance(msg, agree.Countersigned):
            answer = await self._pushed_agreement(msg.contract)
        elif isinstance(msg, agree.Refused):
            answer = await self._pushed_refusal(msg, pk)
        elif isinstance(msg, agree.Transfer):
            answer = await self._transfer_offered(msg.transfer, pk)
        else:
            raise ProtocolError(f"{type(msg).__name__} is an answer, not a request", code="unexpected_message")
        return answer

    async def decide(self, data: bytes, sender: bytes) -> Any:
        """The answer to a proposal (rule 3 of protocol/lending/agree.py), recorded before it is sent."""
        try:
            env = open_proposal(data)
        except ProtocolError as e:
            return agree.Refused(bytes(32), "bad_proposal", e.message)
        doc, loan = env.document, env.id
        if acceptor(doc) != self.me or sender != doc["proposer"]:
            return agree.Refused(loan, "not_party", "this node is not the party that must countersign")
        if self.get(loan) is None:
            # Pull the proposer's chain up to its committed head first, outside the lock, so
            # that one proposal waiting for sync does not hold up the others.
            await self._synced_to(doc["proposer"], agree.committed_heads(doc, doc["proposer"])[0])
        async with self._decide_lock:
            p = self.get(loan)
            if p is not None:
                return _answer_of(p)
            code, reason = self._check(doc)
            p = Proposal(loan, "in", "", env.raw, code or "", reason or "")
            if code is not None:
                self._save(p, "refuse")
                self.ctx.count("loans.refused")
                return _answer_of(p)
            if self.settings["review"]:
                self._save(p, "receive")
                return agree.Held(loan)
            return await self._countersign(p, "countersign")

    def _check(self, doc: dict) -> tuple[str | None, str | None]:
        """(refusal code, reason) for a proposal addressed to us, or (None, None): the rule
        is ``protocol.agree.refusal``; this gathers what it asks about."""
        offer = self.book.get(doc["offer"])
        if offer is not None and offer.author != self.me:
            offer = None
        mine, theirs = agree.committed_heads(doc, self.me)
        why = agree.refusal(doc, now_ms=self.now_ms(), proposer_forked=doc["proposer"] in self.ctx.chains.forked_authors(),
                            offer=offer, offer_live=offer is not None and self._live(offer),
                            max_rate_bp=self.settings["max_rate_bp"], own_head_held=self._holds(self.me, mine),
                            proposer_head_held=self._holds(doc["proposer"], theirs))
        return why if why is not None else (None, None)

    def _live(self, offer: Any) -> bool:
        """The book drops cancelled offers; an expired one may linger until purged, and a
        taken one until its cancellation is stored."""
        return is_live(offer, self.now_ms()) and offer.id not in self._taken

    def _holds(self, author: bytes, head: list) -> bool:
        data = self.ctx.chains.get(author, head[0])
        if data is None:
            return False
        from protocol.entry import parse_entry

        return parse_entry(data).id == head[1]

    async def _synced_to(self, author: bytes, head: list) -> bool:
        """Whether our copy of ``author``'s chain reaches ``head``, pulling it first if not
        (woken by the write that brings it, not by polling)."""
        have = self.ctx.chains.head(author)
        if have is None or have.seq < head[0]:
            self.ctx.peers.request_sync(author)
            await self.ctx.writer.wait_head(author, head[0], HEAD_SYNC_WAIT)
        return self._holds(author, head)

    async def _countersign(self, p: Proposal, event: str) -> Any:
        env = countersign(open_envelope(p.contract), self.ctx.key)
        agreement = env.raw
        await self._record_agreement(agreement)  # first: our chain says so before anyone hears
        now = self.get(p.loan)
        if now is None or now.state not in FINAL:  # (not already moved by the proposer's entry)
            p.contract = agreement
            self._save(p, event)
        # Cancelling the taken offer (sign, store, gossip) need not delay the answer; the
        # decision lock already keeps a second taker out, since the offer is checked live.
        self._taken.add(env.document["offer"])
        self.ctx.spawn(self._consume_offer, env.document["offer"])
        return agree.Accepted(agreement)

    async def _consume_offer(self, offer_id: bytes) -> None:
        """An offer or request is taken once: cancel it in every book."""
        try:
            await self.book.cancel_own(offer_id)
        except Exception as e:  # already cancelled or expired: nothing more to do
            log.debug("cancel of taken offer %s: %s", offer_id.hex()[:16], e)

    async def _pushed_agreement(self, data: bytes) -> Any:
        env = open_agreement(data)
        if self.me not in (env.document["lender"], env.document["borrower"]):
            raise ProtocolError("an agreement this node is not party to", code="not_party")
        await self._agreed_elsewhere(env.raw)
        return agree.Ok(env.id)

    async def _agreed_elsewhere(self, agreement: bytes) -> None:
        env = open_agreement(agreement)
        await self._record_agreement(env.raw)
        p = self.get(env.id)
        if p is not None and p.state not in FINAL:
            p.contract = env.raw
            self._save(p, "seen_agreement")

    async def _pushed_refusal(self, msg: Any, sender: bytes) -> Any:
        p = self.get(msg.loan)
        if p is not None and p.role == "out" and p.state not in FINAL and counterparty(p.document, self.me) == sender:
            p.code, p.reason = msg.code, msg.reason
            self._save(p, "refused")
        return agree.Ok(msg.loan)

    # -- manual review -------------------------------------------------------------------------

    def pending(self) -> dict:
        out = []
        for loan in sorted(self._open):
            p = self.get(loan)
            if p is not None and p.role == "in" and p.state == PENDING:
                out.append(p.json())
        return {"pending": out}

    def _find_pending(self, ref: str) -> Proposal:
        ref = id_prefix(ref, "pending proposal")
        loans = [x for x in self._open if x.hex().startswith(ref)]
        ps = [p for p in (self.get(x) for x in loans) if p is not None and p.role == "in" and p.state == PENDING]
        return unique(ps, ref, "pending proposal", "unknown_proposal")

    async def accept(self, ref: str) -> dict:
        async with self._decide_lock:
            p = self._find_pending(ref)
            if p.document["expires"] < self.now_ms():
                self._save(p, "expire")
                raise ApiError("the proposal has expired; nothing was signed", code="expired")
            offer = self.book.get(p.document["offer"])
            if offer is None or not self._live(offer):
                p.code, p.reason = "offer_expired", "the offer was cancelled, taken or expired before review"
                self._save(p, "refuse")
                raise ApiError(p.reason, code="offer_expired")
            await self._countersign(p, "countersign")
        self.ctx.spawn(self._push, p.loan, agree.Countersigned(p.contract))
        return self.get(p.loan).json()

    async def reject(self, ref: str, reason: str) -> dict:
        async with self._decide_lock:
            p = self._find_pending(ref)
            p.code, p.reason = "rejected", reason
            self._save(p, "refuse")
        self.ctx.spawn(self._push, p.loan, agree.Refused(p.loan, "rejected", reason))
        return self.get(p.loan).json()

    async def _push(self, loan: bytes, msg: Any) -> None:
        """Tell the proposer the owner's decision; if it cannot be told now, it learns it by
        asking again (rule 2) or, for an agreement, from our chain."""
        p = self.get(loan)
        try:
            await self._ask(p.document["proposer"], msg)
        except Exception as e:
            log.info("could not tell %s about %s: %s", peer_id(p.document["proposer"]), loan.hex()[:16], e)

    # -- reacting to other chains ----------------------------------------------------------------

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
                await self._agreed_elsewhere(env.raw)
        elif e.kind == "loan.receipt":
            from protocol.lending.contract import open_receipt

            env = open_receipt(e.body["receipt"])
            if self.me in (env.document["payer"], env.document["payee"]):
                await self._record_document(env.document["loan"], env.id, "loan.receipt", {"receipt": env.raw})
        elif e.kind == "loan.transfer":
            env = open_transfer(e.body["transfer"])
            rec = self.read(env.document["loan"])
            parties = {env.document["from"], env.document["to"]}
            if rec.contract is not None:
                parties.add(rec.contract["borrower"])
            if self.me in parties:
                await self._record_document(env.document["loan"], env.id, "loan.transfer", {"transfer": env.raw})
        elif e.kind == "loan.declared" and e.body["what"] == "disbursement" and self.settings["auto_confirm"]:
            rec = self.read(e.body["loan"])
            if rec.contract is None or rec.receipts:
                return
            # only the lender's own declaration, on a loan this node is the borrower of
            if rules.refusal("auto_confirm", e.author, rec.contract, rec.state(self.today()), to=self.me) is None:
                await self.confirm(e.body["loan"].hex(), None)

    def check_append(self, kind: str, body: Any) -> None:
        """Refuse (``duplicate_document``) a ``ledger.append`` of a loan document this
        chain already records: a replay adds nothing but noise to the ledger."""
        from protocol.lending.contract import embedded_id, loan_of

        doc_id, loan = embedded_id(kind, body), loan_of(kind, body)
        if doc_id is None or loan is None:
            return  # not a two-party document, or unreadable: the kind's own rules decide
        if doc_id in self.read(loan).recorded_by(self.me):
            raise ApiError(f"this chain already records {kind[5:]} {doc_id.hex()[:16]}...", code="duplicate_document")

    async def _record_document(self, loan: bytes, doc_id: bytes, kind: str, body: dict) -> None:
        await self._append(kind, body, once=(loan, doc_id))

    # -- money moves and notices ------------------------------------------------------------------

    def find_loan(self, ref: Any) -> LoanRecord:
        """The agreed loan an id or unique id prefix (8 hex digits or more) names."""
        ref = id_prefix(ref, "loan")
        loans = [bytes.fromhex(ref)] if len(ref) == 64 else [x for x in loan_ids(self.ctx.index) if x.hex().startswith(ref)]
        records = [r for r in (self.read(x) for x in loans) if r.contract is not None]
        return unique(records, ref, "loan", "unknown_loan")

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

    def _amount(self, rec: LoanRecord, value: Any) -> int:
        if not isinstance(value, str):
            raise bad_params('"amount" is decimal text in the loan\'s currency, e.g. "250.00"')
        try:
            return parse_amount(value, rec.contract["currency"])
        except MoneyError as e:
            raise ApiError(e.message, code=e.code) from None

    def _allowed(self, action: str, rec: LoanRecord, st: Any, to: bytes | None = None) -> None:
        """Raise the refusal ``protocol.lending.rules`` gives ``action`` by this node, if any."""
        r = rules.refusal(action, self.me, rec.contract, st, to=to)
        if r is not None:
            raise ApiError(r.message, code=r.code)

    async def disburse(self, ref: Any, day: Any) -> dict:
        rec = self.find_loan(ref)
        self._allowed("disburse", rec, rec.state(self.today()))
        d = self._day(day)
        e = await self._append("loan.declared", {"loan": rec.loan, "what": "disbursement",
                                                 "amount": rec.contract["principal"], "date": d.isoformat()})
        return {"loan": rec.loan.hex(), "declared": "disbursement", "amount": rec.contract["principal"],
                "amount_text": _money(rec, rec.contract["principal"]), "date": d.isoformat(), "seq": e.seq}

    async def confirm(self, ref: Any, day: Any) -> dict:
        rec = self.find_loan(ref)
        c = rec.contract
        self._allowed("confirm", rec, rec.state(self.today()))
        d = self._day(day) if day is not None else _declared_day(rec, "disbursement") or self.today()
        return await self._receipt(rec, "disbursement", c["principal"], d, payer=c["lender"])

    async def repay(self, ref: Any, amount: Any, day: Any) -> dict:
        rec = self.find_loan(ref)
        self._allowed("repay", rec, rec.state(self.today()))
        minor, d = self._amount(rec, amount), self._day(day)
        e = await self._append("loan.declared", {"loan": rec.loan, "what": "repayment", "amount": minor,
                                                 "date": d.isoformat()})
        return {"loan": rec.loan.hex(), "declared": "repayment", "amount": minor, "amount_text": _money(rec, minor),
                "date": d.isoformat(), "seq": e.seq}

    async def receipt(self, ref: Any, amount: Any, day: Any) -> dict:
        rec = self.find_loan(ref)
        self._allowed("receipt", rec, rec.state(self.today()))
        return await self._receipt(rec, "repayment", self._amount(rec, amount), self._day(day),
                                   payer=rec.contract["borrower"])

    async def _receipt(self, rec: LoanRecord, what: str, amount: int, d: date, *, payer: bytes) -> dict:
        async with self._decide_lock:  # receipt numbers are handed out one at a time
            rec = self.read(rec.loan)
            n = rec.next_receipt_number(self.today())
            env = make_receipt(self.ctx.key, loan=rec.loan, n=n, what=what, amount=amount, day=d, payer=payer)
            e = await self._append("loan.receipt", {"receipt": env.raw})
        self.ctx.count("loans.receipts")
        return {"loan": rec.loan.hex(), "receipt": env.id.hex(), "n": n, "what": what, "amount": amount,
                "amount_text": _money(rec, amount), "date": d.isoformat(), "seq": e.seq}

    async def default(self, ref: Any) -> dict:
        rec = self.find_loan(ref)
        st = rec.state(self.today())
        self._allowed("default", rec, st)
        e = await self._append("loan.default", {"loan": rec.loan, "date": self.today().isoformat()})
        return {"loan": rec.loan.hex(), "notice": "default", "seq": e.seq, "days_past_due": st.days_past_due}

    async def writeoff(self, ref: Any) -> dict:
        rec = self.find_loan(ref)
        self._allowed("writeoff", rec, rec.state(self.today()))
        e = await self._append("loan.writeoff", {"loan": rec.loan, "date": self.today().isoformat()})
        return {"loan": rec.loan.hex(), "notice": "writeoff", "seq": e.seq}

    async def dispute(self, ref: Any, reason: Any) -> dict:
        rec = self.find_loan(ref)
        self._allowed("dispute", rec, rec.state(self.today()))
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
            raise bad_params('"reason" is text of 1 to 1000 characters')
        e = await self._append("loan.dispute", {"loan": rec.loan, "reason": reason})
        return {"loan": rec.loan.hex(), "notice": "dispute", "seq": e.seq}

    # -- transfers ------------------------------------------------------------------------------

    async def transfer(self, ref: Any, to: Any) -> dict:
        rec = self.find_loan(ref)
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
            answer = await self._ask(new, agree.Transfer(offer_env.raw))
        except (_Unreachable, PeerMisbehaved, trio.TooSlowError, OSError) as e:
            raise ApiError(f"cannot reach {peer_id(new)}: {e}", code="unreachable") from None
        if isinstance(answer, agree.Refused):
            raise ApiError(f"{peer_id(new)} refused the transfer: {answer.reason}", code=answer.code)
        if not isinstance(answer, agree.Accepted) or answer.field != "transfer":
            raise ApiError("the new lender's node answered something else", code="bad_answer")
        env = open_transfer(answer.document)
        if env.payload != offer_env.payload:
            raise ApiError("the new lender signed another transfer", code="bad_answer")
        await self._record_document(rec.loan, env.id, "loan.transfer", {"transfer": env.raw})
        return {"loan": rec.loan.hex(), "transfer": env.id.hex(), "to": peer_id(new), "after": doc["after"]}

    async def _transfer_offered(self, data: bytes, sender: bytes) -> Any:
        try:
            env = open_transfer(data, complete=False)
        except ProtocolError as e:
            return agree.Refused(bytes(32), "bad_proposal", e.message)
        doc = env.document
        if doc["to"] != self.me or doc["from"] != sender:
            return agree.Refused(doc["loan"], "not_party", "this transfer is not from the sender to this node")
        rec = self.read(doc["loan"])
        if rec.contract is None:
            self.ctx.peers.request_sync(sender)
            with trio.move_on_after(HEAD_SYNC_WAIT):
                for _ in range(int(HEAD_SYNC_WAIT / 0.1) + 1):  # a sync brings the agreement, or time runs out
                    if (rec := self.read(doc["loan"])).contract is not None:
                        break
                    await trio.sleep(0.1)
        if rec.contract is None:
            return agree.Refused(doc["loan"], "unknown_loan", "this node holds no agreement for that loan")
        why = rules.refusal("take_transfer", sender, rec.contract, rec.state(self.today()), to=self.me)
        if why is not None:
            return agree.Refused(doc["loan"], why.code, why.message)
        full = countersign(env, self.ctx.key)
        await self._record_document(rec.loan, full.id, "loan.transfer", {"transfer": full.raw})
        return agree.Accepted(full.raw, "transfer")

    # -- views --------------------------------------------------------------------------------------

    def show(self, ref: Any, at: Any) -> dict:
        rec = self.find_loan(ref)
        return loan_json(rec, self._at(at), self.me)

    def _at(self, at: Any) -> date:
        if at is None:
            return self.today()
        try:
            return parse_date(at, "at")
        except ProtocolError as e:
            raise ApiError(e.message, code=e.code) from None

    def list(self, role: Any, state: Any, at: Any) -> dict:
        today = self._at(at)
        out = []
        for loan in loan_ids(self.ctx.index):
            rec = self.read(loan)
            if rec.contract is None:
                continue
            try:
                st = rec.state(today)
            except ProtocolError as e:
                log.info("loan %s cannot be evaluated: %s", loan.hex()[:16], e.message)
                continue
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
                "start": c["start"], "term": c["term"],
            })
        for k, v in self.records.items(P_PROPOSAL):  # proposals never agreed, so the owner sees them too
            try:
                p = Proposal.decode(k[1:], v)
            except Exception:
                continue
            if p.state == AGREED or (state is not None and p.state != state):
                continue
            loan = p.loan
            d = p.document
            r = "lender" if d["lender"] == self.me else "borrower"
            if role not in (None, "any") and r != role:
                continue
            out.append({"loan": loan.hex(), "role": r, "state": p.state, "days_past_due": 0, "bucket": None,
                        "lender": peer_id(d["lender"]), "borrower": peer_id(d["borrower"]),
                        "currency": d["currency"], "principal": d["principal"],
                        "principal_text": format_amount(d["principal"], d["currency"]), "outstanding": 0,
                        "outstanding_text": format_amount(0, d["currency"]), "start": d["start"], "term": d["term"]})
        return {"as_of": today.isoformat(), "loans": out}

    def proposal(self, ref: Any) -> dict:
        ref = id_prefix(ref, "proposal")
        found = [k[1:] for k in self.records.keys(P_PROPOSAL) if k[1:].hex().startswith(ref)]
        return self.get(unique(found, ref, "proposal", "unknown_proposal")).json()

class _Unreachable(Exception):
    """The counterparty is not connected, or left mid-exchange."""


def _answer_of(p: Proposal) -> Any:
    """The answer a decided (or held) proposal gets whenever it is asked about again."""
    if p.state == AGREED:
        return agree.Accepted(p.contract)
    if p.state == PENDING:
        return agree.Held(p.loan)
    if p.state == EXPIRED:
        return agree.Refused(p.loan, "expired", "the proposal expired before it was accepted")
    return agree.Refused(p.loan, p.code or "rejected", p.reason or "refused")


def _money(rec: LoanRecord, minor: int) -> str:
    return f"{format_amount(minor, rec.contract['currency'])} {rec.contract['currency']}"


def _declared_day(rec: LoanRecord, what: str) -> date | None:
    """The latest day the payer of ``what`` declared it (only the payer's word counts)."""
    payer = rec.contract["lender" if what == "disbursement" else "borrower"]
    days = [d["date"] for d in rec.declared if d["what"] == what and d["by"] == payer]
    return parse_date(max(days)) if days else None
