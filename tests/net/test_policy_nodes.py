"""Lending policy over node processes and the CLI (issue 10): the default policy refuses
the issue's loan, two nodes with different policies each refuse what their own forbids,
and ``policy list|show|set`` round-trips through config.toml."""

from __future__ import annotations

import json

import pytest

from framework.loans import wait_takeable
from framework.network import Network
from p2pnode.home import Home

pytestmark = pytest.mark.slow

HUGE = ["--amount", "9999999999", "--currency", "CNY", "--rate", "1000%", "--term", "12m"]
RATE = "rate_cap: APR 144077.41% is above the cap of 36.00%"
AMOUNT = "max_principal: principal 9999999999.00 CNY is above the limit of 1000000.00 CNY per loan"


def seen(net: Network, k: int, oid: str) -> None:
    wait_takeable(net, k, oid)  # (polled through the nodes' API: a wait, not a check)


def test_default_policy_refuses_the_issue_loan(net: Network):
    """9,999,999,999 CNY at 1000 %: refused by the rate cap and the amount limit, at offer
    create, at loan propose (the proposer's own policy) and at countersigning (the
    acceptor's), the rules in the error and exit 1. (The borrower 91 days past due is
    refused by the borrower rules once credit gives the facts.)"""
    net.up(2)
    rc, out, err = net.cli(1, "offer", "create", *HUGE, ok=False)
    assert rc == 1, (out, err)
    assert err.startswith("p2pnode: error: this node's policy refuses this offer: ") and RATE in err and AMOUNT in err
    rc, out, err = net.cli(1, "offer", "create", *HUGE, "--json", ok=False)
    error = json.loads(err)["error"]
    assert rc == 1 and error["code"] == "rate_cap"
    assert [r["rule"] for r in error["details"]["rules"]] == ["rate_cap", "max_principal"]

    net.cli(1, "policy", "set", "permissive")  # node 1 offers it after all, then goes back to the default
    oid = net.json(1, "offer", "create", *HUGE)["id"]
    net.cli(1, "policy", "set", "default")
    seen(net, 2, oid)

    rc, out, err = net.cli(2, "loan", "propose", oid, ok=False)  # node 2's own policy: nothing is sent
    assert rc == 1 and "this node's policy refuses this loan: " in err and RATE in err and AMOUNT in err
    assert net.json(2, "loan", "list")["loans"] == []

    net.cli(2, "policy", "set", "permissive")  # node 2 proposes; node 1's policy refuses to countersign
    rc, out, err = net.cli(2, "loan", "propose", oid, ok=False)
    assert rc == 1, (out, err)
    assert "refused the proposal (policy): " in err and RATE in err and AMOUNT in err and "[policy default]" in err


def test_two_nodes_each_refuse_what_their_own_policy_forbids(net: Network):
    """Node 1 runs cn-2016, node 2 permissive: node 1 cannot offer 300,000 CNY (above its
    200,000 per loan) and refuses to countersign node 2's proposal of 300,000 on an offer
    it made before; node 2 takes 50,000 of it, which both allow (node 2 is a new identity
    to node 1: 25% of cn-2016's 200,000 per loan until its history is 30 days old), and
    the contract names node 2's policy."""
    net.up(2)
    net.cli(2, "policy", "set", "permissive")
    args = ["--currency", "CNY", "--rate", "5%", "--term", "12m"]
    net.cli(1, "policy", "set", "permissive")
    oid = net.json(1, "offer", "create", "--min-amount", "1000", "--max-amount", "300000", *args)["id"]
    net.cli(1, "policy", "set", "cn-2016")
    seen(net, 2, oid)

    rc, out, err = net.cli(1, "offer", "create", "--amount", "300000", *args, ok=False)
    assert rc == 1 and ("max_principal: principal 300000.00 CNY is above the limit of 200000.00 CNY per loan "
                        "[policy cn-2016]") in err
    rc, out, err = net.cli(1, "request", "create", "--amount", "300000", *args, ok=False)
    assert rc == 1 and "this node's policy refuses this request: max_principal" in err
    rc, out, err = net.cli(1, "offer", "create", "--amount", "1000", *args[:3], "20%", "--term", "12m", ok=False)
    assert rc == 1 and "rate_cap: APR 21.94% is above the cap of 12.40% (4 x LPR 3.10%)" in err

    rc, out, err = net.cli(2, "loan", "propose", oid, "--amount", "300000", ok=False)
    assert rc == 1, (out, err)
    assert "refused the proposal (policy): max_principal: principal 300000.00 CNY" in err
    rc, out, err = net.cli(2, "loan", "propose", oid, "--amount", "200000", ok=False)
    assert rc == 1 and "new_identity: 200000.00 CNY is above 25% of the per loan limit" in err, err
    p = net.json(2, "loan", "propose", oid, "--amount", "50000")
    assert p["state"] == "agreed" and p["policy"] == "permissive"


def test_policy_list_show_set_round_trip(net: Network):
    net.up(1)
    listed = net.json(1, "policy", "list")
    assert listed["in_force"] == "default"
    assert [p["name"] for p in listed["policies"]] == ["default", "permissive", "cn-2016"]
    shown = net.json(1, "policy", "show", "cn-2016")
    assert (shown["lpr_bp"], shown["rate_cap_text"], shown["in_force"]) == (310, "12.40%", False)
    assert shown["lender_cap"] == {"CNY": 200000} and shown["borrow_cap"] == {"CNY": 1000000}

    after = net.json(1, "policy", "set", "cn-2016", "--lpr", "3.5%")
    assert (after["name"], after["in_force"], after["rate_cap_text"]) == ("cn-2016", True, "14.00%")
    assert after["overrides"] == {"lpr": "3.5%"}
    assert net.json(1, "policy", "show")["rate_cap_text"] == "14.00%"
    section = Home(net.home(1)).config().sections["policy"]
    assert (section["preset"], section["lpr"], section["apr_cap"]) == ("cn-2016", "3.5%", "")
    assert "[loans]" in Home(net.home(1)).config_file.read_text()  # the rest of the file is kept

    text = net.cli(1, "policy", "show")[1]
    assert "cn-2016  (in force)" in text and "4 x LPR 3.50%" in text and "200,000 CNY" in text
    rc, out, err = net.cli(1, "policy", "set", "lax", ok=False)
    assert rc == 1 and "no policy 'lax'" in err
    rc, out, err = net.cli(1, "policy", "set", "default", "--lpr", "abc", ok=False)
    assert rc == 1 and "abc" in err
    assert net.json(1, "policy", "show")["name"] == "cn-2016"  # a refused set changes nothing
