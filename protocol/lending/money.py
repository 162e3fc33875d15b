"""Money, rates and terms as people write them, turned into exact integers and back.

Rules (docs/protocol.md, "Schedules"; DESIGN.md, "Encoding"):

1. Money is an integer count of minor units of a currency. A currency code is three
   uppercase ASCII letters and must be in ``CURRENCIES``, which gives its exponent: the
   number of decimals of one major unit (EUR 2, JPY 0, KWD 3, BTC 8).
2. An amount is written ``DIGITS[.DIGITS]`` in ASCII: no sign, no leading zeros (except a
   lone ``0``), no grouping, no exponent, no spaces, at most as many decimals as the
   currency's exponent: ``"1500"`` EUR is 150000 cents, ``"1500.5"`` and ``"1500.50"``
   are 150050, and ``"1500.505"`` is refused, never rounded. At most ``MAX_AMOUNT``
   minor units.
3. A rate is written as a yearly percentage ``DIGITS[.D[D]][%]`` (``"7.5%"``, ``"7.5"``,
   ``"0%"``): at most 2 decimals, read as basis points per year (750), from 0 to
   ``MAX_RATE_BP`` (1000 %).
4. A term is ``COUNT`` followed by ``m`` (months), ``w`` (weeks) or ``d`` (days), with
   COUNT from 1 to ``MAX_TERM_COUNT``, no leading zeros: ``"12m"``, ``"26w"``, ``"90d"``.
5. Every refusal is a ``MoneyError`` (a ``ProtocolError``) whose code says which value is
   wrong: ``bad_amount``, ``bad_currency``, ``bad_rate`` or ``bad_term``. Nothing here
   uses floats or Decimal: parsing is string work and integer arithmetic.
"""

from __future__ import annotations

import re
from fractions import Fraction

from ..errors import ProtocolError

CURRENCIES: dict[str, int] = {
    "AUD": 2, "BHD": 3, "BRL": 2, "BTC": 8, "CAD": 2, "CHF": 2, "CLP": 0, "CNY": 2,
    "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2, "INR": 2, "ISK": 0,
    "JOD": 3, "JPY": 0, "KES": 2, "KRW": 0, "KWD": 3, "MXN": 2, "NGN": 2, "NOK": 2,
    "NZD": 2, "OMR": 3, "PLN": 2, "SEK": 2, "SGD": 2, "TND": 3, "USD": 2, "ZAR": 2,
}
"""Known currency codes and their exponents (decimals of one major unit)."""

MAX_AMOUNT = 10**18
"""The largest amount, in minor units, that ``parse_amount`` accepts."""

MAX_RATE_BP = 100_000
"""The largest rate, in basis points per year (1000 %)."""

MAX_TERM_COUNT = 9999
TERM_UNITS = ("m", "w", "d")

_CODE = re.compile(r"[A-Z]{3}")
_AMOUNT = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?")
_RATE = re.compile(r"(0|[1-9][0-9]*)(?:\.([0-9]+))?%?")
_TERM = re.compile(r"([1-9][0-9]*)([mwd])")


MAX_TEXT = 40  # characters of an amount, rate or term text; longer is refused before it is read


def _quoted(text: object) -> str:
    """``text`` for an error message: its repr, cut to ``MAX_TEXT`` characters."""
    r = repr(text)
    return r if len(r) <= MAX_TEXT + 2 else r[:MAX_TEXT] + "..."


class MoneyError(ProtocolError):
    """An amount, currency, rate or term that is not written by the rules."""

    code = "bad_amount"


def exponent(currency: str) -> int:
    """The exponent of a known currency code; raises ``MoneyError`` (bad_currency)."""
    if type(currency) is not str or not _CODE.fullmatch(currency):
        raise MoneyError(f"currency {currency!r} is not three uppercase letters", code="bad_currency")
    if currency not in CURRENCIES:
        raise MoneyError(f"unknown currency {currency}", code="bad_currency")
    return CURRENCIES[currency]


