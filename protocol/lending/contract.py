"""Loan documents: contracts, receipts and transfers, and the ledger entries that hold them.

Rules (docs/protocol.md, "Loans"):

1. A contract is the document ``{type: "contract", offer, proposer, lender, borrower,
   currency, principal, rate_bp, term, [period_days], schedule, start, grace_days,
   late_fee, default_days, lender_head, borrower_head, created, expires, [policy]}`` (fields
   in ``CONTRACT_FIELDS`` and ``CONTRACT_OPTIONAL``). ``policy`` (optional, 1 to 32 of
   ``[a-z0-9.-]``) names the lending policy the proposer checked it by (policy.py, a
   preset's name); the acceptor checks by its own, whatever it names. Its id is the loan's id. ``lender`` and ``borrower`` differ, and
   ``proposer`` is one of them. ``start`` is the ISO date (``YYYY-MM-DD``) from which the
   schedule counts; ``*_head`` is ``[seq, id]`` of each party's chain as the proposer held
   it: the proposer commits to the history the other side may check.
   ``created < expires <= created + MAX_PROPOSAL_MS``.
2. A proposal is a contract signed by its proposer alone; an agreement is the same
   payload signed by exactly lender and borrower. Signatures never change the id, so a
   proposal and its agreement are one loan.
3. A receipt ``{type: "receipt", loan, n, what, amount, date, payer, payee}`` is signed
   by its ``payee`` alone: the one who got the money says so. ``what`` is
   ``disbursement`` or ``repayment``; ``n`` numbers the receipts of one loan from 1.
4. A transfer ``{type: "transfer", loan, from, to, after, date}`` is signed by exactly
   ``from`` and ``to``: the claim passes from one lender to another after the loan's
   first ``after`` receipts. A transfer made by a sale also carries ``price`` (1 to
   ``MAX_AMOUNT`` minor units of the loan's currency, market.py rule 5); the price moves
   no money in the ledger (money moves outside), it records what the buyer paid. While
   it is being made a transfer is signed by one side alone: ``from`` when the holder
   offers it, ``to`` when a buyer proposes it for a listing.
5. Entry kinds (bodies in ``LOAN_KINDS``), each naming its loan:

   - ``loan.agreement`` ``{contract}``: the agreement envelope; its author is a party.
     The party that did not propose must write it no later than ``expires`` (its entry's
     ``ts``): a late countersignature is not an agreement.
   - ``loan.receipt`` ``{receipt}``: a receipt envelope, written by payee and payer.
   - ``loan.transfer`` ``{transfer}``: a transfer envelope.
   - ``loan.amendment`` ``{amendment}``: new terms signed by borrower and holder
     (its kind is amendment.py's ``AMENDMENT_KINDS``, which builds on this module).
   - ``loan.declared`` ``{loan, what, amount, date}``: the payer says it sent money
     (a claim, not a proof: only a receipt counts).
   - ``loan.default``, ``loan.writeoff`` ``{loan, date}``: the lender's notices.
   - ``loan.dispute`` ``{loan, reason}``: either party's side of a disagreement.

   Whether a receipt, notice or transfer counts for a loan depends on the contract and
   the other documents, and is decided by ``loanstate.py``; the kinds check only what a
   document says about itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from .. import codec
from ..envelope import Envelope, document_id, open_envelope, peek_document, require_signers, seal
from ..errors import ProtocolError, SchemaError, SignatureError
from ..keys import SigningKey
from ..kinds import Kind
from .money import MAX_AMOUNT, MAX_RATE_BP, MoneyError, exponent, parse_term
from .schedule import KINDS as SCHEDULE_KINDS
from .schedule import Installment, periods_of, schedule
from ..schema import U63_MAX, binary, check_fields, const, text, uint

MAX_PROPOSAL_MS = 7 * 24 * 3600 * 1000
"""A proposal expires at most a week after it is made."""
MAX_GRACE_DAYS = 365
MAX_DEFAULT_DAYS = 3650
MAX_REASON_LEN = 1000
DATE_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"

WHAT = ("disbursement", "repayment")


class LoanError(ProtocolError):
    """A loan document that breaks these rules."""

    code = "bad_loan"


def _head(v: Any) -> bool:
    return type(v) is list and len(v) == 2 and uint(1)(v[0]) and binary(32)(v[1])


def _one_of(*values: str):
    return lambda v: type(v) is str and v in values


CONTRACT_FIELDS = {
    "type": const("contract"),
    "offer": binary(32),
    "proposer": binary(32),
    "lender": binary(32),
    "borrower": binary(32),
    "currency": text(3, r"[A-Z]{3}"),
    "principal": uint(1, MAX_AMOUNT),
    "rate_bp": uint(0, MAX_RATE_BP),
    "term": text(8, r"[1-9][0-9]{0,3}[mwd]"),
    "schedule": _one_of(*SCHEDULE_KINDS),
    "start": text(10, DATE_PATTERN),
    "grace_days": uint(0, MAX_GRACE_DAYS),
    "late_fee": uint(0, MAX_AMOUNT),
    "default_days": uint(1, MAX_DEFAULT_DAYS),
    "lender_head": _head,
    "borrower_head": _head,
    "created": uint(0, U63_MAX),
    "expires": uint(0, U63_MAX),
}
POLICY_PATTERN = r"[a-z0-9][a-z0-9.-]{0,31}"
CONTRACT_OPTIONAL = {"period_days": uint(1, 3660), "policy": text(32, POLICY_PATTERN)}

RECEIPT_FIELDS = {
    "type": const("receipt"),
    "loan": binary(32),
    "n": uint(1, U63_MAX),
    "what": _one_of(*WHAT),
    "amount": uint(1, MAX_AMOUNT),
    "date": text(10, DATE_PATTERN),
    "payer": binary(32),
    "payee": binary(32),
}

TRANSFER_FIELDS = {
    "type": const("transfer"),
    "loan": binary(32),
    "from": binary(32),
    "to": binary(32),
    "after": uint(0, U63_MAX),
    "date": text(10, DATE_PATTERN),
}
TRANSFER_OPTIONAL = {"price": uint(1, MAX_AMOUNT)}
"""A sale's transfer records its price (market.py rule 5)."""


