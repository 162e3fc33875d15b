"""The extension contract (p2pnode/extension.py): loading, checking and leaving out broken
extensions, routing to a service, and replication that never depends on extensions —
over real libp2p hosts on 127.0.0.1 and real LevelDB."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
import trio

from framework.inprocess import LOCAL, heads_of, start, stop_all, sync_all
from framework.wait import wait_for
from p2pnode.extensions import GROUP, load
from p2pnode.home import init_home
from p2pnode.node import Node, NodeSettings
from protocol.kinds import INVALID, KNOWN, UNKNOWN

BUILTIN = list(entry_points(group=GROUP))


def ep(name: str, attr: str) -> EntryPoint:
    return EntryPoint(name, f"extensions_for_tests:{attr}", GROUP)


def loaded_with(*points: EntryPoint):
    return load(points=BUILTIN + list(points))


def test_lending_is_found_through_its_entry_point_like_any_extension():
    loaded = load()
    assert [e.name for e in loaded.extensions] == ["lending"] and loaded.sources["lending"] == "p2pnode"
    assert loaded.registry.owner("loan.agreement") == "lending" and loaded.methods.owners["loan.show"] == "lending"
    assert load(disabled=["lending"]).extensions == []


def test_broken_extensions_are_reported_and_left_out():
    loaded = loaded_with(ep("strict", "STRICT"), ep("missing", "NO_SUCH_THING"), ep("oops", "NOT_AN_EXTENSION"),
                         ep("badname", "BAD_NAME"), ep("thief", "TAKES_A_LENDING_KIND"),
                         ep("clash", "TAKES_A_CORE_METHOD"), ep("future", "NEWER_CONTRACT"))
    assert [e.name for e in loaded.extensions] == ["lending", "strict"]
    why = {f.name: f.reason for f in loaded.failures}
    assert set(why) == {"missing", "oops", "badname", "thief", "clash", "future"}
    assert "cannot be imported" in why["missing"] and "not an Extension" in why["oops"]
    assert "already registered" in why["thief"] and "node.* belongs to core" in why["clash"]
    assert "contract 99" in why["future"]
    # what a left-out extension declared is not there; lending's kind is still lending's
    assert loaded.registry.owner("loan.agreement") == "lending" and loaded.methods.owners["node.status"] == "core"


@pytest.mark.trio
async def test_a_kind_whose_validator_has_a_bug_never_stops_a_chain(tmp_path: Path):
    """An extension's bug (a validator that raises something else than a refusal) makes
    its entries invalid for it, and nothing else: they are stored, forwarded, verified."""
    buggy = loaded_with(ep("buggy", "BUGGY_VALIDATOR"))
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make(tmp_path / "a", "a", buggy))
        b = await start(nursery, make(tmp_path / "b", "b", load()))
        await a.connect(b.listen_addrs()[0])
        await b.call("ledger.append", {"kind": "x.buggy", "body": {"n": 2}})
        await b.call("ledger.append", {"kind": "note", "body": {"text": "after it"}})
        await sync_all([a, b])
        shown = await a.call("ledger.show", {"author": b.peer_id})
        assert [e["kind_status"] for e in shown["entries"]] == [KNOWN, INVALID, KNOWN]
        assert "its validator failed: TypeError" in shown["entries"][1]["invalid_reason"]
        assert (await a.call("ledger.verify"))["ok"]
        await stop_all([a, b])


def make(path: Path, name: str, loaded, **settings) -> Node:
    home, _ = init_home(path, registry=loaded.registry, name=name)
    return Node(home, home.signing_key(None), NodeSettings(listen=[LOCAL], pex=False, **settings), loaded)




@pytest.mark.trio
async def test_a_service_that_fails_to_start_is_left_out_and_the_node_still_starts(tmp_path: Path):
    loaded = loaded_with(ep("broken", "BROKEN_SERVICE"), ep("partial", "MISSING_HANDLER"))
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make(tmp_path / "n", "n", loaded))
        status = await node.call("node.status")
        failed = {f["name"]: f["error"] for f in status["extension_failures"]}
        assert "this service cannot start" in failed["broken"] and "has no nope" in failed["partial"]
        assert [e["name"] for e in status["extensions"]] == ["lending"]
        assert node.methods.unbound() == ["broken.call", "partial.call"]  # declared, never served
        with pytest.raises(KeyError):
            await node.call("broken.call")
        assert (await node.call("offer.list"))["offers"] == []  # the others work
        node.stop()


@pytest.mark.trio
async def test_every_declared_method_of_a_running_node_is_served(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make(tmp_path / "n", "n", loaded_with(ep("strict", "STRICT"))))
        assert node.methods.unbound() == []
        assert await node.call("strict.count", {"at_least": 3}) == {"seen": 0, "indexed": 0, "at_least": 3}
        node.stop()


@pytest.mark.trio
async def test_replication_never_depends_on_extensions(tmp_path: Path):
    """A node with an extension that rejects some bodies and a node without it hold the same
    chains after gossip and sync; the one with it treats the rejected entries as invalid
    (not indexed, not handed to its service) and still stores and forwards them."""
    with_it, without = loaded_with(ep("strict", "STRICT")), load()
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make(tmp_path / "a", "a", with_it))
        b = await start(nursery, make(tmp_path / "b", "b", without))
        c = await start(nursery, make(tmp_path / "c", "c", with_it))
        await a.connect(b.listen_addrs()[0])
        await c.connect(b.listen_addrs()[0])  # a line a - b - c: c hears of a's entries through b
        await sync_all([a, b, c])
        # b, which does not know the kind, signs items the extension rejects (odd) and accepts
        for n in (1, 2, 3, 4):
            await b.call("ledger.append", {"kind": "x.item", "body": {"n": n}})
        # a, which knows it, signs only what its kind accepts
        with pytest.raises(Exception) as refused:
            await a.call("ledger.append", {"kind": "x.item", "body": {"n": 5}})
        assert refused.value.code == "bad_body"
        await a.call("ledger.append", {"kind": "x.item", "body": {"n": 6}})
        await sync_all([a, b, c])
        assert heads_of(a) == heads_of(b) == heads_of(c)
        shown = await a.call("ledger.show", {"author": b.peer_id})
        statuses = [(e["body"], e["kind_status"]) for e in shown["entries"][1:]]
        assert statuses == [({"n": 1}, INVALID), ({"n": 2}, KNOWN), ({"n": 3}, INVALID), ({"n": 4}, KNOWN)]
        assert [e["kind_status"] for e in (await b.call("ledger.show", {"author": b.peer_id}))["entries"][1:]] == [UNKNOWN] * 4
        await wait_for(lambda: sorted(a.services["strict"].seen) == [2, 4, 6], 10, "a's service to see the valid items")
        assert sorted(c.services["strict"].seen) == [2, 4, 6]
        assert (await a.call("strict.count"))["indexed"] == 3
        for node in (a, b, c):
            assert (await node.call("ledger.verify"))["ok"]
        await stop_all([a, b, c])


def test_a_store_of_the_old_layout_is_adopted_by_lending_and_loses_nothing(tmp_path: Path):
    """Before extensions had spaces of their own, lending's records sat under one-byte
    prefixes (L, P, O, X, C). Opened with lending loaded, every record moves into lending's
    spaces, the loan index is rebuilt from the entries, and verify passes."""
    from p2pnode.ledger.store import P_EXT_INDEX, space_prefix
    from p2pnode.ledger.verify import verify_store
    from protocol.keys import SigningKey
    from protocol.lending.offer import make_offer

    loaded = load()
    home, genesis = init_home(tmp_path / "old", registry=loaded.registry, name="old")
    offer = make_offer(SigningKey.from_seed(b"o" * 32), side="lend", currency="EUR", min_amount=100, max_amount=100,
                       rate_bp=500, term="3m", created=genesis.ts, expires=genesis.ts + 3_600_000)
    old = {b"P" + b"\x01" * 32: b"a proposal record", b"O" + offer.id: offer.raw,
           b"X" + (genesis.ts + 3_600_000).to_bytes(8, "big") + offer.id: b"",
           b"L" + b"\x02" * 32 + genesis.author + (1).to_bytes(8, "big"): b""}
    with home.open_store() as store:
        store.db.delete(b"M" + b"index/lending")  # as a store of that time: no index mark
        for k, v in old.items():
            store.db.put(k, v)
        rebuilt = loaded.prepare(store)
        assert rebuilt == ["lending"]
        records = store.records("lending")
        assert records.get(b"P" + b"\x01" * 32) == b"a proposal record" and records.get(b"O" + offer.id) == offer.raw
        assert [k[:1] for k in records.keys(b"X")] == [b"X"]
        assert not any(store.db.get(k) is not None for k in old)
        assert list(store.db.iterator(prefix=space_prefix(P_EXT_INDEX, "lending"))) == []  # the stray L key is gone
        report = verify_store(store, loaded.registry, checks=loaded.verify_checks())
        assert report.ok, report.problems
        assert loaded.prepare(store) == []  # once done, nothing more to do


@pytest.mark.trio
async def test_a_failing_task_is_logged_counted_and_started_again_and_the_node_stays_up(tmp_path: Path):
    """Issue 9, item 6: a background task that raises (a resend that cannot dial) once
    ended the whole node. Every task is supervised: the failure is counted in ``status``,
    a declared task is started again after a backoff, and a hook's failure ends only
    that hook's task."""
    loaded = loaded_with(ep("flaky", "FLAKY"))
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make(tmp_path / "a", "a", loaded))
        b = await start(nursery, make(tmp_path / "b", "b", load()))
        await wait_for(lambda: a.services["flaky"].runs == 3, 10, "the task to run a third time")
        await b.connect(a.listen_addrs()[0])
        await wait_for(lambda: a.tasks.failures.get("flaky.on_peer_connected") == 1, 10, "the hook's failure")
        status = await a.call("node.status")
        tasks = status["tasks"]
        assert tasks["by_task"] == {"flaky.work": 2, "flaky.on_peer_connected": 1}
        assert tasks["failures"] == 3 and tasks["restarts"] == 2
        assert tasks["last_failure"]["task"] == "flaky.on_peer_connected"
        assert "a hook's bug" in tasks["last_failure"]["error"]
        assert (await a.call("ledger.append", {"kind": "note", "body": {"text": "still up"}}))["seq"] == 2
        await stop_all([a, b])
