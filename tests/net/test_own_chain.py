"""Issue 9: a node whose store is older than what its peers hold of its own chain fetches
its entries back before it signs anything new, so it never forks itself.

A's store is replaced by an older copy after B got entries of A's chain that the copy
lacks. Before the fix, A's next append signed on top of the old head: a second entry at
a seq B holds, and B recorded a fork proof of A. Now A's appends wait at start until A
has asked B for its own chain, and the append lands after B's copy.
"""

from __future__ import annotations

import shutil

from framework.wait import wait_until
from p2pnode.extensions import load
from p2pnode.home import Home
from p2pnode.walltime import now_ms

SYNC = 20.0


def test_a_restored_store_fetches_its_own_chain_back_before_signing(net, tmp_path):
    b = net.add("b")
    a = net.add("a", bootstrap=[b.addr])
    backup = tmp_path / "a-store-at-genesis"
    shutil.copytree(a.home / "store", backup)  # A's store holds its genesis entry only

    # A signs 3 more entries and B gets them (as sync would bring them; both stopped here).
    registry, home_a = load().registry, Home(a.home)
    with home_a.open_store() as store:
        for i in range(3):
            store.append_one(home_a.signing_key(None), "note", {"text": f"held by b {i}"}, now_ms=now_ms(),
                             registry=registry)
        chain = list(store.chain(home_a.public_key()))
    with Home(b.home).open_store() as store:
        assert len(store.ingest(chain, registry=registry).added) == 4
    shutil.rmtree(a.home / "store")
    shutil.copytree(backup, a.home / "store")  # a restored backup, 3 entries short of what B holds

    b.start()
    a.start("--own-chain-wait", "20")
    entry = a.call("ledger.append", {"kind": "note", "body": {"text": "after the restore"}}, timeout=30)
    assert entry["seq"] == 5  # before the fix: 4, a second entry at a seq B holds
    own = a.status()["own_chain"]
    assert own["state"] == "checked" and own["head_at_start"] == 1 and own["fetched"] == 3
    wait_until(lambda: b.head(a.peer_id) == 5, SYNC, "b to hold a's new entry")
    assert b.status()["forked"] == [] and a.status()["forked"] == []
    assert a.call("ledger.verify")["ok"]
