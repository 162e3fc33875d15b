"""`testnet up` returns once the network has formed (every node sees another, all joined),
with the peer counts of that moment; a network that cannot form is reported, naming what
is missing, when --timeout passes."""

from __future__ import annotations

import pytest

from p2pnode.testnet import Member, formation_gaps
from framework.network import Network

A, B, C, D = (Member(f"node{k}", f"/h{k}", f"peer{k}", f"/a{k}") for k in range(1, 5))


def st(*peers: Member) -> dict:
    return {"peers": [{"peer_id": p.peer_id} for p in peers]}


def test_formation_needs_every_node_to_see_another_and_one_connected_graph():
    assert formation_gaps([A], {"node1": st()}) is None
    assert formation_gaps([A, B], {"node1": st(B)})["why"] == "not answering: node2"
    # node2 is seen by node1 but does not see anyone itself yet: its count would be 0
    assert formation_gaps([A, B], {"node1": st(B), "node2": st()}) == {
        "why": "connected to no other node: node2", "nodes": ["node2"]}
    assert formation_gaps([A, B], {"node1": st(B), "node2": st(A)}) is None
    split = {"node1": st(B), "node2": st(A), "node3": st(D), "node4": st(C)}
    assert formation_gaps([A, B, C, D], split)["why"] == "split into node1, node2 | node3, node4"
    # a link one end reports joins both ends; strangers do not count
    chain = {"node1": st(B), "node2": st(C), "node3": st(D), "node4": st(Member("x", "", "stranger", ""))}
    assert formation_gaps([A, B, C, D], chain) == {"why": "connected to no other node: node4", "nodes": ["node4"]}
    chain["node4"] = st(C)
    assert formation_gaps([A, B, C, D], chain) is None


@pytest.mark.slow
def test_up_returns_with_every_node_connected(net: Network):
    started = net.up(4)
    assert [n["name"] for n in started["nodes"]] == ["node1", "node2", "node3", "node4"]
    assert all(n["peers"] >= 1 for n in started["nodes"]), started
    ids = {n["peer_id"] for n in started["nodes"]}
    for k in range(1, 5):
        assert {p["peer_id"] for p in net.json(k, "status")["peers"]} & ids


@pytest.mark.slow
def test_a_network_that_cannot_form_is_reported_at_the_timeout(net: Network):
    from p2pnode.extensions import load
    from p2pnode.home import Home
    from p2pnode.testnet import prepare

    prepare(net.dir, 2, load())
    home = Home(net.home(2))
    cfg = home.config()
    cfg.bootstrap = []  # node 2 no longer knows node 1, and node 1 never knew anyone
    home.config_file.write_text(cfg.to_toml())
    # (15 s: the nodes must be up and answering by then, or the report is "not answering";
    # on a loaded 2-core machine a start took over 5 s.)
    rc, out, err = net.cli(None, "testnet", "up", "--nodes", 2, "--dir", net.dir, "--timeout", 15, ok=False)
    assert rc == 1 and out == ""
    assert "the network did not form within 15 s: connected to no other node: node1, node2" in err
    assert str(net.home(1) / "node.log") in err
