"""Loan state (protocol/lending/loanstate.py): exact cases of each rule, then properties that hold
for every mix of receipts, transfers and notices."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.lending.contract import check_contract, contract_schedule
from protocol.lending.loanstate import (
    AWAITING, CURRENT, DEFAULTED, DELINQUENT, EVENTS, FINAL, LATE, MONEY_EVENTS, REPAID, STATES, STEADY,
    TRANSITIONS, WRITTEN_OFF, Move, Notice, SignedReceipt, SignedTransfer, bucket_of, loan_moves, loan_state, step,
)
from protocol.lending.schedule import KINDS

L, B, N, X = (bytes([ch]) * 32 for ch in b"LBNX")  # lender, borrower, new lender, stranger
LOAN = hashlib.sha256(b"the loan").digest()
START = date(2026, 1, 15)
DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text(encoding="utf-8")


def contract(**kw) -> dict:
    c = {"type": "contract", "offer": b"\x0f" * 32, "proposer": B, "lender": L, "borrower": B, "currency": "EUR",
         "principal": 300000, "rate_bp": 1200, "term": "3m", "schedule": "annuity", "start": START.isoformat(),
         "grace_days": 5, "late_fee": 500, "default_days": 30, "lender_head": [1, b"\x01" * 32],
         "borrower_head": [1, b"\x02" * 32], "created": 0, "expires": 1000}
    c.update(kw)
    return check_contract(c)


def _id(doc: dict) -> bytes:
    return hashlib.sha256(codec.encode(doc)).digest()


def receipt(n: int, what: str, amount: int, day: date, *, payer: bytes | None = None, payee: bytes | None = None,
            signer: bytes | None = None, loan: bytes = LOAN) -> SignedReceipt:
    payer = payer or (L if what == "disbursement" else B)
    payee = payee or (B if what == "disbursement" else L)
    doc = {"type": "receipt", "loan": loan, "n": n, "what": what, "amount": amount, "date": day.isoformat(),
           "payer": payer, "payee": payee}
    return SignedReceipt(_id(doc), doc, signer or payee)


def disbursement(c: dict, day: date = START, n: int = 1) -> SignedReceipt:
    return receipt(n, "disbursement", c["principal"], day)


def repay(n: int, amount: int, day: date, **kw) -> SignedReceipt:
    return receipt(n, "repayment", amount, day, **kw)


def transfer(frm: bytes, to: bytes, after: int, day: date, signers=None) -> SignedTransfer:
    doc = {"type": "transfer", "loan": LOAN, "from": frm, "to": to, "after": after, "date": day.isoformat()}
    return SignedTransfer(_id(doc), doc, frozenset(signers if signers is not None else (frm, to)))


def notice(kind: str, by: bytes, day: date, reason: str | None = None) -> Notice:
    return Notice(kind, by, day, reason, hashlib.sha256(f"{kind}{by.hex()}{day}{reason}".encode()).digest())


def state(c, receipts=(), today=START, transfers=(), notices=()):
    return loan_state(LOAN, c, list(receipts), list(transfers), list(notices), today)


def on_time(c: dict) -> list[SignedReceipt]:
    """The disbursement on the start, then every scheduled payment on its due date (a receipt
    is for 1 minor unit or more: rows of 0, as at the end of a principal of 1, are skipped)."""
    paying = [i for i in contract_schedule(c) if i.payment]
    return [disbursement(c)] + [repay(k, i.payment, i.due) for k, i in enumerate(paying, 2)]


def codes(s) -> dict[bytes, str]:
    return {r.id: r.code for r in s.rejected}


# -- the happy path ------------------------------------------------------------------------------


def test_three_month_annuity_paid_on_time_is_repaid_without_fees():
    c = contract()
    plan = contract_schedule(c)
    rs = on_time(c)
    s = state(c, rs, plan[-1].due)
    assert s.state == REPAID and s.repaid_on == plan[-1].due and s.disbursed_on == START
    assert (s.fees_charged, s.fees_paid, s.overpaid, s.interest_waived) == (0, 0, 0, 0)
    assert s.principal_paid == 300000 and s.outstanding_principal == 0
    assert s.interest_paid == sum(i.interest for i in plan)
    assert [r.status for r in s.rows] == ["paid"] * 3
    assert s.counted == tuple(r.id for r in rs) and s.rejected == ()
    assert (s.due_now, s.payoff, s.days_past_due, s.bucket, s.default_allowed) == (0, 0, 0, None, False)
    # between payments the loan is current, and the next installment shows as upcoming
    mid = state(c, rs, plan[0].due + timedelta(days=3))
    assert mid.state == CURRENT and [r.status for r in mid.rows] == ["paid", "upcoming", "upcoming"]
    assert mid.due_now == 0 and mid.payoff == 300000 - plan[0].principal


def test_nothing_disbursed_is_awaiting_and_owes_nothing():
    c = contract()
    s = state(c, [], date(2026, 6, 1))
    assert s.state == AWAITING and s.holder == L and s.disbursed_on is None
    assert (s.outstanding_principal, s.due_now, s.payoff, s.days_past_due) == (0, 0, 0, 0)
    assert [r.status for r in s.rows] == ["upcoming"] * 3
    # a disbursement dated after today keeps its number but has not happened yet
    d = disbursement(c, date(2026, 1, 20))
    early = state(c, [d], date(2026, 1, 19))
    assert early.state == AWAITING and early.counted == (d.id,)
    assert state(c, [d], date(2026, 1, 20)).state == CURRENT


# -- late fees, lateness, buckets ------------------------------------------------------------------


def test_installment_paid_ten_days_late_with_grace_five_pays_one_fee():
    c = contract(grace_days=5, late_fee=500)
    plan = contract_schedule(c)
    due2 = plan[1].due
    rs = [disbursement(c), repay(2, plan[0].payment, plan[0].due)]
    assert state(c, rs, due2 + timedelta(days=5)).state == LATE  # the last day of grace: no fee yet
    assert state(c, rs, due2 + timedelta(days=5)).fees_charged == 0
    s = state(c, rs, due2 + timedelta(days=7))
    assert (s.state, s.days_past_due, s.bucket) == (DELINQUENT, 7, "1-30")
    assert s.fees_charged == 500 and s.fees_paid == 0 and s.due_now == plan[1].payment + 500
    assert [r.status for r in s.rows] == ["paid", "late", "upcoming"]

    rs += [repay(3, plan[1].payment + 500, due2 + timedelta(days=10)), repay(4, plan[2].payment, plan[2].due)]
    after = state(c, rs, due2 + timedelta(days=10))
    assert after.state == CURRENT and after.fees_paid == 500 and after.rows[1].status == "paid"
    end = state(c, rs, plan[2].due + timedelta(days=40))
    assert end.state == REPAID and (end.fees_charged, end.fees_paid, end.overpaid) == (500, 500, 0)
    assert end.rows[1].fee_charged == 500 and end.rows[0].fee_charged == end.rows[2].fee_charged == 0


def test_a_payment_equal_to_the_installment_pays_the_fee_first():
    c = contract(grace_days=0, late_fee=700)
    plan = contract_schedule(c)
    rs = [disbursement(c), repay(2, plan[0].payment, plan[0].due + timedelta(days=1))]
    s = state(c, rs, plan[0].due + timedelta(days=1))
    assert s.fees_paid == 700 and s.rows[0].paid_interest == plan[0].interest
    assert s.rows[0].paid_principal == plan[0].principal - 700
    # the installment is still short by the fee, so the loan stays past due
    assert s.state == DELINQUENT and s.due_now == 700


def test_partial_payment_goes_late_then_delinquent_through_the_buckets():
    c = contract(term="6m", grace_days=5)
    plan = contract_schedule(c)
    due = plan[0].due
    rs = [disbursement(c), repay(2, plan[0].payment // 2, due)]
    seen = {}
    for days in (0, 1, 5, 6, 30, 31, 60, 61, 90, 91, 120):
        s = state(c, rs, due + timedelta(days=days))
        seen[days] = (s.state, s.days_past_due, s.bucket)
    assert seen[0] == (CURRENT, 0, None)
    assert seen[1] == (LATE, 1, None) and seen[5] == (LATE, 5, None)
    assert seen[6] == (DELINQUENT, 6, "1-30") and seen[30] == (DELINQUENT, 30, "1-30")
    assert seen[31] == (DELINQUENT, 31, "31-60") and seen[60] == (DELINQUENT, 60, "31-60")
    assert seen[61] == (DELINQUENT, 61, "61-90") and seen[90] == (DELINQUENT, 90, "61-90")
    assert seen[91] == (DELINQUENT, 91, "90+") and seen[120] == (DELINQUENT, 120, "90+")
    assert state(c, rs, due + timedelta(days=1)).rows[0].status == "partial"
    assert [bucket_of(d) for d in (1, 30, 31, 60, 61, 90, 91)] == ["1-30", "1-30", "31-60", "31-60", "61-90",
                                                                  "61-90", "90+"]


def test_catching_up_makes_the_loan_current_again():
    c = contract(term="6m", grace_days=3)
    plan = contract_schedule(c)
    rs = [disbursement(c)]
    day = plan[1].due + timedelta(days=2)  # two installments due, both unpaid
    s = state(c, rs, day)
    assert s.state == DELINQUENT and s.days_past_due == (day - plan[0].due).days
    # the fee, then the interest of both installments, then the oldest principal: the second
    # installment is left, within its grace
    rs.append(repay(2, 500 + plan[1].interest + plan[0].payment, day))
    s = state(c, rs, day)
    assert (s.state, s.days_past_due) == (LATE, 2)
    rs.append(repay(3, s.due_now, day))
    assert state(c, rs, day).state == CURRENT and state(c, rs, day).due_now == 0


def test_late_disbursement_moves_the_due_day_of_earlier_installments():
    c = contract(grace_days=5)
    plan = contract_schedule(c)
    lent = plan[0].due + timedelta(days=10)
    rs = [disbursement(c, lent)]
    assert state(c, rs, lent).state == CURRENT
    s = state(c, rs, lent + timedelta(days=1))
    assert (s.state, s.days_past_due, s.fees_charged) == (LATE, 1, 0)
    assert state(c, rs, lent + timedelta(days=6)).fees_charged == 500


# -- prepayment, overpayment ----------------------------------------------------------------------


def test_prepayment_in_full_mid_term_waives_future_interest():
    c = contract(term="6m")
    plan = contract_schedule(c)
    rs = [disbursement(c), repay(2, plan[0].payment, plan[0].due), repay(3, plan[1].payment, plan[1].due)]
    day = plan[1].due + timedelta(days=17)
    before = state(c, rs, day)
    assert before.state == CURRENT and before.payoff == before.outstanding_principal == plan[1].balance
    rs.append(repay(4, before.payoff, day))
    s = state(c, rs, day)
    assert s.state == REPAID and s.repaid_on == day and s.overpaid == 0
    assert [r.status for r in s.rows] == ["paid", "paid"] + ["waived"] * 4
    assert s.interest_waived == sum(i.interest for i in plan[2:])
    assert s.interest_paid == plan[0].interest + plan[1].interest
    later = plan[-1].due + timedelta(days=100)
    assert state(c, rs, later) == dataclasses.replace(s, as_of=later)  # nothing more happens


def test_a_partial_prepayment_pays_principal_of_the_next_installments_only():
    c = contract(term="6m", rate_bp=2400)
    plan = contract_schedule(c)
    extra = plan[1].principal + 1000
    rs = [disbursement(c), repay(2, plan[0].payment + extra, plan[0].due)]
    s = state(c, rs, plan[0].due)
    assert s.rows[1].paid_principal == plan[1].principal and s.rows[1].paid_interest == 0
    assert s.rows[2].paid_principal == 1000 and s.rows[2].status == "upcoming"
    # when the next installment falls due only its interest is owed
    s2 = state(c, rs, plan[1].due)
    assert s2.due_now == plan[1].interest and s2.state == CURRENT
    assert state(c, rs, plan[1].due + timedelta(days=1)).state == LATE


def test_overpayment_is_shown():
    c = contract()
    rs = [disbursement(c)]
    day = START + timedelta(days=10)
    payoff = state(c, rs, day).payoff
    assert payoff == 300000  # nothing is due yet: the principal alone
    rs.append(repay(2, payoff + 123, day))
    s = state(c, rs, day)
    assert s.state == REPAID and s.overpaid == 123 and s.principal_paid == 300000 and s.interest_paid == 0
    rs.append(repay(3, 50, day + timedelta(days=1)))
    assert state(c, rs, day + timedelta(days=1)).overpaid == 173


# -- which receipts count ------------------------------------------------------------------------


def test_forged_receipts_are_rejected_and_hold_back_later_ones():
    c = contract()
    plan = contract_schedule(c)
    forged = repay(2, plan[0].payment, plan[0].due, signer=X)  # payee L, signed by a stranger
    fake_payee = repay(2, plan[0].payment + 1, plan[0].due, payee=X)  # the stranger says it is owed
    later = repay(3, plan[1].payment, plan[1].due)
    s = state(c, [disbursement(c), forged, fake_payee, later], plan[1].due)
    assert codes(s) == {forged.id: "wrong_signer", fake_payee.id: "wrong_payee", later.id: "gap"}
    assert len(s.counted) == 1 and s.principal_paid == 0


def test_disbursement_rules():
    c = contract()
    cases = {
        "wrong_amount": receipt(1, "disbursement", 299999, START),
        "wrong_payer": receipt(1, "disbursement", 300000, START, payer=X),
        "wrong_payee": receipt(1, "disbursement", 300000, START, payee=X),
        "bad_date": receipt(1, "disbursement", 300000, START - timedelta(days=1)),
        "not_disbursed": repay(1, 1000, START),
    }
    for code, r in cases.items():
        s = state(c, [r], START + timedelta(days=60))
        assert codes(s) == {r.id: code} and s.state == AWAITING, code
    second = receipt(2, "disbursement", 300000, START + timedelta(days=1))
    s = state(c, [disbursement(c), second], START + timedelta(days=2))
    assert codes(s) == {second.id: "already_disbursed"}


def test_receipt_dates_never_go_back():
    c = contract()
    r2 = repay(2, 1000, START + timedelta(days=10))
    r3 = repay(3, 1000, START + timedelta(days=9))
    s = state(c, [disbursement(c), r2, r3], START + timedelta(days=20))
    assert codes(s) == {r3.id: "bad_date"}


def test_receipts_of_other_loans_are_ignored():
    c = contract()
    other = repay(2, 1000, START, loan=b"\x07" * 32)
    s = state(c, [disbursement(c), other], START)
    assert s.rejected == () and len(s.counted) == 1


def test_duplicate_receipt_is_counted_once():
    c = contract()
    plan = contract_schedule(c)
    r = repay(2, plan[0].payment, plan[0].due)
    s = state(c, [disbursement(c), r, r, disbursement(c)], plan[0].due)
    assert s.counted == (disbursement(c).id, r.id) and s.rejected == ()
    assert s.principal_paid == plan[0].principal


def test_conflict_lowest_id_counts_in_any_order():
    c = contract()
    plan = contract_schedule(c)
    a, b = repay(2, plan[0].payment, plan[0].due), repay(2, plan[0].payment - 1, plan[0].due)
    low, high = sorted([a, b], key=lambda r: r.id)
    d = disbursement(c)
    s1, s2 = state(c, [d, a, b], plan[0].due), state(c, [b, d, a], plan[0].due)
    assert s1 == s2
    assert s1.counted == (d.id, low.id) and codes(s1) == {high.id: "conflict"}


def test_a_valid_receipt_beats_an_invalid_one_with_the_same_number():
    c = contract()
    plan = contract_schedule(c)
    good = repay(2, plan[0].payment, plan[0].due)
    bad = repay(2, plan[0].payment, plan[0].due + timedelta(days=1), signer=X)
    s = state(c, [disbursement(c), good, bad], plan[0].due + timedelta(days=1))
    assert good.id in s.counted and codes(s) == {bad.id: "wrong_signer"}


def test_gap_is_held_until_filled():
    c = contract()
    plan = contract_schedule(c)
    r2, r3 = repay(2, plan[0].payment, plan[0].due), repay(3, plan[1].payment, plan[1].due)
    held = state(c, [disbursement(c), r3], plan[1].due)
    assert codes(held) == {r3.id: "gap"} and held.state == DELINQUENT
    filled = state(c, [disbursement(c), r3, r2], plan[1].due)
    assert filled.rejected == () and filled.counted[1:] == (r2.id, r3.id) and filled.state == CURRENT


# -- notices -------------------------------------------------------------------------------------


def test_default_notice_counts_only_from_the_threshold():
    c = contract(default_days=30, grace_days=5)
    plan = contract_schedule(c)
    rs = [disbursement(c)]
    early = notice("default", L, plan[0].due + timedelta(days=29))
    s = state(c, rs, plan[0].due + timedelta(days=29), notices=[early])
    assert codes(s) == {early.id: "default_not_allowed"} and s.state == DELINQUENT and not s.default_allowed
    day = plan[0].due + timedelta(days=30)
    assert state(c, rs, day).default_allowed
    by_borrower = notice("default", B, day)
    ok = notice("default", L, day)
    s = state(c, rs, day, notices=[early, by_borrower, ok])
    assert s.state == DEFAULTED and s.defaulted_on == day and not s.default_allowed
    assert codes(s) == {early.id: "default_not_allowed", by_borrower.id: "not_holder"}
    # a notice dated after the day looked at has not been given yet
    assert state(c, rs, day - timedelta(days=1), notices=[ok]).state == DELINQUENT
    # paying up afterwards does not undo a default; paying off does
    rs.append(repay(2, state(c, rs, day + timedelta(days=1)).due_now, day + timedelta(days=1)))
    assert state(c, rs, day + timedelta(days=1), notices=[ok]).state == DEFAULTED
    rs.append(repay(3, 10**6, day + timedelta(days=2)))
    assert state(c, rs, day + timedelta(days=2), notices=[ok]).state == REPAID


def test_writeoff_only_after_a_default():
    c = contract(default_days=10)
    plan = contract_schedule(c)
    rs = [disbursement(c)]
    d_day = plan[0].due + timedelta(days=10)
    too_early = notice("writeoff", L, d_day - timedelta(days=1))
    default = notice("default", L, d_day)
    by_stranger = notice("writeoff", X, d_day + timedelta(days=3))
    wo = notice("writeoff", L, d_day + timedelta(days=5))
    s = state(c, rs, d_day + timedelta(days=6), notices=[too_early, default, by_stranger, wo])
    assert s.state == WRITTEN_OFF and s.written_off_on == wo.date and s.defaulted_on == d_day
    assert codes(s) == {too_early.id: "not_defaulted", by_stranger.id: "not_holder"}


def test_disputes_are_listed_and_change_nothing():
    c = contract()
    plan = contract_schedule(c)
    rs = on_time(c)[:2]
    d1 = notice("dispute", B, plan[0].due, "the second payment was sent")
    d2 = notice("dispute", X, plan[0].due, "spam")
    odd = notice("reminder", L, plan[0].due)
    s = state(c, rs, plan[0].due + timedelta(days=1), notices=[d1, d2, odd])
    assert [(x.by, x.reason) for x in s.disputes] == [(B, "the second payment was sent")]
    assert codes(s) == {d2.id: "not_party", odd.id: "bad_notice"}
    assert s.state == state(c, rs, plan[0].due + timedelta(days=1)).state == CURRENT


# -- transfers -----------------------------------------------------------------------------------


def test_after_a_transfer_repayments_are_received_by_the_new_lender():
    c = contract()
    plan = contract_schedule(c)
    rs = [disbursement(c), repay(2, plan[0].payment, plan[0].due)]
    t_day = plan[0].due + timedelta(days=5)
    t = transfer(L, N, 2, t_day)
    by_old = repay(3, plan[1].payment, plan[1].due)  # received and signed by the old lender
    by_new = repay(3, plan[1].payment, plan[1].due, payee=N)
    s = state(c, rs + [by_old], plan[1].due, transfers=[t])
    assert codes(s) == {by_old.id: "wrong_payee"} and s.holder == N and s.transfers == (t.id,)
    s = state(c, rs + [by_old, by_new], plan[1].due, transfers=[t])
    assert by_new.id in s.counted and codes(s) == {by_old.id: "wrong_payee"}
    assert s.state == CURRENT
    # the holder at a date follows the transfer's date
    assert state(c, rs, t_day - timedelta(days=1), transfers=[t]).holder == L
    # the old lender can no longer declare a default; the new one can
    late = plan[2].due + timedelta(days=40)
    old_d, new_d = notice("default", L, late), notice("default", N, late)
    s = state(c, rs + [by_new], late, transfers=[t], notices=[old_d, new_d])
    assert s.state == DEFAULTED and codes(s) == {old_d.id: "not_holder"}


def test_invalid_transfers_are_rejected():
    c = contract()
    rs = [disbursement(c)]
    day = START + timedelta(days=3)
    one_sig = transfer(L, N, 1, day, signers={L})
    not_holder = transfer(X, N, 1, day)
    ahead = transfer(L, N, 5, day)
    to_borrower = transfer(L, B, 1, day)
    back_dated = transfer(L, N, 1, START - timedelta(days=1))
    s = state(c, rs, day, transfers=[one_sig, not_holder, ahead, to_borrower, back_dated])
    assert codes(s) == {one_sig.id: "wrong_signer", not_holder.id: "not_holder", ahead.id: "not_reached",
                        to_borrower.id: "bad_transfer", back_dated.id: "bad_date"}
    assert s.holder == L and s.transfers == ()


def test_transfers_after_one_receipt_chain_and_a_double_sale_goes_to_the_lower_id():
    c = contract()
    rs = [disbursement(c)]
    day = START + timedelta(days=3)
    a_b, b_c = transfer(L, N, 1, day), transfer(N, X, 1, day)
    assert state(c, rs, day, transfers=[b_c, a_b]).holder == X
    first, second = sorted([transfer(L, N, 1, day), transfer(L, X, 1, day)], key=lambda t: t.id)
    s = state(c, rs, day, transfers=[second, first])
    assert s.holder == first.doc["to"] and codes(s) == {second.id: "not_holder"}


# -- schedule kinds ------------------------------------------------------------------------------


def test_zero_rate_loan():
    c = contract(rate_bp=0, term="4m", principal=100000)
    plan = contract_schedule(c)
    assert [i.payment for i in plan] == [25000] * 4
    s = state(c, on_time(c), plan[-1].due)
    assert s.state == REPAID and s.interest_paid == 0 and s.principal_paid == 100000
    # prepaid at once: nothing to waive, the rows are simply paid
    s = state(c, [disbursement(c), repay(2, 100000, START)], START)
    assert s.state == REPAID and [r.status for r in s.rows] == ["paid"] * 4 and s.interest_waived == 0


def test_bullet_loan():
    c = contract(schedule="bullet", term="12m", principal=100000, rate_bp=1200, grace_days=0)
    (only,) = contract_schedule(c)
    assert (only.due, only.payment, only.interest) == (date(2027, 1, 15), 112000, 12000)
    rs = [disbursement(c)]
    assert state(c, rs, only.due).state == CURRENT
    s = state(c, rs, only.due + timedelta(days=1))
    assert (s.state, s.bucket, s.fees_charged, s.due_now) == (DELINQUENT, "1-30", 500, 112500)
    paid = state(c, rs + [repay(2, 112000, only.due)], only.due + timedelta(days=30))
    assert paid.state == REPAID and paid.fees_charged == 0 and paid.interest_paid == 12000


def test_json_form():
    c = contract()
    plan = contract_schedule(c)
    s = state(c, [disbursement(c), repay(2, 10, plan[0].due, signer=X)], plan[0].due + timedelta(days=9),
              notices=[notice("dispute", B, START, "why")])
    j = json.loads(json.dumps(s.to_json()))
    assert j["state"] == "delinquent" and j["bucket"] == "1-30" and j["holder"] == L.hex()
    assert j["disbursed_on"] == "2026-01-15" and j["repaid_on"] is None
    assert j["rows"][0]["due"] == plan[0].due.isoformat() and j["rows"][0]["status"] == "late"
    assert j["rejected"][0]["code"] == "wrong_signer" and len(j["rejected"][0]["id"]) == 64
    assert j["disputes"] == [{"id": s.disputes[0].id.hex(), "by": B.hex(), "date": "2026-01-15", "reason": "why"}]
    for key in ("days_past_due", "principal_paid", "interest_paid", "fees_paid", "fees_charged",
                "outstanding_principal", "due_now", "payoff", "overpaid", "counted", "default_allowed"):
        assert key in j


# -- the states table -----------------------------------------------------------------------------


def _reachable() -> dict[str, set[str]]:
    reach = {s: {s} for s in STATES}
    changed = True
    while changed:
        changed = False
        for (a, _), b in TRANSITIONS.items():
            for s in STATES:
                if a in reach[s] and b not in reach[s]:
                    reach[s].add(b)
                    changed = True
    return reach


REACH = _reachable()


def test_states_table_shape():
    assert FINAL == {REPAID}
    assert {s for s, _ in TRANSITIONS} | set(TRANSITIONS.values()) == set(STATES)
    assert all(REPAID in REACH[s] for s in STATES)
    assert AWAITING not in set(TRANSITIONS.values())  # nothing goes back to awaiting the money
    assert not REACH[DEFAULTED] & {CURRENT, LATE, DELINQUENT}  # a default is never undone


def test_docs_states_table_is_the_table():
    section = DOC[DOC.index("## Loan state"):DOC.index("## Error codes")]
    rows = re.findall(r"^\| `([a-z_]+)` \| `([a-z_]+)` \| `([a-z_]+)` \|$", section, re.M)
    assert {(a, e): b for a, e, b in rows} == TRANSITIONS and len(rows) == len(TRANSITIONS)


# -- properties -----------------------------------------------------------------------------------

TERMS = ["1m", "2m", "3m", "4m", "4w", "6w"]


@st.composite
def loans(draw):
    """A contract and a mix of receipts (mostly valid, some forged, duplicated, in conflict
    or out of sequence), transfers and notices, and a day to look at."""
    c = contract(principal=draw(st.integers(1, 10**7)), rate_bp=draw(st.integers(0, 3000)),
                 term=draw(st.sampled_from(TERMS)), schedule=draw(st.sampled_from(KINDS)),
                 grace_days=draw(st.integers(0, 10)), late_fee=draw(st.integers(0, 1000)),
                 default_days=draw(st.integers(1, 60)))
    plan = contract_schedule(c)
    day = START + timedelta(days=draw(st.integers(0, 40)))
    receipts = [disbursement(c, day)]
    transfers, holder = [], L
    if draw(st.booleans()):
        after = draw(st.integers(1, 4))
        transfers.append(transfer(L, N, after, day + timedelta(days=draw(st.integers(0, 60)))))
    for n in range(2, draw(st.integers(1, 7)) + 1):
        day += timedelta(days=draw(st.integers(0, 45)))
        if transfers and n > transfers[0].doc["after"]:
            holder = N
        payments = [i.payment for i in plan if i.payment] or [1]
        amount = draw(st.one_of(st.sampled_from(payments), st.integers(1, c["principal"])))
        payee = holder if draw(st.integers(0, 9)) else draw(st.sampled_from([L, N, X]))
        receipts.append(repay(n, amount, day, payee=payee))
        if not draw(st.integers(0, 4)):  # a rival receipt with the same number
            receipts.append(repay(n, amount + draw(st.integers(1, 99)), day, payee=payee,
                                  signer=draw(st.sampled_from([payee, X]))))
    if draw(st.booleans()):
        receipts.append(repay(len(receipts) + 2, 1000, day))  # beyond a gap
    receipts += draw(st.lists(st.sampled_from(receipts), max_size=3))  # duplicates
    days = st.one_of(st.integers(0, 300), st.integers(60, 200))  # not only the small numbers hypothesis favours
    notices = [notice(draw(st.sampled_from(["default", "default", "writeoff", "writeoff", "dispute"])),
                      draw(st.sampled_from([L, L, N, B, X])), START + timedelta(days=draw(days)), "r")
               for _ in range(draw(st.integers(0, 5)))]
    today = START + timedelta(days=draw(days))
    return c, receipts, transfers, notices, today


@settings(max_examples=60, deadline=None)
@given(loans(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(loan, rnd):
    c, receipts, transfers, notices, today = loan
    before = loan_state(LOAN, c, receipts, transfers, notices, today)
    receipts, transfers, notices = list(receipts), list(transfers), list(notices)
    for xs in (receipts, transfers, notices):
        rnd.shuffle(xs)
    assert loan_state(LOAN, c, receipts, transfers, notices, today) == before


@settings(max_examples=80, deadline=None)
@given(loans())
def test_the_money_adds_up(loan):
    c, receipts, transfers, notices, today = loan
    s = loan_state(LOAN, c, receipts, transfers, notices, today)
    by_id = {r.id: r for r in receipts}
    paid = sum(by_id[i].doc["amount"] for i in s.counted[1:] if date.fromisoformat(by_id[i].doc["date"]) <= today)
    assert s.fees_paid + s.interest_paid + s.principal_paid == paid - s.overpaid
    rejected = {r.id for r in s.rejected} & set(by_id)
    assert not set(s.counted) & rejected
    assert set(s.counted) | rejected == set(by_id)  # every receipt is counted or rejected
    if s.state == AWAITING:
        assert (s.principal_paid, s.outstanding_principal, s.due_now, s.payoff, paid) == (0, 0, 0, 0, 0)
        return
    assert s.principal_paid + s.outstanding_principal == c["principal"]
    assert 0 <= s.fees_paid <= s.fees_charged and 0 <= s.due_now <= s.payoff
    assert (s.state == REPAID) == (s.payoff == 0) == (s.outstanding_principal == 0)
    assert s.overpaid == 0 or s.state == REPAID
    assert (s.bucket is not None) == (s.state == DELINQUENT)
    for r in s.rows:
        assert r.paid_interest + r.interest_waived <= r.interest and r.paid_principal <= r.principal
        assert r.fee_charged in (0, c["late_fee"]) and r.fee_paid <= r.fee_charged


@settings(max_examples=25, deadline=None)
@given(loans())
def test_state_moves_only_along_the_table_as_days_pass(loan):
    c, receipts, transfers, notices, _ = loan
    last = None
    for k in range(-1, 260, 1):
        s = loan_state(LOAN, c, receipts, transfers, notices, START + timedelta(days=k))
        if last is not None:
            assert s.state in REACH[last], f"{last} -> {s.state} on day {k}"
            if last in FINAL:
                assert s.state == last
        last = s.state


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(KINDS), st.sampled_from(TERMS + ["12m", "30d"]), st.integers(1, 10**9), st.integers(0, 5000),
       st.integers(0, 10), st.integers(1, 5000))
def test_paying_every_installment_on_its_due_date_repays_without_fees(kind, term, principal, rate, grace, fee):
    c = contract(schedule=kind, term=term, principal=principal, rate_bp=rate, grace_days=grace, late_fee=fee)
    plan = contract_schedule(c)
    rs = on_time(c)
    last = max(i.due for i in plan if i.principal)  # the day the last principal is paid
    for i in plan:
        s = loan_state(LOAN, c, rs, [], [], i.due + timedelta(days=1))
        assert s.state == (CURRENT if i.due < last else REPAID) and s.fees_charged == 0
    s = loan_state(LOAN, c, rs, [], [], plan[-1].due + timedelta(days=365))
    assert s.state == REPAID and s.repaid_on == last
    assert (s.fees_charged, s.overpaid, s.interest_waived, s.outstanding_principal) == (0, 0, 0, 0)
    assert s.interest_paid == sum(i.interest for i in plan)
    assert all(r.status == "paid" for r in s.rows)


@pytest.mark.parametrize("grace", [0, 4])
def test_direct_edges_happen_one_event_at_a_time(grace):
    """One loan walked through the table's edges on days with one event each."""
    c = contract(term="6m", grace_days=grace, default_days=20)
    plan = contract_schedule(c)
    rs = [disbursement(c, START + timedelta(days=1))]
    seen = [state(c, rs, START).state]
    d1 = plan[0].due
    rs.append(repay(2, plan[0].payment // 2, d1))
    rs.append(repay(3, plan[0].payment, d1 + timedelta(days=10)))  # fee + the rest: caught up
    dflt = notice("default", L, plan[1].due + timedelta(days=25))
    wo = notice("writeoff", L, plan[1].due + timedelta(days=26))
    rs.append(repay(4, 10**7, plan[1].due + timedelta(days=27)))
    for k in range(0, (plan[1].due - START).days + 30):
        st_ = state(c, rs, START + timedelta(days=k), notices=[dflt, wo]).state
        if st_ != seen[-1]:
            seen.append(st_)
    for a, b in zip(seen, seen[1:]):
        assert b in {to for (frm, _), to in TRANSITIONS.items() if frm == a}, (a, b)
    assert seen[-1] == REPAID and DEFAULTED in seen and WRITTEN_OFF in seen


def test_documented_example():
    """docs/protocol.md, "Loan state", Example."""
    c = contract(principal=300000, rate_bp=1200, term="3m", grace_days=5, late_fee=500)
    plan = contract_schedule(c)
    assert [(i.due.isoformat(), i.payment) for i in plan] == [
        ("2026-02-15", 102007), ("2026-03-15", 102007), ("2026-04-15", 102006)]
    rs = [disbursement(c), repay(2, 102007, date(2026, 2, 15))]
    assert state(c, rs, date(2026, 3, 20)).fees_charged == 0
    s = state(c, rs, date(2026, 3, 22))
    assert (s.state, s.bucket, s.days_past_due, s.due_now, s.fees_charged) == (DELINQUENT, "1-30", 7, 102507, 500)
    rs.append(repay(3, 102507, date(2026, 3, 25)))
    s = state(c, rs, date(2026, 3, 25))
    assert s.state == CURRENT
    assert (s.rows[1].fee_paid, s.rows[1].paid_interest, s.rows[1].paid_principal) == (500, 2010, 99997)
    rs.append(repay(4, 102006, date(2026, 4, 15)))
    s = state(c, rs, date(2026, 4, 15))
    assert s.state == REPAID and s.fees_charged == s.fees_paid == 500
    for text in ("1020.07 (2026-02-15)", "1020.06 (2026-04-15)", "due_now` 1025.07",
                 "interest 20.10", "principal 999.97"):
        assert text in DOC


# -- rule 11: the table, executed -----------------------------------------------------------------


def moves(c, receipts=(), today=START, transfers=(), notices=()):
    return loan_moves(LOAN, c, list(receipts), list(transfers), list(notices), today)


def events(ms) -> list[tuple[str, str, str]]:
    return [(m.event, m.before, m.after) for m in ms]


def test_events_are_the_tables_events_and_only_steady_states_ignore_one():
    assert set(EVENTS) == {e for _, e in TRANSITIONS} and len(EVENTS) == len(set(EVENTS))
    assert MONEY_EVENTS < set(EVENTS) and STEADY == {DEFAULTED, WRITTEN_OFF, REPAID}
    for (a, e), b in TRANSITIONS.items():
        assert step(a, e) == b
    for a in STATES:
        for e in EVENTS:
            if (a, e) in TRANSITIONS:
                continue
            if a in STEADY:
                assert step(a, e) == a
            else:  # rule 11 never feeds these: a run that did would be a bug, and says so
                with pytest.raises(AssertionError):
                    step(a, e)


def test_a_day_disbursed_and_paid_off_takes_two_edges_in_order():
    c = contract()
    rs = [disbursement(c), repay(2, 300000, START)]
    assert events(moves(c, rs, START)) == [("disbursed", AWAITING, CURRENT), ("repaid", CURRENT, REPAID)]
    assert state(c, rs, START).state == REPAID


def test_nothing_moves_before_the_disbursement():
    c = contract()
    assert moves(c, [], START + timedelta(days=100)) == ()
    d = disbursement(c, START + timedelta(days=3))
    assert moves(c, [d], START + timedelta(days=2)) == ()
    assert moves(c, [d], START + timedelta(days=3)) == (Move(START + timedelta(days=3), "disbursed", AWAITING,
                                                             CURRENT),)


def test_money_events_name_how_days_past_due_cross_zero_and_the_grace():
    c = contract(term="6m", grace_days=3)
    plan = contract_schedule(c)
    due = plan[0].due
    rs = [disbursement(c), repay(2, plan[0].payment + 500, due + timedelta(days=10))]
    ms = moves(c, rs, due + timedelta(days=10))
    assert [(m.day, m.event, m.after) for m in ms] == [
        (START, "disbursed", CURRENT), (due + timedelta(days=1), "overdue", LATE),
        (due + timedelta(days=4), "past_grace", DELINQUENT), (due + timedelta(days=10), "caught_up", CURRENT)]
    # partly: a payment that leaves only an installment within its grace (it pays the fee,
    # both installments' interest, then the first one's principal)
    rs = [disbursement(c), repay(2, plan[0].payment + 500 + plan[1].interest, plan[1].due + timedelta(days=2))]
    ms = moves(c, rs, plan[1].due + timedelta(days=2))
    assert events(ms[-1:]) == [("partly_caught_up", DELINQUENT, LATE)]
    # with no grace days an installment unpaid the day after it falls due is past its grace at once
    c0 = contract(grace_days=0)
    ms = moves(c0, [disbursement(c0)], plan[0].due + timedelta(days=1))
    assert events(ms) == [("disbursed", AWAITING, CURRENT), ("past_grace", CURRENT, DELINQUENT)]


def test_default_and_writeoff_on_one_day_then_the_money_is_ignored_until_paid_off():
    c = contract(default_days=10, grace_days=2)
    plan = contract_schedule(c)
    day = plan[0].due + timedelta(days=10)
    rs = [disbursement(c), repay(2, plan[0].payment + 500, day + timedelta(days=1)),
          repay(3, 10**6, day + timedelta(days=40))]
    ns = [notice("default", L, day), notice("writeoff", L, day)]
    ms = moves(c, rs, day + timedelta(days=40), notices=ns)
    assert events(ms[3:5]) == [("default", DELINQUENT, DEFAULTED), ("writeoff", DEFAULTED, WRITTEN_OFF)]
    assert ms[3].day == ms[4].day == day
    # catching up the next day, the second installment falling due and passing its grace
    # unpaid, and catching up with the payoff (its money event comes before ``repaid``):
    # events still, but they move nothing now
    assert [m.event for m in ms[5:-1]] == ["caught_up", "overdue", "past_grace", "caught_up"]
    assert all(m.before == m.after == WRITTEN_OFF for m in ms[5:-1])
    assert events(ms[-1:]) == [("repaid", WRITTEN_OFF, REPAID)]


def test_a_writeoff_after_the_loan_is_repaid_changes_nothing():
    c = contract(default_days=10)
    plan = contract_schedule(c)
    day = plan[0].due + timedelta(days=10)
    rs = [disbursement(c), repay(2, 10**6, day + timedelta(days=1))]
    wo = notice("writeoff", L, day + timedelta(days=2))
    s = state(c, rs, day + timedelta(days=2), notices=[notice("default", L, day), wo])
    assert s.state == REPAID and s.written_off_on == wo.date  # it counts (rule 9) ...
    assert events(moves(c, rs, day + timedelta(days=2), notices=[notice("default", L, day), wo])[-1:]) == [
        ("writeoff", REPAID, REPAID)]  # ... and moves nothing


def test_a_dispute_by_a_holder_between_two_transfers_is_listed():
    c = contract()
    rs = [disbursement(c)]
    day = START + timedelta(days=3)
    s = state(c, rs, day, transfers=[transfer(L, N, 1, day), transfer(N, X, 1, day)],
              notices=[notice("dispute", N, day, "mine too")])
    assert s.holders == (L, N, X) and s.holder == X
    assert [x.by for x in s.disputes] == [N]


def test_a_long_daily_loan_is_swept_not_walked_day_by_day():
    """1200 installments (the most a schedule has) and two years: the run has a bounded
    number of moves, a few per installment, whatever the number of days."""
    c = contract(term="1200d", period_days=1, schedule="equal-principal", principal=12_000_000, grace_days=0)
    plan = contract_schedule(c)
    assert len(plan) == 1200
    ms = moves(c, [disbursement(c)], START + timedelta(days=2000),
               notices=[notice("default", L, START + timedelta(days=k)) for k in range(40, 60)])
    assert [m.event for m in ms] == ["disbursed", "past_grace", "default"]


# The state by rule 8's precedence, as loanstate.py computed it before rule 11 ran the
# table: the oracle the run must agree with. Days past due come from the rows alone.


def precedence(s, grace_days: int) -> str:
    if s.disbursed_on is None:
        return AWAITING
    if s.repaid_on is not None:
        return REPAID
    if s.written_off_on is not None:
        return WRITTEN_OFF
    if s.defaulted_on is not None:
        return DEFAULTED
    dpd = rows_days_past_due(s)
    if dpd == 0:
        return CURRENT
    return LATE if dpd <= grace_days else DELINQUENT


def rows_days_past_due(s) -> int:
    """Rule 8 from the state's rows: the first row not fully paid, from the day it fell due."""
    if s.disbursed_on is None:
        return 0
    for r in s.rows:
        if r.interest - r.interest_waived - r.paid_interest + r.principal - r.paid_principal:
            falls_due = max(r.due, s.disbursed_on)
            return (s.as_of - falls_due).days if falls_due < s.as_of else 0
    return 0


def test_the_oracle_agrees_on_the_exact_cases():
    c = contract(default_days=10)
    plan = contract_schedule(c)
    for k in range(0, 120, 3):
        day = START + timedelta(days=k)
        s = state(c, [disbursement(c)], day, notices=[notice("default", L, plan[0].due + timedelta(days=12))])
        assert s.state == precedence(s, c["grace_days"]), day


@st.composite
def paid_loans(draw):
    """``loans()`` and more of what repayments look like: on time, late, partial, prepaid,
    overpaid, several on one day."""
    c, receipts, transfers, notices, today = draw(loans())
    plan = contract_schedule(c)
    counted = [r for r in receipts if r.doc["what"] == "repayment"]
    n = max((r.doc["n"] for r in counted), default=1)
    day = max((date.fromisoformat(r.doc["date"]) for r in receipts), default=START)
    holder = N if transfers and n >= transfers[0].doc["after"] else L
    for k in range(draw(st.integers(0, 4))):
        n += 1
        i = plan[min(k, len(plan) - 1)]
        kind = draw(st.sampled_from(["on_time", "late", "partial", "prepaid", "overpaid", "same_day"]))
        if kind == "on_time":
            day, amount = max(day, i.due), i.payment or 1
        elif kind == "late":
            day, amount = max(day, i.due + timedelta(days=draw(st.integers(1, 40)))), i.payment + c["late_fee"]
        elif kind == "partial":
            day, amount = day + timedelta(days=draw(st.integers(0, 20))), max(1, i.payment // 3)
        elif kind == "prepaid":
            day, amount = day + timedelta(days=draw(st.integers(0, 5))), c["principal"] // 2 + 1
        elif kind == "overpaid":
            day, amount = day + timedelta(days=draw(st.integers(0, 30))), 2 * c["principal"] + 7
        else:
            amount = draw(st.integers(1, max(1, c["principal"] // 4)))
        receipts.append(repay(n, amount, day, payee=holder))
    notices = list(notices)
    if draw(st.booleans()):  # a default near the threshold by the likely holder, maybe a writeoff after it
        first = max(plan[0].due, date.fromisoformat(receipts[0].doc["date"]))
        d_day = first + timedelta(days=c["default_days"] + draw(st.integers(-2, 30)))
        notices.append(notice("default", draw(st.sampled_from([L, L, N])), d_day, "d"))
        if draw(st.booleans()):
            notices.append(notice("writeoff", L, d_day + timedelta(days=draw(st.integers(0, 20))), "w"))
    today = draw(st.one_of(
        st.just(today),
        st.builds(lambda k: day + timedelta(days=k), st.integers(-5, 60)),
        st.builds(lambda i, k: i.due + timedelta(days=k), st.sampled_from(plan), st.integers(0, c["grace_days"] + 2)),
    ))
    return c, receipts, transfers, notices, today


@settings(max_examples=150, deadline=None)
@given(paid_loans())
def test_the_executed_table_agrees_with_the_precedence_oracle(loan):
    c, receipts, transfers, notices, today = loan
    s = loan_state(LOAN, c, receipts, transfers, notices, today)
    assert s.days_past_due == rows_days_past_due(s)
    assert s.state == precedence(s, c["grace_days"])
    ms = loan_moves(LOAN, c, receipts, transfers, notices, today)
    assert (ms[-1].after if ms else AWAITING) == s.state
    # rule 9's defaults were judged on days past due recomputed from scratch on their day
    if s.defaulted_on is not None:
        at = loan_state(LOAN, c, receipts, transfers, notices, s.defaulted_on)
        assert at.holder in {x.by for x in notices if x.kind == "default" and x.date == s.defaulted_on}
        assert rows_days_past_due(at) >= c["default_days"]


@settings(max_examples=40, deadline=None)
@given(paid_loans(), st.lists(st.integers(-3, 400), min_size=1, max_size=12))
def test_consecutive_days_take_only_edges_of_the_table(loan, offsets):
    """The run up to a far day holds the run up to every earlier day (a day's events
    never change when today moves on), so the edges between day d-1 and day d are the
    moves dated d: each is an edge of the table, or an event a steady state ignores."""
    c, receipts, transfers, notices, _ = loan
    far = START + timedelta(days=420)
    run = loan_moves(LOAN, c, receipts, transfers, notices, far)
    for m in run:
        if m.before != m.after:
            assert TRANSITIONS[(m.before, m.event)] == m.after
        else:
            assert m.before in STEADY and (m.before, m.event) not in TRANSITIONS
    for a, b in zip(run, run[1:]):
        assert a.after == b.before and a.day <= b.day
        assert a.day < b.day or EVENTS.index(a.event) < EVENTS.index(b.event)  # the order within a day
    assert sum(m.event in MONEY_EVENTS for m in run) == len({m.day for m in run if m.event in MONEY_EVENTS})
    days = {START + timedelta(days=k) for k in offsets} | {m.day for m in run} | {m.day - timedelta(days=1)
                                                                                  for m in run}
    for d in sorted(days):
        prefix = tuple(m for m in run if m.day <= d)
        assert loan_moves(LOAN, c, receipts, transfers, notices, d) == prefix
        assert loan_state(LOAN, c, receipts, transfers, notices, d).state == (prefix[-1].after if prefix
                                                                                else AWAITING)
