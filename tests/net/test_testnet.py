"""The network as users run it: node processes started by `p2pnode testnet`, driven
through the CLI, checked through the CLI. (A long chain that node 1 must hold before the
others sync it is put into its store before it starts: ``framework.chains.store_chain``.)
Every process is ended by its pid at teardown."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest

from framework.chains import signed_chain, store_chain
from framework.console import run_cli
from framework.network import Network
from framework.wait import wait_until
from p2pnode.extensions import load
from p2pnode.ledger.export import entry_json
from p2pnode.testnet import prepare
from protocol.entry import ZERO_ID, Entry, make_entry
from protocol.keys import SigningKey, peer_id
from protocol.kinds import genesis_body

pytestmark = pytest.mark.slow


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


FAR = 30_000  # entries of the far author's chain: the kill -9 test syncs them all, the late joiner 10,000


@pytest.fixture(scope="module")
def far_chain() -> list[Entry]:
    """A far-away author's chain of ``FAR`` entries, signed once for the module: tens of
    thousands of signatures are seconds of a test's time. A test puts it (or a prefix of
    it, itself a valid chain) into node 1's store before node 1 starts (``store_chain``):
    what these tests are about is the sync of the chain to other nodes, not its import."""
    return signed_chain(SigningKey.from_seed(hashlib.sha256(b"far-away-author").digest()), FAR)


def holding(net: Network, entries: list[Entry]) -> str:
    """Node 1's home, made as `testnet up` makes it, holding ``entries``; their author's peer ID."""
    prepare(net.dir, 1, load())
    assert store_chain(net.home(1), entries) == len(entries)
    return peer_id(entries[0].author)


def pinged(peers: dict | None) -> bool:
    """Whether a keepalive ping of each peer in a ``peers`` answer has come back."""
    return peers is not None and all(p["ping_ms"] is not None for p in peers["peers"])


def test_an_entry_appended_on_node_1_is_on_node_5_within_5_s(net: Network):
    started = net.up(5)
    assert [n["name"] for n in started["nodes"]] == [f"node{k}" for k in range(1, 6)]
    st1 = net.json(1, "status")
    assert all(a.endswith("/p2p/" + st1["peer_id"]) for a in st1["listen"])
    sock = net.home(1) / "control.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    view = net.json(1, "ledger", "append", "--kind", "note", "--body", '{"text": "to the far end"}')
    t0 = time.monotonic()
    net.wait(lambda: net.head(5, st1["peer_id"]) >= view["seq"], 5, "the entry on node 5")
    # node 5 was told of node 1 only; peer exchange finds it more peers
    # (each polled through node 5's API while pex and the pings take their seconds, then
    # checked through the CLI)
    net.wait(lambda: len((net.ask(5, "node.status") or {"peers": ()})["peers"]) >= 2, 15,
             "node 5 to learn of more peers")
    net.wait(lambda: len(net.json(5, "status")["peers"]) >= 2, 15, "node 5 to learn of more peers")
    net.wait(lambda: pinged(net.ask(5, "node.peers")), 15, "a keepalive ping of each of node 5's peers to come back")
    net.wait(lambda: pinged(net.json(5, "peers")), 15, "a keepalive ping of each of node 5's peers to come back")
    rc, out, _ = net.cli(5, "peers")
    assert "ping" in out and " ms" in out, out
    shown = net.json(5, "ledger", "show", "--author", st1["peer_id"], "--from", view["seq"])
    assert shown["entries"][0]["id"] == view["id"]
    print(f"arrived on node 5 after {time.monotonic() - t0:.2f} s")
    status = net.json(None, "testnet", "status", "--dir", net.dir)
    assert all(n["running"] for n in status["nodes"])
    pids = net.pids()
    net.cli(None, "testnet", "down", "--dir", net.dir)
    assert not any(alive(p) for p in pids.values())
    status = net.json(None, "testnet", "status", "--dir", net.dir)
    assert not any(n["running"] for n in status["nodes"])


def test_late_joiner_catches_up_on_10000_entries_and_a_stopped_node_rejoins(net: Network, far_chain: list[Entry]):
    author = holding(net, far_chain[:10_000])
    net.up(2)
    net.wait(lambda: net.head(2, author) == 10_000, 60, "node 2 to sync the chain")
    # node 3 starts after the 10,000 entries exist elsewhere
    net.up(3)
    net.wait(lambda: net.head(3, author) == 10_000, 60, "node 3 to catch up")
    # node 2 stops; node 1 appends; node 2 comes back and catches up
    net.cli(2, "stop")
    own1 = net.json(1, "status")["peer_id"]
    for i in range(3):
        net.cli(1, "ledger", "append", "--kind", "note", "--body", json.dumps({"text": f"while 2 was away {i}"}))
    target = net.head(1, own1)
    net.up(3)  # restarts what is not running: node 2, same identity, same address
    net.wait(lambda: net.head(2, own1) == target, 30, "node 2 to catch up after its restart")
    net.cli(None, "testnet", "down", "--dir", net.dir)
    for k in (2, 3):
        rc, out, err = net.cli(k, "ledger", "verify", "--json")
        assert json.loads(out)["ok"] is True


def test_kill_9_during_a_sync_then_restart_converges_without_damage(net: Network, far_chain: list[Entry]):
    n = len(far_chain)
    author = holding(net, far_chain)
    net.up(1)
    net.up(2)
    # Kill node 2 as soon as it holds part of the chain: in the middle of the sync.
    seen = net.wait(lambda: 0 < net.head(2, author) < n and net.head(2, author), 60, "node 2 to be mid-sync", step=0.02)
    net.node(2).kill()  # SIGKILL
    print(f"killed node 2 at {seen} of {n} entries")
    net.up(2)
    net.wait(lambda: net.head(2, author) == n, 90, "node 2 to finish after its restart")
    net.cli(None, "testnet", "down", "--dir", net.dir)
    rc, out, err = net.cli(2, "ledger", "verify", "--json")
    assert json.loads(out)["ok"] is True


def test_a_forged_entry_yields_a_fork_proof_that_reaches_every_node(net: Network, tmp_path: Path):
    net.up(3)
    victim = net.json(1, "status")["peer_id"]
    # The author's own key signs a second, different entry at seq 1: a forged history.
    key_doc = json.loads((net.home(1) / "node.key").read_text())
    key = SigningKey.from_seed(bytes.fromhex(key_doc["seed"]))
    forged = make_entry(key, seq=1, prev=ZERO_ID, ts=1, kind="genesis", body=genesis_body("an impostor"))
    (tmp_path / "forged.jsonl").write_text(json.dumps(entry_json(forged)) + "\n")
    rc, out, err = net.cli(3, "ledger", "import", tmp_path / "forged.jsonl", ok=False)
    assert rc == 1 and "fork" in err.lower()
    for k in (1, 2, 3):
        net.wait(lambda: victim in net.json(k, "status")["forked"], 15, f"node {k} to hold the fork proof")
    shown = net.json(2, "ledger", "show", "--author", victim)
    assert shown["forked"] is True


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_node_cleanly_with_exit_0(tmp_path: Path, sig):
    import subprocess

    from framework.console import COMMAND, child_env, kill_by_pid
    from p2pnode.testnet import free_port

    home, other = tmp_path / "a", tmp_path / "b"
    for h in (home, other):
        assert run_cli("init", home=h)[0] == 0
    port = free_port()
    listen = f"/ip4/127.0.0.1/tcp/{port}"
    proc = subprocess.Popen([*COMMAND, "--home", str(home), "start", "--listen", listen],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        wait_until(lambda: (home / "control.sock").exists() and run_cli("status", home=home)[0] == 0, 30, "the node")
        # a second node on the same port is refused, not silently sharing it
        rc, out, err = run_cli("start", "--listen", listen, home=other, timeout=30)
        assert rc == 1 and "in use" in err
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "stopped" in err and not (home / "control.sock").exists()
        assert run_cli("ledger", "verify", home=home)[0] == 0  # the store was closed: usable at once
    finally:
        kill_by_pid(proc)
