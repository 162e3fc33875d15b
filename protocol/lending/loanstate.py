"""Loan state: what the documents of one loan add up to at the end of a given day.

``loan_state`` is a pure function of the contract, the receipts, transfers, notices and
amendments about the loan, and the day to look at: no I/O and no clock, so every node holding the
same documents computes the same state, for today or for any other day. Amounts are
integer minor units; nothing here uses floats.

Rules of this file (docs/protocol.md, "Loan state"):

1. Schedule. The installments are ``schedule(principal, rate_bp, parse_term(term),
   schedule, start, period_days)`` of the contract (schedule.py). Only a counted
   amendment changes them (rule 12): payments are matched against them (rule 7).
2. Receipts. Only receipts whose ``loan`` is this loan are looked at; one id is one
   receipt (a duplicate is dropped silently). They are taken by ``n`` from 1. Receipt
   ``n`` is invalid, with the first code that applies, if:

   - ``wrong_signer``: it is not signed by its payee;
   - a disbursement: ``already_disbursed`` if one is counted; ``wrong_payer`` if the
     payer is not the contract's lender; ``wrong_payee`` if the payee is not the
     borrower; ``wrong_amount`` if the amount is not the principal;
   - a repayment: ``not_disbursed`` if no disbursement is counted yet; ``wrong_payer`` if
     the payer is not the borrower; ``wrong_payee`` if the payee is not the holder of the
     claim at ``n`` (rule 3);
   - ``bad_date``: it is dated before the contract's start or before the previous
     counted receipt.

   Of the valid receipts numbered ``n`` the one with the lowest id counts and the others
   are rejected with ``conflict``. If none numbered ``n`` is valid, ``n`` is missing and
   every receipt numbered above it is held back with ``gap`` until it is filled. So the
   counted receipts are numbered exactly 1 to K, the first is the disbursement, and
   their dates never decrease.
3. Transfers. A transfer with ``after = k`` takes effect between receipts ``k`` and
   ``k + 1``: the holder of the claim at receipt ``n`` is the contract's lender, changed
   by every valid transfer with ``after < n``. Transfers are applied in order of
   ``after``; among those with the same ``after``, again and again the one with the
   lowest id whose ``from`` is the holder then (so A->B and B->C made after the same
   receipt both apply, and of two sales of one claim the lower id wins). Invalid:
   ``wrong_signer`` unless signed by exactly ``from`` and ``to``; ``bad_transfer`` if
   ``to`` is the borrower; ``not_holder`` if ``from`` never holds the claim at that
   point; ``bad_date`` if dated before the start or before the previous valid
   transfer; ``not_reached`` while ``after`` is more than the number of counted
   receipts. The holder *at a date* ``d`` is the ``to`` of the last valid transfer
   dated on or before ``d`` (the contract's lender if none): that is who may give
   notices on ``d``, and ``holder`` is the holder at ``today``.
4. Time. The state is the one at the end of ``today``. A counted receipt dated after
   ``today`` keeps its number (it stays in ``counted``) but moves no money yet; a notice
   dated after ``today`` has not been given yet (it is not listed at all).
5. Falling due. An installment falls due on its due date, or on the disbursement's date
   if that is later: nobody is late with money not yet lent. Its grace period ends
   ``grace_days`` days after it falls due. Nothing falls due before the disbursement.
6. Late fees. An installment whose interest and principal are not fully paid at the end
   of its grace period is charged ``late_fee`` once, on the next day. Fees are charged
   in time order: before a repayment dated ``d`` is allocated, every installment whose
   grace ended before ``d`` and that was unpaid then is charged; at the end, those whose
   grace ended before ``today``.
7. Allocation. Each counted repayment, in receipt order, pays: (1) unpaid fees, oldest
   installment first; (2) unpaid interest of the installments due on or before its date,
   oldest first; (3) unpaid principal of those; (4) principal of later installments in
   due order (a prepayment: principal parts only, their interest stays scheduled). When
   all principal is paid, the interest of installments due after that date is waived
   and the loan is repaid (``repaid_on``); whatever is left of a payment then is
   ``overpaid``: shown, and owed back to the borrower outside the system.
8. Days past due at a day ``d``: ``d`` minus the day the oldest installment not fully
   paid fell due, if that is before ``d``; else 0. The state is the first that applies
   (this is what rule 11's run of ``TRANSITIONS`` always ends in; nothing looks it up):
   ``awaiting_disbursement`` (no disbursement counted and dated on or before
   ``today``), ``repaid``, ``written_off``, ``defaulted`` (rule 9), ``current`` (0 days
   past due), ``late`` (1 to ``grace_days``), ``delinquent`` (more, with ``bucket``
   ``1-30``, ``31-60``, ``61-90`` or ``90+`` by days past due). ``default_allowed`` says
   a default notice given today would count: the state has a ``default`` edge in
   ``TRANSITIONS`` and days past due >= ``default_days``.
9. Notices (dated on or before ``today``). A ``default`` counts if given by the holder
   at its date (else ``not_holder``) when the loan is at least ``default_days`` past due
   at that date, counting the receipts dated on or before it (else
   ``default_not_allowed``). A ``writeoff`` counts if given by the holder at its date
   after a counted default dated on or before it (else ``not_holder``,
   ``not_defaulted``). A ``dispute`` by the borrower or anyone in ``holders`` (the
   contract's lender and the ``to`` of every valid transfer) is listed in ``disputes``
   (else ``not_party``) and changes nothing. Another kind is ``bad_notice``. Once
   counted, a default or writeoff stays: paying up afterwards makes the loan ``repaid``
   only when it is paid off.
10. The result depends on the inputs as sets: every choice above is made by number,
    date and id, never by the order of the lists.
11. Moves. ``state`` is the end of a run of ``TRANSITIONS`` (``step``) from
    ``awaiting_disbursement`` over the events of the days from the disbursement to
    ``today``, in date order, and within one day in the order of ``EVENTS``:

    - ``disbursed`` on the disbursement's date;
    - at most one *money event*, when days past due at the end of the day, against the
      end of the day before (0 before the disbursement), crosses 0 or ``grace_days``:
      ``caught_up`` (from 1 or more to 0), ``partly_caught_up`` (from more than
      ``grace_days`` to 1..``grace_days``), ``overdue`` (from 0 to 1..``grace_days``),
      ``past_grace`` (from at most ``grace_days`` to more);
    - ``default`` on ``defaulted_on`` and ``writeoff`` on ``written_off_on`` (rule 9);
    - ``repaid`` on ``repaid_on`` (rule 7).

    An event with no edge from the current state leaves the state as it is. That
    happens only in ``STEADY`` (``defaulted``, ``written_off``, ``repaid``): the money no
    longer moves them, and a writeoff after the loan is repaid changes nothing; ``step``
    asserts it. This is why the run ends where rule 8 says: ``awaiting_disbursement``
    until the disbursement's day; the money events keep ``current``, ``late`` and
    ``delinquent`` in step with days past due; a counted default meets ``late`` or
    ``delinquent`` (it is judged on its day's days past due, after that day's
    repayments); a writeoff meets ``defaulted``, or ``repaid`` which ignores it; and
    ``repaid`` comes last in its day and is final.

    Days past due change only on a *sweep day*: the disbursement, a repayment's date,
    and for each installment the day after it falls due and the day after its grace
    ends (between those, the oldest unpaid installment stays the same and its days past
    due grow by one a day). The run looks at those days, the dates of the default and
    writeoff notices (rule 9 judges a default by days past due on its date) and
    ``today``, nothing else (and, with amendments, rule 12's days).
12. Amendments (amendment.py: new ``rate_bp``, ``term``, ``schedule``, ``period_days``
    from ``date``, signed by borrower and holder). Only those whose ``loan`` is this
    loan are looked at; one id is one amendment. An amendment with ``after = k`` is made
    between receipts ``k`` and ``k + 1``, after the transfers made there (rule 3).
    Invalid, with the first code that applies: ``wrong_signer`` unless signed by exactly
    its ``borrower`` and ``holder``; ``not_party`` if ``borrower`` is not the contract's;
    ``not_holder`` if ``holder`` does not hold the claim at that point; ``too_many`` past
    ``MAX_AMENDMENTS``; ``bad_date`` if dated before receipt ``k``, the last transfer
    applied by then, or the previous amendment that may count; the schedule's code if
    its terms make no schedule from its date; ``not_reached`` while ``k`` is more than
    the counted receipts. Of the valid ones after receipt ``k`` the lowest id may count;
    the others are rejected with ``conflict`` (so a second amendment needs a receipt
    in between).

    It takes effect (the *effective day*) on its date, or on the date of receipt
    ``k + 1`` if that is counted and earlier; one whose effective day is after
    ``today`` has not taken effect (it is not listed). On that day, after the receipts
    up to ``k`` and before ``k + 1`` (and the fees of graces ended before it, rule 6),
    it counts unless the loan is repaid or a default dated before that day counts (rule
    9): ``bad_state``. When it counts, the loan continues under its terms: every
    installment not fully paid keeps what was paid of it, owes nothing more and is
    ``rescheduled`` (rows are only added: their numbers stay), unpaid fees stay owed, the unpaid interest of the
    installments fallen due by then (the *arrears*) stays owed, due on the amendment's
    date (an installment of its own, interest only), and the outstanding principal is
    repaid by ``schedule(outstanding, rate_bp, term, schedule, date, period_days)``,
    whose principal parts sum to it. Interest of installments not fallen due is
    replaced by the new schedule's. Days past due then follow the new installments
    (rule 11's money events: one that leaves nothing past due gives ``caught_up``).
    ``amendments`` lists those counted, in order; with none the state is the
    contract's alone. Several apply one after the other, each to what the last left.

Cost: with I installments (at most ``schedule.MAX_PERIODS``), R counted receipts, T
transfers and N notices, ``loan_state`` takes O(R*I) for the money (each repayment walks
the installments, as before rule 11), O(S log S) for the S <= 2*I + R + N + 2 sweep
days (days past due is O(1) amortized there: the oldest unpaid installment only moves
forward), and O(N*T) for the notices. No loop runs per calendar day. Each of the A <=
``MAX_AMENDMENTS`` amendments that take effect adds its schedule's installments (I
grows to at most (A + 1) * (MAX_PERIODS + 1)) and O(N*T) for the defaults before it.

The states, and how the state moves as ``today`` advances (``TRANSITIONS``; several
events can happen on one day, so one day may take several edges):

=========================  ==================================  ======================  ==================
state                      meaning                             entered by              left by
=========================  ==================================  ======================  ==================
``awaiting_disbursement``  agreed; the money is not lent yet   the agreement           ``disbursed``
``current``                nothing is past due                 ``disbursed``,          ``overdue``,
                                                               ``caught_up``           ``past_grace``,
                                                                                       ``repaid``
``late``                   past due, within the grace days     ``overdue``,            ``caught_up``,
                                                               ``partly_caught_up``    ``past_grace``,
                                                                                       ``default``,
                                                                                       ``repaid``
``delinquent``             past due beyond the grace days      ``past_grace``          ``caught_up``,
                                                                                       ``partly_caught_up``,
                                                                                       ``default``,
                                                                                       ``repaid``
``defaulted``              the holder declared a default       ``default``             ``writeoff``,
                                                                                       ``repaid``
``written_off``            the holder gave up collecting       ``writeoff``            ``repaid``
``repaid``                 everything owed is paid (final)     ``repaid``              --
=========================  ==================================  ======================  ==================
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any, Callable, Iterable, NamedTuple, TypeVar

from .contract import contract_schedule, parse_date
from ..errors import ProtocolError
from .schedule import Installment

# -- the states of a loan -------------------------------------------------------------------

AWAITING = "awaiting_disbursement"
CURRENT = "current"
LATE = "late"
DELINQUENT = "delinquent"
DEFAULTED = "defaulted"
WRITTEN_OFF = "written_off"
REPAID = "repaid"

STATES = (AWAITING, CURRENT, LATE, DELINQUENT, DEFAULTED, WRITTEN_OFF, REPAID)

TRANSITIONS: dict[tuple[str, str], str] = {
    (AWAITING, "disbursed"): CURRENT,  # the disbursement receipt's date is reached
    (CURRENT, "overdue"): LATE,  # an installment passes its due day unpaid (grace_days >= 1)
    (CURRENT, "past_grace"): DELINQUENT,  # ... with grace_days 0
    (LATE, "past_grace"): DELINQUENT,  # an installment passes its grace unpaid
    (LATE, "caught_up"): CURRENT,  # repayments cover everything past due
    (DELINQUENT, "caught_up"): CURRENT,
    (DELINQUENT, "partly_caught_up"): LATE,  # the oldest unpaid installment is now within grace
    (LATE, "default"): DEFAULTED,  # a default notice that counts (rule 9)
    (DELINQUENT, "default"): DEFAULTED,
    (DEFAULTED, "writeoff"): WRITTEN_OFF,
    (CURRENT, "repaid"): REPAID,  # all principal paid (rule 7)
    (LATE, "repaid"): REPAID,
    (DELINQUENT, "repaid"): REPAID,
    (DEFAULTED, "repaid"): REPAID,
    (WRITTEN_OFF, "repaid"): REPAID,
}
"""``(state, event) -> next state``: the only moves a loan makes as ``today`` advances."""

FINAL = frozenset(s for s in STATES if not any(k[0] == s for k in TRANSITIONS))

EVENTS = ("disbursed", "caught_up", "partly_caught_up", "overdue", "past_grace", "default", "writeoff", "repaid")
"""Every event of ``TRANSITIONS``, in the order they apply within one day (rule 11)."""

MONEY_EVENTS = frozenset({"caught_up", "partly_caught_up", "overdue", "past_grace"})
"""What days past due crossing 0 or ``grace_days`` is called (rule 11); one a day at most."""

STEADY = frozenset({DEFAULTED, WRITTEN_OFF, REPAID})
"""The states that stay as they are on an event they have no edge for (rule 11)."""


def step(state: str, event: str) -> str:
    """The state after ``event`` in ``state`` by ``TRANSITIONS``; ``state`` itself if the
    table has no such edge, which rule 11 allows only in a ``STEADY`` state."""
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        assert event in EVENTS and state in STEADY, f"no edge from {state} on {event}"
        return state
    return nxt


class Move(NamedTuple):
    """One event of rule 11's run: on ``day``, ``event`` took the loan from ``before`` to
    ``after`` (the same state when it has no edge for it)."""

    day: date
    event: str
    before: str
    after: str

BUCKETS = ((30, "1-30"), (60, "31-60"), (90, "61-90"))
"""Delinquency buckets by days past due: up to 30, up to 60, up to 90, then ``90+``."""

MAX_AMENDMENTS = 24
"""The most amendments that count for one loan (rule 12): each may add up to
``schedule.MAX_PERIODS`` installments, and every repayment walks them all."""


# -- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedReceipt:
    """A receipt document (contract.py, rule 3) and the one key that signed it."""

    id: bytes
    doc: dict
    signer: bytes


@dataclass(frozen=True)
class SignedTransfer:
    """A transfer document (contract.py, rule 4) and the keys that signed it."""

    id: bytes
    doc: dict
    signers: frozenset[bytes]


@dataclass(frozen=True)
class SignedAmendment:
    """An amendment document (amendment.py, rule 1) and the keys that signed it."""

    id: bytes
    doc: dict
    signers: frozenset[bytes]


@dataclass(frozen=True)
class Notice:
    """A ``default``, ``writeoff`` or ``dispute`` given by ``by`` on ``date``."""

    kind: str
    by: bytes
    date: date
    reason: str | None
    id: bytes


# -- outputs --------------------------------------------------------------------------------


class Rejection(NamedTuple):
    """A receipt, transfer or notice that does not count, and why (a stable code)."""

    id: bytes
    code: str
    message: str


class Amended(NamedTuple):
    """A counted amendment (rule 12) as it applied: on ``effective``, after receipt
    ``after``, ``outstanding_principal`` was re-amortized into the rows ``first_row`` to
    ``first_row + rows - 1`` (``Row.n``), counting from ``start`` (the document's date);
    ``arrears`` of interest fallen due and unpaid stayed owed, due on ``start`` (a row of
    its own, just before those, when it is not 0)."""

    id: bytes
    after: int
    start: date
    effective: date
    outstanding_principal: int
    arrears: int
    first_row: int
    rows: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id.hex(), "after": self.after, "date": self.start.isoformat(),
                "effective": self.effective.isoformat(), "outstanding_principal": self.outstanding_principal,
                "arrears": self.arrears, "first_row": self.first_row, "rows": self.rows}


class Dispute(NamedTuple):
    id: bytes
    by: bytes
    date: date
    reason: str | None


@dataclass(frozen=True)
class Row:
    """One installment at the state's day: what the schedule asks and what was paid."""

    n: int
    due: date
    payment: int
    interest: int
    principal: int
    paid_interest: int
    paid_principal: int
    interest_waived: int
    fee_charged: int
    fee_paid: int
    status: str
    """``paid``; ``waived`` (paid off early, interest waived); ``upcoming`` (due after the
    day); ``due`` or ``partial`` (fallen due, within its grace, nothing or something paid);
    ``late`` (not fully paid by the end of its grace); ``rescheduled`` (an amendment
    took what it still owed into a new schedule, rule 12: it keeps what was paid)."""

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "due": self.due.isoformat(), "payment": self.payment, "interest": self.interest,
                "principal": self.principal, "paid_interest": self.paid_interest,
                "paid_principal": self.paid_principal, "interest_waived": self.interest_waived,
                "fee_charged": self.fee_charged, "fee_paid": self.fee_paid, "status": self.status}


