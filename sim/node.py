"""An honest node: what p2pnode does with its store, its peers and its owner, driven by
events instead of trio tasks, and running the real pure machines of ``protocol/``.

Modelled on (and kept in step with):

- p2pnode/net/syncer.py: one pull at a time per peer (``request``: again once after the
  pull under way), on start, every ``SYNC_INTERVAL_MS``, and when gossip shows a gap;
  a gap is chased every ``GAP_RETRY_MS`` for ``GAP_PATIENCE_MS``. Each pull is a real
  ``protocol.sync.Puller``; each served stream a real ``protocol.sync.Server``; the
  messages cross the simulated network as real frames (``wire.frame``/``decode_message``).
- p2pnode/node.py's gossip handlers: entries and fork proofs are validated by
  ``wire.check_gossip`` before they are forwarded (gossipsub forwards what validates,
  before the node stores it); new entries are ingested, a gap triggers a pull from the
  sender; every fork proof found is published on the fraud topic.
- p2pnode/net/peers.py's scores: misbehaviour costs the peer its penalty; at
  ``BAN_SCORE`` it is not talked to for ``BAN_MS``.
- p2pnode/lending/countersigning.py: one ``agree.Proposer``/``Acceptor`` per proposal,
  its actions executed in order (``Persist`` durable first), ``Tick`` every
  ``RETRY_INTERVAL_MS``, an offer taken once (``ConsumeOffer``: the volatile ``taken``
  set, then a cancellation written and gossiped), the agreement recorded in our chain
  whichever way we learn of it, open records resumed on restart.

What the node's owner does (the workload) is in ``world``; the invariants watch through
``world.observe_*``. Nothing here reads a wall clock: a node's time is the world's plus
its skew.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timezone
from typing import Any, Callable

from protocol import sync, wire
from protocol.chain import Head
from protocol.entry import Entry, next_entry
from protocol.envelope import countersign, open_envelope
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.kinds import genesis_body
from protocol.lending import agree, book, offer as offers
from protocol.lending.contract import LOAN_KINDS, acceptor, embedded_id, open_agreement, open_proposal
from protocol.lending.agree import (
    Acceptor, AgreementSeen, AnswerReceived, AppendAgreement, ConsumeOffer, Facts, OwnerProposed, Persist,
    ProposalReceived, Proposer, Record, ReportRefusal, ScheduleResend, SendFailed, SendProposal, Tick, conversation,
)

from .disk import Disk, DiskFull
from .events import short
from .network import Stream
from .store import Store


EPOCH_MS = 1_780_000_000_000  # virtual time 0 is this wall time (2026-05-28), so dates are ordinary

SYNC_INTERVAL_MS = 5_000  # syncer.SYNC_INTERVAL
MAX_SYNC_ROUNDS = 1_000  # syncer.MAX_SYNC_ROUNDS
GAP_RETRY_MS = 500  # syncer.GAP_RETRY
GAP_PATIENCE_MS = 15_000  # syncer.GAP_PATIENCE
MAX_GAPS = 1024
BATCH = 256  # entries per get (wire.MAX_BATCH in the node; smaller here so that ranges take several gets)
PENALTY = {"bad_gossip": 10, "bad_frame": 50, "bad_entries": 25, "unexpected_message": 50}  # peers.PENALTY
BAN_SCORE = -100
BAN_MS = 600_000
SEEN_KEEP = 4_096  # gossip message ids remembered (gossipsub's seen cache)
LOAN_VALIDATORS = {k.name: k.validate for k in LOAN_KINDS}


class Stopped(Exception):
    """The node stopped in the middle of an event (a crash point or a full disk)."""


def msg_id(topic: str, data: bytes) -> bytes:
    return hashlib.sha256(topic.encode() + b"\0" + data).digest()[:16]


class Node:
    """One node. ``up`` is False while crashed or stopped; ``disk`` survives crashes,
    everything else is rebuilt by ``start``."""

    honest = True

    # ``world`` is a sim.world.World, not imported here: world imports this module.
    def __init__(self, world: "World", idx: int, key: SigningKey, skew_ms: int) -> None:
        self.world = world
        self.idx = idx
        self.key = key
        self.pk = key.public_key
        self.skew_ms = skew_ms
        self.disk = Disk()
        self.up = False
        self.life = 0  # restarts so far: timers of an earlier life do nothing
        self.started_at = 0
        self.writes = True  # whether it owns a chain (scale runs give most nodes none)
        self.parse: Callable[[bytes], Entry] = world.parse

    # -- life --------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) from what the disk holds (a crash point may stop it again)."""
        self.guard(self._start)

    def _start(self) -> None:
        self.life += 1
        self.up = True
        self.started_at = self.world.sched.now
        self.store = Store.open(self.disk, hashlib.sha256(b"sim-epoch %d %d" % (self.idx, self.life)).digest()[:16])
        self.syncing: dict[int, bool] = {}
        self.cursors: dict[int, wire.Cursor] = {}  # peer -> where the next pull from it starts (this life)
        self.gaps: dict[bytes, tuple[int, int]] = {}
        self.seen: dict[bytes, None] = {}
        self.score: dict[int, int] = {}
        self.banned: dict[int, int] = {}
        self.taken: set[bytes] = set()  # offers taken whose cancellation is not stored yet
        self.machines: dict[bytes, Proposer | Acceptor] = {}
        self.own_agreements: dict[bytes, bytes] = {}  # loan -> agreement our chain records
        for e in self.store.chains.get(self.pk, []):
            self._note_own(e)
        for loan, data in self.store.records():
            m = conversation(Record.decode(loan, data), sign=self._sign)
            if m.is_open:
                self.machines[loan] = m
        self.world.observe_start(self)
        if self.writes and not self.store.chains.get(self.pk):
            self.append("genesis", genesis_body(f"node-{self.idx}"))
        for loan in sorted(self.machines):  # agree rule 6e: died between the append and the persist
            if loan in self.own_agreements and self.up:
                self.step(loan, AgreementSeen(self.now_ms(), self.own_agreements[loan]))
        life = self.life
        self.every(self.world.rng.randint(0, SYNC_INTERVAL_MS), SYNC_INTERVAL_MS, "sync round", life,
                   self.request_all)
        self.every(self.world.rng.randint(0, agree.RETRY_INTERVAL_MS), agree.RETRY_INTERVAL_MS, "agree ticks",
                   life, self.tick_all)
        self.request_all()

    def crash(self, why: str) -> None:
        """Power lost (or fail-stop): volatile state and unsynced writes are gone."""
        if not self.up:
            return
        self.up = False
        self.disk.crash()
        self.world.net.crashed(self.idx)
        self.world.observe_crash(self, why)

    def every(self, first: int, period: int, what: str, life: int, act: Callable[[], None]) -> None:
        """Run ``act`` after ``first`` ms and then every ``period`` ms, for this life only."""
        def run() -> None:
            if self.up and self.life == life:
                self.guard(act)
                self.world.sched.after(period, f"{what} @{self.idx}", run)
        self.world.sched.after(first, f"{what} @{self.idx}", run)

    def later(self, delay: int, what: str, act: Callable[[], None]) -> None:
        life = self.life
        self.world.sched.after(delay, f"{what} @{self.idx}",
                               lambda: self.guard(act) if self.up and self.life == life else None)

    def guard(self, act: Callable[[], None]) -> None:
        """Run a piece of the node's work; a crash point or a full disk stops the node there."""
        try:
            act()
        except Stopped:
            pass
        except DiskFull as e:
            self.world.sched.note(f"node {self.idx} disk full: {e}; it stops")
            self.crash("disk full")
            self.world.observe_disk_full(self)

    def maybe_crash(self, point: str) -> None:
        """A crash point: the world decides (from the seed) whether the node dies here."""
        if self.world.crash_here(self, point):
            self.crash(f"crash at {point}")
            raise Stopped(point)

    def now_ms(self) -> int:
        return EPOCH_MS + self.world.sched.now + self.skew_ms

    def today(self) -> date:
        return datetime.fromtimestamp(self.now_ms() / 1000, timezone.utc).date()

    @property
    def peers(self) -> list[int]:
        now = self.world.sched.now
        return [p for p in self.world.net.links[self.idx] if self.banned.get(p, -1) < now]

    def penalise(self, peer: int, what: str) -> None:
        self.score[peer] = self.score.get(peer, 0) - PENALTY[what]
        self.world.sched.note(f"node {self.idx} penalises {peer}: {what} ({self.score[peer]})")
        if self.score[peer] <= BAN_SCORE:
            self.banned[peer] = self.world.sched.now + BAN_MS
            self.score[peer] = 0

    # -- own entries -------------------------------------------------------------------

    def append(self, kind: str, body: Any) -> Entry:
        """Sign, store durably, then announce (p2pnode: ledger.append, sync=True, then gossip)."""
        e = next_entry(self.key, self.store.head(self.pk), now_ms=self.now_ms(), kind=kind, body=body)
        self.world.observe_signed(self, e)
        self.maybe_crash("before own write")
        self.store.append_own(e, sync=self.world.bugs.get("forget_sync") != self.idx)
        self._note_own(e)
        self.world.observe_acked(self, e)
        self.maybe_crash("after own write")
        self.publish(wire.TOPIC_ENTRIES, wire.entries_message([e.envelope]))
        self.on_entries([e])
        return e

    def append_many(self, kind: str, bodies: list[Any]) -> None:
        """Several appends in one gossip window: one entries message carries them all
        (gossip.py batches what is appended within ``GOSSIP_WINDOW``)."""
        added = []
        for body in bodies:
            e = next_entry(self.key, self.store.head(self.pk), now_ms=self.now_ms(), kind=kind, body=body)
            self.store.append_own(e)
            self.world.observe_signed(self, e)
            self.world.observe_acked(self, e)
            added.append(e)
        for group in wire.split_entries([e.envelope for e in added]):
            self.publish(wire.TOPIC_ENTRIES, wire.entries_message(group))
        self.world.observe_entries(self, added)

    def _note_own(self, e: Entry) -> None:
        if e.kind == "loan.agreement":
            loan = embedded_id(e.kind, e.body)
            if loan is not None:
                self.own_agreements[loan] = e.body["contract"]

    # -- gossip ------------------------------------------------------------------------

    def publish(self, topic: str, data: bytes) -> None:
        self._seen(msg_id(topic, data))
        for p in self.peers:
            self.world.net.datagram(self.idx, p, topic, data)

    def _seen(self, mid: bytes) -> bool:
        if mid in self.seen:
            return True
        self.seen[mid] = None
        if len(self.seen) > SEEN_KEEP:
            del self.seen[next(iter(self.seen))]
        return False

    def on_datagram(self, sender: int, topic: str, data: bytes) -> None:
        self.guard(lambda: self._gossip(sender, topic, data))

    def _gossip(self, sender: int, topic: str, data: bytes) -> None:
        if self.banned.get(sender, -1) >= self.world.sched.now or self._seen(msg_id(topic, data)):
            return
        try:
            value = self._validate(topic, data)
        except ProtocolError:
            self.penalise(sender, "bad_gossip")
            return
        for p in self.peers:  # gossipsub forwards what validates, before the node stores it
            if p != sender:
                self.world.net.datagram(self.idx, p, topic, data)
        if topic == wire.TOPIC_ENTRIES:
            self._entries_gossip(sender, value)
        elif topic == wire.TOPIC_FRAUD:
            if self.store.record_fork(value):
                self.world.observe_proof(self, value)
        elif topic == offers.TOPIC_OFFERS:
            self.admit(value, data)

    def _validate(self, topic: str, data: bytes) -> Any:
        if topic == wire.TOPIC_ENTRIES:
            return [self.parse(v) for v in _entries_list(data)]
        if topic == offers.TOPIC_OFFERS:
            return offers.check_gossip(data)
        return wire.check_gossip(topic, data)

    def _entries_gossip(self, sender: int, entries: list[Entry]) -> None:
        new = [e.envelope for e in entries if not self.store.has(e.id)]
        if not new:
            return
        report = self.ingest(new)
        if report.errors:  # a gap: the entries before it come by sync
            for e in entries:
                head = self.store.head(e.author)
                if head is None or head.seq < e.seq:
                    self.note_gap(e.author, e.seq)
            self.request(sender)

    def ingest(self, envelopes, author: bytes | None = None):
        self.maybe_crash("before ingest")
        report = self.store.ingest(envelopes, author, parse=self.parse)
        for proof in report.forks:
            self.world.observe_proof(self, proof)
            self.publish(wire.TOPIC_FRAUD, proof.encode())
        if report.added:
            self.on_entries(report.added)
        return report

    # -- sync: when, and with whom (syncer.py) -------------------------------------------

    def request_all(self) -> None:
        for p in self.peers:
            self.request(p)

    def request(self, peer: int) -> None:
        if self.world.bugs.get("no_sync") == self.idx:
            return  # the injected bug: the node never pulls (it learns by gossip alone)
        if peer in self.syncing:
            self.syncing[peer] = True
            return
        self.syncing[peer] = False
        self._pull(peer, 1)

    def note_gap(self, author: bytes, seq: int) -> None:
        old = self.gaps.get(author)
        self.gaps[author] = (max(seq, old[0] if old else 0), self.world.sched.now + GAP_PATIENCE_MS)
        if len(self.gaps) > MAX_GAPS:
            del self.gaps[min(self.gaps, key=lambda a: self.gaps[a][1])]

    def _open_gaps(self) -> bool:
        for author, (seq, until) in list(self.gaps.items()):
            head = self.store.head(author)
            if until < self.world.sched.now or (head is not None and head.seq >= seq):
                del self.gaps[author]
        return bool(self.gaps)

    def _pulled(self, peer: int, rounds: int) -> None:
        """A pull from ``peer`` ended: again if asked meanwhile, then chase open gaps."""
        if self.syncing.get(peer) and rounds < MAX_SYNC_ROUNDS and peer in self.peers:
            self.syncing[peer] = False
            self._pull(peer, rounds + 1)
            return
        self.syncing.pop(peer, None)
        if self._open_gaps() and peer in self.peers:
            def again() -> None:
                if peer in self.peers and peer not in self.syncing and self._open_gaps():
                    self.request(peer)
            self.later(GAP_RETRY_MS, f"gap retry ->{peer}", again)

    # -- sync: one pull, the real Puller over a stream -----------------------------------

    def _pull(self, peer: int, rounds: int) -> None:
        s = self.world.net.open(self.idx, peer, wire.SYNC_PROTOCOL)
        puller = sync.Puller(batch=BATCH, since=self.cursors.get(peer, wire.NO_CURSOR))
        end = s.end_of(self.idx)
        done = [False]

        def finish() -> None:
            if not done[0]:
                done[0] = True
                self.world.net.close(s, self.idx)
                self._pulled(peer, rounds)

        def run(actions: list) -> None:
            for _ in range(puller.max_events + 1):  # node work is answered at once: a bounded loop
                nxt = None
                for a in actions:
                    if isinstance(a, sync.Send):
                        self.world.net.send(s, self.idx, wire.frame(a.message), _name(a.message))
                    elif isinstance(a, sync.ReadHeads) and a.authors is not None:
                        found = ((x, self.store.head(x)) for x in a.authors)  # (only the authors changed)
                        nxt = sync.HeadsRead({x: h for x, h in found if h is not None})
                    elif isinstance(a, sync.ReadHeads):
                        nxt = sync.HeadsRead(self.store.heads())
                    elif isinstance(a, sync.Ingest):
                        report = self.ingest(a.envelopes, a.author)
                        nxt = sync.Ingested(len(report.added), tuple(report.forks), tuple(report.errors))
                    elif isinstance(a, sync.Finished):
                        result = a.result
                        if result.cursor is not None:
                            self.cursors[peer] = result.cursor
                        if result.errors and not result.forks:  # a peer relaying a fork is not at fault
                            self.penalise(peer, "bad_entries")
                        finish()
                    elif isinstance(a, sync.Misbehaved):
                        self.penalise(peer, "bad_frame" if a.code != "unexpected_message" else a.code)
                        finish()
                    elif isinstance(a, sync.Lost):
                        finish()
                if nxt is None:
                    return
                actions = puller.feed(nxt)
            raise AssertionError("a pull outran its bound")

        def receive(data: bytes) -> None:
            if puller.ended:
                return
            self.guard(lambda: run(puller.feed(_received(data))))

        def gone(reason: str) -> None:
            if not puller.ended and puller.awaits_peer:
                self.guard(lambda: run(puller.feed(sync.Gone(reason))))
            finish()

        end.receive, end.gone = receive, gone
        run(puller.begin())

    # -- sync: the listener, the real Server ---------------------------------------------

    def on_stream(self, s: Stream, protocol: str) -> None:
        peer = s.ends[0].node
        if self.banned.get(peer, -1) >= self.world.sched.now:
            self.world.net.close(s, self.idx)
            return
        if protocol == wire.SYNC_PROTOCOL:
            self._serve_sync(s, peer)
        elif protocol == agree.AGREE_PROTOCOL:
            self._serve_agree(s, peer)

    def _serve_sync(self, s: Stream, peer: int) -> None:
        server = sync.Server()
        end = s.end_of(self.idx)

        def run(actions: list) -> None:
            for _ in range(3):
                nxt = None
                for a in actions:
                    if isinstance(a, sync.Send):
                        self.world.net.send(s, self.idx, self.frame_for(peer, a.message), _name(a.message))
                    elif isinstance(a, sync.ReadChanges):
                        nxt = self.changes_for(peer, a.since, a.limit)
                    elif isinstance(a, sync.ReadHeads):
                        nxt = sync.HeadsRead(self.heads_for(peer), self.mark() if a.marked else None)
                    elif isinstance(a, sync.ReadChain):
                        nxt = sync.ChainRead(tuple(self.chain_for(peer, a.author, a.start, a.limit)))
                    elif isinstance(a, (sync.Finished, sync.Misbehaved)):
                        self.world.net.close(s, self.idx)
                if nxt is None:
                    return
                actions = server.feed(nxt)
            raise AssertionError("a request outran its bound")

        def receive(data: bytes) -> None:
            if not server.ended:
                self.guard(lambda: run(server.feed(_received(data))))

        def gone(reason: str) -> None:
            if not server.ended:
                run(server.feed(sync.Gone(reason)))

        end.receive, end.gone = receive, gone

    # What this node tells a peer (hostile nodes lie here).
    def heads_for(self, peer: int) -> dict[bytes, Head]:
        return self.store.heads()

    def mark(self) -> wire.Cursor:
        return wire.Cursor(self.store.epoch, self.store.counter)

    def changes_for(self, peer: int, since: wire.Cursor, limit: int) -> sync.ChangesRead:
        """The answer to ``ReadChanges`` (p2pnode/net/sync.py's ``read_changes``)."""
        if not wire.cursor_holds(since, self.mark()):
            return sync.ChangesRead(self.mark(), None)
        upto, changes = self.store.changes(since.counter, limit)
        return sync.ChangesRead(wire.Cursor(self.store.epoch, upto), tuple(changes))

    def chain_for(self, peer: int, author: bytes, start: int, limit: int) -> list[bytes]:
        return self.store.chain(author, start, limit)

    def frame_for(self, peer: int, message: Any) -> bytes:
        return wire.frame(message)

    # -- the offer book (book.py's rules) ------------------------------------------------

    def admit(self, item: Any, raw: bytes) -> None:
        decision = book.admit(item, _BookView(self), self.now_ms())
        if isinstance(decision, book.Add):
            assert decision.evicts is None, "the sim's books never fill"
            self.store.put_offer(item)
            self.world.observe_offer(self, item)
        elif isinstance(decision, book.Cancel):
            self.store.put_cancel(decision.offer_id, decision.author, raw, decision.removes)

    def publish_offer(self, raw: bytes) -> None:
        self.admit(offers.parse_book_message(raw), raw)
        self.publish(offers.TOPIC_OFFERS, raw)

    # -- countersigning (countersigning.py executes the agree machines) ------------------

    def _sign(self, proposal: bytes) -> bytes:
        return countersign(open_envelope(proposal), self.key).raw

    def machine(self, loan: bytes) -> Proposer | Acceptor | None:
        m = self.machines.get(loan)
        if m is not None:
            return m
        for k, data in self.store.records():
            if k == loan:
                return conversation(Record.decode(loan, data), sign=self._sign)
        return None

    def step(self, loan: bytes, event: Any, *, new: Callable[[], Any] | None = None,
             reply: Callable[[agree.AgreeMessage], None] | None = None) -> None:
        """Feed ``loan``'s machine and execute its actions in order (countersigning._step)."""
        m = self.machine(loan)
        if m is None and new is not None:
            m = new()
        if m is None:
            return
        try:
            actions = m.handle(event)
        except (agree.AgreeError, ValueError) as e:
            self.world.sched.note(f"node {self.idx} {short(loan)}: {type(event).__name__} not taken: {e}")
            return
        self.world.sched.note(f"node {self.idx} {short(loan)} {type(event).__name__} -> {m.state}: "
                              + ", ".join(type(a).__name__ for a in actions))
        if m.is_open:
            self.machines[loan] = m
        else:
            self.machines.pop(loan, None)
        sends = []
        for a in actions:
            self.maybe_crash(f"before {type(a).__name__}")
            if isinstance(a, Persist):
                self.store.put_record(loan, a.record.encode())
            elif isinstance(a, AppendAgreement):
                if loan not in self.own_agreements:
                    self.append("loan.agreement", {"contract": a.agreement})
            elif isinstance(a, ConsumeOffer):
                if self.world.bugs.get("offer_twice") == self.idx:
                    continue  # the injected bug: the node forgets that the offer is taken
                self.taken.add(a.offer)
                self.later(1, "cancel taken offer", lambda o=a.offer: self.cancel_own(o))
            elif isinstance(a, ReportRefusal):
                self.world.sched.note(f"node {self.idx} refused {short(loan)}: {a.code}")
            elif isinstance(a, agree.Answer):
                if reply is not None:
                    reply(a.message)
            elif isinstance(a, (SendProposal, ScheduleResend)):
                sends.append(a)
            elif isinstance(a, agree.Push):
                pass  # owner review is not simulated (review is off), so nothing pushes
        for a in sends:  # outside the loan's lock in the node: after the rest
            if isinstance(a, SendProposal):
                self.send_proposal(loan, a)
            else:
                self.later(max(0, a.at_ms - self.now_ms()), f"resend {short(loan)}",
                           lambda: self.step(loan, Tick(self.now_ms())))

    def cancel_own(self, offer_id: bytes) -> None:
        o = self.store.offers.get(offer_id)
        if o is None or o.author != self.pk:
            self.taken.discard(offer_id)
            return
        env = offers.make_cancel(self.key, offer_id, self.now_ms())
        self.publish_offer(env.raw)
        self.taken.discard(offer_id)

    def tick_all(self) -> None:
        if self.world.bugs.get("no_ticks") == self.idx:
            return  # the injected bug: the node forgets to feed Tick
        for loan in sorted(self.machines):
            if self.up:
                self.step(loan, Tick(self.now_ms()))

    def propose(self, proposal: bytes) -> None:
        """The owner proposes (``loan propose``): a signed proposal, stored, then sent."""
        m = Proposer.new(proposal)
        self.step(m.loan, OwnerProposed(self.now_ms()), new=lambda: m)

    def send_proposal(self, loan: bytes, a: SendProposal) -> None:
        to = self.world.index_of(a.to)
        s = self.world.net.open(self.idx, to, agree.AGREE_PROTOCOL)
        end = s.end_of(self.idx)
        mine = self.proposal_entries(a.contract)
        answered = [False]

        def receive(data: bytes) -> None:
            answered[0] = True
            self.world.net.close(s, self.idx)
            self.guard(lambda: self._answer(loan, data))

        def gone(reason: str) -> None:
            if not answered[0]:
                answered[0] = True
                self.guard(lambda: self.step(loan, SendFailed(self.now_ms(), connected=reason != "unreachable")))

        end.receive, end.gone = receive, gone
        self.world.net.send(s, self.idx, agree.encode(agree.Propose(a.contract, mine)), f"propose {short(loan)}")

    def proposal_entries(self, contract: bytes) -> tuple[bytes, ...]:
        """Our last entries up to the committed head (agree rule 1)."""
        doc = open_envelope(contract).document
        head = agree.committed_heads(doc, self.pk)[0]
        chain = self.store.chains.get(self.pk, [])[:head[0]]
        return tuple(e.envelope for e in chain[-agree.MAX_PROPOSAL_ENTRIES:])

    def _answer(self, loan: bytes, data: bytes) -> None:
        try:
            msg = agree.decode(data[4:])
            if isinstance(msg, agree.Accepted):
                env = open_agreement(msg.document)
                if env.id != loan:
                    raise ProtocolError("an agreement to another contract")
            event: Any = AnswerReceived(self.now_ms(), msg)
        except ProtocolError:
            event = SendFailed(self.now_ms())
        self.step(loan, event)

    def _serve_agree(self, s: Stream, peer: int) -> None:
        end = s.end_of(self.idx)

        def reply(msg: agree.AgreeMessage) -> None:
            self.world.net.send(s, self.idx, agree.encode(msg), type(msg).__name__)
            self.world.net.close(s, self.idx)

        def receive(data: bytes) -> None:
            self.guard(lambda: self._proposal(data, reply))

        end.receive = receive

    def _proposal(self, data: bytes, reply: Callable) -> None:
        try:
            msg = agree.decode(data[4:])
            if not isinstance(msg, agree.Propose):
                return
            env = open_proposal(msg.contract)
        except ProtocolError:
            return
        doc = env.document
        if acceptor(doc) != self.pk:
            return  # not ours to countersign (the node answers not_party; nothing changes here)
        if msg.entries:
            self.ingest(list(msg.entries), doc["proposer"])
        loan = env.id
        m = self.machine(loan)
        now = self.now_ms()
        if m is not None and m.state is not None:
            event = ProposalReceived(now)
        elif loan in self.own_agreements:
            event = ProposalReceived(now, recorded=self.own_agreements[loan])
        else:
            event = ProposalReceived(now, self.facts(doc), False)
        self.step(loan, event, new=lambda: Acceptor.new(env.raw, sign=self._sign), reply=reply)

    def facts(self, doc: dict) -> Facts:
        o = self.store.offers.get(doc["offer"])
        if o is not None and o.author != self.pk:
            o = None
        mine, theirs = agree.committed_heads(doc, self.pk)
        live = o is not None and offers.is_live(o, self.now_ms()) and o.id not in self.taken
        if live and "taken_from_chain" in self.world.config.fixes and self.world.bugs.get("offer_twice") is None:
            live = o.id not in self.offers_agreed()  # the fix: our chain says what we took
        return Facts(proposer_forked=doc["proposer"] in self.store.forks, offer=o, offer_live=live,
                     policy=None, own_head_held=self.holds(self.pk, mine),
                     proposer_head_held=self.holds(doc["proposer"], theirs))

    def offers_agreed(self) -> set[bytes]:
        """The offers our chain records an agreement on (taken, whatever the book says)."""
        return {open_envelope(a).document["offer"] for a in self.own_agreements.values()}

    def holds(self, author: bytes, head: list) -> bool:
        e = self.store.entry(author, head[0])
        return e is not None and e.id == head[1]

    # -- loan entries: what the node does when they arrive (loans.py) ----------------------

    def on_entries(self, added: list[Entry]) -> None:
        for e in added:
            if e.kind != "loan.agreement" or e.author == self.pk:
                continue
            try:
                LOAN_VALIDATORS[e.kind](e)
            except ProtocolError:
                continue
            agreement = e.body["contract"]
            doc = open_envelope(agreement).document
            if self.pk not in (doc["lender"], doc["borrower"]):
                continue
            loan = embedded_id(e.kind, e.body)
            if doc["proposer"] == self.pk:
                new = lambda a=agreement: Proposer.new(a)
            else:
                new = lambda a=agreement: Acceptor.new(a, sign=self._sign)
            self.step(loan, AgreementSeen(self.now_ms(), agreement), new=new)
        self.world.observe_entries(self, added)


