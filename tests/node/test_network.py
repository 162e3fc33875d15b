"""Nodes in one process over real libp2p on 127.0.0.1: gossip, sync, forks, shutdown."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import REGISTRY, heads_of, make_node, start, start_line, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.walltime import now_ms
from protocol.entry import make_entry
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

pytestmark = pytest.mark.trio


async def test_entries_appended_on_one_node_reach_every_node_of_a_5_node_line(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        nodes = await start_line(nursery, tmp_path, 5, pex=False, sync_interval=60)
        first = nodes[0]
        ids = []
        for i in range(5):
            view = await first.call("ledger.append", {"kind": "note", "body": {"text": f"hello {i}"}})
            ids.append(bytes.fromhex(view["id"]))
        # Routine sync is a minute away: the far end gets them by gossip, hop by hop, and
        # whatever precedes them (the genesis entries) by the sync that a gap triggers.
        await wait_for(lambda: all(nodes[-1].store.locate(i) for i in ids), 15, "the entries to reach node 5")
        mine = first.key.public_key
        await wait_for(lambda: all(heads_of(x).get(mine) == heads_of(first)[mine] for x in nodes), 10,
                       "every node to hold node 1's chain")
        assert all(len(x.connected) <= 2 for x in nodes)  # still a line: nothing was dialed
        await stop_all(nodes)


async def test_a_node_that_joins_late_catches_up_by_sync(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(tmp_path / "a", "a"))
        with_many = [("note", {"text": str(i)}) for i in range(3000)]
        first = a.store.append(a.key, with_many, now_ms=now_ms(), registry=REGISTRY)
        assert len(first) == 3000
        b = await start(nursery, make_node(tmp_path / "b", "b"))
        await b.connect(a.listen_addrs()[0])
        await sync_all([a, b])
        assert heads_of(b)[a.key.public_key][0] == 3001
        await stop_all([a, b])


async def test_a_long_pull_reports_its_progress_in_status(tmp_path: Path):
    """status's ``sync.progress`` while a pull runs: entries fetched of the planned target,
    the rate and the time left; null once the node is idle."""
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(tmp_path / "a", "a", pex=False))
        a.store.append(a.key, [("note", {"text": str(i)}) for i in range(9000)], now_ms=now_ms(), registry=REGISTRY)
        b = await start(nursery, make_node(tmp_path / "b", "b", pex=False, sync_interval=600))
        seen = []
        report = b.syncer._progressed

        def watch(pk: bytes, progress) -> None:  # after each batch, what status would show
            report(pk, progress)
            seen.append(b.status()["sync"]["progress"])

        b.syncer._progressed = watch
        await b.connect(a.listen_addrs()[0])
        await sync_all([a, b])
        mid = [p for p in seen if p is not None and 0 < p["fetched"] < p["target"]]
        assert mid, seen
        assert all(p["target"] >= 9001 and p["rate_per_s"] > 0 and p["eta_s"] >= 0 for p in mid)
        assert [p["fetched"] for p in mid] == sorted(p["fetched"] for p in mid)  # it only grows
        await wait_for(lambda: b.status()["sync"]["progress"] is None, 10, "the pull to end")
        await stop_all([a, b])


async def test_a_fork_is_proven_and_the_proof_reaches_every_node(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        nodes = await start_line(nursery, tmp_path, 3, pex=False)
        await sync_all(nodes)
        author = nodes[2]
        stored = author.store.entry(author.key.public_key, 1)
        # The author signs a second genesis: a forged history at a seq every node holds.
        forged = make_entry(author.key, seq=1, prev=stored.prev, ts=stored.ts, kind="genesis",
                            body={"protocol": "p2plend/1", "name": "someone else"})
        report = await nodes[0].ledger.ingest([forged.envelope])
        assert len(report.forks) == 1 and not report.added
        await wait_for(lambda: all(author.key.public_key in x.store.forked_authors() for x in nodes), 10,
                       "the fork proof to reach every node")
        proof = ForkProof.decode(nodes[1].store.fork_proofs(author.key.public_key)[0])
        assert {proof.a.id, proof.b.id} == {stored.id, forged.id}
        status = await nodes[1].call("node.status")
        assert author.peer_id in status["forked"]
        await stop_all(nodes)


async def test_stop_closes_everything_and_the_home_can_be_reopened(tmp_path: Path):
    node = make_node(tmp_path / "a", "a")
    async with trio.open_nursery() as nursery:
        await start(nursery, node)
        sock = node.home.path / "control.sock"
        assert sock.exists()
        node.stop()
    assert not sock.exists()
    assert node.store.db.closed
    again = node.home.open_store()  # the LevelDB lock was released
    again.close()


async def test_a_node_holding_more_chains_than_a_heads_page_offers_them_all(tmp_path: Path, monkeypatch):
    """Issue 9, item 3: heads answers stopped at the 65,536 lowest keys, so honest chains,
    the answering node's own among them, were never offered, and a new node got none of
    them. Heads come in pages (wire.py rule 2): with pages of 2 authors, a node joining
    one that holds 8 chains still gets all 8."""
    from protocol import wire

    monkeypatch.setattr(wire, "HEADS_PAGE", 2)
    async with trio.open_nursery() as nursery:
        holder = await start(nursery, make_node(tmp_path / "h", "h", pex=False))
        for n in range(1, 8):  # seven other authors' chains, as if synced from elsewhere
            author = SigningKey.from_seed(bytes([n]) * 32)
            holder.store.append(author, [("genesis", genesis_body(f"a{n}"))], now_ms=now_ms(), registry=REGISTRY)
        assert len(holder.store.heads()) == 8
        joiner = await start(nursery, make_node(tmp_path / "j", "j", pex=False))
        await joiner.connect(holder.listen_addrs()[0])
        await sync_all([holder, joiner])
        assert len(joiner.store.heads()) == 9 and holder.key.public_key in joiner.store.heads()
        await stop_all([holder, joiner])


async def test_strangers_chains_are_held_within_a_budget_and_counterparties_always(tmp_path: Path):
    """Issue 9, item 3: chains cost nothing, and 35,000 one-entry chains made every node
    idle at 40% CPU. A node holds its own chain and those of authors an extension gives
    standing (for lending: who signed a loan with it), always; strangers' up to a budget,
    the least recently stored evicted first."""
    from framework.inprocess import lending

    async with trio.open_nursery() as nursery:
        viewer = await start(nursery, make_node(tmp_path / "v", "v", pex=False, stranger_budget=3))
        peer = await start(nursery, make_node(tmp_path / "p", "p", pex=False))
        await peer.connect(viewer.listen_addrs()[0])
        await sync_all([viewer, peer])
        oid = (await peer.call("offer.create", {"side": "lend", "amount": "100.00", "currency": "EUR",
                                                "rate": "5%", "term": "3m"}))["id"]
        await wait_for(lambda: lending(viewer).book.get(bytes.fromhex(oid)) is not None, 10, "the offer")
        assert (await viewer.call("loan.propose", {"offer": oid}))["state"] == "agreed"
        await wait_for(lambda: lending(viewer).standing(peer.key.public_key) == 2, 10, "the peer's standing")
        # (asked from a worker thread too, as the store does while it ingests a large batch there)
        assert await trio.to_thread.run_sync(lending(viewer).standing, peer.key.public_key) == 2
        flood = await start(nursery, make_node(tmp_path / "f", "f", pex=False))
        for n in range(1, 9):  # eight free identities, one entry each
            key = SigningKey.from_seed(bytes([n]) * 32)
            flood.store.append(key, [("genesis", genesis_body(f"s{n}"))], now_ms=now_ms(), registry=REGISTRY)
        await flood.connect(viewer.listen_addrs()[0])
        await wait_for(lambda: len(viewer.store.heads()) >= 5, 15, "the flood to fill the budget")
        await trio.sleep(1)
        held = set(viewer.store.heads())
        strangers = held - {viewer.key.public_key, peer.key.public_key}
        assert len(strangers) <= 3
        assert {viewer.key.public_key, peer.key.public_key} <= held  # never evicted
        assert (await viewer.call("ledger.verify"))["ok"]
        assert (await viewer.call("node.status"))["peer_id"] == viewer.peer_id  # and the flood's peer is no culprit
        assert viewer.counters.get("misbehaviour.bad_entries", 0) == 0
        await stop_all([viewer, peer, flood])
