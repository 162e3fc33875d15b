"""A lender's portfolio, and a borrower's obligations, from the states of their loans.

Pure functions of loan states (loanstate.py) and of what the caller passes in (grades,
provisioning parameters, the day): no I/O, no clock. Amounts are integer minor units
and are summed, never rounded; ratios are exact ``fractions.Fraction`` values, each
shown also in basis points, *floored* (``ratio_bp``). One portfolio is one currency:
amounts of different currencies are never added.

Rules of this file (docs/portfolio.md, "Portfolio"):

1. A ``Holding`` is one loan the lender holds: its id, currency, borrower and state
   (and, for the return, its ``LoanFlows``). Its *exposure* is its
   ``outstanding_principal`` unless the loan is ``written_off`` (charged off: counted in
   ``written_off`` instead) or ``repaid`` / ``awaiting_disbursement`` (0). So
   ``outstanding + written_off`` is the sum of ``outstanding_principal`` over the
   holdings, to the minor unit.
2. Allocation: exposure summed by borrower and by grade (``grades`` maps a borrower to
   a grade string, computed by credit elsewhere; a borrower not in it is ``"none"``).
3. Concentration over the exposure by borrower, with ``s_i = exposure_i / outstanding``:
   ``top_share = max s_i`` (ties: the lowest borrower key) and the Herfindahl-Hirschman
   index ``hhi = sum s_i^2`` (1 for a single borrower, 1/n for n equal ones); in basis
   points HHI is the usual 0..10,000 scale. None when nothing is outstanding.
4. NPL ratio: the exposure of loans ``defaulted`` or at least ``NPL_DAYS`` (90) days
   past due, over the outstanding.
5. Expected loss: provisioning.py's required provision of the holdings, per category
   and in total (its rounding: up, per loan).
6. Expected cash flows per month: for every loan with an exposure, each installment's
   amount still owed (``interest - interest_waived - paid_interest + principal -
   paid_principal + fee_charged - fee_paid``), in the month (``YYYY-MM``) of its due
   date, or of ``today`` if it is already due: what is past due is expected now.
7. Realized net annualized return, as LendingClub describes its NAR ("How We Measure
   Net Annualized Return": per note and monthly payment period, the numerator is
   interest received plus late fees received minus service fees, minus the outstanding
   principal of a note when it is charged off, plus recoveries; it is divided by the
   outstanding principal at the beginning of the period; the dollar-weighted average
   over all periods is annualized as ``(1 + average)^12 - 1``). Here, with no service
   fee:

       NAR = (1 + sum_p N_p / sum_p P_p) ** 12 - 1

   over every pair p = (loan, monthly period k >= 0), period k of a loan running from
   ``add_months(disbursed_on, k)`` (exclusive; for k = 0 inclusive) to
   ``add_months(disbursed_on, k + 1)`` (inclusive, so an installment paid on its due
   date falls in the period it pays for), for the periods that ended on or before
   ``today`` and the one running today if money moved in it (a receipt or the
   write-off), and in which the loan was neither repaid nor charged off at the start:
   ``P_p`` is the principal outstanding at the start of the period (the principal less
   the principal of the receipts of the periods before); ``N_p`` is the interest and
   fees received in the period, less the principal outstanding on the day of the
   write-off if it falls in the period; money received after the write-off
   (recoveries) counts whole in ``N`` of the period it falls in
   (``P`` is 0 from then). A default without a write-off changes nothing, as in
   LendingClub's NAR (the note keeps its full principal until it is charged off). The
   result is an exact ``Fraction``; None before any period. It is the loan's return
   over its whole life: a loan bought on the market counts from its disbursement, and
   its price is not in it (market.py's yield is the buyer's).
8. For a borrower (``obligations``): per currency, what is due now (``due_now``), what
   pays everything off today (``payoff``), and every installment still owed, by date
   (rule 6's amounts), with their monthly totals.
9. Every loop is over the holdings (at most ``MAX_LOANS``), their rows, or their
   periods (at most ``MAX_NAR_PERIODS`` per loan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from typing import Any, Iterable, Mapping, NamedTuple

from ..errors import ProtocolError
from .contract import parse_date
from .loanstate import AWAITING, DEFAULTED, REPAID, WRITTEN_OFF, LoanState, Row, SignedReceipt, _Book
from .provisioning import DEFAULTS as PROVISIONING_DEFAULTS
from .provisioning import Params, Required, required_provision
from .schedule import Installment, add_months

MAX_LOANS = 1_000_000
NPL_DAYS = 90
MAX_NAR_PERIODS = 1200 + 120
"""Monthly periods counted per loan at most (the longest schedule, and ten years late)."""
NO_GRADE = "none"
BP = 10_000


class PortfolioError(ProtocolError):
    code = "bad_portfolio"


def ratio_bp(x: Fraction | None) -> int | None:
    """A ratio in basis points, floored (None stays None)."""
    return None if x is None else (x.numerator * BP) // x.denominator


def _frac(x: Fraction | None) -> str | None:
    return None if x is None else f"{x.numerator}/{x.denominator}"


# -- inputs -----------------------------------------------------------------------------------


class Receipt(NamedTuple):
    """One repayment as it was allocated (loanstate rule 7): on ``date``, ``interest``,
    ``fees`` and ``principal`` (and ``overpaid``, owed back) of it."""

    date: date
    interest: int
    fees: int
    principal: int
    overpaid: int


@dataclass(frozen=True)
class LoanFlows:
    """What rule 7 reads of one loan: the principal lent, when, and each repayment's parts."""

    principal: int
    disbursed_on: date
    receipts: tuple[Receipt, ...]
    written_off_on: date | None


