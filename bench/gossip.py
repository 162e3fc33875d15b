"""Gossip delivery: an N-node network (10 by default) of separate processes on
127.0.0.1; node 1 appends entries at a steady rate (50/s by default) through its control
API; every other node records when each entry arrived and by which path.

    .venv/bin/python bench/gossip.py [--nodes 10] [--rate 50] [--seconds 20] [--json]

Each node bootstraps to the one before it, so the network starts as a line and peer
exchange then adds links, as it would among real peers. Latency is an entry's arrival at
a node minus its ``ts`` (the publisher's clock at append; all nodes share this
machine's clock). delivered_ratio counts (entry, node) pairs present on every node within
``--settle`` seconds after the last append, by gossip or sync; p50/p95 are over the
arrivals at the farthest node (the one with the highest median latency). Target at
50/s on 10 nodes: delivered_ratio = 1.0 and p95 <= 500 ms. A benchmark is not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the project, and its harness (tests/framework/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from framework.limits import percentile, raw_verify_per_s  # noqa: E402
from framework.network import Network  # noqa: E402
from framework.wait import WaitTimeout, wait_until  # noqa: E402

TARGET_P95_MS = 500.0


def measure(nodes: int, rate: float, seconds: float, settle: float, progress) -> dict:
    out: dict = {"nodes": nodes, "rate_per_s": rate, "seconds": seconds}
    out["raw_verify_per_s"] = raw_verify_per_s(n=5_000)
    with Network.scratch() as net:
        members = []
        for k in range(nodes):
            members.append(net.add(f"node{k + 1}", bootstrap=[members[-1].addr] if members else []))
        progress(f"starting {nodes} nodes")
        for m in members:
            m.start("--log-level", "warning")
        wait_until(lambda: all(len(m.status()["peers"]) >= 1 for m in members), 60, "every node to have a peer", step=0.5)
        time.sleep(3)  # let meshes form (a few heartbeats)
        pub = members[0]
        total = int(rate * seconds)
        progress(f"appending {total} entries on node1 at {rate:g}/s")
        interval = 1.0 / rate
        t_start = time.perf_counter()
        late = 0
        for i in range(total):
            due = t_start + i * interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            elif now - due > interval:
                late += 1
            pub.call("ledger.append", {"kind": "note", "body": {"text": f"gossip {i}"}})
        out["append_behind_schedule"] = late
        last_seq = pub.head(pub.peer_id)
        first_seq = last_seq - total + 1
        progress(f"waiting up to {settle:g} s for delivery")
        try:
            wait_until(lambda: all(m.head(pub.peer_id) >= last_seq for m in members[1:]), settle,
                       "every node to hold every entry", step=0.25)
        except WaitTimeout:
            pass  # what did not arrive in time is counted below, not an error
        delivered = sum(max(0, min(m.head(pub.peer_id), last_seq) - first_seq + 1) for m in members[1:])
        out["delivered_ratio"] = delivered / (total * (nodes - 1)) if nodes > 1 else 1.0
        per_node = {}
        via_gossip = 0
        arrivals_total = 0
        for m in members[1:]:
            lat = []
            for a in m.call("node.arrivals")["arrivals"]:
                if a["author"] == pub.peer_id and first_seq <= a["seq"] <= last_seq:
                    lat.append(a["received_ms"] - a["ts"])
                    via_gossip += a["via"] == "gossip"
                    arrivals_total += 1
            per_node[m.name] = lat
        out["via_gossip_ratio"] = via_gossip / arrivals_total if arrivals_total else 0.0
        medians = {name: percentile(l, 50) for name, l in per_node.items() if l}
        farthest = max(medians, key=medians.get) if medians else None
        lat = per_node.get(farthest, [])
        out["farthest_node"] = farthest
        out["p50_ms"] = percentile(lat, 50)
        out["p95_ms"] = percentile(lat, 95)
        out["p99_ms"] = percentile(lat, 99)
        everyone = [x for l in per_node.values() for x in l]
        out["all_nodes_p50_ms"] = percentile(everyone, 50)
        out["all_nodes_p95_ms"] = percentile(everyone, 95)
        out["peers_per_node"] = [len(m.status()["peers"]) for m in members]
        out["per_node"] = {
            name: {"p50_ms": percentile(l, 50), "p95_ms": percentile(l, 95), "arrivals": len(l)}
            for name, l in per_node.items()
        }
    out["target_met"] = out["delivered_ratio"] == 1.0 and out["p95_ms"] <= TARGET_P95_MS
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0, help="entries appended per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to append")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds to wait for delivery after the last append")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.nodes < 2 or args.rate <= 0 or args.seconds <= 0:
        ap.error("--nodes >= 2, --rate and --seconds > 0")
    started = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {what}...", file=sys.stderr, flush=True)

    r = measure(args.nodes, args.rate, args.seconds, args.settle, progress)
    if args.json:
        print(json.dumps(r, sort_keys=True))
    else:
        print(f"{r['nodes']} nodes, {r['rate_per_s']:g} entries/s for {r['seconds']:g} s "
              f"(raw Ed25519 verify here: {r['raw_verify_per_s']:,.0f}/s)")
        print(f"delivered              {r['delivered_ratio']:.4f}  ({r['via_gossip_ratio']:.1%} of arrivals by gossip)")
        print(f"farthest node          {r['farthest_node']}: p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
              f"p99 {r['p99_ms']:.0f} ms (target p95 <= {TARGET_P95_MS:.0f} ms)")
        print(f"all nodes              p50 {r['all_nodes_p50_ms']:.0f} ms, p95 {r['all_nodes_p95_ms']:.0f} ms")
        print(f"peers per node         {r['peers_per_node']}")
        for name, v in r["per_node"].items():
            print(f"  {name:<8} p50 {v['p50_ms']:6.0f} ms  p95 {v['p95_ms']:6.0f} ms  ({v['arrivals']} arrivals recorded)")
        print(f"target                 {'met' if r['target_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
