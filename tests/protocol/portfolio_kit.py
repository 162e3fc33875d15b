"""Loans for the tests of issue 11's rules (fill, provisioning, reserve, portfolio, market):
real contracts, receipts and notices run through loanstate.loan_state."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date, timedelta

from protocol import codec
from protocol.lending.contract import check_contract, contract_schedule
from protocol.lending.loanstate import LoanState, Notice, SignedReceipt, loan_state

L, B, C, N = (bytes([ch]) * 32 for ch in b"LBCN")  # lender, two borrowers, a buyer
START = date(2026, 1, 15)


def loan_id(tag: object) -> bytes:
    return hashlib.sha256(f"loan {tag}".encode()).digest()


def contract(**kw) -> dict:
    c = {"type": "contract", "offer": b"\x0f" * 32, "proposer": B, "lender": L, "borrower": B, "currency": "EUR",
         "principal": 300000, "rate_bp": 1200, "term": "12m", "schedule": "annuity", "start": START.isoformat(),
         "grace_days": 5, "late_fee": 500, "default_days": 30, "lender_head": [1, b"\x01" * 32],
         "borrower_head": [1, b"\x02" * 32], "created": 0, "expires": 1000}
    c.update(kw)
    if "proposer" not in kw:
        c["proposer"] = c["borrower"]
    return check_contract(c)


def receipt(loan: bytes, c: dict, n: int, what: str, amount: int, day: date) -> SignedReceipt:
    payer, payee = (c["lender"], c["borrower"]) if what == "disbursement" else (c["borrower"], c["lender"])
    doc = {"type": "receipt", "loan": loan, "n": n, "what": what, "amount": amount, "date": day.isoformat(),
           "payer": payer, "payee": payee}
    return SignedReceipt(hashlib.sha256(codec.encode(doc)).digest(), doc, payee)


def paid(loan: bytes, c: dict, installments: int, *, late_by: int = 0) -> list[SignedReceipt]:
    """The disbursement on the start, then the first ``installments`` payments, each
    ``late_by`` days after its due date."""
    plan = contract_schedule(c)
    rs = [receipt(loan, c, 1, "disbursement", c["principal"], date.fromisoformat(c["start"]))]
    for k, inst in enumerate(plan[:installments], 2):
        rs.append(receipt(loan, c, k, "repayment", inst.payment, inst.due + timedelta(days=late_by)))
    return rs


def notice(kind: str, by: bytes, day: date) -> Notice:
    return Notice(kind, by, day, None, hashlib.sha256(f"{kind}{by.hex()}{day}".encode()).digest())


def state(loan: bytes, c: dict, receipts, today: date, notices=()) -> LoanState:
    return loan_state(loan, c, list(receipts), [], list(notices), today)


def with_state(s: LoanState, **kw) -> LoanState:
    """A state with some fields changed (for rules that read only those fields)."""
    return dataclasses.replace(s, **kw)