def parse_amount(text: str, currency: str) -> int:
    """The exact number of minor units ``text`` names in ``currency``, or ``MoneyError``."""
    exp = exponent(currency)
    if type(text) is not str:
        raise MoneyError("an amount is text")
    if text.startswith("-"):
        raise MoneyError(f"amount {_quoted(text)} is negative")
    m = _AMOUNT.fullmatch(text) if len(text) <= MAX_TEXT else None
    if m is None:
        raise MoneyError(f"amount {_quoted(text)} is not DIGITS[.DIGITS] (e.g. 1500.00)")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > exp:
        raise MoneyError(f"amount {_quoted(text)} has {len(frac)} decimals; {currency} has {exp}")
    minor = int(whole) * 10**exp + int(frac.ljust(exp, "0") or "0")
    if minor > MAX_AMOUNT:
        raise MoneyError(f"amount {_quoted(text)} is over the limit of {MAX_AMOUNT} minor units")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """``minor`` units of ``currency`` written with exactly its exponent's decimals
    (``150000, "EUR"`` -> ``"1500.00"``); ``parse_amount`` reads it back to ``minor``."""
    exp = exponent(currency)
    if type(minor) is not int:
        raise MoneyError("an amount in minor units is an integer")
    sign, n = ("-", -minor) if minor < 0 else ("", minor)
    whole, frac = divmod(n, 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


def parse_rate(text: str) -> int:
    """A yearly rate written as a percentage (``"7.5%"``, ``"7.5"``, ``"0%"``) in basis
    points (750), or ``MoneyError`` (bad_rate)."""
    if type(text) is not str:
        raise MoneyError("a rate is text", code="bad_rate")
    if text.startswith("-"):
        raise MoneyError(f"rate {_quoted(text)} is negative", code="bad_rate")
    m = _RATE.fullmatch(text) if len(text) <= 20 else None
    if m is None:
        raise MoneyError(f"rate {_quoted(text)} is not a percentage like 7.5%", code="bad_rate")
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > 2:
        raise MoneyError(f"rate {_quoted(text)} has more than 2 decimals", code="bad_rate")
    bp = int(whole) * 100 + int(frac.ljust(2, "0"))
    if bp > MAX_RATE_BP:
        raise MoneyError(f"rate {_quoted(text)} is over {MAX_RATE_BP // 100}%", code="bad_rate")
    return bp


def format_rate(bp: int) -> str:
    """Basis points as a percentage with the decimals it needs (750 -> ``"7.5%"``)."""
    whole, frac = divmod(bp, 100)
    return f"{whole}%" if frac == 0 else f"{whole}.{frac:02d}".rstrip("0") + "%"


def parse_term(text: str) -> tuple[int, str]:
    """A term such as ``"12m"``, ``"26w"`` or ``"90d"`` as ``(count, unit)``, or
    ``MoneyError`` (bad_term)."""
    m = _TERM.fullmatch(text) if type(text) is str and len(text) <= 8 else None
    if m is None:
        raise MoneyError(f"term {_quoted(text)} is not COUNT followed by m, w or d (e.g. 12m)", code="bad_term")
    count = int(m.group(1))
    if count > MAX_TERM_COUNT:
        raise MoneyError(f"term {_quoted(text)} is over {MAX_TERM_COUNT} {m.group(2)}", code="bad_term")
    return count, m.group(2)


def term_months(text: str) -> Fraction:
    """A term in months, exactly: ``"12m"`` is 12, weeks and days count a month as 365/12
    days (policy's ``max_term``, auto-invest's ``longest_term``); ``MoneyError`` as
    ``parse_term``."""
    count, unit = parse_term(text)
    return Fraction(count) if unit == "m" else Fraction(count * (7 if unit == "w" else 1) * 12, 365)


def format_term(term: tuple[int, str]) -> str:
    return f"{term[0]}{term[1]}"
