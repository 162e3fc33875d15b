"""An idle routine sync round costs the same however many chains the nodes hold (issue 9,
"Free identities flood every node"): after convergence, two real nodes over libp2p on
127.0.0.1 exchange heads pages that list no chain at all, and an entry stored later
without gossip still reaches the other node by the routine round alone."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from framework.inprocess import REGISTRY, heads_of, make_node, start, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.walltime import now_ms
from protocol.entry import ZERO_ID, make_entry
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

pytestmark = pytest.mark.trio

CHAINS = 2_000
INTERVAL = 0.3  # seconds between routine rounds: several rounds within the test


def _strangers(n: int) -> list[tuple[SigningKey, bytes]]:
    """``n`` keys and the genesis envelope of each one's chain."""
    out = []
    for i in range(n):
        key = SigningKey.from_seed(hashlib.sha256(b"idle-%d" % i).digest())
        g = make_entry(key, seq=1, prev=ZERO_ID, ts=1_000 + i, kind="genesis", body=genesis_body(f"s{i}"))
        out.append((key, g.envelope))
    return out


class Reads:
    """What a node's store is asked for sync, counted by wrapping the store's methods on the
    running node (its listener's page reads; its own planner's full read of its heads),
    so that the same counts hold for any version of the sync code."""

    def __init__(self, store) -> None:
        self.pages = 0  # heads pages the listener read
        self.listed = 0  # heads in them
        self.full_reads = 0  # reads of every head held (a plan over every chain)
        for name in ("heads_page", "marked_heads_page", "changes"):
            if hasattr(store, name):
                setattr(store, name, self._page(getattr(store, name)))
        heads = store.heads

        def every_head():
            self.full_reads += 1
            return heads()

        store.heads = every_head

    def _page(self, read):
        def counted(*args):
            got = read(*args)
            page = got[1] if isinstance(got, tuple) else got
            self.pages += 1
            self.listed += len(page)
            return got

        return counted


async def test_an_idle_round_lists_no_chain_and_a_later_entry_still_arrives_without_gossip(tmp_path: Path):
    strangers = _strangers(CHAINS)
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(tmp_path / "a", "a", pex=False, sync_interval=INTERVAL,
                                           stranger_budget=10 * CHAINS))
        report = a.store.ingest([env for _, env in strangers], registry=REGISTRY)
        assert len(report.added) == CHAINS and not report.errors
        b = await start(nursery, make_node(tmp_path / "b", "b", pex=False, sync_interval=INTERVAL,
                                           stranger_budget=10 * CHAINS))
        # b holds the same chains already (as after a first sync of them, which at one get
        # per chain would take this test half a minute): the nodes differ by their own.
        assert len(b.store.ingest([env for _, env in strangers], registry=REGISTRY).added) == CHAINS
        served, planned = Reads(a.store), Reads(b.store)  # (a answers b's pulls; b plans them)
        await b.connect(a.listen_addrs()[0])
        await sync_all([a, b], timeout=30)
        assert len(heads_of(b)) == CHAINS + 2

        # Converged: let the rounds that carry the last changes (each node's record of what
        # it pulled from the other) pass, then watch idle rounds.
        seen = served.pages
        await wait_for(lambda: served.pages >= seen + 3, 20, "three routine rounds")
        pages, listed, full_reads, heads = served.pages, served.listed, planned.full_reads, b.counters.get(
            "sync.heads.received", 0)
        await wait_for(lambda: served.pages >= pages + 3, 20, "three idle rounds")
        assert served.listed == listed, "idle rounds listed chains: their cost grows with the chains held"
        assert planned.full_reads == full_reads, "idle rounds read every head held to plan"
        assert b.counters.get("sync.heads.received", 0) == heads
        assert b.counters.get("sync.pulls.full", 0) == 1  # the first pull of the connection alone

        # An entry stored on a without gossip (straight into its store, as an ingest would),
        # on one of the 2,000 chains: the routine round brings it, listing that chain alone.
        key, _ = strangers[CHAINS // 2]
        g_id = a.store.head(key.public_key).id
        second = make_entry(key, seq=2, prev=g_id, ts=now_ms(), kind="note", body={"text": "later"})
        listed = served.listed
        assert a.store.ingest([second.envelope], registry=REGISTRY).added
        await wait_for(lambda: b.store.locate(second.id) is not None, 20, "the later entry to reach b by sync")
        assert served.listed - listed <= 2, "the round that brought one change listed every chain"
        await stop_all([a, b])


async def test_a_node_of_sync_1_0_is_pulled_from_in_full_without_a_cursor(tmp_path: Path):
    """Mixed versions: a node that speaks only ``/p2plend/sync/1.0.0`` (as every node did
    before the change feed, which refuses ``since`` as ``bad_message``) is still synced
    with: the dialer picks 1.0.0 and pulls in full, never sending a cursor, and is never
    penalised for it."""
    from protocol import wire

    async with trio.open_nursery() as nursery:
        old = await start(nursery, make_node(tmp_path / "old", "old", pex=False, sync_interval=INTERVAL))
        old.host.remove_stream_handler(wire.SYNC_PROTOCOL)  # it speaks sync 1.0.0 alone now
        new = await start(nursery, make_node(tmp_path / "new", "new", pex=False, sync_interval=INTERVAL))
        key, genesis = _strangers(1)[0]
        assert old.store.ingest([genesis], registry=REGISTRY).added  # a chain only the old node holds
        await new.connect(old.listen_addrs()[0])
        await wait_for(lambda: new.store.head(key.public_key) is not None, 20, "the new node to pull the old one's chain")
        seen = new.counters.get("sync.pulls.full", 0)
        await wait_for(lambda: new.counters.get("sync.pulls.full", 0) >= seen + 2, 20, "two more routine rounds")
        assert new.counters.get("sync.pulls.changes", 0) == 0  # not one pull with a cursor
        assert not any(k.startswith("peers.penalised") or k.startswith("misbehaviour") for k in old.counters), \
            old.counters
        assert old.counters.get("sync.entries_sent", 0) >= 1
        await stop_all([old, new])
