"""Offers to lend, requests to borrow, and their cancellations: signed, expiring
documents of the offer book (not chain entries).

Rules (docs/protocol.md, "Offers"):

1. An offer is the document ``{type: "offer", side, author, currency, min_amount,
   max_amount, rate_bp, term, [period_days], schedule, grace_days, late_fee,
   default_days, [min_grade], created, expires}`` (``OFFER_FIELDS``) signed by its
   ``author`` alone. ``side`` is ``lend`` (an offer: the author lends) or ``borrow`` (a
   request: the author borrows). Its id is the document's id.
2. ``1 <= min_amount <= max_amount <= money.MAX_AMOUNT`` minor units of a known
   currency; ``term`` and ``period_days`` make a valid schedule of kind ``schedule``;
   ``created < expires <= created + MAX_OFFER_MS``.
3. A cancellation ``{type: "offer.cancel", author, offer, created}`` is signed by
   ``author``, and cancels the offer only if it has the same author.
4. An offer is live from when it is received until ``expires`` or a valid cancellation,
   whichever comes first. Taking it yields a contract (contract.py) on exactly its terms.
5. Every refusal is an ``OfferError`` (``bad_offer``) naming the field, or a
   ``SignatureError`` if the signer is not the author.
6. Offers and cancellations travel on the gossip topic ``TOPIC_OFFERS``, whose validator
   (``check_gossip``) takes exactly these two documents, signed and valid, and nothing
   else (a chain entry there is ``wrong_topic``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..envelope import Envelope, open_envelope, require_signers, seal
from ..errors import ProtocolError, SchemaError, SignatureError
from ..keys import SigningKey, peer_id
from .money import MAX_AMOUNT, MAX_RATE_BP, MoneyError, exponent, format_amount, format_rate, parse_term
from .schedule import KINDS as SCHEDULE_KINDS
from .schedule import periods_of
from ..schema import U63_MAX, binary, check_fields, const, text, uint
from ..wire import WireError

MAX_OFFER_MS = 90 * 24 * 3600 * 1000
TOPIC_OFFERS = "p2plend/1/offers"
"""An offer lives at most 90 days."""
SIDES = ("lend", "borrow")


class OfferError(ProtocolError):
    code = "bad_offer"


OFFER_FIELDS = {
    "type": const("offer"),
    "side": lambda v: v in SIDES,
    "author": binary(32),
    "currency": text(3, r"[A-Z]{3}"),
    "min_amount": uint(1, MAX_AMOUNT),
    "max_amount": uint(1, MAX_AMOUNT),
    "rate_bp": uint(0, MAX_RATE_BP),
    "term": text(8, r"[1-9][0-9]{0,3}[mwd]"),
    "schedule": lambda v: v in SCHEDULE_KINDS,
    "grace_days": uint(0, 365),
    "late_fee": uint(0, MAX_AMOUNT),
    "default_days": uint(1, 3650),
    "created": uint(0, U63_MAX),
    "expires": uint(0, U63_MAX),
}
OFFER_OPTIONAL = {"period_days": uint(1, 3660), "min_grade": text(8, r"[A-Z][A-Za-z0-9+-]{0,7}")}
CANCEL_FIELDS = {"type": const("offer.cancel"), "author": binary(32), "offer": binary(32), "created": uint(0, U63_MAX)}


@dataclass(frozen=True)
class Offer:
    """A verified offer or request: its fields, id and envelope bytes."""

    id: bytes
    envelope: bytes
    side: str
    author: bytes
    currency: str
    min_amount: int
    max_amount: int
    rate_bp: int
    term: str
    period_days: int | None
    schedule: str
    grace_days: int
    late_fee: int
    default_days: int
    min_grade: str | None
    created: int
    expires: int


def check_offer(doc: Any) -> dict:
    """``doc`` if it is an offer by rules 1 and 2; ``OfferError``/``SchemaError`` naming
    what is wrong otherwise."""
    try:
        check_fields(doc, OFFER_FIELDS, OFFER_OPTIONAL, what="offer")
    except SchemaError as e:
        raise OfferError(e.message) from None
    if doc["min_amount"] > doc["max_amount"]:
        raise OfferError("offer field 'min_amount' is above 'max_amount'")
    if not doc["created"] < doc["expires"] <= doc["created"] + MAX_OFFER_MS:
        raise OfferError("offer field 'expires' is not after 'created' and within 90 days of it")
    field = "currency"
    try:
        exponent(doc["currency"])
        field = "term"
        term = parse_term(doc["term"])
        field = "period_days" if "period_days" in doc else "term"
        if doc["schedule"] != "bullet" or "period_days" in doc:
            periods_of(term, doc.get("period_days"))
    except MoneyError as e:
        raise OfferError(f"offer field {field!r}: {e.message}") from None
    return doc


def make_offer(key: SigningKey, *, side: str, currency: str, min_amount: int, max_amount: int, rate_bp: int,
               term: str, schedule: str = "annuity", grace_days: int = 5, late_fee: int = 0,
               default_days: int = 90, created: int, expires: int, period_days: int | None = None,
               min_grade: str | None = None) -> Envelope:
    doc: dict[str, Any] = {
        "type": "offer", "side": side, "author": key.public_key, "currency": currency, "min_amount": min_amount,
        "max_amount": max_amount, "rate_bp": rate_bp, "term": term, "schedule": schedule,
        "grace_days": grace_days, "late_fee": late_fee, "default_days": default_days, "created": created,
        "expires": expires,
    }
    if period_days is not None:
        doc["period_days"] = period_days
    if min_grade:
        doc["min_grade"] = min_grade
    return seal(check_offer(doc), key)


def make_cancel(key: SigningKey, offer_id: bytes, created: int) -> Envelope:
    return seal({"type": "offer.cancel", "author": key.public_key, "offer": offer_id, "created": created}, key)


def offer_of(env: Envelope) -> Offer:
    """The offer in an opened envelope (rules 1, 2)."""
    doc = check_offer(env.document)
    try:
        require_signers(env, doc["author"])
    except SignatureError:
        raise SignatureError("an offer must be signed by its author alone") from None
    return Offer(env.id, env.raw, doc["side"], doc["author"], doc["currency"], doc["min_amount"], doc["max_amount"],
                 doc["rate_bp"], doc["term"], doc.get("period_days"), doc["schedule"], doc["grace_days"],
                 doc["late_fee"], doc["default_days"], doc.get("min_grade"), doc["created"], doc["expires"])


def cancel_of(env: Envelope) -> dict:
    """The cancellation in an opened envelope (rule 3)."""
    try:
        check_fields(env.document, CANCEL_FIELDS, what="offer.cancel")
    except SchemaError as e:
        raise OfferError(e.message) from None
    try:
        require_signers(env, env.document["author"])
    except SignatureError:
        raise SignatureError("a cancellation must be signed by its author alone") from None
    return env.document


parse_offer_document = offer_of
parse_cancel = cancel_of


def is_live(o: Offer, now_ms: int) -> bool:
    """Whether ``o`` has not expired at ``now_ms`` (rule 4; cancellations are the book's
    to know: a cancelled offer is no longer in it)."""
    return now_ms < o.expires


def parse_book_message(data: bytes) -> Offer | dict:
    """What a ``p2plend/1/offers`` message carries: an ``Offer`` or a cancellation."""
    env = open_envelope(data)
    if env.type == "offer":
        return offer_of(env)
    if env.type == "offer.cancel":
        return cancel_of(env)
    raise OfferError(f"a {env.type[:40]!r} document does not belong in the offer book")


def check_gossip(data: bytes) -> Offer | dict:
    """Rule 6: the offer or cancellation a ``TOPIC_OFFERS`` message carries, verified;
    ``ProtocolError`` if it must be neither delivered nor forwarded."""
    if open_envelope(data).type == "entry":
        raise WireError("chain entries belong on the entries topic", code="wrong_topic")
    return parse_book_message(data)


def matches(o: Offer, *, side: str | None = None, currency: str | None = None, amount: int | None = None,
            max_rate_bp: int | None = None, min_rate_bp: int | None = None, author: bytes | None = None) -> bool:
    """Whether ``o`` passes every filter given."""
    return ((side is None or o.side == side) and (currency is None or o.currency == currency)
            and (amount is None or o.min_amount <= amount <= o.max_amount)
            and (max_rate_bp is None or o.rate_bp <= max_rate_bp) and (min_rate_bp is None or o.rate_bp >= min_rate_bp)
            and (author is None or o.author == author))


def offer_json(o: Offer) -> dict[str, Any]:
    cur = o.currency
    return {
        "id": o.id.hex(), "side": o.side, "author": peer_id(o.author), "currency": cur,
        "min_amount": o.min_amount, "max_amount": o.max_amount,
        "min_amount_text": format_amount(o.min_amount, cur), "max_amount_text": format_amount(o.max_amount, cur),
        "rate_bp": o.rate_bp, "rate_text": format_rate(o.rate_bp), "term": o.term, "period_days": o.period_days,
        "schedule": o.schedule, "grace_days": o.grace_days, "late_fee": o.late_fee,
        "late_fee_text": format_amount(o.late_fee, cur), "default_days": o.default_days, "min_grade": o.min_grade,
        "created": o.created, "expires": o.expires,
    }
