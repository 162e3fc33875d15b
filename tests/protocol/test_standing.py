"""Standing (protocol/lending/standing.py): hops from the viewer over countersigned loans,
and what free identities gain from it: nothing, unless they hold real edges to keys the
viewer knows."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.standing import DEPTH, hops_from, standing


def key(n: int) -> bytes:
    return n.to_bytes(32, "big")


def graph(edges):
    g = defaultdict(list)
    for a, b in edges:
        g[key(a)].append(key(b))
        g[key(b)].append(key(a))
    return lambda k: g.get(k, [])


ME = key(0)


def test_the_viewer_its_counterparties_and_theirs_have_standing_and_no_one_else():
    # 0 - 1 - 2 - 3: the viewer, its counterparty, theirs, and one hop too far
    hops = hops_from(ME, graph([(0, 1), (1, 2), (2, 3)]))
    assert hops == {key(0): 0, key(1): 1, key(2): 2}
    assert [standing(hops.get(key(n))) for n in range(5)] == [3, 2, 1, 0, 0]
    assert DEPTH == 2


def test_a_ring_of_a_hundred_fresh_keys_gains_nothing():
    ring = [(100 + i, 100 + (i + 1) % 100) for i in range(100)]  # they lend to and repay each other
    hops = hops_from(ME, graph([(0, 1), (1, 2)] + ring))
    assert all(standing(hops.get(key(100 + i))) == 0 for i in range(100))


def test_one_real_edge_lifts_one_key_and_not_the_ring_behind_it():
    ring = [(100 + i, 100 + (i + 1) % 100) for i in range(100)]
    hops = hops_from(ME, graph([(0, 1), (1, 100)] + ring))  # key 100 borrowed from our counterparty
    lifted = [n for n in range(100, 200) if standing(hops.get(key(n))) > 0]
    assert lifted == [100]


def test_a_walk_is_bounded():
    star = [(0, n) for n in range(1, 50)] + [(n, 1000 + n) for n in range(1, 50)]
    assert len(hops_from(ME, graph(star), max_keys=10)) == 10
    assert len(hops_from(ME, graph(star), max_neighbours=5)) <= 1 + 5 + 5 * 1
    with pytest.raises(ValueError):
        hops_from(ME, graph(star), depth=-1)


@settings(max_examples=200, deadline=None)
@given(honest=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=40),
       sybils=st.integers(1, 200), links=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 199)), max_size=5))
def test_what_sybils_gain_is_bounded_by_their_real_edges_not_their_number(honest, sybils, links):
    """Sybils 1000.. lend among themselves at will (a ring); ``links`` are their real loans
    with honest keys 0..15. Whatever their number, the sybils with standing are reached
    through a real edge, and there are at most (1 + fan-out) of them for each: the one
    linked, and (if the honest end is the viewer itself) as many of its own counterparties
    as the walk reads of a key."""
    fan_out = 3
    sybil_edges = [(1000 + i, 1000 + (i + 1) % sybils) for i in range(sybils)]
    real = [(h, 1000 + s % sybils) for h, s in links]
    hops = hops_from(ME, graph(honest + sybil_edges + real), max_neighbours=fan_out)
    gained = [k for k, v in hops.items() if int.from_bytes(k, "big") >= 1000 and standing(v) > 0]
    assert len(gained) <= len(links) * (1 + fan_out)
    if not links:
        assert gained == []
