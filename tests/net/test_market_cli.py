"""The secondary market over separate node processes, through the CLI (issue 11): a loan
listed at a price, seen with its yield on another node, bought, and its next receipt
counted for the buyer on every node. Every process is ended by its pid at teardown."""

from __future__ import annotations

import pytest

from framework.loans import days_ago, lend
from framework.network import Network

pytestmark = pytest.mark.slow


def money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def test_a_loan_sold_at_a_price_counts_its_next_receipt_for_the_buyer(net: Network):
    net.up(3)
    ids = {k: net.peer_id(k) for k in (1, 2, 3)}
    loan = lend(net, 1, 2, amount="600.00", rate="12%", term="6m", start=days_ago(35), repay=False)
    first = net.json(2, "loan", "show", loan)["rows"][0]
    net.json(2, "loan", "repay", loan, "--amount", money(first["payment"]), "--date", first["due"])
    net.json(1, "loan", "receipt", loan, "--amount", money(first["payment"]), "--date", first["due"])

    listed = net.json(1, "loan", "sell", loan, "--price", "480.00")
    net.wait(lambda: [x["id"] for x in net.json(3, "market", "list")["listings"]] == [listed["id"]], 30,
             "node3 to see the listing and price it")
    seen = net.json(3, "market", "list")["listings"][0]
    assert seen["price"] == 480_00 and seen["seller"] == ids[1] and seen["state"] == "current"
    assert seen["remaining_principal"] == net.json(3, "loan", "show", loan)["outstanding_principal"] > 480_00
    assert seen["ytm_bp"] > 1200  # below the principal left: the buyer earns more than the contract's 12 %

    bought = net.json(3, "loan", "buy", listed["id"][:12])
    assert bought["price"] == 480_00 and bought["after"] == 2
    for k in (1, 2, 3):  # the borrower's node records the new holder, the price is in the transfer
        net.wait(lambda k=k: net.json(k, "loan", "show", loan)["holder"] == ids[3], 20, f"node{k} to see the sale")
        sale = net.json(k, "loan", "show", loan)["transfer_details"]
        assert [(t["from"], t["to"], t["price"], t["counted"]) for t in sale] == [(ids[1], ids[3], 480_00, True)]
    assert net.json(3, "market", "list")["listings"] == []

    second = net.json(2, "loan", "show", loan)["rows"][1]
    net.json(2, "loan", "repay", loan, "--amount", money(second["payment"]))  # early: today
    rc, out, err = net.cli(1, "loan", "receipt", loan, "--amount", money(second["payment"]), "--json", ok=False)
    assert rc != 0 and "not_holder" in out + err
    r = net.json(3, "loan", "receipt", loan, "--amount", money(second["payment"]))
    assert r["n"] == 3
    for k in (1, 2, 3):
        net.wait(lambda k=k: len(net.json(k, "loan", "show", loan)["counted"]) == 3, 20, f"node{k} to count it")
    buyer = net.json(3, "portfolio")["lender"]["EUR"]
    assert buyer["loans"] == 1 and buyer["outstanding"] == net.json(3, "loan", "show", loan)["outstanding_principal"]
    assert net.json(1, "portfolio")["lender"] == {} or net.json(1, "portfolio")["lender"]["EUR"]["loans"] == 0
