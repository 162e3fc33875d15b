"""Auto-invest's choices (protocol/lending/autoinvest.py): the rules of its table, and
properties: the same inputs in any order give the same choices; what is funded never
passes the budget, a borrower's share or a grade's."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.autoinvest import Candidate, Invested, Strategy, decide

EUR = 100  # minor units per euro


def key(n: int) -> bytes:
    return hashlib.sha256(b"k%d" % n).digest()


def request(n: int, borrower: int, *, grade: str = "C", rate: int = 1000, remaining: int = 1000 * EUR,
            smallest: int = 25 * EUR, term: str = "12m", currency: str = "EUR") -> Candidate:
    return Candidate(key(1000 + n), key(borrower), currency, rate, term, remaining, smallest, grade)


STRATEGY = Strategy(budget={"EUR": 250 * EUR}, per_loan={"EUR": 100 * EUR}, max_share_bp=5000)


def test_parts_of_per_loan_until_the_budget_is_spent_best_grade_and_rate_first():
    got = decide(STRATEGY, [request(1, 1, grade="C"), request(2, 2, grade="B", rate=800), request(3, 3, grade="B")])
    assert [(d.request, d.amount, d.reason) for d in got] == [
        (key(1003), 100 * EUR, "fund"), (key(1002), 100 * EUR, "fund"), (key(1001), 0, "budget")]


def test_each_reason_of_the_table():
    s = Strategy(budget={"EUR": 1000 * EUR}, per_loan={"EUR": 100 * EUR}, max_share_bp=1000, min_grade="D",
                 grade_mix={"A": 5000, "B": 1000}, max_term_months=24)
    got = {d.request: d.reason for d in decide(s, [
        request(1, 1, currency="USD"), request(2, 2, term="36m"), request(3, 3, grade="E"),
        request(4, 4, grade="none"), request(5, 5, grade="C"),  # C: not in the mix
        request(6, 6, grade="B"), request(7, 7, grade="B"),  # the mix gives B 100: one part
        request(8, 8, grade="A", remaining=10 * EUR, smallest=10 * EUR),  # the last 10 of a request: taken
    ], Invested(total={"EUR": 0}, by_borrower={("EUR", key(9)): 0}))}
    b_parts = sorted([got.pop(key(1006)), got.pop(key(1007))])  # (which of the two B is taken is their ids' order)
    assert b_parts == ["fund", "grade_mix"]
    assert got == {key(1001): "currency", key(1002): "term", key(1003): "grade", key(1004): "grade",
                   key(1005): "grade_mix", key(1008): "fund"}


def test_a_borrower_owing_its_share_already_is_passed_over():
    s = Strategy(budget={"EUR": 1000 * EUR}, per_loan={"EUR": 100 * EUR}, max_share_bp=1000)  # 100 a borrower
    invested = Invested(total={"EUR": 100 * EUR}, by_borrower={("EUR", key(1)): 100 * EUR})
    got = {d.request: (d.reason, d.amount) for d in decide(s, [request(1, 1), request(2, 2)], invested)}
    assert got == {key(1001): ("borrower_share", 0), key(1002): ("fund", 100 * EUR)}


candidates = st.lists(st.builds(
    lambda n, b, g, r, rem, sm: request(n, b, grade=g, rate=r, remaining=rem, smallest=min(sm, rem)),
    st.integers(0, 50), st.integers(0, 5), st.sampled_from(["A", "B", "C", "D", "E", "F", "G", "none"]),
    st.integers(0, 5000), st.integers(1, 2000 * EUR), st.integers(1, 200 * EUR)), max_size=30,
    unique_by=lambda c: c.id)
strategies = st.builds(
    lambda budget, per, share, mix: Strategy({"EUR": budget}, {"EUR": per}, share,
                                             grade_mix={"A": mix, "B": mix, "C": mix} if mix else {}),
    st.integers(1, 5000 * EUR), st.integers(1, 500 * EUR), st.integers(1, 10_000), st.integers(0, 10_000))


@settings(max_examples=300, deadline=None)
@given(strategies, candidates, st.randoms())
def test_the_same_inputs_in_any_order_give_the_same_choices_within_every_cap(s, cs, rnd):
    got = decide(s, cs)
    shuffled = list(cs)
    rnd.shuffle(shuffled)
    assert decide(s, shuffled) == got
    funded = [d for d in got if d.reason == "fund"]
    assert sum(d.amount for d in funded) <= s.budget["EUR"]
    for b in {d.borrower for d in funded}:
        assert sum(d.amount for d in funded if d.borrower == b) <= s.budget["EUR"] * s.max_share_bp // 10_000
    if s.grade_mix:
        for g in {d.grade for d in funded}:
            assert sum(d.amount for d in funded if d.grade == g) <= s.budget["EUR"] * s.grade_mix.get(g, 0) // 10_000
    by_id = {c.id: c for c in cs}
    for d in funded:
        c = by_id[d.request]
        assert c.smallest <= d.amount <= c.remaining  # a part fill.py admits
