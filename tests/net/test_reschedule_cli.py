"""A loan rescheduled over separate node processes, through the CLI (issue 11, liquidity:
an amendment as Fineract's loan reschedule): lender and borrower each run `loan
reschedule` with the same terms, and a third node that only syncs their chains shows
the same state, schedule and amounts. Every process is ended by its pid at teardown."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from framework.loans import wait_takeable
from framework.network import Network

pytestmark = pytest.mark.slow

START = (date.today() - timedelta(days=40)).isoformat()  # the first installment fell due about 10 days ago


def show(net: Network, k: int, loan: str) -> dict:
    return net.json(k, "loan", "show", loan)


def money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def amended(v: dict) -> list[dict]:
    return [a for a in v["amendments"] if a["counted"]]


def common(v: dict) -> dict:
    """A loan view without what is this node's own (its role, and proposals it keeps)."""
    return {k: x for k, x in v.items() if k not in ("role", "shown_state", "amendment_pending")}


def test_lender_and_borrower_reschedule_and_three_nodes_agree(net: Network):
    net.up(3)
    oid = net.json(1, "offer", "create", "--amount", "1200.00", "--currency", "EUR", "--rate", "12%", "--term", "3m",
                   "--grace-days", "5", "--late-fee", "15.00", "--default-days", "60")["id"]
    wait_takeable(net, 2, oid)  # (polled through the nodes' API: a wait, not a check)
    p = net.json(2, "loan", "propose", oid, "--start", START)
    assert p["state"] == "agreed", p
    loan = p["loan"]
    net.json(1, "loan", "disburse", loan, "--date", START)
    net.wait(lambda: show(net, 2, loan)["declared"], 20, "the declaration on node2")
    net.json(2, "loan", "confirm", loan)
    first = show(net, 2, loan)["rows"][0]
    net.json(2, "loan", "repay", loan, "--amount", money(first["payment"]), "--date", first["due"])
    net.json(1, "loan", "receipt", loan, "--amount", money(first["payment"]), "--date", first["due"])
    net.wait(lambda: len(show(net, 2, loan)["counted"]) == 2, 20, "node2 to count the first repayment")

    # The borrower asks first: nothing is signed by the lender's node on its own.
    asked = net.json(2, "loan", "reschedule", loan, "--rate", "6%", "--term", "6m")
    assert asked["state"] == "proposed" and asked["after"] == 2, asked
    kept = show(net, 1, loan)
    assert kept["amendment_pending"]["theirs"]["amendment"] == asked["amendment"]
    assert amended(kept) == [] and show(net, 2, loan)["amendment_pending"]["ours"]["rate_bp"] == 600
    # Other terms than those proposed are a proposal of the lender's own, not a countersignature.
    rc, out, err = net.cli(1, "loan", "reschedule", loan, "--rate", "6%", "--term", "6m", "--date", "1999-01-01",
                           "--json", ok=False)
    assert rc != 0 and json.loads(err)["error"]["code"] == "bad_date", (out, err)

    agreed = net.json(1, "loan", "reschedule", loan, "--rate", "6%", "--term", "6m")
    assert agreed["state"] == "agreed" and agreed["amendment"] == asked["amendment"], agreed
    assert len(agreed["signed_by"]) == 2

    def alike() -> bool:
        views = [show(net, k, loan) for k in (1, 2, 3)]
        return all(len(amended(v)) == 1 for v in views) and common(views[0]) == common(views[1]) == common(views[2])

    net.wait(alike, 30, "the three nodes to show the rescheduled loan alike")
    v = show(net, 3, loan)
    (a,) = amended(v)
    assert a["id"] == agreed["amendment"] and a["rate_bp"] == 600 and a["term"] == "6m"
    new = v["rows"][a["first_row"] - 1:a["first_row"] - 1 + a["rows"]]
    assert len(new) == 6 and sum(r["principal"] for r in new) == a["outstanding_principal"] == v["outstanding_principal"]
    assert v["outstanding_principal"] == 1200_00 - first["principal"]
    assert all(r["due"] > a["date"] for r in new) and v["state"] == "current"
    for k in (1, 2):  # each party's own chain records the amendment
        kinds = [e["kind"] for e in net.json(k, "ledger", "show")["entries"]]
        assert kinds.count("loan.amendment") == 1, (k, kinds)
        assert show(net, k, loan)["amendment_pending"] is None
    listed = {x["loan"]: x for x in net.json(3, "loan", "list")["loans"]}
    assert listed[loan]["state"] == "current" and listed[loan]["outstanding"] == v["outstanding_principal"]
    text = net.cli(3, "loan", "show", loan)[1]
    assert "amendments (1)" in text and "6% 6m annuity" in text