@dataclass(frozen=True)
class LoanState:
    """A loan at the end of ``as_of``, by the rules of this module."""

    loan: bytes
    as_of: date
    state: str
    days_past_due: int
    bucket: str | None
    holder: bytes
    holders: tuple[bytes, ...]
    """The contract's lender, then the ``to`` of every valid transfer in the order they
    apply (rule 3): everyone who holds, held or is to hold the claim. With the borrower,
    the parties whose dispute is listed (rule 9). Not in ``to_json`` (``transfers`` is)."""
    default_allowed: bool
    rows: tuple[Row, ...]
    principal_paid: int
    interest_paid: int
    interest_waived: int
    fees_charged: int
    fees_paid: int
    outstanding_principal: int
    due_now: int
    """What to pay today to owe nothing past due: unpaid fees, and the unpaid interest and
    principal of the installments due on or before today."""
    payoff: int
    """What to pay today to owe nothing at all (later interest is then waived)."""
    overpaid: int
    counted: tuple[bytes, ...]
    transfers: tuple[bytes, ...]
    rejected: tuple[Rejection, ...]
    disputes: tuple[Dispute, ...]
    disbursed_on: date | None
    repaid_on: date | None
    defaulted_on: date | None
    written_off_on: date | None
    amendments: tuple[Amended, ...] = ()
    """The counted amendments that took effect by ``as_of`` (rule 12), in order."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: bytes as lowercase hex, dates as ``YYYY-MM-DD``."""

        def day(d: date | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "loan": self.loan.hex(), "as_of": self.as_of.isoformat(), "state": self.state,
            "days_past_due": self.days_past_due, "bucket": self.bucket, "holder": self.holder.hex(),
            "default_allowed": self.default_allowed,
            "principal_paid": self.principal_paid, "interest_paid": self.interest_paid,
            "interest_waived": self.interest_waived, "fees_charged": self.fees_charged,
            "fees_paid": self.fees_paid, "outstanding_principal": self.outstanding_principal,
            "due_now": self.due_now, "payoff": self.payoff, "overpaid": self.overpaid,
            "disbursed_on": day(self.disbursed_on), "repaid_on": day(self.repaid_on),
            "defaulted_on": day(self.defaulted_on), "written_off_on": day(self.written_off_on),
            "rows": [r.to_json() for r in self.rows],
            "counted": [i.hex() for i in self.counted],
            "transfers": [i.hex() for i in self.transfers],
            "rejected": [{"id": r.id.hex(), "code": r.code, "message": r.message} for r in self.rejected],
            "disputes": [{"id": d.id.hex(), "by": d.by.hex(), "date": d.date.isoformat(), "reason": d.reason}
                         for d in self.disputes],
            "amendments": [a.to_json() for a in self.amendments],
        }


