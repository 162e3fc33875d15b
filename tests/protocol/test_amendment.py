"""Amendments (protocol/lending/amendment.py) and what they do to a loan's state
(protocol/lending/loanstate.py, rule 12): exact cases, then properties over mixes of
receipts, transfers, notices and amendments."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.envelope import countersign
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.lending.amendment import (
    AMENDMENT_KINDS, amendment_schedule, check_amendment, make_amendment, open_amendment, propose_amendment, same_terms,
    validate_amendment_entry,
)
from protocol.entry import make_entry
from protocol.kinds import core_registry
from protocol.lending.contract import EMBEDDING, LOAN_KINDS, contract_schedule, embedded_id, loan_of
from protocol.lending.loanstate import (
    CURRENT, DEFAULTED, LATE, MAX_AMENDMENTS, REPAID, SignedAmendment, loan_moves, loan_state,
)

from test_loanstate import (
    B, L, LOAN, N, REACH, START, X, contract, disbursement, loans, notice, on_time, repay, transfer,
)


def _id(doc: dict) -> bytes:
    return hashlib.sha256(codec.encode(doc)).digest()


def amendment(after: int, day: date, *, rate_bp: int = 600, term: str = "6m", kind: str = "annuity",
              holder: bytes = L, borrower: bytes = B, signers=None, loan: bytes = LOAN,
              period_days: int | None = None) -> SignedAmendment:
    doc = {"type": "amendment", "loan": loan, "borrower": borrower, "holder": holder, "after": after,
           "date": day.isoformat(), "rate_bp": rate_bp, "term": term, "schedule": kind}
    if period_days is not None:
        doc["period_days"] = period_days
    return SignedAmendment(_id(doc), doc, frozenset(signers if signers is not None else (borrower, holder)))


def state(c, receipts=(), today=START, transfers=(), notices=(), amendments=()):
    return loan_state(LOAN, c, list(receipts), list(transfers), list(notices), today, list(amendments))


def codes(s) -> dict[bytes, str]:
    return {r.id: r.code for r in s.rejected}


def new_rows(s, a):
    return s.rows[a.first_row - 1:a.first_row - 1 + a.rows]


# -- the document ---------------------------------------------------------------------------------

KB, KH, KX = (SigningKey.from_seed(bytes([i]) * 32) for i in (1, 2, 3))


def doc(**kw) -> dict:
    d = dict(loan=LOAN, borrower=KB.public_key, holder=KH.public_key, after=2, day=date(2026, 3, 1), rate_bp=600,
             term="6m", kind="annuity")
    d.update(kw)
    return make_amendment(**d)


def test_document_fields():
    d = doc()
    assert d == {"type": "amendment", "loan": LOAN, "borrower": KB.public_key, "holder": KH.public_key, "after": 2,
                 "date": "2026-03-01", "rate_bp": 600, "term": "6m", "schedule": "annuity"}
    assert doc(term="12w", period_days=14)["period_days"] == 14


@pytest.mark.parametrize("change, code", [
    ({"after": 0}, "bad_schema"),
    ({"rate_bp": 100_001}, "bad_schema"),
    ({"kind": "balloon"}, "bad_schema"),
    ({"term": "12"}, "bad_schema"),
    ({"term": "30d", "period_days": 7}, "bad_term"),
    ({"term": "6m", "period_days": 30}, "bad_term"),
    ({"day": date(1969, 12, 31)}, "bad_date"),
])
def test_document_refused(change, code):
    with pytest.raises(ProtocolError) as e:
        doc(**change)
    assert e.value.code == code


def test_borrower_and_holder_differ():
    with pytest.raises(ProtocolError) as e:
        doc(holder=KB.public_key)
    assert e.value.code == "bad_loan"


def test_extra_field_refused():
    with pytest.raises(ProtocolError) as e:
        check_amendment(dict(doc(), reason="hardship"))
    assert e.value.code == "bad_schema"


def test_proposal_and_countersignature():
    d = doc()
    half = propose_amendment(KB, d)
    assert open_amendment(half.raw, complete=False).document == d
    with pytest.raises(ProtocolError) as e:
        open_amendment(half.raw)
    assert e.value.code == "wrong_signer"
    full = countersign(half, KH)
    assert full.id == half.id and open_amendment(full.raw).document == d
    with pytest.raises(ProtocolError) as e:
        open_amendment(full.raw, complete=False)
    assert e.value.code == "wrong_signer"
    with pytest.raises(ProtocolError) as e:
        propose_amendment(KX, d)
    assert e.value.code == "not_party"
    with pytest.raises(ProtocolError) as e:  # a stranger's countersignature makes no amendment
        open_amendment(countersign(half, KX).raw)
    assert e.value.code == "wrong_signer"


def test_same_terms():
    a, b = doc(), doc()
    assert same_terms(a, b)
    assert not same_terms(a, doc(rate_bp=601)) and not same_terms(a, doc(after=3))
    assert not same_terms(a, doc(term="12w", period_days=14)) and not same_terms(doc(term="12w"), doc(term="12w", period_days=14))


def test_entry_kind():
    assert EMBEDDING["loan.amendment"] == "amendment"
    reg = core_registry()
    for kind in LOAN_KINDS + AMENDMENT_KINDS:
        reg.register(kind, "lending")
    full = countersign(propose_amendment(KB, doc()), KH)
    body = {"amendment": full.raw}
    entry = make_entry(KB, seq=7, prev=bytes(32), ts=0, kind="loan.amendment", body=body)
    assert reg.classify(entry).status == "known" and reg.owner("loan.amendment") == "lending"
    assert AMENDMENT_KINDS[0].index(entry) == [b"L" + LOAN + KB.public_key + (7).to_bytes(8, "big")]
    stranger = make_entry(KX, seq=7, prev=bytes(32), ts=0, kind="loan.amendment", body=body)
    assert reg.classify(stranger).status == "invalid"
    for author in (KB.public_key, KH.public_key):
        validate_amendment_entry(SimpleNamespace(kind="loan.amendment", author=author, body=body))
    with pytest.raises(ProtocolError) as e:
        validate_amendment_entry(SimpleNamespace(kind="loan.amendment", author=KX.public_key, body=body))
    assert e.value.code == "not_party"
    with pytest.raises(ProtocolError) as e:
        validate_amendment_entry(SimpleNamespace(kind="loan.amendment", author=KB.public_key,
                                                 body={"amendment": propose_amendment(KB, doc()).raw}))
    assert e.value.code == "wrong_signer"
    assert embedded_id("loan.amendment", body) == full.id
    assert loan_of("loan.amendment", body) == LOAN
    assert loan_of("loan.amendment", {"amendment": b"junk"}) is None


def test_schedule_counts_from_the_date():
    rows = amendment_schedule(doc(), 200_000)
    assert rows[0].due == date(2026, 4, 1) and len(rows) == 6
    assert sum(r.principal for r in rows) == 200_000


# -- rule 12: exact cases ---------------------------------------------------------------------------

C = contract()
PLAN = contract_schedule(C)
PAID_ONE = [disbursement(C), repay(2, PLAN[0].payment, PLAN[0].due)]


def test_an_amendment_reschedules_what_is_outstanding():
    a = amendment(2, date(2026, 3, 1))
    s = state(C, PAID_ONE, date(2026, 3, 1), amendments=[a])
    assert s.state == CURRENT and s.rejected == ()
    (x,) = s.amendments
    assert (x.id, x.after, x.start, x.effective, x.arrears) == (a.id, 2, date(2026, 3, 1), date(2026, 3, 1), 0)
    assert x.outstanding_principal == C["principal"] - PLAN[0].principal == s.outstanding_principal
    rows = new_rows(s, x)
    assert [r.due for r in rows] == [date(2026, m, 1) for m in range(4, 10)]
    assert rows == s.rows[3:] and sum(r.principal for r in rows) == x.outstanding_principal
    for r in s.rows[1:3]:  # the old installments not paid: rescheduled, owing nothing, numbers kept
        assert (r.n, r.payment, r.interest, r.principal, r.status) == (r.n, 0, 0, 0, "rescheduled")
    assert rows[0].interest == round(x.outstanding_principal * 0.005)  # 6 % a year, a month
    first = s.rows[0]  # the installment paid before keeps what was paid
    assert (first.due, first.paid_interest, first.paid_principal, first.status) == \
        (PLAN[0].due, PLAN[0].interest, PLAN[0].principal, "paid")
    assert s.to_json()["amendments"] == [x.to_json()]
    # The old schedule's second installment is gone: nothing falls due on 2026-03-15.
    assert state(C, PAID_ONE, date(2026, 3, 31), amendments=[a]).state == CURRENT
    assert state(C, PAID_ONE, date(2026, 3, 31)).state != CURRENT


def test_paying_the_new_schedule_repays_the_loan():
    a = amendment(2, date(2026, 3, 1), term="2m", kind="equal-principal")
    s = state(C, PAID_ONE, date(2026, 3, 1), amendments=[a])
    rows = new_rows(s, s.amendments[0])
    receipts = PAID_ONE + [repay(3 + i, r.payment, r.due) for i, r in enumerate(rows)]
    done = state(C, receipts, date(2026, 6, 1), amendments=[a])
    assert done.state == REPAID and done.repaid_on == rows[-1].due and done.overpaid == 0
    assert done.principal_paid == C["principal"]


def test_arrears_stay_owed_due_on_the_amendment_date():
    a = amendment(1, date(2026, 3, 20))
    late = state(C, PAID_ONE[:1], date(2026, 3, 19))
    assert late.state != CURRENT and late.fees_charged == C["late_fee"]
    s = state(C, PAID_ONE[:1], date(2026, 3, 20), amendments=[a])
    (x,) = s.amendments
    assert x.arrears == PLAN[0].interest + PLAN[1].interest  # both fell due unpaid
    assert x.outstanding_principal == C["principal"]
    arrears = s.rows[x.first_row - 2]
    assert (arrears.due, arrears.interest, arrears.principal) == (date(2026, 3, 20), x.arrears, 0)
    assert s.state == CURRENT and s.fees_charged == C["late_fee"]  # the fee charged before stays owed
    assert s.due_now == x.arrears + C["late_fee"]
    moves = loan_moves(LOAN, C, PAID_ONE[:1], [], [], date(2026, 3, 20), [a])
    assert moves[-1].event == "caught_up" and moves[-1].day == date(2026, 3, 20)
    assert state(C, PAID_ONE[:1], date(2026, 3, 21), amendments=[a]).state == LATE  # the arrears, a day late
    paid = PAID_ONE[:1] + [repay(2, x.arrears + C["late_fee"], date(2026, 3, 20))]
    assert state(C, paid, date(2026, 4, 10), amendments=[a]).state == CURRENT


def test_signers_must_be_borrower_and_holder():
    day = date(2026, 3, 1)
    forged = amendment(2, day, signers=(B,))
    stranger = amendment(2, day, holder=X)
    wrong_borrower = amendment(2, day, borrower=X)
    other_holder = amendment(2, day, holder=N)
    s = state(C, PAID_ONE, day, amendments=[forged, stranger, wrong_borrower, other_holder])
    assert s.amendments == ()
    assert codes(s) == {forged.id: "wrong_signer", stranger.id: "not_holder", wrong_borrower.id: "not_party",
                        other_holder.id: "not_holder"}
    assert dataclasses.replace(s, rejected=()) == state(C, PAID_ONE, day)


def test_after_a_transfer_the_new_holder_signs():
    day = date(2026, 3, 1)
    moved = transfer(L, N, 1, date(2026, 2, 1))
    receipts = [disbursement(C), repay(2, PLAN[0].payment, PLAN[0].due, payee=N)]
    old = amendment(2, day, holder=L)
    new = amendment(2, day, holder=N)
    s = state(C, receipts, day, transfers=[moved], amendments=[old, new])
    assert [x.id for x in s.amendments] == [new.id] and codes(s) == {old.id: "not_holder"}
    # A transfer made at the same point applies first: the amendment is the new holder's.
    same_point = transfer(L, N, 2, date(2026, 2, 20))
    s = state(C, PAID_ONE, day, transfers=[same_point], amendments=[old, new])
    assert [x.id for x in s.amendments] == [new.id]


def test_rivals_after_the_same_receipt():
    a, b = amendment(2, date(2026, 3, 1)), amendment(2, date(2026, 3, 2), rate_bp=0)
    s = state(C, PAID_ONE, date(2026, 3, 5), amendments=[a, b])
    low, high = sorted((a, b), key=lambda x: x.id)
    assert [x.id for x in s.amendments] == [low.id] and codes(s) == {high.id: "conflict"}


def test_not_reached_and_bad_date():
    early = amendment(2, PLAN[0].due - timedelta(days=1))  # before receipt 2
    ahead = amendment(3, date(2026, 3, 1))
    s = state(C, PAID_ONE, date(2026, 3, 5), amendments=[early, ahead])
    assert codes(s) == {early.id: "bad_date", ahead.id: "not_reached"} and s.amendments == ()
    same_day = amendment(2, PLAN[0].due)
    assert state(C, PAID_ONE, date(2026, 3, 5), amendments=[same_day]).amendments[0].effective == PLAN[0].due
    moved = transfer(L, N, 2, date(2026, 3, 3))
    s = state(C, PAID_ONE, date(2026, 3, 5), transfers=[moved], amendments=[amendment(2, date(2026, 3, 2), holder=N)])
    assert list(codes(s).values()) == ["bad_date"]  # before the transfer made before it


def test_terms_that_make_no_schedule():
    far = amendment(2, date(9990, 1, 1), term="240m")
    s = state(C, PAID_ONE, date(2026, 3, 5), amendments=[far])
    assert codes(s) == {far.id: "bad_schedule"}


def test_not_after_repaid_or_defaulted():
    paid_off = [disbursement(C), repay(2, C["principal"], date(2026, 2, 1))]
    a = amendment(2, date(2026, 2, 2))
    s = state(C, paid_off, date(2026, 2, 5), amendments=[a])
    assert s.state == REPAID and codes(s) == {a.id: "bad_state"}
    default = notice("default", L, date(2026, 3, 20))
    b = amendment(1, date(2026, 3, 25))
    s = state(C, PAID_ONE[:1], date(2026, 3, 25), notices=[default], amendments=[b])
    assert s.state == DEFAULTED and codes(s) == {b.id: "bad_state"}
    c = amendment(1, date(2026, 3, 20))  # on the default's day: the amendment comes first, and no default counts
    s = state(C, PAID_ONE[:1], date(2026, 3, 25), notices=[default], amendments=[c])
    assert [x.id for x in s.amendments] == [c.id] and s.state == LATE  # (its arrears, unpaid since)
    assert {r.code for r in s.rejected} == {"default_not_allowed"}


def test_effective_at_the_next_receipt_if_that_is_earlier():
    a = amendment(2, date(2026, 3, 10))
    receipts = PAID_ONE + [repay(3, 1000, date(2026, 3, 5))]
    s = state(C, receipts, date(2026, 3, 10), amendments=[a])
    (x,) = s.amendments
    assert (x.start, x.effective) == (date(2026, 3, 10), date(2026, 3, 5))
    assert s.principal_paid == PLAN[0].principal + 1000  # a prepayment under the new terms


def test_not_in_effect_before_its_day():
    a = amendment(2, date(2026, 3, 1))
    before = state(C, PAID_ONE, date(2026, 2, 28), amendments=[a])
    assert before == state(C, PAID_ONE, date(2026, 2, 28))


def test_amendments_in_sequence():
    a = amendment(2, date(2026, 3, 1), term="6m")
    s1 = state(C, PAID_ONE, date(2026, 3, 1), amendments=[a])
    first = new_rows(s1, s1.amendments[0])[0]
    receipts = PAID_ONE + [repay(3, first.payment, first.due)]
    b = amendment(3, date(2026, 4, 15), rate_bp=0, term="3m", kind="equal-principal")
    s = state(C, receipts, date(2026, 4, 15), amendments=[a, b])
    x, y = s.amendments
    assert y.outstanding_principal == x.outstanding_principal - first.principal == s.outstanding_principal
    assert [r.interest for r in new_rows(s, y)] == [0, 0, 0]
    assert sum(r.principal for r in new_rows(s, y)) == y.outstanding_principal
    assert s.rows[x.first_row - 1].paid_principal == first.principal  # what was paid of a's schedule stays


def test_at_most_max_amendments():
    receipts = [disbursement(C)] + [repay(n, 1, START + timedelta(days=n)) for n in range(2, MAX_AMENDMENTS + 3)]
    many = [amendment(k, START + timedelta(days=k)) for k in range(1, MAX_AMENDMENTS + 2)]
    s = state(C, receipts, START + timedelta(days=60), amendments=many)
    assert len(s.amendments) == MAX_AMENDMENTS and list(codes(s).values()) == ["too_many"]


def test_other_loans_amendments_are_ignored():
    other = amendment(2, date(2026, 3, 1), loan=b"\x01" * 32)
    assert state(C, PAID_ONE, date(2026, 3, 5), amendments=[other]) == state(C, PAID_ONE, date(2026, 3, 5))


# -- properties -------------------------------------------------------------------------------------


@st.composite
def amended_loans(draw):
    """``test_loanstate.loans()`` and amendments: mostly signed by the borrower and the
    right holder, after receipts that exist, some forged, by strangers or in conflict."""
    c, receipts, transfers, notices, today = draw(loans())
    count = max(r.doc["n"] for r in receipts)
    amendments = []
    for _ in range(draw(st.integers(0, 4))):
        after = draw(st.integers(1, count + 1))
        base = max((date.fromisoformat(r.doc["date"]) for r in receipts if r.doc["n"] == after), default=START)
        day = base + timedelta(days=draw(st.integers(-2, 40)))
        holder = draw(st.sampled_from([L, L, N, X]))
        signers = draw(st.sampled_from([None, None, None, (B,), (B, X)]))
        amendments.append(amendment(after, day, holder=holder, signers=signers,
                                    rate_bp=draw(st.integers(0, 3000)), term=draw(st.sampled_from(["1m", "3m", "6w"])),
                                    kind=draw(st.sampled_from(["annuity", "equal-principal", "interest-only",
                                                               "bullet"]))))
    return c, receipts, transfers, notices, today, amendments


def _evaluate(loan, amendments=None):
    c, receipts, transfers, notices, today, mine = loan
    return loan_state(LOAN, c, receipts, transfers, notices, today, mine if amendments is None else amendments)


@settings(max_examples=80, deadline=None)
@given(amended_loans())
def test_new_principal_parts_sum_to_the_outstanding_principal(loan):
    c, receipts, transfers, notices, today, amendments = loan
    s = _evaluate(loan)
    for x in s.amendments:  # each as it applied (a later amendment reschedules what it left unpaid)
        at = loan_state(LOAN, c, receipts, transfers, notices, x.effective, amendments)
        y = at.amendments[-1]  # x, or one in effect the same day after it
        rows = new_rows(at, y)
        assert len(rows) == y.rows and sum(r.principal for r in rows) == y.outstanding_principal >= 1
        assert all(r.due > y.start for r in rows)
        assert at.amendments == s.amendments[:len(at.amendments)]
    if s.disbursed_on is not None:
        assert s.principal_paid + s.outstanding_principal == c["principal"]
        for r in s.rows:
            assert r.paid_interest + r.interest_waived <= r.interest and r.paid_principal <= r.principal


@settings(max_examples=60, deadline=None)
@given(amended_loans(), st.randoms(use_true_random=False))
def test_input_order_does_not_matter(loan, rnd):
    c, receipts, transfers, notices, today, amendments = loan
    before = _evaluate(loan)
    lists = [list(receipts), list(transfers), list(notices), list(amendments) + list(amendments[:1])]
    for xs in lists:
        rnd.shuffle(xs)
    assert loan_state(LOAN, c, lists[0], lists[1], lists[2], today, lists[3]) == before


@settings(max_examples=60, deadline=None)
@given(amended_loans())
def test_no_amendment_is_the_contract_alone(loan):
    c, receipts, transfers, notices, today, _ = loan
    alone = loan_state(LOAN, c, receipts, transfers, notices, today)
    assert _evaluate(loan, []) == alone and alone.amendments == ()
    assert loan_moves(LOAN, c, receipts, transfers, notices, today, []) == \
        loan_moves(LOAN, c, receipts, transfers, notices, today)


@settings(max_examples=60, deadline=None)
@given(amended_loans())
def test_an_amendment_by_a_non_party_or_non_holder_does_not_count(loan):
    c, receipts, transfers, notices, today, amendments = loan
    s = _evaluate(loan)
    by_id = {a.id: a for a in amendments}
    holders = {c["lender"], *(t.doc["to"] for t in transfers)}
    for x in s.amendments:
        a = by_id[x.id]
        assert a.signers == {c["borrower"], a.doc["holder"]} and a.doc["holder"] in holders
    outsiders = [a for a in amendments if X in a.signers or a.signers == {B}]
    with_outsiders = _evaluate(loan, outsiders)
    assert with_outsiders.amendments == ()
    alone = loan_state(LOAN, c, receipts, transfers, notices, today)
    assert dataclasses.replace(with_outsiders, rejected=alone.rejected) == alone


@settings(max_examples=60, deadline=None)
@given(amended_loans())
def test_the_money_adds_up_when_amended(loan):
    c, receipts, transfers, notices, today, amendments = loan
    s = _evaluate(loan)
    by_id = {r.id: r for r in receipts}
    paid = sum(by_id[i].doc["amount"] for i in s.counted[1:] if date.fromisoformat(by_id[i].doc["date"]) <= today)
    assert s.fees_paid + s.interest_paid + s.principal_paid == paid - s.overpaid
    if s.disbursed_on is not None:
        assert (s.state == REPAID) == (s.payoff == 0) == (s.outstanding_principal == 0)
    assert 0 <= s.due_now <= s.payoff
    counted = [x.id for x in s.amendments]
    assert len(set(counted)) == len(counted) and set(counted) <= {a.id for a in amendments}
    assert set(counted).isdisjoint({r.id for r in s.rejected})
    assert [x.after for x in s.amendments] == sorted({x.after for x in s.amendments})  # one per point, in order


@settings(max_examples=20, deadline=None)
@given(amended_loans())
def test_state_moves_only_along_the_table_when_amended(loan):
    c, receipts, transfers, notices, _, amendments = loan
    last = None
    for k in range(-1, 200, 3):
        s = loan_state(LOAN, c, receipts, transfers, notices, START + timedelta(days=k), amendments)
        if last is not None:
            assert s.state in REACH[last], f"{last} -> {s.state} on day {k}"
        last = s.state


def test_on_time_loans_are_untouched_by_amendments_of_strangers():
    c = contract()
    receipts = on_time(c)
    forged = amendment(2, date(2026, 3, 1), holder=X)
    assert dataclasses.replace(state(c, receipts, date(2026, 5, 1), amendments=[forged]), rejected=()) == \
        state(c, receipts, date(2026, 5, 1))


# -- the agree message and what a node records ---------------------------------------------------


def test_amend_message_round_trips_and_is_bounded():
    from protocol.lending import agree
    from protocol.wire import WireError

    full = countersign(propose_amendment(KB, doc()), KH)
    for msg in (agree.Amend(full.raw), agree.Accepted(full.raw, "amendment")):
        frame = agree.encode(msg)
        assert agree.decode(frame[4:]) == msg
    for bad in ({"type": "amend"}, {"type": "amend", "amendment": "text"}, {"type": "amend", "amendment": b""},
                {"type": "amend", "amendment": b"x", "loan": LOAN}):
        with pytest.raises(WireError):
            agree.decode(codec.encode(bad))


def test_each_signer_records_a_counted_amendment_and_no_one_else():
    from protocol.lending.rules import to_record

    a = amendment(2, date(2026, 3, 1))
    s = state(C, PAID_ONE, date(2026, 3, 5), amendments=[a])
    receipts = {r.id: r for r in PAID_ONE}
    for me in (L, B):
        assert to_record(me, C, s, receipts, {}, {a.id: a})[-1] == a.id
    assert to_record(X, C, s, receipts, {}, {a.id: a}) == ()
    forged = amendment(2, date(2026, 3, 1), signers=(B,))
    s = state(C, PAID_ONE, date(2026, 3, 5), amendments=[forged])
    assert forged.id not in to_record(B, C, s, receipts, {}, {forged.id: forged})
    # After a transfer the former lender records the receipts it was paid, not the new holder's amendment.
    moved = transfer(L, N, 2, date(2026, 2, 20))
    b = amendment(2, date(2026, 3, 1), holder=N)
    s = state(C, PAID_ONE, date(2026, 3, 5), transfers=[moved], amendments=[b])
    assert b.id not in to_record(L, C, s, receipts, {moved.id: moved}, {b.id: b})
    assert to_record(N, C, s, receipts, {moved.id: moved}, {b.id: b})[-1] == b.id