@dataclass(frozen=True)
class Holding:
    """One loan of the portfolio (rule 1)."""

    loan: bytes
    currency: str
    borrower: bytes
    state: LoanState
    flows: LoanFlows | None = None

    @property
    def exposure(self) -> int:
        return 0 if self.state.state in (AWAITING, REPAID, WRITTEN_OFF) else self.state.outstanding_principal


def holding_of(contract: dict, state: LoanState, receipts: Mapping[bytes, SignedReceipt] | None = None) -> Holding:
    """The holding of a loan from its contract and state; with ``receipts`` (by id, every
    counted one at least) its flows too (``loan_flows``)."""
    flows = loan_flows(contract, state, receipts) if receipts is not None else None
    return Holding(state.loan, contract["currency"], contract["borrower"], state, flows)


def loan_flows(contract: dict, state: LoanState, receipts: Mapping[bytes, SignedReceipt]) -> LoanFlows | None:
    """How each counted repayment up to ``state.as_of`` was allocated (rule 7's input),
    by replaying them with loanstate's own allocation (``_Book``); None if the loan is
    not disbursed. Raises ``PortfolioError`` (``flows_mismatch``) if the replay does not
    end where ``state`` says: the two must share one allocation rule."""
    if state.disbursed_on is None:
        return None
    if state.amendments:  # (the replay knows one schedule alone: loanstate rule 12 changes it mid-course)
        raise PortfolioError("an amended loan's repayments are not replayed", code="flows_mismatch")
    book = _Book(_plan(state), state.disbursed_on, contract["grace_days"], contract["late_fee"])

    def totals() -> tuple[int, int, int, int]:
        interest = fees = principal = 0
        for ln in book.lines:
            interest, fees, principal = interest + ln.paid_interest, fees + ln.fee_paid, principal + ln.paid_principal
        return interest, fees, principal, book.overpaid

    out = []
    for rid in state.counted[1:]:
        r = receipts.get(rid)
        if r is None:
            raise PortfolioError(f"receipt {rid.hex()[:16]} is counted but not given", code="flows_mismatch")
        day = parse_date(r.doc["date"])
        if day > state.as_of:
            break  # counted dates never decrease (loanstate rule 2)
        before = totals()
        book.pay(r.doc["amount"], day)
        after = totals()
        out.append(Receipt(day, *(a - b for a, b in zip(after, before))))
    book.charge_fees(state.as_of)
    if totals()[:3] != (state.interest_paid, state.fees_paid, state.principal_paid):
        raise PortfolioError("the replayed repayments do not add up to the loan's state", code="flows_mismatch")
    return LoanFlows(contract["principal"], state.disbursed_on, tuple(out), state.written_off_on)