# -- small helpers --------------------------------------------------------------------------

T = TypeVar("T")


def _day(text: Any) -> date | None:
    try:
        return parse_date(text)
    except ProtocolError:
        return None


def _short(key: bytes) -> str:
    return key.hex()[:16]


def _unique(items: Iterable[T], rank: Callable[[T], Any]) -> dict[bytes, T]:
    """One item per id. Ids are hashes of the payload, so copies differ at most in their
    signers; the lowest ``rank`` is kept so that the choice never depends on list order."""
    out: dict[bytes, T] = {}
    for x in items:
        old = out.get(x.id)  # type: ignore[attr-defined]
        if old is None or rank(x) < rank(old):
            out[x.id] = x  # type: ignore[attr-defined]
    return out


def bucket_of(days_past_due: int) -> str:
    """The delinquency bucket of a number of days past due (1 or more)."""
    return next((name for top, name in BUCKETS if days_past_due <= top), "90+")


# -- rules 2 and 3: which receipts and transfers count ------------------------------------------


class _Candidate(NamedTuple):
    """The one amendment that may count after receipt ``after`` (rule 12), and the day it
    takes effect: its date, or the date of the next counted receipt if that is earlier."""

    after: int
    amendment: SignedAmendment
    start: date
    effective: date


@dataclass
class _Sequence:
    counted: list[SignedReceipt]
    transfers: list[SignedTransfer]  # the valid ones, in the order they apply
    rejected: list[Rejection]
    candidates: list[_Candidate] = field(default_factory=list)  # rule 12, by after


