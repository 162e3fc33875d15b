"""Who may do what to a loan (protocol/lending/rules.py): every row of the table, the table
as printed, and properties over every key, state and action."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.lending import rules
from protocol.lending.loanstate import (
    AWAITING, CURRENT, DEFAULTED, DELINQUENT, LATE, REPAID, STATES, WRITTEN_OFF, SignedReceipt, SignedTransfer,
    loan_state,
)
from protocol.lending.rules import ACTIONS, RULES, TO_ACTIONS, Refusal, amount_refusal, refusal

from test_loanstate import LOAN, START, B, L, N, X, contract, loans, notice

Y = b"Y" * 32  # one more key: a holder between two transfers
Z = b"Z" * 32  # a key that never holds the claim
C = contract(default_days=30)
BASE = loan_state(LOAN, C, [], [], [], START)


def loan(state: str = CURRENT, holder: bytes = L, holders: tuple[bytes, ...] | None = None,
         default_allowed: bool = False, days_past_due: int = 0, counted: tuple[bytes, ...] = (),
         transfers: tuple[bytes, ...] = ()):
    """A ``LoanState`` of the contract ``C`` (lender L, borrower B) with the fields the rules read."""
    if holders is None:
        holders = (L,) if holder == L else (L, holder)
    return dataclasses.replace(BASE, state=state, holder=holder, holders=holders, default_allowed=default_allowed,
                               days_past_due=days_past_due, counted=counted, transfers=transfers)


def check(action, by, st, to=None):
    return refusal(action, by, C, st, to=to)


# -- every row -----------------------------------------------------------------------------------

ROWS = [
    # (action, by, to, state, the refusal expected: code and message, or None)
    ("disburse", L, None, loan(AWAITING), None),
    ("disburse", B, None, loan(AWAITING), ("not_lender", "only the lender disburses")),
    ("disburse", N, None, loan(AWAITING, holder=N), ("not_lender", "only the lender disburses")),
    ("disburse", L, None, loan(AWAITING, holder=N), ("not_lender", "only the lender disburses")),
    ("disburse", L, None, loan(CURRENT), ("bad_state", "the loan is current, not awaiting disbursement")),
    ("confirm", B, None, loan(AWAITING), None),
    ("confirm", L, None, loan(AWAITING), ("not_borrower", "only the borrower confirms the disbursement")),
    ("confirm", B, None, loan(LATE), ("bad_state", "the loan is late: the disbursement is recorded")),
    # a disbursement dated after today counts already: its loan still awaits it, but a second
    # disbursement receipt would never count
    ("confirm", B, None, loan(AWAITING, counted=(b"r1",)),
     ("bad_state", "the loan is awaiting_disbursement: the disbursement is recorded")),
    ("repay", B, None, loan(AWAITING), None),
    ("repay", B, None, loan(WRITTEN_OFF), None),
    ("repay", L, None, loan(CURRENT), ("not_borrower", "only the borrower repays")),
    ("repay", B, None, loan(REPAID), ("bad_state", "the loan is repaid: nothing more is owed")),
    ("receipt", L, None, loan(DEFAULTED), None),
    ("receipt", N, None, loan(CURRENT, holder=N), None),
    ("receipt", L, None, loan(CURRENT, holder=N),
     ("not_holder", "only the lender holding the claim signs repayment receipts")),
    ("receipt", L, None, loan(AWAITING), ("bad_state", "the disbursement is not confirmed yet")),
    ("receipt", L, None, loan(REPAID), ("bad_state", "the loan is repaid: nothing more is owed")),
    ("default", L, None, loan(DELINQUENT, default_allowed=True, days_past_due=31), None),
    ("default", B, None, loan(DELINQUENT, default_allowed=True, days_past_due=31),
     ("not_holder", "only the lender holding the claim declares a default")),
    ("default", L, None, loan(DELINQUENT, days_past_due=12),
     ("default_not_allowed", "the loan is delinquent, 12 days past due; the contract allows a default at 30")),
    ("writeoff", L, None, loan(DEFAULTED), None),
    ("writeoff", N, None, loan(DEFAULTED), ("not_holder", "only the lender holding the claim writes it off")),
    ("writeoff", L, None, loan(DELINQUENT), ("bad_state", "the loan is delinquent; only a defaulted loan is "
                                                          "written off")),
    ("dispute", B, None, loan(REPAID), None),
    ("dispute", Y, None, loan(CURRENT, holder=N, holders=(L, Y, N)), None),
    ("dispute", L, None, loan(CURRENT, holder=N), None),
    ("dispute", X, None, loan(CURRENT), ("not_party", "only a party to the loan records a dispute")),
    ("transfer", L, N, loan(AWAITING), None),
    ("transfer", N, X, loan(CURRENT, holder=N), None),
    ("transfer", B, N, loan(CURRENT), ("not_holder", "only the lender holding the claim transfers it")),
    ("transfer", L, B, loan(CURRENT), ("bad_peer", "the new lender must be a third party")),
    ("transfer", L, L, loan(CURRENT), ("bad_peer", "the new lender must be a third party")),
    ("transfer", L, N, loan(REPAID), ("bad_state", "the loan is repaid: there is no claim left to transfer")),
    ("take_transfer", L, N, loan(DELINQUENT), None),
    ("take_transfer", X, N, loan(CURRENT), ("not_holder", "the sender does not hold the claim")),
    ("take_transfer", L, B, loan(CURRENT), ("bad_peer", "the new lender must be a third party")),
    ("take_transfer", L, N, loan(REPAID), ("bad_state", "the loan is repaid: there is no claim left to transfer")),
    ("amend", B, None, loan(CURRENT), None),
    ("amend", L, None, loan(DELINQUENT), None),
    ("amend", N, None, loan(LATE, holder=N), None),
    ("amend", L, None, loan(CURRENT, holder=N), ("not_party", "only the borrower and the lender holding the claim "
                                                              "amend a loan")),
    ("amend", X, None, loan(CURRENT), ("not_party", "only the borrower and the lender holding the claim amend a loan")),
    ("amend", B, None, loan(AWAITING), ("bad_state", "the loan is not disbursed yet: there is nothing to reschedule")),
    ("amend", B, None, loan(REPAID), ("bad_state", "the loan is repaid: there is nothing left to reschedule")),
    ("amend", L, None, loan(DEFAULTED), ("bad_state", "the loan is defaulted: an amendment would not count")),
    ("amend", B, None, loan(WRITTEN_OFF), ("bad_state", "the loan is written off: an amendment would not count")),
]


@pytest.mark.parametrize("action,by,to,st_,want", ROWS)
def test_each_row(action, by, to, st_, want):
    assert check(action, by, st_, to) == (None if want is None else Refusal(*want))


def test_every_row_of_the_table_is_exercised_and_every_action_is_allowed_somewhere():
    hit = set()
    for a, by, to, st_, want in ROWS:
        if want is None:
            continue
        r = check(a, by, st_, to)
        hit |= {c for c in RULES if c.action == a and c.code == r.code
                and re.fullmatch(re.sub(r"\\\{\w+\\\}", ".*", re.escape(c.message)), r.message)}
    assert hit == set(RULES), set(RULES) - hit
    assert {a for a, *_, want in ROWS if want is None} == set(ACTIONS)


def _table_rows(doc: str) -> list[tuple[str, str, str, str, str]]:
    """The rows of the docstring's table; a line with a blank first column continues the
    message of the row above (a reStructuredText simple table)."""
    lines = doc.splitlines()
    rules_at = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+){4}", line)]
    head, _, end = rules_at[-3:]
    spans = [(m.start(), m.end()) for m in re.finditer(r"=+", lines[head])]
    rows: list[list[str]] = []
    for line in lines[rules_at[-2] + 1:end]:
        cells = [line[a:(spans[k + 1][0] if k + 1 < len(spans) else None)].strip() for k, (a, _) in enumerate(spans)]
        if cells[0]:
            rows.append(cells)
        else:
            rows[-1][4] += " " + cells[4]
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_the_printed_table_is_the_table():
    assert _table_rows(rules.__doc__) == [tuple(c) for c in RULES]


def test_bad_calls_are_bugs_not_refusals():
    with pytest.raises(ValueError):
        check("lend", L, loan())
    with pytest.raises(ValueError):
        check("transfer", L, loan())  # no "to"
    with pytest.raises(ValueError):
        check("repay", B, loan(), to=N)
    with pytest.raises(ValueError):
        rules.is_party("owner", L, C, loan())
    assert TO_ACTIONS == {"transfer", "take_transfer"}


def test_no_action_signs_a_receipt_on_another_keys_word():
    """Issue 9, item 2: a node never confirms money received on someone else's word, so
    the table has no action a peer's entry makes a node take but ``take_transfer``, which
    moves no money."""
    assert "auto_confirm" not in ACTIONS
    with pytest.raises(ValueError):
        check("auto_confirm", L, loan(AWAITING), B)


# -- properties ------------------------------------------------------------------------------------

KEYS = [L, B, N, X, Y]


@st.composite
def states(draw):
    """A loan state of ``C``: any state, the claim held by L or passed along to N, X or Y."""
    s = draw(st.sampled_from(STATES))
    chain = draw(st.lists(st.sampled_from([N, X, Y]), max_size=3, unique=True))
    holders = (L, *chain)
    held_to = draw(st.integers(0, len(chain)))  # transfers dated after today are in holders only
    default_allowed = s in (LATE, DELINQUENT) and draw(st.booleans())
    return loan(s, holders[held_to], holders, default_allowed, draw(st.integers(0, 400)))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ACTIONS), st.sampled_from(KEYS), states(), st.data())
def test_a_stranger_may_do_nothing(action, to, st_, data):
    by = data.draw(st.sampled_from([k for k in KEYS + [Z] if k != B and k not in st_.holders]), "stranger")
    r = check(action, by, st_, to if action in TO_ACTIONS else None)
    assert r is not None and r.code in {"not_lender", "not_borrower", "not_holder", "not_party"}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ACTIONS), st.sampled_from(KEYS), st.sampled_from(KEYS), states())
def test_who_may(action, by, to, st_):
    allowed = check(action, by, st_, to if action in TO_ACTIONS else None) is None
    if not allowed:
        return
    if action in ("receipt", "default", "writeoff", "transfer", "take_transfer"):
        assert by == st_.holder  # only the holder signs receipts, gives notices and passes the claim on
    if action == "disburse":
        assert by == L == st_.holder and st_.state == AWAITING
    if action in ("confirm", "repay"):
        assert by == B
    if action in ("transfer", "take_transfer"):
        assert to not in (B, st_.holder)
    if action == "default":
        assert st_.state in (LATE, DELINQUENT)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(ACTIONS), st.sampled_from(KEYS), st.sampled_from(KEYS), states())
def test_nothing_but_a_dispute_on_a_repaid_loan(action, by, to, st_):
    st_ = dataclasses.replace(st_, state=REPAID, default_allowed=False)
    r = check(action, by, st_, to if action in TO_ACTIONS else None)
    if action == "dispute":
        assert (r is None) == (by == B or by in st_.holders)
    else:
        assert r is not None


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), st.sampled_from(KEYS), states())
def test_offering_and_taking_a_transfer_are_judged_alike(by, to, st_):
    a, b = check("transfer", by, st_, to), check("take_transfer", by, st_, to)
    assert (a and a.code) == (b and b.code)


# p2pnode/lending/loans.py's checks before this table (its ``_need`` calls, in order), and
# what _react and _transfer_offered checked: the node's behaviour the table replaces.


def legacy(action, by, c, st_, to):
    if action == "disburse":
        if not st_.holder == by == c["lender"]:
            return ("not_lender", "only the lender disburses")
        if st_.state != AWAITING:
            return ("bad_state", f"the loan is {st_.state}, not awaiting disbursement")
    elif action == "confirm":
        if c["borrower"] != by:
            return ("not_borrower", "only the borrower confirms the disbursement")
        if st_.state != AWAITING:
            return ("bad_state", f"the loan is {st_.state}: the disbursement is recorded")
    elif action == "repay":
        if c["borrower"] != by:
            return ("not_borrower", "only the borrower repays")
    elif action == "receipt":
        if st_.holder != by:
            return ("not_holder", "only the lender holding the claim signs repayment receipts")
        if st_.state == AWAITING:
            return ("bad_state", "the disbursement is not confirmed yet")
    elif action == "default":
        if st_.holder != by:
            return ("not_holder", "only the lender holding the claim declares a default")
        if not st_.default_allowed:
            return ("default_not_allowed", f"the loan is {st_.state}, {st_.days_past_due} days past due; "
                                           f"the contract allows a default at {c['default_days']}")
    elif action == "writeoff":
        if st_.holder != by:
            return ("not_holder", "only the lender holding the claim writes it off")
        if st_.state != DEFAULTED:
            return ("bad_state", f"the loan is {st_.state}; only a defaulted loan is written off")
    elif action == "dispute":
        if by not in (c["borrower"], c["lender"], st_.holder):
            return ("not_party", "only a party to the loan records a dispute")
    elif action == "transfer":
        if st_.holder != by:
            return ("not_holder", "only the lender holding the claim transfers it")
        if to in (by, c["borrower"]):
            return ("bad_peer", "the new lender must be a third party")
    elif action == "take_transfer":
        if st_.holder != by:
            return ("not_holder", "the sender does not hold the claim")
    return None


def documented_change(action, by, c, st_, to) -> bool:
    """Where the table deliberately differs from the node before it."""
    return ((st_.state == REPAID and action in ("repay", "receipt", "transfer", "take_transfer"))  # rule 4
            or (action == "dispute" and by in st_.holders)  # every holder, as loan state lists (rule 2)
            or (action == "take_transfer" and to in (c["borrower"], st_.holder))  # loan state: bad_transfer
            or action == "amend")  # new: the node before the table had no amendments


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ACTIONS), st.sampled_from(KEYS), st.sampled_from(KEYS), states())
def test_the_table_is_the_node_before_it_but_for_the_documented_changes(action, by, to, st_):
    to = to if action in TO_ACTIONS else None
    new, old = check(action, by, st_, to), legacy(action, by, C, st_, to)
    if new == (None if old is None else Refusal(*old)):
        return
    assert documented_change(action, by, C, st_, to), (action, new, old)
    assert (new is None) == (action == "dispute")  # stricter everywhere, looser only for disputes


@settings(max_examples=40, deadline=None)
@given(loans())
def test_a_default_is_allowed_exactly_when_its_notice_would_count(loan_):
    """Rule 6, against loan state itself: the holder's default notice given today counts."""
    c, receipts, transfers, notices, today = loan_
    s = loan_state(LOAN, c, receipts, transfers, notices, today)
    r = refusal("default", s.holder, c, s)
    given_ = notice("default", s.holder, today, "now")
    after = loan_state(LOAN, c, receipts, transfers, notices + [given_], today)
    counted = given_.id not in {x.id for x in after.rejected}
    if r is None:  # (a writeoff given the same day counts then too: rule 9 goes by date)
        assert counted and after.defaulted_on == today and after.state in (DEFAULTED, WRITTEN_OFF)
    elif s.defaulted_on is None:
        assert not counted and r.code == "default_not_allowed"


