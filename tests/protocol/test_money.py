"""The money parsers: amounts per currency exponent, rates in basis points, terms."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import ProtocolError
from protocol.lending.money import (CURRENCIES, MAX_AMOUNT, MoneyError, exponent, format_amount, format_rate,
                            parse_amount, parse_rate, parse_term)


@pytest.mark.parametrize("text,currency,minor", [
    ("1500.00", "EUR", 150000), ("1500", "EUR", 150000), ("1500.5", "EUR", 150050), ("0", "EUR", 0),
    ("0.01", "USD", 1), ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("0.00000001", "BTC", 1),
    ("21000000", "BTC", 2_100_000_000_000_000), ("10000000000000000", "EUR", MAX_AMOUNT),
])
def test_good_amounts(text, currency, minor):
    assert parse_amount(text, currency) == minor


@pytest.mark.parametrize("text,currency,code,words", [
    ("1500.505", "EUR", "bad_amount", "3 decimals"), ("1500.5", "JPY", "bad_amount", "decimals"),
    ("-1", "EUR", "bad_amount", "negative"), ("", "EUR", "bad_amount", "not DIGITS"),
    ("1,500.00", "EUR", "bad_amount", "not DIGITS"), ("1e3", "EUR", "bad_amount", "not DIGITS"),
    (" 1", "EUR", "bad_amount", "not DIGITS"), ("1.", "EUR", "bad_amount", "not DIGITS"),
    (".5", "EUR", "bad_amount", "not DIGITS"), ("01", "EUR", "bad_amount", "not DIGITS"),
    ("+1", "EUR", "bad_amount", "not DIGITS"), ("١٢", "EUR", "bad_amount", "not DIGITS"),
    ("NaN", "EUR", "bad_amount", "not DIGITS"), ("10000000000000000.01", "EUR", "bad_amount", "limit"),
    ("1", "eur", "bad_currency", "uppercase"), ("1", "XXX", "bad_currency", "unknown"),
    ("1", "EURO", "bad_currency", "uppercase"),
])
def test_bad_amounts(text, currency, code, words):
    with pytest.raises(MoneyError) as e:
        parse_amount(text, currency)
    assert isinstance(e.value, ProtocolError)
    assert e.value.code == code and words in e.value.message


def test_format_amount():
    assert format_amount(150000, "EUR") == "1500.00"
    assert format_amount(5, "EUR") == "0.05"
    assert format_amount(1500, "JPY") == "1500"
    assert format_amount(1, "BTC") == "0.00000001"
    assert format_amount(1234, "KWD") == "1.234"
    assert format_amount(-5, "EUR") == "-0.05"


@given(st.sampled_from(sorted(CURRENCIES)), st.integers(0, MAX_AMOUNT))
def test_amount_round_trip(currency, minor):
    text = format_amount(minor, currency)
    assert parse_amount(text, currency) == minor
    assert text.count(".") == (1 if exponent(currency) else 0)


@pytest.mark.parametrize("text,bp", [("7.5%", 750), ("7.5", 750), ("0%", 0), ("0", 0), ("12%", 1200),
                                     ("0.01%", 1), ("1000%", 100_000), ("12.34%", 1234)])
def test_good_rates(text, bp):
    assert parse_rate(text) == bp


@pytest.mark.parametrize("text", ["-1%", "7.555%", "1000.01%", "1001", "", "%", "7.5 %", "7,5%", "abc",
                                  "07%", "7.%", "7.5%%"])
def test_bad_rates(text):
    with pytest.raises(MoneyError) as e:
        parse_rate(text)
    assert e.value.code == "bad_rate"


@given(st.integers(0, 100_000))
def test_rate_round_trip(bp):
    assert parse_rate(format_rate(bp)) == bp


@pytest.mark.parametrize("text,term", [("12m", (12, "m")), ("26w", (26, "w")), ("90d", (90, "d")),
                                       ("1d", (1, "d")), ("9999m", (9999, "m"))])
def test_good_terms(text, term):
    assert parse_term(text) == term


@pytest.mark.parametrize("text", ["", "12", "m", "0m", "012m", "12y", "12M", "-1m", "1.5m", "10000d", " 12m"])
def test_bad_terms(text):
    with pytest.raises(MoneyError) as e:
        parse_term(text)
    assert e.value.code == "bad_term"


def test_texts_far_too_long_are_refused_before_they_are_read():
    """A term, amount or rate of thousands of digits is refused with its code and a short
    message, never read as a number (Python refuses int() of over 4300 digits)."""
    for parse, text, code in ((parse_term, "1" * 5000 + "m", "bad_term"),
                              (lambda t: parse_amount(t, "EUR"), "9" * 5000, "bad_amount"),
                              (parse_rate, "9" * 5000 + "%", "bad_rate")):
        with pytest.raises(MoneyError) as e:
            parse(text)
        assert e.value.code == code and len(e.value.message) < 120
