"""Offers, requests and cancellations (protocol/lending/offer.py), and the offers gossip validator."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import wire
from protocol.envelope import seal
from protocol.errors import ProtocolError, SignatureError
from protocol.keys import SigningKey
from protocol.entry import next_entry
from protocol.lending.money import CURRENCIES, MAX_AMOUNT
from protocol.lending.offer import (
    OfferError, cancel_of, check_gossip, check_offer, is_live, make_cancel, make_offer, matches, offer_json, offer_of,
    parse_book_message, parse_cancel, parse_offer_document,
)
from protocol.envelope import open_envelope

A = SigningKey.from_seed(hashlib.sha256(b"offer-a").digest())
B = SigningKey.from_seed(hashlib.sha256(b"offer-b").digest())
T0 = 1_790_000_000_000


def doc(**over):
    d = {"type": "offer", "side": "lend", "author": A.public_key, "currency": "EUR", "min_amount": 100,
         "max_amount": 150_000, "rate_bp": 750, "term": "12m", "schedule": "annuity", "grace_days": 5,
         "late_fee": 0, "default_days": 90, "created": T0, "expires": T0 + 3600_000}
    d.update(over)
    return d


def test_a_valid_offer_round_trips_and_shows():
    env = seal(doc(), A)
    o = offer_of(open_envelope(env.raw))
    assert (o.id, o.side, o.min_amount, o.max_amount) == (env.id, "lend", 100, 150_000)
    j = offer_json(o)
    assert j["max_amount_text"] == "1500.00" and j["rate_text"] == "7.5%"
    assert parse_book_message(env.raw) == o


@pytest.mark.parametrize("field,value", [
    ("type", "offer.cancel"), ("side", "give"), ("author", b"x"), ("author", "A" * 32), ("currency", "XXX"),
    ("currency", "eur"), ("currency", 978), ("min_amount", 0), ("min_amount", 200_000), ("min_amount", "1"),
    ("max_amount", MAX_AMOUNT + 1), ("rate_bp", 100_001), ("rate_bp", -1), ("term", "0m"), ("term", "13x"),
    ("term", "10000m"), ("term", "45d"), ("schedule", "balloon"), ("grace_days", 366), ("late_fee", -1),
    ("default_days", 0), ("default_days", 3651), ("created", -1), ("created", True), ("expires", T0),
    ("expires", T0 + 91 * 24 * 3600 * 1000), ("period_days", 7), ("period_days", 0), ("min_grade", ""),
    ("min_grade", "b"), ("min_grade", "ABCDEFGHI"), ("extra", 1),
])
def test_each_bad_field_is_refused_by_name(field, value):
    with pytest.raises(OfferError) as e:
        check_offer(doc(**{field: value}))
    assert e.value.code == "bad_offer"
    assert repr(field) in e.value.message, e.value.message


@pytest.mark.parametrize("field", sorted(set(doc()) - {"type"}))
def test_each_missing_field_is_named(field):
    d = doc()
    del d[field]
    with pytest.raises(OfferError) as e:
        check_offer(d)
    assert repr(field) in e.value.message


def test_a_bullet_needs_no_whole_periods_and_weeks_default_to_7_days():
    assert check_offer(doc(term="45d", schedule="bullet"))
    assert check_offer(doc(term="3w"))
    with pytest.raises(OfferError, match="'period_days'"):
        check_offer(doc(term="12m", period_days=30))


def test_weekly_terms_take_period_days():
    assert check_offer(doc(term="26w", period_days=14))
    with pytest.raises(OfferError):
        check_offer(doc(term="26w", period_days=4))  # 182 days are not whole 4-day periods


def test_an_offer_signed_by_another_key_is_refused():
    with pytest.raises(SignatureError):
        offer_of(open_envelope(seal(doc(), B).raw))


def test_liveness_and_the_named_parsers():
    env = make_offer(A, side="lend", currency="EUR", min_amount=1, max_amount=2, rate_bp=1, term="1m",
                     created=T0, expires=T0 + 10)
    o = parse_offer_document(open_envelope(env.raw))
    assert (o.grace_days, o.late_fee, o.default_days, o.schedule, o.min_grade, o.period_days) == (
        5, 0, 90, "annuity", None, None)
    assert is_live(o, T0) and is_live(o, T0 + 9) and not is_live(o, T0 + 10)
    c = make_cancel(A, o.id, T0 + 5)
    assert parse_cancel(open_envelope(c.raw)) == {"type": "offer.cancel", "author": A.public_key, "offer": o.id,
                                                  "created": T0 + 5}
    with pytest.raises(OfferError, match="'type'"):
        parse_offer_document(open_envelope(c.raw))


def test_cancellations():
    o = make_offer(A, side="borrow", currency="JPY", min_amount=1000, max_amount=1000, rate_bp=0, term="90d",
                   created=T0, expires=T0 + 1)
    c = make_cancel(A, o.id, T0 + 1)
    assert cancel_of(open_envelope(c.raw))["offer"] == o.id
    assert parse_book_message(c.raw)["author"] == A.public_key
    forged = seal(dict(c.document), B)  # B signs A's cancellation
    with pytest.raises(SignatureError):
        cancel_of(open_envelope(forged.raw))
    with pytest.raises(OfferError, match="'offer'"):
        cancel_of(open_envelope(seal({"type": "offer.cancel", "author": A.public_key, "created": T0}, A).raw))
    with pytest.raises(OfferError, match="'note'"):
        cancel_of(open_envelope(seal(dict(c.document, note="x"), A).raw))
    with pytest.raises(OfferError, match="'offer'"):
        cancel_of(open_envelope(seal(dict(c.document, offer=b"short"), A).raw))


def test_the_offers_topic_takes_offers_and_cancellations_only():
    o = make_offer(A, side="lend", currency="EUR", min_amount=1, max_amount=2, rate_bp=1, term="1m",
                   created=T0, expires=T0 + 1)
    assert check_gossip(o.raw).id == o.id
    c = make_cancel(A, o.id, T0)
    assert check_gossip(c.raw)["offer"] == o.id
    entry = next_entry(A, None, now_ms=T0, kind="genesis", body={})
    for bad in (seal({"type": "note", "text": "x"}, A).raw, b"\x92\xc4\x00\x90", seal(doc(), B).raw,
                seal(doc(rate_bp=-1), A).raw, seal(dict(c.document), B).raw, entry.envelope, b"\xff" * 70_000):
        with pytest.raises(ProtocolError):
            check_gossip(bad)
    with pytest.raises(ProtocolError):  # and offers on another topic are refused there
        wire.check_gossip(wire.TOPIC_ENTRIES, o.raw)


def test_gossip_offers_topic_refuses_entries():  # (moved from test_wire.py with lending)
    e = next_entry(A, None, now_ms=T0, kind="genesis", body={"protocol": "p2plend/1"})
    with pytest.raises(ProtocolError, match="entries topic"):
        check_gossip(e.envelope)


def test_filters():
    o = offer_of(seal(doc(), A))
    assert matches(o) and matches(o, side="lend", currency="EUR", amount=150_000, max_rate_bp=750, min_rate_bp=750)
    assert not matches(o, side="borrow")
    assert not matches(o, amount=99)
    assert not matches(o, max_rate_bp=749)
    assert not matches(o, author=B.public_key)


offers = st.fixed_dictionaries({
    "side": st.sampled_from(["lend", "borrow"]),
    "currency": st.sampled_from(sorted(CURRENCIES)),
    "lo": st.integers(1, 10**12), "span": st.integers(0, 10**12),
    "rate_bp": st.integers(0, 100_000),
    "term": st.sampled_from(["1m", "12m", "360m", "26w", "90d"]),
    "schedule": st.sampled_from(["annuity", "equal-principal", "interest-only", "bullet"]),
    "grace_days": st.integers(0, 365), "late_fee": st.integers(0, 10**6), "default_days": st.integers(1, 3650),
    "ttl": st.integers(1, 90 * 24 * 3600 * 1000),
})


@settings(max_examples=150, deadline=None)
@given(offers)
def test_every_valid_offer_seals_opens_and_parses_to_itself(g):
    env = make_offer(A, side=g["side"], currency=g["currency"], min_amount=g["lo"], max_amount=g["lo"] + g["span"],
                     rate_bp=g["rate_bp"], term=g["term"], schedule=g["schedule"], grace_days=g["grace_days"],
                     late_fee=g["late_fee"], default_days=g["default_days"], created=T0, expires=T0 + g["ttl"])
    o = parse_book_message(env.raw)
    assert (o.min_amount, o.max_amount, o.rate_bp, o.term, o.expires) == (
        g["lo"], g["lo"] + g["span"], g["rate_bp"], g["term"], T0 + g["ttl"])
    assert o.envelope == env.raw
