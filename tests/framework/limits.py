"""This machine's own limits, measured in the benchmark's own run, so that every figure a
benchmark prints reads as a ratio to what the hardware allows (DESIGN.md, "Tests and
benchmarks"): raw Ed25519 signs and verifies with ``cryptography`` (the library the node
uses), LevelDB synced writes with plyvel (one batch of many puts; one put at a time);
and the statistics and memory readings the figures are given in.

Rates are the median of ``rounds`` timed rounds after a warm-up; every LevelDB database
made here is made under ``under`` (default: the system's temp dir) and removed.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

DEFAULT_MESSAGE = 200  # bytes: about what the node signs for a small entry
WARM_UP = 1000  # operations run untimed before a rate is measured


# -- statistics and memory ---------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``, in any order; nan if none."""
    if not values:
        return float("nan")
    s = sorted(values)
    # the rank is ceil(p% of n); rounded first so that float noise (7 * 100 / 100 may be
    # 7.000000000000001) cannot push an exact rank up by one
    rank = math.ceil(round(p * len(s) / 100, 9))
    return s[max(0, min(len(s), rank) - 1)]


def timed(fn: Callable[[], object]) -> float:
    """Seconds taken by ``fn()``, after a full garbage collection (gc stays enabled)."""
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS, Linux); nan if unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """``pid`` and every live process under it (Linux /proc), bounded by the processes running."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, ()))
    return out


def cpu_s(pid: int, *, tree: bool = True) -> float:
    """CPU seconds (user + system, all threads) used so far by process ``pid``; with
    ``tree``, also by the live processes under it (a node's signature workers) and the
    children it has reaped. nan if ``pid`` is gone."""
    total = 0
    for i, p in enumerate(_tree(pid) if tree else [pid]):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # from field 3 (state) on: comm may hold spaces
        except OSError:
            if i == 0:
                return float("nan")
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if i == 0 and tree:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime (reaped children)
    return total / CLOCK_TICKS


def steal_s() -> float:
    """CPU seconds the hypervisor has taken from this machine since boot, all cores (Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / CLOCK_TICKS if fields[0] == "cpu" and len(fields) > 8 else float("nan")
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kb / 1024 if sys.platform != "darwin" else kb / (1024 * 1024)


# -- Ed25519 -----------------------------------------------------------------------------------


def _rate(run: Callable[[int], None], n: int, rounds: int) -> float:
    run(min(n, WARM_UP))
    return statistics.median(n / timed(lambda: run(n)) for _ in range(rounds))


def raw_sign_per_s(message_size: int = DEFAULT_MESSAGE, n: int = 20_000, rounds: int = 3) -> float:
    """Ed25519 signatures per second over ``message_size``-byte messages."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sign = Ed25519PrivateKey.generate().sign
    msgs = [os.urandom(message_size) for _ in range(256)]

    def run(count: int) -> None:
        for i in range(count):
            sign(msgs[i & 255])

    return _rate(run, n, rounds)


def raw_verify_per_s(message_size: int = DEFAULT_MESSAGE, n: int = 20_000, rounds: int = 3) -> float:
    """Ed25519 verifications per second over ``message_size``-byte messages."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    verify = key.public_key().verify
    pairs = [(key.sign(m), m) for m in (os.urandom(message_size) for _ in range(256))]

    def run(count: int) -> None:
        for i in range(count):
            sig, m = pairs[i & 255]
            verify(sig, m)

    return _rate(run, n, rounds)


# -- LevelDB -----------------------------------------------------------------------------------


def _keys(n: int) -> list[bytes]:
    """Keys laid out as the store's entry keys (p2pnode/ledger/store.py): one author, seq 1..n."""
    from p2pnode.ledger.store import entry_key

    author = os.urandom(32)
    return [entry_key(author, i) for i in range(1, n + 1)]


def _fresh_db(under: str | Path | None, name: str):
    import plyvel

    path = tempfile.mkdtemp(prefix=f"p2pnode-limit-{name}-", dir=under)
    return plyvel.DB(path, create_if_missing=True), path


def leveldb_batch_puts_per_s(value_size: int, n: int, rounds: int = 3, under: str | Path | None = None) -> float:
    """Puts per second in one synced write batch of ``n`` puts of ``value_size`` bytes, each
    round into a fresh database (the first round a warm-up)."""
    value = os.urandom(value_size)
    keys = _keys(n)
    rates = []
    for r in range(rounds + 1):
        db, path = _fresh_db(under, "batch")
        try:
            def run() -> None:
                with db.write_batch(sync=True, transaction=True) as wb:
                    for k in keys:
                        wb.put(k, value)

            dt = timed(run)
        finally:
            db.close()
            shutil.rmtree(path, ignore_errors=True)
        if r:
            rates.append(n / dt)
    return statistics.median(rates)


def leveldb_synced_put_ms(value_size: int, n: int, under: str | Path | None = None) -> list[float]:
    """Milliseconds of each of ``n`` synced puts made one at a time (after 20 untimed): the
    floor of one durable write. ``1000 / mean`` is synced writes per second."""
    value = os.urandom(value_size)
    keys = _keys(n + 20)
    db, path = _fresh_db(under, "sync")
    lat = []
    perf = time.perf_counter
    try:
        for k in keys[:20]:
            db.put(k, value, sync=True)
        for k in keys[20:]:
            t = perf()
            db.put(k, value, sync=True)
            lat.append((perf() - t) * 1000)
    finally:
        db.close()
        shutil.rmtree(path, ignore_errors=True)
    return lat


def leveldb_synced_puts_per_s(value_size: int = 400, n: int = 300, under: str | Path | None = None) -> float:
    """Synced puts per second, one at a time (``leveldb_synced_put_ms``)."""
    return 1000 / statistics.fmean(leveldb_synced_put_ms(value_size, n, under))
