"""Issue 9: a write error, a full disk and what `ledger.import` reads, on real node processes.

The write error is made without privilege: the node's process gets an ``RLIMIT_FSIZE``
just past the end of its LevelDB log (``prlimit``, by its pid), so the next append tears
a record and fails with EFBIG, as a full disk tears it with ENOSPC. Python ignores
SIGXFSZ, so the node lives on. Lifting the limit afterwards is "space freed". Before the
fix, the node acknowledged appends again and the store did not open at the next start
("Corruption: checksum mismatch"); now it refuses every write until it restarts, and
then opens with every acknowledged entry. (tests/node/test_store_disk.py fills a real
3 MiB tmpfs where user namespaces allow it.)
"""

from __future__ import annotations

import os
import resource
import shutil
import time
from pathlib import Path

import pytest

from cli.rpc import RpcError
from framework.process import NodeProcess
from p2pnode.testnet import free_port

FAST = 5.0  # seconds a refusal may take: the point is that it does not hang


@pytest.fixture
def proc(node):
    """The ``node`` home with `p2pnode start` running (no peers); stopped by its pid."""
    home, _ = node
    p = NodeProcess(home)
    try:
        yield p
    finally:
        p.stop()


def start(p: NodeProcess, *args: str) -> NodeProcess:
    return p.start("--listen", f"/ip4/127.0.0.1/tcp/{free_port()}", *args)


def append(p: NodeProcess, text: str) -> dict:
    return p.call("ledger.append", {"kind": "note", "body": {"text": text}})


def refused(p: NodeProcess, text: str) -> RpcError:
    with pytest.raises(RpcError) as ei:
        append(p, text)
    return ei.value


def wal_size(home: Path) -> int:
    """Bytes in the biggest LevelDB write-ahead log of the store (the one appends go to)."""
    return max(f.stat().st_size for f in (home / "store").glob("*.log"))


@pytest.mark.skipif(not hasattr(resource, "prlimit"), reason="needs prlimit(2) (Linux) to limit the node's file size")
def test_write_error_stops_writes_until_restart_and_loses_nothing(proc):
    start(proc)
    acked = [append(proc, f"before {i}")["seq"] for i in range(3)]
    hard = resource.prlimit(proc.pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (wal_size(proc.home) + 20, hard))  # tears the next record
    try:
        first = refused(proc, "x" * 300)  # (store_failed if a write of the node's own came first)
        assert first.code in ("store_error", "store_failed") and "File too large" in first.message
        assert "restart" in first.message
    finally:
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (hard, hard))  # space freed
    again = refused(proc, "after the space came back")  # before the fix: acknowledged
    assert again.code == "store_failed" and "restart" in again.message
    st = proc.status()
    assert st["store"]["state"] == "failed" and "File too large" in st["store"]["error"]
    assert proc.head(proc.peer_id) == acked[-1]  # reads go on
    rc, out, _ = proc.cli("status")
    assert "STORE FAILED" in out
    assert proc.stop() == "terminated"

    start(proc)  # before the fix: "Corruption: checksum mismatch", in 5 of 5 runs of the issue
    assert proc.head(proc.peer_id) == acked[-1]
    assert proc.call("ledger.verify", timeout=30)["ok"]
    assert proc.status()["store"]["state"] == "ok"
    assert append(proc, "after the restart")["seq"] == acked[-1] + 1


def test_below_the_reserve_nothing_is_written_and_import_reads_only_a_regular_file(proc, tmp_path):
    # (One node for both: a node start costs seconds, and neither needs a fresh one.)
    free_mib = shutil.disk_usage(proc.home).free >> 20
    start(proc, "--reserve-mib", str(free_mib + (1 << 20)), "--stranger-chains", "7")  # 1 TiB more than is free
    head = proc.head(proc.peer_id)
    e = refused(proc, "no room")
    assert e.code == "disk_full" and "below the reserve" in e.message and "nothing was written" in e.message
    st = proc.status()
    assert st["store"]["state"] == "ok" and st["store"]["reserve_own_bytes"] == (free_mib + (1 << 20)) << 20
    assert proc.head(proc.peer_id) == head
    rc, out, _ = proc.cli("status")
    assert "store       ok" in out
    assert st["strangers"] == {"held": 0, "budget": 7} and "0 of 7 chains held" in out  # the flag over the config

    # ledger.import of a device, a FIFO (no writer: a blocking open would hang) or a directory
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, what in (("/dev/zero", "a character device"), (str(fifo), "a named pipe"), (str(tmp_path), "a directory")):
        t = time.monotonic()
        with pytest.raises(RpcError) as ei:
            proc.call("ledger.import", {"path": path}, timeout=FAST)
        assert time.monotonic() - t < FAST
        assert ei.value.code == "not_a_file" and path in ei.value.message and what in ei.value.message
    rc, _, err = proc.cli("ledger", "import", str(fifo), ok=False, timeout=FAST * 2)  # the CLI reads it first
    assert rc == 1 and "named pipe" in err
    assert proc.call("ledger.verify", timeout=FAST)["ok"]  # takes the write lock: nothing holds it
    t = time.monotonic()
    proc.cli("stop", timeout=FAST * 3)
    assert time.monotonic() - t < FAST * 3
    proc.wait_exit()


def test_import_refuses_a_file_over_the_limit(node, monkeypatch, tmp_path):
    from p2pnode.ledger import ops

    home, _ = node
    big = tmp_path / "big.jsonl"
    big.write_text("x" * 101)
    monkeypatch.setattr(ops, "MAX_IMPORT_FILE", 100)
    with pytest.raises(ops.ApiError) as ei:
        ops.read_import_file(big)
    assert ei.value.code == "file_too_large" and str(big) in ei.value.message
