"""`testnet up` returns once the network has formed (every node sees another, all joined),
with the peer counts of that moment; a network that cannot form is reported, naming what
is missing, when --timeout passes; a node whose port another process took moves to a new one."""

from __future__ import annotations

import socket

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


def _port(addr: str) -> int:
    return int(addr.split("/tcp/")[1].split("/")[0])


@pytest.mark.slow
def test_nodes_whose_ports_were_taken_move_to_new_ones_and_the_network_forms(net: Network):
    """The ports of a testnet's homes are chosen free when the homes are made and bound
    only when the nodes start; another process (a second test network) can take one in
    between. Here another socket holds the ports of node 1, the bootstrap peer, and of
    node 2: `up` moves both, points node 2 and 3 at node 1's new address, and forms."""
    from p2pnode.extensions import load
    from p2pnode.home import Home
    from p2pnode.testnet import prepare

    before = prepare(net.dir, 3, load())
    held = []
    try:
        for m in before[:2]:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.bind(("127.0.0.1", _port(m.addr)))
            s.listen()
        started = net.up(3)
    finally:
        for s in held:
            s.close()
    after = {n["name"]: n for n in started["nodes"]}
    assert _port(after["node1"]["addr"]) != _port(before[0].addr)
    assert _port(after["node2"]["addr"]) != _port(before[1].addr)
    assert after["node3"]["addr"] == before[2].addr  # nobody took node 3's port
    for k in (2, 3):
        assert Home(net.home(k)).config().bootstrap == [after["node1"]["addr"]]
    assert Home(net.home(1)).config().listen == [after["node1"]["addr"].split("/p2p/")[0]]
    assert all(n["peers"] >= 1 for n in started["nodes"]), started
    assert "cannot listen on" in (net.home(1) / "node.log").read_text()
