"""The LevelDB store, in-process, on a real plyvel database: appends, reads, ingest of
foreign chains (order, duplicates, gaps, strictness, forks), locking, and start-up."""

from __future__ import annotations

import os
import random
from pathlib import Path

import plyvel
import pytest

from p2pnode.ledger.store import (
    P_ENTRY,
    IngestRefused,
    Store,
    StoreError,
    StoreLocked,
    StoreMissing,
)
from p2pnode.ledger.verify import verify_store
from protocol.chain import Head
from protocol.entry import ZERO_ID, Entry, next_entry, parse_entry
from protocol.errors import ChainError, ProtocolError
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.kinds import core_registry, genesis_body

T0 = 1_700_000_000_000


@pytest.fixture
def registry():
    return core_registry()


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "store", create=True)
    yield s
    s.close()


def build_chain(key: SigningKey, n: int, *, t0: int = T0, tag: str = "") -> list[Entry]:
    """``key``'s chain of ``n`` entries: genesis, then notes."""
    out: list[Entry] = []
    head = None
    for seq in range(1, n + 1):
        kind, body = ("genesis", genesis_body(f"node{tag}")) if seq == 1 else ("note", {"text": f"{tag} {seq}"})
        head = next_entry(key, head, now_ms=t0 + seq, kind=kind, body=body)
        out.append(head)
    return out


def append_own(store: Store, key: SigningKey, registry, n: int) -> list[Entry]:
    items = [("genesis", genesis_body("me"))] + [("note", {"text": f"n{i}"}) for i in range(2, n + 1)]
    return store.append(key, items, now_ms=T0, registry=registry)


def entry_keys(store: Store) -> list[bytes]:
    return list(store.db.iterator(prefix=P_ENTRY, include_value=False))


# -- own entries ------------------------------------------------------------------------


def test_append_one_and_read_back(store, registry):
    key = SigningKey.generate()
    g = store.append_one(key, "genesis", genesis_body("alice"), now_ms=T0, registry=registry)
    n = store.append_one(key, "note", {"text": "hello"}, now_ms=T0 + 5, registry=registry)

    assert (g.seq, g.prev, g.kind) == (1, ZERO_ID, "genesis")
    assert (n.seq, n.prev, n.ts, n.body) == (2, g.id, T0 + 5, {"text": "hello"})
    assert store.get(key.public_key, 1) == g.envelope
    assert store.get(key.public_key, 2) == n.envelope
    assert store.get(key.public_key, 3) is None
    assert store.entry(key.public_key, 2) == n
    assert store.locate(g.id) == (key.public_key, 1)
    assert store.locate(n.id) == (key.public_key, 2)
    assert store.locate(bytes(32)) is None
    assert store.head(key.public_key) == Head(key.public_key, 2, n.id, n.ts)
    assert store.heads() == {key.public_key: Head.of(n)}


def test_append_keeps_ts_monotonic_when_clock_goes_back(store, registry):
    key = SigningKey.generate()
    store.append_one(key, "genesis", genesis_body(), now_ms=T0 + 1000, registry=registry)
    e = store.append_one(key, "note", {"text": "late"}, now_ms=T0, registry=registry)
    assert e.ts == T0 + 1000


def test_append_batch_links_and_reads_back(store, registry):
    key = SigningKey.generate()
    first = append_own(store, key, registry, 3)
    batch = store.append(key, [("note", {"text": f"b{i}"}) for i in range(5)], now_ms=T0 + 1, registry=registry)

    assert [e.seq for e in first + batch] == list(range(1, 9))
    for before, after in zip(first + batch, (first + batch)[1:]):
        assert after.prev == before.id
    for e in first + batch:
        assert parse_entry(store.get(key.public_key, e.seq)) == e
        assert store.locate(e.id) == (key.public_key, e.seq)
    assert store.head(key.public_key) == Head.of(batch[-1])
    assert store.append(key, [], now_ms=T0, registry=registry) == []
    assert store.head(key.public_key) == Head.of(batch[-1])


