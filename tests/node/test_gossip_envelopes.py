"""Unsigned pubsub envelopes (p2pnode/net/host.py, gossip.py; issue 12): a node checks no
pubsub signature, so a message's ``from`` and ``seqno`` are whatever a forwarder wrote.
Against a real node, with real libp2p hosts of the test's own: a forged ``from`` names no
one (what a handler is told, and who pays for bad gossip, is the forwarder, the peer of
the connection); it cannot suppress the real message either; a message's content is
still checked in full; copies of one message from two peers are delivered once; and a
node of the earlier version (which signs and checks every envelope, and speaks gossipsub
v1.2) and this one take each other's gossip. Plus the pieces: message ids, the peer
record check run once, and Yamux's window updates at half window."""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager
from pathlib import Path

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.validators import signature_validator
from libp2p.tools.anyio_service import background_trio_service

from framework.inprocess import make_node, start
from framework.wait import wait_for
from p2pnode.net import host as host_module
from p2pnode.net.host import MESSAGE_ID_SIZE, build_host, build_pubsub, message_id, peer_id_of
from framework.chains import signed_chain
from protocol import codec, wire
from protocol.entry import ZERO_ID
from protocol.envelope import seal
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

pytestmark = pytest.mark.trio

LOCAL = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


MALLORY, TRUDY, ALICE, STRANGER, OLDIE = (key(n) for n in ("mallory", "trudy", "alice", "stranger", "oldie"))


def chain(k: SigningKey, n: int):
    return signed_chain(k, n, text=str)


def message(data: bytes, *, origin: SigningKey | ID, seqno: int) -> rpc_pb2.Message:
    """An unsigned entries message claiming to come from ``origin``."""
    from_id = origin if isinstance(origin, ID) else peer_id_of(origin.public_key)
    return rpc_pb2.Message(from_id=from_id.to_bytes(), seqno=seqno.to_bytes(8, "big"), data=data,
                           topicIDs=[wire.TOPIC_ENTRIES])


def old_pubsub(host):
    """Pubsub as nodes before issue 12 built it: every envelope signed and checked, ids of
    ``from + seqno``, gossipsub v1.2 offered first. (py-libp2p's module-level settings
    that host.py changes are the process's: those are the wire-compatible ones.)"""
    gs = GossipSub(protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID], degree=3, degree_low=2, degree_high=6,
                   heartbeat_interval=1, heartbeat_initial_delay=0.1, adaptive_gossip_enabled=False,
                   max_messages_per_topic_per_second=2_000.0, eclipse_protection_enabled=False)
    return Pubsub(host, gs, strict_signing=True), gs


@asynccontextmanager
async def peer(k: SigningKey, *, old: bool = False):
    """A libp2p host of the test's own with pubsub, subscribed to the entries topic."""
    host = build_host(k, [LOCAL])
    async with host.run(listen_addrs=[LOCAL]):
        ps, gs = old_pubsub(host) if old else build_pubsub(host)
        async with background_trio_service(ps), background_trio_service(gs):
            await ps.wait_until_ready()
            sub = await ps.subscribe(wire.TOPIC_ENTRIES)
            yield host, ps, gs, sub
        with trio.move_on_after(3):
            await host.close()


async def dial(host, ps, node) -> None:
    with trio.fail_after(10):
        await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs()[0])))
    await wait_for(lambda: node.host.get_id() in ps.peers, 10, "a pubsub stream to the node")


async def send_raw(ps, to: ID, msg: rpc_pb2.Message) -> None:
    """``msg`` straight onto the pubsub stream to ``to``, past the sender's own router
    (which would neither send a message to the peer it names as ``from`` nor send one
    twice)."""
    assert await ps.write_msg(ps.peers[to], rpc_pb2.RPC(publish=[msg]))


def spied(node) -> list:
    """Record ``(sender, seqs)`` for every entries message the node's handler is given."""
    calls: list = []
    handle = node._on_entries_gossip

    async def spy(data, sender, entries):
        calls.append((sender, [e.seq for e in entries]))
        await handle(data, sender, entries)

    node._on_entries_gossip = spy  # before start: the node builds its topics then
    return calls


def held(node, k: SigningKey) -> int:
    head = node.store.head(k.public_key)
    return 0 if head is None else head.seq


async def test_a_forged_from_names_no_one_and_cannot_suppress_the_real_message(tmp_path: Path):
    data = wire.entries_message([e.envelope for e in chain(STRANGER, 2)])
    async with trio.open_nursery() as nursery:
        node = make_node(tmp_path / "n", "n", pex=False, sync_interval=600)
        calls = spied(node)
        await start(nursery, node)
        async with peer(MALLORY) as (host, ps, _, _):
            await dial(host, ps, node)
            # the node's own ID as ``from``: libp2p drops a message "from itself" that another
            # peer forwards, after marking it seen; with an id of the data alone, the real
            # message (same data) would then be dropped as seen too
            await send_raw(ps, node.host.get_id(), message(data, origin=node.host.get_id(), seqno=1))
            await trio.sleep(0.5)
            assert held(node, STRANGER) == 0 and calls == []
            # the same data under ALICE's name (she has never seen it): delivered, and the
            # handler is told who forwarded it, not whom ``from`` names
            await send_raw(ps, node.host.get_id(), message(data, origin=ALICE, seqno=7))
            await wait_for(lambda: held(node, STRANGER) == 2, 10, "the stranger's entries to be stored")
            assert calls == [(MALLORY.public_key, [1, 2])]
            assert node.book.score(ALICE.public_key) == 0
        node.stop()


