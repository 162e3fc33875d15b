"""Trust (protocol/lending/trust.py): personalized walks over repaid loans, and the bounds
that make free identities worthless: a ring gains nothing, and what an attacker's
identities gain together is bounded by its real edges, whatever their number."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.trust import FULL_MASS, SCALE, TrustGraph, bound, trust_weight, walk, weight_pm


def k(n: int) -> bytes:
    return n.to_bytes(32, "big")


ME = k(0)


def graph(edges) -> TrustGraph:
    g = TrustGraph()
    for i, (a, b) in enumerate(edges):
        g.add(i.to_bytes(32, "big"), k(a), k(b))
    return g


def test_the_viewer_keeps_alpha_and_its_counterparty_gets_the_rest_back_and_forth():
    m = walk(ME, graph([(0, 1)]).neighbours)
    assert set(m) == {ME, k(1)}
    assert m[ME] > m[k(1)] > 0
    assert sum(m.values()) <= SCALE


def test_trust_fades_with_every_hop():
    m = walk(ME, graph([(0, 1), (1, 2), (2, 3), (3, 4)]).neighbours)
    assert m[k(1)] > m[k(2)] > m[k(3)] > m.get(k(4), 0)


def test_a_viewer_with_no_repaid_loan_trusts_no_one_but_itself():
    m = walk(ME, graph([(1, 2), (2, 3)]).neighbours)
    assert m == {ME: SCALE * 200 // 1000}
    assert trust_weight(ME, ME, m) == 1000
    assert trust_weight(k(1), ME, m) == 0


def test_a_ring_of_a_hundred_fresh_keys_gains_nothing():
    ring = [(100 + i, 100 + (i + 1) % 100) for i in range(100)] * 5  # they lend to and repay each other, often
    m = walk(ME, graph([(0, 1), (1, 2)] + ring).neighbours)
    assert not any(k(100 + i) in m for i in range(100))


def test_forked_keys_take_no_trust_and_pass_none_on():
    m = walk(ME, graph([(0, 1), (1, 2)]).neighbours, excluded={k(1)})
    assert set(m) == {ME}
    assert walk(ME, graph([(0, 1)]).neighbours, excluded={ME}) == {}


def test_one_pair_cannot_pull_all_of_a_keys_trust():
    # 0 repaid 1 a thousand times and 2 once: the edge weight is capped, so 2 still gets a share
    m = walk(ME, graph([(0, 1)] * 1000 + [(0, 2)]).neighbours)
    assert m[k(2)] * 5 >= m[k(1)] // 2


def test_weights():
    assert weight_pm(0) == 0
    assert weight_pm(FULL_MASS) == 1000
    assert weight_pm(10 * FULL_MASS) == 1000
    assert weight_pm(FULL_MASS // 2) == 500
    with pytest.raises(ValueError):
        weight_pm(1, 0)


def test_a_walk_is_bounded():
    star = [(0, n) for n in range(1, 200)] + [(n, 1000 + n) for n in range(1, 200)]
    g = graph(star)
    assert len(walk(ME, g.neighbours, max_keys=10)) <= 10
    assert len(walk(ME, g.neighbours, max_neighbours=5)) <= 1 + 5 + 5
    assert len(walk(ME, g.neighbours, max_pushes=1)) == 1
    with pytest.raises(ValueError):
        walk(ME, g.neighbours, alpha_pm=0)


def test_the_graph_counts_a_loan_once_and_is_bounded():
    g = TrustGraph(max_loans=2)
    assert g.add(b"l1", k(1), k(2)) and not g.add(b"l1", k(1), k(2))
    assert not g.add(b"l2", k(1), k(1))
    assert g.add(b"l3", k(2), k(1)) and not g.add(b"l4", k(3), k(4))
    assert dict(g.neighbours(k(1))) == {k(2): 2} and len(g) == 2


def test_the_answer_does_not_depend_on_neighbour_order():
    edges = [(0, 1), (0, 2), (1, 2), (2, 3), (1, 3), (3, 4)]
    g = graph(edges)
    m1 = walk(ME, g.neighbours)
    m2 = walk(ME, lambda x: list(reversed(g.neighbours(x))))
    assert m1 == m2


honest_edges = st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(honest=honest_edges, sybils=st.integers(1, 150), extra=st.integers(0, 300),
       links=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 149)), max_size=5))
def test_what_sybils_gain_together_is_bounded_by_their_real_edges_not_their_number(honest, sybils, extra, links):
    """Sybils 1000.. repay each other at will (a ring plus ``extra`` chords); ``links`` are
    their real repaid loans with honest keys 0..15. The mass they hold together is at most
    rule 4's bound, which reads only the masses of keys outside the region and the edges
    into it, not how many keys are inside; with no link it is 0."""
    ring = [(1000 + i, 1000 + (i + 1) % sybils) for i in range(sybils)]
    chords = [(1000 + (i * 7) % sybils, 1000 + (i * 13 + 1) % sybils) for i in range(extra)]
    real = [(h, 1000 + s % sybils) for h, s in links]
    g = graph(honest + ring + chords + real)
    m = walk(ME, g.neighbours)
    region = {k(1000 + i) for i in range(sybils)}
    held = sum(v for x, v in m.items() if x in region)
    assert held <= bound(ME, region, g.neighbours, m)
    if not real:
        assert held == 0


@settings(max_examples=100, deadline=None)
@given(edges=honest_edges)
def test_mass_is_never_created_and_every_key_with_mass_is_reached_by_repaid_loans(edges):
    g = graph(edges)
    m = walk(ME, g.neighbours)
    assert sum(m.values()) <= SCALE
    reached, todo = {ME}, [ME]
    while todo:
        x = todo.pop()
        for y, _ in g.neighbours(x):
            if y not in reached:
                reached.add(y)
                todo.append(y)
    assert set(m) <= reached


def test_a_lower_floor_reaches_further_along_a_line_and_never_reaches_fewer():
    """``min_push`` (``[credit] trust_floor``) is how far standing reaches: along a line of
    repaid loans from the viewer, the default floor stops some hops out, and a lower one
    reaches every key the default reaches, and more."""
    from protocol.lending.trust import MIN_PUSH, walk

    line = [bytes([i]) * 32 for i in range(40)]
    nxt = {a: b for a, b in zip(line, line[1:])}
    prv = {b: a for a, b in zip(line, line[1:])}

    def neighbours(k: bytes):
        return [(n, 1) for n in (nxt.get(k), prv.get(k)) if n is not None]

    default = {k for k, m in walk(line[0], neighbours).items() if m > 0}
    further = {k for k, m in walk(line[0], neighbours, min_push=MIN_PUSH // 100).items() if m > 0}
    assert line[1] in default and line[-1] not in default
    assert default < further
