"""Auto-invest: which requests to borrow a lender's node funds by itself, and how much.

A pure function of the lender's strategy, the requests in its book (with what remains
of each, fill.py, and each borrower's grade in its eyes, credit.py) and what it already
has outstanding: the same inputs give the same choices, every time, on every machine,
so ``autoinvest dry-run`` shows exactly what ``autoinvest on`` would do.

Rules of this file (docs/portfolio.md, "Auto-invest"):

1. A ``Strategy`` per lender: a ``budget`` and an amount ``per_loan`` per currency (the
   currencies it invests in are the budget's), the largest share of a currency's budget
   one borrower may owe it (``max_share_bp``), the lowest grade it lends to
   (``min_grade``: A best to G; empty: any grade, and borrowers with none), the largest
   share of the budget per grade (``grade_mix``: empty, no limit; else a grade it does not
   name gets nothing), and the longest term (``max_term_months``; None: any).
2. ``decide`` orders the candidates (best grade first, ``none`` last; then the higher
   rate; then the id, so that the order is total) and takes each in turn, checking in
   this order and recording the first reason it is passed over (``Decision.reason``):

   ==================  ============================================================
   reason              passed over when
   ==================  ============================================================
   ``currency``        its currency has no budget
   ``term``            its term is longer than ``max_term_months``
   ``grade``           its borrower's grade is below ``min_grade``
   ``too_small``       less remains of it than its smallest part allowed (fill.py)
   ``budget``          the budget left in its currency is below the part
   ``borrower_share``  the borrower would owe more than ``max_share_bp`` of the budget
   ``grade_mix``       its grade would hold more than its share of the budget
   ==================  ============================================================

   The part is ``per_loan``, or all that remains if that is less (fill.py admits it:
   a last part may be below the minimum), or the minimum if ``per_loan`` is below it.
   A taken part counts at once against the budget, the borrower's and the grade's.
3. What counts as outstanding is ``Invested``: the principal the lender has out now per
   currency, per (currency, borrower) and per (currency, grade), from the loans it holds.
4. Every loop is bounded by the candidates given (at most ``MAX_CANDIDATES``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .credit import GRADES, NONE
from .money import term_months

MAX_CANDIDATES = 10_000
BP = 10_000


@dataclass(frozen=True)
class Strategy:
    """Rule 1. Amounts in minor units per currency code."""

    budget: Mapping[str, int]
    per_loan: Mapping[str, int]
    max_share_bp: int = 2_000
    min_grade: str = ""
    grade_mix: Mapping[str, int] = field(default_factory=dict)
    max_term_months: int | None = None

    def __post_init__(self) -> None:
        assert set(self.per_loan) <= set(self.budget), "an amount per loan only for a currency with a budget"
        assert all(v >= 1 for v in self.budget.values()) and all(v >= 1 for v in self.per_loan.values())
        assert 0 < self.max_share_bp <= BP
        assert self.min_grade in ("", *GRADES)
        assert all(g in (*GRADES, NONE) and 0 <= v <= BP for g, v in self.grade_mix.items())


@dataclass(frozen=True)
class Candidate:
    """A request to borrow in the book, as the lender's node sees it now."""

    id: bytes
    borrower: bytes
    currency: str
    rate_bp: int
    term: str
    remaining: int  # fill.py: what is left to fund
    smallest: int  # fill.py: the smallest part it admits now
    grade: str  # the borrower's grade in the lender's eyes (credit.py), or "none"


@dataclass(frozen=True)
class Invested:
    """Rule 3: principal outstanding now, in minor units."""

    total: Mapping[str, int] = field(default_factory=dict)
    by_borrower: Mapping[tuple[str, bytes], int] = field(default_factory=dict)
    by_grade: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """One candidate and what rule 2 made of it: ``amount`` to fund, or 0 and why not."""

    request: bytes
    borrower: bytes
    currency: str
    grade: str
    amount: int
    reason: str  # "fund", or the reason it was passed over

    def to_json(self) -> dict:
        return {"request": self.request.hex(), "borrower": self.borrower.hex(), "currency": self.currency,
                "grade": self.grade, "amount": self.amount, "reason": self.reason}


def _rank(grade: str) -> int:
    return GRADES.index(grade) if grade in GRADES else len(GRADES)


def _share(budget: int, bp: int) -> int:
    return budget * bp // BP


def decide(strategy: Strategy, candidates: Iterable[Candidate], invested: Invested = Invested()) -> list[Decision]:
    """Rule 2: a decision for each candidate, in the order taken."""
    cs = []
    for n, c in enumerate(candidates):
        if n >= MAX_CANDIDATES:
            break
        cs.append(c)
    cs.sort(key=lambda c: (_rank(c.grade), -c.rate_bp, c.id))
    total = dict(invested.total)
    by_borrower = dict(invested.by_borrower)
    by_grade = dict(invested.by_grade)
    out: list[Decision] = []
    for c in cs:
        def decision(amount: int, reason: str, c: Candidate = c) -> Decision:
            return Decision(c.id, c.borrower, c.currency, c.grade, amount, reason)

        budget = strategy.budget.get(c.currency)
        if budget is None or c.currency not in strategy.per_loan:
            out.append(decision(0, "currency"))
            continue
        if strategy.max_term_months is not None and term_months(c.term) > strategy.max_term_months:
            out.append(decision(0, "term"))
            continue
        if strategy.min_grade and _rank(c.grade) > GRADES.index(strategy.min_grade):
            out.append(decision(0, "grade"))
            continue
        part = min(max(strategy.per_loan[c.currency], c.smallest), c.remaining)
        if c.remaining <= 0 or part < c.smallest:
            out.append(decision(0, "too_small"))
            continue
        if total.get(c.currency, 0) + part > budget:
            out.append(decision(0, "budget"))
            continue
        key = (c.currency, c.borrower)
        if by_borrower.get(key, 0) + part > _share(budget, strategy.max_share_bp):
            out.append(decision(0, "borrower_share"))
            continue
        gkey = (c.currency, c.grade)
        if strategy.grade_mix and by_grade.get(gkey, 0) + part > _share(budget, strategy.grade_mix.get(c.grade, 0)):
            out.append(decision(0, "grade_mix"))
            continue
        total[c.currency] = total.get(c.currency, 0) + part
        by_borrower[key] = by_borrower.get(key, 0) + part
        by_grade[gkey] = by_grade.get(gkey, 0) + part
        out.append(decision(part, "fund"))
    return out
