"""The secondary market: a holder lists a loan for sale at a price; a buyer takes it by
a countersigned transfer that records the price.

Rules of this file (docs/portfolio.md, "The secondary market"):

1. A listing is the document ``{type: "listing", loan, seller, price, currency, created,
   expires}`` (``LISTING_FIELDS``) signed by its ``seller`` alone (``seal``, like an
   offer). ``price`` is 1 to ``money.MAX_AMOUNT`` minor units of ``currency``, a known
   currency; ``created < expires <= created + MAX_LISTING_MS``. Its id is the document's
   id. Listings travel on ``TOPIC_MARKET``, whose validator (``check_gossip``) takes
   exactly signed, valid listings.
2. A listing *stands* for a loan (``listing_fault``: the first failing check gives a
   stable code) when it is live (``now < expires``, else ``listing_expired``), names the
   loan's currency (``wrong_currency``), its seller holds the claim now (``not_holder``)
   and the loan is disbursed and neither repaid nor written off (``not_for_sale``). A
   defaulted loan may be sold (a debt sale), at the price the buyer accepts.
3. Yield to maturity (``yield_to_maturity``): the annual rate ``y`` at which the
   remaining cash flows ``(date, amount)``, discounted to ``today`` as
   ``amount / (1 + y) ** (days / 365)``, are worth ``price``. The present value falls as
   ``y`` rises, so ``y`` is found by bisection over whole basis points in
   ``[MIN_YTM_BP, MAX_YTM_BP]`` (at most ``YTM_STEPS`` steps): the answer is the largest
   ``y`` in basis points whose present value is at least the price, i.e. the yield
   floored to a basis point; None if even ``MAX_YTM_BP`` leaves the value above the
   price, or ``MIN_YTM_BP`` leaves it below (no yield in range), or no flow is dated
   after ``today`` (no rate discounts anything). The answer is defined by that property
   alone, so any bracket whose ends decimal confirms gives it: a float estimate proposes
   one 5 basis points wide (2 to 5 decimal evaluations instead of about 34), and the
   whole range is searched when decimal does not confirm it.
   Present values are computed in ``decimal`` with ``YTM_PRECISION`` (50) digits and
   the context's default rounding (half even; decimal's ``exp`` and ``ln`` are correctly
   rounded), so every node gets the same answer; nothing is a float. A present value
   within a relative ``10**-YTM_TOLERANCE_DIGITS`` below the price counts as reaching
   it, so that a yield hit exactly is not lost to rounding 40 digits down. A flow
   dated before ``today`` counts as received today.
4. The remaining cash flows of a loan are portfolio.py's ``expected_flows`` of its
   state: each installment still owed, at its due date or today if already due. So a
   late loan's yield assumes what is past due is paid now: the price of the risk is the
   buyer's to set, shown with the days past due.
5. A transfer made by a sale carries ``price`` (``TRANSFER_PRICE_FIELD``: 1 to
   ``MAX_AMOUNT`` minor units of the loan's currency). ``sale_transfer`` builds the
   transfer a buyer proposes for a listing; ``sale_fault`` says why a transfer does not
   carry out a listing (``no_price``, ``wrong_price``, ``wrong_loan``, ``wrong_seller``).
   A holder's node accepts a transfer on its own only if ``sale_fault`` finds nothing
   against a listing of its own that stands: never one without a price.
6. A sale is made (``sale_refusal``: the first failing check gives a stable code) when the
   buyer's transfer carries out the listing (rule 5), the listing stands (rule 2), the
   seller may transfer the claim to the buyer (rules.py, ``transfer``), the transfer
   passes it after exactly the receipts that count now (``stale_after``: else receipt
   ``after + 1`` would lose its payee), it is dated the day of the sale (``bad_date``),
   and the state with it makes the buyer the holder (``bad_transfer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Context, Decimal
from typing import Any, Callable, Iterable

from ..envelope import Envelope, open_envelope, require_signers, seal
from ..errors import ProtocolError, SchemaError, SignatureError
from ..keys import SigningKey, peer_id
from ..schema import U63_MAX, binary, check_fields, const, text, uint
from ..wire import WireError
from .contract import TRANSFER_OPTIONAL, check_transfer
from .rules import refusal
from .loanstate import AWAITING, REPAID, WRITTEN_OFF, LoanState
from .money import MAX_AMOUNT, MoneyError, exponent
from .portfolio import expected_flows

MAX_LISTING_MS = 30 * 24 * 3600 * 1000
"""A listing lives at most 30 days."""
TOPIC_MARKET = "p2plend/1/market"
MIN_YTM_BP = -9_999
"""The lowest yield searched: -99.99 % a year (a price near the whole remaining sum)."""
MAX_YTM_BP = 1_000_000
"""The highest yield searched: 10,000 % a year."""
YTM_STEPS = 32
"""Bisection steps at most: 2**32 > MAX_YTM_BP - MIN_YTM_BP."""
YTM_PRECISION = 50
YTM_TOLERANCE_DIGITS = 30
"""A present value within a relative 10**-30 below the price counts as reaching it."""
MAX_FLOWS = 1200
"""Cash flows one yield reads at most (the longest schedule)."""
BP = 10_000


class MarketError(ProtocolError):
    code = "bad_listing"


LISTING_FIELDS = {
    "type": const("listing"),
    "loan": binary(32),
    "seller": binary(32),
    "price": uint(1, MAX_AMOUNT),
    "currency": text(3, r"[A-Z]{3}"),
    "created": uint(0, U63_MAX),
    "expires": uint(0, U63_MAX),
}


@dataclass(frozen=True)
class Listing:
    """A verified listing: its fields, id and envelope bytes."""

    id: bytes
    envelope: bytes
    loan: bytes
    seller: bytes
    price: int
    currency: str
    created: int
    expires: int


def check_listing(doc: Any) -> dict:
    """``doc`` if it is a listing by rule 1; ``MarketError`` naming what is wrong."""
    try:
        check_fields(doc, LISTING_FIELDS, what="listing")
        exponent(doc["currency"])
    except (SchemaError, MoneyError) as e:
        raise MarketError(e.message) from None
    if not doc["created"] < doc["expires"] <= doc["created"] + MAX_LISTING_MS:
        raise MarketError("listing field 'expires' is not after 'created' and within 30 days of it")
    return doc


def make_listing(key: SigningKey, *, loan: bytes, price: int, currency: str, created: int, expires: int) -> Envelope:
    """A listing of ``loan`` at ``price`` signed by ``key``, the seller."""
    doc = {"type": "listing", "loan": loan, "seller": key.public_key, "price": price, "currency": currency,
           "created": created, "expires": expires}
    return seal(check_listing(doc), key)


def listing_of(env: Envelope) -> Listing:
    """The listing in an opened envelope (rule 1): valid, and signed by its seller alone."""
    doc = check_listing(env.document)
    try:
        require_signers(env, doc["seller"])
    except SignatureError:
        raise SignatureError("a listing must be signed by its seller alone") from None
    return Listing(env.id, env.raw, doc["loan"], doc["seller"], doc["price"], doc["currency"], doc["created"],
                   doc["expires"])


def check_gossip(data: bytes) -> Listing:
    """Rule 1: the listing a ``TOPIC_MARKET`` message carries, verified; ``ProtocolError``
    if it must be neither delivered nor forwarded."""
    env = open_envelope(data)
    if env.type == "entry":
        raise WireError("chain entries belong on the entries topic", code="wrong_topic")
    if env.type != "listing":
        raise MarketError(f"a {env.type[:40]!r} document does not belong on the market")
    return listing_of(env)


def is_live(listing: Listing, now_ms: int) -> bool:
    return now_ms < listing.expires


LISTING_FAULTS = {
    "listing_expired": "the listing has expired",
    "wrong_currency": "the listing's currency is not the loan's",
    "not_holder": "the seller does not hold the claim",
    "not_for_sale": "the loan is not disbursed, or is repaid or written off",
}
"""Rule 2's codes, in the order they are checked."""


