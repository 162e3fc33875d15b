"""Keepalive (p2pnode/net/keepalive.py), in process: a peer that answers pings has its
round trip shown; one that stops answering is taken for dead, closed and dialled again.
The real partition, over node processes in network namespaces, is
tests/net/test_partition.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from framework.inprocess import make_node, start, stop_all
from framework.wait import wait_for
from p2pnode.net.keepalive import PING_PROTOCOL

pytestmark = pytest.mark.trio


async def test_a_peer_that_stops_answering_pings_is_dropped_and_dialled_again(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(tmp_path / "a", "a", ping_interval=0.5, ping_timeout=0.5))
        b = await start(nursery, make_node(tmp_path / "b", "b"))
        await a.connect(b.listen_addrs()[0])
        bk = b.key.public_key
        await wait_for(lambda: bk in a.connected and a.connected[bk].ping_ms is not None, 10, "a ping answered")
        assert [p["ping_ms"] for p in (await a.call("node.peers"))["peers"]][0] >= 0

        async def silent(stream) -> None:  # b's host stops answering pings: a dead link, as a
            await trio.sleep_forever()  # partition makes it, but with the rest still working

        b.host.set_stream_handler(PING_PROTOCOL, silent)
        await wait_for(lambda: a.counters.get("connections.dropped_dead"), 10, "a to take b for dead")
        assert a.book.get(bk).wanted_until > a.clock.monotonic()  # wanted back: redialled promptly
        await wait_for(lambda: bk in a.connected, 10, "a to dial b again")
        await stop_all([a, b])
