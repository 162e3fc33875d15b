"""The countersigning conversation as state machines (protocol/lending/agree.py, rules 4 to 7):
every row of both tables, the action sequences that matter, and a simulated pair of nodes
(Hypothesis stateful) over a channel that drops, duplicates, delays and reorders, with
crashes, a virtual clock per node and the owner's review. No streams, no store."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import date
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import InvalidArgument
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from protocol import codec
from protocol.envelope import countersign, open_envelope
from protocol.keys import SigningKey
from protocol.lending import agree
from protocol.lending.agree import (
    AGREED, EXPIRED, FINAL, HELD, IN, OUT, PENDING, PROPOSED, REFUSED, Accepted, Acceptor, AgreeError,
    AgreementSeen, Answer, AnswerReceived, AppendAgreement, ConsumeOffer, Countersigned, CountersignedPushed, Facts,
    Held, Ok, OwnerAccepted, OwnerProposed, OwnerRejected, Persist, ProposalReceived, Proposer, Push, Record,
    Refused, RefusalPushed, ReportRefusal, ScheduleResend, SendFailed, SendProposal, Tick,
)
from protocol.lending.contract import Terms, contract_from, propose


def key(name: str) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(name.encode()).digest())


LENDER, BORROWER, STRANGER = key("lender"), key("borrower"), key("stranger")
OFFER_ID = hashlib.sha256(b"offer").digest()
HEAD = (3, hashlib.sha256(b"head").digest())
TERMS = Terms("lend", LENDER.public_key, "EUR", 10_000, 500_000, 1200, "12m", None, "annuity", 5, 1500, 90)
OFFER = SimpleNamespace(id=OFFER_ID, **{f.name: getattr(TERMS, f.name) for f in dataclasses.fields(TERMS)})
T0 = 1_790_000_000_000
TTL = 20_000
EXP = T0 + TTL


def _proposal(principal: int = 100_000) -> bytes:
    doc = contract_from(OFFER_ID, TERMS, taker=BORROWER.public_key, principal=principal, start=date(2026, 1, 31),
                        lender_head=HEAD, borrower_head=HEAD, created=T0, expires=EXP)
    return propose(BORROWER, doc).raw


def _countersign(proposal: bytes) -> bytes:
    return countersign(open_envelope(proposal), LENDER).raw


PROPOSAL = _proposal()
LOAN = open_envelope(PROPOSAL).id
AGREEMENT = _countersign(PROPOSAL)
OTHER_AGREEMENT = _countersign(_proposal(200_000))  # an agreement to another contract
GOOD = Facts(proposer_forked=False, offer=OFFER, offer_live=True, policy=None, own_head_held=True,
             proposer_head_held=True)
OVER_CAP = dataclasses.replace(GOOD, policy="rate_cap: APR 12.68% is above the cap of 10.00%")


class Signer:
    """The acceptor's ``sign``: countersigns with the lender's key, and counts."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, proposal: bytes) -> bytes:
        self.calls += 1
        return _countersign(proposal)


def proposer(state: str | None = None, **fields) -> Proposer:
    if state is None:
        return Proposer.new(PROPOSAL)
    contract = AGREEMENT if state == AGREED else PROPOSAL
    return Proposer.from_record(Record(LOAN, OUT, state, contract, **fields))


def acceptor(state: str | None = None, sign: Signer | None = None, **fields) -> Acceptor:
    sign = sign or Signer()
    if state is None:
        return Acceptor.new(PROPOSAL, sign=sign)
    contract = AGREEMENT if state == AGREED else PROPOSAL
    return Acceptor.from_record(Record(LOAN, IN, state, contract, **fields), sign=sign)


def tally(text: str) -> None:
    """Count ``text`` in Hypothesis's statistics (``--hypothesis-show-statistics``)."""
    from hypothesis import event

    try:
        event(text)
    except InvalidArgument:
        pass  # outside a Hypothesis test: the crash tests run the simulation by hand


def kinds(actions) -> list[type]:
    return [type(a) for a in actions]


# -- every row of both tables -----------------------------------------------------------------

ROWS = [
    # (side, from, table event, the event fed, the actions it yields)
    (OUT, None, "propose", OwnerProposed(T0), [Persist, SendProposal]),
    (OUT, PROPOSED, "held", AnswerReceived(T0, Held(LOAN)), [Persist]),
    (OUT, HELD, "held", AnswerReceived(T0, Held(LOAN)), [Persist]),
    (OUT, PROPOSED, "accepted", AnswerReceived(T0, Accepted(AGREEMENT)), [AppendAgreement, Persist]),
    (OUT, HELD, "accepted", AnswerReceived(T0, Accepted(AGREEMENT)), [AppendAgreement, Persist]),
    (OUT, PROPOSED, "refused", AnswerReceived(T0, Refused(LOAN, "policy", "too dear")), [Persist]),
    (OUT, HELD, "refused", AnswerReceived(T0, Refused(LOAN, "policy", "too dear")), [Persist]),
    (OUT, PROPOSED, "refused", RefusalPushed(T0, LENDER.public_key, "rejected", "no"), [Persist, Answer]),
    (OUT, HELD, "refused", RefusalPushed(T0, LENDER.public_key, "rejected", "no"), [Persist, Answer]),
    (OUT, PROPOSED, "seen_agreement", AgreementSeen(T0, AGREEMENT), [AppendAgreement, Persist]),
    (OUT, HELD, "seen_agreement", AgreementSeen(T0, AGREEMENT), [AppendAgreement, Persist]),
    (OUT, HELD, "seen_agreement", CountersignedPushed(T0, AGREEMENT), [AppendAgreement, Persist, Answer]),
    (OUT, PROPOSED, "expire", Tick(EXP + 1), [Persist]),
    (OUT, HELD, "expire", Tick(EXP + 1), [Persist]),
    (IN, None, "receive", ProposalReceived(T0, GOOD, review=True), [Persist, Answer]),
    (IN, None, "countersign", ProposalReceived(T0, GOOD), [AppendAgreement, Persist, ConsumeOffer, Answer]),
    (IN, None, "refuse", ProposalReceived(T0, OVER_CAP), [Persist, ReportRefusal, Answer]),
    (IN, None, "seen_agreement", ProposalReceived(T0, recorded=AGREEMENT), [Persist, ConsumeOffer, Answer]),
    (IN, None, "seen_agreement", AgreementSeen(T0, AGREEMENT), [AppendAgreement, Persist, ConsumeOffer]),
    (IN, PENDING, "countersign", OwnerAccepted(T0, offer_live=True), [AppendAgreement, Persist, ConsumeOffer, Push]),
    (IN, PENDING, "refuse", OwnerRejected(T0, "not this month"), [Persist, Push]),
    (IN, PENDING, "refuse", OwnerAccepted(T0, offer_live=False), [Persist, ReportRefusal]),
    (IN, PENDING, "seen_agreement", CountersignedPushed(T0, AGREEMENT),
     [AppendAgreement, Persist, ConsumeOffer, Answer]),
    (IN, PENDING, "expire", Tick(EXP + 1), [Persist]),
    (IN, PENDING, "expire", OwnerAccepted(EXP + 1, offer_live=True), [Persist, ReportRefusal]),
]


