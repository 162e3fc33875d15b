"""Countersigning: the ``/p2plend/agree/1.0.0`` messages and the states of a proposal.

Rules of this file (docs/protocol.md, "Countersigning"):

1. Frames are those of wire.py (4-byte big-endian length, one canonical MessagePack map
   with a text ``type``). The dialer sends one request; the listener sends one answer and
   both close. Requests and their answers:

   ======================  ===================================================
   request                 answers
   ======================  ===================================================
   ``propose {contract,    ``accepted {contract}`` | ``held {loan}`` | ``refused``
   [entries]}``
   ``countersigned         ``ok {loan}``
   {contract}``
   ``refused`` (pushed)    ``ok {loan}``
   ``transfer {transfer}`` ``accepted {transfer}`` | ``refused``
   ======================  ===================================================

   ``entries`` (optional, 1 to ``MAX_PROPOSAL_ENTRIES``) are the proposer's last chain
   entries up to its committed head, in seq order, verified like any synced entries.
   ``refused`` is ``{type: "refused", loan, code, reason}``; ``contract`` and ``transfer``
   are envelope bytes (contract.py). A proposal carries one signature (the proposer's),
   ``accepted`` and ``countersigned`` carry the agreement (both parties'). ``held`` says
   the acceptor's owner reviews proposals by hand: the answer comes later, pushed as
   ``countersigned`` or ``refused``, or by asking again.
2. Sending the same ``propose`` again is always safe: an acceptor answers a proposal it
   has decided with the same decision, so a proposer that lost an answer (or restarted)
   just asks again until the proposal expires.
3. The acceptor countersigns only before ``expires`` by its clock, only if the contract
   takes a live offer of its own on the offer's exact terms, and only if its copy of the
   proposer's chain holds the committed head (``[seq, id]``) and its own chain holds the
   head committed for it. Otherwise it refuses with a code from ``REFUSALS``, the first
   that applies in the order ``refusal`` checks them.
4. A proposal's life on each side is the table ``TRANSITIONS`` below; ``step`` is the only
   way to move, and a state with no way out (``FINAL``) never changes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from .. import codec
from ..errors import ProtocolError
from ..wire import WireError, _bin, _fields

AGREE_PROTOCOL = "/p2plend/agree/1.0.0"
MAX_AGREE_FRAME = 256 * 1024
MAX_REASON = 1000
MAX_PROPOSAL_ENTRIES = 16

# -- the states of a proposal --------------------------------------------------------------

PROPOSED = "proposed"  # proposer: signed and stored; sent, or to be sent again
HELD = "held"  # proposer: the acceptor holds it for its owner's review
PENDING = "pending"  # acceptor: held for the owner's review (`loan pending`)
AGREED = "agreed"  # both: the agreement is signed and this side's entry appended
REFUSED = "refused"  # both: the acceptor said no, with a code and a reason
EXPIRED = "expired"  # both: the expiry passed before an agreement

TRANSITIONS: dict[tuple[str | None, str], str] = {
    # proposer side
    (None, "propose"): PROPOSED,
    (PROPOSED, "held"): HELD,
    (PROPOSED, "accepted"): AGREED,
    (HELD, "accepted"): AGREED,
    (PROPOSED, "refused"): REFUSED,
    (HELD, "refused"): REFUSED,
    (PROPOSED, "expire"): EXPIRED,
    (HELD, "expire"): EXPIRED,
    (HELD, "held"): HELD,  # asked again, still under review
    # acceptor side
    (None, "receive"): PENDING,  # valid, and the owner reviews by hand
    (None, "countersign"): AGREED,  # valid, and policy decides alone
    (None, "refuse"): REFUSED,
    (PENDING, "countersign"): AGREED,  # the owner accepts (`loan accept`)
    (PENDING, "refuse"): REFUSED,  # the owner rejects (`loan reject`)
    (PENDING, "expire"): EXPIRED,
    # either side learns of the agreement from the other's chain (entries gossip, sync)
    (PROPOSED, "seen_agreement"): AGREED,
    (HELD, "seen_agreement"): AGREED,
    (PENDING, "seen_agreement"): AGREED,
}
"""``(state, event) -> next state``; ``None`` is "no record yet"."""

FINAL = frozenset({AGREED, REFUSED, EXPIRED})

REFUSALS = {
    "expired": "the proposal's expiry has passed",
    "unknown_offer": "the contract names an offer or request the acceptor does not hold as its own",
    "offer_expired": "the offer or request expired or was cancelled",
    "terms_mismatch": "the contract's terms differ from the offer's",
    "bad_head": "a committed chain head is not in the acceptor's copy of that chain",
    "fraudulent": "the proposer has signed a fork",
    "policy": "the acceptor's policy refuses it (rate cap, amount limit)",
    "rejected": "the acceptor's owner rejected it",
    "not_party": "the acceptor is not the party that must countersign",
    "bad_proposal": "the proposal is not a valid signed contract",
    "busy": "the acceptor cannot decide now; ask again",
}
"""Codes a ``refused`` answer may carry, and what each means."""


def refusal(doc: dict, *, now_ms: int, proposer_forked: bool, offer: Any, offer_live: bool,
            max_rate_bp: int | None, own_head_held: bool, proposer_head_held: bool) -> tuple[str, str] | None:
    """Rule 3: ``(code, reason)`` of the first ``REFUSALS`` entry that applies to the
    checked contract ``doc`` addressed to its acceptor, or None if it may be countersigned.

    The acceptor passes what it knows: its clock, whether it holds a fork proof against
    the proposer, the offer named by ``doc["offer"]`` if its book holds one of its own
    (else None) and whether that is still live, its rate cap, and whether its chain and
    its copy of the proposer's hold the heads the contract commits to."""
    from .contract import terms_mismatch, terms_of
    from ..keys import peer_id

    if doc["expires"] < now_ms:
        return "expired", "the proposal arrived after its expiry"
    if proposer_forked:
        return "fraudulent", f"{peer_id(doc['proposer'])} has signed a fork"
    if offer is None:
        return "unknown_offer", "the contract names no offer or request of this node"
    if not offer_live:
        return "offer_expired", "the offer or request has expired, was cancelled or was taken"
    why = terms_mismatch(doc, offer.id, terms_of(offer))
    if why:
        return "terms_mismatch", why
    if max_rate_bp is not None and doc["rate_bp"] > max_rate_bp:
        return "policy", f"rate {doc['rate_bp']} bp is over this node's cap of {max_rate_bp} bp"
    proposer_head, acceptor_head = committed_heads(doc, doc["proposer"])
    if not own_head_held:
        seq, head_id = acceptor_head
        return "bad_head", f"this node's chain has no entry {head_id.hex()[:16]}... at seq {seq}"
    if not proposer_head_held:
        seq, head_id = proposer_head
        return "bad_head", f"the proposer's chain as held here has no entry {head_id.hex()[:16]}... at seq {seq}"
    return None