@settings(max_examples=40, deadline=None)
@given(loans(), st.sampled_from(KEYS))
def test_a_dispute_is_allowed_exactly_when_loan_state_lists_it(loan_, by):
    c, receipts, transfers, notices, today = loan_
    s = loan_state(LOAN, c, receipts, transfers, notices, today)
    d = notice("dispute", by, today, "a reason")
    listed = d.id in {x.id for x in loan_state(LOAN, c, receipts, transfers, notices + [d], today).disputes}
    assert (refusal("dispute", by, c, s) is None) == listed
    assert s.holder in s.holders and s.holders[0] == c["lender"]


def test_a_transfer_allowed_by_the_table_applies_in_loan_state():
    from test_loanstate import disbursement, transfer

    c = contract()
    rs = [disbursement(c)]
    day = START + timedelta(days=2)
    s = loan_state(LOAN, c, rs, [], [], day)
    assert refusal("transfer", L, c, s, to=N) is None and refusal("take_transfer", L, c, s, to=N) is None
    t = transfer(L, N, len(s.counted), day)
    assert loan_state(LOAN, c, rs, [t], [], day).holder == N
    assert refusal("transfer", L, c, s, to=B).code == "bad_peer"
    assert loan_state(LOAN, c, rs, [transfer(L, B, 1, day)], [], day).rejected[0].code == "bad_transfer"