def test_every_row_of_both_tables_has_a_case():
    covered = {(side, s, e) for side, s, e, _, _ in ROWS}
    rows = {(OUT, s, e) for s, e in agree.PROPOSER_TABLE} | {(IN, s, e) for s, e in agree.ACCEPTOR_TABLE}
    assert covered == rows


@pytest.mark.parametrize("side, state, table_event, ev, expected", ROWS,
                         ids=[f"{side}-{s}-{e}-{type(ev).__name__}" for side, s, e, ev, _ in ROWS])
def test_each_row_moves_as_its_table_says_and_stores_before_it_tells(side, state, table_event, ev, expected):
    m = proposer(state) if side == OUT else acceptor(state)
    table = agree.PROPOSER_TABLE if side == OUT else agree.ACCEPTOR_TABLE
    actions = m.handle(ev)
    assert m.state == table[(state, table_event)]
    assert kinds(actions) == expected
    persist = next(a for a in actions if isinstance(a, Persist))
    assert persist.record == m.record() and persist.record.updated == ev.now_ms
    assert persist.record.role == side and persist.record.loan == LOAN


# -- moves the tables lack ------------------------------------------------------------------------


@pytest.mark.parametrize("make, ev, code", [
    (lambda: proposer(PROPOSED), OwnerProposed(T0), "bad_transition"),
    (lambda: proposer(AGREED), OwnerProposed(T0), "bad_transition"),
    (lambda: proposer(), AnswerReceived(T0, Held(LOAN)), "bad_transition"),
    (lambda: proposer(PROPOSED), ProposalReceived(T0, GOOD), "bad_transition"),
    (lambda: proposer(HELD), OwnerAccepted(T0, True), "bad_transition"),
    (lambda: acceptor(), OwnerProposed(T0), "bad_transition"),
    (lambda: acceptor(PENDING), AnswerReceived(T0, Held(LOAN)), "bad_transition"),
    (lambda: acceptor(PENDING), SendFailed(T0), "bad_transition"),
    (lambda: acceptor(), OwnerAccepted(T0, True), "bad_transition"),
    (lambda: acceptor(AGREED), OwnerAccepted(T0, True), "bad_transition"),
    (lambda: acceptor(REFUSED), OwnerRejected(T0, "no"), "bad_transition"),
    (lambda: proposer(PROPOSED), AnswerReceived(T0, Accepted(OTHER_AGREEMENT)), "bad_message"),
    (lambda: proposer(PROPOSED), AnswerReceived(T0, Accepted(AGREEMENT, "transfer")), "bad_message"),
    (lambda: proposer(PROPOSED), AnswerReceived(T0, Ok(LOAN)), "unexpected_message"),
    (lambda: acceptor(PENDING), AgreementSeen(T0, OTHER_AGREEMENT), "bad_message"),
])
def test_a_move_the_table_lacks_raises_with_a_stable_code_and_changes_nothing(make, ev, code):
    m = make()
    before = (m.state, m.record())
    with pytest.raises(AgreeError) as e:
        m.handle(ev)
    assert e.value.code == code
    assert (m.state, m.record()) == before


def test_a_new_proposal_fed_without_facts_is_the_nodes_mistake():
    m = acceptor()
    with pytest.raises(ValueError):
        m.handle(ProposalReceived(T0))
    assert m.state is None


def test_a_bad_answer_leaves_the_send_in_flight_for_the_node_to_report_as_failed():
    m = proposer()
    m.handle(OwnerProposed(T0))
    with pytest.raises(AgreeError):
        m.handle(AnswerReceived(T0 + 1, Accepted(OTHER_AGREEMENT)))
    assert m.in_flight and m.handle(Tick(T0 + 2)) == []  # still one send at a time
    assert m.handle(SendFailed(T0 + 3)) == [ScheduleResend(T0 + 3 + agree.QUICK_RESENDS_MS[0])]


@pytest.mark.parametrize("record", [
    Record(LOAN, IN, PROPOSED, PROPOSAL), Record(LOAN, OUT, PENDING, PROPOSAL), Record(LOAN, OUT, "lost", PROPOSAL),
])
def test_a_record_of_an_unknown_state_for_its_side_is_refused(record):
    with pytest.raises(agree.RecordError, match="damaged: .*no state"):
        agree.conversation(record, sign=Signer())