def _plan(state: LoanState) -> list[Installment]:
    """The contract's schedule as ``state``'s rows give it (loanstate rule 1: the rows are
    the schedule's installments, in order), instead of computing it a second time."""
    balance = sum(r.principal for r in state.rows)
    plan = []
    for r in state.rows:
        balance -= r.principal
        plan.append(Installment(r.due, r.payment, r.interest, r.principal, balance))
    return plan


# -- rule 7: NAR ---------------------------------------------------------------------------------


class NarPeriod(NamedTuple):
    """One (loan, month) of rule 7: principal at its start, and its net income."""

    start: date
    principal: int
    net: int


def nar_periods(f: LoanFlows, today: date) -> list[NarPeriod]:
    """Rule 7's periods of one loan, up to ``today``."""
    periods: list[NarPeriod] = []
    receipts = f.receipts
    i = 0  # the receipts of the periods before this one have been read
    outstanding = f.principal
    off = f.written_off_on if f.written_off_on is not None and f.written_off_on <= today else None
    charged = False
    end = f.disbursed_on  # (each period's end is the next one's start: add_months once a period)
    for k in range(MAX_NAR_PERIODS):
        start, end = end, add_months(f.disbursed_on, k + 1)
        if start > today:
            break
        principal_at_start = outstanding if not charged and outstanding > 0 else 0
        net, moved = 0, False
        while i < len(receipts) and receipts[i].date <= min(end, today):
            r = receipts[i]
            if off is not None and not charged and off < r.date:
                net -= outstanding  # charged off before this receipt: it is a recovery
                charged = True
            net += r.interest + r.fees + (r.principal if charged else 0)
            outstanding -= r.principal
            i += 1
            moved = True
        if off is not None and not charged and off <= end:
            net -= outstanding
            charged, moved = True, True
        if end <= today or moved:
            if principal_at_start or net:
                periods.append(NarPeriod(start, principal_at_start, net))
        if end > today or ((charged or outstanding <= 0) and i >= len(receipts)):
            break
    return periods


def nar(flows: Iterable[LoanFlows], today: date) -> Fraction | None:
    """Rule 7: ``(1 + sum N / sum P) ** 12 - 1`` over the periods of every loan; None if
    no principal was outstanding in any period."""
    total_p = total_n = 0
    for n, f in enumerate(flows):
        if n >= MAX_LOANS:
            raise PortfolioError(f"more than {MAX_LOANS} loans", code="too_many_loans")
        p, net = _memo(f, "nar", today, lambda: _nar_sums(f, today))
        total_p += p
        total_n += net
    if total_p == 0:
        return None
    return (1 + Fraction(total_n, total_p)) ** 12 - 1


def _nar_sums(f: LoanFlows, today: date) -> tuple[int, int]:
    """``(sum P, sum N)`` over one loan's periods (rule 7)."""
    periods = nar_periods(f, today)
    return sum(p.principal for p in periods), sum(p.net for p in periods)


def _memo(obj: Any, name: str, today: date, compute: Any) -> Any:
    """``compute()``, kept on the frozen ``obj`` for the last ``today`` asked: what is kept
    is a function of ``obj``'s fields and the day alone, so it cannot differ from computing
    it again, and a caller that keeps its holdings (the node does, per day and set of
    documents) sums a second portfolio without replaying every loan's periods."""
    kept = obj.__dict__.get("_memo_" + name)
    if kept is not None and kept[0] == today:
        return kept[1]
    value = compute()
    object.__setattr__(obj, "_memo_" + name, (today, value))
    return value


# -- rule 6: what is still owed, by installment ------------------------------------------------------


