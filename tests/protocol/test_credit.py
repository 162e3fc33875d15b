"""Credit (protocol/lending/credit.py): a key's profile in a viewer's eyes, rule by rule,
then properties over random histories."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from creditworld import World, key, make_loan
from protocol.lending.credit import (
    DEFAULT_PARAMS, GRADES, NONE, CreditParams, grade_at_least, profile, repaid_pair, worst_days_past_due,
)
from protocol.lending.loanstate import Move

TODAY = date(2026, 6, 1)
ME, B, L, X = key(0), key(1), key(2), key(3)
YEAR_AGO = TODAY - timedelta(days=365)


def world() -> World:
    return World(TODAY)


def test_a_key_with_no_loans_has_no_grade_and_the_newcomer_limits():
    p = world().profile(ME, B)
    assert p.grade == NONE and p.loans == 0 and p.verified_age_days == 0
    assert p.max_amount["EUR"] == DEFAULT_PARAMS.newcomer_amount["EUR"]
    assert p.min_rate_bp == DEFAULT_PARAMS.min_rate_bp[NONE]
    assert p.owed == {} and p.owed_by_lender == {} and not p.forked


def test_a_loan_repaid_on_time_to_the_viewer_makes_a_grade_and_raises_the_limit():
    w = world()
    w.lend(ME, B, start=YEAR_AGO, principal=200_000)
    p = w.profile(ME, B)
    assert (p.loans, p.repaid, p.repaid_on_time, p.paid_late) == (1, 1, 1, 0)
    assert p.trusted_repaid_pm == 1000
    assert p.grade in GRADES and p.grade != "G"
    assert p.verified_age_days == 365
    assert p.max_amount["EUR"] >= 200_000 * DEFAULT_PARAMS.amount_factor_pm[p.grade] // 1000
    assert p.owed == {}
    assert {f.name: f.points for f in p.factors}["repaid"] == 10


def test_repaid_history_only_counts_as_much_as_trust_reaches_its_lender():
    w = world()
    w.lend(L, B, start=YEAR_AGO, seen=TODAY)  # a lender the viewer has no repaid loan with
    p = w.profile(ME, B)
    assert p.grade == NONE and p.trusted_repaid_pm == 0 and p.verified_age_days == 0
    w.lend(ME, L, start=YEAR_AGO - timedelta(days=100))  # now the viewer's trust reaches L
    p = w.profile(ME, B)
    assert p.grade != NONE and 0 < p.trusted_repaid_pm <= 1000 and p.trusted_counterparties == 1


def test_debt_with_every_lender_counts_in_full():
    w = world()
    w.lend(L, B, start=TODAY - timedelta(days=10), pay="open", principal=50_000)
    w.lend(X, B, start=TODAY - timedelta(days=10), pay="open", principal=7_000, currency="USD")
    w.lend(ME, B, start=TODAY - timedelta(days=10), pay="open", principal=30_000)
    p = w.profile(ME, B)
    assert p.owed == {"EUR": 80_000, "USD": 7_000}
    assert p.owed_by_lender == {L: {"EUR": 50_000}, X: {"USD": 7_000}, ME: {"EUR": 30_000}}
    assert p.active == 3


def test_lateness_counts_in_full_whoever_the_lender():
    w = world()
    w.lend(L, B, start=YEAR_AGO, pay="late", late_days=40, term="1m")  # an untrusted lender, paid 40 days late
    p = w.profile(ME, B)
    assert p.paid_late == 1 and p.repaid == 1 and p.repaid_on_time == 0
    assert p.max_days_past_due == 39  # at the end of the day before the payment
    assert p.grade == "G"  # what hurts counts: usable history, and nothing trusted to weigh against it
    assert {f.name: f.points for f in p.factors}["late"] == -15


def test_a_default_not_repaid_is_g_and_90_days_past_due_is_g():
    w = world()
    w.lend(ME, B, start=YEAR_AGO, pay="on_time")
    w.lend(L, B, start=TODAY - timedelta(days=200), pay="default")
    p = w.profile(ME, B)
    assert p.defaulted == 1 and p.grade == "G" and p.max_amount == {}
    w2 = world()
    w2.lend(ME, B, start=TODAY - timedelta(days=150), pay="open")
    p2 = w2.profile(ME, B)
    assert p2.days_past_due >= 90 and p2.grade == "G"


def test_a_forked_key_is_g_everywhere():
    w = world()
    for n in range(5):
        w.lend(ME, B, start=YEAR_AGO + timedelta(days=n))
    w.forked.add(B)
    p = w.profile(ME, B)
    assert p.forked and p.grade == "G" and p.max_amount == {}
    assert p.min_rate_bp == DEFAULT_PARAMS.min_rate_bp["G"]


def test_a_key_made_today_does_not_look_old_by_backdating_its_contracts():
    w = world()
    w.lend(ME, L, start=YEAR_AGO)  # L is trusted, and known to the viewer for a year
    # a fresh key B and its own sock puppet X sign contracts dated five years ago
    for n in range(5):
        w.lend(X, B, start=TODAY - timedelta(days=5 * 365 - n * 30), seen=TODAY)
    p = w.profile(ME, B)
    assert p.verified_age_days == 0 and p.grade == NONE
    # even with a trusted lender, a backdated contract is no older than the viewer's record of that lender
    w.lend(L, B, start=TODAY - timedelta(days=4 * 365), seen=TODAY)
    p = w.profile(ME, B)
    assert p.verified_age_days == 365


def test_a_backdated_start_on_the_viewers_own_loan_dates_nothing_before_it_was_signed():
    w = world()
    signed = TODAY - timedelta(days=20)
    ms = (signed - date(1970, 1, 1)).days * 86_400_000
    # a fresh key proposes to the viewer a contract whose schedule starts three years back
    w.lend(ME, B, start=TODAY - timedelta(days=3 * 365), seen=TODAY, created_ms=ms)
    assert w.profile(ME, B).verified_age_days == 20


def test_worst_days_past_due_from_moves():
    d = date(2026, 1, 10)
    moves = [Move(d, "disbursed", "awaiting_disbursement", "current"),
             Move(d + timedelta(days=31), "overdue", "current", "late"),
             Move(d + timedelta(days=36), "past_grace", "late", "delinquent"),
             Move(d + timedelta(days=50), "caught_up", "delinquent", "current")]
    assert worst_days_past_due(moves, 5, 0) == 19  # fell due on day 30, paid on day 50: 19 days at the end of day 49
    assert worst_days_past_due(moves[:3], 5, 44) == 44
    assert worst_days_past_due([], 5, 3) == 3


def test_grade_order():
    assert grade_at_least("A", "B") and grade_at_least("B", "B") and not grade_at_least("C", "B")
    assert not grade_at_least(NONE, "G") and grade_at_least(NONE, NONE) and grade_at_least("G", NONE)


def test_the_mapping_is_a_parameter():
    w = world()
    w.lend(ME, B, start=YEAR_AGO)
    strict = CreditParams(grades=(("A", 1000), ("B", 900)))
    assert w.profile(ME, B, params=strict).grade == "G"
    generous = CreditParams(grades=(("A", 0),))
    assert w.profile(ME, B, params=generous).grade == "A"
    with pytest.raises(AssertionError):
        CreditParams(grades=(("B", 10),))


def test_loans_of_other_borrowers_and_loans_not_disbursed_are_ignored():
    w = world()
    w.lend(ME, L, start=YEAR_AGO)
    assert w.profile(ME, B).loans == 0
    h = make_loan(ME, B, start=TODAY + timedelta(days=3), today=TODAY)  # awaiting disbursement
    assert profile(B, [h], viewer=ME, today=TODAY, lender_weights={}, first_seen={}).loans == 0
    assert repaid_pair(h) is None


def test_loans_per_profile_are_bounded():
    w = world()
    for n in range(12):
        w.lend(ME, B, start=YEAR_AGO + timedelta(days=n))
    p = w.profile(ME, B, params=replace(DEFAULT_PARAMS, max_loans=5))
    assert p.loans == 5


history = st.lists(st.tuples(st.sampled_from(["me", "l", "x"]), st.sampled_from(["on_time", "late", "open", "default"]),
                             st.integers(0, 700), st.integers(1, 60)), max_size=8)


@settings(max_examples=60, deadline=None)
@given(history)
def test_properties_of_any_history(loans):
    who = {"me": ME, "l": L, "x": X}
    w = world()
    w.lend(ME, L, start=TODAY - timedelta(days=800))
    for lender, pay, ago, late in loans:
        w.lend(who[lender], B, start=TODAY - timedelta(days=ago), pay=pay, late_days=late)
    p = w.profile(ME, B)
    assert p.grade in (*GRADES, NONE)
    assert p.loans == p.active + p.repaid + sum(1 for h in w.loans if h.contract["borrower"] == B
                                               and h.state.defaulted_on and h.state.state != "repaid"
                                               and h.state.state != "awaiting_disbursement")
    assert p.owed == {c: sum(v.get(c, 0) for v in p.owed_by_lender.values()) for c in p.owed}
    assert 0 <= p.verified_age_days <= 800
    assert p.score == sum(f.points for f in p.factors)
    assert p.min_rate_bp == DEFAULT_PARAMS.min_rate_bp[p.grade]
    # what the viewer cannot trust never helps: the same history with X's loans to B removed
    # is graded no worse unless those loans hurt
    without = World(TODAY, [h for h in w.loans if h.contract["lender"] != X], dict(w.first_seen))
    q = without.profile(ME, B)
    if all(pay == "on_time" for lender, pay, _, _ in loans if lender == "x"):
        assert q.score >= p.score
    # a fork proof makes it G, whatever the history
    w.forked.add(B)
    assert w.profile(ME, B).grade == "G"


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 400))
def test_more_repaid_history_with_the_viewer_never_lowers_the_score(n, ago):
    w = world()
    scores = []
    for i in range(n):
        w.lend(ME, B, start=TODAY - timedelta(days=ago + 100 + i))
        scores.append(w.profile(ME, B).score)
    assert scores == sorted(scores)