def listing_fault(listing: Listing, contract: dict, state: LoanState, now_ms: int) -> tuple[str, str] | None:
    """Rule 2: ``(code, message)`` of the first reason ``listing`` does not stand for the
    loan (``contract``, and its ``state`` now), or None."""
    if state.loan != listing.loan:
        raise ValueError("the state is of another loan")
    if not is_live(listing, now_ms):
        return "listing_expired", LISTING_FAULTS["listing_expired"]
    if contract["currency"] != listing.currency:
        return "wrong_currency", LISTING_FAULTS["wrong_currency"]
    if state.holder != listing.seller:
        return "not_holder", LISTING_FAULTS["not_holder"]
    if state.state in (AWAITING, REPAID, WRITTEN_OFF):
        return "not_for_sale", f"the loan is {state.state}"
    return None


# -- rule 3: yield to maturity --------------------------------------------------------------------


def _present_value(flows: list[tuple[int, int]], rate_bp: int, ctx: Context) -> Decimal:
    """The sum of ``amount / (1 + rate) ** (days / 365)``, as ``amount * exp(-ln(1 +
    rate) * days / 365)`` with ``ln`` taken once (decimal's exp and ln are correctly
    rounded, so the result is the same everywhere)."""
    log_base = ctx.ln(ctx.add(Decimal(1), ctx.divide(Decimal(rate_bp), Decimal(BP))))
    total = Decimal(0)
    for days, amount in flows:
        if days:
            amount_now = ctx.multiply(Decimal(amount), ctx.exp(ctx.minus(ctx.divide(
                ctx.multiply(log_base, Decimal(days)), Decimal(365)))))
        else:
            amount_now = Decimal(amount)
        total = ctx.add(total, amount_now)
    return total


