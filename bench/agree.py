"""Contracts countersigned between two node processes on 127.0.0.1: latency from
`loan.propose` to both `loan.agreement` entries stored (the call answers only then: the
acceptor appends before it answers, the proposer on the answer), one at a time; and
contracts per second with several proposals in flight. Next to them, this machine's own
limits measured in the same run: Ed25519 signs and verifies per second, and durable
(fsync'd) LevelDB writes per second, of which each contract needs four (a proposal
record and an entry on each side).

    .venv/bin/python bench/agree.py [--contracts 200] [--in-flight 8] [--json]

Targets: p50 <= 50 ms, p99 <= 250 ms, >= 100 contracts/s, and with several in flight at
least a quarter of the fsync limit: contracts/s >= 0.25 x (fsync'd writes/s / 4), the
figure that says whether concurrent contracts share their fsyncs (group commit,
p2pnode/ledger/writer.py); ``fsync_share_target_per_s`` is that rate. A benchmark is not
a test.

With several in flight it also reads the CPU each node's process spent (user + system,
its children included) and gives it per contract (``cpu_ms_per_contract_lender``,
``_borrower``), and the rate at which the two would keep every core of this machine busy
(``cpu_bound_per_s``: cores x 1000 / the two figures' sum): both nodes run here, so no
rate above it can be reached without less CPU per contract.

One contract is made first, untimed: until then the lender is a stranger to the
borrower, whose book admits only ``MAX_PER_STRANGER`` offers of a stranger
(protocol/lending/book.py); a counterparty gets ``MAX_PER_AUTHOR``, which ``ROUND`` is.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the project, and its harness (tests/framework/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from framework.limits import cpu_s, leveldb_synced_puts_per_s, percentile, raw_sign_per_s  # noqa: E402
from framework.network import Network  # noqa: E402
from framework.process import NodeProcess  # noqa: E402
from framework.wait import wait_until  # noqa: E402

TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
TARGET_PER_S = 100.0
TARGET_FSYNC_SHARE = 0.25  # contracts/s with several in flight over (fsync'd writes/s / 4)
ROUND = 100  # offers live at once per author (the offer book's per-author limit)


def make_offers(lender: NodeProcess, borrower: NodeProcess, n: int) -> list[str]:
    """``n`` lend offers by ``lender``, once ``borrower``'s book holds them all."""
    # (the offers taken last may still be live for a moment: their cancellation is a task
    # of its own on the lender, and the book refuses an author's offer past ROUND)
    wait_until(lambda: len(lender.call("offer.list", {"own": True})["offers"]) + n <= ROUND, 60,
               "the taken offers' cancellations")
    ids = []
    for i in range(n):
        # Two offers alike in every field and made in the same millisecond are one offer (one
        # id): the amounts differ so that each is its own.
        o = lender.call("offer.create", {"side": "lend", "amount": f"{100 + i}.00", "currency": "EUR",
                                         "rate": "9%", "term": "6m", "expires_in_s": 3600})
        ids.append(o["id"])
    want = set(ids)
    wait_until(lambda: want <= {x["id"] for x in borrower.call("offer.list", {})["offers"]}, 60,
               "the offers to reach the borrower's book")
    return ids


def propose(borrower: NodeProcess, offer_id: str) -> float:
    t = time.perf_counter()
    p = borrower.call("loan.propose", {"offer": offer_id}, timeout=60)
    ms = (time.perf_counter() - t) * 1000
    if p["state"] != "agreed":
        raise RuntimeError(f"proposal not agreed: {p}")
    return ms


