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
    """An offer of node ``lender`` (``offer create`` with ``args``), seen by every node and
    takeable there (``takeable``); its id."""
    oid = net.json(lender, "offer", "create", *args)["id"]
    for k in range(1, len(net.pids()) + 1):
        wait_takeable(net, k, oid)
    return oid


def takeable(net: Any, k: int | str, oid: str) -> bool:
    """Whether node ``k`` holds offer (or request) ``oid`` and can take it at once: it holds
    the author's chain up to the head the author's own node holds (the contract commits
    that head) and is connected to the author's node (to which the proposal goes).

    Asked through the nodes' control API, in this process: a wait's poll, not a check (a
    CLI process per poll is a third of a second of CPU). Being seen is not enough to take
    an offer at once: the offer is gossiped, the chain synced, the peers found by peer
    exchange, each on its own time; polled slowly enough, a wait on "seen" alone hid that."""
    o = net.ask(k, "offer.show", {"id": oid})
    status = net.ask(k, "node.status")
    if o is None or status is None:
        return False
    author = o["author"]
    if author == status["peer_id"]:
        return True
    owner = next((name for name, n in net.nodes.items() if n.peer_id == author), None)
    own = net.ask(owner, "ledger.heads") if owner is not None else None
    if own is None:  # (the author's node is not one of this network, or does not answer)
        return True
    head = next((h["seq"] for h in own["heads"] if h["author"] == author), 0)
    held = next((h["seq"] for h in status["heads"] if h["author"] == author), 0)
    return held >= head > 0 and any(p["peer_id"] == author for p in status["peers"])


def wait_takeable(net: Any, k: int | str, oid: str, timeout: float = 20.0) -> None:
    """Wait until ``takeable(net, k, oid)``."""
    net.wait(lambda: takeable(net, k, oid), timeout, f"the offer on {f'node{k}' if isinstance(k, int) else k}")


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
