"""Repayment schedules: who pays what, when, in exact integer minor units.

Rules (docs/protocol.md, "Schedules"):

1. Inputs: a principal (1 to ``MAX_AMOUNT`` minor units), a yearly rate in basis points
   (0 to ``MAX_RATE_BP``), a term ``(count, unit)`` from ``money.parse_term``, a kind, a
   start date and, for terms in days or weeks, a period length in days.
2. Periods. A term in months (``12m``) has ``count`` monthly periods; the rate of one
   period is ``rate_bp / 10000 / 12``. A term in weeks or days lasts ``7 * count`` or
   ``count`` days and is cut into periods of ``period_days`` days (default 7 for weeks,
   30 for days; 1 to ``MAX_PERIOD_DAYS``); the term's days must be a multiple of
   ``period_days`` (refused otherwise, never a short last period); the rate of one
   period is ``rate_bp / 10000 * period_days / 365``. At most ``MAX_PERIODS`` periods.
3. Due dates count from the start date, never from the previous due date: the k-th
   monthly installment is due on the start's day of month k months later, or on the
   last day of that month if it is shorter (31 Jan -> 28/29 Feb -> 31 Mar); the k-th
   installment of N-day periods is due ``k * N`` days after the start.
4. Kinds (``b`` is the balance before a period, ``m`` the periods left including it,
   ``r`` the period rate; every installment's interest is ``round(b * r)``):

   - ``annuity``: one level payment ``A = round(P * r / (1 - (1 + r) ** -n))`` for the
     whole loan (``P`` the principal, ``n`` the number of periods; ``round(P / n)`` when
     ``r`` is 0), as a spreadsheet's PMT rounded to the minor unit, or Fineract's equal
     installments; principal part ``min(A - interest, b)``, and in the last installment
     ``b``: the last installment takes the rounding remainder. ``A >= interest`` always
     (``A >= round(P * r) >= round(b * r)`` as ``b <= P``), so no part is negative; a
     balance that reaches 0 before the last period (a tiny principal over many periods,
     ``A`` rounded up) leaves the installments after it at 0.
   - ``equal-principal``: principal part ``round(b / m)``; payment = interest + principal.
   - ``interest-only``: principal part 0, except the last installment repays ``b``.
   - ``bullet``: one installment at the end of the whole term, paying the principal and
     simple interest ``round(principal * rate_bp / 10000 * T)``, where ``T`` is
     ``count / 12`` for a term in months and ``days / 365`` otherwise (``period_days``
     is ignored).

5. Rounding: ``round`` is round-half-up of an exact fraction (``fractions.Fraction``;
   all values are non-negative), and it is the only rounding. In the last period every
   kind repays exactly ``b``, so the principal parts sum to the principal and the final
   balance is 0. Every annuity installment but the last is the same ``A`` (until a
   balance reaches 0); the last differs from it by the rounding of ``A`` carried over the
   term (a few minor units on ordinary loans), as in the tables users compare against.
6. Each installment: ``payment = interest + principal``, and ``balance`` is what remains
   owed after it. Balances never increase. Bad inputs raise ``MoneyError`` (``bad_amount``
   for the principal, ``bad_rate``, ``bad_term`` for the term and period) or
   ``ScheduleError`` (``bad_schedule``: an unknown kind, a due date past year 9999).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, timedelta
from fractions import Fraction

from ..errors import ProtocolError
from .money import MAX_AMOUNT, MAX_RATE_BP, MAX_TERM_COUNT, TERM_UNITS, MoneyError

KINDS = ("annuity", "equal-principal", "interest-only", "bullet")
MAX_PERIODS = 1200
"""The most installments one schedule has (100 years of months)."""
MAX_PERIOD_DAYS = 3660


class ScheduleError(ProtocolError):
    """A schedule that cannot be made: an unknown kind, dates out of range."""

    code = "bad_schedule"


@dataclass(frozen=True)
class Installment:
    """One row of a schedule; amounts in minor units, ``payment = interest + principal``."""

    due: date
    payment: int
    interest: int
    principal: int
    balance: int


def round_half_up(x: Fraction) -> int:
    """The integer nearest to a non-negative ``x``, halves rounded up."""
    return (2 * x.numerator + x.denominator) // (2 * x.denominator)


def add_months(start: date, months: int) -> date:
    """``start`` moved ``months`` months on, its day clamped to the end of that month."""
    y, m = divmod(start.month - 1 + months, 12)
    year, month = start.year + y, m + 1
    if year > 9999:
        raise ScheduleError(f"a due date falls after the year 9999 ({months} months after {start})")
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def _check_term(term: tuple[int, str]) -> tuple[int, str]:
    if (not isinstance(term, tuple) or len(term) != 2 or type(term[0]) is not int
            or not 1 <= term[0] <= MAX_TERM_COUNT or term[1] not in TERM_UNITS):
        raise MoneyError(f"term {term!r} is not (count 1 to {MAX_TERM_COUNT}, 'm' | 'w' | 'd')", code="bad_term")
    return term


def periods_of(term: tuple[int, str], period_days: int | None) -> tuple[int, int | None]:
    """``(number of periods, days per period)`` of a term; days is None for months."""
    count, unit = _check_term(term)
    if unit == "m":
        if period_days is not None:
            raise MoneyError("a term in months has monthly periods; period_days is for terms in days and weeks",
                             code="bad_term")
        n, days = count, None
    else:
        total = count * 7 if unit == "w" else count
        days = period_days if period_days is not None else (7 if unit == "w" else 30)
        if type(days) is not int or not 1 <= days <= MAX_PERIOD_DAYS:
            raise MoneyError(f"period of {days} days is not 1 to {MAX_PERIOD_DAYS}", code="bad_term")
        if total % days:
            raise MoneyError(f"a term of {total} days is not a whole number of {days}-day periods",
                             code="bad_term")
        n = total // days
    if n > MAX_PERIODS:
        raise MoneyError(f"{n} periods is more than {MAX_PERIODS}", code="bad_term")
    return n, days


def _due(start: date, k: int, days: int | None) -> date:
    if days is None:
        return add_months(start, k)
    try:
        return start + timedelta(days=k * days)
    except OverflowError:
        raise ScheduleError(f"a due date falls after the year 9999 ({k * days} days after {start})") from None


def annuity_payment(principal: int, r: Fraction, n: int) -> int:
    """The level installment ``A`` of rule 4: ``round(P * r / (1 - (1 + r) ** -n))``, or
    ``round(P / n)`` at a zero rate; ``r`` is the rate of one period."""
    if r == 0:
        return round_half_up(Fraction(principal, n))
    return round_half_up(principal * r / (1 - (1 + r) ** -n))


SCHEDULES_KEPT = 4096
"""Schedules ``schedule`` keeps, the latest made (a few KiB each at most)."""


def schedule(principal: int, rate_bp: int, term: tuple[int, str], kind: str, start_date: date,
             period_days: int | None = None) -> list[Installment]:
    """The installments that repay ``principal`` at ``rate_bp`` per year over ``term``,
    by the rules of this module; the last leaves a balance of 0. A new list each call.

    The same contract's schedule is asked for by every reading of the loan (its state,
    the holdings, the credit model, the checks of each document about it), so the last
    ``SCHEDULES_KEPT`` are kept: an installment is immutable and each caller gets a list
    of its own. Only arguments of exactly the types of rule 1 are looked up (``True`` is
    never taken for 1); any other goes to the rules, which say what is wrong."""
    if (type(principal) is int and type(rate_bp) is int and type(kind) is str and type(start_date) is date
            and (period_days is None or type(period_days) is int)
            and type(term) is tuple and len(term) == 2 and type(term[0]) is int and type(term[1]) is str):
        return list(_kept_schedule(principal, rate_bp, term, kind, start_date, period_days))
    return _schedule(principal, rate_bp, term, kind, start_date, period_days)


@lru_cache(maxsize=SCHEDULES_KEPT)
def _kept_schedule(principal: int, rate_bp: int, term: tuple[int, str], kind: str, start_date: date,
                   period_days: int | None) -> tuple[Installment, ...]:
    return tuple(_schedule(principal, rate_bp, term, kind, start_date, period_days))


def _schedule(principal: int, rate_bp: int, term: tuple[int, str], kind: str, start_date: date,
              period_days: int | None) -> list[Installment]:
    """``schedule`` made afresh."""
    if type(principal) is not int or not 1 <= principal <= MAX_AMOUNT:
        raise MoneyError(f"principal {principal!r} is not 1 to {MAX_AMOUNT} minor units")
    if type(rate_bp) is not int or not 0 <= rate_bp <= MAX_RATE_BP:
        raise MoneyError(f"rate {rate_bp!r} bp is not 0 to {MAX_RATE_BP}", code="bad_rate")
    if kind not in KINDS:
        raise ScheduleError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if type(start_date) is not date:
        raise ScheduleError("the start is a date")
    if kind == "bullet":
        count, unit = _check_term(term)
        if unit == "m":
            years, due = Fraction(count, 12), add_months(start_date, count)
        else:
            total = count * 7 if unit == "w" else count
            years, due = Fraction(total, 365), _due(start_date, 1, total)
        interest = round_half_up(principal * Fraction(rate_bp, 10000) * years)
        return [Installment(due, interest + principal, interest, principal, 0)]

    n, days = periods_of(term, period_days)
    r = Fraction(rate_bp, 120000) if days is None else Fraction(rate_bp * days, 10000 * 365)
    level = annuity_payment(principal, r, n) if kind == "annuity" else 0
    rows: list[Installment] = []
    balance = principal
    for k in range(1, n + 1):
        left = n - k + 1
        interest = round_half_up(balance * r)
        if kind == "annuity":
            assert level >= interest, (level, interest)  # rule 4: b <= P
            part = balance if left == 1 else min(level - interest, balance)
        elif kind == "equal-principal":
            part = round_half_up(Fraction(balance, left))
        else:  # interest-only
            part = balance if left == 1 else 0
        balance -= part
        rows.append(Installment(_due(start_date, k, days), interest + part, interest, part, balance))
    return rows
