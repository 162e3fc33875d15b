"""One simulated run: the nodes, what their owners do, the faults, and the verdict.

A run has three phases, all in virtual time and all drawn from ``random.Random(seed)``:

1. *Faults* (``0 .. heal_at``): owners append entries, lenders publish offers, borrowers
   take them, loans are disbursed and repaid; meanwhile the network loses, delays,
   duplicates and reorders, partitions come and go, nodes crash (at random times and at
   crash points inside their work) and restart from their disks, a disk fills up, clocks
   are skewed, and the hostile nodes cheat.
2. *Heal* (at ``heal_at``): the last partition heals, every node is restarted, owners stop.
3. *Convergence* (``heal_at .. heal_at + converge_bound_ms``): the network keeps losing
   and delaying, but nothing else happens; the honest nodes must converge.

The invariants (invariants.py) are checked as things happen and at the end. A run that
breaks one stops at once with a ``Result`` that names it, with the seed and the trace.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

from protocol.entry import Entry, parse_entry
from protocol.envelope import open_envelope
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.lending import offer as offers
from protocol.lending.contract import contract_from, embedded_id, make_receipt, propose, terms_of

from . import invariants
from .events import Scheduler, Stop, short
from .hostile import Equivocator, Liar, Overfiller
from .network import Faults, Network
from .node import Node

TARGET_PEERS = 4  # p2pnode/net/connections.py: each node dials peers while it has fewer than this
PROPOSAL_TTL_MS = 20_000
CHECK_EVERY_MS = 250  # how often the periodic invariants run


@dataclass
class Config:
    nodes: int = 6  # honest nodes
    equivocators: int = 1
    liars: int = 1
    overfillers: int = 1
    lenders: int = 2  # the first honest nodes each publish offers
    heal_at: int = 40_000  # ms: the end of the fault phase
    converge_bound_ms: int = 60_000
    notes_every: tuple[int, int] = (1_000, 6_000)  # ms between an owner's appends
    faults: Faults = field(default_factory=lambda: Faults(loss=0.03, duplicate=0.03, spike=0.05))
    partitions: int = 2
    crashes: float = 1.0  # random crashes per node over the fault phase (on average)
    step_crash: float = 0.004  # chance of a crash at each crash point
    disk_full: bool = True
    skew_ms: int = 3_000  # every node's clock is off by up to this
    far_skew_ms: int = 120_000  # and one node's by up to this (its proposals look expired, or early)
    lending: bool = True
    # Injected bugs, for the tests that show an invariant can fail: name -> node index.
    # forget_sync: own entries written without sync=True; offer_twice: ConsumeOffer is
    # ignored; no_ticks: Tick is never fed; no_sync: the node never pulls.
    bugs: dict = field(default_factory=dict)
    # Fixes of what the simulator found (docs/simulation.md, "Findings"), which p2pnode
    # has too; ``python -m sim --as-is`` runs the node as it was before them.
    fixes: frozenset = frozenset({"taken_from_chain"})
    writers: int | None = None  # scale mode: only this many nodes own a chain (None: all)
    entries_each: int | None = None  # scale mode: entries each writer appends at the start
    parse: Callable[[bytes], Entry] = parse_entry
    trace: bool = True
    max_events: int = 5_000_000


@dataclass
class Result:
    seed: int
    ok: bool
    invariant: str | None = None
    detail: str = ""
    trace: list[str] = field(default_factory=list)
    digest: str = ""
    events: int = 0
    virtual_ms: int = 0
    wall_s: float = 0.0
    converged_ms: int | None = None  # after the heal
    messages: int = 0
    nodes: int = 0
    loans: int = 0
    proofs: int = 0
    crashes: int = 0

    def report(self) -> str:
        head = (f"seed {self.seed}: " + ("ok" if self.ok else f"FAILED {self.invariant}: {self.detail}")
                + f" ({self.events} events, {self.virtual_ms} virtual ms, {self.wall_s:.2f} s,"
                f" converged {self.converged_ms} ms after the heal, {self.loans} loans, {self.proofs} fork proofs,"
                f" {self.crashes} crashes, {self.messages / max(self.nodes, 1):.0f} messages per node,"
                f" trace {self.digest[:16]})")
        if self.ok:
            return head
        return "\n".join([head, f"trace (last {len(self.trace)} events):"] + self.trace
                         + [f"replay: python -m sim --seed {self.seed}"])


def node_key(seed: int, i: int) -> SigningKey:
    """Node ``i``'s key in run ``seed``: the same run, the same keys."""
    return SigningKey.from_seed(hashlib.sha256(b"p2pnode-sim/%d/%d" % (seed, i)).digest())