@pytest.mark.parametrize(
    "bad",
    [("note", {"txt": "no text field"}), ("note", {"text": 1.5}), ("x.custom", {"n": 2**64}), ("Bad Kind", {})],
    ids=["bad-note", "float", "int-too-big", "bad-kind-name"],
)
def test_append_batch_with_one_bad_item_stores_nothing(store, registry, bad):
    key = SigningKey.generate()
    append_own(store, key, registry, 2)
    before = entry_keys(store), store.heads()
    items = [("note", {"text": "fine"}), bad, ("note", {"text": "fine too"})]
    with pytest.raises(ProtocolError):
        store.append(key, items, now_ms=T0, registry=registry)
    assert (entry_keys(store), store.heads()) == before


def test_first_own_entry_must_be_genesis(store, registry):
    key = SigningKey.generate()
    with pytest.raises(ChainError) as ei:
        store.append_one(key, "note", {"text": "no genesis"}, now_ms=T0, registry=registry)
    assert ei.value.code == "bad_body"
    assert store.head(key.public_key) is None
    assert entry_keys(store) == []


def test_unknown_kind_is_stored(store, registry):
    key = SigningKey.generate()
    append_own(store, key, registry, 1)
    e = store.append_one(key, "x.custom", {"anything": [1, b"\x00", None]}, now_ms=T0, registry=registry)
    assert store.entry(key.public_key, 2) == e


def test_chain_iteration_start_and_limit(store, registry):
    keys = [SigningKey.generate() for _ in range(3)]
    chains = {k.public_key: append_own(store, k, registry, 10) for k in keys}
    for author, entries in chains.items():
        envs = [e.envelope for e in entries]
        assert list(store.chain(author)) == envs  # never runs into a neighbour's keys
        assert list(store.chain(author, start=4, limit=3)) == envs[3:6]
        assert list(store.chain(author, start=9, limit=5)) == envs[8:]
        assert list(store.chain(author, start=11)) == []
        assert list(store.chain(author, limit=0)) == []
    assert list(store.chain(bytes(32))) == []
    assert store.heads() == {a: Head.of(es[-1]) for a, es in chains.items()}


# -- foreign entries --------------------------------------------------------------------


def test_ingest_any_order_several_authors(store, registry):
    keys = [SigningKey.generate() for _ in range(4)]
    chains = {k.public_key: build_chain(k, 7, tag=str(i)) for i, k in enumerate(keys)}
    envelopes = [e.envelope for es in chains.values() for e in es]
    random.Random(7).shuffle(envelopes)

    report = store.ingest(envelopes, registry=registry)

    assert len(report.added) == 28
    assert (report.duplicates, report.forks, report.errors) == (0, [], [])
    assert store.heads() == {a: Head.of(es[-1]) for a, es in chains.items()}
    for author, es in chains.items():
        assert list(store.chain(author)) == [e.envelope for e in es]
        for e in es:
            assert store.locate(e.id) == (author, e.seq)
    assert verify_store(store, registry).ok


def test_ingest_extends_stored_chain_and_counts_duplicates(store, registry):
    key = SigningKey.generate()
    es = build_chain(key, 8)
    first = store.ingest([e.envelope for e in es[:4]], registry=registry)
    assert len(first.added) == 4

    second = store.ingest([e.envelope for e in reversed(es)], registry=registry)
    assert [e.seq for e in second.added] == [5, 6, 7, 8]
    assert second.duplicates == 4

    keys_before = entry_keys(store)
    third = store.ingest([e.envelope for e in es], registry=registry, strict=True)
    assert (third.added, third.duplicates, third.forks) == ([], 8, [])
    assert entry_keys(store) == keys_before
    assert store.head(key.public_key) == Head.of(es[-1])


def test_ingest_gap_stops_that_authors_chain(store, registry):
    a, b = SigningKey.generate(), SigningKey.generate()
    ca, cb = build_chain(a, 6), build_chain(b, 3)
    with_gap = [e.envelope for e in ca if e.seq != 4] + [e.envelope for e in cb]

    report = store.ingest(with_gap, registry=registry)

    assert len(report.errors) == 1
    err = report.errors[0]
    assert isinstance(err, ChainError)
    assert (err.code, err.author, err.seq) == ("bad_seq", a.public_key, 4)
    assert store.head(a.public_key) == Head.of(ca[2])  # 1..3 stored, nothing after the gap
    assert store.get(a.public_key, 5) is None and store.get(a.public_key, 6) is None
    assert store.head(b.public_key) == Head.of(cb[-1])  # another author is unaffected
    assert verify_store(store, registry).ok