def parse_date(value: str, what: str = "date") -> date:
    """The date an ISO ``YYYY-MM-DD`` text names; ``LoanError`` (bad_date) otherwise."""
    try:
        d = date.fromisoformat(value) if type(value) is str and len(value) == 10 else None
    except ValueError:
        d = None
    if d is None or d.year < 1970:
        raise LoanError(f"{what} {value!r} is not a date YYYY-MM-DD (1970 or later)", code="bad_date")
    return d


# -- contracts ---------------------------------------------------------------------------


def check_contract(doc: Any) -> dict:
    """``doc`` if it is a contract by rule 1; ``SchemaError`` or ``LoanError`` naming the
    first thing wrong otherwise."""
    check_fields(doc, CONTRACT_FIELDS, CONTRACT_OPTIONAL, what="contract")
    if doc["lender"] == doc["borrower"]:
        raise LoanError("lender and borrower are the same key")
    if doc["proposer"] not in (doc["lender"], doc["borrower"]):
        raise LoanError("the proposer is neither lender nor borrower")
    if not doc["created"] < doc["expires"] <= doc["created"] + MAX_PROPOSAL_MS:
        raise LoanError("a contract expires after it is created, and within 7 days")
    try:
        exponent(doc["currency"])
        term = parse_term(doc["term"])
        if doc["schedule"] != "bullet" or "period_days" in doc:
            periods_of(term, doc.get("period_days"))
    except MoneyError as e:
        raise LoanError(f"contract: {e.message}", code=e.code) from None
    parse_date(doc["start"], "start")
    return doc


def contract_schedule(doc: dict) -> list[Installment]:
    """The installments a (checked) contract promises."""
    return schedule(doc["principal"], doc["rate_bp"], parse_term(doc["term"]), doc["schedule"],
                    parse_date(doc["start"]), doc.get("period_days"))


def counterparty(doc: dict, me: bytes) -> bytes:
    """The other party of a contract ``me`` is party to."""
    if me == doc["lender"]:
        return doc["borrower"]
    if me == doc["borrower"]:
        return doc["lender"]
    raise LoanError("not a party to this contract", code="not_party")