def _receipt_fault(r: SignedReceipt, c: dict, holder: bytes, seq: _Sequence) -> Rejection | None:
    """Why receipt ``r`` cannot be the next counted one (rule 2), or None."""
    d, n = r.doc, r.doc["n"]
    if r.signer != d["payee"]:
        return Rejection(r.id, code="wrong_signer",
                         message=f"receipt {n} is signed by {_short(r.signer)}, not its payee")
    if d["what"] == "disbursement":
        if seq.counted:
            return Rejection(r.id, code="already_disbursed", message=f"receipt {n}: the loan is already disbursed")
        if d["payer"] != c["lender"]:
            return Rejection(r.id, code="wrong_payer", message=f"receipt {n}: a disbursement is paid by the lender")
        if d["payee"] != c["borrower"]:
            return Rejection(r.id, code="wrong_payee", message=f"receipt {n}: a disbursement is paid to the borrower")
        if d["amount"] != c["principal"]:
            return Rejection(r.id, code="wrong_amount",
                             message=f"receipt {n}: disbursed {d['amount']}, the principal is {c['principal']}")
    else:
        if not seq.counted:
            return Rejection(r.id, code="not_disbursed", message=f"receipt {n}: a repayment before the disbursement")
        if d["payer"] != c["borrower"]:
            return Rejection(r.id, code="wrong_payer", message=f"receipt {n}: a repayment is paid by the borrower")
        if d["payee"] != holder:
            return Rejection(r.id, code="wrong_payee",
                             message=f"receipt {n}: paid to {_short(d['payee'])}, "
                                     f"the claim is held by {_short(holder)}")
    day, start = _day(d["date"]), parse_date(c["start"])
    last = _day(seq.counted[-1].doc["date"]) if seq.counted else start
    if day is None or day < start or day < last:
        return Rejection(r.id, code="bad_date",
                         message=f"receipt {n} is dated {d['date']}, before {max(start, last).isoformat()}")
    return None


def _count_next(candidates: list[SignedReceipt], c: dict, holder: bytes, seq: _Sequence) -> bool:
    """Count the valid candidate numbered ``len(counted) + 1`` with the lowest id, reject
    the rest; False if none is valid (the number is missing)."""
    valid = []
    for r in sorted(candidates, key=lambda r: r.id):
        fault = _receipt_fault(r, c, holder, seq)
        if fault:
            seq.rejected.append(fault)
        else:
            valid.append(r)
    if not valid:
        return False
    seq.counted.append(valid[0])
    for r in valid[1:]:
        seq.rejected.append(Rejection(r.id, code="conflict", message=f"receipt {r.doc['n']}: another valid "
                                                                      "receipt with this number has a lower id"))
    return True


def _apply_transfers(group: list[SignedTransfer], holder: bytes, c: dict, seq: _Sequence) -> bytes:
    """Apply the transfers made after the same number of receipts (rule 3); the holder after them."""
    waiting = []
    for t in sorted(group, key=lambda t: t.id):
        d = t.doc
        if t.signers != {d["from"], d["to"]}:
            seq.rejected.append(Rejection(t.id, code="wrong_signer",
                                          message="a transfer is signed by exactly its from and to"))
        elif d["to"] == c["borrower"]:
            seq.rejected.append(Rejection(t.id, code="bad_transfer",
                                          message="a claim is not transferred to the borrower"))
        else:
            waiting.append(t)
    start = parse_date(c["start"])
    # Again and again the lowest id that the current holder made: A->B, B->C after the same
    # receipt both apply, whichever id is lower.
    while (t := next((t for t in waiting if t.doc["from"] == holder), None)) is not None:
        waiting.remove(t)
        day = _day(t.doc["date"])
        last = _day(seq.transfers[-1].doc["date"]) if seq.transfers else start
        if day is None or day < start or day < last:
            seq.rejected.append(Rejection(t.id, code="bad_date", message=f"transfer dated {t.doc['date']}, "
                                                                          f"before {max(start, last).isoformat()}"))
            continue
        seq.transfers.append(t)
        holder = t.doc["to"]
    for t in waiting:
        seq.rejected.append(Rejection(t.id, code="not_holder", message=f"{_short(t.doc['from'])} does not hold "
                                                                        f"the claim after receipt {t.doc['after']}"))
    return holder