def test_ingest_chain_must_link_to_stored_head(store, registry):
    key = SigningKey.generate()
    es = build_chain(key, 4)
    report = store.ingest([es[2].envelope, es[3].envelope], registry=registry)  # no seq 1, 2
    assert report.added == []
    assert [(e.code, e.seq) for e in report.errors] == [("bad_seq", 1)]
    assert store.head(key.public_key) is None


def test_strict_ingest_with_a_gap_stores_nothing(store, registry):
    a, b = SigningKey.generate(), SigningKey.generate()
    ca, cb = build_chain(a, 6), build_chain(b, 3)
    store.ingest([e.envelope for e in ca[:2]], registry=registry)
    before = entry_keys(store), store.heads()

    with pytest.raises(IngestRefused) as ei:
        store.ingest([e.envelope for e in ca if e.seq != 4] + [e.envelope for e in cb], registry=registry, strict=True)

    assert [(x.code, x.author, x.seq) for x in ei.value.report.errors] == [("bad_seq", a.public_key, 4)]
    assert ei.value.code == "import_refused"
    assert (entry_keys(store), store.heads()) == before


@pytest.mark.parametrize("damage", ["bad-signature", "garbage", "bad-genesis", "wrong-prev"])
def test_strict_ingest_with_one_bad_entry_stores_nothing(store, registry, damage):
    key, other = SigningKey.generate(), SigningKey.generate()
    es, good = build_chain(key, 5), build_chain(other, 4)
    envs = [e.envelope for e in es]
    if damage == "bad-signature":
        b = bytearray(envs[2])
        b[-3] ^= 0x40
        envs[2] = bytes(b)
    elif damage == "garbage":
        envs[2] = b"\x92\xc4\x03abc"
    elif damage == "bad-genesis":  # validly signed, but a chain that opens with no valid genesis
        envs[0] = next_entry(key, None, now_ms=T0, kind="genesis", body={"protocol": "p2plend/2"}).envelope
    else:  # validly signed seq 6 whose prev is not seq 5's id
        envs.append(next_entry(key, Head(key.public_key, 5, bytes(32), T0), now_ms=T0 + 99, kind="note", body={"text": "x"}).envelope)

    with pytest.raises(IngestRefused) as ei:
        store.ingest(envs + [e.envelope for e in good], registry=registry, strict=True)

    assert ei.value.report.errors
    assert entry_keys(store) == [] and store.heads() == {}
    # The same input, not strict: the valid part is stored.
    report = store.ingest(envs + [e.envelope for e in good], registry=registry)
    assert report.errors and store.head(other.public_key) == Head.of(good[-1])


def test_an_entry_whose_body_its_kind_refuses_is_stored_and_classified_invalid(store, registry):
    """Replication never depends on kinds (kinds.py, rule 2): a validly signed, linked entry
    is stored even when the kind's validator refuses its body, strict or not; the registry
    says it is invalid, and it is not indexed."""
    from protocol.kinds import INVALID

    key = SigningKey.generate()
    es = build_chain(key, 3)
    bad = next_entry(key, es[-1], now_ms=T0 + 99, kind="note", body={"txt": "x"})
    after = next_entry(key, bad, now_ms=T0 + 100, kind="note", body={"text": "after"})
    report = store.ingest([e.envelope for e in es] + [bad.envelope, after.envelope], registry=registry, strict=True)
    assert not report.errors and store.head(key.public_key) == Head.of(after)
    assert registry.classify(store.entry(key.public_key, 4)).status == INVALID
    assert verify_store(store, registry).ok and verify_store(store, registry).invalid_bodies == 1


