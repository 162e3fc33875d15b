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
   digit by digit, so every node computes the same figure. ``irr_annual`` replays that
   bisection with the same mids and answers, hence the same digits, but evaluates the sum
   only near the root: it answers the comparisons far from it from a bracket it proves
   first (``_window``), and stops once no halving can move the ends.
5. Bad inputs raise what ``schedule`` raises, or ``AprError`` (``bad_fee``): a fee that is
   negative, over ``MAX_AMOUNT``, or leaves the borrower nothing (``F >= P``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Context, Decimal, Inexact, InvalidOperation
from fractions import Fraction
from functools import lru_cache

from ..errors import ProtocolError
from .money import MAX_AMOUNT
from .schedule import MAX_PERIODS, periods_of, schedule

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
    """The effective yearly rate ``X`` of rule 1 (0.2682 for 26.82 %), by rule 4: the
    digits of ``_irr_reference``, with ``_pv`` evaluated only near the root."""
    return _irr(flows, _bisect_fast)


def _irr_reference(flows: CashFlows) -> Decimal:
    """``irr_annual`` as rule 4 specifies it: every one of the ``ITERATIONS`` comparisons
    evaluates ``_pv``. Slow; kept to test the fast path against."""
    return _irr(flows, _bisect_reference)


def _irr(flows: CashFlows, bisect: Callable[[tuple[int, ...], Decimal], tuple[Decimal, Decimal]]) -> Decimal:
    """Rule 4 around ``bisect``, which returns the last ``(lo, hi)`` of its bisection."""
    received, payments = Decimal(flows.received), flows.payments
    assert flows.received > 0 and payments and flows.period_years > 0
    assert sum(payments) >= flows.received  # rates and fees are never negative
    if sum(payments) == flows.received:  # pays back what it got: nothing more
        return Decimal(0)
    lo, hi = bisect(payments, received)
    if lo == 0:  # not reachable for amounts within MAX_AMOUNT: the rate is beyond any figure
        raise AprError("the rate is too high to compute")
    v = _CTX.divide(_CTX.add(lo, hi), 2)
    per_year = _CTX.divide(Decimal(flows.period_years.denominator), Decimal(flows.period_years.numerator))
    return _CTX.subtract(_CTX.power(_CTX.divide(1, v), per_year), 1)


def _bisect_reference(payments: tuple[int, ...], received: Decimal) -> tuple[Decimal, Decimal]:
    """Rule 4's bisection, word for word: ``_pv(lo) < received <= _pv(hi)`` throughout
    (``_pv(0) = 0``; ``_pv(1) = sum(payments)``, above ``received``)."""
    lo, hi = Decimal(0), Decimal(1)
    for _ in range(ITERATIONS):
        mid = _CTX.divide(_CTX.add(lo, hi), 2)
        if _pv(payments, mid) < received:
            lo = mid
        else:
            hi = mid
    return lo, hi


def _bisect_fast(payments: tuple[int, ...], received: Decimal) -> tuple[Decimal, Decimal]:
    """The ``(lo, hi)`` of ``_bisect_reference``, the same digits: the same mids and the
    same answers, where the answers outside ``_window`` need no ``_pv``."""
    below, above = _window(payments, received)
    add, divide = _CTX.add, _CTX.divide  # bound once: most iterations do nothing else
    lo, hi = Decimal(0), Decimal(1)
    for _ in range(ITERATIONS):
        mid = divide(add(lo, hi), 2)
        if mid == lo or mid == hi:
            # Nothing changes any more: _pv(lo) < received, so mid = lo sets lo to itself;
            # _pv(hi) >= received, so mid = hi sets hi to itself; and the next mid is this one.
            break
        if mid <= below or (mid < above and _pv(payments, mid) < received):
            lo = mid
        else:
            hi = mid
    return lo, hi


_NO_WINDOW = (Decimal(0), Decimal(2))  # every mid is in (0, 1]: no answer without _pv
_MAX_FLOAT_AMOUNT = 10**30  # payments up to this fit a float's range with room (``_approx_root``)
_GRID_DIGITS = 48  # the root is rounded to 1e-48 of its leading digit: r has at most 50 digits
_MARGIN = 16  # d is 16 N of those units: 8 times what rounding needs (``_window``)
_EXACT = Context(prec=PRECISION, traps=[Inexact, InvalidOperation])  # asserts: r +- d, r +- 2d exact


def _window(payments: tuple[int, ...], received: Decimal) -> tuple[Decimal, Decimal]:
    """``(r - 2d, r + 2d)`` around the root ``r``, with ``_pv(mid) < received`` for every
    ``0 < mid <= r - 2d`` and ``_pv(mid) >= received`` for every ``mid >= r + 2d``; or
    ``_NO_WINDOW`` if it cannot prove so.

    Proof. Let ``pv`` be the exact sum of ``N`` payments and ``e`` the relative error of
    ``_pv``. Every payment is ``>= 0``, so every term ``a_k v**k`` is; Horner's rule
    rounds it at most ``2k`` times, each by at most ``u = 5e-50`` (half a unit in the 50th
    digit; no underflow for ``N <= MAX_PERIODS``, as every mid is over 1e-61); so
    ``|_pv - pv| <= e * pv`` with ``e <= (1 + u)**(2N) - 1``, about ``N * 1e-49``. And
    ``pv(v) / v`` is nondecreasing in ``v`` (a polynomial with coefficients ``>= 0``).
    ``r <= 10 ** (lead + 1)`` and ``d = 16 N 10 ** (lead - 48)``, so at ``a = r - d`` and
    ``b = r + d``, ``d / a`` and ``d / b`` exceed ``16 N 1e-49 (1 - 1e-40)``, 8 times
    ``2e / (1 - e)``. Check ``_pv(a) < received <= _pv(b)``. For ``mid <= a - d``:
    ``_pv(mid) <= (1 + e) pv(mid) <= (1 + e) pv(a) mid / a <= (1 + e) / (1 - e) * _pv(a) *
    (1 - d / a) < received``. For ``mid >= b + d``: ``_pv(mid) >= (1 - e) pv(b) mid / b >=
    (1 - e) / (1 + e) * _pv(b) * (1 + d / b) >= received``. That is: between ``a - d`` and
    ``a`` the sum grows by at least ``d / a`` of itself, more than rounding can move it.
    The check passes when ``r`` is within ``d - e r`` of the root, over 15 N units of
    ``10 ** (lead - 48)``: Newton's ``N * 1e-50`` and the rounding to half a unit are less."""
    n = len(payments)
    if n > MAX_PERIODS or min(payments) < 0 or max(payments) > _MAX_FLOAT_AMOUNT:  # outside the proof,
        return _NO_WINDOW  # or beyond floats
    root = _approx_root(payments, received)
    if root is None:
        return _NO_WINDOW
    lead = root.adjusted()
    r = root.quantize(Decimal(1).scaleb(lead - _GRID_DIGITS, _NEWTON_CTX), context=_NEWTON_CTX)
    d = Decimal(_MARGIN * n).scaleb(lead - _GRID_DIGITS, _NEWTON_CTX)
    a, b = _EXACT.subtract(r, d), _EXACT.add(r, d)
    if not _pv(payments, a) < received <= _pv(payments, b):  # r was not close enough
        return _NO_WINDOW
    return _EXACT.subtract(a, d), _EXACT.add(b, d)


_FLOAT_STEPS = 100  # Newton steps in floats, to a float's precision (a handful in practice)
_DECIMAL_STEPS = 8  # then in decimal, to ``_NEWTON_DONE`` (two in practice)
_FLOAT_DONE = 1e-11  # a step of ln v this small: ln v is within about that of the root
_NEWTON_DONE = Decimal("1e-25")  # a step this small relative to v: v within N * 1e-50 of the root
_NEWTON_CTX = Context(prec=PRECISION + 10, rounding=ROUND_HALF_UP)


def _approx_root(payments: tuple[int, ...], received: Decimal) -> Decimal | None:
    """``v`` with ``pv(v) = received`` to within about ``N * 1e-50`` of ``v``, or None.
    Any answer is safe: ``_window`` checks it. Newton's method: in floats on
    ``ln pv(e**s) = ln received`` from ``s = 0``, then in decimal on ``pv(v) = received``."""
    s = _float_log_root(payments, float(received))
    if s is None:
        return None
    v = Decimal.from_float(math.exp(s))  # exactly the float, whatever the thread's decimal context traps
    for _ in range(_DECIMAL_STEPS):
        p, dp = _pv_slope(payments, v)
        if not dp > 0:
            return None
        step = _NEWTON_CTX.divide(_NEWTON_CTX.subtract(p, received), dp)
        v = _NEWTON_CTX.subtract(v, step)
        if not 0 < v < 1:
            return None
        if abs(step) <= _NEWTON_CTX.multiply(_NEWTON_DONE, v):
            return v  # quadratic convergence: the error is now about N * step**2 / v
    return None


def _float_log_root(payments: tuple[int, ...], received: float) -> float | None:
    """``s`` with ``ln pv(e**s)`` within about ``_FLOAT_DONE`` of ``ln received``, or None.
    ``h(s) = ln pv(e**s) - ln received`` is increasing and convex in ``s`` (the log of a
    sum of ``a_k e**(ks)``, ``a_k >= 0``) and ``h(0) > 0``, so Newton's method from
    ``s = 0`` decreases to the root without overshooting it; in ``s`` the sum is nearly
    linear piece by piece (slope 1 to N), which takes a few steps even to a root of 1e-18
    (a fee that leaves the borrower one minor unit)."""
    s, target = 0.0, math.log(received)
    for _ in range(_FLOAT_STEPS):
        p, vdp = _pv_slope_float(payments, math.exp(s))
        if not (0 < p < math.inf and 0 < vdp < math.inf):
            return None
        step = (math.log(p) - target) * p / vdp  # h / h', h' = v pv'(v) / pv(v)
        s -= step
        if abs(step) <= _FLOAT_DONE:
            return s
    return None


def _pv_slope(payments: tuple[int, ...], v: Decimal) -> tuple[Decimal, Decimal]:
    """``(pv(v), pv'(v))`` in ``_NEWTON_CTX``: Horner's rule and its derivative."""
    ctx, p, dp = _NEWTON_CTX, Decimal(0), Decimal(0)
    for a in reversed(payments):
        q = ctx.add(p, a)  # p = q * v: p' = q + v * dp
        dp = ctx.add(ctx.multiply(dp, v), q)
        p = ctx.multiply(q, v)
    return p, dp


def _pv_slope_float(payments: tuple[int, ...], v: float) -> tuple[float, float]:
    """``(pv(v), v * pv'(v))`` in floats, as ``_pv_slope``."""
    p = dp = 0.0
    for a in reversed(payments):
        q = p + a
        dp = dp * v + q
        p = q * v
    return p, v * dp


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
    same terms at every decision (a fraction of a millisecond of decimal search each for a
    year of monthly installments, but every contract's amount differs)."""
    x = apr(principal, rate_bp, term, kind, period_days, upfront_fee=upfront_fee,
            fee_per_installment=fee_per_installment)
    return int(_CTX.multiply(x, 10000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def effective_bp(rate_bp: int, periods_per_year: int = 12) -> int:
    """The effective yearly rate of a nominal ``rate_bp`` compounded ``periods_per_year``
    times, in basis points rounded half up: what rule 2 says an annuity's APR is."""
    x = (1 + Fraction(rate_bp, 10000 * periods_per_year)) ** periods_per_year - 1
    return (2 * x.numerator * 10000 + x.denominator) // (2 * x.denominator)
