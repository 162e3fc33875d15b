"""A forker's second copy, started late (issue 9: "honest nodes talk to one copy of a
peer ID, so the proof reached 0 of 4 nodes").

The forker runs node F; honest nodes are connected to it and hold its chain. Later a
second process F' with the same key (a copy of F's home from earlier) starts with no
peers and no wait for its own chain, signs a different entry at the seq F has just
used, and then dials an honest node. Every honest node must hold the fork proof within
``PROOF_BOUND_S``, and show the forker's offer and loan as forked.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from framework.loans import takeable
from framework.network import Network
from framework.process import NodeProcess
from framework.wait import wait_until
from p2pnode import testnet as tn
from p2pnode.home import Config, Home

PROOF_BOUND_S = 15.0  # a connection, a head exchange and a gossip hop; the routine pull runs every 5 s

FORKER = r"""
# The forker's second copy: the node's code, except that it never pulls from anyone (so
# it never learns of the first history itself) and never publishes a fork proof. It
# serves its chain to whoever asks, as it must to deceive anyone.
import sys
from p2pnode.net.syncer import Syncer
from p2pnode.node import Node

async def nothing(*args, **kwargs):
    return None

Syncer._sync_with = nothing
Node._fork_found = nothing
argv = sys.argv[sys.argv.index("--home"):]
argv.remove("start")
from p2pnode.daemon import main
main(argv)
"""


def note(node: NodeProcess, text: str) -> dict:
    return node.call("ledger.append", {"kind": "note", "body": {"text": text}}, timeout=30)


def test_a_forkers_late_copy_is_proven_to_every_honest_node(net: Network, tmp_path: Path):
    net.up(4)
    honest, forker = [net.node(k) for k in (1, 2, 3)], net.node(4)
    oid = net.json(4, "offer", "create", "--amount", "1200.00", "--currency", "EUR", "--rate", "12%",
                   "--term", "3m")["id"]
    wait_until(lambda: all(takeable(net, k, oid) for k in (1, 2, 3)), 20,
               "the forker's offer on every honest node")  # (polled through the nodes' API: a wait, not a check)
    loan = net.json(2, "loan", "propose", oid)  # takes the offer: a loan with the forker
    assert loan["state"] == "agreed", loan
    oid = net.json(4, "offer", "create", "--amount", "900.00", "--currency", "EUR", "--rate", "12%",
                   "--term", "3m")["id"]  # an offer still open
    wait_until(lambda: all(takeable(net, k, oid) for k in (1, 2, 3)), 20,
               "the forker's second offer on every honest node")
    # An earlier copy of the forker's home: taken while its node is stopped.
    forker.stop()
    copy = tmp_path / "copy"
    shutil.copytree(forker.home, copy)
    forker.start()
    first = note(forker, "the first history")
    seq = first["seq"]
    wait_until(lambda: all(h.head(forker.peer_id) == seq for h in honest), 20, "the honest nodes to hold it")
    # The copy: its own address, no peers, no wait for its own chain.
    home = Home(copy)
    cfg = home.config()
    home.config_file.write_text(Config(name=cfg.name, listen=[f"/ip4/127.0.0.1/tcp/{tn.free_port()}"],
                                       sections=cfg.sections).to_toml(_extensions()))
    script = tmp_path / "forker.py"
    script.write_text(FORKER)
    second = net.nodes["copy"] = NodeProcess(copy, "copy", wrap=[sys.executable, str(script)])
    second.start("--own-chain-wait", "0")
    other = note(second, "the second history")
    assert other["seq"] == seq and other["id"] != first["id"]  # a fork
    began = time.monotonic()
    second.cli("connect", honest[0].addr)
    wait_until(lambda: all(forker.peer_id in h.status()["forked"] for h in honest), PROOF_BOUND_S,
               "the fork proof on every honest node")
    print(f"the proof reached every honest node {time.monotonic() - began:.1f} s after the copy connected")
    for k in (1, 2, 3):
        assert net.json(k, "offer", "show", oid)["author_forked"] is True
    assert net.json(2, "loan", "show", loan["loan"])["forked"] == [forker.peer_id]


def _extensions():
    from p2pnode.extensions import load

    return load().extensions