def test_fork_against_stored_entry_is_recorded(store, registry):
    key = SigningKey.generate()
    es = build_chain(key, 5)
    store.ingest([e.envelope for e in es], registry=registry)
    alt = next_entry(key, es[1], now_ms=T0 + 50, kind="note", body={"text": "the other history"})
    assert alt.seq == 3 and alt.id != es[2].id

    report = store.ingest([alt.envelope], registry=registry)

    assert report.added == [] and report.errors == []
    assert len(report.forks) == 1
    assert (report.forks[0].author, report.forks[0].seq) == (key.public_key, 3)
    proofs = store.fork_proofs()
    assert len(proofs) == 1
    proof = ForkProof.decode(proofs[0])
    assert {proof.a.id, proof.b.id} == {es[2].id, alt.id}
    assert store.fork_proofs(key.public_key) == proofs
    assert store.forked_authors() == {key.public_key}
    assert store.get(key.public_key, 3) == es[2].envelope  # the held entry stays
    assert store.record_fork(proof) is False  # already recorded
    report = verify_store(store, registry)
    assert report.ok and report.fork_proofs == 1


def test_strict_ingest_with_a_fork_stores_no_entry_but_records_the_proof(store, registry):
    key, other = SigningKey.generate(), SigningKey.generate()
    es = build_chain(key, 7)
    store.ingest([e.envelope for e in es[:5]], registry=registry)
    before = entry_keys(store), store.heads()
    alt = next_entry(key, es[2], now_ms=T0 + 50, kind="note", body={"text": "forked"})

    with pytest.raises(IngestRefused) as ei:
        store.ingest(
            [e.envelope for e in es[5:]] + [alt.envelope] + [e.envelope for e in build_chain(other, 3)],
            registry=registry,
            strict=True,
        )

    assert [(f.author, f.seq) for f in ei.value.report.forks] == [(key.public_key, 4)]
    assert (entry_keys(store), store.heads()) == before
    assert store.forked_authors() == {key.public_key}
    assert len(store.fork_proofs()) == 1


def test_fork_within_one_input_is_recorded(store, registry):
    key = SigningKey.generate()
    es = build_chain(key, 2)
    alt = next_entry(key, es[0], now_ms=T0 + 9, kind="note", body={"text": "twin"})
    with pytest.raises(IngestRefused):
        store.ingest([es[0].envelope, es[1].envelope, alt.envelope], registry=registry, strict=True)
    assert store.heads() == {}
    assert store.forked_authors() == {key.public_key}
    assert ForkProof.decode(store.fork_proofs()[0]).seq == 2


# -- opening ----------------------------------------------------------------------------


def test_second_store_on_same_path_is_locked(tmp_path, registry):
    path = tmp_path / "store"
    with Store(path, create=True):
        with pytest.raises(StoreLocked) as ei:
            Store(path)
        assert ei.value.code == "node_running"
    with Store(path) as again:  # released on close
        assert again.meta("schema") == b"1"


def test_opening_without_a_store_is_missing(tmp_path):
    with pytest.raises(StoreMissing) as ei:
        Store(tmp_path / "nothing")
    assert "p2pnode init" in str(ei.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreMissing):
        Store(tmp_path / "empty")
    assert not (tmp_path / "nothing").exists()
    assert os.listdir(tmp_path / "empty") == []


