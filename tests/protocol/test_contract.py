"""Loan documents and the loan.* entry kinds (protocol/lending/contract.py), and the proposal
states table with its messages (protocol/lending/agree.py)."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending import agree
from protocol.lending.contract import (
    LoanError, Terms, acceptor, check_contract, contract_from, contract_schedule, loan_of, make_receipt,
    open_agreement, open_proposal, open_receipt, open_transfer, propose, terms_mismatch,
)
from protocol.entry import ZERO_ID, make_entry
from protocol.envelope import countersign, seal
from protocol.errors import ProtocolError, SchemaError, SignatureError
from protocol.keys import SigningKey
from protocol.kinds import core_registry
from protocol.lending.contract import LOAN_KINDS
from protocol.wire import WireError


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


LENDER, BORROWER, OTHER = key("lender"), key("borrower"), key("other")
OFFER_ID = hashlib.sha256(b"offer").digest()
HEAD = (3, hashlib.sha256(b"head").digest())
TERMS = Terms("lend", LENDER.public_key, "EUR", 10_000, 500_000, 1200, "12m", None, "annuity", 5, 1500, 90)
T0 = 1_790_000_000_000


def contract(**over):
    doc = contract_from(OFFER_ID, TERMS, taker=BORROWER.public_key, principal=100_000, start=date(2026, 1, 31),
                        lender_head=HEAD, borrower_head=HEAD, created=T0, expires=T0 + 600_000)
    doc.update(over)
    return doc


def agreement(doc=None):
    return countersign(propose(BORROWER, doc or contract()), LENDER)


def test_taking_a_lend_offer_makes_the_taker_borrower_and_the_author_acceptor():
    doc = contract()
    assert (doc["lender"], doc["borrower"], doc["proposer"]) == (LENDER.public_key, BORROWER.public_key,
                                                                 BORROWER.public_key)
    assert acceptor(doc) == LENDER.public_key
    assert terms_mismatch(doc, OFFER_ID, TERMS) is None
    rows = contract_schedule(doc)
    assert len(rows) == 12 and sum(r.principal for r in rows) == 100_000
    assert rows[0].due == date(2026, 2, 28)  # the end of a shorter month


def test_taking_a_request_makes_the_taker_lender():
    req = dataclasses.replace(TERMS, side="borrow", author=BORROWER.public_key)
    doc = contract_from(OFFER_ID, req, taker=LENDER.public_key, principal=10_000, start=date(2026, 1, 1),
                        lender_head=HEAD, borrower_head=HEAD, created=T0, expires=T0 + 1)
    assert doc["lender"] == LENDER.public_key and acceptor(doc) == BORROWER.public_key


@pytest.mark.parametrize("field,value,code", [
    ("lender", BORROWER.public_key, "bad_loan"),
    ("proposer", OTHER.public_key, "bad_loan"),
    ("expires", T0, "bad_loan"),
    ("expires", T0 + 8 * 24 * 3600 * 1000, "bad_loan"),
    ("currency", "XXX", "bad_currency"),
    ("term", "0m", "bad_schema"),
    ("start", "2026-02-30", "bad_date"),
    ("schedule", "balloon", "bad_schema"),
    ("principal", 0, "bad_schema"),
    ("lender_head", [0, ZERO_ID], "bad_schema"),
    ("rate_bp", -1, "bad_schema"),
    ("extra", 1, "bad_schema"),
])
def test_a_contract_breaking_a_rule_is_refused_with_its_code(field, value, code):
    with pytest.raises(ProtocolError) as e:
        check_contract(contract(**{field: value}))
    assert e.value.code == code


def test_terms_mismatch_names_the_field():
    assert "rate_bp" in terms_mismatch(contract(rate_bp=1300), OFFER_ID, TERMS)
    assert "above the offer's" in terms_mismatch(contract(principal=600_000), OFFER_ID, TERMS)
    assert "another offer" in terms_mismatch(contract(offer=ZERO_ID), OFFER_ID, TERMS)
    assert "late_fee" in terms_mismatch(contract(late_fee=0), OFFER_ID, TERMS)


def test_proposal_and_agreement_signatures():
    prop = propose(BORROWER, contract())
    assert open_proposal(prop.raw).id == prop.id
    with pytest.raises(SignatureError):
        open_agreement(prop.raw)  # one signature is not an agreement
    agreed = countersign(prop, LENDER)
    assert agreed.id == prop.id  # countersigning never changes the loan's id
    assert open_agreement(agreed.raw).signers == tuple(sorted([LENDER.public_key, BORROWER.public_key]))
    with pytest.raises(SignatureError):
        open_agreement(countersign(prop, OTHER).raw)
    with pytest.raises(LoanError):
        propose(LENDER, contract())  # only the proposer signs a proposal


def test_receipts_are_signed_by_the_payee_alone():
    r = make_receipt(LENDER, loan=OFFER_ID, n=1, what="repayment", amount=5, day=date(2026, 3, 1),
                     payer=BORROWER.public_key)
    assert open_receipt(r.raw).document["payee"] == LENDER.public_key
    forged = seal(dict(r.document), BORROWER)  # the borrower signs "the lender got paid"
    with pytest.raises(SignatureError) as e:
        open_receipt(forged.raw)
    assert e.value.code == "wrong_signer"
    with pytest.raises(ProtocolError):
        make_receipt(LENDER, loan=OFFER_ID, n=1, what="repayment", amount=5, day=date(2026, 3, 1),
                     payer=LENDER.public_key)


def test_transfers_need_both_lenders():
    doc = {"type": "transfer", "loan": OFFER_ID, "from": LENDER.public_key, "to": OTHER.public_key, "after": 2,
           "date": "2026-05-01"}
    half = seal(doc, LENDER)
    assert open_transfer(half.raw, complete=False).id == half.id
    with pytest.raises(SignatureError):
        open_transfer(half.raw)
    assert open_transfer(countersign(half, OTHER).raw).id == half.id


def _entry(k: SigningKey, kind: str, body, ts: int = T0):
    return make_entry(k, seq=2, prev=hashlib.sha256(b"prev").digest(), ts=ts, kind=kind, body=body)


def lending_registry():
    """The core's kinds and lending's, as a node running lending has them."""
    reg = core_registry()
    for kind in LOAN_KINDS:
        reg.register(kind, "lending")
    return reg


def test_the_loan_kinds_are_lendings():
    loan = ["loan.agreement", "loan.declared", "loan.default", "loan.dispute", "loan.receipt", "loan.transfer",
            "loan.writeoff"]
    reg = lending_registry()
    assert [k.name for k in reg] == ["genesis"] + loan + ["note"]
    assert {reg.owner(n) for n in loan} == {"lending"} and reg.indexed_owners() == {"lending"}


def test_loan_entry_kinds_check_their_documents():
    reg = lending_registry()
    env = agreement()
    assert reg.check(_entry(LENDER, "loan.agreement", {"contract": env.raw})) == "known"
    assert loan_of("loan.agreement", {"contract": env.raw}) == env.id
    with pytest.raises(ProtocolError) as e:
        reg.check(_entry(OTHER, "loan.agreement", {"contract": env.raw}))
    assert e.value.code == "not_party"
    # the countersigner (the lender here) must write its entry before the expiry; the proposer may write later
    late = T0 + 600_001
    with pytest.raises(ProtocolError) as e:
        reg.check(_entry(LENDER, "loan.agreement", {"contract": env.raw}, ts=late))
    assert e.value.code == "expired"
    assert reg.check(_entry(BORROWER, "loan.agreement", {"contract": env.raw}, ts=late)) == "known"
    with pytest.raises(SignatureError):
        reg.check(_entry(BORROWER, "loan.agreement", {"contract": propose(BORROWER, contract()).raw}))
    r = make_receipt(LENDER, loan=env.id, n=1, what="disbursement", amount=100_000, day=date(2026, 1, 31),
                     payer=BORROWER.public_key)
    assert reg.check(_entry(BORROWER, "loan.receipt", {"receipt": r.raw})) == "known"
    assert loan_of("loan.receipt", {"receipt": r.raw}) == env.id
    with pytest.raises(ProtocolError):
        reg.check(_entry(OTHER, "loan.receipt", {"receipt": r.raw}))
    for kind, body in [("loan.declared", {"loan": env.id, "what": "repayment", "amount": 1, "date": "2026-02-01"}),
                       ("loan.default", {"loan": env.id, "date": "2026-09-01"}),
                       ("loan.writeoff", {"loan": env.id, "date": "2026-09-02"}),
                       ("loan.dispute", {"loan": env.id, "reason": "paid in cash on the 3rd"})]:
        assert reg.check(_entry(BORROWER, kind, body)) == "known"
        assert loan_of(kind, body) == env.id
    with pytest.raises(SchemaError):
        reg.check(_entry(BORROWER, "loan.dispute", {"loan": env.id, "reason": "  "}))
    with pytest.raises(ProtocolError):
        reg.check(_entry(BORROWER, "loan.default", {"loan": env.id, "date": "yesterday"}))
    assert loan_of("loan.receipt", {"receipt": b"garbage"}) is None
    assert loan_of("note", {"text": "x"}) is None


# -- the proposal states tables (one per role; the machines are tested in test_agree_machine.py) ---

TABLES = {"proposer": agree.PROPOSER_TABLE, "acceptor": agree.ACCEPTOR_TABLE}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(TABLES)), st.data())
def test_no_event_sequence_leaves_a_final_state_or_the_table(role, data):
    table = TABLES[role]
    events = data.draw(st.lists(st.sampled_from(sorted({e for _, e in table})), max_size=12))
    state = None
    for ev in events:
        nxt = table.get((state, ev))
        if nxt is None:
            continue
        assert state not in agree.FINAL, "a final state never changes"
        state = nxt
    assert state is None or state in {s for s, _ in table} | agree.FINAL


@pytest.mark.parametrize("role", sorted(TABLES))
def test_every_open_state_can_expire_and_only_final_states_are_terminal(role):
    table = TABLES[role]
    opens = {s for (s, _) in table if s is not None} | set(table.values())
    for s in opens:
        if s in agree.FINAL:
            assert not any(k[0] == s for k in table)
        else:  # no stuck states: every open state has an expiry
            assert table[(s, "expire")] == agree.EXPIRED


MESSAGES = [
    agree.Propose(b"\x01" * 40), agree.Accepted(b"\x02" * 40), agree.Accepted(b"\x03" * 9, "transfer"),
    agree.Held(OFFER_ID), agree.Refused(OFFER_ID, "bad_head", "no entry at seq 4"),
    agree.Countersigned(b"\x04" * 50), agree.Ok(OFFER_ID), agree.Transfer(b"\x05" * 12),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_agree_messages_round_trip(msg):
    frame = agree.encode(msg)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert agree.decode(frame[4:]) == msg


@pytest.mark.parametrize("doc", [
    {"type": "propose"}, {"type": "propose", "contract": b""}, {"type": "held", "loan": b"x"},
    {"type": "refused", "loan": OFFER_ID, "code": "", "reason": "r"},
    {"type": "refused", "loan": OFFER_ID, "code": "c", "reason": "r" * 1001},
    {"type": "nope"}, {"type": "ok", "loan": OFFER_ID, "extra": 1}, [1, 2],
])
def test_malformed_agree_messages_are_refused(doc):
    from protocol import codec

    with pytest.raises(WireError):
        agree.decode(codec.encode(doc))


def test_the_acceptors_refusals_come_in_the_documented_order():
    from types import SimpleNamespace

    offer = SimpleNamespace(id=OFFER_ID, **{k: getattr(TERMS, k) for k in TERMS.__dataclass_fields__})
    facts = dict(now_ms=T0, proposer_forked=False, offer=offer, offer_live=True, policy=None,
                 own_head_held=True, proposer_head_held=True)
    doc = contract()
    assert agree.refusal(doc, **facts) is None
    # each fact, made bad on top of the ones after it, gives its own code first
    steps = [("proposer_head_held", False, "bad_head"), ("own_head_held", False, "bad_head"),
             ("policy", "rate_cap: APR 12.68% is above the cap of 10.00%", "policy"), ("offer_live", False, "offer_expired"),
             ("offer", None, "unknown_offer"), ("proposer_forked", True, "fraudulent"),
             ("now_ms", T0 + 600_001, "expired")]
    for name, value, code in steps:
        facts[name] = value
        assert agree.refusal(doc, **facts)[0] == code
    assert agree.refusal(contract(rate_bp=1), **dict(facts, now_ms=T0, proposer_forked=False, offer=offer,
                                                     offer_live=True))[0] == "terms_mismatch"
    assert agree.committed_heads(doc, LENDER.public_key) == (doc["lender_head"], doc["borrower_head"])
