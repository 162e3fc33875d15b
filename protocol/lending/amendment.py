"""Amendments: new terms for an agreed loan, countersigned by borrower and holder (a
reschedule for hardship, as Apache Fineract's loan reschedule), and the entry that holds one.

Rules (docs/protocol.md, "Amendment"):

1. An amendment is the document ``{type: "amendment", loan, borrower, holder, after,
   date, rate_bp, term, schedule, [period_days]}`` (fields in ``AMENDMENT_FIELDS`` and
   ``AMENDMENT_OPTIONAL``). ``holder`` is the holder of the claim after the loan's first
   ``after`` receipts (at least 1: the disbursement is counted), ``borrower`` the loan's
   borrower; they differ. ``date`` (``YYYY-MM-DD``) is the day the new terms start:
   the new schedule counts from it. ``rate_bp``, ``term``, ``schedule`` and
   ``period_days`` are the new terms, with a contract's ranges and rules (contract.py
   rule 1, schedule.py rule 2: a term in days or weeks is a whole number of periods).
   Grace days, late fee and default days stay the contract's.
2. It is signed by exactly ``borrower`` and ``holder``: neither side can change the
   terms alone. Signed by one of them only, it is a *proposal* (``open_amendment`` with
   ``complete=False``), which the other party countersigns or not.
3. Entry kind ``loan.amendment`` ``{amendment}`` (``AMENDMENT_KINDS``, registered by
   lending beside contract.py's ``LOAN_KINDS``, indexed by loan as they are): the
   amendment envelope, signed by both, written by either of them (each records it in
   its own chain).
4. Whether an amendment counts for a loan, and what it changes, is ``loanstate.py``'s
   to decide (rule 12 there); this module checks only what the document says about
   itself.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ..envelope import Envelope, open_envelope, require_signers, seal
from ..errors import ProtocolError, SignatureError
from ..keys import SigningKey
from ..kinds import Kind
from .contract import DATE_PATTERN, LoanError, loan_index, parse_date
from .money import MAX_RATE_BP, MoneyError, parse_term
from .schedule import KINDS as SCHEDULE_KINDS
from .schedule import MAX_PERIOD_DAYS, Installment, periods_of, schedule
from ..schema import U63_MAX, binary, check_fields, const, text, uint

TERM_PATTERN = r"[1-9][0-9]{0,3}[mwd]"

AMENDMENT_FIELDS = {
    "type": const("amendment"),
    "loan": binary(32),
    "borrower": binary(32),
    "holder": binary(32),
    "after": uint(1, U63_MAX),
    "date": text(10, DATE_PATTERN),
    "rate_bp": uint(0, MAX_RATE_BP),
    "term": text(8, TERM_PATTERN),
    "schedule": lambda v: type(v) is str and v in SCHEDULE_KINDS,
}
AMENDMENT_OPTIONAL = {"period_days": uint(1, MAX_PERIOD_DAYS)}

NEW_TERMS = ("rate_bp", "term", "schedule", "period_days")
"""The fields that are the new terms (the rest says which loan, by whom, from when)."""


def check_amendment(doc: Any) -> dict:
    """``doc`` if it is an amendment by rule 1; ``SchemaError`` or ``LoanError`` naming the
    first thing wrong otherwise."""
    check_fields(doc, AMENDMENT_FIELDS, AMENDMENT_OPTIONAL, what="amendment")
    if doc["borrower"] == doc["holder"]:
        raise LoanError("an amendment's borrower and holder are the same key")
    try:
        term = parse_term(doc["term"])
        if doc["schedule"] != "bullet" or "period_days" in doc:
            periods_of(term, doc.get("period_days"))
    except MoneyError as e:
        raise LoanError(f"amendment: {e.message}", code=e.code) from None
    parse_date(doc["date"])
    return doc


def make_amendment(*, loan: bytes, borrower: bytes, holder: bytes, after: int, day: date, rate_bp: int, term: str,
                   kind: str, period_days: int | None = None) -> dict:
    """The amendment document of rule 1 (checked), unsigned."""
    doc = {"type": "amendment", "loan": loan, "borrower": borrower, "holder": holder, "after": after,
           "date": day.isoformat(), "rate_bp": rate_bp, "term": term, "schedule": kind}
    if period_days is not None:
        doc["period_days"] = period_days
    return check_amendment(doc)


def propose_amendment(key: SigningKey, doc: dict) -> Envelope:
    """The proposal of amendment ``doc`` (rule 2), signed by ``key``: its borrower or holder."""
    check_amendment(doc)
    if key.public_key not in (doc["borrower"], doc["holder"]):
        raise LoanError("only the borrower or the holder proposes an amendment", code="not_party")
    return seal(doc, key)


def open_amendment(data: bytes, *, complete: bool = True, verify: bool = True) -> Envelope:
    """An amendment (rules 1 and 2) from its envelope bytes; with ``complete``, signed by
    exactly borrower and holder, else by exactly one of them (a proposal). ``verify=False``
    skips the Ed25519 verification alone (``open_envelope``'s rule)."""
    env = open_envelope(data, verify_signatures=verify)
    doc = check_amendment(env.document)
    try:
        if complete:
            require_signers(env, doc["borrower"], doc["holder"])
        elif len(env.signers) != 1 or env.signers[0] not in (doc["borrower"], doc["holder"]):
            raise SignatureError("a proposed amendment is signed by its borrower or its holder alone")
    except SignatureError as e:
        raise SignatureError(e.message, code="wrong_signer") from None
    return env


def amendment_schedule(doc: dict, principal: int) -> list[Installment]:
    """The installments that repay ``principal`` (the outstanding principal at the
    amendment) on the amendment's terms, counting from its date. ``ProtocolError`` if
    they cannot be made (a due date past the year 9999)."""
    return schedule(principal, doc["rate_bp"], parse_term(doc["term"]), doc["schedule"], parse_date(doc["date"]),
                    doc.get("period_days"))


def same_terms(doc: dict, other: dict) -> bool:
    """Whether two amendments name the same loan, point, day and new terms (whoever
    proposed them): what a party's second ``loan reschedule`` must match to countersign."""
    keys = ("loan", "borrower", "holder", "after", "date") + NEW_TERMS
    return all(doc.get(k) == other.get(k) for k in keys)


# -- the entry kind ---------------------------------------------------------------------------


def validate_amendment_entry(entry: Any) -> None:
    """``loan.amendment`` (rule 3): ``{amendment}``, signed by both, written by one of them."""
    check_fields(entry.body, {"amendment": lambda v: type(v) is bytes}, what="loan.amendment body")
    try:
        env = open_amendment(entry.body["amendment"])
    except ProtocolError as e:
        raise type(e)(f"loan.amendment: {e.message}", code=e.code) from None
    if entry.author not in (env.document["borrower"], env.document["holder"]):
        raise LoanError("loan.amendment: the author is neither borrower nor holder", code="not_party")


AMENDMENT_KINDS = (
    Kind("loan.amendment", "new terms for a loan, signed by borrower and holder", validate_amendment_entry,
         loan_index),
)
