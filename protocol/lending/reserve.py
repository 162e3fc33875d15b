"""The loss reserve: each lender's own ledger of money set aside against losses.

There is no pooled fund: a pool that lenders pay into and that covers everyone's losses
is what a platform can empty, and did (the seed's 鑫利源 case). Here each lender keeps
its own reserve, per currency, and records every movement of it in its own chain as a
signed ``reserve.entry``, so that anyone holding the chain can replay the balance. The
reserve is a ledger of earmarked money, not custody: nothing here moves funds.

Rules of this file (docs/portfolio.md, "The reserve"):

1. Movements (``KINDS``), each of ``amount`` >= 1 minor units of one currency, on a date:

   - ``set_aside``: part of the interest received is put in the reserve:
     ``set_aside_of(interest, share_bp) = floor(interest * share_bp / 10000)``
     (default share ``DEFAULT_SHARE_BP``, 10 %); the body may name the ``loan`` and the
     ``interest`` it came from (then ``amount <= interest``).
   - ``top_up``: the reserve follows the required provisions (provisioning.py) up: when
     the balance is below them, it is topped up to them (``plan_follow``). The body may
     carry ``required``, the provision it followed: so the lender's chain records the
     provisioning figures too.
   - ``release``: the reserve follows the provisions down, if the lender chose to
     (``release=True``; by default what is set aside stays as a buffer): the balance
     above the required provisions is released. Never more than the balance (an
     ``overdrawn`` error otherwise: the lender's own node computes it, so it is a bug).
   - ``draw``: a write-off draws its loan's outstanding principal (``loan`` required).
     What the balance covers is taken; the rest is ``uncovered``, recorded in the body,
     and the balance stops at 0: a draw never makes it negative.

2. ``reserve_state`` folds movements in order from a zero balance. Invariants, asserted
   after every movement: ``balance >= 0`` and
   ``balance == set_aside + topped_up - released - drawn`` (``drawn`` being what the
   balance covered; ``uncovered`` apart).
3. The view against the provisions required now (``ReserveState.view``): ``coverage =
   balance / required`` as an exact ``Fraction`` (None when nothing is required),
   ``coverage_bp`` its floor in basis points, and ``shortfall = max(0, required -
   balance)``.
4. The chain entry. Kind ``reserve.entry``, body ``{currency, kind, amount, date,
   balance_after, [loan], [interest], [required], [uncovered]}`` (``BODY_FIELDS``,
   ``BODY_OPTIONAL``): ``balance_after`` is the balance after the movement, by rule 2
   over the author's earlier ``reserve.entry`` entries of the same currency. A body is
   checked alone by ``check_body`` (the kind's validator: fields, which optional fields
   each kind may carry, ``amount <= interest``, ``uncovered <= amount`` and ``uncovered``
   only when the balance is 0 after); the whole sequence by ``replay``, which redoes
   rule 2 over the bodies in chain order and refuses the first whose ``balance_after``
   or ``uncovered`` differs from the fold's, or whose date is before the previous one
   (``bad_balance``, ``bad_date``).
5. Everything is integer minor units; each fold reads at most ``MAX_MOVEMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from fractions import Fraction
from typing import Any, Iterable, NamedTuple

from ..errors import ProtocolError
from ..kinds import Kind
from ..schema import binary, check_fields, text, uint
from .contract import DATE_PATTERN, LoanError, parse_date
from .money import MAX_AMOUNT, MoneyError, exponent

ENTRY_KIND = "reserve.entry"
KINDS = ("set_aside", "top_up", "release", "draw")
DEFAULT_SHARE_BP = 1000
"""The share of interest received that is set aside by default (10 %)."""
MAX_BALANCE = 2**63 - 1
MAX_MOVEMENTS = 10_000_000
BP = 10_000
RESERVE_INDEX = b"R"


class ReserveError(ProtocolError):
    code = "bad_reserve"


class Movement(NamedTuple):
    """One movement of the reserve (rule 1). ``loan`` is a loan id; ``interest``,
    ``required`` are the figures it came from, recorded in the entry."""

    currency: str
    kind: str
    amount: int
    date: date
    loan: bytes | None = None
    interest: int | None = None
    required: int | None = None


@dataclass(frozen=True)
class ReserveView:
    """Rule 3: the reserve against the provisions required now."""

    currency: str
    balance: int
    required: int
    coverage: Fraction | None
    coverage_bp: int | None
    shortfall: int
    uncovered: int

    def to_json(self) -> dict[str, Any]:
        cov = self.coverage
        return {"currency": self.currency, "balance": self.balance, "required": self.required,
                "coverage": None if cov is None else f"{cov.numerator}/{cov.denominator}",
                "coverage_bp": self.coverage_bp, "shortfall": self.shortfall, "uncovered": self.uncovered}


@dataclass(frozen=True)
class ReserveState:
    """Rule 2: the reserve of one currency after some movements."""

    currency: str
    balance: int = 0
    set_aside: int = 0
    topped_up: int = 0
    released: int = 0
    drawn: int = 0
    uncovered: int = 0
    movements: int = 0
    last_date: date | None = None

    def check(self) -> ReserveState:
        """Assert rule 2's invariants; return self."""
        assert self.balance >= 0, "the balance is never negative"
        assert self.balance == self.set_aside + self.topped_up - self.released - self.drawn, "the balance adds up"
        assert min(self.set_aside, self.topped_up, self.released, self.drawn, self.uncovered) >= 0
        return self

    def view(self, required: int) -> ReserveView:
        """Rule 3 against ``required`` (provisioning.py's ``Required.total``)."""
        if type(required) is not int or required < 0:
            raise ValueError("the required provision is a non-negative integer")
        cov = Fraction(self.balance, required) if required else None
        return ReserveView(self.currency, self.balance, required, cov,
                           None if cov is None else cov.numerator * BP // cov.denominator,
                           max(0, required - self.balance), self.uncovered)

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "balance": self.balance, "set_aside": self.set_aside,
                "topped_up": self.topped_up, "released": self.released, "drawn": self.drawn,
                "uncovered": self.uncovered, "movements": self.movements,
                "last_date": self.last_date.isoformat() if self.last_date else None}


