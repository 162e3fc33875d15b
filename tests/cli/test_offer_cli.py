"""`p2pnode offer` / `request` through the real console script: values that cannot be read
are refused before any node is asked, naming the option; a node must run for the rest."""

from __future__ import annotations

import pytest

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
])
def test_bad_values_exit_2_naming_the_option(run, home, args, option):
    for group in ("offer", "request"):
        rc, out, err = run(group, "create", *args, home=home)
        assert rc == 2, (rc, out, err)
        assert option in err


def test_an_amount_or_a_range_is_required(run, home):
    rc, _, err = run("offer", "create", *BASE, home=home)
    assert rc == 2 and "--amount" in err


def test_without_a_node_the_book_commands_exit_6(run, home):
    run("init", home=home)
    for args in (["offer", "list"], ["offer", "create", "--amount", "10", *BASE], ["loan", "list"],
                 ["loan", "show", "0123456789abcdef"]):
        rc, _, err = run(*args, home=home)
        assert rc == 6 and "no node is running" in err, (args, rc, err)
