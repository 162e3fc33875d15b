"""Token buckets per peer (p2pnode/net/ratelimit.py): a peer is slowed down to its rate,
never more than its burst at once, and forgetting a peer is never harsher."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.net.ratelimit import PeerBuckets

P, Q = b"p" * 32, b"q" * 32


def test_a_burst_then_the_rate():
    b = PeerBuckets(rate=2.0, burst=3)
    assert [b.allow(P, 0.0) for _ in range(4)] == [True, True, True, False]
    assert b.allow(Q, 0.0)  # each peer has its own
    assert not b.allow(P, 0.4) and b.allow(P, 0.5) and not b.allow(P, 0.5)
    assert [b.allow(P, 100.0) for _ in range(4)] == [True, True, True, False]  # refilled to the burst, no more
    with pytest.raises(ValueError):
        PeerBuckets(rate=0, burst=1)


def test_the_least_recently_seen_peer_is_forgotten_first_and_starts_full():
    b = PeerBuckets(rate=1.0, burst=1, max_peers=2)
    assert b.allow(P, 0.0) and not b.allow(P, 0.0)
    assert b.allow(Q, 0.0) and b.allow(b"r" * 32, 0.0)  # P is forgotten
    assert b.allow(P, 0.0)


@settings(max_examples=200, deadline=None)
@given(st.floats(0.1, 100), st.integers(1, 50), st.lists(st.floats(0, 10), min_size=1, max_size=200))
def test_never_more_than_the_burst_plus_the_rate_times_the_time(rate, burst, gaps):
    b, now, allowed = PeerBuckets(rate, burst), 0.0, 0
    for gap in gaps:
        now += gap
        allowed += b.allow(P, now)
    assert allowed <= burst + rate * now + 1e-6


def test_a_topic_with_a_rate_neither_delivers_nor_forwards_what_a_peer_sends_over_it():
    """The offers topic's validator (p2pnode/net/gossip.py), fed libp2p's own message and
    peer ID types: a forwarder's messages over its bucket are refused and counted, not
    held against it; another forwarder is apart."""
    import trio
    from libp2p.peer.id import ID
    from libp2p.pubsub.pb import rpc_pb2

    from p2pnode.net.gossip import Gossip, TopicSpec

    counted: dict[str, int] = {}

    async def penalise(*_):
        raise AssertionError("a rate is not misbehaviour")

    async def handler(data, sender, value):
        pass

    async def main():
        gossip = Gossip(None, own_key=b"\0" * 32, count=lambda n, k=1: counted.__setitem__(n, counted.get(n, 0) + k),
                        penalise=penalise)
        validate = gossip._validator(TopicSpec("p2plend/1/offers", lambda d: None, handler, 1024, rate=(1.0, 3)))
        a, b = ID(b"\x00\x24" + b"a" * 36), ID(b"\x00\x24" + b"b" * 36)
        msg = rpc_pb2.Message(data=b"an offer")
        assert [validate(a, msg) for _ in range(5)] == [True, True, True, False, False]
        assert validate(b, msg)
        assert counted == {"gossip.rate_limited.offers": 2}

    trio.run(main)
