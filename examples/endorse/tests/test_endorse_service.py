"""The service inside real nodes, in one process: real libp2p hosts on 127.0.0.1, real
LevelDB, the node's own routing, driven through the control methods as the CLI drives
them. The extension is loaded from this source tree by an entry point made here, beside
the ones installed (lending), so the test needs no install. Every wait is bounded."""

from __future__ import annotations

import shutil
import tempfile
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
import trio

from protocol.keys import SigningKey, peer_id

from p2pnode.clock import SYSTEM, Clock
from p2pnode.errors import ApiError
from p2pnode.extensions import GROUP, load, settings_of
from p2pnode.home import init_home
from p2pnode.ledger.ops import ledger_verify
from p2pnode.node import Node, NodeSettings

from p2pnode_endorse import EXTENSION, rules
from p2pnode_endorse.records import NAME, P_ASK

WAIT = 10.0


def loaded():
    """What a node loads when this extension is installed next to the built-in ones."""
    points = [ep for ep in entry_points(group=GROUP) if ep.name != NAME]
    return load(points=[*points, EntryPoint(NAME, "p2pnode_endorse:EXTENSION", GROUP)])


LOADED = loaded()


class SetClock(Clock):
    """Wall time a test sets (waiting time stays trio's)."""

    now = 1_800_000_000_000

    def now_ms(self) -> int:
        return self.now


@pytest.fixture
def short_dir():
    """Homes under a short path: a control socket's path has at most 107 bytes."""
    d = Path(tempfile.mkdtemp(prefix="endorse-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_node(path: Path, clock: Clock = SYSTEM, **section) -> Node:
    """A node (not started) on a new home, with ``section`` as its [endorse] settings."""
    home, _ = init_home(path, registry=LOADED.registry, name=path.name)
    settings = NodeSettings(listen=["/ip4/127.0.0.1/tcp/0"], pex=False,
                            extensions={NAME: settings_of(EXTENSION, section, where=path.name)})
    return Node(home, home.signing_key(None), settings, LOADED, clock)


async def start(nursery: trio.Nursery, node: Node) -> Node:
    with trio.fail_after(WAIT):
        await nursery.start(node.run)
    return node


async def wait_for(predicate, what: str) -> None:
    with trio.move_on_after(WAIT):
        while not predicate():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {WAIT} s waiting for {what}")


def head(node: Node, of: Node) -> int:
    h = node.store.head(of.key.public_key)
    return h.seq if h else 0


@pytest.mark.trio
async def test_an_endorsement_travels_is_recorded_by_whom_it_names_and_can_be_fetched(short_dir):
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(short_dir / "a"))
        b = await start(nursery, make_node(short_dir / "b"))
        await b.connect(a.listen_addrs()[0])
        said = await a.call("endorse.add", {"peer": b.peer_id, "text": "a fair lender"})
        await wait_for(lambda: head(b, a) == said["seq"], "A's endorsement on B")

        [got] = (await b.call("endorse.list", {}))["endorsements"]  # B is the one endorsed
        assert (got["author"], got["text"], got["received_ms"] is not None) == (a.peer_id, "a fair lender", True)
        assert b.counters["endorse.received"] == 1 and "endorse.received" not in a.counters
        fetched = await a.call("endorse.fetch", {"peer": b.peer_id})  # B holds it too: the stream
        assert [(e["id"], e["held"]) for e in fetched["endorsements"]] == [(said["id"], True)]

        with pytest.raises(ApiError) as refused:
            await a.call("endorse.fetch", {"peer": peer_id(SigningKey.generate().public_key)})
        assert refused.value.code == "not_connected"
        with pytest.raises(ApiError) as refused:  # ledger append meets the service's check too
            await a.call("ledger.append", {"kind": rules.KIND, "body": {
                "peer": {"$bin": b.key.public_key.hex()}, "text": "a fair lender"}})
        assert refused.value.code == "duplicate_endorsement"
        for n in (a, b):
            assert (await n.call("ledger.verify", {}))["ok"]
        a.stop(), b.stop()


@pytest.mark.trio
async def test_asks_are_kept_fresh_one_per_peer_and_within_max_asks(short_dir):
    clock = SetClock()
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(short_dir / "n", clock, max_asks=2, ask_ttl_s=60))
        service = node.services[NAME]
        x, y, z = (SigningKey.generate() for _ in range(3))

        async def gossip(key: SigningKey, ts: int, note: str = "") -> None:
            await service.on_ask(rules.make_ask(key, note, ts).raw, None)  # as the node routes it

        async def kept() -> dict:
            return {a["author"]: a["note"] for a in (await node.call("endorse.asks", {}))["asks"]}

        await gossip(x, clock.now, "first")
        await gossip(x, clock.now - 1, "older")  # ignored: not newer
        await gossip(y, clock.now - 61_000)  # stale
        await gossip(y, clock.now + 10 * 60_000)  # from too far ahead
        await gossip(y, clock.now - 30_000, "y")
        await gossip(z, clock.now)  # a third peer: over max_asks
        await gossip(x, clock.now + 1, "second")  # newer: replaces x's
        assert await kept() == {peer_id(x.public_key): "second", peer_id(y.public_key): "y"}
        assert node.counters["endorse.asks.stale"] == 2 and node.counters["endorse.asks.full"] == 1

        clock.now += 45_000  # y's ask is 75 s old now: upkeep's prune removes it
        assert service.prune() == 1
        assert [k[1:] for k in node.store.records(NAME).keys(P_ASK)] == [x.public_key]
        await gossip(z, clock.now)  # room again
        assert set(await kept()) == {peer_id(x.public_key), peer_id(z.public_key)}
        assert (await node.call("ledger.verify", {}))["ok"]
        node.stop()


@pytest.mark.trio
async def test_a_node_with_accept_asks_off_keeps_none(short_dir):
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(short_dir / "n", accept_asks=False))
        await node.services[NAME].on_ask(rules.make_ask(SigningKey.generate(), "", node.clock.now_ms()).raw, None)
        assert await node.call("endorse.asks", {}) == {"accepting": False, "asks": []}
        node.stop()


def test_verify_reports_a_record_that_is_not_what_it_claims(short_dir):
    node = make_node(short_dir / "n")
    stranger = SigningKey.generate()
    with node.home.open_store() as store:
        LOADED.prepare(store)
        records = store.records(NAME)
        records.write([(P_ASK + stranger.public_key, rules.make_ask(SigningKey.generate(), "", 1).raw),
                       (b"r" + stranger.public_key + (5).to_bytes(8, "big"), (1).to_bytes(8, "big"))])
        report = ledger_verify(store, LOADED.registry, checks=LOADED.verify_checks())
    assert not report["ok"]
    assert [p["code"] for p in report["problems"]] == ["bad_endorse_record"] * 2