def acceptor(doc: dict) -> bytes:
    """The party who must countersign: the one who did not propose."""
    return counterparty(doc, doc["proposer"])


def propose(key: SigningKey, doc: dict) -> Envelope:
    """The proposal of contract ``doc``, signed by ``key``, which must be its proposer."""
    check_contract(doc)
    if doc["proposer"] != key.public_key:
        raise LoanError("only the proposer signs a proposal")
    return seal(doc, key)


def countersign_contract(doc: dict, proposer: SigningKey, other: SigningKey) -> Envelope:
    """The agreement on ``doc``: proposed by ``proposer``, countersigned by ``other``."""
    from ..envelope import countersign

    return countersign(propose(proposer, doc), other)


def open_proposal(data: bytes) -> Envelope:
    """A proposal (rule 2) from its envelope bytes, signature checked."""
    env = open_envelope(data)
    doc = check_contract(env.document)
    require_signers(env, doc["proposer"])
    return env


def open_agreement(data: bytes, *, verify: bool = True) -> Envelope:
    """An agreement (rule 2) from its envelope bytes, both signatures checked (their
    Ed25519 verification skipped with ``verify=False``: ``open_envelope``'s rule)."""
    env = open_envelope(data, verify_signatures=verify)
    doc = check_contract(env.document)
    require_signers(env, doc["lender"], doc["borrower"])
    return env


# -- receipts and transfers ----------------------------------------------------------------


def check_receipt(doc: Any) -> dict:
    check_fields(doc, RECEIPT_FIELDS, what="receipt")
    if doc["payer"] == doc["payee"]:
        raise LoanError("a receipt's payer and payee are the same key")
    parse_date(doc["date"])
    return doc


def make_receipt(key: SigningKey, *, loan: bytes, n: int, what: str, amount: int, day: date, payer: bytes) -> Envelope:
    """A receipt signed by ``key``, the payee."""
    doc = {"type": "receipt", "loan": loan, "n": n, "what": what, "amount": amount,
           "date": day.isoformat(), "payer": payer, "payee": key.public_key}
    return seal(check_receipt(doc), key)


def open_receipt(data: bytes, *, verify: bool = True) -> Envelope:
    """A receipt (rule 3) from its envelope bytes: signed by its payee alone (``verify``
    as in ``open_agreement``)."""
    env = open_envelope(data, verify_signatures=verify)
    doc = check_receipt(env.document)
    try:
        require_signers(env, doc["payee"])
    except SignatureError:
        raise SignatureError("a receipt must be signed by its payee alone", code="wrong_signer") from None
    return env


def check_transfer(doc: Any) -> dict:
    check_fields(doc, TRANSFER_FIELDS, TRANSFER_OPTIONAL, what="transfer")
    if doc["from"] == doc["to"]:
        raise LoanError("a transfer's from and to are the same key")
    parse_date(doc["date"])
    return doc


def open_transfer(data: bytes, *, complete: bool = True, signed_by: str = "from", verify: bool = True) -> Envelope:
    """A transfer (rule 4); with ``complete``, signed by exactly from and to, else by
    the party ``signed_by`` names alone (``"from"``: the holder's offer; ``"to"``: a
    buyer's proposal for a listing), which the other side countersigns (``verify`` as in
    ``open_agreement``)."""
    env = open_envelope(data, verify_signatures=verify)
    doc = check_transfer(env.document)
    if complete:
        require_signers(env, doc["from"], doc["to"])
    else:
        require_signers(env, doc[signed_by])
    return env


# -- entry kinds ---------------------------------------------------------------------------


def _embedded(entry: Any, field: str, opener: Any) -> Envelope:
    check_fields(entry.body, {field: lambda v: type(v) is bytes}, what=f"{entry.kind} body")
    try:
        return opener(entry.body[field])
    except ProtocolError as e:
        raise type(e)(f"{entry.kind}: {e.message}", code=e.code) from None


def _agreement(entry: Any) -> None:
    env = _embedded(entry, "contract", open_agreement)
    doc = env.document
    if entry.author not in (doc["lender"], doc["borrower"]):
        raise LoanError("loan.agreement: the author is not a party to the contract", code="not_party")
    if entry.author != doc["proposer"] and entry.ts > doc["expires"]:
        raise LoanError("loan.agreement: countersigned after the proposal expired", code="expired")