def test_a_record_resumes_as_its_sides_machine_only():
    assert isinstance(agree.conversation(Record(LOAN, OUT, HELD, PROPOSAL), sign=Signer()), Proposer)
    assert isinstance(agree.conversation(Record(LOAN, IN, PENDING, PROPOSAL), sign=Signer()), Acceptor)
    with pytest.raises(ValueError):
        Proposer.from_record(Record(LOAN, IN, PENDING, PROPOSAL))
    with pytest.raises(ValueError):
        Acceptor.from_record(Record(LOAN, OUT, HELD, PROPOSAL), sign=Signer())


# -- the action sequences that matter -------------------------------------------------------------


def test_the_proposal_is_stored_durably_before_it_is_sent():
    m = proposer()
    actions = m.handle(OwnerProposed(T0))
    assert actions == [Persist(Record(LOAN, OUT, PROPOSED, PROPOSAL, updated=T0)),
                       SendProposal(LENDER.public_key, PROPOSAL)]


def test_the_agreement_is_appended_before_it_is_stored_as_agreed_on_both_sides():
    p = proposer(PROPOSED)
    assert p.handle(AnswerReceived(T0, Accepted(AGREEMENT))) == [
        AppendAgreement(AGREEMENT), Persist(Record(LOAN, OUT, AGREED, AGREEMENT, updated=T0))]
    sign = Signer()
    a = acceptor(sign=sign)
    assert a.handle(ProposalReceived(T0, GOOD)) == [
        AppendAgreement(AGREEMENT), Persist(Record(LOAN, IN, AGREED, AGREEMENT, updated=T0)),
        ConsumeOffer(OFFER_ID), Answer(Accepted(AGREEMENT))]
    assert sign.calls == 1


def test_an_acceptor_countersigns_up_to_the_expiry_by_its_clock_and_never_after():
    sign = Signer()
    assert kinds(acceptor(sign=sign).handle(ProposalReceived(EXP, GOOD)))[0] is AppendAgreement
    assert sign.calls == 1
    late = acceptor(sign=sign)
    actions = late.handle(ProposalReceived(EXP + 1, GOOD))
    assert late.state == REFUSED and sign.calls == 1
    assert actions[-1] == Answer(Refused(LOAN, "expired", "the proposal arrived after its expiry"))


def test_a_late_accept_after_expiry_signs_nothing():
    sign = Signer()
    m = acceptor(PENDING, sign=sign)
    actions = m.handle(OwnerAccepted(EXP + 1, offer_live=True))
    assert m.state == EXPIRED and sign.calls == 0
    assert actions == [Persist(Record(LOAN, IN, EXPIRED, PROPOSAL, updated=EXP + 1)),
                       ReportRefusal("expired", "the proposal has expired; nothing was signed")]
    assert not any(isinstance(a, (AppendAgreement, Push)) for a in actions)
    assert m.handle(ProposalReceived(EXP + 2, GOOD)) == [
        Answer(Refused(LOAN, "expired", "the proposal expired before it was accepted"))]


def test_an_accept_of_an_offer_gone_meanwhile_signs_nothing():
    sign = Signer()
    m = acceptor(PENDING, sign=sign)
    actions = m.handle(OwnerAccepted(T0, offer_live=False))
    assert m.state == REFUSED and m.code == "offer_expired" and sign.calls == 0
    assert actions[1] == ReportRefusal("offer_expired", m.reason)


@pytest.mark.parametrize("facts, review, first", [
    (GOOD, False, Accepted(AGREEMENT)),
    (OVER_CAP, False, Refused(LOAN, "policy", "rate_cap: APR 12.68% is above the cap of 10.00%")),
    (GOOD, True, Held(LOAN)),
])
def test_a_repeated_proposal_gets_the_same_answer_from_the_record_alone(facts, review, first):
    sign = Signer()
    m = acceptor(sign=sign)
    assert m.handle(ProposalReceived(T0, facts, review))[-1] == Answer(first)
    stored = m.record()
    # asked again, with other facts or none, even after its expiry, and after a restart: the same
    for again in (m, Acceptor.from_record(Record.decode(LOAN, stored.encode()), sign=sign)):
        for ev in (ProposalReceived(T0 + 5, None), ProposalReceived(T0 + 6, OVER_CAP, not review),
                   ProposalReceived(EXP + 9, GOOD, review)):
            assert again.handle(ev) == [Answer(first)]
        assert again.record() == stored
    assert sign.calls == (1 if first == Accepted(AGREEMENT) else 0)


def test_a_held_proposal_accepted_by_the_owner_is_pushed_to_the_proposer():
    sign = Signer()
    m = acceptor(sign=sign)
    m.handle(ProposalReceived(T0, GOOD, review=True))
    actions = m.handle(OwnerAccepted(T0 + 100, offer_live=True))
    assert actions == [AppendAgreement(AGREEMENT), Persist(Record(LOAN, IN, AGREED, AGREEMENT, updated=T0 + 100)),
                       ConsumeOffer(OFFER_ID), Push(BORROWER.public_key, Countersigned(AGREEMENT))]
    assert sign.calls == 1
    assert m.handle(ProposalReceived(T0 + 200)) == [Answer(Accepted(AGREEMENT))]


def test_a_held_proposal_rejected_by_the_owner_is_pushed_and_answered_alike():
    m = acceptor(PENDING)
    actions = m.handle(OwnerRejected(T0, "too soon"))
    assert actions[1] == Push(BORROWER.public_key, Refused(LOAN, "rejected", "too soon"))
    assert m.handle(ProposalReceived(T0 + 1)) == [Answer(Refused(LOAN, "rejected", "too soon"))]


