"""Each lender's own loss reserve (protocol/lending/reserve.py): movements, the fold and its
invariants, and the ``reserve.entry`` body that records each movement in the lender's chain."""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.kinds import KindRegistry
from protocol.lending.reserve import (
    ENTRY_KIND, KINDS, RESERVE_KINDS, Movement, ReserveError, ReserveState, apply, body_of, check_body, plan_draw,
    plan_follow, plan_set_aside, replay, reserve_state, set_aside_of,
)

D = date(2026, 3, 1)
LOAN = b"\x07" * 32


def m(kind: str, amount: int, day: date = D, loan: bytes | None = None, **kw) -> Movement:
    return Movement("EUR", kind, amount, day, loan if loan or kind != "draw" else LOAN, **kw)


def test_the_cycle_interest_set_aside_follow_and_a_write_off():
    s = ReserveState("EUR")
    s, _ = apply(s, plan_set_aside("EUR", 12345, D, loan=LOAN))  # 10 % floored: 1234
    assert s.balance == 1234 and s.set_aside == 1234
    top = plan_follow(s, 5000, D)
    assert top == Movement("EUR", "top_up", 3766, D, required=5000)
    s, _ = apply(s, top)
    assert s.balance == 5000 and plan_follow(s, 5000, D) is None
    assert plan_follow(s, 4000, D) is None  # by default what is set aside stays
    rel = plan_follow(s, 4000, D, release=True)
    s, _ = apply(s, rel)
    assert s.balance == 4000 and s.released == 1000
    s, uncovered = apply(s, plan_draw("EUR", 6500, D + timedelta(days=1), LOAN))
    assert (s.balance, s.drawn, s.uncovered, uncovered) == (0, 4000, 2500, 2500)
    v = s.view(3000)
    assert (v.coverage, v.coverage_bp, v.shortfall) == (Fraction(0), 0, 3000)


def test_coverage_is_exact_and_none_without_requirement():
    s = reserve_state([m("top_up", 1000)], "EUR")
    v = s.view(3000)
    assert v.coverage == Fraction(1, 3) and v.coverage_bp == 3333 and v.shortfall == 2000
    assert s.view(0).coverage is None and s.view(0).shortfall == 0
    assert s.view(500).coverage_bp == 20000 and s.view(500).shortfall == 0
    assert v.to_json()["coverage"] == "1/3"


def test_set_aside_rounds_down_and_zero_is_no_movement():
    assert set_aside_of(9, 1000) == 0 and set_aside_of(10, 1000) == 1 and set_aside_of(19999, 1000) == 1999
    assert plan_set_aside("EUR", 9, D) is None
    with pytest.raises(ValueError):
        set_aside_of(100, 10001)


@pytest.mark.parametrize("bad,code", [
    (m("release", 1), "overdrawn"),
    (Movement("USD", "top_up", 1, D), "mixed_currency"),
    (m("top_up", 0), "bad_amount"),
    (m("spend", 5), "bad_reserve"),
    (Movement("EUR", "draw", 5, D, None), "bad_reserve"),
    (m("top_up", 5, D - timedelta(days=1)), "bad_date"),
])
def test_refused_movements(bad, code):
    s = reserve_state([m("set_aside", 0 + 1, D)], "EUR")
    s, _ = apply(s, m("release", 1))  # balance 0 again
    with pytest.raises(ReserveError) as e:
        apply(s, bad)
    assert e.value.code == code


# -- the chain entry -----------------------------------------------------------------------------


def bodies_of(moves: list[Movement]) -> tuple[list[dict], ReserveState]:
    s = ReserveState("EUR")
    out = []
    for mv in moves:
        body, s = body_of(mv, s)
        out.append(body)
    return out, s


def test_bodies_record_the_movement_and_the_balance_and_replay():
    moves = [plan_set_aside("EUR", 50000, D, loan=LOAN), m("top_up", 2000, required=7000),
             m("draw", 10000, loan=LOAN)]
    bodies, s = bodies_of(moves)
    assert bodies[0] == {"currency": "EUR", "kind": "set_aside", "amount": 5000, "date": "2026-03-01",
                         "balance_after": 5000, "loan": LOAN, "interest": 50000}
    assert bodies[1] == {"currency": "EUR", "kind": "top_up", "amount": 2000, "date": "2026-03-01",
                         "balance_after": 7000, "required": 7000}
    assert bodies[2] == {"currency": "EUR", "kind": "draw", "amount": 10000, "date": "2026-03-01",
                         "balance_after": 0, "loan": LOAN, "uncovered": 3000}
    assert replay(bodies, "EUR") == s
    other = {"currency": "USD", "kind": "top_up", "amount": 5, "date": "2026-03-01", "balance_after": 5}
    assert replay([other] + bodies, "EUR") == s  # other currencies are skipped
    tampered = dict(bodies[1], balance_after=7001)
    with pytest.raises(ReserveError) as e:
        replay([bodies[0], tampered, bodies[2]], "EUR")
    assert e.value.code == "bad_balance"
    hidden = {k: v for k, v in bodies[2].items() if k != "uncovered"}
    with pytest.raises(ProtocolError):
        replay([bodies[0], bodies[1], hidden], "EUR")