# -- what a node records of others' documents (rule 7) -------------------------------------


def _receipt(rid: bytes, payer: bytes, payee: bytes) -> SignedReceipt:
    return SignedReceipt(rid, {"payer": payer, "payee": payee}, payee)


def _transfer(tid: bytes, frm: bytes, to: bytes) -> SignedTransfer:
    return SignedTransfer(tid, {"from": frm, "to": to}, frozenset((frm, to)))


# r1 disburses (L pays B), r2 repays L, then L transfers to N (t1), B repays N (r3), and N
# transfers to Y (t2); r9 (B "pays" X) and t9 (X to Z) are in the store but count for nothing.
RECEIPTS = {r.id: r for r in (_receipt(b"r1", L, B), _receipt(b"r2", B, L), _receipt(b"r3", B, N),
                              _receipt(b"r9", B, X))}
TRANSFERS = {t.id: t for t in (_transfer(b"t1", L, N), _transfer(b"t2", N, Y), _transfer(b"t9", X, Z))}
MOVED = loan(CURRENT, holder=Y, holders=(L, N, Y), counted=(b"r1", b"r2", b"r3"), transfers=(b"t1", b"t2"))


@pytest.mark.parametrize("me,want", [
    (B, (b"r1", b"r2", b"r3", b"t1", b"t2")),  # the borrower: what it paid or was paid, and every transfer
    (L, (b"r1", b"r2", b"t1")),
    (N, (b"r3", b"t1", b"t2")),
    (Y, (b"t2",)),
    (X, ()),  # named by r9 and t9, which do not count, and no party: nothing
    (Z, ()),
])
def test_a_node_records_only_what_counts_and_names_it_and_only_as_a_party(me, want):
    assert rules.to_record(me, C, MOVED, RECEIPTS, TRANSFERS) == want


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([L, B, N, X, Y, Z]), st.lists(st.sampled_from(sorted(RECEIPTS)), unique=True),
       st.lists(st.sampled_from(sorted(TRANSFERS)), unique=True))