def _float_guess(flows: list[tuple[int, int]], price: int) -> float | None:
    """A float estimate of the yield in basis points (bisection in floats), or None: it
    only proposes where to look; the answer is decided in decimal (``_bracket``)."""
    def pv(bp: float) -> float:
        base = 1 + bp / BP
        return sum(a * base ** (-d / 365) for d, a in flows)

    lo, hi = float(MIN_YTM_BP), float(MAX_YTM_BP)
    try:
        for _ in range(60):
            mid = (lo + hi) / 2
            if pv(mid) >= price:
                lo = mid
            else:
                hi = mid
    except (OverflowError, ZeroDivisionError):
        return None
    return lo


def _bracket(fl: list[tuple[int, int]], price: int, target: Decimal, ctx: Context) -> tuple[int | None, int]:
    """``(lo, hi)`` whole basis points with ``pv(lo) >= target >= pv(hi)`` in decimal, or
    ``(None, 0)`` if the range holds no yield (rule 3). A float estimate proposes a bracket
    a few basis points wide; it is used only if decimal confirms both ends, else the whole
    range is (the bisection then finds the same largest ``lo``: ``pv`` falls as the rate
    rises, so every valid bracket leads to one answer)."""
    guess = _float_guess(fl, price)
    if guess is not None:
        lo, hi = max(MIN_YTM_BP, int(guess) - 2), min(MAX_YTM_BP, int(guess) + 3)
        if lo < hi and _present_value(fl, lo, ctx) >= target and _present_value(fl, hi, ctx) <= target:
            return lo, hi
    lo, hi = MIN_YTM_BP, MAX_YTM_BP
    if _present_value(fl, lo, ctx) < target or _present_value(fl, hi, ctx) > target:
        return None, 0
    return lo, hi


def yield_to_maturity(flows: Iterable[tuple[date, int]], price: int, today: date) -> int | None:
    """Rule 3: the annual yield, in basis points floored, of paying ``price`` today for
    ``flows`` (``(date, amount)``, amounts in minor units), or None."""
    if type(price) is not int or not 1 <= price <= MAX_AMOUNT:
        raise MarketError(f"price {price!r} is not 1 to {MAX_AMOUNT} minor units", code="bad_amount")
    fl: list[tuple[int, int]] = []
    for n, (d, amount) in enumerate(flows):
        if n >= MAX_FLOWS:
            raise MarketError(f"more than {MAX_FLOWS} cash flows", code="too_many")
        if type(amount) is not int or amount < 0:
            raise MarketError("a cash flow is a non-negative integer", code="bad_amount")
        if amount:
            fl.append((max(0, (d - today).days), amount))
    if not any(days for days, _ in fl):
        return None  # nothing after today: no rate discounts anything
    ctx = Context(prec=YTM_PRECISION)
    # "At least the price", allowing for the last digits of exp and ln: a yield that hits
    # the price exactly (a bullet at 10 %) is not lost to a rounding 40 digits down.
    target = ctx.multiply(Decimal(price), ctx.subtract(Decimal(1), ctx.power(Decimal(10), -YTM_TOLERANCE_DIGITS)))
    lo, hi = _bracket(fl, price, target, ctx)
    if lo is None:
        return None
    # Invariant: pv(lo) >= price, and pv(hi) <= price; the answer is the largest such lo.
    for _ in range(YTM_STEPS):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        if _present_value(fl, mid, ctx) >= target:
            lo = mid
        else:
            hi = mid
    assert hi - lo <= 1, "YTM_STEPS halvings close the bracket"
    return hi if _present_value(fl, hi, ctx) >= target else lo