def _amendment_fault(a: SignedAmendment, c: dict, holder: bytes, seq: _Sequence) -> Rejection | None:
    """Why amendment ``a`` cannot be the one after the receipts counted so far (rule 12,
    the checks on the documents alone), or None."""
    from .amendment import amendment_schedule

    d = a.doc
    if a.signers != {d["borrower"], d["holder"]}:
        return Rejection(a.id, code="wrong_signer", message="an amendment is signed by exactly its borrower and holder")
    if d["borrower"] != c["borrower"]:
        return Rejection(a.id, code="not_party", message="the amendment names another borrower than the contract's")
    if d["holder"] != holder:
        return Rejection(a.id, code="not_holder", message=f"{_short(d['holder'])} does not hold the claim after "
                                                          f"receipt {d['after']}")
    if len(seq.candidates) >= MAX_AMENDMENTS:
        return Rejection(a.id, code="too_many", message=f"a loan is amended at most {MAX_AMENDMENTS} times")
    day = _day(d["date"])
    floor = max([_day(seq.counted[-1].doc["date"])]
                + [_day(t.doc["date"]) for t in seq.transfers[-1:]]
                + [x.start for x in seq.candidates[-1:]])
    if day is None or day < floor:
        return Rejection(a.id, code="bad_date", message=f"amendment dated {d['date']}, before {floor.isoformat()}")
    try:
        amendment_schedule(d, 1)  # the terms make a schedule from that day (principal aside)
    except ProtocolError as e:
        return Rejection(a.id, code=e.code, message=f"amendment: {e.message}")
    return None


def _choose_amendment(group: list[SignedAmendment], holder: bytes, c: dict, seq: _Sequence) -> None:
    """Of the amendments made after the receipts counted so far, the one with the lowest
    id that passes ``_amendment_fault`` is the candidate; the others are rejected (rule 12)."""
    chosen = None
    for a in sorted(group, key=lambda a: a.id):
        fault = _amendment_fault(a, c, holder, seq)
        if fault:
            seq.rejected.append(fault)
        elif chosen is None:
            chosen = a
        else:
            seq.rejected.append(Rejection(a.id, code="conflict", message=f"amendment after receipt {a.doc['after']}: "
                                                                          "another one with a lower id counts"))
    if chosen is not None:
        day = parse_date(chosen.doc["date"])
        seq.candidates.append(_Candidate(len(seq.counted), chosen, day, day))


def _sequence(loan: bytes, c: dict, receipts: Iterable[SignedReceipt],
              transfers: Iterable[SignedTransfer], amendments: Iterable[SignedAmendment] = ()) -> _Sequence:
    """The receipts that count, in order, the transfers that apply (rules 2 and 3), and
    the amendments that may count (rule 12: one per point, the money decides the rest)."""
    by_n: dict[int, list[SignedReceipt]] = {}
    for r in _unique((r for r in receipts if r.doc.get("loan") == loan),
                     lambda r: (r.signer != r.doc["payee"], r.signer)).values():
        by_n.setdefault(r.doc["n"], []).append(r)
    by_after: dict[int, list[SignedTransfer]] = {}
    for t in _unique((t for t in transfers if t.doc.get("loan") == loan),
                     lambda t: (t.signers != {t.doc["from"], t.doc["to"]}, sorted(t.signers))).values():
        by_after.setdefault(t.doc["after"], []).append(t)
    amended: dict[int, list[SignedAmendment]] = {}
    for a in _unique((a for a in amendments if a.doc.get("loan") == loan),
                     lambda a: (a.signers != {a.doc["borrower"], a.doc["holder"]}, sorted(a.signers))).values():
        amended.setdefault(a.doc["after"], []).append(a)

    seq = _Sequence([], [], [])
    holder = c["lender"]
    while True:
        holder = _apply_transfers(by_after.pop(len(seq.counted), []), holder, c, seq)
        if seq.counted:  # (an amendment's after is at least 1: it follows the disbursement)
            _choose_amendment(amended.pop(len(seq.counted), []), holder, c, seq)
        if not _count_next(by_n.pop(len(seq.counted) + 1, []), c, holder, seq):
            break
    missing = len(seq.counted) + 1
    for n in sorted(by_n):
        for r in sorted(by_n[n], key=lambda r: r.id):
            seq.rejected.append(Rejection(r.id, code="gap", message=f"receipt {n} waits for receipt {missing}"))
    for after in sorted(by_after):
        for t in sorted(by_after[after], key=lambda t: t.id):
            seq.rejected.append(Rejection(t.id, code="not_reached",
                                          message=f"a transfer after receipt {after}; {len(seq.counted)} are counted"))
    for after in sorted(amended):
        for a in sorted(amended[after], key=lambda a: a.id):
            seq.rejected.append(Rejection(a.id, code="not_reached", message=f"an amendment after receipt {after}; "
                                                                            f"{len(seq.counted)} are counted"))
    for i, x in enumerate(seq.candidates):  # in effect on its date, or at the next receipt if that is earlier
        if x.after < len(seq.counted):
            seq.candidates[i] = x._replace(effective=min(x.start, parse_date(seq.counted[x.after].doc["date"])))
    return seq


def _holder_at(c: dict, seq: _Sequence) -> Callable[[date], bytes]:
    """The holder at a date (rule 3): valid transfers are in date order, so a prefix applies."""

    def holder(d: date) -> bytes:
        h = c["lender"]
        for t in seq.transfers:
            if parse_date(t.doc["date"]) > d:
                break
            h = t.doc["to"]
        return h

    return holder


# -- rules 5 to 7: the money ------------------------------------------------------------------


@dataclass
class _Line:
    """One installment as payments reach it."""

    inst: Installment
    falls_due: date  # rule 5: its due date, or the disbursement if later
    paid_interest: int = 0
    paid_principal: int = 0
    waived: int = 0
    fee: int = 0
    fee_paid: int = 0
    assessed: bool = False
    rescheduled: bool = False  # an amendment took what it owed into a new schedule (rule 12)

    def unpaid(self) -> int:
        """Interest and principal still owed (fees apart)."""
        return (self.inst.interest - self.waived - self.paid_interest) + (self.inst.principal - self.paid_principal)