def test_what_is_recorded_counts_and_names_the_recorder(me, counted, transfers):
    state = loan(CURRENT, holders=(L, N, Y), counted=tuple(counted), transfers=tuple(transfers))
    got = rules.to_record(me, C, state, RECEIPTS, TRANSFERS)
    assert set(got) <= set(counted) | set(transfers)
    if not rules.is_party(rules.PARTY, me, C, state):
        assert got == ()
    for i in got:
        doc = (RECEIPTS.get(i) or TRANSFERS[i]).doc
        assert me in doc.values() or (i in TRANSFERS and me == B)


# Rule 8: the amount of a repayment declared or receipted.


def test_a_repayment_is_more_than_nothing_and_no_more_than_the_payoff():
    st_ = dataclasses.replace(loan(CURRENT), payoff=120000)
    assert amount_refusal("repay", 120000, st_, "EUR") is None
    assert amount_refusal("receipt", 1, st_, "EUR") is None
    assert amount_refusal("repay", 0, st_, "EUR") == ("bad_amount", "a repayment is more than 0")
    assert amount_refusal("receipt", 10**18, st_, "EUR") == (
        "bad_amount", "10000000000000000.00 EUR is more than the 1200.00 EUR that pays the loan off")
    with pytest.raises(ValueError):
        amount_refusal("disburse", 1, st_, "EUR")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["repay", "receipt"]), st.integers(-10, 10**18), st.integers(0, 10**15))
def test_an_amount_is_allowed_exactly_from_one_minor_unit_to_the_payoff(action, amount, payoff):
    st_ = dataclasses.replace(loan(CURRENT), payoff=payoff)
    assert (amount_refusal(action, amount, st_, "EUR") is None) == (1 <= amount <= payoff)