def test_the_proposer_resends_quickly_twice_then_on_each_tick_one_send_at_a_time():
    m = proposer()
    m.handle(OwnerProposed(T0))
    assert m.handle(Tick(T0 + 1)) == []  # in flight
    assert m.handle(SendFailed(T0 + 10)) == [ScheduleResend(T0 + 60)]
    assert m.handle(Tick(T0 + 60)) == [SendProposal(LENDER.public_key, PROPOSAL)]
    assert m.handle(SendFailed(T0 + 70)) == [ScheduleResend(T0 + 270)]
    assert m.handle(Tick(T0 + 270)) == [SendProposal(LENDER.public_key, PROPOSAL)]
    assert m.handle(SendFailed(T0 + 280)) == []  # quick resends spent: the ticks ask again
    assert m.handle(Tick(T0 + 2000)) == [SendProposal(LENDER.public_key, PROPOSAL)]
    assert m.handle(SendFailed(T0 + 2001)) == []


def test_an_unreachable_peer_is_left_to_the_ticks():
    m = proposer()
    m.handle(OwnerProposed(T0))
    assert m.handle(SendFailed(T0 + 1, connected=False)) == []
    m.handle(Tick(T0 + 2))
    assert m.handle(SendFailed(T0 + 3, connected=True)) == []


def test_a_held_proposal_is_asked_about_again_every_held_retry():
    m = proposer(PROPOSED)
    m.handle(AnswerReceived(T0, Held(LOAN)))
    assert kinds(m.handle(Tick(T0 + 1))) == [SendProposal]  # the first tick asks at once, as today
    m.handle(AnswerReceived(T0 + 2, Held(LOAN)))
    assert m.handle(Tick(T0 + 1 + agree.HELD_RETRY_MS - 1)) == []
    assert kinds(m.handle(Tick(T0 + 1 + agree.HELD_RETRY_MS))) == [SendProposal]


def test_expiry_is_strictly_after_expires_and_final_states_ignore_ticks():
    for m in (proposer(PROPOSED), proposer(HELD), acceptor(PENDING)):
        assert not any(isinstance(a, Persist) for a in m.handle(Tick(EXP)))
        assert m.handle(Tick(EXP + 1)) == [Persist(dataclasses.replace(m.record()))] and m.state == EXPIRED
        assert m.handle(Tick(EXP + 10_000)) == []


def test_an_answer_after_a_decision_is_ignored():
    m = proposer(REFUSED, code="policy", reason="no")
    for answer in (Accepted(AGREEMENT), Held(LOAN), Refused(LOAN, "x", "y")):
        assert m.handle(AnswerReceived(T0, answer)) == [] and m.state == REFUSED


def test_a_refusal_pushed_by_anyone_but_the_acceptor_changes_nothing():
    m = proposer(HELD)
    assert m.handle(RefusalPushed(T0, STRANGER.public_key, "rejected", "forged")) == [Answer(Ok(LOAN))]
    assert m.state == HELD
    assert acceptor(PENDING).handle(RefusalPushed(T0, BORROWER.public_key, "rejected", "x")) == [Answer(Ok(LOAN))]


@pytest.mark.parametrize("make, state", [(proposer, s) for s in (PROPOSED, HELD, AGREED, REFUSED, EXPIRED)]
                         + [(acceptor, s) for s in (PENDING, AGREED, REFUSED, EXPIRED)])
def test_seen_changes_nothing_exactly_where_the_machine_would_only_append_what_the_chain_holds(make, state):
    """``agree.seen_changes_nothing``, which a node trusts to skip a machine, against the
    machine itself: true only for a record whose machine answers ``AgreementSeen`` with the
    append alone, and only when the chain records the agreement."""
    m = make(state)
    record = m.record()
    only_appends = m.handle(AgreementSeen(T0, AGREEMENT)) == [AppendAgreement(AGREEMENT)]
    assert agree.seen_changes_nothing(record, recorded=True) == only_appends == (state in FINAL)
    assert not agree.seen_changes_nothing(record, recorded=False)


def test_an_agreement_seen_after_the_proposer_expired_is_recorded_in_its_chain_only():
    """Rule 7: the record stays expired (final), the chain records the loan."""
    assert proposer().handle(AgreementSeen(T0, AGREEMENT)) == [AppendAgreement(AGREEMENT)]  # (no record: the same)
    m = proposer(EXPIRED)
    assert m.handle(AgreementSeen(EXP + 5, AGREEMENT)) == [AppendAgreement(AGREEMENT)]
    assert m.handle(CountersignedPushed(EXP + 6, AGREEMENT)) == [AppendAgreement(AGREEMENT), Answer(Ok(LOAN))]
    assert m.state == EXPIRED


def test_a_restart_between_the_append_and_the_persist_never_signs_or_refuses_again():
    sign = Signer()
    a = acceptor(sign=sign)
    appended = a.handle(ProposalReceived(T0, GOOD))[0]
    # the node died after the append: no record, but our chain has the agreement
    b = acceptor(sign=sign)
    actions = b.handle(ProposalReceived(EXP + 1, GOOD, recorded=appended.agreement))
    assert actions == [Persist(Record(LOAN, IN, AGREED, AGREEMENT, updated=EXP + 1)), ConsumeOffer(OFFER_ID),
                       Answer(Accepted(AGREEMENT))]
    assert sign.calls == 1
    # the same after an owner's accept: the open record learns it from our own chain
    c = acceptor(PENDING, sign=sign)
    assert kinds(c.handle(AgreementSeen(EXP + 1, AGREEMENT))) == [AppendAgreement, Persist, ConsumeOffer]
    assert c.state == AGREED and sign.calls == 1


def test_records_encode_as_the_node_stores_them():
    r = Record(LOAN, OUT, HELD, PROPOSAL, "c", "r", T0)
    assert codec.decode(r.encode()) == {"role": OUT, "state": HELD, "contract": PROPOSAL, "code": "c",
                                        "reason": "r", "updated": T0}
    assert Record.decode(LOAN, r.encode()) == r