class _Book:
    """The installments of a disbursed loan, with repayments applied in date order."""

    def __init__(self, plan: list[Installment], disbursed_on: date, grace_days: int, late_fee: int) -> None:
        self.lines = [_Line(i, max(i.due, disbursed_on)) for i in plan]
        self.grace_days, self.late_fee = grace_days, late_fee
        self.overpaid = 0
        self.repaid_on: date | None = None
        self._oldest = 0  # no line before it is unpaid; what is paid or waived stays so

    def charge_fees(self, day: date) -> None:
        """Charge the fee of every installment whose grace ended before ``day`` unpaid (rule 6)."""
        for line in self.lines:
            # Day arithmetic instead of due + grace: that sum may pass the year 9999.
            if not line.assessed and (day - line.falls_due).days > self.grace_days:
                line.assessed = True  # judged once, at the end of its grace
                if line.unpaid():
                    line.fee = self.late_fee

    def pay(self, amount: int, day: date) -> None:
        """Allocate a repayment dated ``day`` (rule 7), after charging the fees due by then."""
        self.charge_fees(day)
        # (A loop stops once nothing is left to allocate: amount never goes below 0. The
        # lines before the oldest unpaid one owe no interest or principal: skipped.)
        owing = self.lines[self._oldest:]
        for line in self.lines:
            if not amount:
                break
            amount -= (x := min(amount, line.fee - line.fee_paid))
            line.fee_paid += x
        for line in owing:
            if not amount or line.falls_due > day:
                break  # lines are in due order
            amount -= (x := min(amount, line.inst.interest - line.waived - line.paid_interest))
            line.paid_interest += x
        # Lines are in due order, so this is (3) the principal of those due, then (4) prepayment.
        for line in owing:
            if not amount:
                break
            amount -= (x := min(amount, line.inst.principal - line.paid_principal))
            line.paid_principal += x
        if self.repaid_on is None and all(line.paid_principal == line.inst.principal for line in owing):
            self.repaid_on = day
            for line in self.lines:
                if line.falls_due > day:
                    line.waived = line.inst.interest - line.paid_interest
        self.overpaid += amount

    def amend(self, plan: list[Installment], effective: date, start: date) -> int:
        """Rule 12 at an amendment in effect on ``effective`` whose new installments are
        ``plan`` (counting from ``start``): every line keeps what was paid of it and owes
        nothing more; the interest of those fallen due by ``effective`` and unpaid (the
        arrears) is owed on ``start``. Lines are only added, so row numbers stay. The
        arrears (a line of their own before ``plan``'s, when not 0)."""
        assert self.repaid_on is None, "a repaid loan is not amended"
        assert sum(i.principal for i in plan) == self.outstanding(), "the new installments repay what is owed"
        arrears = 0
        for line in self.lines:
            if line.falls_due <= effective:
                arrears += line.inst.interest - line.waived - line.paid_interest
            if line.unpaid():
                line.rescheduled = True
                paid = line.paid_interest + line.paid_principal
                line.inst = replace(line.inst, payment=paid, interest=line.paid_interest + line.waived,
                                    principal=line.paid_principal)
        self._oldest = len(self.lines)  # every line so far is paid now: unpaid() is 0
        if arrears:
            self.lines.append(_Line(Installment(start, arrears, arrears, 0, sum(i.principal for i in plan)), start))
        self.lines.extend(_Line(i, i.due) for i in plan)  # due after start, which is after the disbursement
        return arrears

    def oldest_unpaid(self) -> _Line | None:
        """The first installment not fully paid. Payments and waivers only ever lower what
        a line owes, so the search resumes where it stopped: O(I) over a book's life."""
        while self._oldest < len(self.lines) and not self.lines[self._oldest].unpaid():
            self._oldest += 1
        return self.lines[self._oldest] if self._oldest < len(self.lines) else None

    def days_past_due(self, day: date) -> int:
        """Rule 8: days since the oldest installment not fully paid fell due, if before
        ``day`` (for the payments allocated so far)."""
        oldest = self.oldest_unpaid()
        return (day - oldest.falls_due).days if oldest and oldest.falls_due < day else 0

    def fees_unpaid(self) -> int:
        return sum(line.fee - line.fee_paid for line in self.lines)

    def due_now(self, day: date) -> int:
        return self.fees_unpaid() + sum(line.unpaid() for line in self.lines if line.falls_due <= day)

    def payoff(self, day: date) -> int:
        unpaid_interest = sum(line.inst.interest - line.waived - line.paid_interest
                              for line in self.lines if line.falls_due <= day)
        return self.fees_unpaid() + unpaid_interest + self.outstanding()

    def outstanding(self) -> int:
        return sum(line.inst.principal - line.paid_principal for line in self.lines)

    def status(self, line: _Line, day: date) -> str:
        if line.rescheduled:
            return "rescheduled"
        if line.waived:
            return "waived"
        if not line.unpaid():
            return "paid"
        if line.falls_due > day:
            return "upcoming"
        if (day - line.falls_due).days > self.grace_days:
            return "late"
        return "partial" if line.paid_interest or line.paid_principal else "due"


def _line_days(lines: Iterable[_Line], grace: int, today: date) -> Iterable[date]:
    """The sweep days of installments (rule 11): the day after each falls due and the day
    after its grace ends, up to ``today``."""
    for line in lines:
        # Compared by day counts first: falls_due + grace may pass the year 9999.
        late_by = (today - line.falls_due).days
        if late_by >= 1:
            yield line.falls_due + timedelta(days=1)
        if late_by > grace:
            yield line.falls_due + timedelta(days=grace + 1)


def _sweep_days(book: _Book, payments: list[tuple[date, int]], notice_days: Iterable[date], disbursed_on: date,
                today: date) -> list[date]:
    """Rule 11's sweep days from the disbursement to ``today``, in order (those of the
    installments an amendment brings are added when it applies)."""
    days = {disbursed_on, today}
    days.update(d for d, _ in payments)
    days.update(d for d in notice_days if disbursed_on <= d <= today)
    days.update(_line_days(book.lines, book.grace_days, today))
    return sorted(days)


