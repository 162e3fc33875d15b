"""Who may do what to an agreed loan: one table, and the function that executes it.

A node acts on a loan by appending to its own chain or by signing: it declares money
sent, signs receipts, gives notices, offers and countersigns transfers. Before it does,
it asks ``refusal`` whether the action is allowed; nothing else decides it. The node
gathers the facts (the key acting, the contract, the loan's ``loanstate.LoanState``
today, and for a transfer the key the claim goes to) and reports the refusal as it is.

Rules of this file:

1. ``RULES`` is the table below: for each action, its checks in order. ``refusal``
   returns the ``Refusal`` (code, message) of the first check that fails, or None when
   the action is allowed. Codes are stable (docs/api.md); a message is a template over
   ``{state}``, ``{days_past_due}`` and ``{default_days}``.
2. A check is on ``by`` (the key the action is by), on ``to`` (the key a transfer gives
   the claim to, or the borrower a declared disbursement is confirmed for), or on
   ``state`` (the loan's ``LoanState`` today). What a key must be (``PARTIES``):

   - ``lender``: the contract's lender, while it holds the claim;
   - ``borrower``: the contract's borrower;
   - ``holder``: the holder of the claim today (``LoanState.holder``);
   - ``party``: the borrower, or anyone who holds or held the claim (``LoanState.holders``),
     so exactly those whose dispute loan state lists (loanstate rule 9);
   - ``new_lender``: neither the holder nor the borrower;
   - ``borrower_or_holder``: the borrower or the holder of the claim today: the two who
     sign an amendment (amendment.py), each by its own owner's command.

   What the state must be: a state of ``loanstate.STATES``, ``not`` one,
   ``default_allowed`` (a default notice given today would count: loanstate rule 8), or
   ``undisbursed`` (no receipt counts yet, not even a disbursement dated after today: a
   second disbursement receipt would never count).
3. The actions are those of the loan commands (``loan disburse``, ``confirm``,
   ``repay``, ``receipt``, ``default``, ``writeoff``, ``dispute``, ``transfer``, and
   ``amend``: ``loan reschedule``, proposing or countersigning an amendment, which a
   node signs only on its own owner's command, judged for the other party alike), and
   one a node does for a peer: ``take_transfer``, countersigning a transfer that ``by``
   offers to this node (``to``). There is no action by which a node signs a receipt on
   its own: a receipt says money arrived, which only its owner can know (``confirm``,
   ``receipt``), so no declaration, the lender's included, ever makes a node sign one.
4. Nothing but ``dispute`` is allowed on a repaid loan: nothing is owed, so there is
   nothing to declare, receipt or transfer.
5. A stranger (neither the borrower nor anyone who holds or held the claim) may do
   nothing. Only the holder signs repayment receipts and gives default and writeoff
   notices; only the lender of record, still holding the claim, declares the money lent.
6. These rules say what a node *does*; what *counts* is loanstate's to decide, the same
   on every node, whatever a node did. They are never looser than loanstate: a default
   is allowed only when it would count, a transfer only to a key it may go to.
7. What a node records of others' documents (``to_record``): nothing on another's word.
   Only a ``party`` of a loan whose agreement it holds records anything, and only what
   counts in the loan's state: each counted receipt it pays or is paid, each
   counted transfer it gives or takes (the borrower: every counted transfer, since it
   must know whom it pays), and each counted amendment it signed. A document that merely names a node, for a loan it never
   agreed to or one that does not count, is not recorded.
8. A repayment a node declares (``repay``) or receipts (``receipt``) is at least one
   minor unit and at most the loan's ``payoff`` on the payment's date, or today if that
   is later (``amount_refusal``, code ``bad_amount``): more would pay back what is not
   owed, and a receipt over it would only ever count as ``overpaid``. Money sent beyond
   it is settled outside the system.

=============  =====  =============================  ===================  =============================================
action         check  must be                        code                 message
=============  =====  =============================  ===================  =============================================
disburse       by     lender                         not_lender           only the lender disburses
disburse       state  awaiting_disbursement          bad_state            the loan is {state}, not awaiting disbursement
confirm        by     borrower                       not_borrower         only the borrower confirms the disbursement
confirm        state  awaiting_disbursement          bad_state            the loan is {state}: the disbursement is
                                                                          recorded
confirm        state  undisbursed                    bad_state            the loan is {state}: the disbursement is
                                                                          recorded
repay          by     borrower                       not_borrower         only the borrower repays
repay          state  not repaid                     bad_state            the loan is repaid: nothing more is owed
receipt        by     holder                         not_holder           only the lender holding the claim signs
                                                                          repayment receipts
receipt        state  not awaiting_disbursement      bad_state            the disbursement is not confirmed yet
receipt        state  not repaid                     bad_state            the loan is repaid: nothing more is owed
default        by     holder                         not_holder           only the lender holding the claim declares a
                                                                          default
default        state  default_allowed                default_not_allowed  the loan is {state}, {days_past_due} days past
                                                                          due; the contract allows a default at
                                                                          {default_days}
writeoff       by     holder                         not_holder           only the lender holding the claim writes it
                                                                          off
writeoff       state  defaulted                      bad_state            the loan is {state}; only a defaulted loan is
                                                                          written off
dispute        by     party                          not_party            only a party to the loan records a dispute
transfer       by     holder                         not_holder           only the lender holding the claim transfers it
transfer       to     new_lender                     bad_peer             the new lender must be a third party
transfer       state  not repaid                     bad_state            the loan is repaid: there is no claim left to
                                                                          transfer
take_transfer  by     holder                         not_holder           the sender does not hold the claim
take_transfer  to     new_lender                     bad_peer             the new lender must be a third party
take_transfer  state  not repaid                     bad_state            the loan is repaid: there is no claim left to
                                                                          transfer
amend          by     borrower_or_holder             not_party            only the borrower and the lender holding the
                                                                          claim amend a loan
amend          state  not awaiting_disbursement      bad_state            the loan is not disbursed yet: there is
                                                                          nothing to reschedule
amend          state  not repaid                     bad_state            the loan is repaid: there is nothing left to
                                                                          reschedule
amend          state  not defaulted                  bad_state            the loan is defaulted: an amendment would not
                                                                          count
amend          state  not written_off                bad_state            the loan is written off: an amendment would
                                                                          not count
=============  =====  =============================  ===================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .loanstate import (
    AWAITING, DEFAULTED, REPAID, STATES, WRITTEN_OFF, LoanState, SignedAmendment, SignedReceipt, SignedTransfer,
)
from .money import format_amount

BY, TO, STATE = "by", "to", "state"
LENDER, BORROWER, HOLDER, PARTY, NEW_LENDER = "lender", "borrower", "holder", "party", "new_lender"
BORROWER_OR_HOLDER = "borrower_or_holder"
PARTIES = (LENDER, BORROWER, HOLDER, PARTY, NEW_LENDER, BORROWER_OR_HOLDER)
DEFAULT_ALLOWED = "default_allowed"
UNDISBURSED = "undisbursed"


class Check(NamedTuple):
    """One row of ``RULES``: ``subject`` (``by``, ``to`` or ``state``) must be ``must_be``,
    else the action is refused with ``code`` and ``message``."""

    action: str
    subject: str
    must_be: str
    code: str
    message: str


class Refusal(NamedTuple):
    """Why an action is not allowed: a stable code and a message for the user."""

    code: str
    message: str


def _not(state: str) -> str:
    return f"not {state}"


_AWAITING_MSG = "the loan is {state}, not awaiting disbursement"
_RECORDED = "the loan is {state}: the disbursement is recorded"
_NOTHING_OWED = "the loan is repaid: nothing more is owed"
_NO_CLAIM = "the loan is repaid: there is no claim left to transfer"
_THIRD = "the new lender must be a third party"

RULES: tuple[Check, ...] = (
    Check("disburse", BY, LENDER, "not_lender", "only the lender disburses"),
    Check("disburse", STATE, AWAITING, "bad_state", _AWAITING_MSG),
    Check("confirm", BY, BORROWER, "not_borrower", "only the borrower confirms the disbursement"),
    Check("confirm", STATE, AWAITING, "bad_state", _RECORDED),
    Check("confirm", STATE, UNDISBURSED, "bad_state", _RECORDED),
    Check("repay", BY, BORROWER, "not_borrower", "only the borrower repays"),
    Check("repay", STATE, _not(REPAID), "bad_state", _NOTHING_OWED),
    Check("receipt", BY, HOLDER, "not_holder", "only the lender holding the claim signs repayment receipts"),
    Check("receipt", STATE, _not(AWAITING), "bad_state", "the disbursement is not confirmed yet"),
    Check("receipt", STATE, _not(REPAID), "bad_state", _NOTHING_OWED),
    Check("default", BY, HOLDER, "not_holder", "only the lender holding the claim declares a default"),
    Check("default", STATE, DEFAULT_ALLOWED, "default_not_allowed",
          "the loan is {state}, {days_past_due} days past due; the contract allows a default at {default_days}"),
    Check("writeoff", BY, HOLDER, "not_holder", "only the lender holding the claim writes it off"),
    Check("writeoff", STATE, DEFAULTED, "bad_state", "the loan is {state}; only a defaulted loan is written off"),
    Check("dispute", BY, PARTY, "not_party", "only a party to the loan records a dispute"),
    Check("transfer", BY, HOLDER, "not_holder", "only the lender holding the claim transfers it"),
    Check("transfer", TO, NEW_LENDER, "bad_peer", _THIRD),
    Check("transfer", STATE, _not(REPAID), "bad_state", _NO_CLAIM),
    Check("take_transfer", BY, HOLDER, "not_holder", "the sender does not hold the claim"),
    Check("take_transfer", TO, NEW_LENDER, "bad_peer", _THIRD),
    Check("take_transfer", STATE, _not(REPAID), "bad_state", _NO_CLAIM),
    Check("amend", BY, BORROWER_OR_HOLDER, "not_party", "only the borrower and the lender holding the claim amend a loan"),
    Check("amend", STATE, _not(AWAITING), "bad_state", "the loan is not disbursed yet: there is nothing to reschedule"),
    Check("amend", STATE, _not(REPAID), "bad_state", "the loan is repaid: there is nothing left to reschedule"),
    Check("amend", STATE, _not(DEFAULTED), "bad_state", "the loan is defaulted: an amendment would not count"),
    Check("amend", STATE, _not(WRITTEN_OFF), "bad_state", "the loan is written off: an amendment would not count"),
)
"""The table of this file's docstring, in the order each action's checks run."""

ACTIONS = tuple(dict.fromkeys(c.action for c in RULES))
"""Every action, in table order."""

TO_ACTIONS = frozenset(c.action for c in RULES if c.subject == TO)
"""The actions that name a second key (``to``)."""

_BY_ACTION: dict[str, tuple[Check, ...]] = {a: tuple(c for c in RULES if c.action == a) for a in ACTIONS}


def _state_spec_ok(spec: str) -> bool:
    return spec in (DEFAULT_ALLOWED, UNDISBURSED) or spec in STATES or (spec.startswith("not ") and spec[4:] in STATES)


# The table is data: check its shape once, when the module loads.
assert all(c.subject in (BY, TO, STATE) for c in RULES)
assert all(c.must_be in PARTIES for c in RULES if c.subject != STATE)
assert all(_state_spec_ok(c.must_be) for c in RULES if c.subject == STATE)
assert all(sum(c.subject == BY for c in checks) == 1 and checks[0].subject == BY for checks in _BY_ACTION.values())


def is_party(party: str, key: bytes, contract: dict, state: LoanState) -> bool:
    """Whether ``key`` is ``party`` (one of ``PARTIES``, rule 2) of the loan."""
    if party == LENDER:
        return key == contract["lender"] == state.holder
    if party == BORROWER:
        return key == contract["borrower"]
    if party == HOLDER:
        return key == state.holder
    if party == PARTY:
        return key == contract["borrower"] or key in state.holders
    if party == NEW_LENDER:
        return key not in (state.holder, contract["borrower"])
    if party == BORROWER_OR_HOLDER:
        return key in (contract["borrower"], state.holder)
    raise ValueError(f"unknown party {party!r}")


def _state_ok(spec: str, state: LoanState) -> bool:
    if spec == DEFAULT_ALLOWED:
        return state.default_allowed
    if spec == UNDISBURSED:
        return not state.counted
    if spec.startswith("not "):
        return state.state != spec[4:]
    return state.state == spec


def amount_refusal(action: str, amount: int, state: LoanState, currency: str) -> Refusal | None:
    """Rule 8: why a ``repay`` or ``receipt`` of ``amount`` minor units may not be made
    on a loan in ``state``; None if it may. ``ValueError`` for other actions (a bug)."""
    if action not in ("repay", "receipt"):
        raise ValueError(f"{action} carries no amount")
    if amount < 1:
        return Refusal("bad_amount", "a repayment is more than 0")
    if amount > state.payoff:
        return Refusal("bad_amount", f"{format_amount(amount, currency)} {currency} is more than the "
                                     f"{format_amount(state.payoff, currency)} {currency} that pays the loan off")
    return None


def refusal(action: str, by: bytes, contract: dict, state: LoanState, *, to: bytes | None = None) -> Refusal | None:
    """Why ``by`` may not do ``action`` to the loan of ``contract`` in ``state`` (its
    ``LoanState`` today): the first check of ``RULES`` that fails; None if allowed.

    ``to`` is required by the actions in ``TO_ACTIONS`` (the key the claim goes to) and
    refused by the others.
    ``ValueError`` for an unknown action: that is a bug in the caller, not a refusal."""
    checks = _BY_ACTION.get(action)
    if checks is None:
        raise ValueError(f"unknown loan action {action!r}")
    if (to is None) == (action in TO_ACTIONS):
        raise ValueError(f"{action} {'needs' if to is None else 'takes no'} 'to'")
    for check in checks:
        if check.subject == STATE:
            ok = _state_ok(check.must_be, state)
        else:
            ok = is_party(check.must_be, by if check.subject == BY else to, contract, state)  # type: ignore[arg-type]
        if not ok:
            return Refusal(check.code, _message(check.message, contract, state))
    return None


def _message(template: str, contract: dict, state: LoanState) -> str:
    fields: dict[str, Any] = {"state": state.state, "days_past_due": state.days_past_due,
                              "default_days": contract["default_days"]}
    return template.format(**fields)


def to_record(me: bytes, contract: dict, state: LoanState, receipts: Mapping[bytes, SignedReceipt],
              transfers: Mapping[bytes, SignedTransfer],
              amendments: Mapping[bytes, SignedAmendment] | None = None) -> tuple[bytes, ...]:
    """Rule 7: the ids of the documents of the loan of ``contract`` (in ``state``, its
    ``LoanState`` today) that node ``me`` records in its own chain, receipts in counting
    order, then transfers in the order they apply, then the amendments it signed in the
    order they apply; empty unless ``me`` is a ``party``. ``receipts``, ``transfers``
    and ``amendments`` map the ids in ``state`` to their documents (``amendments`` may
    be left out when ``state`` counts none)."""
    if not is_party(PARTY, me, contract, state):
        return ()
    paid = tuple(r for r in state.counted if me in (receipts[r].doc["payer"], receipts[r].doc["payee"]))
    moved = tuple(t for t in state.transfers
                  if me in (transfers[t].doc["from"], transfers[t].doc["to"], contract["borrower"]))
    docs = amendments or {}
    signed = tuple(a.id for a in state.amendments if me in (docs[a.id].doc["borrower"], docs[a.id].doc["holder"]))
    return paid + moved + signed