def test_answer_of_each_acceptor_state():
    assert agree.answer_of(Record(LOAN, IN, AGREED, AGREEMENT)) == Accepted(AGREEMENT)
    assert agree.answer_of(Record(LOAN, IN, PENDING, PROPOSAL)) == Held(LOAN)
    assert agree.answer_of(Record(LOAN, IN, REFUSED, PROPOSAL)) == Refused(LOAN, "rejected", "refused")
    assert agree.answer_of(Record(LOAN, IN, EXPIRED, PROPOSAL)).code == "expired"
    with pytest.raises(ValueError):
        agree.answer_of(Record(LOAN, OUT, PROPOSED, PROPOSAL))


# -- any sequence of events on one machine ----------------------------------------------------

NOW = st.integers(T0 - 1_000, EXP + 5_000)
EVENTS = st.one_of(
    st.builds(OwnerProposed, NOW),
    st.builds(AnswerReceived, NOW, st.sampled_from([Accepted(AGREEMENT), Held(LOAN), Refused(LOAN, "policy", "r"),
                                                    Accepted(OTHER_AGREEMENT)])),
    st.builds(SendFailed, NOW, st.booleans()),
    st.builds(Tick, NOW),
    st.builds(ProposalReceived, NOW, st.sampled_from([None, GOOD, OVER_CAP]), st.booleans(),
              st.sampled_from([None, AGREEMENT])),
    st.builds(OwnerAccepted, NOW, st.booleans()),
    st.builds(OwnerRejected, NOW, st.just("no")),
    st.builds(AgreementSeen, NOW, st.sampled_from([AGREEMENT, OTHER_AGREEMENT])),
    st.builds(CountersignedPushed, NOW, st.just(AGREEMENT)),
    st.builds(RefusalPushed, NOW, st.sampled_from([LENDER.public_key, STRANGER.public_key]), st.just("rejected"),
              st.just("no")),
)
STATES = {OUT: [None, PROPOSED, HELD, AGREED, REFUSED, EXPIRED], IN: [None, PENDING, AGREED, REFUSED, EXPIRED]}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([(side, s) for side in (OUT, IN) for s in STATES[side]]), st.lists(EVENTS, max_size=12))
def test_a_machine_moves_only_along_its_table_and_a_final_state_never_moves(start, events):
    side, state = start
    sign = Signer()
    m = proposer(state) if side == OUT else acceptor(state, sign)
    table = agree.PROPOSER_TABLE if side == OUT else agree.ACCEPTOR_TABLE
    for ev in events:
        before, record = m.state, m.record()
        try:
            actions = m.handle(ev)
        except (AgreeError, ValueError):
            assert (m.state, m.record()) == (before, record)
            continue
        persists = [a for a in actions if isinstance(a, Persist)]
        if m.state != before:
            assert before not in FINAL
            assert m.state in {nxt for (s, _), nxt in table.items() if s == before}
            assert persists == [Persist(m.record())]
        elif persists:
            assert persists == [Persist(m.record())] and m.state == HELD  # asked again, still held
        else:
            assert m.record() == record
    assert sign.calls <= 1


# -- two nodes over a bad network -------------------------------------------------------------------


@dataclasses.dataclass
class Side:
    """One simulated node: what it stores durably (its record's bytes, the agreement its
    chain records), and its machine, rebuilt from the store when it crashes."""

    role: str
    skew: int  # its clock is the world's plus this
    stored: bytes | None = None
    chain: bytes | None = None
    appends: int = 0
    life: int = 0
    final: str | None = None  # the first final state it stored
    past_expiry: bool = False  # a tick past the expiry by its clock went through
    machine: Proposer | Acceptor | None = None

    def record(self) -> Record | None:
        return None if self.stored is None else Record.decode(LOAN, self.stored)


@dataclasses.dataclass(frozen=True)
class Packet:
    kind: str  # propose, answer, push, gossip
    to: str  # "P" or "A"
    payload: object = None
    request: tuple[int, int] | None = None  # (proposer's life, request number)


CRASH = st.sampled_from((None, None, None, None, None, 0, 1, 2, 3))  # crash before action n, if there is one
CRASH_POINTS = [(OUT, "Persist"), (OUT, "SendProposal"), (OUT, "AppendAgreement"), (IN, "AppendAgreement"),
                (IN, "Persist"), (IN, "ConsumeOffer"), (IN, "Answer"), (IN, "Push")]
MAX_CHANNEL = 12


