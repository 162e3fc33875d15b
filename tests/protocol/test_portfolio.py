"""A lender's portfolio and a borrower's obligations (protocol/lending/portfolio.py): allocation,
concentration, NPL, expected loss, LendingClub's NAR and monthly cash flows, with totals that agree
with the loans to the minor unit."""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending.contract import contract_schedule
from protocol.lending.loanstate import DEFAULTED, REPAID, WRITTEN_OFF
from protocol.lending.portfolio import (
    LoanFlows, PortfolioError, Receipt, expected_flows, holding_of, loan_flows, nar, nar_periods,
    obligations, owed, portfolio, portfolios, ratio_bp,
)
from protocol.lending.provisioning import loan_provision

from portfolio_kit import B, C, L, N, START, contract, loan_id, notice, paid, state

TODAY = date(2026, 6, 1)


def book(tag, c, receipts, today=TODAY, notices=()):
    loan = loan_id(tag)
    rs = receipts(loan) if callable(receipts) else receipts
    s = state(loan, c, rs, today, notices)
    return holding_of(c, s, {r.id: r for r in rs})


def mix(today=TODAY):
    """Five loans: B's current one, B's late one, C's written-off one, C's repaid one, and one
    not yet disbursed."""
    c1, c2, c3 = contract(principal=300000), contract(principal=100000, term="6m"), contract(borrower=C)
    c4, c5 = contract(borrower=C, principal=50000, term="3m"), contract(principal=70000)
    off_day = date(2026, 5, 20)
    return [
        book(1, c1, lambda x: paid(x, c1, 4), today),
        book(2, c2, lambda x: paid(x, c2, 1), today),
        book(3, c3, lambda x: paid(x, c3, 0), today, [notice("default", L, date(2026, 4, 1)),
                                                     notice("writeoff", L, off_day)]),
        book(4, c4, lambda x: paid(x, c4, 3), today),
        book(5, c5, [], today),
    ]


def test_the_mix_by_rule():
    hs = mix()
    assert [h.state.state for h in hs] == ["current", "delinquent", WRITTEN_OFF, REPAID, "awaiting_disbursement"]
    p = portfolio(hs, "EUR", TODAY, {B: "B"})
    current, late = hs[0].state.outstanding_principal, hs[1].state.outstanding_principal
    assert p.outstanding == current + late and p.written_off == hs[2].state.outstanding_principal == 300000
    assert p.by_borrower == {B: current + late} and p.by_grade == {"B": current + late}
    assert p.top_borrower == B and p.top_share == 1 and p.hhi == 1
    assert hs[1].state.days_past_due == TODAY.toordinal() - date(2026, 3, 15).toordinal()  # 78: not an NPL
    assert p.npl == 0 and p.npl_ratio == 0
    assert p.expected_loss.total == loan_provision(hs[0].state) + loan_provision(hs[1].state)
    assert p.expected_loss.by_category["substandard"].outstanding == late
    assert sum(p.cash_flows.values()) == sum(a for h in hs[:2] for _, a in expected_flows(h.state, TODAY))
    assert min(p.cash_flows) == "2026-06"  # what is past due is expected now
    j = p.to_json()
    assert j["top_share_bp"] == 10000 and j["hhi_bp"] == 10000 and j["by_borrower"] == {B.hex(): current + late}
    assert p.by_state == {"current": 1, "delinquent": 1, WRITTEN_OFF: 1, REPAID: 1, "awaiting_disbursement": 1}


def test_concentration_of_two_borrowers_and_npl():
    c1, c2 = contract(principal=300000), contract(borrower=C, principal=100000)
    hs = [book("a", c1, lambda x: paid(x, c1, 0), date(2026, 1, 20)),
          book("b", c2, lambda x: paid(x, c2, 0), date(2026, 1, 20))]
    p = portfolio(hs, "EUR", date(2026, 1, 20), {B: "A", C: "C"})
    assert p.top_borrower == B and p.top_share == Fraction(3, 4)
    assert p.hhi == Fraction(3, 4) ** 2 + Fraction(1, 4) ** 2 and ratio_bp(p.hhi) == 6250
    assert p.by_grade == {"A": 300000, "C": 100000}
    later = date(2026, 6, 1)  # nothing paid since January: 106 days past due
    hs = [book("a", c1, lambda x: paid(x, c1, 0), later), book("b", c2, lambda x: paid(x, c2, 0), later)]
    p = portfolio(hs, "EUR", later)
    assert p.npl == 400000 and p.npl_ratio == 1 and p.by_grade == {"none": 400000}


