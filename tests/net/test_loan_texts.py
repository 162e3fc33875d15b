"""Loans as a person reads them, over node processes (`p2pnode testnet`): a refused
proposal exits 1 saying why once, declared payments await their receipt in `loan show`,
peers appear by the names given them, and a closed stdout ends `loan show` quietly."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from p2pnode.extensions import load
from p2pnode.testnet import prepare
from framework.console import COMMAND, ROOT, child_env, kill_by_pid
from framework.loans import wait_takeable
from framework.network import Network

pytestmark = pytest.mark.slow

CAP = "rate_cap: APR 12.68% is above the cap of 10.00% (nominal rate 12%) [policy permissive]"


def offer(net: Network, k: int, rate: str) -> str:
    oid = net.json(k, "offer", "create", "--amount", "1200.00", "--currency", "EUR", "--rate", rate,
                   "--term", "3m")["id"]
    for other in (2, 3):
        wait_takeable(net, other, oid)  # (polled through the nodes' API: a wait, not a check)
    return oid


def show_text(net: Network, k: int, loan: str) -> str:
    return net.cli(k, "loan", "show", loan)[1]


def test_refusal_receipts_awaited_and_names(net: Network):
    prepare(net.dir, 3, load())
    net.up(3)
    ids = {k: net.peer_id(k) for k in (1, 2, 3)}
    net.cli(2, "name", "set", ids[1], "alice")
    net.cli(2, "name", "set", ids[3], "carol")
    net.cli(1, "name", "set", ids[3], "carol")
    net.cli(3, "name", "set", ids[1], "alice")

    # refused: exit 1, the reason once, on stderr; --json still prints the answer
    high = offer(net, 1, "12%")
    net.cli(1, "policy", "set", "permissive", "--apr-cap", "10%")  # node 1 now refuses its own 12% offer's loans
    rc, out, err = net.cli(2, "loan", "propose", high, ok=False)
    assert rc == 1, (out, err)
    assert "refused: 1200.00 EUR at 12% over 3m (annuity), lender alice" in out
    assert err == f"p2pnode: error: alice refused the proposal (policy): {CAP}\n"
    assert (out + err).count(CAP) == 1
    rc, out, err = net.cli(2, "loan", "propose", high, "--json", ok=False)
    assert rc == 1
    answer = json.loads(out)
    assert (answer["state"], answer["code"], answer["reason"], answer["lender"]) == ("refused", "policy", CAP, ids[1])
    error = json.loads(err)["error"]
    assert error["code"] == "policy" and error["details"] == {"loan": answer["loan"], "state": "refused"}

    # agreed: exit 0; then each declared payment awaits its receipt in `loan show`
    rc, out, err = net.cli(2, "loan", "propose", offer(net, 1, "9%"))
    assert "agreed: 1200.00 EUR at 9%" in out and err == ""
    loan = out.split()[1]
    net.cli(1, "loan", "disburse", loan)
    net.wait(lambda: net.json(2, "loan", "show", loan)["declared"], 20, "the declaration on node2")
    text = show_text(net, 2, loan)
    assert f"lender      alice ({ids[1]})" in text and f"borrower    {ids[2]}" in text
    awaiting = text.split("declared, awaiting a receipt (1)")[1].splitlines()[2]
    assert awaiting.split() == ["disbursement", "1200.00", awaiting.split()[2], "alice"]
    net.cli(2, "loan", "confirm", loan)
    assert "awaiting a receipt" not in show_text(net, 2, loan)
    net.cli(2, "loan", "repay", loan, "--amount", "100.00")
    text = show_text(net, 2, loan)
    assert "declared, awaiting a receipt (1)" in text and "repayment" in text.split("awaiting a receipt")[1]
    net.cli(1, "loan", "receipt", loan, "--amount", "100.00")
    net.wait(lambda: len(net.json(2, "loan", "show", loan)["counted"]) == 2, 20, "node2 to count the receipt")
    assert "awaiting a receipt" not in show_text(net, 2, loan)

    # sold to a named peer, shown by name on the buyer's and the borrower's node
    rc, out, err = net.cli(1, "loan", "sell", loan[:10], "--price", "1000.00")
    assert out.startswith("listing ") and f"loan {loan[:16]} for sale at 1000.00 EUR (yield " in out
    listing = out.split()[1].rstrip(":")
    net.wait(lambda: net.json(3, "market", "list")["listings"], 20, "node3 to see the listing")
    rc, out, err = net.cli(3, "market", "list")
    assert listing in out and "alice" in out and "1000.00 EUR" in out
    rc, out, err = net.cli(3, "loan", "buy", listing)
    assert out == (f"loan {loan[:16]} bought from alice ({ids[1]}) at 1000.00 EUR (transfer after 2 receipts); "
                   "pay the seller outside the system\n")
    net.wait(lambda: net.json(2, "loan", "show", loan)["terms"]["holder"] == ids[3], 20, "node2 to see the transfer")
    assert f"lender      carol ({ids[3]}) (originally alice)" in show_text(net, 2, loan)
    row = next(x for x in net.cli(2, "loan", "list")[1].splitlines() if x.startswith(loan[:16]))
    assert row.split()[1:4] == ["borrower", "carol", "current"]  # the holder now, by name

    # `loan show | head`, with head gone before the first line: quiet, killed by SIGPIPE
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.Popen([*COMMAND, "--home", str(net.home(2)), "loan", "show", loan], stdin=subprocess.DEVNULL,
                                stdout=w, stderr=subprocess.PIPE, text=True, env=child_env(), cwd=ROOT)
    finally:
        os.close(w)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        kill_by_pid(proc)
    assert (proc.returncode, err) == (-signal.SIGPIPE, "")
