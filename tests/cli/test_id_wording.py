"""A short id that names nothing, or several things, is refused in the same words for every
kind of object (p2pnode/errors.py), and through a running node for loans and offers alike."""

from __future__ import annotations

import re

import pytest

from p2pnode.errors import ApiError, id_prefix, unique
from framework.console import run_cli


@pytest.mark.parametrize("what,plural", [("loan", "loans"), ("offer or request", "offers or requests"),
                                         ("proposal", "proposals")])
def test_none_and_several_in_the_same_words(what, plural):
    with pytest.raises(ApiError) as none:
        unique([], "1234abcd", what, "unknown_x")
    assert (none.value.code, none.value.message) == ("unknown_x", f"no {what} matches 1234abcd on this node")
    with pytest.raises(ApiError) as several:
        unique(["a", "b", "c"], "1234abcd", what, "unknown_x")
    assert several.value.code == "ambiguous_id"
    assert several.value.message == f"1234abcd matches 3 {plural}: give more of the id"
    assert unique(["a"], "1234abcd", what, "unknown_x") == "a"


@pytest.mark.parametrize("ref", ["abc", "1234567", "1234abcz", "a" * 65, 12345678, None])
def test_a_bad_id_names_the_value_and_what_an_id_is(ref):
    with pytest.raises(ApiError) as e:
        id_prefix(ref, "loan")
    assert e.value.code == "bad_params"
    assert e.value.message == f"{ref!r} is not a loan id: give its 64 hex digits, or a prefix of at least 8"
    with pytest.raises(ApiError) as e:
        id_prefix(ref, "offer or request")
    assert f"{ref!r} is not an offer or request id" in e.value.message


def test_a_prefix_is_read_in_lower_case():  # every caller names the kind now: no older forms remain
    assert id_prefix("ABCDEF0123", "loan") == "abcdef0123"


def test_loans_and_offers_are_refused_alike_by_a_node(node_process):
    home, _ = node_process
    for group in ("loan", "offer"):
        rc, _, err = run_cli(group, "show", "00000000", home=home)
        assert rc == 1 and re.fullmatch(r"p2pnode: error: no [a-z ]+ matches 00000000 on this node\n", err), err
        rc, _, err = run_cli(group, "show", "abc", home=home)
        assert rc == 2 and "'abc' is not a" in err and "a prefix of at least 8" in err, err