# -- planning movements ---------------------------------------------------------------------


def set_aside_of(interest: int, share_bp: int = DEFAULT_SHARE_BP) -> int:
    """Rule 1: ``floor(interest * share_bp / 10000)``."""
    if type(interest) is not int or interest < 0 or type(share_bp) is not int or not 0 <= share_bp <= BP:
        raise ValueError("interest >= 0 minor units and a share of 0 to 10000 bp")
    return interest * share_bp // BP


def plan_set_aside(currency: str, interest: int, day: date, share_bp: int = DEFAULT_SHARE_BP,
                   loan: bytes | None = None) -> Movement | None:
    """The ``set_aside`` for ``interest`` received on ``day``, or None if it is 0."""
    amount = set_aside_of(interest, share_bp)
    return Movement(currency, "set_aside", amount, day, loan, interest) if amount else None


def plan_follow(state: ReserveState, required: int, day: date, *, release: bool = False) -> Movement | None:
    """Rule 1: the ``top_up`` that brings the balance up to ``required``, or with
    ``release`` the ``release`` that brings it down to it; None if nothing moves."""
    if type(required) is not int or not 0 <= required <= MAX_BALANCE:
        raise ValueError("the required provision is a non-negative integer")
    if state.balance < required:
        return Movement(state.currency, "top_up", required - state.balance, day, required=required)
    if release and state.balance > required:
        return Movement(state.currency, "release", state.balance - required, day, required=required)
    return None


