"""Contracts countersigned between two node processes on 127.0.0.1: latency from
`loan.propose` to both `loan.agreement` entries stored (the call answers only then: the
acceptor appends before it answers, the proposer on the answer), one at a time; and
contracts per second with several proposals in flight. Next to them, this machine's own
limits measured in the same run: Ed25519 signs and verifies per second, and durable
(fsync'd) LevelDB writes per second, of which each contract needs four (a proposal
record and an entry on each side).

    .venv/bin/python bench/agree.py [--contracts 200] [--in-flight 8] [--json]

Targets: p50 <= 50 ms, p99 <= 250 ms, >= 100 contracts/s. A benchmark is not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

from netbench import Cluster, percentile, wait_until

TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
TARGET_PER_S = 100.0
ROUND = 100  # offers live at once per author (the offer book's per-author limit)


def raw_sign_per_s(n: int = 20_000) -> float:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    msg = os.urandom(300)
    t = time.perf_counter()
    for _ in range(n):
        key.sign(msg)
    return n / (time.perf_counter() - t)


def synced_writes_per_s(n: int = 300) -> float:
    import plyvel

    d = tempfile.mkdtemp(prefix="p2pnode-bench-ldb-")
    try:
        db = plyvel.DB(d, create_if_missing=True)
        t = time.perf_counter()
        for i in range(n):
            db.put(i.to_bytes(8, "big"), os.urandom(400), sync=True)
        rate = n / (time.perf_counter() - t)
        db.close()
        return rate
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_offers(c: Cluster, lender, borrower, n: int) -> list[str]:
    """``n`` lend offers by ``lender``, once ``borrower``'s book holds them all."""
    ids = []
    for i in range(n):
        # Two offers alike in every field and made in the same millisecond are one offer (one
        # id): the amounts differ so that each is its own.
        o = c.call(lender, "offer.create", {"side": "lend", "amount": f"{100 + i}.00", "currency": "EUR",
                                            "rate": "9%", "term": "6m", "expires_in_s": 3600})
        ids.append(o["id"])
    want = set(ids)
    wait_until(lambda: want <= {x["id"] for x in c.call(borrower, "offer.list", {})["offers"]}, 60,
               "the offers to reach the borrower's book")
    return ids


def propose(c: Cluster, borrower, offer_id: str) -> float:
    t = time.perf_counter()
    p = c.call(borrower, "loan.propose", {"offer": offer_id}, timeout=60)
    ms = (time.perf_counter() - t) * 1000
    if p["state"] != "agreed":
        raise RuntimeError(f"proposal not agreed: {p}")
    return ms


def measure(contracts: int, in_flight: int, progress) -> dict:
    out: dict = {"contracts": contracts, "in_flight": in_flight}
    progress("machine limits: Ed25519 sign, fsync'd LevelDB writes")
    out["raw_sign_per_s"] = raw_sign_per_s()
    out["synced_writes_per_s"] = synced_writes_per_s()
    with Cluster() as c:
        lender, borrower = c.add("lender"), c.add("borrower")
        c.start(lender)
        c.start(borrower)
        c.call(borrower, "node.connect", {"addr": lender.addr})
        me = c.call(lender, "node.status")["peer_id"]
        wait_until(lambda: c.head_seq(borrower, me) >= 1, 30, "the borrower to sync the lender's chain")

        progress(f"{contracts} contracts, one at a time")
        latencies: list[float] = []
        while len(latencies) < contracts:
            for oid in make_offers(c, lender, borrower, min(ROUND, contracts - len(latencies))):
                latencies.append(propose(c, borrower, oid))
        out["p50_ms"] = percentile(latencies, 50)
        out["p99_ms"] = percentile(latencies, 99)
        out["mean_ms"] = statistics.fmean(latencies)

        progress(f"{contracts} contracts, {in_flight} in flight")
        done, elapsed = 0, 0.0
        errors: list[str] = []
        while done < contracts:
            ids = make_offers(c, lender, borrower, min(ROUND, contracts - done))
            lock = threading.Lock()
            todo = list(ids)

            def worker() -> None:
                while True:
                    with lock:
                        if not todo:
                            return
                        oid = todo.pop()
                    try:
                        propose(c, borrower, oid)
                    except Exception as e:  # counted, and the run goes on
                        errors.append(str(e))

            threads = [threading.Thread(target=worker) for _ in range(in_flight)]
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join(timeout=300)
            elapsed += time.perf_counter() - t
            done += len(ids)
        out["failed"] = len(errors)
        out["first_errors"] = sorted(set(errors))[:3]
        out["contracts_per_s"] = (contracts - len(errors)) / elapsed
    out["per_s_vs_synced_writes"] = out["contracts_per_s"] * 4 / out["synced_writes_per_s"]
    out["target_met"] = (out["p50_ms"] <= TARGET_P50_MS and out["p99_ms"] <= TARGET_P99_MS
                         and out["contracts_per_s"] >= TARGET_PER_S)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contracts", type=int, default=200, help="contracts in each of the two runs")
    ap.add_argument("--in-flight", type=int, default=8, help="proposals in flight in the throughput run")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.contracts < 1 or args.in_flight < 1:
        ap.error("--contracts and --in-flight must be >= 1")
    started = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {what}...", file=sys.stderr, flush=True)

    r = measure(args.contracts, args.in_flight, progress)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(f"machine                Ed25519 sign {r['raw_sign_per_s']:,.0f}/s; fsync'd LevelDB writes "
              f"{r['synced_writes_per_s']:,.0f}/s (a contract needs 4)")
        print(f"propose -> both stored p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
              f"(targets {TARGET_P50_MS:.0f} / {TARGET_P99_MS:.0f} ms)")
        print(f"throughput             {r['contracts_per_s']:.0f} contracts/s with {r['in_flight']} in flight "
              f"({r['per_s_vs_synced_writes']:.2f} of the fsync limit; target >= {TARGET_PER_S:.0f}/s); "
              f"{r['failed']} failed")
        print(f"targets                {'met' if r['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
