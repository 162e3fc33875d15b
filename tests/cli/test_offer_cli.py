"""`p2pnode offer` / `request` through the real console script: values that cannot be read
are refused before any node is asked, naming the option; a node must run for the rest."""

from __future__ import annotations

import json

import pytest

from framework.console import run_cli

BASE = ["--currency", "EUR", "--rate", "7.5%", "--term", "12m"]


@pytest.mark.parametrize("args,option", [
    (["--amount", "1.234", *BASE], "--amount"),
    (["--amount", "-5", *BASE], "--amount"),
    (["--amount", "10", "--currency", "XYZ", "--rate", "1%", "--term", "1m"], "--currency"),
    (["--amount", "10", "--currency", "EUR", "--rate", "abc", "--term", "1m"], "--rate"),
    (["--amount", "10", "--currency", "EUR", "--rate", "1%", "--term", "12y"], "--term"),
    (["--amount", "10", *BASE, "--expires", "2w"], "--expires"),
    (["--amount", "10", *BASE, "--kind", "balloon"], "--kind"),
    (["--amount", "10", *BASE, "--late-fee", "0.001"], "--late-fee"),
    (["--min-amount", "30", "--max-amount", "20", *BASE], "--min-amount"),
    (["--amount", "10", *BASE, "--period-days", "30"], "--period-days"),
    (["--amount", "10", *BASE, "--min-grade", "b"], "--min-grade"),
])
def test_bad_values_exit_2_naming_the_option(run, home, args, option):
    for group in ("offer", "request"):
        rc, out, err = run(group, "create", *args, home=home)
        assert rc == 2, (rc, out, err)
        assert option in err


def test_an_amount_or_a_range_is_required(run, home):
    for extra in ([], ["--min-amount", "1"], ["--amount", "5", "--min-amount", "1", "--max-amount", "9"]):
        rc, _, err = run("offer", "create", *BASE, *extra, home=home)
        assert rc == 2 and "--amount" in err, (extra, err)


def test_without_a_node_the_book_commands_exit_6(run, home):
    run("init", home=home)
    for args in (["offer", "list"], ["offer", "create", "--amount", "10", *BASE], ["loan", "list"],
                 ["loan", "show", "0123456789abcdef"]):
        rc, _, err = run(*args, home=home)
        assert rc == 6 and "no node is running" in err, (args, rc, err)


def test_offers_and_requests_through_a_running_node(node_process):
    home, info = node_process

    def ok(*args):
        rc, out, err = run_cli(*args, home=home)
        assert rc == 0, (args, rc, err)
        return out

    def js(*args):
        return json.loads(ok(*args, "--json"))

    lend = js("offer", "create", "--amount", "1500.00", *BASE, "--late-fee", "2.50", "--min-grade", "B")
    assert (lend["side"], lend["max_amount"], lend["rate_bp"], lend["late_fee_text"], lend["min_grade"]) == (
        "lend", 150_000, 750, "2.50", "B")
    assert lend["author"] == info["peer_id"] and lend["expires"] - lend["created"] == 7 * 86400 * 1000
    req = js("request", "create", "--min-amount", "100", "--max-amount", "900.50", "--currency", "EUR",
             "--rate", "9%", "--term", "26w", "--period-days", "14", "--kind", "equal-principal", "--expires", "2h")
    assert (req["side"], req["min_amount"], req["max_amount"], req["period_days"]) == ("borrow", 10_000, 90_050, 14)
    assert [o["id"] for o in js("offer", "list")["offers"]] == [lend["id"], req["id"]]  # cheapest rate first
    assert [o["id"] for o in js("offer", "list", "--side", "borrow", "--mine")["offers"]] == [req["id"]]
    assert [o["id"] for o in js("offer", "list", "--currency", "EUR", "--amount", "1500")["offers"]] == [lend["id"]]
    assert [o["id"] for o in js("offer", "list", "--min-rate", "8%", "--max-rate", "10%")["offers"]] == [req["id"]]
    table = ok("offer", "list")
    assert "offer book (2)" in table and lend["id"][:16] in table and "100.00..900.50 EUR" in table
    shown = ok("offer", "show", req["id"][:10])
    assert "14-day periods" in shown and "equal-principal" in shown
    # (the book adds the fork flag, and the grade of the author in this node's eyes)
    untaken = {"min_amount": lend["min_amount"], "max_amount": lend["max_amount"], "funded": 0,
               "remaining": lend["max_amount"], "parts": 0, "overfilled": False, "exhausted": False,
               "smallest": lend["min_amount"]}
    assert js("offer", "show", lend["id"]) == dict(lend, author_forked=False, grade="none", fill=untaken)
    # refusals by the node: exit 1 with the code's message
    rc, _, err = run_cli("offer", "show", "00000000", home=home)
    assert rc == 1 and "no offer or request matches 00000000 on this node" in err
    rc, _, err = run_cli("offer", "show", "abc", home=home)
    assert rc != 0 and "at least 8" in err
    assert js("offer", "cancel", lend["id"][:12]) == {"id": lend["id"], "cancelled": True}
    assert "cancelled" in ok("offer", "cancel", req["id"])
    assert js("offer", "list")["offers"] == []