def _receipt(entry: Any) -> None:
    env = _embedded(entry, "receipt", open_receipt)
    if entry.author not in (env.document["payer"], env.document["payee"]):
        raise LoanError("loan.receipt: the author is neither payer nor payee", code="not_party")


def _transfer(entry: Any) -> None:
    _embedded(entry, "transfer", open_transfer)


def _declared(entry: Any) -> None:
    check_fields(entry.body, {"loan": binary(32), "what": _one_of(*WHAT), "amount": uint(1, MAX_AMOUNT),
                              "date": text(10, DATE_PATTERN)}, what="loan.declared body")
    parse_date(entry.body["date"])


def _notice(entry: Any) -> None:
    check_fields(entry.body, {"loan": binary(32), "date": text(10, DATE_PATTERN)}, what=f"{entry.kind} body")
    parse_date(entry.body["date"])


def _dispute(entry: Any) -> None:
    check_fields(entry.body, {"loan": binary(32), "reason": text(MAX_REASON_LEN)}, what="loan.dispute body")
    if not entry.body["reason"].strip():
        raise SchemaError("loan.dispute: the reason is empty")


def loan_index(entry: Any) -> list[bytes]:
    """The loan index key of a loan entry (kinds.py, rule 4): ``b"L" + loan + author +
    seq(8)``, so that one prefix scan finds every entry about a loan, by author then seq."""
    loan = loan_of(entry.kind, entry.body)
    return [] if loan is None else [LOAN_INDEX + loan + entry.author + entry.seq.to_bytes(8, "big")]


LOAN_INDEX = b"L"
TAKEN_INDEX = b"T"
GRAPH_INDEX = b"G"
BORROWER_INDEX = b"W"


def agreement_index(entry: Any) -> list[bytes]:
    """A ``loan.agreement``'s index keys (called only for a valid body, whose contract
    both parties signed): its loan key; ``b"T" + offer + author + seq(8)``, which says, in
    the same write as the agreement itself, that ``author`` signed a contract taking
    ``offer`` (so an offer's consumption is as durable as the countersignature: agree
    rule 3); ``b"G" + author + counterparty``, an edge of the graph of countersigned
    loans (the node's own edges give its counterparties standing); and ``b"W" + borrower
    + loan + author + seq(8)``, the loans a key borrowed, which credit reads."""
    keys = loan_index(entry)
    try:
        doc = peek_document(entry.body["contract"])
        offer, parties = doc["offer"], (doc["lender"], doc["borrower"])
    except Exception:  # unreadable: not indexed (the validator refuses it anyway)
        return keys
    if type(offer) is bytes and len(offer) == 32:
        keys.append(TAKEN_INDEX + offer + entry.author + entry.seq.to_bytes(8, "big"))
    if entry.author in parties and all(type(p) is bytes and len(p) == 32 for p in parties):
        other = parties[1] if entry.author == parties[0] else parties[0]
        keys.append(GRAPH_INDEX + entry.author + other)
        loan = loan_of(entry.kind, entry.body)
        if loan is not None:
            keys.append(BORROWER_INDEX + parties[1] + loan + entry.author + entry.seq.to_bytes(8, "big"))
    return keys


LOAN_KINDS = (
    Kind("loan.agreement", "a loan contract signed by lender and borrower", _agreement, agreement_index),
    Kind("loan.receipt", "a receipt for money received, signed by the payee", _receipt, loan_index),
    Kind("loan.transfer", "a claim passed to a new lender, signed by both lenders", _transfer, loan_index),
    Kind("loan.declared", "the payer says it sent money (a claim; a receipt is the proof)", _declared, loan_index),
    Kind("loan.default", "the lender declares the loan in default", _notice, loan_index),
    Kind("loan.writeoff", "the lender writes the loan off", _notice, loan_index),
    Kind("loan.dispute", "a party records its side of a disagreement", _dispute, loan_index),
)


EMBEDDING = {"loan.agreement": "contract", "loan.receipt": "receipt", "loan.transfer": "transfer",
             "loan.amendment": "amendment"}