class _BookView:
    """book.BookView over the node's store."""

    def __init__(self, node: Node) -> None:
        self.s = node.store
        self.me = node.key.public_key

    def held(self, offer_id: bytes):
        return self.s.offers.get(offer_id)

    def cancelled(self, offer_id: bytes, author: bytes) -> bool:
        return (offer_id, author) in self.s.cancels

    def size(self) -> int:
        return len(self.s.offers)

    def live(self, author: bytes, now_ms: int) -> int:
        return sum(1 for o in self.s.offers.values() if o.author == author and offers.is_live(o, now_ms))

    def orphans(self) -> int:
        return sum(1 for (o, _a) in self.s.cancels if o not in self.s.offers)

    # Standing (book.py rule 5) is not simulated: every other author is a stranger, which
    # the sim's few offers never fill a book with.
    def standing(self, author: bytes) -> int:
        return 3 if author == self.me else 0

    def own(self, author: bytes) -> bool:
        return author == self.me

    def weakest(self):
        if not self.s.offers:
            return None
        o = min(self.s.offers.values(), key=lambda o: (self.standing(o.author), -o.created, o.id))
        return o.id, self.standing(o.author)


def _entries_list(data: bytes) -> list[bytes]:
    """The envelopes of an entries gossip message (wire.check_gossip without parsing them:
    the node's ``parse`` does that, cached in scale mode)."""
    from protocol import codec

    value = codec.decode(data, max_size=wire.MAX_GOSSIP_SIZE)
    if type(value) is not list or not 1 <= len(value) <= wire.MAX_GOSSIP_ENTRIES:
        raise wire.WireError("an entries message is an array of envelopes")
    if not all(type(v) is bytes for v in value):
        raise wire.WireError("an entries message holds envelopes (bin) only")
    return value


def _name(msg: Any) -> str:
    """A sync message as the trace shows it: its type, and the range it names or brings."""
    if isinstance(msg, wire.Get):
        return f"get {short(msg.author)} {msg.start}+{msg.limit}"
    if isinstance(msg, wire.Entries):
        return f"entries {short(msg.author)} {msg.start}+{len(msg.entries)}"
    if isinstance(msg, wire.Heads):
        return f"heads ({len(msg.heads)})"
    return type(msg).__name__


def _received(data: bytes) -> Any:
    """What a frame that arrived is for a sync machine: a message, or a garbled frame."""
    try:
        n = wire.frame_length(data[:wire.FRAME_HEADER])
        if n != len(data) - wire.FRAME_HEADER:
            raise wire.WireError("frame length does not match", code="truncated")
        return sync.Received(wire.decode_message(data[wire.FRAME_HEADER:]))
    except ProtocolError as e:
        return sync.BadFrame(e)
