"""Group commit (issue 12): own appends and synced record writes that wait while a write
is in flight share the next write and its one sync (p2pnode/ledger/writer.py, store.py
"Group writes"), each decided exactly as if the writes were serialised.

Fsyncs are counted, never timed: the store counts the synced batches it writes
(``Store.synced_writes``). A group is made deterministic by holding the writer's lock
while the appends queue, as a write in flight holds it. The write error is real: a child
process writes with an ``RLIMIT_FSIZE`` just past the end of its LevelDB log, so the
group's write tears a record and fails with EFBIG, as a full disk tears it with ENOSPC
(tests/cli/test_disk.py does the same to a node process).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.console import ROOT, child_env
from p2pnode.clock import SYSTEM
from p2pnode.extensions import load
from p2pnode.ledger.store import IndexView, Reserve, Store, StoreFailed, StoreFull, free_bytes
from p2pnode.ledger.verify import verify_store
from p2pnode.ledger.writer import MAX_GROUP, Ledger
from protocol.errors import CodedError
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

REGISTRY = load().registry
N = 40  # concurrent appends (below MAX_GROUP: one group)
assert N < MAX_GROUP


def opened(path, key: SigningKey) -> Store:
    store = Store(path, create=True, reserve=Reserve(own=0, others=0))
    if store.head(key.public_key) is None:
        store.append_one(key, "genesis", genesis_body(None), now_ms=SYSTEM.now_ms(), registry=REGISTRY)
    return store


def ledger_of(store: Store, key: SigningKey, counts: dict | None = None) -> tuple[Ledger, list]:
    counts = {} if counts is None else counts
    led = Ledger(store, key, REGISTRY, SYSTEM, count=lambda name, n: counts.__setitem__(name, counts.get(name, 0) + n))
    announced: list = []
    led.on_announce(announced.append)
    return led, announced


async def settle(results: dict[str, object], name: str, fn) -> None:
    """``results[name]``: what ``await fn()`` returned, or the ``CodedError`` it raised."""
    try:
        results[name] = await fn()
    except CodedError as e:
        results[name] = e


def texts(store: Store, key: SigningKey) -> list[str]:
    """The note texts of ``key``'s chain, in seq order (the genesis left out)."""
    from protocol.entry import parse_entry

    return [e.body["text"] for e in map(parse_entry, store.chain(key.public_key)) if e.kind == "note"]