BODY = {"currency": "EUR", "kind": "top_up", "amount": 5, "date": "2026-03-01", "balance_after": 5}


@pytest.mark.parametrize("change", [
    {"currency": "XXX"}, {"currency": "eur"}, {"kind": "spend"}, {"amount": 0}, {"amount": -1}, {"amount": 5.0},
    {"date": "2026-02-30"}, {"date": "1969-12-31"}, {"balance_after": -1}, {"loan": LOAN}, {"interest": 9},
    {"uncovered": 1}, {"kind": "draw"}, {"kind": "set_aside", "interest": 4}, {"extra": 1},
    {"kind": "draw", "loan": LOAN, "uncovered": 1},  # uncovered but a balance left
    {"kind": "draw", "loan": LOAN, "uncovered": 6, "balance_after": 0},  # more uncovered than drawn
    {"kind": "release", "loan": b"\x01"},
])
def test_bad_bodies_are_refused(change):
    with pytest.raises(ProtocolError):
        check_body(dict(BODY, **change))


def test_good_bodies_pass():
    assert check_body(dict(BODY)) == BODY
    assert check_body(dict(BODY, kind="draw", loan=LOAN, uncovered=5, balance_after=0))
    assert check_body(dict(BODY, kind="set_aside", loan=LOAN, interest=50))
    assert check_body(dict(BODY, kind="release", required=0))


class _Entry:
    def __init__(self, body, seq=3):
        self.kind, self.body, self.author, self.seq = ENTRY_KIND, body, b"\xaa" * 32, seq


def test_the_kind_registers_classifies_and_indexes():
    reg = KindRegistry()
    for k in RESERVE_KINDS:
        reg.register(k, "lending")
    assert reg.classify(_Entry(BODY)).status == "known"
    assert reg.classify(_Entry(dict(BODY, amount=0))).status == "invalid"
    owner, keys = reg.index_keys(_Entry(BODY))
    assert owner == "lending" and keys == [b"R" + b"\xaa" * 32 + b"EUR" + (3).to_bytes(8, "big")]
    with pytest.raises(ProtocolError):
        reg.check(_Entry(dict(BODY, kind="spend"), seq=2))


# -- properties -------------------------------------------------------------------------------------

movements = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 10**9), st.integers(0, 3)), max_size=40)


def _run(spec) -> list[Movement]:
    """Movements from a spec, releases cut to what the balance allows (a node never asks more)."""
    out, s, day = [], ReserveState("EUR"), D
    for kind, amount, gap in spec:
        day += timedelta(days=gap)
        if kind == "release":
            amount = min(amount, s.balance)
            if amount == 0:
                continue
        mv = m(kind, amount, day)
        s, _ = apply(s, mv)
        out.append(mv)
    return out


@settings(max_examples=300, deadline=None)
@given(movements)
def test_the_balance_is_never_negative_and_adds_up(spec):
    moves = _run(spec)
    s = ReserveState("EUR")
    for mv in moves:
        before = s.balance
        s, uncovered = apply(s, mv)
        assert s.balance >= 0
        if mv.kind == "draw":  # a draw beyond the balance records the shortfall, never a negative balance
            assert uncovered == max(0, mv.amount - before) and s.balance == max(0, before - mv.amount)
        else:
            assert uncovered == 0
    assert s.balance == s.set_aside + s.topped_up - s.released - s.drawn
    assert s.drawn + s.uncovered == sum(mv.amount for mv in moves if mv.kind == "draw")
    bodies, t = bodies_of(moves)
    assert t == s == replay(bodies, "EUR") == reserve_state(moves, "EUR")


@settings(max_examples=200, deadline=None)
@given(movements, st.integers(0, 10**10), st.booleans())
def test_following_reaches_the_requirement(spec, required, release):
    s = reserve_state(_run(spec), "EUR")
    mv = plan_follow(s, required, D + timedelta(days=200), release=release)
    after = s if mv is None else apply(s, mv)[0]
    if release:
        assert after.balance == required
    else:
        assert after.balance == max(required, s.balance)
    assert after.view(required).shortfall == 0
