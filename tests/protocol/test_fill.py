"""Fractional funding (protocol/lending/fill.py): the gates of rule 3 and the invariant of
rule 4 under every interleaving of concurrent takers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.fill import (
    GATES, MAX_PARTS, REFUSALS, admit, admit_to, decide_in_order, fill_of, funded, remaining, with_part,
)
from protocol.lending.money import MAX_AMOUNT


@dataclass(frozen=True)
class Offer:
    min_amount: int
    max_amount: int


EUR_OFFER = Offer(2500, 100000)  # 25.00 to 1000.00 EUR


def test_the_issue_case_two_small_parts_then_a_too_large_one():
    assert admit(EUR_OFFER, [], 2500) is None
    assert admit(EUR_OFFER, [2500], 2500) is None
    f = fill_of(EUR_OFFER, [2500, 2500])
    assert (f.funded, f.remaining, f.parts, f.exhausted, f.overfilled) == (5000, 95000, 2, False, False)
    r = admit(EUR_OFFER, [2500, 2500], 100000)
    assert r is not None and r.code == "offer_exhausted" and "95000 of 100000" in r.message
    assert admit(EUR_OFFER, [2500, 2500], 95000) is None


def test_a_request_funded_by_two_lenders():
    request = Offer(10000, 80000)
    assert admit(request, [], 30000) is None and admit(request, [30000], 50000) is None
    assert fill_of(request, [30000, 50000]).exhausted
    assert admit(request, [30000, 50000], 1).code == "offer_exhausted"


def test_below_minimum_unless_it_takes_all_that_remains():
    assert admit(EUR_OFFER, [], 2499).code == "below_minimum"
    parts = [50000, 49000]  # 1000 remain, below the minimum of 2500
    assert admit(EUR_OFFER, parts, 999).code == "below_minimum"
    assert admit(EUR_OFFER, parts, 1000) is None
    assert fill_of(EUR_OFFER, parts).smallest == 1000
    assert fill_of(EUR_OFFER, []).smallest == 2500
    assert fill_of(EUR_OFFER, [100000]).smallest == 0


@pytest.mark.parametrize("bad", [0, -5, MAX_AMOUNT + 1, 2500.0, "2500", True, None])
def test_bad_amounts_are_refused_first(bad):
    assert admit(EUR_OFFER, [], bad).code == "bad_amount"


def test_a_part_above_the_maximum_is_exhausted_even_untouched():
    assert admit(EUR_OFFER, [], 100001).code == "offer_exhausted"


def test_too_many_parts():
    tiny = Offer(1, MAX_PARTS + 5)
    parts = [1] * MAX_PARTS
    assert admit(tiny, parts, 1).code == "too_many_parts"
    assert admit(tiny, parts[:-1], 1) is None


def test_an_overfilled_offer_seen_from_elsewhere_has_nothing_left():
    f = fill_of(EUR_OFFER, [60000, 60000])
    assert f.overfilled and f.remaining == 0 and f.funded == 120000
    assert admit(EUR_OFFER, [60000, 60000], 1).code == "offer_exhausted"
    assert fill_of(Offer(1, 10**6), [1] * (MAX_PARTS + 1)).overfilled


def test_bad_inputs_are_bugs():
    with pytest.raises(ValueError):
        fill_of(Offer(10, 5), [])
    with pytest.raises(ValueError):
        fill_of(EUR_OFFER, [0])


def test_the_table_and_the_codes_agree():
    assert [g.code for g in GATES] == ["bad_amount", "offer_exhausted", "too_many_parts", "below_minimum"]
    assert set(REFUSALS) == {g.code for g in GATES}
    doc = (__import__("protocol.lending.fill", fromlist=["x"]).__doc__)
    for g in GATES:
        assert g.code in doc


def test_json_view():
    j = fill_of(EUR_OFFER, [2500]).to_json()
    assert j == {"min_amount": 2500, "max_amount": 100000, "funded": 2500, "remaining": 97500, "parts": 1,
                 "overfilled": False, "exhausted": False, "smallest": 2500}


# -- properties ------------------------------------------------------------------------------------

offers = st.integers(1, 10**6).flatmap(lambda hi: st.builds(Offer, st.integers(1, hi), st.just(hi)))


@settings(max_examples=300, deadline=None)
@given(offers, st.lists(st.integers(-3, 2 * 10**6), max_size=40), st.randoms(use_true_random=False))
def test_no_interleaving_overfills(offer, requests, rnd):
    """Rule 4: concurrent takers' requests, in any order the lock lets them in, never
    fill more than max_amount; each admitted part obeys rule 3."""
    order = list(requests)
    rnd.shuffle(order)
    fill, decisions = decide_in_order(offer, [], order)
    admitted = [p for p, d in zip(order, decisions) if d is None]
    assert sum(admitted) == fill.funded <= offer.max_amount
    assert fill.funded + fill.remaining == offer.max_amount
    before = 0
    for p, d in zip(order, decisions):
        left = offer.max_amount - before
        if d is None:
            assert 1 <= p <= left and (p >= offer.min_amount or p == left)
            before += p
        else:
            assert d.code in REFUSALS
            assert d.code != "offer_exhausted" or p > left or left == 0
    # the fold and the one-shot view agree
    assert fill == fill_of(offer, admitted)


@settings(max_examples=200, deadline=None)
@given(offers, st.lists(st.integers(1, 10**6), max_size=30))
def test_taking_greedily_fills_exactly(offer, wishes):
    """Whoever asks for min(wish, remaining) is admitted, so the offer can always be used up."""
    parts: list[int] = []
    for w in wishes + [offer.max_amount]:
        f = fill_of(offer, parts)
        if f.exhausted:
            break
        ask = max(min(w, f.remaining), f.smallest)
        assert admit(offer, parts, ask) is None
        parts.append(ask)
    assert fill_of(offer, parts).exhausted and funded(offer, parts) == offer.max_amount
    assert remaining(offer, parts) == 0


@settings(max_examples=200, deadline=None)
@given(offers, st.lists(st.integers(1, 10**5), max_size=20), st.integers(-1, 2 * 10**6))
def test_admit_to_and_with_part_match_admit(offer, parts, ask):
    f = fill_of(offer, parts)
    assert admit_to(f, ask) == admit(offer, parts, ask)
    if admit_to(f, ask) is None:
        assert with_part(f, ask) == fill_of(offer, parts + [ask])
