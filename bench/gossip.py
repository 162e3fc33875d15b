"""Gossip delivery: an N-node network (10 by default) of separate processes on
127.0.0.1; node 1 appends entries at a steady rate (50/s by default) through its control
API; every other node records when each entry arrived and by which path.

    .venv/bin/python bench/gossip.py [--nodes 10] [--rate 50] [--seconds 20] [--json] [--find-rate]

Each node bootstraps to the one before it, so the network starts as a line and peer
exchange then adds links, as it would among real peers. Latency is an entry's arrival at
a node minus its ``ts`` (the publisher's clock at append; all nodes share this
machine's clock). delivered_ratio counts (entry, node) pairs present on every node within
``--settle`` seconds after the last append, by gossip or sync; p50/p95 are over the
arrivals at the farthest node (the one with the highest median latency). Target at
50/s on 10 nodes: delivered_ratio = 1.0 and p95 <= 500 ms. A benchmark is not a test.

CPU: each receiving node's process CPU (user + system, all of libp2p included: Noise,
Yamux, protobuf, pubsub, validators, store), read from ``/proc/PID/stat`` just before
the first append and again once delivery settled, divided by the entries delivered to
that node: ``cpu_ms_per_entry_*``, and ``cpu_verifies_per_entry_*`` = that divided by
the time of one raw Ed25519 verify measured in the same run (median and max over the
receiving nodes; the publisher's is given apart, per entry appended).
``cpu_verifies_per_entry`` is the median. The idle CPU of the same nodes is included
(heartbeats, keepalive pings, routine sync with each peer): ``idle_cpu_ms_per_s`` says
how much it is (median over the receiving nodes, measured for 5 s before the appends),
and ``cpu_*_above_idle`` is each node's CPU less its own idle rate over the same time,
per entry: what gossip itself costs.

``--find-rate``: after that measurement, rounds on the same network at rising rates
(``--rate-steps``; lower by halves if the first does not hold; then bisection between the
highest rate that held and the lowest that did not), ``--round-seconds`` of appends each;
``max_rate_p95_ok`` is the highest rate whose round delivered every entry to every node
with the farthest node's p95 <= 500 ms (0 if none), at no less than 95% of the rate
asked: node 1 appends one durable entry per control call, a few hundred a second at most,
and a round it could not keep up counts as not held (``appender_limited``;
``held_at_appender_limit_per_s``: the rate such rounds held, if any). Before each
round every node must hold every entry so far and the nodes' CPU must fall back near
idle, so that no round inherits the queues of the one before. Bounded: at most
``MAX_ROUNDS`` rounds and ``--find-budget`` seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):  # the project, and its harness (tests/framework/)
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from framework.limits import cpu_s, percentile, raw_verify_per_s  # noqa: E402
from framework.network import Network  # noqa: E402
from framework.wait import WaitTimeout, wait_until  # noqa: E402

TARGET_P95_MS = 500.0
MAX_ROUNDS = 10  # of --find-rate, the ramp and the bisection together
APPENDER_KEPT = 0.95  # a round counts only if the publisher appended at >= 95% of its rate
BISECT_RATIO = 1.15  # bisection stops once the failing rate is within 15% of the one that held
CATCH_UP_S = 30.0  # after a round, how long the next waits for every node to hold every entry
QUIET_S = 60.0  # and then how long for the nodes' CPU to fall back near idle (queued gossip drained)


def start_network(net: Network, nodes: int, progress) -> list:
    members = []
    for k in range(nodes):
        members.append(net.add(f"node{k + 1}", bootstrap=[members[-1].addr] if members else []))
    progress(f"starting {nodes} nodes")
    for m in members:
        m.start("--log-level", "warning")
    wait_until(lambda: all(len(m.status()["peers"]) >= 1 for m in members), 60, "every node to have a peer", step=0.5)
    return members


def run_round(members: list, rate: float, seconds: float, settle: float, verify_ms: float, progress,
              idle: dict[str, float] | None = None) -> dict:
    """Append ``rate * seconds`` entries on the first member at ``rate``/s and wait up to
    ``settle`` s for every other member to hold them: delivery, latency and CPU figures
    (with ``idle``, each node's idle CPU in ms/s, also the CPU above it)."""
    out: dict = {"rate_per_s": rate, "seconds": seconds}
    pub, receivers = members[0], members[1:]
    total = max(1, int(rate * seconds))
    cpu_before = {m.name: cpu_s(m.pid, tree=False) for m in members}
    t_before = time.perf_counter()
    progress(f"appending {total} entries on {pub.name} at {rate:g}/s")
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
    out["achieved_rate_per_s"] = total / (time.perf_counter() - t_start)
    last_seq = pub.head(pub.peer_id)
    first_seq = last_seq - total + 1
    progress(f"waiting up to {settle:g} s for delivery")
    try:
        wait_until(lambda: all(m.head(pub.peer_id) >= last_seq for m in receivers), settle,
                   "every node to hold every entry", step=0.25)
    except WaitTimeout:
        pass  # what did not arrive in time is counted below, not an error
    cpu_used = {m.name: cpu_s(m.pid, tree=False) - cpu_before[m.name] for m in members}
    elapsed = time.perf_counter() - t_before
    delivered_to = {m.name: max(0, min(m.head(pub.peer_id), last_seq) - first_seq + 1) for m in receivers}
    delivered = sum(delivered_to.values())
    out["delivered_ratio"] = delivered / (total * len(receivers)) if receivers else 1.0
    cpu_ms = {name: 1000 * cpu_used[name] / n for name, n in delivered_to.items() if n}
    ms = sorted(cpu_ms.values())
    out["cpu_ms_per_entry_median"] = statistics.median(ms) if ms else float("nan")
    out["cpu_ms_per_entry_max"] = ms[-1] if ms else float("nan")
    out["cpu_verifies_per_entry_median"] = out["cpu_ms_per_entry_median"] / verify_ms
    out["cpu_verifies_per_entry_max"] = out["cpu_ms_per_entry_max"] / verify_ms
    out["cpu_verifies_per_entry"] = out["cpu_verifies_per_entry_median"]
    out["publisher_cpu_ms_per_entry"] = 1000 * cpu_used[pub.name] / total
    if idle is not None:
        above = sorted((1000 * cpu_used[name] - idle[name] * elapsed) / n for name, n in delivered_to.items() if n)
        out["cpu_ms_per_entry_above_idle_median"] = statistics.median(above) if above else float("nan")
        out["cpu_verifies_per_entry_above_idle"] = out["cpu_ms_per_entry_above_idle_median"] / verify_ms
    per_node = {}
    via_gossip = 0
    arrivals_total = 0
    for m in receivers:
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
    out["per_node"] = {
        name: {"p50_ms": percentile(l, 50), "p95_ms": percentile(l, 95), "arrivals": len(l),
               "cpu_ms_per_entry": cpu_ms.get(name, float("nan"))}
        for name, l in per_node.items()
    }
    out["target_met"] = out["delivered_ratio"] == 1.0 and out["p95_ms"] <= TARGET_P95_MS
    return out


def idle_cpu(members: list, seconds: float) -> dict[str, float]:
    """CPU ms per second of each receiving node over ``seconds`` while nothing is appended."""
    before = {m.name: cpu_s(m.pid, tree=False) for m in members[1:]}
    t = time.perf_counter()
    time.sleep(seconds)
    t = time.perf_counter() - t
    return {m.name: 1000 * (cpu_s(m.pid, tree=False) - before[m.name]) / t for m in members[1:]}


def idle_cpu_ms_per_s(members: list, seconds: float) -> float:
    """Median CPU ms per second of the receiving nodes while nothing is appended."""
    return statistics.median(idle_cpu(members, seconds).values())


def wait_quiet(members: list, idle_ms_per_s: float, timeout: float) -> float:
    """Wait (at most ``timeout`` s) until the median node spends no more than about its
    idle CPU over one second: what a round before queued is processed. Seconds waited."""
    started = time.perf_counter()
    limit = 2 * idle_ms_per_s + 10
    while time.perf_counter() - started < timeout:
        if idle_cpu_ms_per_s(members, 1.0) <= limit:
            break
    return time.perf_counter() - started


def find_rate(members: list, steps: list[float], seconds: float, settle: float, budget: float, verify_ms: float,
              idle_ms_per_s: float, progress) -> dict:
    """Rounds at the rates of ``steps`` while each holds (if the first does not, at half
    of it, and half again, at most twice), then bisection: the highest rate that held
    (delivered_ratio 1.0, p95 <= 500 ms), within ``MAX_ROUNDS`` rounds and ``budget``
    seconds (a round is not started once the budget is spent)."""
    pub = members[0]
    started = time.perf_counter()
    rounds: list[dict] = []
    ok, bad = 0.0, None

    def one(rate: float) -> bool:
        # the previous round may have left work behind: wait for it, so rounds do not overlap
        target = pub.head(pub.peer_id)
        try:
            wait_until(lambda: all(m.head(pub.peer_id) >= target for m in members[1:]), CATCH_UP_S,
                       "every node to catch up", step=0.5)
        except WaitTimeout:
            rounds.append({"rate_per_s": rate, "skipped": "the nodes had not caught up with the round before"})
            return False
        quiet_s = wait_quiet(members, idle_ms_per_s, QUIET_S)
        r = run_round(members, rate, seconds, settle, verify_ms, progress)
        r["waited_quiet_s"] = quiet_s
        # the publisher appends one durable entry per control call: past a few hundred a
        # second it cannot keep the rate, and a round it did not keep shows nothing of it
        r["appender_limited"] = r["achieved_rate_per_s"] < APPENDER_KEPT * rate
        held = bool(r["target_met"]) and not r["appender_limited"]
        rounds.append({k: r[k] for k in ("rate_per_s", "achieved_rate_per_s", "append_behind_schedule",
                                          "delivered_ratio", "p50_ms", "p95_ms", "via_gossip_ratio",
                                          "cpu_ms_per_entry_median", "cpu_ms_per_entry_max",
                                          "cpu_verifies_per_entry_median", "target_met", "waited_quiet_s",
                                          "appender_limited")})
        progress(f"rate {rate:g}/s: delivered {r['delivered_ratio']:.4f}, p95 {r['p95_ms']:.0f} ms, "
                 f"{r['cpu_verifies_per_entry']:.1f} verifies/entry -> {'held' if held else 'did not hold'}")
        return held

    def time_left() -> bool:
        return len(rounds) < MAX_ROUNDS and time.perf_counter() - started < budget

    for rate in steps:
        if not time_left():
            break
        if one(rate):
            ok = rate
        else:
            bad = rate
            break
    for _ in range(2):  # not even the first held: lower
        if ok or bad is None or not time_left():
            break
        if one(bad / 2):
            ok = bad / 2
        else:
            bad = bad / 2
    while ok and bad is not None and time_left() and bad > ok * BISECT_RATIO:
        mid = round((ok + bad) / 2)
        if one(mid):
            ok = mid
        else:
            bad = mid
    limited = [x for x in rounds if x.get("appender_limited") and x.get("target_met")]
    return {"max_rate_p95_ok": ok, "lowest_rate_failed": bad, "round_seconds": seconds, "rounds": rounds,
            "find_rate_s": time.perf_counter() - started,
            # rounds that met the target at the rate the publisher managed, short of the one asked
            "held_at_appender_limit_per_s": max((x["achieved_rate_per_s"] for x in limited), default=None)}


def measure(nodes: int, rate: float, seconds: float, settle: float, progress, *, find: dict | None = None) -> dict:
    out: dict = {"nodes": nodes, "rate_per_s": rate, "seconds": seconds}
    out["raw_verify_per_s"] = raw_verify_per_s(n=5_000)
    verify_ms = 1000 / out["raw_verify_per_s"]
    with Network.scratch() as net:
        members = start_network(net, nodes, progress)
        time.sleep(3)  # let meshes form (a few heartbeats)
        idle = idle_cpu(members, 5.0)
        out["idle_cpu_ms_per_s"] = statistics.median(idle.values())
        out.update(run_round(members, rate, seconds, settle, verify_ms, progress, idle))
        out["rate_per_s"], out["seconds"] = rate, seconds
        out["peers_per_node"] = [len(m.status()["peers"]) for m in members]
        if find is not None:
            out["find_rate"] = find_rate(members, verify_ms=verify_ms, idle_ms_per_s=out["idle_cpu_ms_per_s"],
                                         progress=progress, **find)
            out["max_rate_p95_ok"] = out["find_rate"]["max_rate_p95_ok"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--rate", type=float, default=50.0, help="entries appended per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long to append")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds to wait for delivery after the last append")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--find-rate", action="store_true",
                    help="then find the highest rate with every entry delivered and p95 <= 500 ms")
    ap.add_argument("--rate-steps", default="25,50,100,200,400,800", help="rates tried in turn by --find-rate")
    ap.add_argument("--round-seconds", type=float, default=10.0, help="seconds of appends per --find-rate round")
    ap.add_argument("--round-settle", type=float, default=10.0, help="seconds to wait for delivery after a round")
    ap.add_argument("--find-budget", type=float, default=300.0, help="no --find-rate round starts after this many s")
    args = ap.parse_args(argv)
    if args.nodes < 2 or args.rate <= 0 or args.seconds <= 0:
        ap.error("--nodes >= 2, --rate and --seconds > 0")
    try:
        steps = sorted(float(s) for s in args.rate_steps.split(","))
    except ValueError:
        ap.error("--rate-steps is a comma-separated list of rates")
    if not steps or steps[0] <= 0:
        ap.error("--rate-steps are > 0")
    started = time.perf_counter()

    def progress(what: str) -> None:
        print(f"[{time.perf_counter() - started:5.1f}s] {what}...", file=sys.stderr, flush=True)

    find = None
    if args.find_rate:
        find = {"steps": steps, "seconds": args.round_seconds, "settle": args.round_settle,
                "budget": args.find_budget}
    r = measure(args.nodes, args.rate, args.seconds, args.settle, progress, find=find)
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
        print(f"CPU per entry          median {r['cpu_ms_per_entry_median']:.2f} ms "
              f"({r['cpu_verifies_per_entry_median']:.1f} raw verifies), max {r['cpu_ms_per_entry_max']:.2f} ms "
              f"({r['cpu_verifies_per_entry_max']:.1f}); publisher {r['publisher_cpu_ms_per_entry']:.2f} ms; "
              f"idle {r['idle_cpu_ms_per_s']:.1f} ms/s")
        print(f"CPU per entry above idle  median {r['cpu_ms_per_entry_above_idle_median']:.2f} ms "
              f"({r['cpu_verifies_per_entry_above_idle']:.1f} raw verifies)")
        for name, v in r["per_node"].items():
            print(f"  {name:<8} p50 {v['p50_ms']:6.0f} ms  p95 {v['p95_ms']:6.0f} ms  ({v['arrivals']} arrivals recorded)"
                  f"  cpu {v['cpu_ms_per_entry']:.2f} ms/entry")
        print(f"target                 {'met' if r['target_met'] else 'NOT met'}")
        if "find_rate" in r:
            for x in r["find_rate"]["rounds"]:
                if "skipped" in x:
                    print(f"  rate {x['rate_per_s']:6g}/s  skipped: {x['skipped']}")
                    continue
                print(f"  rate {x['rate_per_s']:6g}/s  delivered {x['delivered_ratio']:.4f}  p95 {x['p95_ms']:6.0f} ms  "
                      f"{x['cpu_verifies_per_entry_median']:5.1f} verifies/entry  {'held' if x['target_met'] else '-'}"
                      f"{'  (appender reached only %.0f/s)' % x['achieved_rate_per_s'] if x['appender_limited'] else ''}")
            print(f"max rate, p95 <= {TARGET_P95_MS:.0f} ms  {r['max_rate_p95_ok']:g}/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
