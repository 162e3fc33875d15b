"""Repayment schedules: properties that hold for every input, and a few exact rows."""

from __future__ import annotations

import math
from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol.lending.money import CURRENCIES, MoneyError, format_amount, parse_amount
from protocol.lending import schedule as sched_module
from protocol.lending.schedule import KINDS, ScheduleError, add_months, round_half_up, schedule

principals = st.one_of(st.integers(1, 10**15), st.sampled_from([1, 2, 3, 10**15]))
rates = st.one_of(st.integers(0, 100_000), st.just(0), st.integers(0, 3000))
terms = st.one_of(
    st.tuples(st.integers(1, 120), st.just("m")),
    st.tuples(st.integers(1, 104), st.just("w")).map(lambda t: (t[0], t[1], None)),
    st.tuples(st.integers(1, 36), st.sampled_from([1, 7, 14, 30])).map(lambda t: (t[0] * t[1], "d", t[1])),
)
starts = st.dates(date(2000, 1, 1), date(2100, 12, 31))


def make(principal, rate, term, kind, start):
    if len(term) == 3:
        return schedule(principal, rate, term[:2], kind, start, period_days=term[2])
    return schedule(principal, rate, term, kind, start)


def expected_periods(term, kind):
    if kind == "bullet":
        return 1
    if term[1] == "m":
        return term[0]
    days = term[0] * 7 if term[1] == "w" else term[0]
    return days // (term[2] or 7)


@settings(max_examples=300, deadline=None)
@given(principals, rates, terms, st.sampled_from(KINDS), starts)
def test_schedule_invariants(principal, rate, term, kind, start):
    rows = make(principal, rate, term, kind, start)
    assert len(rows) == expected_periods(term, kind)
    assert sum(r.principal for r in rows) == principal
    assert rows[-1].balance == 0
    before = principal
    for r in rows:
        assert r.payment == r.interest + r.principal
        assert r.interest >= 0 and r.principal >= 0
        assert r.balance == before - r.principal <= before
        before = r.balance
    dues = [r.due for r in rows]
    assert dues == sorted(dues) and dues[0] > start and len(set(dues)) == len(dues)
    if rate == 0:
        assert all(r.interest == 0 for r in rows)


def pmt(principal: int, rate_bp: int, term) -> int:
    """The spreadsheet PMT of a schedule's inputs, rounded half up to the minor unit: an
    implementation of its own (the closed form ``P * r * (1 + r)^n / ((1 + r)^n - 1)``)
    to check ``schedule`` against."""
    if term[1] == "m":
        r, n = Fraction(rate_bp, 10000) / 12, term[0]
    else:
        days = term[2] or 7
        r, n = Fraction(rate_bp, 10000) * days / 365, (term[0] * (7 if term[1] == "w" else 1)) // days
    exact = Fraction(principal, n) if r == 0 else principal * r * (1 + r) ** n / ((1 + r) ** n - 1)
    return math.floor(exact + Fraction(1, 2))


@settings(max_examples=200, deadline=None)
@given(principals, st.integers(0, 3000), terms, starts)
def test_annuity_payments_are_level(principal, rate, term, start):
    """One level installment, the PMT rounded to the minor unit, for every row but the
    last (which takes the remainder), until the balance reaches 0 (then 0)."""
    rows = make(principal, rate, term, "annuity", start)
    level = pmt(principal, rate, term if len(term) == 3 else (*term, None))
    for r in rows[:-1]:
        assert r.payment == level or r.balance == 0 and r.payment <= level
    assert sum(r.principal for r in rows) == principal