def plan_draw(currency: str, amount: int, day: date, loan: bytes) -> Movement:
    """Rule 1: the ``draw`` of a write-off of ``amount`` (its outstanding principal)."""
    return Movement(currency, "draw", amount, day, loan)


# -- the fold --------------------------------------------------------------------------------


def _check_movement(state: ReserveState, m: Movement) -> None:
    if m.currency != state.currency:
        raise ReserveError(f"a {m.currency} movement in the {state.currency} reserve", code="mixed_currency")
    if m.kind not in KINDS:
        raise ReserveError(f"unknown movement {m.kind!r}")
    if type(m.amount) is not int or not 1 <= m.amount <= MAX_AMOUNT:
        raise ReserveError(f"amount {m.amount!r} is not 1 to {MAX_AMOUNT} minor units", code="bad_amount")
    if type(m.date) is not date:
        raise ReserveError("a movement's date is a date", code="bad_date")
    if state.last_date is not None and m.date < state.last_date:
        raise ReserveError(f"a movement dated {m.date}, before the previous one ({state.last_date})", code="bad_date")
    if m.kind == "draw" and m.loan is None:
        raise ReserveError("a draw names the loan written off")


def apply(state: ReserveState, m: Movement) -> tuple[ReserveState, int]:
    """``state`` after movement ``m`` (rules 1, 2), and the part of ``m`` left
    uncovered (only a draw has one)."""
    _check_movement(state, m)
    uncovered = 0
    if m.kind == "set_aside":
        s = replace(state, balance=state.balance + m.amount, set_aside=state.set_aside + m.amount)
    elif m.kind == "top_up":
        s = replace(state, balance=state.balance + m.amount, topped_up=state.topped_up + m.amount)
    elif m.kind == "release":
        if m.amount > state.balance:
            raise ReserveError(f"a release of {m.amount} from a balance of {state.balance}", code="overdrawn")
        s = replace(state, balance=state.balance - m.amount, released=state.released + m.amount)
    else:  # draw: what the balance covers, the rest uncovered (rule 1)
        covered = min(m.amount, state.balance)
        uncovered = m.amount - covered
        s = replace(state, balance=state.balance - covered, drawn=state.drawn + covered,
                    uncovered=state.uncovered + uncovered)
    if s.balance > MAX_BALANCE:
        raise ReserveError(f"a balance over {MAX_BALANCE}", code="bad_amount")
    return replace(s, movements=s.movements + 1, last_date=m.date).check(), uncovered


def reserve_state(movements: Iterable[Movement], currency: str) -> ReserveState:
    """Rule 2: the reserve of ``currency`` after ``movements`` in order, from zero."""
    state = ReserveState(currency)
    for n, m in enumerate(movements):
        if n >= MAX_MOVEMENTS:
            raise ReserveError(f"more than {MAX_MOVEMENTS} movements", code="too_many")
        state, _ = apply(state, m)
    return state


# -- the chain entry --------------------------------------------------------------------------


BODY_FIELDS = {
    "currency": text(3, r"[A-Z]{3}"),
    "kind": lambda v: type(v) is str and v in KINDS,
    "amount": uint(1, MAX_AMOUNT),
    "date": text(10, DATE_PATTERN),
    "balance_after": uint(0, MAX_BALANCE),
}
BODY_OPTIONAL = {
    "loan": binary(32),
    "interest": uint(1, MAX_AMOUNT),
    "required": uint(0, MAX_BALANCE),
    "uncovered": uint(1, MAX_AMOUNT),
}
ALLOWED_OPTIONAL = {
    "set_aside": frozenset({"loan", "interest"}),
    "top_up": frozenset({"required"}),
    "release": frozenset({"required"}),
    "draw": frozenset({"loan", "uncovered"}),
}
"""Which optional fields each kind of movement may carry (rule 4)."""


