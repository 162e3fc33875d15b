"""The APR of a loan from its cash flows (protocol/lending/apr.py): exact cases, and
properties over every schedule."""

from __future__ import annotations

from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.apr import AprError, CashFlows, apr, apr_bp, cash_flows, effective_bp, irr_annual
from protocol.lending.money import MoneyError
from protocol.lending.schedule import KINDS

big_principals = st.integers(10**6, 10**15)  # large enough that rounding to a minor unit is below 0.01 bp
rates = st.integers(0, 100_000)
months = st.integers(1, 60)
terms = st.one_of(
    st.tuples(months, st.just("m")).map(lambda t: (t, None)),
    st.tuples(st.integers(1, 52), st.just("w")).map(lambda t: (t, None)),
    st.tuples(st.integers(1, 24), st.sampled_from([1, 7, 14, 30])).map(lambda t: ((t[0] * t[1], "d"), t[1])),
)


def test_annuity_at_12_percent_is_12_68_percent():
    """The worked example of docs/policy.md: 10000.00 EUR, 12 %, 12 months."""
    assert apr_bp(1_000_000, 1200, (12, "m"), "annuity") == 1268
    assert effective_bp(1200) == 1268


def test_bullet_over_a_year_is_its_simple_rate():
    assert apr_bp(1_000_000, 1200, (12, "m"), "bullet") == 1200
    assert apr_bp(1_000_000, 1200, (365, "d"), "bullet") == 1200


def test_no_interest_no_fee_is_zero():
    assert apr(1_000_000, 0, (12, "m"), "annuity") == 0
    assert apr_bp(1, 0, (1, "d"), "bullet") == 0


def test_an_upfront_fee_on_a_free_loan():
    """100.00 lent over one year in one repayment, 10.00 kept at the start: 100 / 90 - 1."""
    x = apr(10_000, 0, (12, "m"), "bullet", upfront_fee=1000)
    with localcontext(prec=50):
        assert abs(x - (Decimal(10) / 9 - 1)) < Decimal("1e-30")
    assert apr_bp(10_000, 0, (12, "m"), "bullet", upfront_fee=1000) == 1111


def test_the_issue_case_is_far_above_any_cap():
    """9,999,999,999 CNY at 1000 % over 12 months: the effective rate of 1000 %."""
    assert apr_bp(999_999_999_900, 100_000, (12, "m"), "annuity") == effective_bp(100_000) == 14_407_741


def test_flows_of_a_day_based_schedule():
    f = cash_flows(100_000, 3650, (90, "d"), "equal-principal", 30, fee_per_installment=100)
    assert f.received == 100_000 and len(f.payments) == 3 and f.period_years == Fraction(30, 365)
    assert f.payments[0] == 100 + 33_333 + 3000  # fee, principal part, interest round(100000 * 0.365 * 30 / 365)


@pytest.mark.parametrize("kwargs", [{"upfront_fee": -1}, {"upfront_fee": 100}, {"upfront_fee": 101},
                                    {"fee_per_installment": -1}, {"upfront_fee": 10**18 + 1}, {"upfront_fee": 1.5}])
def test_bad_fees(kwargs):
    with pytest.raises(AprError) as e:
        apr(100, 1000, (12, "m"), "annuity", **kwargs)
    assert e.value.code == "bad_fee"


def test_bad_schedules_are_refused_as_schedule_refuses_them():
    with pytest.raises(MoneyError):
        apr(0, 1000, (12, "m"), "annuity")
    with pytest.raises(MoneyError):
        apr(100, 1000, (100, "d"), "annuity")


@settings(max_examples=150, deadline=None)
@given(big_principals, rates, months)
def test_annuity_apr_is_the_effective_rate(principal, rate, n):
    """Rule 2: with no fees, the APR of an annuity at nominal r is (1 + r/12)^12 - 1,
    up to the rounding of its installments to a minor unit (a few parts in 10**6 of it)."""
    eff = effective_bp(rate)
    assert abs(apr_bp(principal, rate, (n, "m"), "annuity") - eff) <= 1 + eff // 100_000


@settings(max_examples=150, deadline=None)
@given(big_principals, rates, months, st.sampled_from(["annuity", "equal-principal", "interest-only"]))
def test_monthly_schedules_have_the_same_apr(principal, rate, n, kind):
    """Interest on the balance at r/12 a month, however the principal is repaid: the
    same effective rate."""
    eff = effective_bp(rate)
    assert abs(apr_bp(principal, rate, (n, "m"), kind) - eff) <= 1 + eff // 100_000


@settings(max_examples=100, deadline=None)
@given(big_principals, st.integers(0, 99_999), terms, st.sampled_from(KINDS))
def test_apr_is_monotone_in_the_rate(principal, rate, term, kind):
    (t, days) = term
    a = apr(principal, rate, t, kind, days)
    b = apr(principal, rate + 1, t, kind, days)
    assert b >= a >= 0


@settings(max_examples=100, deadline=None)
@given(big_principals, st.integers(0, 5000), terms, st.sampled_from(KINDS), st.integers(1, 10**4))
def test_fees_raise_the_apr(principal, rate, term, kind, fee):
    (t, days) = term
    base = apr(principal, rate, t, kind, days)
    assert apr(principal, rate, t, kind, days, upfront_fee=fee) > base
    assert apr(principal, rate, t, kind, days, fee_per_installment=fee) > base


@settings(max_examples=100, deadline=None)
@given(big_principals, st.integers(1, 5000), terms, st.sampled_from(["annuity", "equal-principal", "interest-only"]))
def test_apr_is_never_below_the_nominal_rate(principal, rate, term, kind):
    """Interest charged on the balance each period compounds: the APR is at least the
    nominal rate (less a bp for rounding), and it discounts the flows back to what the
    borrower received. (Not a bullet: its simple interest over years is below its rate
    compounded.)"""
    (t, days) = term
    x = apr(principal, rate, t, kind, days)
    assert apr_bp(principal, rate, t, kind, days) >= rate - 1
    f = cash_flows(principal, rate, t, kind, days)
    with localcontext(prec=50):
        per_period = (1 + x) ** (Decimal(f.period_years.numerator) / Decimal(f.period_years.denominator))
        pv = sum(Decimal(a) / per_period ** k for k, a in enumerate(f.payments, 1))
        assert abs(pv - f.received) <= Decimal(f.received) * Decimal("1e-20")


def test_irr_of_hand_made_flows():
    """Two half-year payments of 60 for 100: v with 60v + 60v^2 = 100."""
    x = irr_annual(CashFlows(100, (60, 60), Fraction(1, 2)))
    with localcontext(prec=50):
        v = 1 / (1 + x).sqrt()
        assert abs(60 * v + 60 * v * v - 100) < Decimal("1e-30")