def test_a_default_counts_as_npl_and_loss():
    c = contract(default_days=30)
    h = book("d", c, lambda x: paid(x, c, 0), date(2026, 4, 1), [notice("default", L, date(2026, 4, 1))])
    assert h.state.state == DEFAULTED and h.state.days_past_due == 45
    p = portfolio([h], "EUR", date(2026, 4, 1))
    assert p.npl == 300000 and p.expected_loss.by_category["loss"].provision == 300000


def test_nar_of_an_annuity_paid_on_time_is_its_effective_rate():
    c = contract(rate_bp=1200)
    plan = contract_schedule(c)
    h = book("nar", c, lambda x: paid(x, c, 12), plan[-1].due + timedelta(days=40))
    assert h.state.state == REPAID
    periods = nar_periods(h.flows, h.state.as_of)
    assert len(periods) == 12 and periods[0].principal == 300000 and periods[0].net == plan[0].interest
    r = nar([h.flows], h.state.as_of)
    assert 1265 <= ratio_bp(r) <= 1270  # (1 + 1 %)^12 - 1 = 12.68 %


def test_nar_charges_off_the_outstanding_and_adds_recoveries():
    d = date(2026, 1, 1)
    flows = LoanFlows(100000, d, (Receipt(date(2026, 2, 1), 1000, 0, 9000, 0),
                                  Receipt(date(2026, 4, 10), 0, 0, 5000, 0)), date(2026, 3, 15))
    periods = nar_periods(flows, date(2026, 6, 1))
    # Jan: income 1000 on 100000; Feb: nothing on 91000; Mar: the write-off of 91000;
    # Apr: a recovery of 5000 on nothing outstanding.
    assert [(p.principal, p.net) for p in periods] == [(100000, 1000), (91000, 0), (91000, -91000), (0, 5000)]
    assert nar([flows], date(2026, 6, 1)) == (1 + Fraction(1000 - 91000 + 5000, 282000)) ** 12 - 1
    assert nar([], TODAY) is None


def test_loan_flows_replay_the_allocation_and_refuse_a_missing_receipt():
    c = contract(late_fee=500)
    loan = loan_id("fees")
    rs = paid(loan, c, 2, late_by=20)  # late beyond the grace days: a fee each
    s = state(loan, c, rs, TODAY)
    f = loan_flows(c, s, {r.id: r for r in rs})
    assert sum(r.fees for r in f.receipts) == s.fees_paid
    assert sum(r.interest for r in f.receipts) == s.interest_paid
    assert sum(r.principal for r in f.receipts) == s.principal_paid
    with pytest.raises(PortfolioError) as e:
        loan_flows(c, s, {r.id: r for r in rs[:-1]})
    assert e.value.code == "flows_mismatch"


def test_mixed_currencies_are_refused_and_grouped():
    hs = mix()
    usd = contract(currency="USD")
    other = book("usd", usd, lambda x: paid(x, usd, 0))
    with pytest.raises(PortfolioError):
        portfolio(hs + [other], "EUR", TODAY)
    ps = portfolios(hs + [other], TODAY)
    assert list(ps) == ["EUR", "USD"] and ps["USD"].outstanding == 300000


def test_a_borrowers_obligations():
    hs = mix()
    ob = obligations([h for h in hs if h.borrower == B], "EUR", TODAY)
    assert ob.due_now == hs[0].state.due_now + hs[1].state.due_now
    assert ob.payoff == hs[0].state.payoff + hs[1].state.payoff
    assert [d.date for d in ob.schedule] == sorted(d.date for d in ob.schedule)
    assert ob.schedule[0].date == TODAY and ob.schedule[0].loan == loan_id(2)
    assert sum(ob.by_month.values()) == sum(d.amount for d in ob.schedule)
    # a written-off loan is still owed by its borrower
    assert obligations([hs[2]], "EUR", TODAY).outstanding == 300000


# -- properties -------------------------------------------------------------------------------------