class World:
    def __init__(self, seed: int, config: Config) -> None:
        self.seed = seed
        self.config = config
        self.rng = random.Random(seed)
        self.sched = Scheduler()
        self.net = Network(self.sched, self.rng, config.faults)
        self.parse = config.parse
        self.bugs = config.bugs
        self.nodes: list[Node] = []
        self.by_key: dict[bytes, int] = {}
        self.acked: dict[tuple[bytes, int], bytes] = {}
        self.written: dict[tuple[bytes, int], bytes] = {}
        self.agreed_by_offer: dict[bytes, dict[bytes, None]] = {}
        self.taken_by: dict[tuple[int, bytes], None] = {}  # (borrower, offer) already taken
        self.converged_at: int | None = None
        self.healed_at: int | None = None
        self.owners_on = True
        self.crashes = 0
        self.loans = 0
        # Scale runs: the entries every node must hold, and how many of them each holds.
        self.target: int | None = None
        self.holding: list[int] = []
        self.done = 0
        self._build()

    # -- the network of nodes ------------------------------------------------------------

    def _build(self) -> None:
        c = self.config
        kinds = ([Node] * c.nodes + [Equivocator] * c.equivocators + [Liar] * c.liars
                 + [Overfiller] * c.overfillers)
        for i, cls in enumerate(kinds):
            skew = self.rng.randint(-c.skew_ms, c.skew_ms) if c.skew_ms else 0
            node = cls(self, i, node_key(self.seed, i), skew)
            node.writes = c.writers is None or i < c.writers
            self.nodes.append(node)
            self.net.add(node)
            self.by_key[node.pk] = i
        if c.far_skew_ms:
            far = self.rng.choice(self.nodes)
            far.skew_ms = self.rng.randint(-c.far_skew_ms, c.far_skew_ms)
        n = len(self.nodes)
        for i in range(n):  # each node dials TARGET_PEERS others; links are both ways
            for j in self.rng.sample(range(n - 1), min(TARGET_PEERS, n - 1)):
                self.net.link(i, j if j < i else j + 1)
        self._connect_honest()

    def _connect_honest(self) -> None:
        """Join the honest nodes' components (through bootstrap peers, in the node) so that
        convergence without the hostile nodes is possible at all."""
        honest = [n.idx for n in self.honest_nodes()]
        seen = {honest[0]}
        todo = [honest[0]]
        while todo:
            for p in self.net.links[todo.pop()]:
                if p not in seen and self.nodes[p].honest:
                    seen.add(p)
                    todo.append(p)
        for i in honest:
            if i not in seen:
                self.net.link(i, honest[0])
                seen.add(i)

    def honest_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.honest]

    def index_of(self, pk: bytes) -> int:
        return self.by_key[pk]

    # -- observers: where the invariants look ---------------------------------------------

    def observe_start(self, node: Node) -> None:
        self.sched.note(f"node {node.idx} starts (life {node.life}), holding "
                        f"{sum(len(c) for c in node.store.chains.values())} entries")
        if node.honest:
            invariants.held_acks(self, node, authors=frozenset((node.pk,)))

    def observe_crash(self, node: Node, why: str) -> None:
        self.crashes += 1
        self.sched.note(f"node {node.idx} down: {why}")

    def observe_disk_full(self, node: Node) -> None:
        def freed() -> None:
            node.disk.capacity = None
            self.restart(node)
        self.sched.after(self.rng.randint(2_000, 8_000), f"operator frees node {node.idx}'s disk", freed)

    def observe_signed(self, node: Node, e: Entry) -> None:
        if node.honest:
            first = self.written.get((e.author, e.seq))
            if first is not None and first != e.id:
                raise Stop("self_fork", f"honest node {node.idx} signed a second entry at seq {e.seq} "
                           f"after writing {short(first)}")

    def observe_acked(self, node: Node, e: Entry) -> None:
        self.written[(e.author, e.seq)] = e.id
        if node.honest:
            self.acked[(e.author, e.seq)] = e.id
            if e.kind == "loan.agreement":
                doc = open_envelope(e.body["contract"]).document
                offer_author = doc["lender"] if doc["proposer"] == doc["borrower"] else doc["borrower"]
                if offer_author == node.pk:
                    loans = self.agreed_by_offer.setdefault(doc["offer"], {})
                    loans[embedded_id(e.kind, e.body)] = None
                    if len(loans) > 1:
                        raise Stop("offer_overfilled", f"node {node.idx} countersigned {len(loans)} loans on its "
                                   f"offer {short(doc['offer'])}")

    def observe_proof(self, node: Node, proof: ForkProof) -> None:
        author = self.nodes[self.by_key[proof.author]] if proof.author in self.by_key else None
        self.sched.note(f"node {node.idx} holds a fork proof against {short(proof.author)} at seq {proof.seq}")
        if author is not None and author.honest:
            raise Stop("self_fork", f"a valid fork proof names honest node {author.idx} at seq {proof.seq}")

    def observe_entries(self, node: Node, added: list[Entry]) -> None:
        if self.target is not None and added:
            before = self.holding[node.idx]
            self.holding[node.idx] = before + len(added)
            if before < self.target <= self.holding[node.idx]:
                self.done += 1
                if self.done == len(self.nodes) and self.healed_at is not None:  # exact, not to the check
                    self.converged_at = self.sched.now
                    self.sched.halt()

    def observe_offer(self, node: Node, o: offers.Offer) -> None:
        """A borrower that sees a lend offer takes it (a while later: its owner decides)."""
        if not self.config.lending or o.author == node.pk or o.side != "lend" or not self.owners_on:
            return
        if (node.idx, o.id) in self.taken_by or not (node.honest or isinstance(node, Overfiller)):
            return
        if node.idx < self.config.lenders:
            return
        self.taken_by[(node.idx, o.id)] = None
        node.later(self.rng.randint(200, 3_000), f"take offer {short(o.id)}", lambda: self.take(node, o))

    # -- faults ----------------------------------------------------------------------------

    def crash_here(self, node: Node, point: str) -> bool:
        """Whether ``node`` dies at crash point ``point`` (then its restart is scheduled)."""
        if not (self.owners_on and self.config.step_crash > 0 and self.rng.random() < self.config.step_crash):
            return False
        self._will_restart(node)
        return True

    def _will_restart(self, node: Node) -> None:
        self.sched.after(self.rng.randint(200, 5_000), f"restart node {node.idx}", lambda: self.restart(node))

    def restart(self, node: Node) -> None:
        if not node.up and node.disk.capacity is None:
            node.start()

    def _schedule_faults(self) -> None:
        c = self.config
        end = c.heal_at
        n = len(self.nodes)
        for _ in range(c.partitions):
            at = self.rng.randint(0, max(1, end - 5_000))
            length = self.rng.randint(2_000, 15_000)
            members = list(range(n))
            self.rng.shuffle(members)
            cut = self.rng.randint(1, n - 1)
            groups = [sorted(members[:cut]), sorted(members[cut:])]
            self.sched.at(at, f"partition {groups}", lambda g=groups: self.net.partition(g))
            self.sched.at(min(at + length, end), "heal", self.net.heal)
        for node in self.nodes:
            crashes = sum(1 for _ in range(4) if self.rng.random() < c.crashes / 4)
            for _ in range(crashes):
                at = self.rng.randint(0, end)
                self.sched.at(at, f"crash node {node.idx}", lambda nd=node: self._crash(nd))
        if c.disk_full:
            victim = self.rng.choice(self.honest_nodes())
            at = self.rng.randint(1_000, end // 2)
            self.sched.at(at, f"node {victim.idx}'s disk fills up", lambda: self._fill(victim))
        for node in self.nodes:
            if isinstance(node, Equivocator):
                self.sched.at(self.rng.randint(2_000, end - 5_000), f"node {node.idx} equivocates",
                              lambda nd=node: nd.guard(nd.equivocate) if nd.up else None)
            if isinstance(node, Liar):
                self.sched.at(self.rng.randint(0, 3_000), f"node {node.idx} spams", lambda nd=node: self._spam(nd))

    def _spam(self, liar: Liar) -> None:
        """Every 3 s of the fault phase, whatever its life: junk on the core topics."""
        if self.owners_on:
            if liar.up:
                liar.guard(liar.spam)
            self.sched.after(3_000, f"node {liar.idx} spams", lambda: self._spam(liar))

    def _crash(self, node: Node) -> None:
        if node.up and self.owners_on:
            node.crash("random crash")
            self._will_restart(node)

    def _fill(self, node: Node) -> None:
        if node.up:
            node.disk.capacity = len(node.disk.view) + self.rng.randint(0, 4)

    # -- the owners ------------------------------------------------------------------------

    def _schedule_owners(self) -> None:
        c = self.config
        for node in self.nodes:
            if not node.honest or not node.writes:
                continue
            if c.entries_each is not None:
                continue
            t = self.rng.randint(*c.notes_every)
            k = 0
            while t < c.heal_at:
                k += 1
                self.sched.at(t, f"owner of {node.idx} appends", lambda nd=node, k=k: self.owner_note(nd, k))
                t += self.rng.randint(*c.notes_every)
            if c.lending:
                self.sched.at(self.rng.randint(0, 3_000), f"owner of {node.idx} looks at loans",
                              lambda nd=node: self.owner_loans(nd))
        if c.lending:
            for node in self.honest_nodes()[:c.lenders]:
                for at in (self.rng.randint(500, 3_000), self.rng.randint(c.heal_at // 3, c.heal_at // 2)):
                    self.sched.at(at, f"owner of {node.idx} offers", lambda nd=node: self.owner_offer(nd))

    def owner_note(self, node: Node, k: int) -> None:
        if node.up and self.owners_on:
            node.guard(lambda: node.append("note", {"text": f"note {k}"}))

    def owner_offer(self, node: Node) -> None:
        if not (node.up and self.owners_on):
            return
        now = node.now_ms()
        env = offers.make_offer(node.key, side="lend", currency="EUR", min_amount=10_000, max_amount=500_000,
                                rate_bp=900, term="6m", created=now, expires=now + 3_600_000)
        node.guard(lambda: node.publish_offer(env.raw))

    def take(self, node: Node, o: offers.Offer) -> None:
        """The borrower's owner proposes to take ``o`` (the overfiller: several times at once)."""
        if not self.owners_on:
            return
        lender_head = node.store.head(o.author)
        own = node.store.head(node.pk)
        if lender_head is None or own is None:
            return  # the node has not synced the lender's chain yet: its owner tries no more
        now = node.now_ms()
        for k in range(getattr(node, "takes", 1)):
            principal = self.rng.randint(o.min_amount, o.max_amount)
            doc = contract_from(o.id, terms_of(o), taker=node.pk, principal=principal, start=node.today(),
                                lender_head=(lender_head.seq, lender_head.id), borrower_head=(own.seq, own.id),
                                created=now, expires=now + PROPOSAL_TTL_MS)
            node.propose(propose(node.key, doc).raw)

    def owner_loans(self, node: Node) -> None:
        """Money moves outside the system; the owners record it: the borrower the
        disbursement it received, the lender that receipt and a repayment it received."""
        def act() -> None:
            for loan, agreement in sorted(node.own_agreements.items()):
                doc = open_envelope(agreement).document
                mine = self._receipts(node, node.pk, loan)
                if doc["borrower"] == node.pk and 1 not in mine:
                    day = node.today()
                    env = make_receipt(node.key, loan=loan, n=1, what="disbursement", amount=doc["principal"],
                                       day=max(day, _date(doc["start"])), payer=doc["lender"])
                    node.append("loan.receipt", {"receipt": env.raw})
                elif doc["lender"] == node.pk:
                    theirs = self._receipts(node, doc["borrower"], loan)
                    if 1 in theirs and 1 not in mine:
                        node.append("loan.receipt", {"receipt": theirs[1]})
                    elif 1 in mine and 2 not in mine:
                        first = open_envelope(mine[1]).document["date"]
                        env = make_receipt(node.key, loan=loan, n=2, what="repayment", amount=doc["principal"] // 7,
                                           day=_date(first) + timedelta(days=30), payer=doc["borrower"])
                        node.append("loan.receipt", {"receipt": env.raw})
        if self.owners_on:
            if node.up:
                node.guard(act)
            self.sched.after(3_000, f"owner of {node.idx} looks at loans", lambda: self.owner_loans(node))

    @staticmethod
    def _receipts(node: Node, author: bytes, loan: bytes) -> dict[int, bytes]:
        out = {}
        for e in node.store.chains.get(author, []):
            if e.kind == "loan.receipt":
                doc = open_envelope(e.body["receipt"]).document
                if doc["loan"] == loan:
                    out[doc["n"]] = e.body["receipt"]
        return out

    # -- the run ---------------------------------------------------------------------------

    def _periodic(self) -> None:
        for node in self.honest_nodes():
            if node.up:
                invariants.not_past_expiry(self, node)
        if self.healed_at is not None and self.converged_at is None and invariants.converged(self):
            self.converged_at = self.sched.now
            self.sched.note(f"converged, {self.sched.now - self.healed_at} ms after the heal")
        if self.converged_at is None:
            self.sched.after(CHECK_EVERY_MS, "check", self._periodic)
        else:
            self.sched.halt()

    def _heal(self) -> None:
        self.owners_on = False
        self.net.heal()
        self.healed_at = self.sched.now
        for node in self.nodes:
            node.disk.capacity = None
            if not node.up:
                node.start()

    def run(self) -> Result:
        c = self.config
        wall = time.perf_counter()
        self.sched.trace_on = c.trace
        for node in self.nodes:
            self.sched.at(self.rng.randint(0, 100), f"start node {node.idx}", node.start)
        if c.entries_each is not None:
            writers = [n for n in self.nodes if n.writes]
            self.target = len(writers) * (1 + c.entries_each)  # genesis and the burst
            self.holding = [0] * len(self.nodes)
            for node in writers:
                self.sched.at(self.rng.randint(c.heal_at, c.heal_at + 100), f"node {node.idx} appends {c.entries_each}",
                              lambda nd=node: nd.guard(lambda: nd.append_many("note", [
                                  {"text": f"n{k}"} for k in range(c.entries_each)])))
        self._schedule_faults()
        self._schedule_owners()
        self.sched.at(c.heal_at, "the last heal: every node up, owners stop", self._heal)
        self.sched.at(CHECK_EVERY_MS, "check", self._periodic)
        result = Result(self.seed, True, nodes=len(self.nodes))
        try:
            self.sched.run(until=c.heal_at + c.converge_bound_ms, max_events=c.max_events)
            invariants.final(self)
        except Stop as stop:
            result.ok, result.invariant, result.detail = False, stop.invariant, stop.detail
        result.trace = list(self.sched.trace)
        result.digest = self.sched.digest.hexdigest()
        result.events = self.sched.ran
        result.virtual_ms = self.sched.now
        result.wall_s = time.perf_counter() - wall
        result.converged_ms = None if self.converged_at is None else self.converged_at - self.healed_at
        result.messages = sum(self.net.sent)
        result.loans = self.loans
        result.proofs = len({a for n in self.honest_nodes() for a in n.store.forks})
        result.crashes = self.crashes
        return result


def _date(text: str):
    from datetime import date

    return date.fromisoformat(text)


def run(seed: int, config: Config | None = None) -> Result:
    """Run the simulation of ``seed``; the same seed and config give the same run."""
    return World(seed, config or Config()).run()