@dataclass
class _Amending:
    """Rule 12 in the money: the candidates in effect by ``today``, and what came of them."""

    given: list[Notice]  # the notices given by today: a default before an amendment stops it
    applied: list[Amended] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def _money(plan: list[Installment], c: dict, seq: _Sequence, disbursed_on: date, today: date,
           notice_days: Iterable[date], amending: _Amending | None = None) -> tuple[_Book, list[tuple[date, int]]]:
    """Rules 5 to 8 (and 12) as time passes: the book at the end of ``today`` (repayments
    and amendments in effect on or before it, in sequence order, then fees, rule 6), and
    days past due at the end of each sweep day."""
    book = _Book(plan, disbursed_on, c["grace_days"], c["late_fee"])
    payments = []
    for r in seq.counted[1:]:
        day = parse_date(r.doc["date"])
        if day > today:
            break  # counted dates never decrease (rule 2)
        payments.append((day, r.doc["amount"]))
    # Steps in sequence order, which is date order: an amendment after receipt k takes
    # effect on or after receipt k's date and on or before receipt k + 1's (rule 12).
    cands = [x for x in seq.candidates if x.effective <= today] if amending is not None else []
    steps = _in_sequence(payments, cands)
    days = _sweep_days(book, payments, notice_days, disbursed_on, today)
    if cands:
        days = sorted(set(days).union(x.effective for x in cands))  # (a sorted list is a heap)
    seen = set(days)
    timeline: list[tuple[date, int]] = []
    k = 0
    while days:
        day = heapq.heappop(days)
        while k < len(steps) and steps[k][0] <= day:
            when, amount, x = steps[k]
            if x is None:
                book.pay(amount, when)
            else:
                assert amending is not None
                for d in _amend(book, x, c, seq, timeline, amending, today):
                    if d > day and d not in seen:  # the new installments' sweep days
                        seen.add(d)
                        heapq.heappush(days, d)
            k += 1
        timeline.append((day, book.days_past_due(day)))
    assert k == len(steps), "every payment and amendment date is a sweep day"
    book.charge_fees(today)
    return book, timeline


def _in_sequence(payments: list[tuple[date, int]],
                 cands: list[_Candidate]) -> list[tuple[date, int, _Candidate | None]]:
    """Payments ``(day, amount, None)`` and amendments ``(effective, 0, candidate)`` in
    sequence order: the amendment after receipt k comes after receipt k and before
    receipt k + 1 (payment i is receipt i + 2; receipt 1 is the disbursement). That is
    date order too: an amendment takes effect between the two receipts' dates."""
    out: list[tuple[date, int, _Candidate | None]] = []
    by_after = {x.after: x for x in cands}
    for i, (d, amount) in enumerate(payments):
        if i + 1 in by_after:
            x = by_after.pop(i + 1)
            out.append((x.effective, 0, x))
        out.append((d, amount, None))
    assert all(after == len(payments) + 1 for after in by_after), "an amendment in effect follows receipts in effect"
    out.extend((x.effective, 0, x) for x in by_after.values())
    assert all(out[i][0] <= out[i + 1][0] for i in range(len(out) - 1)), "sequence order is date order"
    return out


def _amend(book: _Book, x: _Candidate, c: dict, seq: _Sequence, timeline: list[tuple[date, int]],
           amending: _Amending, today: date) -> list[date]:
    """Rule 12 at candidate ``x``'s effective day: it counts unless the loan is repaid or
    a default counts dated before that day (judged as rule 9 does, on the days past due
    so far); then the book continues under its terms. The new sweep days."""
    from .amendment import amendment_schedule

    a, day = x.amendment, x.effective
    book.charge_fees(day)  # the fees of graces ended before it, on the old installments
    if book.repaid_on is not None:
        amending.rejected.append(Rejection(a.id, code="bad_state", message="the loan is repaid: there is nothing "
                                                                           "left to reschedule"))
        return []
    before = [n for n in amending.given if n.date < day]
    if before:
        # Days past due at every notice day before ``day``: notice days are sweep days, and
        # the ones before the disbursement (not in the timeline) have none.
        dpd_at = dict(timeline)
        if _notices(before, c, seq, lambda d: dpd_at.get(d, 0)).defaulted_on is not None:
            amending.rejected.append(Rejection(a.id, code="bad_state", message="the loan was declared in default "
                                                                               "before the amendment"))
            return []
    outstanding = book.outstanding()
    plan = amendment_schedule(a.doc, outstanding)  # its terms were checked (rule 12): this does not raise
    arrears = book.amend(plan, day, x.start)
    first = len(book.lines) - len(plan) + 1
    amending.applied.append(Amended(a.id, x.after, x.start, day, outstanding, arrears, first, len(plan)))
    added = book.lines[first - 1 - (1 if arrears else 0):]  # the arrears line, if any, and the new ones
    return list(_line_days(added, book.grace_days, today))


def _band(days_past_due: int, grace_days: int) -> int:
    """0: nothing past due; 1: within the grace days; 2: beyond them."""
    return 0 if days_past_due == 0 else 1 if days_past_due <= grace_days else 2


def _money_event(before: int, after: int, grace_days: int) -> str | None:
    """The money event of a day whose days past due went from ``before`` to ``after`` (rule 11)."""
    a, b = _band(before, grace_days), _band(after, grace_days)
    if a == b:
        return None
    if b == 0:
        return "caught_up"
    if b == 1:
        return "overdue" if a == 0 else "partly_caught_up"
    return "past_grace"


def _moves(timeline: list[tuple[date, int]], grace_days: int, disbursed_on: date, repaid_on: date | None,
           defaulted_on: date | None, written_off_on: date | None) -> list[Move]:
    """Rule 11: the events of each sweep day, in ``EVENTS`` order, run through ``step``."""
    dated = {"disbursed": disbursed_on, "default": defaulted_on, "writeoff": written_off_on, "repaid": repaid_on}
    sweep = {day for day, _ in timeline}
    assert all(d is None or d in sweep for d in dated.values()), "every dated event falls on a sweep day"
    state, before, moves = AWAITING, 0, []
    for day, dpd in timeline:
        money = _money_event(before, dpd, grace_days)
        for event in EVENTS:
            if event == money or (event not in MONEY_EVENTS and dated[event] == day):
                nxt = step(state, event)
                moves.append(Move(day, event, state, nxt))
                state = nxt
        before = dpd
    return moves


# -- rule 9: notices ---------------------------------------------------------------------------


@dataclass
class _Notices:
    defaulted_on: date | None
    written_off_on: date | None
    disputes: list[Dispute]
    rejected: list[Rejection]


def _given(notices: Iterable[Notice], today: date) -> list[Notice]:
    """The notices given on or before ``today`` (rule 4), one per id, by date then id."""
    return sorted(_unique((x for x in notices if x.date <= today),
                          lambda x: (x.kind, x.by, x.date, x.reason or "")).values(),
                  key=lambda x: (x.date, x.id))


def _holders(c: dict, seq: _Sequence) -> tuple[bytes, ...]:
    return (c["lender"], *(t.doc["to"] for t in seq.transfers))


