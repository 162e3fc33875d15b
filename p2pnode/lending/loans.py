"""Loans on the running node: proposals over ``/p2plend/agree/1.0.0``, agreements,
receipts, notices and transfers, and their control methods (``loan.*``, docs/api.md).

The countersigning conversation is ``protocol.lending.agree``'s: one ``Proposer`` or
``Acceptor`` per open proposal decides every move, and this module only executes the
actions it returns (that module's rules 5 and 6). How each action is executed here:

===================  =====================================================================================
action               executed as
===================  =====================================================================================
``Persist``          ``records.write(P + loan, sync=True)``: durable before the next action
``AppendAgreement``  our ``loan.agreement`` entry, unless our chain records it (under the writer's lock)
``ConsumeOffer``     the offer counts as taken at once; its cancellation is spawned
``ReportRefusal``    counted (``loans.refused``) when a proposal is refused; ``loan accept`` fails with it
``Answer``           the message written on the agree stream being served
``Push``             a spawned request to the proposer; its answer changes nothing
``SendProposal``     once the loan's lock is released: ``propose`` on a new stream, and its outcome
                     fed back (``AnswerReceived`` for a verified answer, else ``SendFailed``)
``ScheduleResend``   once the lock is released: sleep on the node's clock until then, feed ``Tick``
===================  =====================================================================================

Promises:

- Events about one proposal are fed one at a time (a lock per loan), and the actions of
  each are executed in the order the machine gives them; fresh incoming proposals and the owner's accept and reject are also decided
  one at a time (``_decide_lock``), up to and including ``ConsumeOffer``: an offer is taken
  once, however many proposals name it.
- A node killed at any point resumes where its records say (``load``), and an action that
  fails leaves the machine as its record says (it is reloaded), never half moved.
- Each party records every two-party document it is part of (agreement, receipt,
  transfer) in its own chain, whichever way it learns of it: the answer on the agree
  stream, a push, gossip or sync (``on_entries``). A document is recorded once.
- Nothing here trusts the other side: proposals, answers and pushes are checked against
  the signatures, the offer book and this node's own copy of the chains before a machine
  hears of them.
- Every wait is on the node's clock and trio (``ctx.clock``), so a test's ``MockClock``
  moves expiries, retries and loan days together.
"""

from __future__ import annotations

import logging
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, AsyncIterator, Callable, Mapping, Union

import trio

from protocol.lending import agree, rules
from protocol.lending.agree import (
    AGREED, EXPIRED, IN, PENDING, Acceptor, AgreementSeen, AnswerReceived, AppendAgreement, ConsumeOffer,
    CountersignedPushed, Facts, OwnerAccepted, OwnerProposed, OwnerRejected, Persist, ProposalReceived, Proposer,
    Push, Record, RefusalPushed, ReportRefusal, ScheduleResend, SendFailed, SendProposal, Tick, conversation,
)
from protocol.lending.contract import (
    acceptor, contract_from, make_receipt, open_agreement, open_proposal, open_transfer, parse_date, propose,
    terms_of,
)
from protocol.envelope import countersign, open_envelope, peek_document, seal
from protocol.errors import ProtocolError
from protocol.keys import peer_id, public_key_from_peer_id
from protocol.lending.money import MoneyError, format_amount, format_rate, parse_amount
from protocol.lending.offer import is_live

from p2pnode.context import Context
from p2pnode.errors import ApiError, bad_params, id_prefix, unique
from p2pnode.lending.loanview import LoanRecord, loan_ids, loan_json, read_loan, role_of
from p2pnode.lending.offers import OfferBook
from p2pnode.net.streams import FramedStream
from p2pnode.net.sync import PeerGone, PeerMisbehaved

log = logging.getLogger(__name__)

P_PROPOSAL = b"P"  # + loan(32): this node's record of a proposal (agree.Record), in lending's record space