@settings(max_examples=200, deadline=None)
@given(st.integers(100_00, 10**12), st.integers(1, 3000), st.integers(2, 120), starts)
def test_annuity_of_an_ordinary_loan_ends_within_a_few_units_of_the_level(principal, rate, months, start):
    """The last installment differs from the level one by the carried rounding: each
    period's is at most a unit (half from the level payment, half from the interest),
    grown by the interest it accrues until the end, ``sum((1 + r)^k, k < n)``. Where that
    bound is below one installment, the balance never reaches 0 early. (Where it is not,
    it may: 100.00 at 23.43 % over 120 months pays 2.17 a month, rounded up from about
    2.165, and the overpayment, grown by interest, repays it a month early; the schedule's
    rows then end at 0, test_annuity_payments_are_level.)"""
    r = Fraction(rate, 120000)
    carried = sum((1 + r) ** k for k in range(months)) + 1
    rows = schedule(principal, rate, (months, "m"), "annuity", start)
    level = rows[0].payment
    assume(carried < level)
    assert all(r.payment == level for r in rows[:-1])
    assert abs(rows[-1].payment - level) <= carried
    if rate <= 1200 and months <= 36:  # an ordinary consumer loan: a few units
        assert abs(rows[-1].payment - level) <= 50


def test_a_small_long_annuity_whose_rounding_adds_up_to_an_installment_ends_early_at_zero():
    """100.00 at 23.43 % over 120 months: the level payment rounds up (2.165 to 2.17), the
    overpayment grows with interest, and the balance reaches 0 at the 119th installment
    (2.16); the 120th is 0 and every row's principal still adds up to the loan's."""
    rows = schedule(10_000, 2343, (120, "m"), "annuity", date(2000, 1, 1))
    assert len(rows) == 120 and {r.payment for r in rows[:-2]} == {217}
    assert (rows[-2].payment, rows[-2].balance, rows[-1].payment, rows[-1].balance) == (216, 0, 0, 0)
    assert sum(r.principal for r in rows) == 10_000


@settings(max_examples=100, deadline=None)
@given(principals, terms, starts)
def test_zero_rate_annuity_is_level_principal(principal, term, start):
    annuity = make(principal, 0, term, "annuity", start)
    assert all(r.interest == 0 for r in annuity)
    level = round_half_up(Fraction(principal, len(annuity)))
    assert all(r.principal == level or r.balance == 0 for r in annuity[:-1])


@given(principals, rates, terms, starts)
def test_equal_principal_parts_differ_by_a_unit_at_most(principal, rate, term, start):
    parts = [r.principal for r in make(principal, rate, term, "equal-principal", start)]
    assert max(parts) - min(parts) <= 1


@given(principals, rates, terms, starts)
def test_interest_only_pays_interest_until_the_last(principal, rate, term, start):
    rows = make(principal, rate, term, "interest-only", start)
    assert all(r.principal == 0 and r.balance == principal for r in rows[:-1])
    assert rows[-1].principal == principal
    assert len({r.interest for r in rows}) == 1


@given(principals, rates, terms, starts)
def test_bullet_is_one_installment_at_the_end(principal, rate, term, start):
    (row,) = make(principal, rate, term, "bullet", start)
    assert row.principal == principal and row.balance == 0
    if term[1] == "m":
        assert row.due == add_months(start, term[0])
    else:
        assert row.due == start + timedelta(days=term[0] * (7 if term[1] == "w" else 1))


@given(principals, rates, st.sampled_from(KINDS), starts)
def test_one_period_loans(principal, rate, kind, start):
    (row,) = schedule(principal, rate, (1, "m"), kind, start)
    assert row.principal == principal
    assert row.interest == (principal * rate * 2 + 120000) // 240000  # round half up of P * r / 12


@given(st.sampled_from(sorted(CURRENCIES)), st.integers(1, 10**15), st.sampled_from(KINDS))
def test_every_currency_round_trips_through_a_schedule(currency, principal, kind):
    text = format_amount(principal, currency)
    rows = schedule(parse_amount(text, currency), 750, (12, "m"), kind, date(2026, 1, 1))
    for r in rows:
        for v in (r.payment, r.interest, r.principal, r.balance):
            assert parse_amount(format_amount(v, currency), currency) == v


