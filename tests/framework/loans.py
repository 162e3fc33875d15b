"""Loans between the nodes of a ``framework.network.Network``, made through the CLI as a
user would: an offer, a proposal dated in the past if the test needs a history, the
disbursement declared and confirmed, and (if asked) every installment repaid and
receipted on its due date."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any


def days_ago(n: int) -> str:
    return (date.today() - timedelta(days=n)).isoformat()


def offer(net: Any, lender: int, *args: str) -> str:
    """An offer of node ``lender`` (``offer create`` with ``args``), seen by every node; its id."""
    oid = net.json(lender, "offer", "create", *args)["id"]
    for k in range(1, len(net.pids()) + 1):
        net.wait(lambda k=k: net.cli(k, "offer", "show", oid, ok=False)[0] == 0, 20, f"the offer on node{k}")
    return oid


def lend(net: Any, lender: int, borrower: int, *, amount: str = "300.00", currency: str = "EUR",
         rate: str = "10%", term: str = "1m", start: str | None = None, repay: bool = True) -> str:
    """A loan from node ``lender`` to node ``borrower`` starting ``start`` (default today),
    disbursed and confirmed, and repaid in full if ``repay``; its id."""
    oid = offer(net, lender, "--amount", amount, "--currency", currency, "--rate", rate, "--term", term)
    start = start or date.today().isoformat()
    p = net.json(borrower, "loan", "propose", oid, "--start", start)
    assert p["state"] == "agreed", p
    loan = p["loan"]
    net.json(lender, "loan", "disburse", loan, "--date", start)
    net.wait(lambda: net.json(borrower, "loan", "show", loan)["declared"], 20, "the declaration")
    net.json(borrower, "loan", "confirm", loan)
    if repay:
        for row in net.json(borrower, "loan", "show", loan)["rows"]:
            minor = row["payment"]
            text = f"{minor // 100}.{minor % 100:02d}"  # (the currencies used here have 2 decimals)
            net.json(borrower, "loan", "repay", loan, "--amount", text, "--date", row["due"])
            net.json(lender, "loan", "receipt", loan, "--amount", text, "--date", row["due"])
    return loan
