"""Loan-loss provisioning (protocol/lending/provisioning.py): categories by days past due as in
Fineract, per-loan rounding up, totals that add up to the minor unit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.loanstate import (
    AWAITING, CURRENT, DEFAULTED, DELINQUENT, LATE, REPAID, STATES, WRITTEN_OFF,
)
from protocol.lending.provisioning import (
    DEFAULTS, Category, Params, ProvisioningError, category, loan_provision, provision, required_by_currency,
    required_provision,
)

from portfolio_kit import START, contract, loan_id, paid, state, with_state

BASE = state(loan_id(0), contract(), paid(loan_id(0), contract(), 0), START)


def s(st_: str = CURRENT, dpd: int = 0, outstanding: int = 100000):
    return with_state(BASE, state=st_, days_past_due=dpd, outstanding_principal=outstanding)


@pytest.mark.parametrize("dpd,name", [(0, "standard"), (30, "standard"), (31, "substandard"), (90, "substandard"),
                                      (91, "doubtful"), (180, "doubtful"), (181, "loss"), (4000, "loss")])
def test_default_buckets(dpd, name):
    assert category(s(DELINQUENT if dpd > 5 else CURRENT, dpd)) == name


def test_defaulted_is_loss_and_closed_loans_are_in_none():
    assert category(s(DEFAULTED, 31)) == "loss"
    for closed in (AWAITING, REPAID, WRITTEN_OFF):
        assert category(s(closed, 200)) is None and loan_provision(s(closed, 200)) == 0


def test_defaults_are_the_documented_ones():
    assert DEFAULTS.to_json() == [
        {"name": "standard", "min_days": 0, "max_days": 30, "percent_bp": 100},
        {"name": "substandard", "min_days": 31, "max_days": 90, "percent_bp": 2000},
        {"name": "doubtful", "min_days": 91, "max_days": 180, "percent_bp": 5000},
        {"name": "loss", "min_days": 181, "max_days": None, "percent_bp": 10000},
    ]


def test_a_provision_is_rounded_up_per_loan():
    assert provision(150, 100) == 2  # 1.5 -> 2
    assert provision(100, 100) == 1 and provision(0, 10000) == 0 and provision(7, 10000) == 7
    assert loan_provision(s(LATE, 3, 12345)) == 124  # 123.45 -> 124


def test_a_real_late_loan_is_provisioned_by_its_days_past_due():
    c = contract()
    loan = loan_id("late")
    late = state(loan, c, paid(loan, c, 0), START.replace(month=4, day=1))  # first due 15 Feb, 45 days
    assert late.days_past_due == 45 and category(late) == "substandard"
    assert loan_provision(late) == -(-late.outstanding_principal * 2000 // 10000)


@pytest.mark.parametrize("cats", [
    (),
    (Category("a", 1, 100),),
    (Category("a", 0, 100), Category("a", 5, 200)),
    (Category("a", 0, 300), Category("b", 5, 200)),
    (Category("a", 0, 100), Category("b", 0, 200)),
    (Category("a", 0, 10001),),
])
def test_bad_params_are_refused(cats):
    with pytest.raises(ProvisioningError):
        Params(cats)


def test_mixed_currencies_are_refused_and_grouped():
    with pytest.raises(ProvisioningError) as e:
        required_provision([("EUR", s()), ("USD", s())], "EUR")
    assert e.value.code == "mixed_currency"
    r = required_by_currency([("USD", s()), ("EUR", s(DELINQUENT, 100))])
    assert list(r) == ["EUR", "USD"] and r["EUR"].total == 50000 and r["USD"].total == 1000


def test_every_category_is_listed():
    r = required_provision([], "EUR")
    assert r.total == 0 and set(r.by_category) == set(DEFAULTS.names)
    assert r.to_json()["by_category"]["loss"] == {"loans": 0, "outstanding": 0, "provision": 0}


# -- properties -------------------------------------------------------------------------------------

states = st.builds(s, st.sampled_from(STATES), st.integers(0, 5000), st.integers(0, 10**15))


@settings(max_examples=300, deadline=None)
@given(st.lists(states, max_size=40))
def test_totals_agree_with_the_sum_over_loans(loans):
    r = required_provision([("EUR", x) for x in loans], "EUR")
    assert r.total == sum(loan_provision(x) for x in loans)
    assert r.total == sum(v.provision for v in r.by_category.values())
    exposed = [x for x in loans if category(x) is not None]
    assert r.outstanding == sum(x.outstanding_principal for x in exposed)
    assert sum(v.loans for v in r.by_category.values()) == len(exposed)
    for x in exposed:  # never less than the exact fraction, at most one minor unit more
        pct = next(c.percent_bp for c in DEFAULTS.categories if c.name == category(x))
        assert 0 <= loan_provision(x) * 10000 - x.outstanding_principal * pct < 10000


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 10**12))
def test_later_is_never_less_provisioned(d1, d2, out):
    lo, hi = sorted((d1, d2))
    assert loan_provision(s(DELINQUENT, lo, out)) <= loan_provision(s(DELINQUENT, hi, out))
    assert loan_provision(s(DELINQUENT, hi, out)) <= loan_provision(s(DEFAULTED, lo, out))
