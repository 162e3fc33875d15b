"""The annual percentage rate of a loan: what it costs a year, fees included, computed
from its cash flows.

Rules (docs/policy.md, "APR"):

1. Convention: the EU Consumer Credit Directive's annual percentage rate of charge
   (Directive 2008/48/EC, Annex I; the same in 2023/2225): the rate ``X`` at which what
   the borrower receives equals what it pays, each discounted to the start,

       sum(A_k * (1 + X) ** -t_k) = P - F

   with ``P`` the principal, ``F`` the fees paid at the start (deducted from what the
   borrower receives), ``A_k`` the k-th installment of the schedule (``schedule.py``)
   plus any fee charged with each installment, and ``t_k`` its time in years. It is the
   internal rate of return of the borrower's cash flows, annualised by compounding (an
   effective rate), not multiplied out (a nominal rate).
2. Time: as the directive allows (Annex I, (d)), a year has 12 equal months, so the k-th
   installment of a term in months falls at ``k / 12`` years whatever the calendar; the
   k-th installment of N-day periods at ``k * N / 365``; a bullet at ``count / 12`` or
   ``days / 365``. The amounts of a schedule do not depend on its start date, and neither
   does its APR. Hence the APR of an annuity with no fees at nominal rate ``r`` is the
   effective rate of ``r``, ``(1 + r / 12) ** 12 - 1`` (up to the rounding of the
   installments to the minor unit), not ``r``.
3. What counts: every amount the contract makes the borrower pay whatever it does. The
   late fee is left out, as the directive leaves out charges for not keeping to the
   contract (Art. 19(2)). A contract of p2plend/1 fixes no other fee today; ``F`` and the
   fee per installment are parameters for the terms that will.
4. Arithmetic: the schedule is exact integers; the rate is solved in ``decimal`` with
   ``PRECISION`` digits by bisection of the discount factor of one period over ``(0, 1]``,
   ``ITERATIONS`` times (bounded; the sum is increasing in it), then compounded to a
   year. ``apr_bp`` rounds it half up to a basis point. Decimal arithmetic is specified
   digit by digit, so every node computes the same figure.
5. Bad inputs raise what ``schedule`` raises, or ``AprError`` (``bad_fee``): a fee that is
   negative, over ``MAX_AMOUNT``, or leaves the borrower nothing (``F >= P``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal
from fractions import Fraction
from functools import lru_cache

from ..errors import ProtocolError
from .money import MAX_AMOUNT
from .schedule import periods_of, schedule

PRECISION = 50
ITERATIONS = 200  # halvings of (0, 1]: far below one part in 10**40 of the discount factor
_ANY_START = date(2000, 1, 1)  # amounts do not depend on the start (rule 2)
_CTX = Context(prec=PRECISION, rounding=ROUND_HALF_UP)


class AprError(ProtocolError):
    """Fees that leave no loan to price."""

    code = "bad_fee"


@dataclass(frozen=True)
class CashFlows:
    """A loan's cash flows from the borrower's side: ``received`` at time 0, then each of
    ``payments`` at ``k`` periods of ``period_years`` (``k`` from 1)."""

    received: int
    payments: tuple[int, ...]
    period_years: Fraction


APR_CACHE = 4096
"""Answers of ``apr_bp`` kept (a few hundred bytes each)."""


def cash_flows(principal: int, rate_bp: int, term: tuple[int, str], kind: str, period_days: int | None = None, *,
               upfront_fee: int = 0, fee_per_installment: int = 0) -> CashFlows:
    """The cash flows of rules 1 to 3 for a schedule's inputs."""
    for name, fee in (("upfront fee", upfront_fee), ("fee per installment", fee_per_installment)):
        if type(fee) is not int or not 0 <= fee <= MAX_AMOUNT:
            raise AprError(f"{name} {fee!r} is not 0 to {MAX_AMOUNT} minor units")
    rows = schedule(principal, rate_bp, term, kind, _ANY_START, period_days)
    if upfront_fee >= principal:
        raise AprError(f"an upfront fee of {upfront_fee} leaves nothing of a principal of {principal}")
    count, unit = term
    if kind == "bullet":
        years = Fraction(count, 12) if unit == "m" else Fraction(count * (7 if unit == "w" else 1), 365)
    else:
        _, days = periods_of(term, period_days)
        years = Fraction(1, 12) if days is None else Fraction(days, 365)
    return CashFlows(principal - upfront_fee, tuple(r.payment + fee_per_installment for r in rows), years)


def _pv(payments: tuple[int, ...], v: Decimal) -> Decimal:
    """``sum(payments[k-1] * v ** k)`` by Horner's rule."""
    acc = Decimal(0)
    for a in reversed(payments):
        acc = _CTX.multiply(_CTX.add(acc, a), v)
    return acc


def irr_annual(flows: CashFlows) -> Decimal:
    """The effective yearly rate ``X`` of rule 1 (0.2682 for 26.82 %), by rule 4."""
    received, payments = Decimal(flows.received), flows.payments
    assert flows.received > 0 and payments and flows.period_years > 0
    assert sum(payments) >= flows.received  # rates and fees are never negative
    if sum(payments) == flows.received:  # pays back what it got: nothing more
        return Decimal(0)
    lo, hi = Decimal(0), Decimal(1)  # pv(0) = 0 < received < pv(1) = sum(payments)
    for _ in range(ITERATIONS):
        mid = _CTX.divide(_CTX.add(lo, hi), 2)
        if _pv(payments, mid) < received:
            lo = mid
        else:
            hi = mid
    if lo == 0:  # not reachable for amounts within MAX_AMOUNT: the rate is beyond any figure
        raise AprError("the rate is too high to compute")
    v = _CTX.divide(_CTX.add(lo, hi), 2)
    per_year = _CTX.divide(Decimal(flows.period_years.denominator), Decimal(flows.period_years.numerator))
    return _CTX.subtract(_CTX.power(_CTX.divide(1, v), per_year), 1)


def apr(principal: int, rate_bp: int, term: tuple[int, str], kind: str, period_days: int | None = None, *,
        upfront_fee: int = 0, fee_per_installment: int = 0) -> Decimal:
    """The APR (rule 1) as a fraction of one: ``Decimal("0.26824...")`` for 26.82 %."""
    return irr_annual(cash_flows(principal, rate_bp, term, kind, period_days, upfront_fee=upfront_fee,
                                 fee_per_installment=fee_per_installment))


@lru_cache(maxsize=APR_CACHE, typed=True)  # (typed: a bool fee is refused, never an int's answer)
def apr_bp(principal: int, rate_bp: int, term: tuple[int, str], kind: str, period_days: int | None = None, *,
           upfront_fee: int = 0, fee_per_installment: int = 0) -> int:
    """The APR in basis points, rounded half up (rule 4). A pure function of its
    arguments, so the last ``APR_CACHE`` answers are kept: a policy check asks it for the
    same terms at every decision (5 ms of decimal search each)."""
    x = apr(principal, rate_bp, term, kind, period_days, upfront_fee=upfront_fee,
            fee_per_installment=fee_per_installment)
    return int(_CTX.multiply(x, 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def effective_bp(rate_bp: int, periods_per_year: int = 12) -> int:
    """The effective yearly rate of a nominal ``rate_bp`` compounded ``periods_per_year``
    times, in basis points rounded half up: what rule 2 says an annuity's APR is."""
    x = (1 + Fraction(rate_bp, 10000 * periods_per_year)) ** periods_per_year - 1
    return (2 * x.numerator * 10000 + x.denominator) // (2 * x.denominator)
