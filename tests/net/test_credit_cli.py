"""Credit end to end over separate node processes (`p2pnode testnet`), through the CLI:
a third node grades a borrower who repaid a loan above a fresh key, but only once its own
trust reaches the lender; a forked key is G. Every process is ended by its pid at teardown."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from framework.loans import lend
from framework.network import Network
from p2pnode.home import Home
from p2pnode.walltime import now_ms
from protocol.entry import make_entry
from protocol.fork import ForkProof
from protocol.keys import SigningKey, peer_id, public_key_from_peer_id

pytestmark = pytest.mark.slow

START = (date.today() - timedelta(days=45)).isoformat()  # a one-month loan, due and repaid in the past


def lend_and_repay(net: Network, lender: int, borrower: int) -> str:
    """A one-month loan from node ``lender`` to node ``borrower``, repaid in full; its id."""
    return lend(net, lender, borrower, start=START)


def test_a_third_node_grades_a_borrower_who_repaid_above_a_fresh_key_and_a_forked_key_g(net: Network):
    net.up(3)
    fresh = peer_id(SigningKey.generate().public_key)
    none = net.json(3, "credit", fresh)
    assert none["grade"] == "none" and none["loans"] == 0

    # node2 repays node1; node3 has no repaid loan with anyone, so no trust of its own to weigh it by
    loan = lend_and_repay(net, 1, 2)
    net.wait(lambda: net.json(3, "loan", "show", loan)["state"] == "repaid", 30, "node3 to see the loan repaid")
    before = net.json(3, "credit", net.peer_id(2))
    assert before["repaid"] == 1 and before["grade"] == "none" and before["trusted_repaid_pm"] == 0

    # node3 itself borrows from node1 and repays: now its trust reaches node1, and node1 vouches for node2
    lend_and_repay(net, 1, 3)
    graded = net.wait(lambda: (g := net.json(3, "credit", net.peer_id(2), "--explain"))["grade"] != "none" and g,
                      30, "node3 to grade node2")
    assert graded["grade"] in "ABCDEF" and graded["trusted_repaid_pm"] > 0 and graded["repaid_on_time"] == 1
    assert graded["owed"] == {} and not graded["forked"]
    assert {f["name"] for f in graded["factors"]} >= {"repaid", "verified_age_days", "trusted_lenders", "grade"}
    text = net.cli(3, "credit", net.peer_id(2), "--explain")[1]
    assert f"grade       {graded['grade']}" in text and "factors" in text

    # a fork proof of node2 reaches node3: G, whatever its history
    node2 = net.peer_id(2)
    net.cli(3, "stop")
    key2 = Home(net.home(2)).signing_key(None)
    with Home(net.home(3)).open_store() as store:
        first = store.entry(public_key_from_peer_id(node2), 1)
        other = make_entry(key2, seq=1, prev=bytes(32), ts=now_ms(), kind="note", body={"text": "a second history"})
        assert store.record_fork(ForkProof.of(first, other))
    net.up(3)
    forked = net.json(3, "credit", node2)
    assert forked["grade"] == "G" and forked["forked"] and forked["max_amount"] == {}