def committed_heads(doc: dict, party: bytes) -> tuple[list, list]:
    """``(party's committed head, the other party's)``, each ``[seq, id]``."""
    if party == doc["lender"]:
        return doc["lender_head"], doc["borrower_head"]
    return doc["borrower_head"], doc["lender_head"]


class AgreeError(ProtocolError):
    """A move the table does not allow."""

    code = "bad_transition"


def step(state: str | None, event: str) -> str:
    """The state after ``event`` in ``state``; ``AgreeError`` if the table has no such move."""
    nxt = TRANSITIONS.get((state, event))
    if nxt is None:
        raise AgreeError(f"no move from {state or 'nothing'} on {event}")
    return nxt


# -- messages ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propose:
    """A proposal, with (optionally) the proposer's last entries up to its committed
    head, so that an acceptor a few entries behind need not pull them by sync first."""

    contract: bytes
    entries: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to ``propose`` (the agreement) or ``transfer`` (the signed transfer)."""

    document: bytes
    field: str = "contract"


@dataclass(frozen=True, slots=True)
class Held:
    loan: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    loan: bytes
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Countersigned:
    contract: bytes


@dataclass(frozen=True, slots=True)
class Ok:
    loan: bytes


@dataclass(frozen=True, slots=True)
class Transfer:
    transfer: bytes


AgreeMessage = Union[Propose, Accepted, Held, Refused, Countersigned, Ok, Transfer]


def encode(msg: AgreeMessage) -> bytes:
    """The frame (length header and canonical bytes) of ``msg``."""
    if isinstance(msg, Propose):
        doc: dict[str, Any] = {"type": "propose", "contract": msg.contract}
        if msg.entries:
            doc["entries"] = list(msg.entries)
    elif isinstance(msg, Accepted):
        doc = {"type": "accepted", msg.field: msg.document}
    elif isinstance(msg, Held):
        doc = {"type": "held", "loan": msg.loan}
    elif isinstance(msg, Refused):
        doc = {"type": "refused", "loan": msg.loan, "code": msg.code, "reason": msg.reason[:MAX_REASON]}
    elif isinstance(msg, Countersigned):
        doc = {"type": "countersigned", "contract": msg.contract}
    elif isinstance(msg, Ok):
        doc = {"type": "ok", "loan": msg.loan}
    elif isinstance(msg, Transfer):
        doc = {"type": "transfer", "transfer": msg.transfer}
    else:
        raise TypeError(f"not an agree message: {msg!r}")
    payload = codec.encode(doc)
    if len(payload) > MAX_AGREE_FRAME:
        raise WireError(f"an agree message of {len(payload)} bytes exceeds {MAX_AGREE_FRAME}", code="oversize")
    return len(payload).to_bytes(4, "big") + payload


def _blob(value: Any, what: str) -> bytes:
    if type(value) is not bytes or not 0 < len(value) <= MAX_AGREE_FRAME:
        raise WireError(f"{what} must be envelope bytes")
    return value


def _code(value: Any) -> str:
    if type(value) is not str or not 0 < len(value) <= 40:
        raise WireError("a refusal code is text of 1 to 40 characters")
    return value


def decode(payload: bytes) -> AgreeMessage:
    """The agree message whose canonical bytes are ``payload``; ``WireError`` otherwise.
    Envelopes inside are not verified here."""
    doc = codec.decode(payload, max_size=MAX_AGREE_FRAME)
    if type(doc) is not dict or type(doc.get("type")) is not str:
        raise WireError("a message is a map with a text 'type'")
    t = doc["type"]
    if t == "propose" and "entries" in doc:
        _fields(doc, {"type", "contract", "entries"}, t)
        entries = doc["entries"]
        if type(entries) is not list or not 1 <= len(entries) <= MAX_PROPOSAL_ENTRIES:
            raise WireError(f"entries is an array of 1 to {MAX_PROPOSAL_ENTRIES} envelopes")
        return Propose(_blob(doc["contract"], "contract"), tuple(_blob(e, "entry") for e in entries))
    if t in ("propose", "countersigned"):
        _fields(doc, {"type", "contract"}, t)
        c = _blob(doc["contract"], "contract")
        return Propose(c) if t == "propose" else Countersigned(c)
    if t == "accepted":
        field = "transfer" if "transfer" in doc else "contract"
        _fields(doc, {"type", field}, t)
        return Accepted(_blob(doc[field], field), field)
    if t in ("held", "ok"):
        _fields(doc, {"type", "loan"}, t)
        loan = _bin(doc["loan"], 32, "loan")
        return Held(loan) if t == "held" else Ok(loan)
    if t == "refused":
        _fields(doc, {"type", "loan", "code", "reason"}, t)
        reason = doc["reason"]
        if type(reason) is not str or len(reason) > MAX_REASON:
            raise WireError(f"a refusal reason is text of at most {MAX_REASON} characters")
        return Refused(_bin(doc["loan"], 32, "loan"), _code(doc["code"]), reason)
    if t == "transfer":
        _fields(doc, {"type", "transfer"}, t)
        return Transfer(_blob(doc["transfer"], "transfer"))
    raise WireError(f"unknown message type {t[:40]!r}", code="unknown_message")
