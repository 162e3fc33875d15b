"""What must hold in every run, each with the name a failure is reported under.

Checked as things happen (``World.observe_*`` call these at the moment they matter) and
once more at the end of the run (``final``):

- ``acked_entry_lost``: no acknowledged entry is lost. An own entry is acknowledged once
  the node's write returned; after any crash and restart its author still holds it, and
  at the end every honest node does.
- ``no_convergence``: honest nodes converge after a heal within a bounded virtual time:
  at most ``converge_bound_ms`` after the last heal, every honest node holds the same
  head of every honest author's chain and the same fork proofs, and no honest node has
  a proposal open.
- ``loan_state_differs``: every honest node computes the same loan state for every loan
  (``protocol.lending.loanstate.loan_state`` over the documents in the honest chains it
  holds, each node listing them in an order of its own; the state is a function of sets).
- ``proposal_open_past_expiry``: no proposal stays open past its expiry: a node's open
  machine is expired by the first tick after ``expires`` by the node's own clock, so no
  machine is open at ``expires + RETRY_INTERVAL_MS`` (plus one ms of event order).
- ``offer_overfilled``: no offer is taken twice: the offer's author countersigns (appends
  an agreement for) at most one loan per offer, and no honest chain holds agreements of
  two loans on one offer.
- ``fork_proof_missing``: fork proofs reach every honest node: at the end, if any honest
  node holds a proof against an author, every honest node holds one.
- ``self_fork``: no honest node ever forks itself: it never signs a second entry at a seq
  whose first it wrote, and no valid fork proof names an honest node.
"""

from __future__ import annotations

import random
from datetime import date

from protocol.envelope import open_envelope
from protocol.lending import agree
from protocol.lending.contract import check_contract, embedded_id
from protocol.lending.loanstate import SignedReceipt, loan_state

from .events import Stop, short


NAMES = ("acked_entry_lost", "no_convergence", "loan_state_differs", "proposal_open_past_expiry",
         "offer_overfilled", "fork_proof_missing", "self_fork")
TICK_SLACK_MS = 1


def held_acks(world: "World", node: "Node", *, authors: frozenset[bytes] | None = None) -> None:
    """Every acknowledged entry (of ``authors``, default all) is in ``node``'s store."""
    for (author, seq), entry_id in world.acked.items():
        if authors is not None and author not in authors:
            continue
        held = node.store.entry(author, seq)
        if held is None or held.id != entry_id:
            raise Stop("acked_entry_lost", f"node {node.idx} lacks acknowledged entry {short(author)}/{seq}"
                       + ("" if held is None else f" (holds {short(held.id)} instead)"))


def not_past_expiry(world: "World", node: "Node") -> None:
    if world.sched.now - node.started_at < agree.RETRY_INTERVAL_MS + TICK_SLACK_MS:
        return  # a restarted node's first tick is still to come
    now = node.now_ms()
    for loan, m in node.machines.items():
        if m.is_open and now > m.expires + agree.RETRY_INTERVAL_MS + TICK_SLACK_MS:
            raise Stop("proposal_open_past_expiry",
                       f"node {node.idx} holds {short(loan)} {m.state} {now - m.expires} ms past its expiry")


def converged(world: "World") -> bool:
    """Whether every honest node holds the same heads of the honest chains, and no honest
    node has a proposal open."""
    if world.target is not None:  # a scale run: counted as entries arrive
        return world.done == len(world.nodes)
    nodes = world.honest_nodes()
    if not all(n.up for n in nodes):
        return False
    if any(n.machines for n in nodes):
        return False
    authors = [n.pk for n in nodes]
    first = nodes[0].store
    want = [first.head(a) for a in authors]
    if not all([n.store.head(a) for a in authors] == want for n in nodes[1:]):
        return False
    proven = sorted(first.forks)
    return all(sorted(n.store.forks) == proven for n in nodes[1:])


def loan_states(node: "Node", honest: tuple[bytes, ...], today: date) -> dict[bytes, dict]:
    """Every loan's state as ``node`` computes it from the honest chains it holds."""
    contracts: dict[bytes, dict] = {}
    receipts: list[SignedReceipt] = []
    for author in honest:
        for e in node.store.chains.get(author, []):
            if e.kind == "loan.agreement":
                loan = embedded_id(e.kind, e.body)
                contracts.setdefault(loan, check_contract(open_envelope(e.body["contract"]).document))
            elif e.kind == "loan.receipt":
                env = open_envelope(e.body["receipt"])
                receipts.append(SignedReceipt(env.id, env.document, env.signers[0]))
    # Each node lists the documents in an order of its own: the state must not depend on
    # it (loanstate.py, rule 10). A generator of its own, so that the world's draws stay as they are.
    random.Random(node.idx).shuffle(receipts)
    return {loan: loan_state(loan, c, [r for r in receipts if r.doc["loan"] == loan], [], [], today).to_json()
            for loan, c in contracts.items()}


def final(world: "World") -> None:
    """The end-of-run checks, after the convergence phase."""
    nodes = world.honest_nodes()
    if world.converged_at is None:
        if all(n.up for n in nodes):
            fork_proofs_everywhere(nodes)  # the chains may agree while a proof is missing
        behind = [n.idx for n in nodes if not n.up]
        raise Stop("no_convergence", f"honest nodes still differ {world.config.converge_bound_ms} ms after "
                   f"the heal at {world.healed_at} (down: {behind}; open proposals: "
                   f"{[(n.idx, len(n.machines)) for n in nodes if n.machines]})")
    pks = frozenset(x.pk for x in nodes)
    for n in nodes:
        held_acks(world, n, authors=pks)
    if not world.config.lending:
        return
    honest = tuple(n.pk for n in nodes)
    today = nodes[0].today()
    states = {n.idx: loan_states(n, honest, today) for n in nodes}
    first = states[nodes[0].idx]
    for i, s in states.items():
        if s != first:
            raise Stop("loan_state_differs", f"node {i} and node {nodes[0].idx} compute different loan states")
    world.loans = len(first)
    by_offer: dict[bytes, set] = {}
    for n in nodes:
        for author in honest:
            for e in n.store.chains.get(author, []):
                if e.kind == "loan.agreement":
                    doc = open_envelope(e.body["contract"]).document
                    by_offer.setdefault(doc["offer"], set()).add(embedded_id(e.kind, e.body))
    for offer_id, loans in by_offer.items():
        if len(loans) > 1:
            raise Stop("offer_overfilled", f"offer {short(offer_id)} is taken by {len(loans)} loans")
    fork_proofs_everywhere(nodes)


def fork_proofs_everywhere(nodes: list["Node"]) -> None:
    proven = {a for n in nodes for a in n.store.forks}
    for n in nodes:
        missing = sorted(a for a in proven if a not in n.store.forks)
        if missing:
            raise Stop("fork_proof_missing", f"node {n.idx} holds no proof against {short(missing[0])}, "
                       "which other honest nodes hold")
