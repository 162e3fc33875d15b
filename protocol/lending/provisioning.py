"""Loan-loss provisioning: how much a lender sets against each loan by how late it is.

The anchor is Apache Fineract's loan-loss provisioning: a *provisioning criteria* lists
the categories ``STANDARD``, ``SUB-STANDARD``, ``DOUBTFUL`` and ``LOSS``, each with a
minimum and maximum age (days overdue) and a percentage of the outstanding principal to
provision; Fineract's provisioning job then books, per category, the sum over the loans
whose days overdue fall in its range. Here the same model is a pure function of the
loans' states (loanstate.py), for one lender and one currency at a time.

Rules of this file (docs/portfolio.md, "Provisioning"):

1. A ``Category`` is a name, the least days past due it starts at (``min_days``) and a
   percentage in basis points (0 to 10,000). ``Params.categories`` lists them by
   increasing ``min_days``, the first at 0, with percentages that never decrease; a
   category ends the day before the next one starts, the last never ends. Defaults
   (``DEFAULTS``):

   ===============  ===============  ==========
   category         days past due    provision
   ===============  ===============  ==========
   ``standard``     0 to 30          1 %
   ``substandard``  31 to 90         20 %
   ``doubtful``     91 to 180        50 %
   ``loss``         181 and more     100 %
   ===============  ===============  ==========

2. ``category(state)`` of a loan state is None when nothing is exposed: the loan is
   ``awaiting_disbursement``, ``repaid`` or ``written_off`` (a written-off loan is
   charged off: the reserve has drawn on it, reserve.py). A ``defaulted`` loan is in the
   last category (``loss``), whatever its days past due. Any other loan is in the last
   category whose ``min_days`` is at most its ``days_past_due``.
3. A loan's provision is ``ceil(outstanding_principal * percent_bp / 10000)`` minor
   units: rounded up, so a provision is never less than the exact fraction (at most one
   minor unit more per loan). Category totals and the grand total are sums of these
   integers, so they agree with the sum over the loans to the minor unit.
4. ``required_provision`` takes the loans of one currency (``ProvisioningError``
   ``mixed_currency`` otherwise) and at most ``MAX_LOANS`` of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from ..errors import ProtocolError
from .loanstate import AWAITING, DEFAULTED, REPAID, WRITTEN_OFF, LoanState

MAX_LOANS = 1_000_000
"""Loans one computation reads at most."""
MAX_CATEGORIES = 16
BP = 10_000


class ProvisioningError(ProtocolError):
    code = "bad_provisioning"


@dataclass(frozen=True)
class Category:
    """Rule 1: provision ``percent_bp`` of the outstanding principal from ``min_days`` past due."""

    name: str
    min_days: int
    percent_bp: int


@dataclass(frozen=True)
class Params:
    """The categories of rule 1, checked when made."""

    categories: tuple[Category, ...] = (
        Category("standard", 0, 100),
        Category("substandard", 31, 2000),
        Category("doubtful", 91, 5000),
        Category("loss", 181, 10000),
    )

    def __post_init__(self) -> None:
        cats = self.categories
        if not 1 <= len(cats) <= MAX_CATEGORIES:
            raise ProvisioningError(f"1 to {MAX_CATEGORIES} categories")
        if cats[0].min_days != 0:
            raise ProvisioningError("the first category starts at 0 days past due")
        names = [c.name for c in cats]
        if len(set(names)) != len(names) or not all(type(n) is str and n for n in names):
            raise ProvisioningError("category names are distinct, non-empty text")
        for c in cats:
            if type(c.min_days) is not int or type(c.percent_bp) is not int or not 0 <= c.percent_bp <= BP:
                raise ProvisioningError(f"category {c.name}: min_days is a day count, percent_bp 0 to {BP}")
        for a, b in zip(cats, cats[1:]):
            if not a.min_days < b.min_days or not a.percent_bp <= b.percent_bp:
                raise ProvisioningError(f"categories {a.name}, {b.name}: days increase, percentages never decrease")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.categories)

    def to_json(self) -> list[dict[str, Any]]:
        out = []
        for i, c in enumerate(self.categories):
            nxt = self.categories[i + 1].min_days - 1 if i + 1 < len(self.categories) else None
            out.append({"name": c.name, "min_days": c.min_days, "max_days": nxt, "percent_bp": c.percent_bp})
        return out


DEFAULTS = Params()

NOT_EXPOSED = frozenset({AWAITING, REPAID, WRITTEN_OFF})
"""States with nothing to provision for (rule 2)."""


def category_of(state: LoanState, params: Params = DEFAULTS) -> Category | None:
    """Rule 2: the category of a loan state, or None when nothing is exposed."""
    if state.state in NOT_EXPOSED:
        return None
    cats = params.categories
    if state.state == DEFAULTED:
        return cats[-1]
    return next(c for c in reversed(cats) if c.min_days <= state.days_past_due)


def category(state: LoanState, params: Params = DEFAULTS) -> str | None:
    """The name of ``category_of``."""
    c = category_of(state, params)
    return None if c is None else c.name


def provision(outstanding: int, percent_bp: int) -> int:
    """Rule 3: ``ceil(outstanding * percent_bp / 10000)``."""
    assert type(outstanding) is int and outstanding >= 0 and 0 <= percent_bp <= BP
    return -(-outstanding * percent_bp // BP)


def loan_provision(state: LoanState, params: Params = DEFAULTS) -> int:
    """Rule 3 for one loan: 0 when it is in no category."""
    c = category_of(state, params)
    return 0 if c is None else provision(state.outstanding_principal, c.percent_bp)


class Line(NamedTuple):
    """One category's figures: loans in it, their outstanding principal, the provision."""

    loans: int
    outstanding: int
    provision: int