def _notices(given: list[Notice], c: dict, seq: _Sequence, days_past_due_at: Callable[[date], int]) -> _Notices:
    """Which of the notices ``given`` (``_given``) count (rule 9)."""
    holder_at = _holder_at(c, seq)
    parties = {c["borrower"], *_holders(c, seq)}
    out = _Notices(None, None, [], [])
    for x in given:  # defaults first: a writeoff needs one dated on or before it
        if x.kind != "default":
            continue
        if x.by != holder_at(x.date):
            out.rejected.append(Rejection(x.id, code="not_holder",
                                          message="a default is declared by the holder of the claim"))
        elif (dpd := days_past_due_at(x.date)) < c["default_days"]:
            out.rejected.append(Rejection(x.id, code="default_not_allowed",
                                          message=f"{dpd} days past due on {x.date.isoformat()}; "
                                                  f"the contract allows a default at {c['default_days']}"))
        elif out.defaulted_on is None:
            out.defaulted_on = x.date
    for x in given:
        if x.kind == "writeoff":
            if x.by != holder_at(x.date):
                out.rejected.append(Rejection(x.id, code="not_holder",
                                              message="a writeoff is made by the holder of the claim"))
            elif out.defaulted_on is None or out.defaulted_on > x.date:
                out.rejected.append(Rejection(x.id, code="not_defaulted",
                                              message="only a defaulted loan is written off"))
            elif out.written_off_on is None:
                out.written_off_on = x.date
        elif x.kind == "dispute":
            if x.by in parties:
                out.disputes.append(Dispute(x.id, x.by, x.date, x.reason))
            else:
                out.rejected.append(Rejection(x.id, code="not_party",
                                              message="a dispute is recorded by a party to the loan"))
        elif x.kind != "default":
            out.rejected.append(Rejection(x.id, code="bad_notice", message=f"unknown notice kind {x.kind!r}"))
    return out


# -- the entry point ----------------------------------------------------------------------------


def loan_state(loan_id: bytes, contract: dict, receipts: list[SignedReceipt], transfers: list[SignedTransfer],
               notices: list[Notice], today: date, amendments: Iterable[SignedAmendment] = ()) -> LoanState:
    """The state of loan ``loan_id`` (the id of ``contract``) at the end of ``today``, by the
    rules of this module. Depends only on the arguments, taken as sets; raises
    ``ProtocolError`` only for a contract whose schedule cannot be made. With no
    ``amendments`` (rule 12) it is what the contract alone gives."""
    return _evaluate(loan_id, contract, receipts, transfers, notices, today, amendments)[0]


def loan_moves(loan_id: bytes, contract: dict, receipts: list[SignedReceipt], transfers: list[SignedTransfer],
               notices: list[Notice], today: date, amendments: Iterable[SignedAmendment] = ()) -> tuple[Move, ...]:
    """Rule 11's run up to the end of ``today``, every event in order (those that leave
    the state as it was too); its last ``after`` is ``loan_state(...).state`` (nothing
    before the disbursement: then the state is ``awaiting_disbursement``). The moves up to
    a day never change when ``today`` is later."""
    return _evaluate(loan_id, contract, receipts, transfers, notices, today, amendments)[1]


def loan_evaluation(loan_id: bytes, contract: dict, receipts: list[SignedReceipt], transfers: list[SignedTransfer],
                    notices: list[Notice], today: date,
                    amendments: Iterable[SignedAmendment] = ()) -> tuple[LoanState, tuple[Move, ...]]:
    """``(loan_state(...), loan_moves(...))`` of the same arguments, from one run of the rules."""
    return _evaluate(loan_id, contract, receipts, transfers, notices, today, amendments)


def _evaluate(loan_id: bytes, c: dict, receipts: list[SignedReceipt], transfers: list[SignedTransfer],
              notices: list[Notice], today: date,
              amendments: Iterable[SignedAmendment] = ()) -> tuple[LoanState, tuple[Move, ...]]:
    plan = contract_schedule(c)
    seq = _sequence(loan_id, c, receipts, transfers, amendments)
    disbursed_on = parse_date(seq.counted[0].doc["date"]) if seq.counted else None
    if disbursed_on is not None and disbursed_on > today:
        disbursed_on = None  # rule 4: not lent yet at the end of today
    given = _given(notices, today)

    book, timeline = None, []
    amending = _Amending(given)
    if disbursed_on is not None:
        judged = (x.date for x in given if x.kind in ("default", "writeoff"))  # rule 9 looks at these days
        book, timeline = _money(plan, c, seq, disbursed_on, today, judged, amending)
    dpd_at = dict(timeline)

    def days_past_due_at(d: date) -> int:
        return 0 if disbursed_on is None or d < disbursed_on else dpd_at[d]

    notes = _notices(given, c, seq, days_past_due_at)
    moves: list[Move] = []
    state = AWAITING
    if book is not None:
        moves = _moves(timeline, c["grace_days"], disbursed_on, book.repaid_on, notes.defaulted_on,
                       notes.written_off_on)
        state = moves[-1].after  # the first move is the disbursement
    dpd = dpd_at[today] if book else 0

    if book is None:  # nothing lent: nothing paid, nothing owed
        rows = tuple(Row(k, i.due, i.payment, i.interest, i.principal, 0, 0, 0, 0, 0, "upcoming")
                     for k, i in enumerate(plan, 1))
    else:
        rows = tuple(Row(k, ln.inst.due, ln.inst.payment, ln.inst.interest, ln.inst.principal, ln.paid_interest,
                         ln.paid_principal, ln.waived, ln.fee, ln.fee_paid, book.status(ln, today))
                     for k, ln in enumerate(book.lines, 1))
    result = LoanState(
        loan=loan_id,
        as_of=today,
        state=state,
        days_past_due=dpd,
        bucket=bucket_of(dpd) if state == DELINQUENT else None,
        holder=_holder_at(c, seq)(today),
        holders=_holders(c, seq),
        default_allowed=(state, "default") in TRANSITIONS and dpd >= c["default_days"],
        rows=rows,
        principal_paid=sum(r.paid_principal for r in rows),
        interest_paid=sum(r.paid_interest for r in rows),
        interest_waived=sum(r.interest_waived for r in rows),
        fees_charged=sum(r.fee_charged for r in rows),
        fees_paid=sum(r.fee_paid for r in rows),
        outstanding_principal=book.outstanding() if book else 0,
        due_now=book.due_now(today) if book else 0,
        payoff=book.payoff(today) if book else 0,
        overpaid=book.overpaid if book else 0,
        counted=tuple(r.id for r in seq.counted),
        transfers=tuple(t.id for t in seq.transfers),
        rejected=tuple(seq.rejected + amending.rejected + notes.rejected),
        disputes=tuple(notes.disputes),
        disbursed_on=disbursed_on,
        repaid_on=book.repaid_on if book else None,
        defaulted_on=notes.defaulted_on,
        written_off_on=notes.written_off_on,
        amendments=tuple(amending.applied),
    )
    return result, tuple(moves)