"""The kinds whose body embeds a two-party document, and the body field that holds it."""


def embedded_id(kind: str, body: Any) -> bytes | None:
    """The id of the document an entry of ``kind`` embeds (an agreement's id is its
    loan's), or None if it embeds none or its bytes are unreadable. Never raises."""
    field = EMBEDDING.get(kind)
    if field is None:
        return None
    try:
        return document_id(codec.decode(body[field])[0])
    except Exception:
        return None


def loan_of(kind: str, body: Any) -> bytes | None:
    """The id of the loan an entry of ``kind`` with ``body`` is about, or None if it is not
    a (well-formed) loan entry. For the store's loan index: never raises."""
    try:
        if kind == "loan.agreement":
            return embedded_id(kind, body)
        if kind in ("loan.receipt", "loan.transfer", "loan.amendment"):
            loan = peek_document(body[EMBEDDING[kind]])["loan"]
        elif kind in ("loan.declared", "loan.default", "loan.writeoff", "loan.dispute"):
            loan = body["loan"]
        else:
            return None
    except Exception:  # not a loan entry we can read: it is simply not indexed
        return None
    return loan if type(loan) is bytes and len(loan) == 32 else None


@dataclass(frozen=True)
class Terms:
    """What an offer or request fixes, for building and checking a contract against it."""

    side: str
    author: bytes
    currency: str
    min_amount: int
    max_amount: int
    rate_bp: int
    term: str
    period_days: int | None
    schedule: str
    grace_days: int
    late_fee: int
    default_days: int


def terms_of(offer: Any) -> Terms:
    """The terms of an offer (any object with the offer's field names as attributes)."""
    return Terms(offer.side, offer.author, offer.currency, offer.min_amount, offer.max_amount, offer.rate_bp,
                 offer.term, getattr(offer, "period_days", None), offer.schedule, offer.grace_days,
                 offer.late_fee, offer.default_days)


def contract_from(offer_id: bytes, terms: Terms, *, taker: bytes, principal: int, start: date,
                  lender_head: tuple[int, bytes], borrower_head: tuple[int, bytes], created: int,
                  expires: int, policy: str | None = None) -> dict:
    """The contract a ``taker`` proposes to take an offer (side lend: taker borrows) or a
    request (side borrow: taker lends) on its terms, naming the ``policy`` in force (if
    given)."""
    lender, borrower = (terms.author, taker) if terms.side == "lend" else (taker, terms.author)
    doc = {
        "type": "contract", "offer": offer_id, "proposer": taker, "lender": lender, "borrower": borrower,
        "currency": terms.currency, "principal": principal, "rate_bp": terms.rate_bp, "term": terms.term,
        "schedule": terms.schedule, "start": start.isoformat(), "grace_days": terms.grace_days,
        "late_fee": terms.late_fee, "default_days": terms.default_days,
        "lender_head": [lender_head[0], lender_head[1]], "borrower_head": [borrower_head[0], borrower_head[1]],
        "created": created, "expires": expires,
    }
    if terms.period_days is not None:
        doc["period_days"] = terms.period_days
    if policy is not None:
        doc["policy"] = policy
    return check_contract(doc)


def terms_mismatch(doc: dict, offer_id: bytes, terms: Terms) -> str | None:
    """Why contract ``doc`` does not take the offer ``offer_id`` with ``terms``, or None."""
    if doc["offer"] != offer_id:
        return "the contract names another offer"
    if terms.side == "lend" and doc["lender"] != terms.author or terms.side == "borrow" and doc["borrower"] != terms.author:
        return f"the offer's author is not the {'lender' if terms.side == 'lend' else 'borrower'}"
    if doc["principal"] > terms.max_amount:  # (the minimum is fill.py's: a last part may take less)
        return f"principal {doc['principal']} is above the offer's {terms.max_amount}"
    for name in ("currency", "rate_bp", "term", "schedule", "grace_days", "late_fee", "default_days"):
        if doc[name] != getattr(terms, name):
            return f"{name} {doc[name]!r} differs from the offer's {getattr(terms, name)!r}"
    if doc.get("period_days") != terms.period_days:
        return "period_days differs from the offer's"
    return None
