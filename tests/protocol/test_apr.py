"""The APR of a loan from its cash flows (protocol/lending/apr.py): exact cases, and
properties over every schedule."""

from __future__ import annotations

from datetime import date
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

from protocol.lending import apr as apr_module
from protocol.lending.apr import (
    _NO_WINDOW,
    AprError,
    CashFlows,
    _irr_reference,
    _pv,
    _window,
    apr,
    apr_bp,
    cash_flows,
    effective_bp,
    irr_annual,
)
from protocol.lending.money import MAX_AMOUNT, MoneyError
from protocol.lending.schedule import KINDS, MAX_PERIODS, schedule

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


def test_a_periods_interest_rounded_down_to_the_unit_can_take_the_apr_below_the_nominal_rate():
    """Hypothesis found it: 10,000.00 at 9 bp for one day owes 2.47 units of interest,
    rounded to 2 (schedule rule 5), and the APR of 2 units a day is 7 bp, not 8 or 9."""
    assert schedule(1_000_000, 9, (1, "d"), "annuity", date(2026, 1, 1), 1)[0].interest == 2
    assert apr_bp(1_000_000, 9, (1, "d"), "annuity", 1) == 7


@settings(max_examples=100, deadline=None)
@given(big_principals, st.integers(1, 5000), terms, st.sampled_from(["annuity", "equal-principal", "interest-only"]))
def test_apr_is_never_below_the_nominal_rate(principal, rate, term, kind):
    """Interest charged on the balance each period compounds: the APR is at least the
    nominal rate (less a bp for rounding), and it discounts the flows back to what the
    borrower received. (Not a bullet: its simple interest over years is below its rate
    compounded.) The bound assumes what it claims: a period's interest on the principal
    is at least 200 minor units, so that rounding it to the unit moves the rate by 0.25%
    at most (below that, rounding can take the APR further down: the test after this)."""
    (t, days) = term
    f = cash_flows(principal, rate, t, kind, days)
    assume(principal * rate * f.period_years / 10000 >= 200)
    x = apr(principal, rate, t, kind, days)
    assert apr_bp(principal, rate, t, kind, days) >= rate - 1
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


# The fast irr_annual against rule 4 word for word (_irr_reference): the same Decimal,
# digit for digit and exponent for exponent.

any_principals = st.one_of(st.integers(1, 10**6), big_principals, st.just(MAX_AMOUNT))
small_fees = st.integers(0, 10**4)


def assert_same_as_reference(flows: CashFlows) -> None:
    try:
        expected = _irr_reference(flows)
    except AprError:
        with pytest.raises(AprError):
            irr_annual(flows)
        return
    got = irr_annual(flows)
    assert got.as_tuple() == expected.as_tuple(), (flows, got, expected)


def assert_window_proven(flows: CashFlows) -> None:
    """The fast path is taken (no fallback) for every schedule's flows."""
    if sum(flows.payments) > flows.received:
        assert _window(flows.payments, Decimal(flows.received)) != _NO_WINDOW, flows


@st.composite
def schedule_flows(draw):
    """Flows of any schedule the strategies above make, with fees up to the principal."""
    principal, rate, (t, days), kind = draw(any_principals), draw(rates), draw(terms), draw(st.sampled_from(KINDS))
    upfront = draw(st.one_of(st.integers(0, min(principal - 1, 10**4)), st.integers(0, principal - 1),
                             st.just(principal - 1)))
    per_installment = draw(st.one_of(small_fees, st.integers(0, MAX_AMOUNT)))
    try:
        return cash_flows(principal, rate, t, kind, days, upfront_fee=upfront, fee_per_installment=per_installment)
    except MoneyError:  # a schedule refused (a principal too small for its periods): not this test's
        reject()


@settings(max_examples=300, deadline=None)
@given(schedule_flows())
def test_fast_irr_is_the_reference_digit_for_digit(flows):
    assert_same_as_reference(flows)
    assert_window_proven(flows)


@settings(max_examples=150, deadline=None)
@given(big_principals, rates, terms, st.sampled_from(KINDS), small_fees, small_fees)
def test_fast_apr_is_the_reference_for_the_tested_inputs(principal, rate, term, kind, upfront, per_installment):
    """The inputs of the properties above, with and without fees."""
    (t, days) = term
    for fees in ({}, {"upfront_fee": upfront, "fee_per_installment": per_installment}):
        assert_same_as_reference(cash_flows(principal, rate, t, kind, days, **fees))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**6), st.lists(st.integers(0, 10**7), min_size=1, max_size=40), st.integers(0, 10**6),
       st.fractions(Fraction(1, 365), 10).filter(lambda f: f > 0))
def test_fast_irr_is_the_reference_for_hand_made_flows(received, payments, extra, period):
    """Any nonnegative payments (zeros in between, a root anywhere in (0, 1))."""
    payments[-1] += max(0, received - sum(payments)) + extra
    assert_same_as_reference(CashFlows(received, tuple(payments), period))


@settings(max_examples=100, deadline=None)
@given(schedule_flows(), st.integers(0, 10**6))
def test_the_window_decides_what_pv_decides_at_its_edges(flows, ulps):
    """_window's promise checked where it is tightest: at and just beyond its ends."""
    received = Decimal(flows.received)
    below, above = _window(flows.payments, received)
    if (below, above) == _NO_WINDOW:
        return
    for mid in (below, apr_module._CTX.next_minus(below), apr_module._CTX.subtract(below, below.scaleb(-49) * ulps)):
        if mid > 0:
            assert _pv(flows.payments, mid) < received
    for mid in (above, apr_module._CTX.next_plus(above), apr_module._CTX.add(above, above.scaleb(-49) * ulps)):
        assert _pv(flows.payments, mid) >= received