def check_body(body: Any) -> dict:
    """Rule 4, a ``reserve.entry`` body alone: ``body`` if valid, else ``SchemaError``
    (fields) or ``ReserveError`` naming what is wrong."""
    check_fields(body, BODY_FIELDS, BODY_OPTIONAL, what=f"{ENTRY_KIND} body")
    try:
        exponent(body["currency"])
        parse_date(body["date"])
    except (MoneyError, LoanError) as e:
        raise ReserveError(f"{ENTRY_KIND}: {e.message}", code=e.code) from None
    kind = body["kind"]
    extra = set(body) - set(BODY_FIELDS) - ALLOWED_OPTIONAL[kind]
    if extra:
        raise ReserveError(f"{ENTRY_KIND}: a {kind} carries no {sorted(extra)[0]!r}")
    if kind == "draw" and "loan" not in body:
        raise ReserveError(f"{ENTRY_KIND}: a draw names the loan written off")
    if "interest" in body and body["amount"] > body["interest"]:
        raise ReserveError(f"{ENTRY_KIND}: more set aside than the interest it came from")
    if "uncovered" in body and (body["uncovered"] > body["amount"] or body["balance_after"] != 0):
        raise ReserveError(f"{ENTRY_KIND}: only a draw that empties the reserve leaves some uncovered")
    return body


def body_of(m: Movement, state_before: ReserveState) -> tuple[dict, ReserveState]:
    """The ``reserve.entry`` body that records movement ``m`` after ``state_before``
    (the reserve as the author's chain has it), and the state after it. The node
    appends this body; ``replay`` over its chain then gives the same state."""
    after, uncovered = apply(state_before, m)
    body: dict[str, Any] = {"currency": m.currency, "kind": m.kind, "amount": m.amount,
                            "date": m.date.isoformat(), "balance_after": after.balance}
    if m.loan is not None:
        body["loan"] = m.loan
    if m.interest is not None and m.kind == "set_aside":
        body["interest"] = m.interest
    if m.required is not None and m.kind in ("top_up", "release"):
        body["required"] = m.required
    if uncovered:
        body["uncovered"] = uncovered
    return check_body(body), after


def movement_of(body: dict) -> Movement:
    """The movement a (checked) body records."""
    return Movement(body["currency"], body["kind"], body["amount"], parse_date(body["date"]), body.get("loan"),
                    body.get("interest"), body.get("required"))


def replay(bodies: Iterable[dict], currency: str) -> ReserveState:
    """Rule 4: the reserve of ``currency`` from the author's ``reserve.entry`` bodies in
    chain order (those of other currencies are skipped), each checked against the fold."""
    state = ReserveState(currency)
    for n, body in enumerate(bodies):
        if n >= MAX_MOVEMENTS:
            raise ReserveError(f"more than {MAX_MOVEMENTS} entries", code="too_many")
        check_body(body)
        if body["currency"] != currency:
            continue
        state, uncovered = apply(state, movement_of(body))
        if body["balance_after"] != state.balance or body.get("uncovered", 0) != uncovered:
            raise ReserveError(f"{ENTRY_KIND} {n + 1} of {currency}: balance_after {body['balance_after']}, "
                               f"uncovered {body.get('uncovered', 0)}; the movements give {state.balance}, "
                               f"{uncovered}", code="bad_balance")
    return state


def _validate(entry: Any) -> None:
    """The kind's validator (kinds.py): ``check_body`` of the entry's body."""
    check_body(entry.body)


def reserve_index(entry: Any) -> list[bytes]:
    """``b"R" + author + currency + seq(8)``: one prefix scan finds an author's reserve
    entries of one currency in chain order (for ``replay``)."""
    return [RESERVE_INDEX + entry.author + entry.body["currency"].encode() + entry.seq.to_bytes(8, "big")]


RESERVE_KINDS = (
    Kind(ENTRY_KIND, "a movement of the lender's own loss reserve", _validate, reserve_index),
)
"""The entry kinds of this file, for the lending extension to register."""