def test_worked_example():
    """docs/protocol.md, "Schedules": 10000.00 EUR at 12 % over 12 months."""
    rows = schedule(1_000_000, 1200, (12, "m"), "annuity", date(2026, 1, 31))
    first, last = rows[0], rows[-1]
    assert (first.due, first.payment, first.interest, first.principal, first.balance) == (
        date(2026, 2, 28), 88849, 10000, 78849, 921151)
    assert (last.due, last.payment, last.interest, last.principal, last.balance) == (
        date(2027, 1, 31), 88847, 880, 87967, 0)
    assert rows[1].due == date(2026, 3, 31)


def test_month_ends_are_clamped_from_the_start():
    assert [add_months(date(2024, 1, 31), k) for k in (1, 2, 13)] == [
        date(2024, 2, 29), date(2024, 3, 31), date(2025, 2, 28)]


@pytest.mark.parametrize("args,code", [
    ((0, 100, (12, "m"), "annuity"), "bad_amount"),
    ((10**19, 100, (12, "m"), "annuity"), "bad_amount"),
    ((100, -1, (12, "m"), "annuity"), "bad_rate"),
    ((100, 100_001, (12, "m"), "annuity"), "bad_rate"),
    ((100, 100, (0, "m"), "annuity"), "bad_term"),
    ((100, 100, (12, "y"), "annuity"), "bad_term"),
    ((100, 100, (1201, "m"), "annuity"), "bad_term"),
    ((100, 100, (12, "m"), "balloon"), "bad_schedule"),
])
def test_bad_inputs(args, code):
    with pytest.raises((MoneyError, ScheduleError)) as e:
        schedule(*args, date(2026, 1, 1))
    assert e.value.code == code


def test_period_days_must_divide_the_term():
    assert len(schedule(100, 100, (90, "d"), "annuity", date(2026, 1, 1))) == 3
    assert len(schedule(100, 100, (90, "d"), "annuity", date(2026, 1, 1), period_days=45)) == 2
    with pytest.raises(MoneyError, match="whole number") as e:
        schedule(100, 100, (100, "d"), "annuity", date(2026, 1, 1))
    assert e.value.code == "bad_term"
    with pytest.raises(MoneyError, match="months"):
        schedule(100, 100, (12, "m"), "annuity", date(2026, 1, 1), period_days=30)


def test_due_dates_past_9999_are_refused():
    with pytest.raises(ScheduleError):
        schedule(100, 100, (12, "m"), "annuity", date(9999, 6, 1))


# -- schedules kept (schedule.SCHEDULES_KEPT) --------------------------------------------


@settings(max_examples=200, deadline=None)
@given(principals, rates, terms, st.sampled_from(KINDS), starts)
def test_a_schedule_asked_again_is_the_one_made_afresh_in_a_list_of_its_own(principal, rate, term, kind, start):
    first = make(principal, rate, term, kind, start)
    first.append("written into by its caller")  # (each caller's list is its own)
    again = make(principal, rate, term, kind, start)
    fresh = sched_module._schedule(principal, rate, term[:2], kind, start, term[2] if len(term) == 3 else None)
    assert again == fresh and again is not first


def test_the_schedules_kept_are_never_given_for_arguments_of_another_type():
    """``True == 1`` and ``hash(True) == hash(1)``: a schedule kept for 1 must not answer
    for True, nor one kept for a date answer for a datetime; the rules refuse those."""
    from datetime import datetime

    schedule(1, 0, (1, "m"), "bullet", date(2026, 1, 1))
    with pytest.raises(MoneyError):
        schedule(True, 0, (1, "m"), "bullet", date(2026, 1, 1))
    schedule(100, 0, (1, "m"), "bullet", date(2026, 1, 1))
    with pytest.raises((MoneyError, ScheduleError)):
        schedule(100, 0, (True, "m"), "bullet", date(2026, 1, 1))
    with pytest.raises(ScheduleError):
        schedule(100, 0, (1, "m"), "bullet", datetime(2026, 1, 1))
    with pytest.raises((MoneyError, ScheduleError)):
        schedule(100, 0, [1, "m"], "bullet", date(2026, 1, 1))  # (unhashable: to the rules, not the memory)
    assert sched_module._kept_schedule.cache_info().maxsize == sched_module.SCHEDULES_KEPT
