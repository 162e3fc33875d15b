"""The signature workers (p2pnode/ledger/sigpool.py), as real processes: what a store
takes in with their verdicts is exactly what it takes in without them, for valid batches
and tampered ones (Hypothesis over random tamperings); a killed worker means in-process
checks, logged, and bad entries are still refused; closing leaves no worker process; a
node uses them for a big pull and leaves none behind when it stops."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.inprocess import REGISTRY, heads_of, make_node, start, stop_all, sync_all
from framework.wait import wait_for, wait_until
from p2pnode.ledger.sigpool import NOTHING, SMALL_BATCH, SignaturePool, default_workers
from p2pnode.ledger.store import IngestReport, Store
from p2pnode.walltime import now_ms
from framework.chains import signed_chain
from protocol.entry import Entry
from protocol.envelope import seal
from protocol.keys import SigningKey

A, B = (SigningKey.from_seed(hashlib.sha256(b"sigpool %d" % i).digest()) for i in range(2))
N = 150  # entries in the test chain: a batch over SMALL_BATCH, so it goes to the workers


def chain(key: SigningKey, n: int) -> list[Entry]:
    return signed_chain(key, n)


CHAIN = chain(A, N)
ENVELOPES = [e.envelope for e in CHAIN]


def flip(data: bytes, at: int, bit: int = 0) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]


def wrong_author(entry: Entry) -> bytes:
    return seal(entry.document(), B).raw


def summary(report: IngestReport) -> tuple:
    """All of a report, comparable: ids added, duplicates, forks, and each error in full."""
    return ([e.id for e in report.added], report.duplicates, [(p.a.id, p.b.id) for p in report.forks],
            [(type(e), e.code, e.message, e.author, e.seq) for e in report.errors])


def ingest_both(tmp: Path, batch: list[bytes], verdicts: dict, **kw) -> tuple[tuple, tuple]:
    """``batch`` ingested by two fresh stores, with ``verdicts`` and without."""
    out = []
    for name, given_verdicts in (("with", verdicts), ("without", None)):
        path = tmp / f"{name}-{os.urandom(4).hex()}"
        with Store(path, create=True) as store:
            out.append(summary(store.ingest(batch, registry=REGISTRY, verdicts=given_verdicts, **kw)))
    return out[0], out[1]


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def pool():
    p = SignaturePool(2, small_batch=0)
    yield p
    p.close()


def verdicts_of(pool: SignaturePool, batch: list[bytes]) -> dict:
    return trio.run(pool.check(batch).verdicts)


# -- what the workers give ---------------------------------------------------------------


def test_the_default_is_one_worker_per_core_within_the_bound():
    assert 1 <= default_workers() <= 8
    assert SignaturePool().workers == default_workers()
    assert SignaturePool(0).check(ENVELOPES) is NOTHING  # (0: every check in-process)


def test_a_small_batch_stays_in_process_and_starts_no_worker():
    p = SignaturePool(2)
    assert p.check(ENVELOPES[:SMALL_BATCH]) is NOTHING
    assert not p.running and p.pids() == []
    p.close()


def test_a_valid_batch_is_taken_in_alike_with_the_workers_verdicts(pool, tmp_path):
    verdicts = verdicts_of(pool, ENVELOPES)
    assert set(verdicts) == set(ENVELOPES) and all(v == (True,) for v in verdicts.values())
    with_, without = ingest_both(tmp_path, ENVELOPES, verdicts)
    assert with_ == without and len(with_[0]) == N and not with_[3]


def test_a_flipped_signature_byte_and_a_wrong_author_are_refused_alike(pool, tmp_path):
    batch = list(ENVELOPES)
    batch[40] = flip(batch[40], -1)  # (a byte of the signature)
    batch[90] = wrong_author(CHAIN[90])
    verdicts = verdicts_of(pool, batch)
    assert verdicts[batch[40]] == (False,)
    with_, without = ingest_both(tmp_path, batch, verdicts)
    assert with_ == without
    assert len(with_[0]) == 40 and {e[1] for e in with_[3]} == {"bad_signature", "bad_seq"}
    with_, without = ingest_both(tmp_path, batch, verdicts, author=A.public_key)
    assert with_ == without


tamperings = st.lists(st.tuples(st.integers(0, N - 1), st.sampled_from(["flip", "signature", "author", "drop"]),
                                st.integers(0, 400), st.integers(0, 7)), min_size=1, max_size=4)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tamperings)
def test_any_tampering_of_a_batch_is_taken_in_alike_with_the_workers_verdicts(pool, tmp_path, hows):
    batch = list(ENVELOPES)
    for i, how, at, bit in hows:
        if how == "flip":
            batch[i] = flip(batch[i], at, bit)
        elif how == "signature":
            batch[i] = flip(batch[i], len(batch[i]) - 64 + at % 64, bit)
        elif how == "author":
            batch[i] = wrong_author(CHAIN[i])
        else:
            batch[i] = b""
    with_, without = ingest_both(tmp_path, batch, verdicts_of(pool, batch))
    assert with_ == without


# -- failures and shutdown ---------------------------------------------------------------------


def test_a_killed_worker_means_in_process_checks_logged_and_bad_entries_still_refused(tmp_path, caplog):
    p = SignaturePool(2, small_batch=0, max_restarts=1)
    try:
        assert verdicts_of(p, ENVELOPES)  # (started, and working)
        victim = p.pids()[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: not alive(victim), 10, "the worker to die")
        batch = list(ENVELOPES)
        batch[7] = flip(batch[7], -1)
        with caplog.at_level(logging.WARNING, logger="p2pnode.ledger.sigpool"):
            verdicts = verdicts_of(p, batch)
        assert verdicts == {}  # (the pool broke: every envelope is verified in-process)
        assert "signature workers failed" in caplog.text
        with_, without = ingest_both(tmp_path, batch, verdicts)
        assert with_ == without and len(with_[0]) == 7 and with_[3][0][1] == "bad_signature"
        # the next big batch starts a new pool (max_restarts=1), which works
        again = verdicts_of(p, batch)
        assert again[batch[7]] == (False,) and again[batch[8]] == (True,)
        assert victim not in p.pids()
    finally:
        p.close()


def test_a_pool_broken_past_its_restarts_checks_everything_in_process():
    p = SignaturePool(1, small_batch=0, max_restarts=0)
    try:
        verdicts_of(p, ENVELOPES)
        os.kill(p.pids()[0], signal.SIGKILL)
        assert verdicts_of(p, ENVELOPES) == {}
        assert p.check(ENVELOPES) is NOTHING and not p.running
    finally:
        p.close()


def test_close_leaves_no_worker_process():
    p = SignaturePool(2, small_batch=0)
    verdicts_of(p, ENVELOPES)
    pids = p.pids()
    assert len(pids) == 2 and all(alive(pid) for pid in pids)
    p.close()
    assert not any(alive(pid) for pid in pids)
    assert p.check(ENVELOPES) is NOTHING  # (closed: nothing more is sent)
    p.close()  # (idempotent)


def test_a_batch_over_the_memory_bound_is_checked_in_process():
    p = SignaturePool(2, small_batch=0, max_pending=N - 1)
    try:
        assert p.check(ENVELOPES) is NOTHING and not p.running
        checking = p.check(ENVELOPES[: N - 1])
        assert checking.pooled == N - 1 and p.pending <= N - 1
        assert len(trio.run(checking.verdicts)) == N - 1
        wait_until(lambda: p.pending == 0, 10, "the pool to be empty")
    finally:
        p.close()


def test_a_worker_whose_node_is_killed_exits_by_itself(tmp_path):
    """A node killed with SIGKILL closes nothing: its workers go on their own (sigworker.py)."""
    import subprocess
    import sys

    script = tmp_path / "node.py"
    script.write_text(
        "import sys, time, trio\n"
        "from p2pnode.ledger.sigpool import SignaturePool\n"
        "async def main():\n"
        "    p = SignaturePool(2, small_batch=0)\n"
        "    await p.check([b'x'] * 10).verdicts()\n"
        "    print(' '.join(map(str, p.pids())), flush=True)\n"
        "    await trio.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    trio.run(main)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            cwd=Path(__file__).resolve().parents[2], text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    finally:
        proc.kill()
        proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in pids), 10, "the orphaned workers to exit")


# -- in a node ---------------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_node_checks_a_big_pull_in_its_workers_and_leaves_none_when_it_stops(tmp_path: Path):
    async with trio.open_nursery() as nursery:
        a = await start(nursery, make_node(tmp_path / "a", "a", pex=False, verify_workers=0))
        a.store.append(a.key, [("note", {"text": str(i)}) for i in range(1000)], now_ms=now_ms(), registry=REGISTRY)
        b = await start(nursery, make_node(tmp_path / "b", "b", pex=False, verify_workers=2))
        await b.connect(a.listen_addrs()[0])
        await sync_all([a, b])
        assert heads_of(b)[a.key.public_key][0] == 1001
        assert b.counters.get("verify.pooled", 0) >= 1000 - SMALL_BATCH
        assert a.counters.get("verify.pooled", 0) == 0 and a.sigpool.pids() == []
        pids = b.sigpool.pids()
        assert len(pids) == 2
        await stop_all([a, b])
    assert not any(alive(pid) for pid in pids)


@pytest.mark.trio
@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "workers"])
async def test_a_peer_whose_big_batch_breaks_is_penalised_alike_with_workers_or_without(tmp_path: Path, workers):
    """A hostile peer answers a pull with 150 entries, the 41st with a bad signature: the
    node keeps the 40 before it, refuses the rest and scores the peer down, the same with
    its workers' verdicts as with its own checks."""
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    from p2pnode.net.host import build_host
    from p2pnode.net.sync import recv, send
    from protocol import wire

    mallory = SigningKey.from_seed(hashlib.sha256(b"sigpool mallory").digest())
    stranger = chain(B, N)
    batch = [e.envelope for e in stranger]
    batch[40] = flip(batch[40], -1)

    async def hostile_sync(stream) -> None:
        try:
            msg = await recv(stream)
            await send(stream, wire.Heads(((B.public_key, N, stranger[-1].id),)))
            msg = await recv(stream)
            await send(stream, wire.Entries(msg.author, msg.start, tuple(batch[msg.start - 1:][:msg.limit])))
            await recv(stream)
        except Exception:
            pass  # (the node hung up: what a hostile peer expects)
        finally:
            await stream.close()

    local = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with trio.open_nursery() as nursery:
        node = await start(nursery, make_node(tmp_path / "n", "n", pex=False, sync_interval=600, verify_workers=workers))
        host = build_host(mallory, [local])
        async with host.run(listen_addrs=[local]):
            host.set_stream_handler(wire.SYNC_PROTOCOL, hostile_sync)
            with trio.fail_after(10):
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(node.listen_addrs()[0])))
            await wait_for(lambda: node.counters.get("misbehaviour.bad_entries", 0) >= 1, 20, "the peer to be penalised")
            assert node.store.head(B.public_key).seq == 40
            assert node.counters.get("verify.pooled", 0) == (N if workers else 0)
            with trio.move_on_after(3):
                await host.close()
        node.stop()