def owed(row: Row) -> int:
    """Rule 6: what an installment still asks for."""
    return (row.interest - row.interest_waived - row.paid_interest + row.principal - row.paid_principal
            + row.fee_charged - row.fee_paid)


def expected_flows(state: LoanState, today: date) -> list[tuple[date, int]]:
    """Rule 6 for one loan: ``(date expected, amount)`` for each installment still owed."""
    return [(max(r.due, today), x) for r in state.rows if (x := owed(r)) > 0]


def month_of(d: date) -> str:
    return f"{d.year:04d}-{d.month:02d}"


def _by_month(state: LoanState, today: date) -> tuple[tuple[str, int], ...]:
    """Rule 6 for one loan: ``(month, amount)`` of each installment still owed, in order."""
    return tuple((month_of(d), a) for d, a in expected_flows(state, today))


# -- the portfolio --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Portfolio:
    """A lender's loans of one currency by rules 1 to 7."""

    currency: str
    as_of: date
    loans: int
    by_state: dict[str, int]
    outstanding: int
    written_off: int
    by_borrower: dict[bytes, int]
    by_grade: dict[str, int]
    top_borrower: bytes | None
    top_share: Fraction | None
    hhi: Fraction | None
    npl: int
    npl_ratio: Fraction | None
    expected_loss: Required
    cash_flows: dict[str, int]
    nar: Fraction | None
    interest_received: int
    fees_received: int
    principal_received: int

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: keys as hex, ratios as ``"p/q"`` text and floored basis points."""
        return {
            "currency": self.currency, "as_of": self.as_of.isoformat(), "loans": self.loans,
            "by_state": dict(sorted(self.by_state.items())), "outstanding": self.outstanding,
            "written_off": self.written_off,
            "by_borrower": {k.hex(): v for k, v in sorted(self.by_borrower.items())},
            "by_grade": dict(sorted(self.by_grade.items())),
            "top_borrower": self.top_borrower.hex() if self.top_borrower else None,
            "top_share": _frac(self.top_share), "top_share_bp": ratio_bp(self.top_share),
            "hhi": _frac(self.hhi), "hhi_bp": ratio_bp(self.hhi),
            "npl": self.npl, "npl_ratio": _frac(self.npl_ratio), "npl_bp": ratio_bp(self.npl_ratio),
            "expected_loss": self.expected_loss.to_json(), "cash_flows": dict(self.cash_flows),
            "nar": _frac(self.nar), "nar_bp": ratio_bp(self.nar),
            "interest_received": self.interest_received, "fees_received": self.fees_received,
            "principal_received": self.principal_received,
        }


def portfolio(holdings: Iterable[Holding], currency: str, today: date, grades: Mapping[bytes, str] | None = None,
              params: Params = PROVISIONING_DEFAULTS) -> Portfolio:
    """Rules 1 to 7 over ``holdings``, all of ``currency`` (``mixed_currency`` otherwise)."""
    grades = grades or {}
    hs: list[Holding] = []
    for n, h in enumerate(holdings):
        if n >= MAX_LOANS:
            raise PortfolioError(f"more than {MAX_LOANS} loans", code="too_many_loans")
        if h.currency != currency:
            raise PortfolioError(f"a {h.currency} loan among {currency} loans", code="mixed_currency")
        hs.append(h)
    by_state: dict[str, int] = {}
    by_borrower: dict[bytes, int] = {}
    by_grade: dict[str, int] = {}
    outstanding = written_off = npl = 0
    months: dict[str, int] = {}
    for h in hs:
        s = h.state
        by_state[s.state] = by_state.get(s.state, 0) + 1
        if s.state == WRITTEN_OFF:
            written_off += s.outstanding_principal
        x = h.exposure
        if x == 0:
            continue
        outstanding += x
        by_borrower[h.borrower] = by_borrower.get(h.borrower, 0) + x
        g = grades.get(h.borrower, NO_GRADE)
        by_grade[g] = by_grade.get(g, 0) + x
        if s.state == DEFAULTED or s.days_past_due >= NPL_DAYS:
            npl += x
        for m, amount in _memo(h, "months", today, lambda: _by_month(s, today)):
            months[m] = months.get(m, 0) + amount
    top = top_share = hhi = npl_ratio = None
    if outstanding:
        top = min(by_borrower, key=lambda b: (-by_borrower[b], b))
        top_share = Fraction(by_borrower[top], outstanding)
        hhi = Fraction(sum(v * v for v in by_borrower.values()), outstanding * outstanding)
        npl_ratio = Fraction(npl, outstanding)
    assert sum(by_borrower.values()) == sum(by_grade.values()) == outstanding, "rule 2 adds up"
    flows = [h.flows for h in hs if h.flows is not None]
    return Portfolio(
        currency=currency, as_of=today, loans=len(hs), by_state=by_state, outstanding=outstanding,
        written_off=written_off, by_borrower=by_borrower, by_grade=by_grade, top_borrower=top,
        top_share=top_share, hhi=hhi, npl=npl, npl_ratio=npl_ratio,
        expected_loss=required_provision(((h.currency, h.state) for h in hs), currency, params),
        cash_flows=dict(sorted(months.items())), nar=nar(flows, today),
        interest_received=sum(h.state.interest_paid for h in hs), fees_received=sum(h.state.fees_paid for h in hs),
        principal_received=sum(h.state.principal_paid for h in hs),
    )


def portfolios(holdings: Iterable[Holding], today: date, grades: Mapping[bytes, str] | None = None,
               params: Params = PROVISIONING_DEFAULTS) -> dict[str, Portfolio]:
    """``portfolio`` for each currency among ``holdings``, by currency code."""
    groups: dict[str, list[Holding]] = {}
    for n, h in enumerate(holdings):
        if n >= MAX_LOANS:
            raise PortfolioError(f"more than {MAX_LOANS} loans", code="too_many_loans")
        groups.setdefault(h.currency, []).append(h)
    return {cur: portfolio(groups[cur], cur, today, grades, params) for cur in sorted(groups)}


# -- rule 8: a borrower's obligations ---------------------------------------------------------------


class Due(NamedTuple):
    """One installment a borrower still owes: when, on which loan, how much."""

    date: date
    loan: bytes
    amount: int


@dataclass(frozen=True)
class Obligations:
    """Rule 8: what a borrower owes in one currency."""

    currency: str
    as_of: date
    due_now: int
    payoff: int
    outstanding: int
    schedule: tuple[Due, ...]
    by_month: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "as_of": self.as_of.isoformat(), "due_now": self.due_now,
                "payoff": self.payoff, "outstanding": self.outstanding, "by_month": dict(self.by_month),
                "schedule": [{"date": d.date.isoformat(), "loan": d.loan.hex(), "amount": d.amount}
                             for d in self.schedule]}


def obligations(holdings: Iterable[Holding], currency: str, today: date) -> Obligations:
    """Rule 8 over the loans of one borrower in ``currency`` (written-off loans are still
    owed: a write-off is the lender's bookkeeping, not a release of the debt)."""
    dues: list[Due] = []
    due_now = payoff = outstanding = 0
    for n, h in enumerate(holdings):
        if n >= MAX_LOANS:
            raise PortfolioError(f"more than {MAX_LOANS} loans", code="too_many_loans")
        if h.currency != currency:
            raise PortfolioError(f"a {h.currency} loan among {currency} loans", code="mixed_currency")
        s = h.state
        if s.state in (AWAITING, REPAID):
            continue
        due_now, payoff, outstanding = due_now + s.due_now, payoff + s.payoff, outstanding + s.outstanding_principal
        dues.extend(Due(d, h.loan, a) for d, a in expected_flows(s, today))
    dues.sort()
    months: dict[str, int] = {}
    for d in dues:
        months[month_of(d.date)] = months.get(month_of(d.date), 0) + d.amount
    return Obligations(currency, today, due_now, payoff, outstanding, tuple(dues), months)
