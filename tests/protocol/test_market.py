"""The secondary market (protocol/lending/market.py): listings, whether one stands for a loan,
yield to maturity by exact bisection, and the price a sale's transfer carries."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.envelope import open_envelope, seal
from protocol.errors import ProtocolError, SignatureError
from protocol.keys import SigningKey
from protocol.lending.contract import check_transfer, contract_schedule
from protocol.lending.market import (
    MAX_YTM_BP, MIN_YTM_BP, TRANSFER_PRICE_FIELD, MarketError, check_gossip, check_listing, check_sale_transfer,
    listing_fault, listing_of, listing_view, make_listing, sale_fault, sale_transfer, yield_to_maturity,
)
from protocol.lending.portfolio import expected_flows

from portfolio_kit import B, START, contract, loan_id, notice, paid, state

SELLER = SigningKey.from_seed(hashlib.sha256(b"market-seller").digest())
BUYER = SigningKey.from_seed(hashlib.sha256(b"market-buyer").digest())
T0 = 1_790_000_000_000
DAY_MS = 24 * 3600 * 1000
LOAN = loan_id("market")


def listing(price=250000, key=SELLER, **kw):
    args = dict(loan=LOAN, price=price, currency="EUR", created=T0, expires=T0 + 7 * DAY_MS)
    args.update(kw)
    return listing_of(open_envelope(make_listing(key, **args).raw))


def the_loan(k=3, today=date(2026, 5, 1), **kw):
    c = contract(lender=SELLER.public_key, **kw)
    return c, state(LOAN, c, paid(LOAN, c, k), today)


def test_a_listing_round_trips_and_passes_the_topic():
    lst = listing()
    assert (lst.loan, lst.seller, lst.price, lst.currency) == (LOAN, SELLER.public_key, 250000, "EUR")
    assert check_gossip(lst.envelope) == lst


@pytest.mark.parametrize("change", [{"price": 0}, {"currency": "XYZ"}, {"expires": T0}, {"expires": T0 + 31 * DAY_MS},
                                    {"loan": b"\x01" * 31}, {"extra": 1}, {"type": "offer"}])
def test_bad_listings_are_refused(change):
    doc = {"type": "listing", "loan": LOAN, "seller": SELLER.public_key, "price": 5, "currency": "EUR",
           "created": T0, "expires": T0 + DAY_MS}
    doc.update(change)
    with pytest.raises(MarketError):
        check_listing(doc)


def test_a_listing_signed_by_another_key_is_refused():
    doc = {"type": "listing", "loan": LOAN, "seller": SELLER.public_key, "price": 5, "currency": "EUR",
           "created": T0, "expires": T0 + DAY_MS}
    with pytest.raises(SignatureError):
        listing_of(open_envelope(seal(doc, BUYER).raw))
    with pytest.raises(ProtocolError):
        check_gossip(seal({"type": "offer.cancel", "author": B, "offer": LOAN, "created": 1}, BUYER).raw)


def test_when_a_listing_stands():
    c, s = the_loan()
    lst = listing()
    assert listing_fault(lst, c, s, T0 + 1) is None
    assert listing_fault(lst, c, s, T0 + 7 * DAY_MS)[0] == "listing_expired"
    assert listing_fault(listing(currency="USD"), c, s, T0)[0] == "wrong_currency"
    assert listing_fault(listing(key=BUYER), c, s, T0)[0] == "not_holder"
    c2, repaid = the_loan(k=12, today=date(2027, 2, 1))
    assert listing_fault(lst, c2, repaid, T0)[0] == "not_for_sale"
    c3 = contract(lender=SELLER.public_key, default_days=30)
    defaulted = state(LOAN, c3, paid(LOAN, c3, 0), date(2026, 4, 1),
                      [notice("default", SELLER.public_key, date(2026, 4, 1))])
    assert defaulted.state == "defaulted" and listing_fault(lst, c3, defaulted, T0) is None  # a debt sale


def test_yield_of_a_bullet_is_its_rate():
    today = date(2026, 1, 1)
    assert yield_to_maturity([(date(2027, 1, 1), 110000)], 100000, today) == 1000
    assert yield_to_maturity([(date(2027, 1, 1), 100000)], 100000, today) == 0
    assert yield_to_maturity([(date(2027, 1, 1), 90000)], 100000, today) == -1000
    # floored to a basis point: a price a little under 100000 yields a little over 10 %
    assert yield_to_maturity([(date(2027, 1, 1), 110000)], 99990, today) == 1001  # 10.011 %
    assert yield_to_maturity([(date(2027, 1, 1), 110000)], 99999, today) == 1000  # 10.0011 %


def test_yield_edges():
    today = date(2026, 1, 1)
    assert yield_to_maturity([], 100, today) is None
    assert yield_to_maturity([(date(2027, 1, 1), 0)], 100, today) is None
    assert yield_to_maturity([(today, 100)], 100, today) is None  # nothing after today to discount
    assert yield_to_maturity([(today - timedelta(days=9), 50), (date(2027, 1, 1), 55)], 100, today) == 1000
    assert yield_to_maturity([(date(2027, 1, 1), 100)], 10**6, today) == MIN_YTM_BP
    assert yield_to_maturity([(date(2027, 1, 1), 100)], 10**6 + 1, today) is None  # below -99.99 %
    assert yield_to_maturity([(date(2027, 1, 1), 10**9)], 1, today) is None  # above 10,000 %
    with pytest.raises(MarketError):
        yield_to_maturity([(today, 1)], 0, today)


def test_the_yield_of_a_loan_at_par_is_its_effective_rate():
    c, s = the_loan(k=0, today=START)
    assert 1265 <= yield_to_maturity(expected_flows(s, START), 300000, START) <= 1280  # 1 % a month, by days
    view = listing_view(listing(price=290000), s, START, grade="B")
    assert view["ytm_bp"] > 1270 and view["remaining_principal"] == 300000 and view["grade"] == "B"
    assert view["days_past_due"] == 0 and view["price_text"] == "2900.00"
    assert view["remaining_flows"] == sum(i.payment for i in contract_schedule(c))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 10**7)), min_size=1, max_size=12),
       st.integers(1, 10**7))
def test_the_yield_brackets_the_price(flows, price):
    """The answer y is the largest basis point whose present value is at least the price."""
    from decimal import Context

    from protocol.lending.market import YTM_PRECISION, YTM_TOLERANCE_DIGITS, _present_value

    today = date(2026, 1, 1)
    dated = [(today + timedelta(days=d), a) for d, a in flows]
    y = yield_to_maturity(dated, price, today)
    fl = [(d, a) for d, a in flows]
    ctx = Context(prec=YTM_PRECISION)
    if y is None:
        near = ctx.multiply(Decimal(price), ctx.subtract(Decimal(1), ctx.power(Decimal(10), -YTM_TOLERANCE_DIGITS)))
        lo, hi = _present_value(fl, MIN_YTM_BP, ctx), _present_value(fl, MAX_YTM_BP, ctx)
        assert lo < near or hi > near
    else:
        near = ctx.multiply(Decimal(price), ctx.subtract(Decimal(1), ctx.power(Decimal(10), -YTM_TOLERANCE_DIGITS)))
        assert _present_value(fl, y, ctx) >= near
        assert y == MAX_YTM_BP or _present_value(fl, y + 1, ctx) < near
        # a higher price never yields more
        y2 = yield_to_maturity(dated, price + 1, today)
        assert y2 is None or y2 <= y


def test_a_sale_transfer_carries_the_price():
    lst = listing()
    t = sale_transfer(lst, BUYER.public_key, after=4, day=date(2026, 5, 2))
    assert t["price"] == 250000 and t["from"] == SELLER.public_key and t["to"] == BUYER.public_key
    assert sale_fault(t, lst) is None
    plain = {k: v for k, v in t.items() if k != "price"}
    assert check_transfer(dict(plain)) and sale_fault(plain, lst)[0] == "no_price"
    assert sale_fault(dict(t, price=1), lst)[0] == "wrong_price"
    assert sale_fault(dict(t, loan=b"\x09" * 32), lst)[0] == "wrong_loan"
    assert sale_fault(dict(t, **{"from": BUYER.public_key, "to": SELLER.public_key}), lst)[0] == "wrong_seller"
    with pytest.raises(ProtocolError):
        check_sale_transfer(dict(t, price=0))
    assert set(TRANSFER_PRICE_FIELD) == {"price"}


def test_when_a_sale_is_made():
    """Rule 6, in its order: the transfer carries out the listing, the listing stands, the
    seller may transfer, after the receipts counted now, dated today, making the buyer the
    holder; the state with the transfer is asked only when all else passed."""
    import dataclasses

    from protocol.lending.market import sale_refusal

    c, s = the_loan()
    lst, today = listing(), date(2026, 5, 1)
    good = sale_transfer(lst, BUYER.public_key, after=len(s.counted), day=today)
    asked = []

    def with_(holder):
        def state_with():
            asked.append(holder)
            return dataclasses.replace(s, holder=holder)
        return state_with

    assert sale_refusal(good, lst, c, s, today, T0 + 1, with_(BUYER.public_key)) is None and asked
    asked.clear()
    cases = {
        "wrong_price": (dict(good, price=1), T0 + 1),
        "listing_expired": (good, T0 + 7 * DAY_MS),
        "bad_peer": (dict(good, to=c["borrower"]), T0 + 1),
        "stale_after": (dict(good, after=len(s.counted) - 1), T0 + 1),
        "bad_date": (dict(good, date="2026-04-30"), T0 + 1),
    }
    for code, (t, now) in cases.items():
        assert sale_refusal(t, lst, c, s, today, now, with_(BUYER.public_key))[0] == code, code
    assert asked == []  # the state with the transfer: never made for a refused sale
    assert sale_refusal(good, lst, c, s, today, T0 + 1, with_(SELLER.public_key))[0] == "bad_transfer"