async def test_bad_entries_under_a_forged_from_cost_the_forwarder_not_the_peer_it_names(tmp_path: Path):
    good = chain(STRANGER, 2)
    forged_author = seal({"type": "entry", "author": ALICE.public_key, "seq": 1, "prev": ZERO_ID, "ts": 1,
                          "kind": "genesis", "body": genesis_body()}, MALLORY).raw  # ALICE's, signed by MALLORY
    bad = [
        codec.encode([good[0].envelope[:-1] + bytes([good[0].envelope[-1] ^ 1])]),  # a broken signature
        codec.encode([good[0].envelope, forged_author]),  # one valid entry and one signed by another key
    ]
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "n", "n", pex=False, sync_interval=600))
        async with peer(MALLORY) as (host, ps, _, _):
            await dial(host, ps, node)
            for i, data in enumerate(bad):
                await send_raw(ps, node.host.get_id(), message(data, origin=ALICE, seqno=i + 1))
            await wait_for(lambda: node.counters.get("gossip.rejected.entries", 0) == len(bad), 10,
                           "both messages to be refused")
            await wait_for(lambda: node.book.score(MALLORY.public_key) < 0, 10, "the forwarder to be scored down")
            assert node.book.score(ALICE.public_key) == 0
            assert "gossip.received.entries" not in node.counters
        assert held(node, STRANGER) == 0 and held(node, ALICE) == 0
        node.stop()


async def test_a_message_with_no_from_or_a_garbage_one_is_judged_on_its_content(tmp_path: Path):
    data = wire.entries_message([e.envelope for e in chain(STRANGER, 2)])
    async with trio.open_nursery() as nursery:
        node = make_node(tmp_path / "n", "n", pex=False, sync_interval=600)
        calls = spied(node)
        await start(nursery, node)
        async with peer(MALLORY) as (host, ps, _, _):
            await dial(host, ps, node)
            await send_raw(ps, node.host.get_id(), rpc_pb2.Message(data=data, topicIDs=[wire.TOPIC_ENTRIES]))
            await wait_for(lambda: held(node, STRANGER) == 2, 10, "the entries to be stored")
            assert calls == [(MALLORY.public_key, [1, 2])]
            junk = rpc_pb2.Message(from_id=b"\xff" * 3, seqno=b"", data=b"\xc1", topicIDs=[wire.TOPIC_ENTRIES])
            await send_raw(ps, node.host.get_id(), junk)
            await wait_for(lambda: node.counters.get("gossip.rejected.entries", 0) == 1, 10, "the junk to be refused")
            await wait_for(lambda: node.book.score(MALLORY.public_key) < 0, 10, "the forwarder to be scored down")
            assert (await node.call("node.status"))["peer_id"] == node.peer_id
        node.stop()


async def test_one_message_from_two_peers_is_delivered_once(tmp_path: Path):
    data = wire.entries_message([e.envelope for e in chain(STRANGER, 2)])
    msg = message(data, origin=ALICE, seqno=42)
    async with trio.open_nursery() as nursery:
        node = make_node(tmp_path / "n", "n", pex=False, sync_interval=600)
        calls = spied(node)
        await start(nursery, node)
        async with peer(MALLORY) as (h1, ps1, _, _), peer(TRUDY) as (h2, ps2, _, _):
            await dial(h1, ps1, node)
            await dial(h2, ps2, node)
            await send_raw(ps1, node.host.get_id(), msg)
            await send_raw(ps2, node.host.get_id(), msg)
            await wait_for(lambda: held(node, STRANGER) == 2, 10, "the entries to be stored")
            await trio.sleep(0.5)
            assert node.counters["gossip.received.entries"] == 1
            assert len(calls) == 1 and calls[0][0] in (MALLORY.public_key, TRUDY.public_key)
            # the same data under another seqno is another message (so a node's republished
            # offers still travel): delivered again, and found held
            await send_raw(ps2, node.host.get_id(), message(data, origin=ALICE, seqno=43))
            await wait_for(lambda: node.counters["gossip.received.entries"] == 2, 10, "the second message")
        node.stop()


