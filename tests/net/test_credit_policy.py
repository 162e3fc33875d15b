"""Credit and policy together over separate node processes (issue 10): what a node's
policy refuses about a borrower, from the borrower's history as the node's own chains
show it. Every process is ended by its pid at teardown."""

from __future__ import annotations

import pytest

from framework.loans import days_ago, lend, offer
from framework.network import Network

pytestmark = pytest.mark.slow

HUGE = ["--amount", "9999999999", "--currency", "CNY", "--rate", "1000%", "--term", "12m"]


def test_the_issue_loan_to_a_borrower_91_days_past_due_is_refused_by_every_rule_it_breaks(net: Network):
    """The issue's case: node 1 countersigned, on its own, 9,999,999,999 CNY at 1000% to
    node 2, then 91+ days past due on an earlier loan from node 1. The default policy
    refuses it naming the rate, the amount and the delinquency; a loan of ordinary terms
    to the same borrower is refused for the delinquency alone."""
    net.up(2)
    late = lend(net, 1, 2, start=days_ago(130), repay=False)  # due about 100 days ago, never repaid
    assert net.json(1, "loan", "show", late)["days_past_due"] >= 91
    borrower = net.peer_id(2)
    net.wait(lambda: net.json(1, "credit", borrower)["days_past_due"] >= 91, 20, "node 1 to see node 2 late")

    net.cli(1, "policy", "set", "permissive")  # (so that node 1 can offer it at all)
    huge = offer(net, 1, *HUGE)
    net.cli(1, "policy", "set", "default")
    net.cli(2, "policy", "set", "permissive")  # node 2 proposes anything
    rc, out, err = net.cli(2, "loan", "propose", huge, ok=False)
    assert rc == 1, (out, err)
    assert "refused the proposal (policy): " in err
    for rule in ("rate_cap: ", "max_principal: ", "past_due: the borrower is "):
        assert rule in err, err

    ordinary = offer(net, 1, "--amount", "300.00", "--currency", "EUR", "--rate", "10%", "--term", "1m")
    rc, out, err = net.cli(2, "loan", "propose", ordinary, ok=False)
    assert rc == 1 and "past_due: the borrower is " in err and "rate_cap" not in err, err


def test_a_borrower_at_the_cross_lender_cap_is_refused_by_a_second_lender(net: Network):
    """Node 1 (permissive) lends node 2 1,000,000 CNY; node 3 runs cn-2016, whose cap is
    1,000,000 CNY owed across the network: it refuses node 2 even 10,000 more, naming the
    rule and the numbers. Node 3 knows the debt only from node 1's and node 2's chains."""
    net.up(3)
    net.cli(1, "policy", "set", "permissive")
    lend(net, 1, 2, amount="1000000.00", currency="CNY", rate="5%", term="12m", repay=False)
    borrower = net.peer_id(2)
    net.wait(lambda: net.json(3, "credit", borrower)["owed"].get("CNY", 0) >= 100_000_000, 30,
             "node 3 to see node 2's debt to node 1")
    net.cli(3, "policy", "set", "cn-2016")
    small = offer(net, 3, "--amount", "10000.00", "--currency", "CNY", "--rate", "5%", "--term", "12m")
    rc, out, err = net.cli(2, "loan", "propose", small, ok=False)
    assert rc == 1, (out, err)
    assert "borrow_cap: " in err and "1000000.00 CNY" in err and "[policy cn-2016]" in err, err


def test_an_offer_asking_grade_b_refuses_a_grade_e_taker_and_one_asking_e_takes_it(net: Network):
    net.up(2)
    lend(net, 1, 2, start=days_ago(45))  # one loan repaid on time: a low grade in node 1's eyes
    borrower = net.peer_id(2)
    grade = net.wait(lambda: (g := net.json(1, "credit", borrower)["grade"]) != "none" and g, 20, "a grade")
    assert grade in "EFG", grade  # one small repaid loan earns no better
    asks_b = offer(net, 1, "--amount", "300.00", "--currency", "EUR", "--rate", "10%", "--term", "1m",
                   "--min-grade", "B")
    rc, out, err = net.cli(2, "loan", "propose", asks_b, ok=False)
    assert rc == 1 and f"min_grade: the taker's grade is {grade}; the offer asks B or better" in err, err
    asks_g = offer(net, 1, "--amount", "300.00", "--currency", "EUR", "--rate", "10%", "--term", "1m",
                   "--min-grade", "G")
    assert net.json(2, "loan", "propose", asks_g)["state"] == "agreed"