@pytest.mark.trio
async def test_appends_that_wait_share_one_synced_write_and_are_durable_in_the_order_they_came(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, announced = ledger_of(store, key)
    queued: list[str] = []
    got: dict[str, int] = {}

    async def one(text: str) -> None:
        queued.append(text)  # (no checkpoint before the append queues: this is the queue's order)
        [entry] = await led.append([("note", {"text": text})])
        got[text] = entry.seq

    before = store.synced_writes
    async with trio.open_nursery() as nursery:
        async with led.lock:  # a write in flight: every append that comes now waits
            for i in range(N):
                nursery.start_soon(one, f"note {i}")
            await trio.testing.wait_all_tasks_blocked()
            assert not got and len(led._queue) == N
    assert store.synced_writes - before == 1  # one group, one sync
    assert sorted(got.values()) == list(range(2, N + 2))  # seq 1 is the genesis
    assert [got[t] for t in queued] == list(range(2, N + 2))  # in the order they came
    assert [e.body["text"] for batch in announced for e in batch] == queued  # each announced, in order
    store.close()
    with Store(tmp_path / "s") as again:  # durable: all there after a reopen, the store sound
        assert texts(again, key) == queued
        assert again.head(key.public_key).seq == N + 1
        assert verify_store(again, REGISTRY).ok


@pytest.mark.trio
async def test_appends_made_at_once_share_fsyncs_without_anyone_holding_the_lock(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, _ = ledger_of(store, key)
    before = store.synced_writes
    async with trio.open_nursery() as nursery:
        for i in range(N):
            nursery.start_soon(led.append_one, "note", {"text": f"note {i}"})
    synced = store.synced_writes - before
    assert 1 <= synced <= N // 4, synced  # one sync each would be N
    assert store.head(key.public_key).seq == N + 1 and sorted(texts(store, key)) == sorted(f"note {i}" for i in range(N))
    store.close()


@pytest.mark.trio
async def test_each_change_is_decided_as_if_serialised_and_a_refusal_leaves_the_rest_of_the_group(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, _ = ledger_of(store, key)
    answers: dict[str, object] = {}

    def recorded(text: str) -> bool:
        return text in texts(store, key)  # a read of the store: sees the group's earlier changes

    def refuse() -> None:
        raise CodedError("refused by its check", code="refused_here")

    before = store.synced_writes
    async with trio.open_nursery() as nursery:
        async with led.lock:
            for name, body, kw in [("a", {"text": "once"}, {"unless": lambda: recorded("once")}),
                                   ("b", {"text": "refused"}, {"check": refuse}),
                                   ("c", {"text": "once"}, {"unless": lambda: recorded("once")}),  # a's is in the group
                                   ("d", {"text": "x" * 10}, {}),
                                   ("e", {"txt": "no text field"}, {})]:  # a body the registry refuses
                nursery.start_soon(settle, answers, name, lambda b=body, k=kw: led.append_one("note", b, **k))
                await trio.testing.wait_all_tasks_blocked()  # (queued in this order)
    assert store.synced_writes - before == 1
    assert answers["a"].seq == 2 and answers["c"] is None and answers["d"].seq == 3
    assert isinstance(answers["b"], CodedError) and answers["b"].code == "refused_here"
    assert isinstance(answers["e"], CodedError) and answers["e"].code == "bad_body"
    assert texts(store, key) == ["once", "x" * 10] and store.head(key.public_key).seq == 3
    assert verify_store(store, REGISTRY).ok
    store.close()


@pytest.mark.trio
async def test_records_written_with_sync_join_the_appends_group(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, _ = ledger_of(store, key)
    space = store.records("test")
    space.write([(b"old", b"1")])
    results: dict[str, object] = {}
    before = store.synced_writes
    async with trio.open_nursery() as nursery:
        async with led.lock:
            nursery.start_soon(led.write_records, space, [(b"k1", b"v1")], [b"old"])
            nursery.start_soon(led.append_one, "note", {"text": "with records"})
            nursery.start_soon(lambda: led.append([("note", {"text": "and its own"})],
                                                  records=(space, [(b"k2", b"v2")], [])))
            nursery.start_soon(lambda: led.append([("note", {"text": "never"})], unless=lambda: True,
                                                  records=(space, [(b"k3", b"v3")], [])))  # records all the same
            nursery.start_soon(settle, results, "refused", lambda: led.append([("note", {"txt": "a body refused"})],
                                                                           records=(space, [(b"k4", b"v4")], [])))  # neither
            await trio.testing.wait_all_tasks_blocked()
            assert len(led._queue) == 5
    assert store.synced_writes - before == 1 and results["refused"].code == "bad_body"
    assert space.items() == [(b"k1", b"v1"), (b"k2", b"v2"), (b"k3", b"v3")]
    assert sorted(texts(store, key)) == ["and its own", "with records"]
    store.close()


@pytest.mark.trio
async def test_a_change_refused_for_the_reserve_leaves_the_rest_of_its_group(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, _ = ledger_of(store, key)
    space = store.records("test")
    results: dict[str, object] = {}

    async with trio.open_nursery() as nursery:
        async with led.lock:
            nursery.start_soon(settle, results, "append", lambda: led.append_one("note", {"text": "no room"}))
            nursery.start_soon(settle, results, "records", lambda: led.write_records(space, [(b"k", b"v")]))
            await trio.testing.wait_all_tasks_blocked()
            store.reserve = Reserve(own=free_bytes(store.path) + (1 << 40), others=0)
    assert isinstance(results["append"], StoreFull) and results["records"] is None  # records keep no reserve
    assert space.get(b"k") == b"v" and store.failure is None and texts(store, key) == []
    store.close()


@pytest.mark.trio
async def test_a_cancelled_append_is_dropped_before_its_group_and_waits_for_it_after(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, _ = ledger_of(store, key)
    scopes: dict[str, trio.CancelScope] = {}
    ended: dict[str, str] = {}

    async def one(text: str) -> None:
        with trio.CancelScope() as scopes[text]:
            await led.append_one("note", {"text": text})
        ended[text] = texts(store, key)  # what is stored when its task goes on

    async with trio.open_nursery() as nursery:
        async with led.lock:
            for text in ("dropped", "kept"):
                nursery.start_soon(one, text)
                await trio.testing.wait_all_tasks_blocked()
            scopes["dropped"].cancel()  # before a group took it: it leaves the queue
            await trio.testing.wait_all_tasks_blocked()
            assert ended == {"dropped": []} and len(led._queue) == 1
        # The group of "kept" is being written now (the lock went to its task): cancelling
        # it no longer stops the write, and the task waits for it before it ends.
        await trio.testing.wait_all_tasks_blocked()
        scopes["kept"].cancel()
    assert ended["kept"] == ["kept"]  # it went on only once its change was written
    store.close()


FAILING_GROUP = r"""
import json, resource, sys
from pathlib import Path
import trio, trio.testing
from p2pnode.clock import SYSTEM
from p2pnode.extensions import load
from p2pnode.ledger.store import Reserve, Store, StoreError
from p2pnode.ledger.writer import Ledger
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

path, n = Path(sys.argv[1]), int(sys.argv[2])
registry, key = load().registry, SigningKey.generate()
store = Store(path, create=True, reserve=Reserve(own=0, others=0))
store.append_one(key, "genesis", genesis_body(None), now_ms=SYSTEM.now_ms(), registry=registry)
led = Ledger(store, key, registry, SYSTEM, count=lambda *a: None)
out = {"key": key.public_key.hex(), "acked": [], "failed": []}

async def one(text):
    try:
        e = await led.append_one("note", {"text": text})
        out["acked"].append([text, e.seq])
    except StoreError as e:
        out["failed"].append([text, e.code, e.message])

async def main():
    await one("before the limit")  # written alone: acknowledged
    log = max(path.glob("*.log"), key=lambda p: p.stat().st_size)
    room = log.stat().st_size + 2000  # room for less than the group below
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.RLIM_INFINITY))  # (Python ignores SIGXFSZ)
    async with trio.open_nursery() as nursery:
        async with led.lock:
            for i in range(n):
                nursery.start_soon(one, f"in the group {i} " + "x" * 500)
            await trio.testing.wait_all_tasks_blocked()
    out["failure"] = store.failure
    await one("after the failure")
    try:
        store.records("test").write([(b"k", b"v")])
        out["records_after"] = "written"
    except StoreError as e:
        out["records_after"] = e.code
    store.close()

trio.run(main)
print(json.dumps(out))
"""


def test_a_write_error_fails_every_caller_of_its_group_and_the_store_stops_keeping_every_acked_entry(tmp_path):
    script = tmp_path / "failing_group.py"
    script.write_text(FAILING_GROUP)
    n = 10
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "s"), str(n)], capture_output=True,
                         text=True, timeout=60, env=child_env(), cwd=ROOT)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["acked"] == [["before the limit", 2]], out  # nothing of the group was acknowledged
    group = [f for f in out["failed"] if f[0].startswith("in the group")]
    assert len(group) == n and all(code == "store_error" and "File too large" in msg for _, code, msg in group), out
    assert out["failure"] is not None
    assert out["failed"][-1][:2] == ["after the failure", "store_failed"], out  # fail-stop
    assert out["records_after"] == "store_failed", out
    key = bytes.fromhex(out["key"])
    with Store(tmp_path / "s") as again:  # opens (the torn record at the log's end is a crash's), all acked kept
        assert again.head(key).seq == 2
        assert [t for t in texts_of(again, key)] == ["before the limit"]
        assert verify_store(again, REGISTRY).ok
        again.records("test").write([(b"k", b"v")], sync=True)  # writes again after the restart
        assert isinstance(again.failure, type(None))


def texts_of(store: Store, key: bytes) -> list[str]:
    from protocol.entry import parse_entry

    return [e.body["text"] for e in map(parse_entry, store.chain(key)) if e.kind == "note"]


@pytest.mark.trio
async def test_after_a_failed_write_the_writer_refuses_at_once(tmp_path):
    key = SigningKey.generate()
    store = opened(tmp_path / "s", key)
    led, _ = ledger_of(store, key)
    store.failure = "an earlier write failed (made here)"
    with pytest.raises(StoreFailed):
        await led.append_one("note", {"text": "refused"})
    with pytest.raises(StoreFailed):
        await led.write_records(store.records("test"), [(b"k", b"v")])
    assert texts(store, key) == []
    store.close()


_KEY = st.binary(max_size=3).map(lambda b: bytes(x % 3 * 0x7f for x in b))  # bytes 0x00, 0x7f, 0xfe: prefix edges


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    with Store(tmp_path_factory.mktemp("overlay") / "s", create=True, reserve=Reserve(own=0, others=0)) as store:
        yield store, iter(range(1_000_000))  # (a fresh space for each example)


@settings(max_examples=150, deadline=None)
@given(stored=st.dictionaries(_KEY, st.binary(max_size=2), max_size=12),
       puts=st.dictionaries(_KEY, st.binary(max_size=2), max_size=12), deletes=st.lists(_KEY, max_size=8),
       prefix=_KEY)
def test_reads_in_a_group_see_its_writes_exactly_as_after_they_are_written(scratch, stored, puts, deletes, prefix):
    store, spaces = scratch
    space = store.records(f"h{next(spaces)}")
    space.write(list(stored.items()))
    group = store.group()
    group.write([(space.prefix + k, v) for k, v in puts.items()], [space.prefix + k for k in deletes])

    def reads() -> tuple:
        return (space.items(), list(space.keys(prefix)), space.items(prefix),
                {k: space.get(k) for k in [*stored, *puts, *deletes, prefix]},
                IndexView(store, space.prefix).distinct(1))

    before = reads()
    with group.reading():
        during = reads()
        seen_elsewhere: list = []
        worker = threading.Thread(target=lambda: seen_elsewhere.append(reads()))
        worker.start()
        worker.join()
    assert seen_elsewhere == [before]  # another thread never sees what is gathered
    assert reads() == before  # nor this one, once it stops reading the group back
    group.commit()
    assert during == reads()  # what the group read back is what was written


@pytest.mark.trio
async def test_arrivals_list_the_last_foreign_entries_stored_with_when_and_how(tmp_path, monkeypatch):
    """``Ledger.arrivals``: one ``Arrival`` per foreign entry added (not per duplicate),
    oldest first, each with its author, seq, ts, the clock's time and the path it came
    by, and no more than ``ARRIVALS_KEPT`` of them."""
    from framework.chains import signed_chain
    from p2pnode.ledger import writer

    monkeypatch.setattr(writer, "ARRIVALS_KEPT", 5)
    key, other = SigningKey.generate(), SigningKey.generate()
    led, _ = ledger_of(opened(tmp_path / "s", key), key)
    led._arrived = writer.deque(maxlen=5)  # (made in __init__ with the module's limit, patched after)
    chain = signed_chain(other, 8)
    await led.ingest([e.envelope for e in chain[:3]], other.public_key, via="sync")
    await led.ingest([e.envelope for e in chain[:3]], other.public_key, via="gossip")  # (duplicates: no arrival)
    assert [(a.author, a.seq, a.ts, a.via) for a in led.arrivals] == [(e.author, e.seq, e.ts, "sync") for e in chain[:3]]
    report = await led.ingest([e.envelope for e in chain[3:]], other.public_key, via="gossip")
    assert len(report.added) == 5
    arrivals = led.arrivals
    assert all(type(a) is writer.Arrival for a in arrivals)
    assert [(a.seq, a.via) for a in arrivals] == [(e.seq, "gossip") for e in chain[3:]]
    assert all(abs(a.received_ms - SYSTEM.now_ms()) < 60_000 for a in arrivals)