async def test_a_node_of_the_earlier_version_and_this_one_take_each_others_gossip(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "n", "n", pex=False, sync_interval=600))
        async with peer(OLDIE, old=True) as (host, ps, gs, sub):
            await dial(host, ps, node)
            with trio.move_on_after(5):
                await ps.wait_for_mesh(node.host.get_id(), wire.TOPIC_ENTRIES, timeout=5)
            assert gs.peer_protocol[node.host.get_id()] == PROTOCOL_ID_V11
            # ours, signed at the origin: the old node checks the signature and delivers it
            appended = await node.call("ledger.append", {"kind": "note", "body": {"text": "hello"}})
            with trio.fail_after(10):
                while True:
                    got = await sub.get()
                    if ID(got.from_id) == node.host.get_id():
                        break
            assert signature_validator(got)
            assert [e.seq for e in wire.check_gossip(wire.TOPIC_ENTRIES, got.data)][-1] == appended["seq"]
            # its own, signed as it always did: taken (and not checked) by this node
            await ps.publish(wire.TOPIC_ENTRIES, wire.entries_message([e.envelope for e in chain(OLDIE, 2)]))
            await wait_for(lambda: held(node, OLDIE) == 2, 10, "the old node's entries to be stored")
        node.stop()


async def test_a_message_id_covers_every_field_but_the_signature():
    base = message(b"data", origin=ALICE, seqno=1)
    same = rpc_pb2.Message()
    same.CopyFrom(base)
    same.signature, same.key = b"s" * 64, b"k" * 36  # signed or not, one message
    assert message_id(base) == message_id(same) and len(message_id(base)) == MESSAGE_ID_SIZE
    others = [message(b"datb", origin=ALICE, seqno=1), message(b"data", origin=MALLORY, seqno=1),
              message(b"data", origin=ALICE, seqno=2)]
    retopic = rpc_pb2.Message()
    retopic.CopyFrom(base)
    retopic.topicIDs[:] = [wire.TOPIC_FRAUD]
    # fields run together differ too: the parts are length-prefixed
    shifted = rpc_pb2.Message(from_id=base.from_id + base.seqno[:1], seqno=base.seqno[1:], data=b"data",
                              topicIDs=[wire.TOPIC_ENTRIES])
    ids = {message_id(m) for m in [base, *others, retopic, shifted]}
    assert len(ids) == 6


async def test_a_peer_record_is_verified_once_and_a_bad_one_still_refused(monkeypatch):
    calls = []
    check = host_module.maybe_consume_signed_record

    def counted(rpc, host, peer_id):
        calls.append(rpc.senderRecord)
        return check(rpc, host, peer_id)

    monkeypatch.setattr(host_module, "maybe_consume_signed_record", counted)
    monkeypatch.setattr(host_module, "_records_checked", {})
    a, b = build_host(key("record-a"), [LOCAL]), build_host(key("record-b"), [LOCAL])
    async with a.run(listen_addrs=[LOCAL]), b.run(listen_addrs=[LOCAL]):
        record, _ = env_to_send_in_RPC(a)
        rpc = rpc_pb2.RPC(senderRecord=record)
        assert all(host_module._consume_record_once(rpc, b, a.get_id()) for _ in range(3))
        assert len(calls) == 1
        assert not host_module._consume_record_once(rpc, b, b.get_id())  # someone else's record
        broken = rpc_pb2.RPC(senderRecord=record[:-1] + bytes([record[-1] ^ 1]))
        assert not host_module._consume_record_once(broken, b, a.get_id())
        assert not host_module._consume_record_once(broken, b, a.get_id())  # refused every time
        assert len(calls) == 4
        assert host_module._consume_record_once(rpc_pb2.RPC(), b, a.get_id())  # none is fine
        with trio.move_on_after(3):
            await a.close()
            await b.close()


async def test_yamux_sends_window_updates_at_half_window_and_a_large_write_goes_through(monkeypatch):
    from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

    updates = []
    send_update = YamuxStream.send_window_update

    async def counted(self, increment, skip_lock=False):
        updates.append(increment)
        await send_update(self, increment, skip_lock)

    monkeypatch.setattr(YamuxStream, "send_window_update", counted)
    proto = "/test/bulk/1.0.0"
    size = 4 * DEFAULT_WINDOW_SIZE + 123
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    got = bytearray()
    reads = 0
    done = trio.Event()

    async def receive(stream) -> None:
        nonlocal reads
        while len(got) < size:
            chunk = await stream.read(4096)
            if not chunk:
                break
            got.extend(chunk)
            reads += 1
        done.set()

    a, b = build_host(key("bulk-a"), [LOCAL]), build_host(key("bulk-b"), [LOCAL])
    async with a.run(listen_addrs=[LOCAL]), b.run(listen_addrs=[LOCAL]):
        b.set_stream_handler(proto, receive)
        with trio.fail_after(20):
            await a.connect(info_from_p2p_addr(multiaddr.Multiaddr(f"{b.get_addrs()[0]}")))
            stream = await a.new_stream(b.get_id(), [proto])
            await stream.write(payload)
            await done.wait()
        assert bytes(got) == payload
        # one update per half window read, not one per read
        assert reads > 4 * len(updates) and 0 < len(updates) <= 2 * size // DEFAULT_WINDOW_SIZE + 2
        assert all(u >= DEFAULT_WINDOW_SIZE // 2 for u in updates)
        with trio.move_on_after(3):
            await a.close()
            await b.close()
