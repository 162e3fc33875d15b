"""A real partition of real node processes, and its heal (issue 9: "after a 60 s
partition heals, convergence takes 53-57 s; dead connections are not detected").

Each node runs in a network namespace of its own (tests/framework/netns.py); the cut
drops every packet to and from one node without a FIN or an RST, so its connections go
dead silently, as when a cable is pulled. Without keepalives a node keeps such a
connection as if it were live, and after the heal waits for TCP's retransmission timer,
which by then has backed off to tens of seconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from framework.netns import Lab, lab_or_skip
from framework.network import Network
from framework.wait import wait_until

PORT = 7420
PARTITION_S = float(os.environ.get("P2PNODE_TEST_PARTITION_S", "30"))
HEAL_BOUND_S = 10.0  # issue 9's target, from the heal to every node holding every entry
# The margin over the target: the harness polls heads every 0.1 s over the control socket
# of three nodes (a few tenths of a second on a loaded 2-core machine), and the node's
# worst case by construction (connections.py, keepalive.py) is about 7 s.
HEAL_MARGIN_S = 3.0


def lab_network(lab: Lab, net: Network, n: int) -> list:
    """``n`` node processes, each on its own lab host, node 1 every other's bootstrap peer."""
    nodes = []
    for k in range(1, n + 1):
        name = f"node{k}"
        host = lab.add_host(name)
        boot = [nodes[0].addr] if nodes else []
        nodes.append(net.add(name, boot, listen=f"/ip4/{host.ip}/tcp/{PORT}", wrap=lab.wrap(name)))
    for node in nodes:
        node.start()
    wait_until(lambda: all(len(x.status()["peers"]) == n - 1 for x in nodes), 30, "every node to reach every other")
    return nodes


def append(node, text: str) -> None:
    node.call("ledger.append", {"kind": "note", "body": {"text": text}}, timeout=30)


def test_after_a_partition_heals_every_node_holds_every_entry_within_10_s(tmp_path: Path):
    with lab_or_skip() as lab, Network(tmp_path / "tn") as net:
        one, two, far = lab_network(lab, net, 3)
        net.sync_all()
        lab.cut(far.name)
        cut_at = time.monotonic()
        i = 0
        while time.monotonic() - cut_at < PARTITION_S:  # both sides keep writing
            append(one, f"majority {i}")
            append(far, f"minority {i}")
            i += 1
            time.sleep(1.0)
        assert far.head(one.peer_id) < one.head(one.peer_id)  # the cut held: nothing crossed it
        lab.heal(far.name)
        healed = time.monotonic()
        net.sync_all(timeout=HEAL_BOUND_S + HEAL_MARGIN_S + 60)  # (so that main's figure is measured too)
        took = time.monotonic() - healed
        print(f"partition {PARTITION_S:.0f} s, {i} entries a side: every node held every entry "
              f"{took:.1f} s after the heal")
        assert took <= HEAL_BOUND_S + HEAL_MARGIN_S, f"convergence took {took:.1f} s after the heal"