@pytest.mark.parametrize("args, kwargs", [
    ((1_000_000, 0, (12, "m"), "annuity"), {"upfront_fee": 1}),  # rate 0: the fee alone
    ((1_000_000, 0, (12, "m"), "bullet"), {"fee_per_installment": 1}),
    ((1_000_000, 100_000, (12, "m"), "annuity"), {}),  # the highest rate
    ((1_000_000, 100_000, (60, "m"), "interest-only"), {}),
    ((1_000_000, 100_000, (24, "d"), "annuity", 1), {}),
    ((MAX_AMOUNT, 900, (12, "m"), "annuity"), {}),
    ((MAX_AMOUNT, 100_000, (360, "m"), "annuity"), {"upfront_fee": MAX_AMOUNT - 1}),  # one minor unit received
    ((MAX_AMOUNT, 0, (1, "d"), "bullet", 1), {"upfront_fee": MAX_AMOUNT - 1}),  # a root of 1e-18
    ((MAX_AMOUNT, 0, (1, "d"), "bullet", 1), {"upfront_fee": 1}),  # a root of 1 - 1e-18
    ((1, 900, (1, "m"), "bullet"), {}),  # one minor unit lent
    ((1, 100_000, (1, "m"), "bullet"), {"fee_per_installment": MAX_AMOUNT}),
    ((2, 100_000, (2, "m"), "annuity"), {"upfront_fee": 1}),
    ((1_000_000, 900, (12, "m"), "annuity"), {"upfront_fee": 999_999}),  # fees near the principal
    ((1_000_000, 900, (12, "m"), "equal-principal"), {"upfront_fee": 999_000, "fee_per_installment": 10**6}),
    ((1_000_000, 1200, (360, "m"), "annuity"), {}),  # long terms
    ((123_456_789, 2500, (360, "m"), "equal-principal"), {"upfront_fee": 5000}),
    ((10**9, 1, (360, "m"), "interest-only"), {"fee_per_installment": 1}),
    ((1_000_000, 1200, (MAX_PERIODS, "m"), "annuity"), {}),  # the most payments
])
def test_fast_irr_is_the_reference_at_the_edges(args, kwargs):
    flows = cash_flows(*args, **kwargs)
    assert_same_as_reference(flows)
    assert_window_proven(flows)


@pytest.mark.parametrize("flows", [
    CashFlows(1, (2,), Fraction(1)),  # the root is 1/2, the first mid
    CashFlows(1, (10,), Fraction(1)),  # 1/10, a power of ten: mids change exponent there
    CashFlows(100, (60, 60), Fraction(1, 2)),
    CashFlows(1, (0, 0, 0, 4), Fraction(1, 12)),  # zeros: pv = 4 v**4, root 1/sqrt(2)
    CashFlows(1, (1, 1), Fraction(1)),  # the golden ratio's inverse
    CashFlows(10**18 - 1, (10**18,), Fraction(1)),
])
def test_fast_irr_is_the_reference_at_special_roots(flows):
    assert_same_as_reference(flows)
    assert_window_proven(flows)


def count_pv_calls(monkeypatch) -> list[int]:
    calls = [0]

    def counting(payments, v):
        calls[0] += 1
        return _pv(payments, v)

    monkeypatch.setattr(apr_module, "_pv", counting)
    return calls


def test_the_fast_path_evaluates_pv_only_near_the_root(monkeypatch):
    """What makes it fast: the reference evaluates _pv at all 200 mids."""
    flows = cash_flows(1_000_000, 900, (6, "m"), "annuity")
    expected = _irr_reference(flows)
    calls = count_pv_calls(monkeypatch)
    assert irr_annual(flows) == expected
    assert calls[0] < 30  # 2 to prove the window, about 10 inside it


@pytest.mark.parametrize("wrong_root", [
    lambda root: root * (1 + Decimal("1e-30")),  # off by far more than the window: the check fails
    lambda root: root * (1 - Decimal("1e-30")),
    lambda root: Decimal("0.5"),
    lambda root: None,  # Newton gave up
])
def test_a_wrong_root_falls_back_to_evaluating_every_comparison(monkeypatch, wrong_root):
    flows = cash_flows(1_000_000, 900, (6, "m"), "annuity", upfront_fee=1234)
    expected = _irr_reference(flows)
    right_root = apr_module._approx_root
    monkeypatch.setattr(apr_module, "_approx_root",
                        lambda payments, received: wrong_root(right_root(payments, received)))
    assert _window(flows.payments, Decimal(flows.received)) == _NO_WINDOW
    calls = count_pv_calls(monkeypatch)
    got = irr_annual(flows)
    assert got.as_tuple() == expected.as_tuple()
    assert calls[0] > 100  # every mid until the ends meet


@pytest.mark.parametrize("flows", [
    CashFlows(100, (-10, 200), Fraction(1, 12)),  # a negative payment: outside the proof
    CashFlows(100, (10**31,), Fraction(1)),  # beyond floats' comfort
    CashFlows(100, (1,) * (MAX_PERIODS + 1), Fraction(1, 365)),  # more payments than the proof covers
])
def test_flows_outside_the_proof_fall_back_and_are_exact(flows):
    assert _window(flows.payments, Decimal(flows.received)) == _NO_WINDOW
    assert_same_as_reference(flows)