@dataclass(frozen=True)
class Required:
    """The provision a currency's loans require, per category and in total (rule 3)."""

    currency: str
    by_category: dict[str, Line] = field(default_factory=dict)
    total: int = 0
    outstanding: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "total": self.total, "outstanding": self.outstanding,
                "by_category": {k: v._asdict() for k, v in self.by_category.items()}}


def required_provision(loans: Iterable[tuple[str, LoanState]], currency: str,
                       params: Params = DEFAULTS) -> Required:
    """Rules 2 to 4: the provision required for ``loans``, pairs ``(currency, state)``,
    all of ``currency``. Every category of ``params`` is listed, empty ones with zeros."""
    lines = {name: [0, 0, 0] for name in params.names}
    count = 0
    for cur, state in loans:
        count += 1
        if count > MAX_LOANS:
            raise ProvisioningError(f"more than {MAX_LOANS} loans", code="too_many_loans")
        if cur != currency:
            raise ProvisioningError(f"a {cur} loan among {currency} loans", code="mixed_currency")
        c = category_of(state, params)
        if c is None:
            continue
        line = lines[c.name]
        line[0] += 1
        line[1] += state.outstanding_principal
        line[2] += provision(state.outstanding_principal, c.percent_bp)
    by = {k: Line(*v) for k, v in lines.items()}
    return Required(currency, by, sum(v.provision for v in by.values()), sum(v.outstanding for v in by.values()))


def required_by_currency(loans: Iterable[tuple[str, LoanState]],
                         params: Params = DEFAULTS) -> dict[str, Required]:
    """``required_provision`` for each currency among ``loans``, sorted by code."""
    groups: dict[str, list[tuple[str, LoanState]]] = {}
    for n, (cur, state) in enumerate(loans):
        if n >= MAX_LOANS:
            raise ProvisioningError(f"more than {MAX_LOANS} loans", code="too_many_loans")
        groups.setdefault(cur, []).append((cur, state))
    return {cur: required_provision(groups[cur], cur, params) for cur in sorted(groups)}