ANSWER_TIMEOUT = 15.0  # seconds for the acceptor's answer (it may sync our chain first)
HEAD_SYNC_WAIT = 5.0  # seconds the acceptor waits for the proposer's committed head to arrive
OUTCOME_WAIT = 5.0  # seconds a cancelled send may take to tell its machine it ended
MAX_FOLLOW_UPS = 2 * len(agree.QUICK_RESENDS_MS) + 1  # sends and resends one event can lead to, at most

Machine = Union[Proposer, Acceptor]
MakeEvent = Callable[[Machine], agree.Event]


@dataclass
class _Done:
    """What executing one event's actions leaves to its caller."""

    answer: Any = None  # an Answer's message, for the agree stream being served
    refusal: tuple[str, str] | None = None  # a ReportRefusal's (code, reason)
    later: list[Union[SendProposal, ScheduleResend]] = field(default_factory=list)  # run outside the lock


def proposal_json(record: Record) -> dict:
    """The proposal view (docs/api.md) of a stored record."""
    doc = open_envelope(record.contract).document
    return {
        "loan": record.loan.hex(), "role": record.role, "state": record.state, "code": record.code or None,
        "reason": record.reason or None, "lender": peer_id(doc["lender"]), "borrower": peer_id(doc["borrower"]),
        "proposer": peer_id(doc["proposer"]), "principal": doc["principal"],
        "principal_text": format_amount(doc["principal"], doc["currency"]), "currency": doc["currency"],
        "rate_bp": doc["rate_bp"], "rate_text": format_rate(doc["rate_bp"]), "term": doc["term"],
        "schedule": doc["schedule"], "start": doc["start"], "offer": doc["offer"].hex(),
        "expires": doc["expires"], "updated": record.updated,
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
        self._machines: dict[bytes, Machine] = {}  # the open proposals (either role), by loan
        self._locks: dict[bytes, trio.Lock] = {}  # per loan, while some task holds or awaits it
        self._decide_lock = trio.Lock()  # one decision at a time: an offer is taken once
        self._taken: set[bytes] = set()  # offers taken whose cancellation is not stored yet

    def now_ms(self) -> int:
        return self.ctx.clock.now_ms()

    def today(self) -> date:
        return self.ctx.clock.today()

    def read(self, loan: bytes) -> LoanRecord:
        """Everything the chains held here say about ``loan``."""
        return read_loan(self.ctx.chains, self.ctx.index, loan)

    # -- records and machines ---------------------------------------------------------------

    async def load(self) -> None:
        """Resume the proposals a previous run left open (bounded by what is stored). An open
        record whose agreement our chain records (the node died between the append and the
        persist) learns it first (agree rule 6e)."""
        for k, v in self.records.items(P_PROPOSAL):
            try:
                machine = conversation(Record.decode(k[1:], v), sign=self._sign)
            except Exception as e:
                log.warning("unreadable proposal record %s ignored: %s", k[1:].hex(), e)
                continue
            if machine.is_open:
                self._machines[machine.loan] = machine
        for loan in sorted(self._machines):
            ours = self._our_agreement(loan)
            if ours is not None:
                await self._step(loan, lambda m, a=ours: AgreementSeen(self.now_ms(), a))

    def get(self, loan: bytes) -> Record | None:
        """The stored record of proposal ``loan``, if any."""
        v = self.records.get(P_PROPOSAL + loan)
        return None if v is None else Record.decode(loan, v)

    def _sign(self, proposal: bytes) -> bytes:
        """The acceptor's countersignature (called by the machine on a countersign move only)."""
        return countersign(open_envelope(proposal), self.ctx.key).raw

    def _machine(self, loan: bytes) -> Machine | None:
        """The machine of ``loan``: the open one, or one resumed from a final record."""
        machine = self._machines.get(loan)
        if machine is not None:
            return machine
        record = self.get(loan)
        return None if record is None else conversation(record, sign=self._sign)

    @asynccontextmanager
    async def _locked(self, loan: bytes) -> AsyncIterator[None]:
        """Hold ``loan``'s lock; the lock is forgotten once nobody holds or awaits it."""
        lock = self._locks.setdefault(loan, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(loan) is lock:  # (a waiter would own it already)
                del self._locks[loan]

    async def _step(self, loan: bytes, event: MakeEvent, *, new: Callable[[], Machine] | None = None,
                    open_only: bool = False) -> _Done:
        """Feed ``loan``'s machine the event ``event(machine)`` makes, under the loan's lock,
        and execute the actions that belong there. With no record, ``new()`` makes the
        machine (without ``new``, nothing happens); ``open_only``: only an open machine.
        ``event`` may raise (``ApiError``) to refuse before the machine hears anything."""
        async with self._locked(loan):
            machine = self._machines.get(loan) if open_only else self._machine(loan)
            if machine is None and new is not None:
                machine = new()
            if machine is None:
                return _Done()
            return await self._execute(machine, machine.handle(event(machine)))

    async def _execute(self, machine: Machine, actions: list[agree.Action]) -> _Done:
        """Execute ``actions`` in order (the caller holds the loan's lock); sends and resends
        are left to the caller, to run outside the lock. If one fails, the machine is
        reloaded from its record, as a restart would."""
        done = _Done()
        try:
            for action in actions:
                if isinstance(action, Persist):
                    self._persist(machine, action.record)
                elif isinstance(action, AppendAgreement):
                    await self._record_agreement(action.agreement)
                elif isinstance(action, ConsumeOffer):
                    self._taken.add(action.offer)  # not live from now on, before the cancellation is stored
                    self.ctx.spawn(self._consume_offer, action.offer)
                elif isinstance(action, ReportRefusal):
                    done.refusal = (action.code, action.reason)
                    log.info("proposal %s refused here: %s (%s)", machine.loan.hex()[:16], action.code, action.reason)
                elif isinstance(action, agree.Answer):
                    assert done.answer is None, "one answer per request"
                    done.answer = action.message
                elif isinstance(action, Push):
                    self.ctx.spawn(self._push, machine.loan, action.to, action.message)
                elif isinstance(action, (SendProposal, ScheduleResend)):
                    done.later.append(action)
                else:
                    raise AssertionError(f"an action this node does not execute: {action!r}")
        except BaseException:
            self._reload(machine.loan)
            raise
        return done

    def _persist(self, machine: Machine, record: Record) -> None:
        """Store ``record`` durably; ``machine`` stays in memory while it is open."""
        assert record == machine.record(), "a record the machine did not make"
        self.records.write([(P_PROPOSAL + record.loan, record.encode())], sync=True)
        if machine.is_open:
            self._machines[record.loan] = machine
        else:
            self._machines.pop(record.loan, None)
        log.info("proposal %s (%s): %s", record.loan.hex()[:16], record.role, record.state)

    def _reload(self, loan: bytes) -> None:
        """Forget ``loan``'s machine in memory and resume it from its record."""
        self._machines.pop(loan, None)
        record = self.get(loan)
        if record is not None:
            machine = conversation(record, sign=self._sign)
            if machine.is_open:
                self._machines[loan] = machine

    async def _follow(self, loan: bytes, later: list[Union[SendProposal, ScheduleResend]]) -> None:
        """Run the sends and resends an event left, outside the loan's lock, feeding each
        outcome back to the machine (which may leave more)."""
        queue = deque(later)
        for _ in range(MAX_FOLLOW_UPS):
            if not queue:
                return
            action = queue.popleft()
            if isinstance(action, SendProposal):
                try:
                    outcome = await self._deliver(loan, action)
                except trio.Cancelled:  # (the owner's call went away, or the node stops)
                    await self._send_ended(loan)
                    raise
            else:
                await self.ctx.clock.sleep(max(0.0, (action.at_ms - self.now_ms()) / 1000))
                outcome = self._tick
            queue.extend((await self._step(loan, outcome)).later)
        assert not queue, f"proposal {loan.hex()[:16]}: more follow-ups than the quick resends allow"

    async def _send_ended(self, loan: bytes) -> None:
        """Tell the machine its send ended with no answer, even while being cancelled: a
        proposer with a send in flight never sends again, so every send gets an outcome."""
        with trio.CancelScope(shield=True), trio.move_on_after(OUTCOME_WAIT):
            await self._step(loan, lambda m: SendFailed(self.now_ms(), connected=False))

    def _tick(self, machine: Machine) -> Tick:
        return Tick(self.now_ms())

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

    def _our_agreement(self, loan: bytes) -> bytes | None:
        """The agreement our own chain records for ``loan``, if any."""
        for e in self.read(loan).entries:
            if e.author == self.me and e.kind == "loan.agreement":
                return e.body["contract"]
        return None

    # -- proposing -------------------------------------------------------------------------

    async def propose(self, offer_ref: str, amount: str | None, start: str | None, ttl_s: int) -> dict:
        """Sign a proposal taking an offer, store it, send it (and resend it quickly if the
        stream broke); the proposal view once it is answered or cannot be now."""
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
        done = await self._step(env.id, lambda m: OwnerProposed(self.now_ms()), new=lambda: Proposer.new(env.raw))
        await self._follow(env.id, done.later)  # the answer, or the quick resends; then the retry loop asks
        return proposal_json(self.get(env.id))

    async def _deliver(self, loan: bytes, send: SendProposal) -> MakeEvent:
        """Send our proposal; the event its outcome is: ``AnswerReceived`` for an answer
        that is one (an ``accepted`` only if it is this proposal's agreement), otherwise
        ``SendFailed``. Every send gets an outcome, so the machine never waits forever."""
        try:
            answer = await self._ask(send.to, agree.Propose(send.contract, self._tail(peek_document(send.contract))))
            if isinstance(answer, agree.Accepted):
                if answer.field != "contract" or open_agreement(answer.document).id != loan:
                    raise ProtocolError("the answer is not this proposal's agreement", code="bad_message")
            elif not isinstance(answer, (agree.Held, agree.Refused)):
                raise ProtocolError(f"{type(answer).__name__} is no answer to a proposal", code="unexpected_message")
        except Exception as e:  # (libp2p raises its own kinds too when a dial or stream fails)
            log.info("proposal %s not delivered: %s: %s", loan.hex()[:16], type(e).__name__, e)
        else:
            return lambda m: AnswerReceived(self.now_ms(), answer)
        connected = self.ctx.peers.is_connected(send.to)
        return lambda m: SendFailed(self.now_ms(), connected)

    def _behind(self, proposal: bytes, pk: bytes) -> bool:
        """Whether our copy of ``pk``'s chain lacks the head a proposal commits for it."""
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

    async def retry_loop(self) -> None:
        """Feed ``Tick`` to every open proposal every ``RETRY_INTERVAL_MS`` of the node's
        clock: ours are asked about again, and either side's expire."""
        while True:
            await self.ctx.clock.sleep(agree.RETRY_INTERVAL_MS / 1000)
            await self.tick()

    async def tick(self) -> None:
        """One pass of the retry loop; the sends it calls for run as tasks of their own."""
        for loan in sorted(self._machines):
            done = await self._step(loan, self._tick, open_only=True)
            if done.later:
                self.ctx.spawn(self._follow, loan, done.later)

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
        """The answer to a proposal (agree rule 3), recorded before it is sent: from the
        record if there is one (rule 2), else decided on the facts under ``_decide_lock``."""
        try:
            env = open_proposal(data)
        except ProtocolError as e:
            return agree.Refused(bytes(32), "bad_proposal", e.message)
        doc, loan = env.document, env.id
        if acceptor(doc) != self.me or sender != doc["proposer"]:
            return agree.Refused(loan, "not_party", "this node is not the party that must countersign")
        if self.get(loan) is not None:
            done = await self._step(loan, lambda m: ProposalReceived(self.now_ms()))
        else:
            # Pull the proposer's chain up to its committed head first, outside the locks, so
            # that one proposal waiting for sync does not hold up the others.
            await self._synced_to(doc["proposer"], agree.committed_heads(doc, doc["proposer"])[0])
            async with self._decide_lock:
                done = await self._step(loan, lambda m: self._received(m, doc),
                                        new=lambda: Acceptor.new(env.raw, sign=self._sign))
        if done.refusal is not None:
            self.ctx.count("loans.refused")
        assert done.answer is not None, "a proposal is always answered"
        return done.answer

    def _received(self, machine: Machine, doc: dict) -> ProposalReceived:
        """The event of a proposal arriving: with the facts rule 3 asks about, if this
        node has neither a record nor (rule 6e) an agreement of it in its chain."""
        now = self.now_ms()
        if machine.state is not None:
            return ProposalReceived(now)
        recorded = self._our_agreement(machine.loan)
        if recorded is not None:
            return ProposalReceived(now, recorded=recorded)
        return ProposalReceived(now, self._facts(doc), bool(self.settings["review"]))

    def _facts(self, doc: dict) -> Facts:
        """What ``protocol.agree.refusal`` asks about a proposal addressed to us."""
        offer = self.book.get(doc["offer"])
        if offer is not None and offer.author != self.me:
            offer = None
        mine, theirs = agree.committed_heads(doc, self.me)
        return Facts(proposer_forked=doc["proposer"] in self.ctx.chains.forked_authors(), offer=offer,
                     offer_live=offer is not None and self._live(offer), max_rate_bp=self.settings["max_rate_bp"],
                     own_head_held=self._holds(self.me, mine),
                     proposer_head_held=self._holds(doc["proposer"], theirs))

    def _live(self, offer: Any) -> bool:
        """The book drops cancelled offers; an expired one may linger until purged, and a
        taken one until its cancellation is stored."""
        return is_live(offer, self.now_ms()) and offer.id not in self._taken

    def _offer_live(self, offer_id: bytes) -> bool:
        offer = self.book.get(offer_id)
        return offer is not None and offer.author == self.me and self._live(offer)

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

    async def _consume_offer(self, offer_id: bytes) -> None:
        """An offer or request is taken once: cancel it in every book."""
        try:
            await self.book.cancel_own(offer_id)
        except Exception as e:  # already cancelled or expired: nothing more to do
            log.debug("cancel of taken offer %s: %s", offer_id.hex()[:16], e)
        else:
            self._taken.discard(offer_id)  # the book no longer holds it: not live either way

    def _party_machine(self, agreement: bytes) -> Callable[[], Machine]:
        """A new machine for an agreement this node signed and holds no record of."""
        env = open_agreement(agreement)
        if env.document["proposer"] == self.me:
            return lambda: Proposer.new(env.raw)
        return lambda: Acceptor.new(env.raw, sign=self._sign)

    async def _pushed_agreement(self, data: bytes) -> Any:
        env = open_agreement(data)
        if self.me not in (env.document["lender"], env.document["borrower"]):
            raise ProtocolError("an agreement this node is not party to", code="not_party")
        done = await self._step(env.id, lambda m: CountersignedPushed(self.now_ms(), env.raw),
                                new=self._party_machine(env.raw))
        return done.answer

    async def _agreed_elsewhere(self, agreement: bytes) -> None:
        """An agreement (verified, signed by us) found in another chain."""
        env = open_agreement(agreement)
        await self._step(env.id, lambda m: AgreementSeen(self.now_ms(), env.raw), new=self._party_machine(env.raw))

    async def _pushed_refusal(self, msg: Any, sender: bytes) -> Any:
        done = await self._step(msg.loan, lambda m: RefusalPushed(self.now_ms(), sender, msg.code, msg.reason))
        return done.answer if done.answer is not None else agree.Ok(msg.loan)  # (no record: nothing to refuse)

    # -- manual review -------------------------------------------------------------------------

    def pending(self) -> dict:
        out = [proposal_json(m.record()) for _, m in sorted(self._machines.items())
               if m.role == IN and m.state == PENDING]
        return {"pending": out}

    def _find_pending(self, ref: str) -> bytes:
        ref = id_prefix(ref, "pending proposal")
        loans = [x for x, m in self._machines.items()
                 if x.hex().startswith(ref) and m.role == IN and m.state == PENDING]
        return unique(loans, ref, "pending proposal", "unknown_proposal")

    @staticmethod
    def _if_pending(event: MakeEvent) -> MakeEvent:
        """``event``, for a proposal still pending when its lock is taken; else the owner's
        command fails (it raced the expiry, or the agreement arrived another way)."""

        def make(machine: Machine) -> agree.Event:
            if machine.state == EXPIRED:
                raise ApiError("the proposal has expired; nothing was signed", code="expired")
            if machine.role != IN or machine.state != PENDING:
                raise ApiError(f"the proposal is {machine.state}, not pending", code="unknown_proposal")
            return event(machine)

        return make

    async def accept(self, ref: str) -> dict:
        """Countersign a pending proposal (the owner's review), unless it expired or its
        offer is gone; the proposer is told by a push."""
        async with self._decide_lock:
            loan = self._find_pending(ref)
            done = await self._step(loan, self._if_pending(
                lambda m: OwnerAccepted(self.now_ms(), self._offer_live(m.document["offer"]))))
        if done.refusal is not None:
            code, reason = done.refusal
            raise ApiError(reason, code=code)
        return proposal_json(self.get(loan))

    async def reject(self, ref: str, reason: str) -> dict:
        async with self._decide_lock:
            loan = self._find_pending(ref)
            await self._step(loan, self._if_pending(lambda m: OwnerRejected(self.now_ms(), reason)))
        return proposal_json(self.get(loan))

    async def _push(self, loan: bytes, to: bytes, msg: Any) -> None:
        """Tell the proposer the owner's decision; if it cannot be told now, it learns it by
        asking again (rule 2) or, for an agreement, from our chain."""
        try:
            await self._ask(to, msg)
        except Exception as e:
            log.info("could not tell %s about %s: %s", peer_id(to), loan.hex()[:16], e)

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
                    await self.ctx.clock.sleep(0.1)
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
                p = Record.decode(k[1:], v)
            except Exception:
                continue
            if p.state == AGREED or (state is not None and p.state != state):
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
                        "outstanding_text": format_amount(0, d["currency"]), "start": d["start"], "term": d["term"]})
        return {"as_of": today.isoformat(), "loans": out}

    def proposal(self, ref: Any) -> dict:
        ref = id_prefix(ref, "proposal")
        found = [k[1:] for k in self.records.keys(P_PROPOSAL) if k[1:].hex().startswith(ref)]
        return proposal_json(self.get(unique(found, ref, "proposal", "unknown_proposal")))


class _Unreachable(Exception):
    """The counterparty is not connected, or left mid-exchange."""


def _money(rec: LoanRecord, minor: int) -> str:
    return f"{format_amount(minor, rec.contract['currency'])} {rec.contract['currency']}"


def _declared_day(rec: LoanRecord, what: str) -> date | None:
    """The latest day the payer of ``what`` declared it (only the payer's word counts)."""
    payer = rec.contract["lender" if what == "disbursement" else "borrower"]
    days = [d["date"] for d in rec.declared if d["what"] == what and d["by"] == payer]
    return parse_date(max(days)) if days else None