def listing_view(listing: Listing, state: LoanState, today: date, grade: str | None = None) -> dict[str, Any]:
    """What ``market list`` shows of a listing: the loan's days past due, its borrower's
    ``grade`` (passed in; credit computes it), the remaining principal and the yield to
    maturity at the listing's price (rules 3, 4)."""
    cur = listing.currency
    flows = expected_flows(state, today)
    return {
        "id": listing.id.hex(), "loan": listing.loan.hex(), "seller": peer_id(listing.seller), "currency": cur,
        "price": listing.price, "price_text": _money_text(listing.price, cur), "state": state.state,
        "days_past_due": state.days_past_due, "grade": grade, "remaining_principal": state.outstanding_principal,
        "remaining_principal_text": _money_text(state.outstanding_principal, cur),
        "remaining_flows": sum(a for _, a in flows), "ytm_bp": yield_to_maturity(flows, listing.price, today),
        "created": listing.created, "expires": listing.expires,
    }


def _money_text(minor: int, currency: str) -> str:
    from .money import format_amount

    return format_amount(minor, currency)


# -- rule 5: the price in a transfer ------------------------------------------------------------------


TRANSFER_PRICE_FIELD = TRANSFER_OPTIONAL
"""The optional transfer field a sale adds (contract.py's transfer schema holds it)."""


def check_sale_transfer(doc: Any) -> dict:
    """A transfer document (contract.py, rule 4), which may carry ``price`` (rule 5):
    ``doc`` if valid, else ``SchemaError`` or ``LoanError``."""
    return check_transfer(doc)


def sale_transfer(listing: Listing, buyer: bytes, after: int, day: date) -> dict:
    """The transfer ``buyer`` proposes to carry out ``listing``: the claim passes from
    the seller after the loan's first ``after`` receipts (its counted receipts now), on
    ``day``, at the listing's price."""
    doc = {"type": "transfer", "loan": listing.loan, "from": listing.seller, "to": buyer, "after": after,
           "date": day.isoformat(), "price": listing.price}
    return check_sale_transfer(doc)


SALE_FAULTS = ("no_price", "wrong_loan", "wrong_seller", "wrong_price")


def sale_fault(transfer: dict, listing: Listing) -> tuple[str, str] | None:
    """Rule 5: ``(code, message)`` of why the (checked) ``transfer`` does not carry out
    ``listing``, or None. Whether the listing stands is ``listing_fault``'s to say."""
    if "price" not in transfer:
        return "no_price", "a transfer without a price is never accepted on its own"
    if transfer["loan"] != listing.loan:
        return "wrong_loan", "the transfer is of another loan than the listing's"
    if transfer["from"] != listing.seller:
        return "wrong_seller", "the transfer is not from the listing's seller"
    if transfer["price"] != listing.price:
        return "wrong_price", f"price {transfer['price']}; the listing asks {listing.price}"
    return None


def sale_refusal(transfer: dict, listing: Listing, contract: dict, state: LoanState, today: date, now_ms: int,
                 state_with: Callable[[], LoanState]) -> tuple[str, str] | None:
    """Rule 6: ``(code, message)`` of why the seller must not countersign the buyer's
    (checked) ``transfer`` for its ``listing``, the loan being ``contract`` in ``state``
    today, or None. ``state_with()`` is the state with the transfer counted; it is asked
    last, only if every other check passed."""
    fault = sale_fault(transfer, listing) or listing_fault(listing, contract, state, now_ms)
    if fault is not None:
        return fault
    why = refusal("transfer", listing.seller, contract, state, to=transfer["to"])
    if why is not None:
        return why.code, why.message
    if transfer["after"] != len(state.counted):
        return "stale_after", (f"{len(state.counted)} receipts of the loan count; the transfer says after "
                               f"{transfer['after']}: ask again once your copy has them")
    if transfer["date"] != today.isoformat():
        return "bad_date", f"a sale is dated the day it is made ({today.isoformat()}), not {transfer['date']}"
    if state_with().holder != transfer["to"]:
        return "bad_transfer", "the transfer would not make the buyer the holder"
    return None
