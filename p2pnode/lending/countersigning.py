"""Countersigning on the running node: proposals over ``/p2plend/agree/1.0.0``, from the
taker's proposal to both parties' ``loan.agreement`` entries, with the owner's review.

The countersigning conversation is ``protocol.lending.agree``'s: one ``Proposer`` or
``Acceptor`` per open proposal decides every move, and this module only executes the
actions it returns (that module's rules 5 and 6). How each action is executed here:

===================  =====================================================================================
action               executed as
===================  =====================================================================================
``Persist``          ``P + loan`` written durably before the next action, by the writer's group commit
                     (``writer.write_records``: concurrent proposals share their fsyncs)
``AppendAgreement``  our ``loan.agreement`` entry, unless our chain records it (under the writer's lock);
                     the ``Persist`` right after it, if any, in the same write (one batch, one fsync)
``ConsumeOffer``     nothing to store: our agreement entry, appended before, indexes the part of the
                     offer it takes in its own write (``TAKEN_INDEX``); once nothing remains of the
                     offer (fill.py), its cancellation is spawned
``ReportRefusal``    counted (``loans.refused``) when a proposal is refused; ``loan accept`` fails with it
``Answer``           the message written on the agree stream being served
``Push``             a spawned request to the proposer; its answer changes nothing
``SendProposal``     once the loan's lock is released: ``propose`` on a new stream, and its outcome
                     fed back (``AnswerReceived`` for a verified answer, else ``SendFailed``)
``ScheduleResend``   once the lock is released: sleep on the node's clock until then, feed ``Tick``
===================  =====================================================================================

Promises:

- Events about one proposal are fed one at a time (a lock per loan), and the actions of
  each are executed in the order the machine gives them; fresh incoming proposals and the
  owner's accept and reject are also decided one at a time (``_decide_lock``), up to and
  including ``ConsumeOffer``: an offer is filled in parts (fill.py), each admitted against
  the parts agreed before it, so however many proposals name it at once, the parts never
  sum past its amount; the excess is refused with ``offer_exhausted``.
- A node killed at any point resumes where its records say (``load``), and an action that
  fails leaves the machine as its record says (it is reloaded), never half moved.
- Each party records the agreement in its own chain whichever way it learns of it: the
  answer on the agree stream, a push, gossip or sync (``agreed_elsewhere``), once.
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

from protocol.envelope import countersign, open_envelope, peek_document
from protocol.errors import ProtocolError
from protocol.keys import peer_id
from protocol.lending import agree, fill
from protocol.lending.agree import (
    AGREED, EXPIRED, IN, PENDING, REFUSED, Acceptor, AgreementSeen, AnswerReceived, AppendAgreement, ConsumeOffer,
    CountersignedPushed, Facts, OwnerAccepted, OwnerProposed, OwnerRejected, Persist, ProposalReceived, Proposer,
    Push, Record, RecordError, RefusalPushed, ReportRefusal, ScheduleResend, SendFailed, SendProposal, Tick, conversation,
)
from protocol.lending.contract import TAKEN_INDEX, acceptor, contract_from, open_agreement, open_proposal, parse_date, propose, terms_of
from protocol.lending.money import MoneyError, format_amount, format_rate, parse_amount
from protocol.lending.offer import is_live

from p2pnode.context import Context
from p2pnode.lending import fills
from p2pnode.errors import ApiError, id_prefix, unique
from p2pnode.lending.ask import Asker
from p2pnode.lending.documents import LoanDocuments
from p2pnode.lending.offers import OfferBook

log = logging.getLogger(__name__)

P_PROPOSAL = b"P"  # + loan(32): this node's record of a proposal (agree.Record), in lending's record space
P_PURGE = b"Q"  # + until(8) + loan(32): b"", when an incoming proposal's record that never agreed goes

KEEP_UNAGREED_MS = 24 * 3600 * 1000  # how long the record of an incoming proposal refused or expired is kept
PURGE_BATCH = 1000  # records purged at most per pass of the retry loop

HEAD_SYNC_WAIT = 5.0  # seconds the acceptor waits for the proposer's committed head to arrive
MAX_AWAITED_GAP = 100_000
"""Entries the acceptor's copy of the proposer's chain may lack for it to wait
``HEAD_SYNC_WAIT`` for them: a pull verifies far fewer than this in that time on any
machine (bench/sync.py), so a proposal committing a head further ahead (seq 10^12: free
to sign) is refused at once, with a pull requested, and holds no answer for 5 s. An
honest proposer that far ahead is asked again by its retries once the pull is done."""
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
        "expires": doc["expires"], "updated": record.updated, "policy": doc.get("policy"),
    }


class Countersigning:
    """This node's proposals, either role, each run by its machine. ``settings`` are
    lending's (``review``); ``policy`` the policy in force (policies.PolicyInForce), which
    checks what this node proposes and what it is asked to countersign."""

    def __init__(self, ctx: Context, book: OfferBook, docs: LoanDocuments, settings: Mapping[str, Any],
                 policy: Any) -> None:
        self.ctx = ctx
        self.policy = policy
        self.book = book
        self.docs = docs
        self.settings = settings
        self.me = ctx.me
        self.records = ctx.records
        self._machines: dict[bytes, Machine] = {}  # the open proposals (either role), by loan
        self._locks: dict[bytes, trio.Lock] = {}  # per loan, while some task holds or awaits it
        self._decide_lock = trio.Lock()  # one decision at a time: an offer is taken once
        self._asker = Asker(ctx)  # (its streams are kept between requests)

    def now_ms(self) -> int:
        return self.ctx.clock.now_ms()

    def today(self) -> date:
        return self.ctx.clock.today()

    async def load(self) -> None:
        """Resume the proposals a previous run left open (bounded by what is stored). An open
        record whose agreement our chain records (the node died between the append and the
        persist) learns it first (agree rule 6e)."""
        for k, v in self.records.items(P_PROPOSAL):
            try:
                machine = conversation(Record.decode(k[1:], v), sign=self._sign)
            except RecordError as e:
                log.warning("unreadable proposal record %s ignored: %s", k[1:].hex(), e)
                continue
            if machine.is_open:
                self._machines[machine.loan] = machine
        for offer in self.book.live():
            if offer.author == self.me and self.used_up(offer):  # killed before its cancellation was stored
                self.ctx.spawn(self._consume_offer, offer.id)
        for loan in sorted(self._machines):
            ours = self.docs.our_agreement(loan)
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
        joined: Persist | None = None  # a Persist written with the agreement before it
        try:
            for i, action in enumerate(actions):
                if action is joined:
                    self._persisted(machine, action.record)
                elif isinstance(action, Persist):
                    await self.ctx.writer.write_records(self.records, self._record_puts(machine, action.record))
                    self._persisted(machine, action.record)
                elif isinstance(action, AppendAgreement):
                    # Rule 6b holds a fortiori: the entry and the record are durable together.
                    following = actions[i + 1] if i + 1 < len(actions) else None
                    joined = following if isinstance(following, Persist) else None
                    records = None if joined is None else (self.records, self._record_puts(machine, joined.record), [])
                    await self.docs.record_agreement(action.agreement, records=records)
                elif isinstance(action, ConsumeOffer):
                    assert self.taken(action.offer), "an offer consumed before our agreement is stored"
                    offer = self.book.get(action.offer)
                    if offer is None or self.used_up(offer):
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

    def _record_puts(self, machine: Machine, record: Record) -> list[tuple[bytes, bytes]]:
        """The puts that store ``record`` (written durably by the caller). The record of an
        incoming proposal that ended without an agreement is kept ``KEEP_UNAGREED_MS``
        (``purge``): anyone can send proposals, and their records must not pile up. Asked
        again after that, the node decides afresh (agree rule 2 holds while it is kept)."""
        assert record == machine.record(), "a record the machine did not make"
        puts = [(P_PROPOSAL + record.loan, record.encode())]
        if record.role == IN and record.state in (REFUSED, EXPIRED):
            puts.append((P_PURGE + (record.updated + KEEP_UNAGREED_MS).to_bytes(8, "big") + record.loan, b""))
        return puts

    def _persisted(self, machine: Machine, record: Record) -> None:
        """After ``record`` is durable: ``machine`` stays in memory while it is open."""
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

    async def propose(self, offer_ref: str, amount: str | None, start: str | None, ttl_s: int) -> dict:
        """Sign a proposal taking an offer, store it, send it (and resend it quickly if the
        stream broke); the proposal view once it is answered or cannot be now."""
        offer = self.book.find(offer_ref)
        if offer.author == self.me:
            raise ApiError("that offer is your own: another node takes it", code="own_offer")
        now = self.now_ms()
        if offer.expires <= now:
            raise ApiError("that offer has expired", code="offer_expired")
        filled = fills.fill_now(self.ctx, offer)  # (as this node holds the author's chain)
        if amount is None:
            principal = filled.remaining or offer.max_amount
        else:
            try:
                principal = parse_amount(amount, offer.currency)
            except MoneyError as e:
                raise ApiError(e.message, code=e.code) from None
        cur = offer.currency
        if principal > offer.max_amount:
            raise ApiError(f"amount {format_amount(principal, cur)} {cur} is above the offer's "
                           f"{format_amount(offer.max_amount, cur)}", code="bad_amount")
        why = fill.admit_to(filled, principal)
        if why is not None:
            raise ApiError(f"{why.message} ({format_amount(filled.remaining, cur)} {cur} of "
                           f"{format_amount(offer.max_amount, cur)} remain, as this node sees the offer)", code=why.code)
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
                                lender_head=heads[0], borrower_head=heads[1], created=now, expires=now + ttl_s * 1000,
                                policy=self.policy.name)
        except ProtocolError as e:
            raise ApiError(f"cannot make that contract: {e.message}", code=e.code) from None
        self.policy.refuse_contract(doc, "this loan")  # our own policy, before anything is signed
        try:
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
            answer = await self.ask(send.to, agree.Propose(send.contract, self._tail(peek_document(send.contract))))
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

    def purge(self, limit: int = PURGE_BATCH) -> int:
        """Delete up to ``limit`` records of incoming proposals that ended without an
        agreement more than ``KEEP_UNAGREED_MS`` ago; how many went. Reads only what is due."""
        now, due = self.now_ms(), []
        for k in self.records.keys(P_PURGE):
            if int.from_bytes(k[1:9], "big") > now or len(due) >= limit:
                break
            due.append(k)
        records = [(k, self.get(k[9:])) for k in due]
        self.records.write([], due + [P_PROPOSAL + r.loan for _, r in records
                                      if r is not None and r.role == IN and r.state in (REFUSED, EXPIRED)])
        return len(due)

    async def tick(self) -> None:
        """One pass of the retry loop; the sends it calls for run as tasks of their own."""
        self.purge()
        for loan in sorted(self._machines):
            done = await self._step(loan, self._tick, open_only=True)
            if done.later:
                self.ctx.spawn(self._follow, loan, done.later)

    async def ask(self, pk: bytes, msg: Any) -> Any:
        """One request to ``pk`` on the agree stream, and its answer (p2pnode/lending/ask.py)."""
        return await self._asker.ask(pk, msg)

    async def answer(self, msg: Any, pk: bytes) -> Any:
        """The answer to a countersigning request on an inbound agree stream (a transfer
        is the loans' to answer); ``ProtocolError`` for one that breaks the rules."""
        if isinstance(msg, agree.Propose):
            if msg.entries and self._behind(msg.contract, pk):
                await self.ctx.writer.ingest(list(msg.entries), pk, via="agree")  # only the sender's own chain
            return await self.decide(msg.contract, pk)
        if isinstance(msg, agree.Countersigned):
            return await self._pushed_agreement(msg.contract)
        if isinstance(msg, agree.Refused):
            return await self._pushed_refusal(msg, pk)
        raise ProtocolError(f"{type(msg).__name__} is an answer, not a request", code="unexpected_message")

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
        recorded = self.docs.our_agreement(machine.loan)
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
                     offer_live=offer is not None and self._live(offer), policy=self.policy.contract_refusal(doc, offer),
                     own_head_held=self._holds(self.me, mine),
                     proposer_head_held=self._holds(doc["proposer"], theirs),
                     fill=None if offer is None else fills.refusal(self.ctx, offer, doc["principal"]))

    def _live(self, offer: Any) -> bool:
        """The book drops cancelled offers; an expired one may linger until purged, and a
        used-up one until its cancellation is stored."""
        return is_live(offer, self.now_ms()) and not self.used_up(offer)

    def used_up(self, offer: Any) -> bool:
        """Whether nothing remains of ``offer`` (fill.py): its parts, read from the
        agreements our chain holds, reach its amount (the book's ``taken_in_full``)."""
        return self.book.taken_in_full(offer)

    def taken(self, offer_id: bytes) -> bool:
        """Whether our chain holds an agreement taking ``offer_id``: durable in the same
        write as our countersignature, so a node killed before the cancellation is stored
        never lets the offer be taken again."""
        return any(True for _ in self.ctx.index.keys(TAKEN_INDEX + offer_id + self.me))

    def _fill_refusal(self, doc: dict) -> tuple[str, str] | None:
        """Why the part ``doc`` asks for no longer fits what remains of its offer, or None."""
        offer = self.book.get(doc["offer"])
        return None if offer is None else fills.refusal(self.ctx, offer, doc["principal"])

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
        gap = head[0] - (0 if have is None else have.seq)
        if gap > 0:
            self.ctx.peers.request_sync(author)
            if gap <= MAX_AWAITED_GAP:
                await self.ctx.writer.wait_head(author, head[0], HEAD_SYNC_WAIT)
            else:
                self.ctx.count("loans.head_too_far")
        return self._holds(author, head)

    async def _consume_offer(self, offer_id: bytes) -> None:
        """An offer or request is taken once: cancel it in every book."""
        try:
            await self.book.cancel_own(offer_id)
        except Exception as e:  # already cancelled or expired: nothing more to do
            log.debug("cancel of taken offer %s: %s", offer_id.hex()[:16], e)

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

    async def agreed_elsewhere(self, agreement: bytes) -> None:
        """An agreement (verified, signed by us) found in another chain. Nothing happens
        where ``agree.seen_changes_nothing`` says so: that is every agreement once agreed,
        ours coming back and the counterparty's after ours, where the machine used to be
        read from its record and fed for nothing (final is final, and a stored entry stays,
        so this needs no lock)."""
        env = open_agreement(agreement)
        record = None if env.id in self._machines else self.get(env.id)
        if record is not None and agree.seen_changes_nothing(record, env.id in self.docs.recorded(env.id)):
            return
        await self._step(env.id, lambda m: AgreementSeen(self.now_ms(), env.raw), new=self._party_machine(env.raw))

    async def _pushed_refusal(self, msg: Any, sender: bytes) -> Any:
        done = await self._step(msg.loan, lambda m: RefusalPushed(self.now_ms(), sender, msg.code, msg.reason))
        return done.answer if done.answer is not None else agree.Ok(msg.loan)  # (no record: nothing to refuse)

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
                lambda m: OwnerAccepted(self.now_ms(), self._offer_live(m.document["offer"]),
                                        self._fill_refusal(m.document))))
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
            await self.ask(to, msg)
        except Exception as e:
            log.info("could not tell %s about %s: %s", peer_id(to), loan.hex()[:16], e)

    def proposal(self, ref: Any) -> dict:
        ref = id_prefix(ref, "proposal")
        found = [k[1:] for k in self.records.keys(P_PROPOSAL) if k[1:].hex().startswith(ref)]
        return proposal_json(self.get(unique(found, ref, "proposal", "unknown_proposal")))

    def unagreed(self) -> list[Record]:
        """Every stored proposal never agreed (either role), so that its owner sees it too."""
        out = []
        for k, v in self.records.items(P_PROPOSAL):
            try:
                record = Record.decode(k[1:], v)
            except RecordError:
                continue
            if record.state != AGREED:
                out.append(record)
        return out
