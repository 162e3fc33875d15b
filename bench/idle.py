"""The cost of an idle sync round: CPU per round per peer when nothing has changed, with
1,000 and 10,000 chains held by both sides, before cursors (every round lists every
head) and after (a round asks what changed since the last one), next to this machine's
raw Ed25519 verify rate measured in the same run.

    .venv/bin/python bench/idle.py [--chains 1000,10000] [--rounds 20] [--json]

Both sides run the node's own sync code (``p2pnode.net.sync.pull`` and ``serve_sync``,
the wire framing and codec, the Puller and Server machines) over real LevelDB stores
(``Store``) holding the same chains, joined by an in-memory stream in one process, so
that the CPU time of a round (``time.process_time``) is both sides' work: the dialer's
and the listener's. libp2p's own cost per round (a stream opened over Noise and Yamux) is
left out: it does not depend on the chains held. ``cpu_pct_at_5s`` is that work as a
share of one core at the node's routine interval (5 s), per peer. Target (issue 9, "idle
cost independent of how many chains are held"): the cost of a round with a cursor at
10,000 chains within 2 x its cost at 1,000. A benchmark is not a test: it reports whether
the target is met and exits 0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the project, and its harness (tests/framework/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import trio  # noqa: E402
import trio.testing  # noqa: E402

from framework.limits import raw_verify_per_s  # noqa: E402
from p2pnode.ledger.store import Store  # noqa: E402
from p2pnode.net.sync import pull, serve_sync  # noqa: E402
from protocol import wire  # noqa: E402
from protocol.entry import ZERO_ID, make_entry  # noqa: E402
from protocol.keys import SigningKey  # noqa: E402
from protocol.kinds import core_registry, genesis_body  # noqa: E402
from protocol.sync import PullResult  # noqa: E402

INTERVAL = 5.0  # seconds between routine rounds (p2pnode/net/syncer.py, SYNC_INTERVAL)
TARGET = 2.0


class _Stream:
    """A trio in-memory stream as the ``read``/``write``/``close`` stream sync.py reads."""

    def __init__(self, s) -> None:
        self.s = s

    async def read(self, n: int | None = None) -> bytes:
        return await self.s.receive_some(n)

    async def write(self, data: bytes) -> None:
        await self.s.send_all(data)

    async def close(self) -> None:
        await self.s.aclose()


def chains(n: int) -> list[bytes]:
    """The genesis envelopes of ``n`` one-entry chains (as a flood of free identities makes)."""
    out = []
    for i in range(n):
        key = SigningKey.from_seed(hashlib.sha256(b"bench-idle-%d" % i).digest())
        out.append(make_entry(key, seq=1, prev=ZERO_ID, ts=1_700_000_000_000 + i, kind="genesis",
                              body=genesis_body(f"s{i}")).envelope)
    return out


async def one_round(dialer: Store, listener: Store, since: wire.Cursor | None) -> PullResult:
    """One pull from ``listener`` into ``dialer``, both sides' code in this thread."""
    a, b = trio.testing.memory_stream_pair()
    result: list[PullResult] = []

    async def ingest(envelopes: list[bytes], author: bytes):
        return dialer.ingest(envelopes, registry=core_registry(), author=author)

    async def dial() -> None:
        result.append(await pull(_Stream(a), dialer.heads, ingest, since=since, our_head=dialer.head))
        await a.aclose()

    def chain(author: bytes, start: int, limit: int) -> list[bytes]:
        return list(listener.chain(author, start=start, limit=limit))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_sync, _Stream(b), listener.heads_page, chain, listener)
        nursery.start_soon(dial)
    return result[0]


def measure_one(k: int, rounds: int, tmp: Path) -> dict:
    envs = chains(k)
    with Store(tmp / f"a{k}", create=True) as a, Store(tmp / f"b{k}", create=True) as b:
        for store in (a, b):
            for i in range(0, k, 5_000):
                store.ingest(envs[i:i + 5_000], registry=core_registry())
        out: dict = {"chains": k}
        first = trio.run(one_round, a, b, wire.NO_CURSOR)  # the first pull of a connection
        assert first.complete and first.cursor is not None and first.received == 0
        for name, since in (("before", None), ("after", first.cursor)):
            cpu, heads = [], 0
            for _ in range(rounds):
                t0 = time.process_time()
                r = trio.run(one_round, a, b, since)
                cpu.append(time.process_time() - t0)
                heads = r.heads_received
                assert r.complete and r.received == 0
            ms = statistics.median(cpu) * 1000
            out[name] = {"cpu_ms_per_round": round(ms, 3), "cpu_pct_at_5s": round(ms / (INTERVAL * 1000) * 100, 4),
                         "heads_listed": heads}
    return out


def measure(sizes: list[int], rounds: int, progress) -> dict:
    out: dict = {"interval_s": INTERVAL, "rounds": rounds}
    progress("raw Ed25519 verify")
    out["raw_verify_per_s"] = raw_verify_per_s()
    out["by_chains"] = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp:
        for k in sizes:
            progress(f"{k} chains on both sides, {rounds} idle rounds before and after")
            out["by_chains"].append(measure_one(k, rounds, Path(tmp)))
    lo, hi = out["by_chains"][0], out["by_chains"][-1]
    out["after_growth"] = hi["after"]["cpu_ms_per_round"] / max(lo["after"]["cpu_ms_per_round"], 1e-9)
    out["before_growth"] = hi["before"]["cpu_ms_per_round"] / max(lo["before"]["cpu_ms_per_round"], 1e-9)
    # A round's CPU as entries verifiable in the same time: a cost in this machine's own unit.
    for row in out["by_chains"]:
        for name in ("before", "after"):
            row[name]["verifies_worth"] = round(row[name]["cpu_ms_per_round"] / 1000 * out["raw_verify_per_s"], 1)
    out["target_growth"] = TARGET
    out["target_met"] = out["after_growth"] <= TARGET
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", default="1000,10000", help="comma-separated chain counts (ascending)")
    ap.add_argument("--rounds", type=int, default=20, help="idle rounds measured per mode (the median is shown)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.chains.split(",")]
    if not sizes or any(k < 1 for k in sizes) or sizes != sorted(sizes) or args.rounds < 1:
        ap.error("--chains: ascending counts >= 1; --rounds >= 1")
    started = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {what}...", file=sys.stderr, flush=True)

    r = measure(sizes, args.rounds, progress)
    if args.json:
        print(json.dumps(r, sort_keys=True))
        return 0
    print(f"raw Ed25519 verify       {r['raw_verify_per_s']:>10,.0f} /s   (the machine's unit)")
    print(f"{'chains':>8}  {'mode':<7} {'heads listed':>12} {'CPU ms/round':>13} {'% core @5s':>11} {'= verifies':>11}")
    for row in r["by_chains"]:
        for name in ("before", "after"):
            x = row[name]
            print(f"{row['chains']:>8,}  {name:<7} {x['heads_listed']:>12,} {x['cpu_ms_per_round']:>13.2f} "
                  f"{x['cpu_pct_at_5s']:>11.3f} {x['verifies_worth']:>11,.0f}")
    print(f"growth {sizes[0]:,} -> {sizes[-1]:,} chains: before x{r['before_growth']:.1f}, after x{r['after_growth']:.2f} "
          f"(target <= {TARGET}: {'met' if r['target_met'] else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