loans = st.lists(st.tuples(st.sampled_from([B, C, N]), st.integers(1000, 10**7), st.integers(0, 12),
                           st.integers(0, 40), st.sampled_from(["3m", "6m", "12m"]),
                           st.sampled_from(["annuity", "equal-principal", "bullet"])), max_size=8)


@settings(max_examples=60, deadline=None)
@given(loans, st.integers(0, 500))
def test_totals_agree_with_the_sum_over_loans(spec, days):
    today = START + timedelta(days=days)
    hs = []
    for n, (who, principal, k, late, term, kind) in enumerate(spec):
        c = contract(borrower=who, principal=principal, term=term, schedule=kind)
        hs.append(book(n, c, lambda x, c=c, k=k, late=late: paid(x, c, k, late_by=late), today))
    p = portfolio(hs, "EUR", today, {B: "A"})
    assert p.outstanding + p.written_off == sum(h.state.outstanding_principal for h in hs
                                                if h.state.state not in (REPAID, "awaiting_disbursement"))
    assert p.outstanding == sum(p.by_borrower.values()) == sum(p.by_grade.values()) == sum(h.exposure for h in hs)
    assert p.expected_loss.total == sum(loan_provision(h.state) for h in hs)
    assert sum(p.cash_flows.values()) == sum(owed(r) for h in hs if h.exposure for r in h.state.rows)
    assert p.interest_received == sum(h.state.interest_paid for h in hs)
    if p.outstanding:
        assert Fraction(1, len(p.by_borrower)) <= p.hhi <= p.top_share <= 1
        assert 0 <= p.npl_ratio <= 1
    else:
        assert p.hhi is None and p.top_share is None
    assert p.nar is None or p.nar >= -1
    for h in hs:
        if h.flows:
            ps = nar_periods(h.flows, today)
            assert all(x.principal >= 0 for x in ps)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**9), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 10**6), st.integers(0, 10**6)),
                                       max_size=10), st.one_of(st.none(), st.integers(0, 400)))
def test_nar_periods_conserve_money(principal, pays, off):
    """Every unit of income and recovery lands in exactly one period, and a write-off takes
    exactly what was outstanding."""
    d = date(2026, 1, 1)
    pays = sorted(pays)
    rs, left = [], principal
    for day, interest, part in pays:
        part = min(part, left)
        left -= part
        rs.append(Receipt(d + timedelta(days=day), interest, 0, part, 0))
    off_day = None if off is None else d + timedelta(days=off)
    today = d + timedelta(days=500)
    periods = nar_periods(LoanFlows(principal, d, tuple(rs), off_day), today)
    income = sum(r.interest for r in rs if off_day is None or r.date <= off_day)
    recovered = sum(r.interest + r.principal for r in rs if off_day is not None and r.date > off_day)
    outstanding_at_off = principal - sum(r.principal for r in rs if off_day is None or r.date <= off_day)
    charged = outstanding_at_off if off_day is not None else 0
    assert sum(p.net for p in periods) == income + recovered - charged
    assert all(p.principal <= principal for p in periods)


@settings(max_examples=40, deadline=None)
@given(loans, st.lists(st.integers(0, 500), min_size=1, max_size=4))
def test_holdings_kept_between_portfolios_give_what_fresh_ones_do(spec, days):
    """The per-holding memo (the node keeps holdings per day): a portfolio of the same
    holdings, asked again and for other days in any order, is the one of new copies."""
    import dataclasses

    from protocol.lending.portfolio import _plan

    state_day = START + timedelta(days=max(days))
    hs = []
    for n, (who, principal, k, late, term, kind) in enumerate(spec):
        c = contract(borrower=who, principal=principal, term=term, schedule=kind)
        hs.append(book(n, c, lambda x, c=c, k=k, late=late: paid(x, c, k, late_by=late), state_day))
        assert _plan(hs[-1].state) == contract_schedule(c)  # (what loan_flows replays on)
    for d in [*days, *days]:
        today = START + timedelta(days=d)
        kept = portfolio(hs, "EUR", today, {B: "A"}).to_json()
        fresh = [dataclasses.replace(h, flows=h.flows and dataclasses.replace(h.flows)) for h in hs]
        assert kept == portfolio(fresh, "EUR", today, {B: "A"}).to_json()