class TwoNodes(RuleBasedStateMachine):
    """A proposer P and an acceptor A, each executing its machine's actions as the node
    would, connected by a channel that loses, repeats, delays and reorders."""

    @initialize(review=st.booleans(), verdict=st.sampled_from([None] * 4 + ["policy", "bad_head"]),
                skew_p=st.integers(-3_000, 3_000), skew_a=st.integers(-3_000, 3_000), crash_at=CRASH,
                heal_accepts=st.booleans(),
                crash_points=st.dictionaries(st.sampled_from(CRASH_POINTS), st.integers(1, 3), max_size=2))
    def setup(self, review=False, verdict=None, skew_p=0, skew_a=0, crash_at=None, heal_accepts=True,
              crash_points=None, gossip=True, late=False):
        self.now = T0
        self.gossip = gossip  # whether a new entry reaches the other node at once (else by sync only)
        self.late = late  # whether the owner, once the network works, decides only after the expiry
        self.crash_points = dict(crash_points or {})  # (side, action) -> die before the n-th such action
        self.crashes = 0
        self.heal_accepts = heal_accepts  # what the owner decides once the network works
        self.review, self.verdict = review, verdict
        self.P, self.A = Side(OUT, skew_p), Side(IN, skew_a)
        self.P.machine, self.A.machine = Proposer.new(PROPOSAL), Acceptor.new(PROPOSAL, sign=self.sign)
        self.channel: list[Packet] = []
        self.request: tuple[int, int] | None = None  # P's send in flight
        self.requests = 0
        self.timers: list[int] = []
        self.offer_live = True
        self.signed: list[int] = []  # A's clock at each countersignature
        self.decision: object = None  # what A told P once decided: every later word must be the same
        self.run(self.P, OwnerProposed(self.clock(self.P)), crash_at)  # the owner proposes at once

    # -- the node, as an executor of actions

    def clock(self, side: Side) -> int:
        return self.now + side.skew

    def sign(self, proposal: bytes) -> bytes:
        # A signature that never reached the chain (the node died first) was never made, as
        # far as anyone can tell; once the chain records the agreement, it is never made again.
        assert self.A.chain is None, "countersigned a second time"
        self.signed.append(self.clock(self.A))
        return _countersign(proposal)

    def side(self, name: str) -> Side:
        return self.P if name == "P" else self.A

    def other(self, side: Side) -> Side:
        return self.A if side is self.P else self.P

    def facts(self) -> Facts:
        return Facts(proposer_forked=False, offer=OFFER, offer_live=self.offer_live,
                     policy="rate_cap: over the cap" if self.verdict == "policy" else None, own_head_held=True,
                     proposer_head_held=self.verdict != "bad_head")

    def run(self, side: Side, ev, crash_at: int | None = None, reply=None) -> bool:
        """Feed ``ev`` and execute the actions in order; crash before action ``crash_at``.
        Whether it ran to the end."""
        actions = side.machine.handle(ev)
        for i, action in enumerate(actions):
            point = (side.role, type(action).__name__)
            if point in self.crash_points:
                self.crash_points[point] -= 1
            if i == crash_at or self.crash_points.get(point) == 0:
                self.crash_points.pop(point, None)
                if AppendAgreement in kinds(actions[:i]) and Persist in kinds(actions[i:]):
                    tally(f"{side.role} died between the append and the persist")
                self.crash_side(side)
                return False
            self.execute(side, action, reply)
        return True

    def told(self, side: Side) -> None:
        """Rule 6a: a message leaves only once the record that says so is durable."""
        assert side.stored is not None and side.record() == side.machine.record()

    def execute(self, side: Side, action, reply) -> None:
        if isinstance(action, Persist):
            old = side.record()
            assert old is None or old.state not in FINAL, "a final record is overwritten"
            side.stored = action.record.encode()
            if action.record.state in FINAL:
                side.final = action.record.state
        elif isinstance(action, SendProposal):
            self.told(side)
            assert side is self.P and action.to == LENDER.public_key
            assert self.request is None, "a second send while one is in flight"
            self.requests += 1
            self.request = (side.life, self.requests)
            self.post(Packet("propose", "A", action.contract, self.request))
        elif isinstance(action, Answer):
            self.told(side)
            if isinstance(action.message, Accepted):
                assert side.chain == action.message.document, "an agreement answered before it is appended"
            if side is self.A:
                self.same_decision(action.message)
            if reply is not None:
                reply(action.message)
        elif isinstance(action, Push):
            self.told(side)
            assert side is self.A and action.to == BORROWER.public_key
            if isinstance(action.message, Countersigned):
                assert side.chain == action.message.contract, "an agreement pushed before it is appended"
            self.same_decision(action.message)
            self.post(Packet("push", "P", action.message))
        elif isinstance(action, AppendAgreement):
            if side.chain is None:
                side.chain, side.appends = action.agreement, side.appends + 1
                if self.gossip:
                    self.post(Packet("gossip", "P" if side is self.A else "A", action.agreement))
            assert side.chain == action.agreement
        elif isinstance(action, ConsumeOffer):
            assert side is self.A and action.offer == OFFER_ID
            self.offer_live = False
        elif isinstance(action, ScheduleResend):
            assert side is self.P
            self.timers.append(action.at_ms)
        else:
            assert isinstance(action, ReportRefusal) and side is self.A
            tally(f"refused: {action.code}")

    def same_decision(self, msg) -> None:
        """Rule 2: what the acceptor says about a decided proposal reflects its decision and
        never changes (an answer, or the push of the owner's decision)."""
        state = self.A.machine.state
        if state not in FINAL:
            assert isinstance(msg, Held) and state == PENDING, f"{msg} said while {state}"
            return
        said = ("agreed", msg.contract) if isinstance(msg, Countersigned) else (
            ("agreed", msg.document) if isinstance(msg, Accepted) else ("refused", msg.code, msg.reason))
        assert said[0] == ("agreed" if state == AGREED else "refused"), f"{msg} said while {state}"
        if self.decision is None:
            self.decision = said
        assert said == self.decision, f"said {said}, then {self.decision}"

    def post(self, packet: Packet) -> None:
        if len(self.channel) < MAX_CHANNEL:  # a full channel loses what is sent
            self.channel.append(packet)

    def crash_side(self, side: Side) -> None:
        """Kill the node and start it again from what it stored (rule 6e on the way up)."""
        side.life += 1
        self.crashes += 1
        rec = side.record()
        if side is self.P:
            side.machine = Proposer.new(PROPOSAL) if rec is None else Proposer.from_record(rec)
            self.request, self.timers = None, []
        else:
            side.machine = (Acceptor.new(PROPOSAL, sign=self.sign) if rec is None
                            else Acceptor.from_record(rec, sign=self.sign))
        if side.machine.is_open and side.chain is not None:
            tally(f"restart: {side.role} {side.machine.state} learns the agreement from its own chain")
            # (a crash point met on the way up kills it again: run's crash_side restarts it
            # from what is stored, and the last restart finishes the recovery)
            if not self.run(side, AgreementSeen(self.clock(side), side.chain)):
                tally("crashed again while it recovered")
            assert not (side.machine.is_open and side.chain is not None), "recovered, yet still open"

    def see(self, side: Side, agreement: bytes, crash_at: int | None = None) -> None:
        """``side`` learns of the agreement from the other's chain (gossip or sync)."""
        assert side.machine.state is not None or side is self.A, "the proposer always has a record"
        self.run(side, AgreementSeen(self.clock(side), agreement), crash_at)

    # -- what happens

    @precondition(lambda self: self.P.machine.state is None and self.clock(self.P) < EXP)
    @rule(crash_at=CRASH)
    def owner_proposes(self, crash_at):
        self.run(self.P, OwnerProposed(self.clock(self.P)), crash_at)

    @precondition(lambda self: self.channel)
    @rule(i=st.integers(0, MAX_CHANNEL), fate=st.sampled_from(("deliver",) * 4 + ("drop", "duplicate")),
          crash_at=CRASH)
    def network(self, i, fate, crash_at):
        """The channel delivers a packet, in any order, or loses it, or repeats it."""
        packet = self.channel[i % len(self.channel)]
        if fate == "duplicate":
            self.post(packet)
            return
        self.channel.remove(packet)
        if fate == "drop":
            return
        if packet.kind == "propose":
            m = self.A.machine
            fresh = m.state is None  # the node gathers facts only for a proposal it has no record of
            if fresh and self.A.chain is not None:
                tally("a proposal with no record, answered from our chain")
            ev = ProposalReceived(self.clock(self.A), self.facts() if fresh else None, self.review,
                                  self.A.chain if fresh else None)
            self.run(self.A, ev, crash_at, reply=lambda msg: self.post(Packet("answer", "P", msg, packet.request)))
        elif packet.kind == "answer":
            if packet.request != self.request:
                return  # that stream is gone: timed out, or the proposer restarted
            self.request = None
            self.run(self.P, AnswerReceived(self.clock(self.P), packet.payload), crash_at)
        elif packet.kind == "push":
            msg = packet.payload
            ev = (CountersignedPushed(self.clock(self.P), msg.contract) if isinstance(msg, Countersigned)
                  else RefusalPushed(self.clock(self.P), LENDER.public_key, msg.code, msg.reason))
            self.run(self.P, ev, crash_at)  # its ok goes back to nobody who waits for it
        else:
            self.see(self.side(packet.to), packet.payload, crash_at)

    @rule(ms=st.integers(1, 6_000))
    def advance(self, ms):
        self.now += ms

    @rule(name=st.sampled_from("PA"), delta=st.integers(-1, 1))
    def near_the_expiry(self, name, delta):
        """Time moves to just before, at or just after the expiry by one side's clock."""
        self.now = max(self.now, EXP - self.side(name).skew + delta)

    @rule(name=st.sampled_from("PA"), crash_at=CRASH)
    def tick(self, name, crash_at):
        side = self.side(name)
        now = self.clock(side)
        if self.run(side, Tick(now), crash_at) and now > EXP:
            side.past_expiry = True

    @precondition(lambda self: self.request is not None)
    @rule(connected=st.booleans(), crash_at=CRASH)
    def send_fails(self, connected, crash_at):
        self.request = None
        self.run(self.P, SendFailed(self.clock(self.P), connected), crash_at)

    @precondition(lambda self: self.timers)
    @rule(crash_at=CRASH)
    def resend_due(self, crash_at):
        at = min(self.timers)
        self.timers.remove(at)
        self.now = max(self.now, at - self.P.skew)
        self.run(self.P, Tick(self.clock(self.P)), crash_at)

    @precondition(lambda self: self.A.machine.state == PENDING)
    @rule(accept=st.booleans(), crash_at=CRASH)
    def owner_decides(self, accept, crash_at):
        now = self.clock(self.A)
        ev = OwnerAccepted(now, self.offer_live) if accept else OwnerRejected(now, "not this month")
        self.run(self.A, ev, crash_at)

    @rule(now=st.sampled_from((False,) * 20 + (True,)))
    def owner_cancels_the_offer(self, now):
        if now:
            self.offer_live = False

    @precondition(lambda self: self.P.machine.state is not None)
    @rule()
    def stranger_pushes_a_refusal(self):
        before = self.P.machine.record()
        self.run(self.P, RefusalPushed(self.clock(self.P), STRANGER.public_key, "rejected", "forged"))
        assert self.P.machine.record() == before

    @rule(name=st.sampled_from("PA"))
    def crash(self, name):
        self.crash_side(self.side(name))

    @rule(name=st.sampled_from("PA"), crash_at=CRASH)
    def sync(self, name, crash_at):
        side = self.side(name)
        if self.other(side).chain is not None:
            self.see(side, self.other(side).chain, crash_at)

    @rule()
    def settle(self):
        """Deliver each chain's agreement to the other (sync, twice round), then: both
        chains record it, the acceptor is agreed, and the proposer agreed or, if it expired
        before it heard (rule 7), expired."""
        for _ in range(2):
            for side in (self.P, self.A):
                if self.other(side).chain is not None:
                    self.see(side, self.other(side).chain)
        if self.P.chain is None and self.A.chain is None:
            return
        assert self.P.chain == self.A.chain == AGREEMENT
        assert self.A.machine.state == AGREED
        assert self.P.machine.state in (AGREED, EXPIRED)
        tally(f"settled: proposer {self.P.machine.state}")

    # -- what must hold after every step

    @invariant()
    def final_states_never_change_and_every_move_is_stored(self):
        for side in (self.P, self.A):
            assert side.machine.record() == side.record()
            if side.final is not None:
                assert side.record().state == side.final

    @invariant()
    def the_acceptor_countersigns_at_most_once_and_never_after_the_expiry(self):
        # (and ``sign`` asserts it is never called once the acceptor's chain has the agreement)
        assert all(t <= EXP for t in self.signed)
        assert self.A.appends <= 1 and self.P.appends <= 1

    @invariant()
    def an_agreement_on_one_side_is_never_contradicted_on_the_other(self):
        p, a = self.P.machine.state, self.A.machine.state
        if self.P.chain is not None:
            assert self.A.chain == self.P.chain  # the proposer only learns what the acceptor appended
        if p == AGREED:
            assert self.P.chain == AGREEMENT and a in (None, AGREED)  # None: died before its record
        if a == AGREED:
            assert self.A.chain == AGREEMENT and p in (PROPOSED, HELD, AGREED, EXPIRED)
        if self.A.chain is not None:
            assert a in (None, AGREED)
        if p == REFUSED:
            assert a in (REFUSED, EXPIRED) and self.A.chain is None

    @invariant()
    def nothing_stays_open_after_a_tick_past_the_expiry(self):
        for side in (self.P, self.A):
            if side.past_expiry:
                assert not side.machine.is_open

    def heal(self) -> None:
        """The network works from now on and the owner decides what is pending (as
        ``heal_accepts`` says; if ``late``, only after the expiry): every retry interval,
        each packet is delivered in order, a send whose packets are all gone fails, and
        both nodes tick; until both sides are final or time is out."""
        for _ in range((EXP + 10_000 - self.now) // agree.RETRY_INTERVAL_MS + 2):
            if not (self.P.machine.is_open or self.A.machine.is_open or self.channel):
                return
            while self.channel:
                self.network(0, "deliver", None)
                self.check()
            if self.request is not None:
                self.send_fails(True, None)
            if self.A.machine.state == PENDING and (not self.late or self.clock(self.A) > EXP):
                crashes, waiting = self.crashes, self.P.machine.is_open
                self.owner_decides(self.heal_accepts, None)
                if self.A.machine.state == AGREED or self.A.machine.code == "rejected":
                    while self.channel:  # pushed: the proposer knows as soon as it is delivered
                        self.network(0, "deliver", None)
                    if waiting and self.crashes == crashes:  # (if it died, it learns by asking again)
                        assert self.P.machine.state == self.A.machine.state, "the owner's decision was not pushed"
            self.tick("P", None)
            self.tick("A", None)
            self.check()
            self.now += agree.RETRY_INTERVAL_MS

    def check(self) -> None:
        self.final_states_never_change_and_every_move_is_stored()
        self.the_acceptor_countersigns_at_most_once_and_never_after_the_expiry()
        self.an_agreement_on_one_side_is_never_contradicted_on_the_other()
        self.nothing_stays_open_after_a_tick_past_the_expiry()

    def teardown(self):
        if not hasattr(self, "P"):
            return
        start = max(self.clock(self.P), self.clock(self.A))
        self.heal()
        if self.P.machine.state is not None and start + 3 * agree.RETRY_INTERVAL_MS < EXP:
            assert self.P.machine.state in (AGREED, REFUSED), "a working network decides before the expiry"
        self.now = EXP + 10_000  # beyond any skew
        self.crash_points.clear()  # (nodes that stay up from here on)
        for side in (self.P, self.A):
            assert self.run(side, Tick(self.clock(side)))
            assert not side.machine.is_open
        self.settle()
        tally(f"end: proposer {self.P.machine.state}, acceptor {self.A.machine.state}")


TwoNodes.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
test_two_nodes_over_a_bad_network = TwoNodes.TestCase


FLOWS = {
    "countersigned": ({}, AGREED),
    "held, accepted": ({"review": True}, AGREED),
    "held, rejected": ({"review": True, "heal_accepts": False}, REFUSED),
    "held, accepted too late": ({"review": True, "late": True}, EXPIRED),
    "refused": ({"verdict": "bad_head"}, REFUSED),
}


@pytest.mark.parametrize("gossip", [True, False], ids=["gossip", "no_gossip"])
@pytest.mark.parametrize("nth", [1, 2, 3])
@pytest.mark.parametrize("point", CRASH_POINTS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("flow", FLOWS)
def test_a_crash_before_any_action_of_a_conversation_over_a_working_network(flow, point, nth, gossip):
    """Each flow once, a node dying before the nth action of one kind, every rule checked
    after every step; the outcome is the flow's own: one death changes when, never what."""
    setup, outcome = FLOWS[flow]
    world = TwoNodes()
    world.setup(crash_points={point: nth}, gossip=gossip, **setup)
    world.check()
    world.heal()
    if world.P.machine.state is None:  # the owner's proposal died before it was stored: nothing happened
        assert point == (OUT, "Persist") and nth == 1 and world.A.machine.state is None
    elif outcome == EXPIRED:  # the proposer expires by its own clock, or hears the acceptor's refusal
        assert world.A.machine.state == EXPIRED and world.P.machine.state in (EXPIRED, REFUSED)
        assert world.signed == []
    else:
        assert world.P.machine.state == world.A.machine.state == outcome
    world.teardown()


@pytest.mark.parametrize("gossip", [True, False], ids=["gossip", "no_gossip"])
def test_an_agreement_whose_answer_is_lost_at_the_expiry_reaches_the_proposers_chain(gossip):
    """Rule 7: the acceptor countersigns at the expiry, every word of it is lost, and the
    proposer expires; its record stays expired, its chain records the agreement by sync."""
    world = TwoNodes()
    world.setup(gossip=gossip)
    world.now = EXP
    world.network(0, "deliver", None)  # the proposal arrives at the last moment
    assert world.A.machine.state == AGREED and world.signed == [EXP]
    world.channel.clear()  # the answer and the gossip are lost
    world.now += 1
    world.tick("P", None)
    assert world.P.machine.state == EXPIRED and world.P.chain is None
    world.check()
    world.settle()
    assert world.P.machine.state == EXPIRED and world.P.chain == world.A.chain == AGREEMENT
    world.teardown()
