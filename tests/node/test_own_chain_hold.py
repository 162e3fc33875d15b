"""The own-chain check at start (p2pnode/net/ownchain.py), in process: how long appends
wait when no peer answers, and that a node with no peers configured does not wait.
(tests/net/test_own_chain.py restores an old store on real node processes.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import make_node, start, stop_all
from protocol.keys import SigningKey, peer_id

pytestmark = pytest.mark.trio

WAIT = 0.5


async def test_appends_wait_for_the_check_and_no_longer_than_its_time_limit(tmp_path: Path):
    nobody = f"/ip4/127.0.0.1/tcp/9/p2p/{peer_id(SigningKey.generate().public_key)}"  # nothing listens there
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "a", "a", pex=True, bootstrap=[nobody], own_chain_wait=WAIT))
        assert node.status()["own_chain"]["state"] == "checking" and node.ledger.held
        t = trio.current_time()
        entry = await node.ledger.append_one("note", {"text": "waited"})
        waited = trio.current_time() - t
        assert entry.seq == 2 and 0 < waited < WAIT + 5
        own = node.status()["own_chain"]
        assert own["state"] == "timed_out" and not own["held"] and own["fetched"] == 0
        assert node.counters["appends.held"] == 1
        await stop_all([node])


async def test_a_node_with_no_peers_configured_signs_at_once(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "a", "a", pex=False, own_chain_wait=20))
        with trio.fail_after(5):
            assert (await node.ledger.append_one("note", {"text": "at once"})).seq == 2
        assert node.status()["own_chain"]["state"] == "no_peers"
        assert "appends.held" not in node.counters
        await stop_all([node])