def measure(contracts: int, in_flight: int, progress) -> dict:
    out: dict = {"contracts": contracts, "in_flight": in_flight}
    progress("machine limits: Ed25519 sign, fsync'd LevelDB writes")
    out["raw_sign_per_s"] = raw_sign_per_s(message_size=300)
    out["synced_writes_per_s"] = leveldb_synced_puts_per_s(value_size=400, n=300)
    with Network.scratch() as net:
        lender, borrower = net.add("lender"), net.add("borrower")
        lender.start("--log-level", "warning")
        borrower.start("--log-level", "warning")
        borrower.call("node.connect", {"addr": lender.addr})
        net.sync_all([lender, borrower])  # each holds the other's chain: the proposals can commit to it
        progress("one contract, untimed: the lender becomes the borrower's counterparty")
        for oid in make_offers(lender, borrower, 1):
            propose(borrower, oid)

        progress(f"{contracts} contracts, one at a time")
        latencies: list[float] = []
        while len(latencies) < contracts:
            for oid in make_offers(lender, borrower, min(ROUND, contracts - len(latencies))):
                latencies.append(propose(borrower, oid))
        out["p50_ms"] = percentile(latencies, 50)
        out["p99_ms"] = percentile(latencies, 99)
        out["mean_ms"] = statistics.fmean(latencies)

        progress(f"{contracts} contracts, {in_flight} in flight")
        done, elapsed = 0, 0.0
        cpu = {"lender": 0.0, "borrower": 0.0}
        errors: list[str] = []
        while done < contracts:
            ids = make_offers(lender, borrower, min(ROUND, contracts - done))
            lock = threading.Lock()
            todo = list(ids)

            def worker() -> None:
                while True:
                    with lock:
                        if not todo:
                            return
                        oid = todo.pop()
                    try:
                        propose(borrower, oid)
                    except Exception as e:  # counted, and the run goes on
                        errors.append(str(e))

            threads = [threading.Thread(target=worker) for _ in range(in_flight)]
            cpu0 = {"lender": cpu_s(lender.pid), "borrower": cpu_s(borrower.pid)}
            t = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join(timeout=300)
            elapsed += time.perf_counter() - t
            cpu["lender"] += cpu_s(lender.pid) - cpu0["lender"]
            cpu["borrower"] += cpu_s(borrower.pid) - cpu0["borrower"]
            done += len(ids)
        out["failed"] = len(errors)
        out["first_errors"] = sorted(set(errors))[:3]
        out["contracts_per_s"] = (contracts - len(errors)) / elapsed
        made = max(1, contracts - len(errors))
        out["cpu_ms_per_contract_lender"] = 1000 * cpu["lender"] / made
        out["cpu_ms_per_contract_borrower"] = 1000 * cpu["borrower"] / made
        out["cpu_count"] = os.cpu_count()
        out["cpu_bound_per_s"] = out["cpu_count"] * 1000 / (out["cpu_ms_per_contract_lender"]
                                                             + out["cpu_ms_per_contract_borrower"])
    out["per_s_vs_synced_writes"] = out["contracts_per_s"] * 4 / out["synced_writes_per_s"]
    out["fsync_share_target"] = TARGET_FSYNC_SHARE
    out["fsync_share_target_per_s"] = TARGET_FSYNC_SHARE * out["synced_writes_per_s"] / 4
    out["fsync_share_met"] = out["per_s_vs_synced_writes"] >= TARGET_FSYNC_SHARE
    out["target_met"] = (out["p50_ms"] <= TARGET_P50_MS and out["p99_ms"] <= TARGET_P99_MS
                         and out["contracts_per_s"] >= TARGET_PER_S and out["fsync_share_met"])
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
              f"(target >= {TARGET_PER_S:.0f}/s); {r['failed']} failed")
        print(f"fsync share            {r['per_s_vs_synced_writes']:.1%} of the fsync limit "
              f"({r['synced_writes_per_s'] / 4:,.0f} contracts/s at 4 fsyncs each; target >= "
              f"{TARGET_FSYNC_SHARE:.0%}: {'met' if r['fsync_share_met'] else 'NOT met'})")
        print(f"CPU per contract       lender {r['cpu_ms_per_contract_lender']:.1f} ms, borrower "
              f"{r['cpu_ms_per_contract_borrower']:.1f} ms: with both on this machine's {r['cpu_count']} cores, "
              f"at most {r['cpu_bound_per_s']:.0f} contracts/s (the fsync share needs "
              f"{r['fsync_share_target_per_s']:.0f}/s)")
        print(f"targets                {'met' if r['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