def test_io_error_in_a_path_naming_lock_is_not_reported_as_locked(tmp_path, registry):
    """Regression: any LevelDB error whose text contained "lock" (e.g. in the path
    /srv/blocks/...) was reported as "in use by another process"."""
    path = tmp_path / "blocks" / "store"
    path.parent.mkdir()
    with Store(path, create=True) as s:
        append_own(s, SigningKey.generate(), registry, 20)
        s.db.compact_range()
    tables = [p for p in path.iterdir() if p.suffix == ".ldb"]
    assert tables
    for p in tables:
        os.truncate(p, p.stat().st_size // 2)
    with pytest.raises(StoreError) as ei:
        Store(path)
    assert not isinstance(ei.value, StoreLocked)
    assert "b'" not in str(ei.value)  # LevelDB's message is shown as text, not bytes repr


def test_open_reads_nothing_proportional_to_the_ledger(tmp_path, registry):
    """Opening a store of 5,000 entries and reading its heads touches no entry: with the
    part of the table file that holds the entries zeroed, open, head() and heads() still
    work, while a full read does see the damage (so the damage is real)."""
    path = tmp_path / "store"
    key, other = SigningKey.generate(), SigningKey.generate()
    with Store(path, create=True) as s:
        own = append_own(s, key, registry, 5000)
        s.ingest([e.envelope for e in build_chain(other, 3)], registry=registry)
        heads = s.heads()
    db = plyvel.DB(str(path))
    db.compact_range()  # flush everything into a table file
    db.close()
    # Keys sort E (entries, ~80% of the bytes), F, H, I, M: the first half of the largest
    # table is entry blocks only; its index and the H and M blocks lie near its end.
    table = max(path.glob("*.ldb"), key=lambda p: p.stat().st_size)
    size = table.stat().st_size
    assert size > 500_000, "setup: expected the entries in one large table file"
    with open(table, "r+b") as fh:
        fh.seek(size // 10)
        fh.write(bytes(size * 4 // 10))

    with Store(path) as s:
        assert s.heads() == heads
        assert s.head(key.public_key) == Head.of(own[-1])
        assert s.head(other.public_key).seq == 3
        assert s.meta("schema") == b"1"
        report = verify_store(s, registry)
    assert not report.ok
    assert any(p.code == "store_corrupt" for p in report.problems)


def test_interest_evicts_the_least_recently_stored_stranger_and_never_one_with_standing(tmp_path, registry):
    """p2pnode/net/interest.py on a real store: with a budget of 2, a third stranger's
    fresh chain pushes out the stranger stored to least recently (its entries, ids, index
    keys and head, in one write), never the node's own chain nor a vouched-for author's;
    a sync pull (no eviction) takes none beyond the budget."""
    from p2pnode.ledger.verify import verify_store
    from p2pnode.net.interest import Interest
    from protocol.entry import make_entry

    REGISTRY = registry
    me, friend, *strangers = (SigningKey.from_seed(bytes([n]) * 32) for n in range(1, 7))
    with Store(tmp_path / "s", create=True) as store:
        store.append(me, [("genesis", genesis_body("me"))], now_ms=T0, registry=REGISTRY)
        interest = Interest(me.public_key, store, REGISTRY, [lambda a: 2 if a == friend.public_key else 0], budget=2)

        def arrive(key, evict=True):
            env = make_entry(key, seq=1, prev=ZERO_ID, ts=T0, kind="genesis", body=genesis_body(None)).envelope
            report = store.ingest([env], registry=REGISTRY, admit=lambda a: interest.admits(a, evict=evict))
            interest.stored({e.author for e in report.added})
            return report

        for key in (strangers[0], friend, strangers[1]):
            assert arrive(key).added
        assert not arrive(strangers[2], evict=False).added  # a pull: no room, no eviction
        assert arrive(strangers[2]).added  # fresh by gossip: the least recently stored stranger goes
        held = set(store.heads())
        assert held == {me.public_key, friend.public_key, strangers[1].public_key, strangers[2].public_key}
        assert verify_store(store, REGISTRY).ok


# -- the change feed (store invariant I8) ------------------------------------------------


def feed_records(store: Store) -> tuple[list[tuple[int, bytes]], dict[bytes, int]]:
    """The ``U`` records (counter, author) in order and the ``u`` records, read raw."""
    from p2pnode.ledger.store import P_CHANGE, P_CHANGED

    changes = [(int.from_bytes(k[1:], "big"), v) for k, v in store.db.iterator(prefix=P_CHANGE)]
    where = {k[1:]: int.from_bytes(v, "big") for k, v in store.db.iterator(prefix=P_CHANGED)}
    return changes, where


def test_the_change_feed_holds_one_record_per_chain_at_its_last_change(store, registry):
    me, x, y = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    xs, ys = build_chain(x, 4), build_chain(y, 2)
    assert store.counter == 0 and len(store.epoch) == 16
    append_own(store, me, registry, 2)  # 1: me
    store.ingest([e.envelope for e in xs[:2] + ys], registry=registry)  # 2, 3: x and y in one write
    store.ingest([e.envelope for e in xs[2:]], registry=registry)  # 4: x again
    store.ingest([e.envelope for e in ys], registry=registry)  # duplicates: no change, no counter
    changes, where = feed_records(store)
    assert store.counter == 4
    assert [a for _, a in changes] == [me.public_key, y.public_key, x.public_key]  # x's older record went
    assert where == {a: c for c, a in changes}
    assert set(where) == set(store.heads())
    upto, got = store.changes(0, 10)
    assert upto == 4 and [(c, h.author) for c, h in got] == changes
    assert got[-1][1] == Head.of(xs[-1])
    assert store.changes(3, 10) == (4, [(4, Head.of(xs[-1]))])  # only what changed after 3
    assert store.changes(4, 10) == (4, [])  # an idle read: nothing after the counter
    assert store.changes(0, 1) == (4, got[:1])  # paged
    assert verify_store(store, registry).ok


def test_a_dropped_chain_leaves_the_feed_and_a_fork_proof_changes_its_chain(store, registry):
    x, y = SigningKey.generate(), SigningKey.generate()
    xs = build_chain(x, 3)
    store.ingest([e.envelope for e in xs] + [e.envelope for e in build_chain(y, 1)], registry=registry)
    before = store.counter
    assert store.drop_chain(y.public_key, registry) == 1
    changes, where = feed_records(store)
    assert y.public_key not in where and all(a != y.public_key for _, a in changes)
    assert store.counter == before  # a drop gives no counter: nothing is left to pull
    alt = next_entry(x, xs[1], now_ms=T0 + 50, kind="note", body={"text": "the other history"})
    report = store.ingest([alt.envelope], registry=registry)
    assert report.forks and store.counter == before + 1  # peers that pull changes see x again
    assert feed_records(store)[0] == [(before + 1, x.public_key)]
    assert verify_store(store, registry).ok


def test_the_feed_survives_a_restart_and_a_store_made_before_it_gets_one_on_open(tmp_path, registry):
    from p2pnode.ledger.store import META_CHANGES, META_EPOCH, P_CHANGE, P_CHANGED

    path = tmp_path / "store"
    keys = [SigningKey.generate() for _ in range(5)]
    with Store(path, create=True) as s:
        for k in keys:
            s.ingest([e.envelope for e in build_chain(k, 2)], registry=registry)
        epoch, counter, records = s.epoch, s.counter, feed_records(s)
    with Store(path) as s:  # restart: the same feed
        assert (s.epoch, s.counter, feed_records(s)) == (epoch, counter, records)
    db = plyvel.DB(str(path))  # a store of the layout before the feed: no U, u, epoch or counter
    for prefix in (P_CHANGE, P_CHANGED):
        for k in list(db.iterator(prefix=prefix, include_value=False)):
            db.delete(k)
    db.delete(META_CHANGES)
    db.delete(META_EPOCH)
    db.close()
    with Store(path) as s:
        changes, where = feed_records(s)
        assert s.counter == 5 and s.epoch != epoch  # a new feed: counters of the old one are void
        assert set(where) == {k.public_key for k in keys} and len(changes) == 5
        assert verify_store(s, registry).ok
        rebuilt = (s.epoch, feed_records(s))
    with Store(path) as s:  # rebuilt once: the next open keeps it
        assert (s.epoch, feed_records(s)) == rebuilt


def test_verify_reports_a_broken_change_feed(store, registry):
    from p2pnode.ledger.store import P_CHANGED

    x = SigningKey.generate()
    store.ingest([e.envelope for e in build_chain(x, 2)], registry=registry)
    store.db.delete(P_CHANGED + x.public_key)
    report = verify_store(store, registry)
    assert {p.code for p in report.problems} == {"bad_change_feed"}


def test_a_marked_page_and_the_changes_are_read_at_one_instant(store, registry):
    x = SigningKey.generate()
    store.ingest([e.envelope for e in build_chain(x, 2)], registry=registry)
    upto, page = store.marked_heads_page(None, 10)
    assert upto == store.counter == 1 and page == store.heads()
