"""Countersigning: the ``/p2plend/agree/1.0.0`` messages, and each side's conversation about
one proposal as a pure state machine (``Proposer``, ``Acceptor``).

Rules of this file (docs/protocol.md, "Countersigning"):

1. Frames are those of wire.py (4-byte big-endian length, one canonical MessagePack map
   with a text ``type``). The dialer sends a request and reads its answer before it sends
   the next; the listener answers in turn, at most ``MAX_REQUESTS_PER_STREAM`` on one
   stream, until the dialer closes it or stays silent. Only requests that may be asked
   twice (``ASKED_TWICE``: rule 2, and a pushed agreement or refusal is recorded once)
   may follow another on a stream; ``transfer`` and ``amend`` open one of their own. A
   dialer whose request goes unanswered on a stream that carried one before asks again
   on a new stream (listeners before this rule answered one request, then closed).
   Requests and their answers:

   ======================  ===================================================
   request                 answers
   ======================  ===================================================
   ``propose {contract,    ``accepted {contract}`` | ``held {loan}`` | ``refused``
   [entries]}``
   ``countersigned         ``ok {loan}``
   {contract}``
   ``refused`` (pushed)    ``ok {loan}``
   ``transfer {transfer}`` ``accepted {transfer}`` | ``refused``
   ``amend {amendment}``   ``accepted {amendment}`` | ``held {loan}`` |
                           ``ok {loan}`` | ``refused``
   ======================  ===================================================

   ``entries`` (optional, 1 to ``MAX_PROPOSAL_ENTRIES``) are the proposer's last chain
   entries up to its committed head, in seq order, verified like any synced entries.
   ``refused`` is ``{type: "refused", loan, code, reason}``; ``contract`` and ``transfer``
   are envelope bytes (contract.py). A proposal carries one signature (the proposer's),
   ``accepted`` and ``countersigned`` carry the agreement (both parties'). ``held`` says
   the acceptor's owner reviews proposals by hand: the answer comes later, pushed as
   ``countersigned`` or ``refused``, or by asking again. ``amend`` carries an amendment
   (amendment.py): signed by its proposer alone, the other party's node countersigns
   it (``accepted``) only if its own owner proposed the same terms, and otherwise keeps
   it for its owner (``held``); signed by both, it is pushed to the proposer, whose node
   records it (``ok``). These rules and rule 2 to 7 are about contracts only.
2. Sending the same ``propose`` again is always safe: an acceptor answers a proposal it
   has decided with the same decision, so a proposer that lost an answer (or restarted)
   just asks again until the proposal expires.
3. The acceptor countersigns only before ``expires`` by its clock, only if the contract
   takes a live offer of its own on the offer's exact terms, and only if its copy of the
   proposer's chain holds the committed head (``[seq, id]``) and its own chain holds the
   head committed for it. Otherwise it refuses with a code from ``REFUSALS``, the first
   that applies in the order ``refusal`` checks them.
4. A proposal's life on each side is that side's table, ``PROPOSER_TABLE`` or
   ``ACCEPTOR_TABLE`` below, ``(state, event) -> next state`` (``None``: no record yet):

   ========  =================  ==================  ==========
   side      from               event               to
   ========  =================  ==================  ==========
   proposer  none               ``propose``         proposed
   proposer  proposed, held     ``held``            held
   proposer  proposed, held     ``accepted``        agreed
   proposer  proposed, held     ``refused``         refused
   proposer  proposed, held     ``seen_agreement``  agreed
   proposer  proposed, held     ``expire``          expired
   acceptor  none               ``receive``         pending
   acceptor  none, pending      ``countersign``     agreed
   acceptor  none, pending      ``refuse``          refused
   acceptor  none, pending      ``seen_agreement``  agreed
   acceptor  pending            ``expire``          expired
   ========  =================  ==================  ==========

   The tables are executed: a machine moves only by looking its move up in its own
   table, a move the table lacks raises ``AgreeError`` (code ``bad_transition``), and a
   state with no way out (``FINAL``: agreed, refused, expired) never changes again.
5. A machine is one side of one proposal, built from the proposal before there is a
   record (``new``) or from the stored record (``from_record``: a node that restarts
   resumes where it was). It is fed events and returns the actions the node executes,
   in order. It has no clock (every event carries ``now_ms``), does no I/O, and trusts
   what it is fed: the node verifies every envelope (``open_proposal``,
   ``open_agreement``, and that an agreement is the proposal's) and gathers the facts
   rule 3 asks about (``Facts``) before it feeds them. A ``handle`` that raises leaves
   the machine as it was. Events, the table's event they cause, and the actions:

   ===========================  ========  ================================  ==========================================
   event                        side      when                              table event: actions
   ===========================  ========  ================================  ==========================================
   ``OwnerProposed``            proposer  no record                         propose: Persist, SendProposal
   ``AnswerReceived`` accepted  proposer  open                              accepted: AppendAgreement, Persist
   ``AnswerReceived`` held      proposer  open                              held: Persist
   ``AnswerReceived`` refused   proposer  open                              refused: Persist
   ``AnswerReceived`` any       proposer  final                             (nothing)
   ``SendFailed``               proposer  proposed, connected, and a quick  ScheduleResend (``QUICK_RESENDS_MS``)
                                          resend left
   ``Tick``                     both      open, ``now_ms > expires``        expire: Persist
   ``Tick``                     proposer  proposed; or held and             SendProposal (unless a send is in flight)
                                          ``HELD_RETRY_MS`` since it asked
   ``ProposalReceived``         acceptor  a record                          Answer(``answer_of(record)``)
   ``ProposalReceived``         acceptor  no record, our chain records its  seen_agreement: Persist, ConsumeOffer,
                                          agreement (``recorded``)          Answer(accepted)
   ``ProposalReceived``         acceptor  no record, ``refusal`` says no    refuse: Persist, ReportRefusal,
                                                                            Answer(refused)
   ``ProposalReceived``         acceptor  no record, review                 receive: Persist, Answer(held)
   ``ProposalReceived``         acceptor  no record                         countersign: AppendAgreement, Persist,
                                                                            ConsumeOffer, Answer(accepted)
   ``OwnerAccepted``            acceptor  pending, ``now_ms > expires``     expire: Persist, ReportRefusal(expired)
   ``OwnerAccepted``            acceptor  pending, the offer is not live    refuse: Persist,
                                                                            ReportRefusal(offer_expired)
   ``OwnerAccepted``            acceptor  pending                           countersign: AppendAgreement, Persist,
                                                                            ConsumeOffer, Push(countersigned)
   ``OwnerRejected``            acceptor  pending                           refuse: Persist, Push(refused)
   ``AgreementSeen``            both      open (acceptor: or no record)     seen_agreement: AppendAgreement, Persist
                                                                            (acceptor: and ConsumeOffer)
   ``AgreementSeen``            both      final (proposer: or no record)    AppendAgreement
   ``CountersignedPushed``      both      as ``AgreementSeen``              the same, then Answer(ok)
   ``RefusalPushed``            proposer  open, sent by the counterparty    refused: Persist, Answer(ok)
   ``RefusalPushed``            both      otherwise                         Answer(ok)
   ===========================  ========  ================================  ==========================================

   An event the side does not take, and ``OwnerAccepted`` or ``OwnerRejected`` on
   anything but a pending proposal, raise ``AgreeError`` (code ``bad_transition``); an
   answer that is none of accepted, held, refused raises it with code
   ``unexpected_message``, an agreement to another contract with ``bad_message``.
6. Order, which every action list keeps (``handle`` asserts it) and the node keeps by
   executing the actions in order:

   a. ``Persist`` (a durable write) comes before any message about the proposal leaves
      (``SendProposal``, ``Answer``, ``Push``): a node killed at any point has never told
      anyone more than its record says.
   b. ``AppendAgreement`` comes before the ``Persist`` of ``agreed`` and before any
      message carrying the agreement: our chain says so before anyone hears it.
   c. The acceptor countersigns (calls its ``sign``) only on a ``countersign`` move: once
      per proposal, and only at ``now_ms <= expires``. A proposal it holds a record of
      is answered from that record alone (``answer_of``): rule 2 by construction.
   d. Nothing stays open past its expiry: the node feeds ``Tick`` to every open machine
      every ``RETRY_INTERVAL_MS``, and a ``Tick`` at ``now_ms > expires`` expires it.
      While ``proposed`` each tick asks again, while ``held`` every ``HELD_RETRY_MS``;
      a proposer has one send in flight at most.
   e. On restart, a record still open whose agreement our chain records (the node died
      between the append and the persist) is fed ``AgreementSeen`` with it first; and a
      proposal with no record whose agreement our chain records is answered from it
      (``ProposalReceived.recorded``), never countersigned or refused again.
7. One outcome no deadline kept by both sides rules out over a lossy network: the
   acceptor countersigns just before the expiry, its answer is lost, and the proposer
   expires by its own clock. The proposer's record then stays ``expired`` (final), but
   ``AgreementSeen`` appends the agreement to its chain in any state: the two chains,
   not the records, are the loan.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

from .. import codec
from ..envelope import document_id
from ..errors import ProtocolError
from ..wire import WireError, _bin, _fields

AGREE_PROTOCOL = "/p2plend/agree/1.0.0"
MAX_AGREE_FRAME = 256 * 1024
MAX_REASON = 1000
MAX_PROPOSAL_ENTRIES = 16
MAX_REQUESTS_PER_STREAM = 10_000  # requests a listener answers on one stream (rule 1)

RETRY_INTERVAL_MS = 2_000  # how often the node feeds Tick to its open machines
HELD_RETRY_MS = 10_000  # a held proposal is asked about again this often
QUICK_RESENDS_MS = (50, 200)  # pauses before resending a proposal whose first sends failed
MAX_ACTIONS = 4  # no event yields more actions than this

# -- the states of a proposal --------------------------------------------------------------

PROPOSED = "proposed"  # proposer: signed and stored; sent, or to be sent again
HELD = "held"  # proposer: the acceptor holds it for its owner's review
PENDING = "pending"  # acceptor: held for the owner's review (`loan pending`)
AGREED = "agreed"  # both: the agreement is signed and this side's entry appended
REFUSED = "refused"  # both: the acceptor said no, with a code and a reason
EXPIRED = "expired"  # both: the expiry passed before an agreement

OUT, IN = "out", "in"  # a record's role: this node proposed / this node must countersign
STATES = (PROPOSED, HELD, PENDING, AGREED, REFUSED, EXPIRED)

PROPOSER_TABLE: dict[tuple[str | None, str], str] = {
    (None, "propose"): PROPOSED,  # the owner proposes: signed, stored, then sent
    (PROPOSED, "held"): HELD,  # answer: the acceptor's owner reviews it
    (HELD, "held"): HELD,  # asked again, still under review
    (PROPOSED, "accepted"): AGREED,  # answer: the agreement
    (HELD, "accepted"): AGREED,
    (PROPOSED, "refused"): REFUSED,  # answer, or pushed after review: no
    (HELD, "refused"): REFUSED,
    (PROPOSED, "seen_agreement"): AGREED,  # pushed, or the acceptor's entry by gossip or sync
    (HELD, "seen_agreement"): AGREED,
    (PROPOSED, "expire"): EXPIRED,  # our clock passed the expiry with no answer
    (HELD, "expire"): EXPIRED,
}
"""The proposer's moves, ``(state, event) -> next state``; ``None`` is "no record yet"."""

ACCEPTOR_TABLE: dict[tuple[str | None, str], str] = {
    (None, "receive"): PENDING,  # valid, and the owner reviews by hand
    (None, "countersign"): AGREED,  # valid, and policy decides alone
    (None, "refuse"): REFUSED,  # rule 3 says no
    (None, "seen_agreement"): AGREED,  # our chain has it already: we died before storing the record
    (PENDING, "countersign"): AGREED,  # the owner accepts (`loan accept`)
    (PENDING, "refuse"): REFUSED,  # the owner rejects (`loan reject`), or accepts too late for the offer
    (PENDING, "seen_agreement"): AGREED,  # as (None, seen_agreement)
    (PENDING, "expire"): EXPIRED,  # our clock passed the expiry before the owner decided
}
"""The acceptor's moves, ``(state, event) -> next state``; ``None`` is "no record yet"."""

FINAL = frozenset({AGREED, REFUSED, EXPIRED})


def _check_tables() -> None:
    """What the tables promise, checked once at import: final states have no way out, every
    open state can expire, and the roles share no state but ``None`` and the final ones."""
    for table in (PROPOSER_TABLE, ACCEPTOR_TABLE):
        froms = {s for s, _ in table}
        if froms & FINAL:
            raise AssertionError(f"a final state moves: {sorted(froms & FINAL)}")
        if not set(table.values()) <= FINAL | froms:
            raise AssertionError("a state is reachable but not in the table")
        if any((s, "expire") not in table for s in froms - {None}):
            raise AssertionError("an open state cannot expire")
    if not PROPOSER_TABLE.keys().isdisjoint(ACCEPTOR_TABLE.keys()):
        raise AssertionError("the roles share a move")


_check_tables()

REFUSALS = {
    "expired": "the proposal's expiry has passed",
    "unknown_offer": "the contract names an offer or request the acceptor does not hold as its own",
    "offer_expired": "the offer or request expired or was cancelled",
    "terms_mismatch": "the contract's terms differ from the offer's",
    "offer_exhausted": "the part asked for is more than remains of the offer or request (fill.py)",
    "below_minimum": "the part is below the offer's minimum and does not take all that remains (fill.py)",
    "too_many_parts": "the offer or request is split into as many parts as it may be (fill.py)",
    "bad_head": "a committed chain head is not in the acceptor's copy of that chain",
    "fraudulent": "the proposer has signed a fork",
    "policy": "the acceptor's policy refuses it; the reason names each rule broken and its numbers "
              "(protocol/lending/policy.py)",
    "rejected": "the acceptor's owner rejected it",
    "not_party": "the acceptor is not the party that must countersign",
    "bad_proposal": "the proposal is not a valid signed contract",
    "busy": "the acceptor cannot decide now; ask again",
}
"""Codes a ``refused`` answer may carry, and what each means."""


def refusal(doc: dict, *, now_ms: int, proposer_forked: bool, offer: Any, offer_live: bool,
            policy: str | None, own_head_held: bool, proposer_head_held: bool,
            fill: tuple[str, str] | None = None) -> tuple[str, str] | None:
    """Rule 3: ``(code, reason)`` of the first ``REFUSALS`` entry that applies to the
    checked contract ``doc`` addressed to its acceptor, or None if it may be countersigned.

    The acceptor passes what it knows: its clock, whether it holds a fork proof against
    the proposer, the offer named by ``doc["offer"]`` if its book holds one of its own
    (else None) and whether that is still live, its rate cap, and whether its chain and
    its copy of the proposer's hold the heads the contract commits to, and what its policy
    says of the contract (``policy``: why it refuses, naming the rules, or None;
    ``policy.check_terms`` and, when the acceptor lends and knows the borrower,
    ``policy.check_borrower``), and whether the part asked for fits what remains of the
    offer (``fill``: ``fill.admit``'s ``(code, message)``, or None: fractional funding)."""
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
    if fill is not None:
        return fill
    if policy is not None:
        return "policy", policy
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
    """A move the table does not allow, or an event the side does not take now
    (``bad_transition``); an answer of the wrong kind (``unexpected_message``); an
    agreement to another contract (``bad_message``)."""

    code = "bad_transition"


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


@dataclass(frozen=True, slots=True)
class Amend:
    """An amendment envelope: proposed (one signature) or countersigned (both)."""

    amendment: bytes


AgreeMessage = Union[Propose, Accepted, Held, Refused, Countersigned, Ok, Transfer, Amend]

ACCEPTED_FIELDS = ("contract", "transfer", "amendment")
"""What an ``accepted`` answer may carry: the agreement, the transfer or the amendment."""


ASKED_TWICE = (Propose, Countersigned, Refused)
"""The requests a dialer may send on a stream that answered one before (rule 1): asked
again, each gets the same answer."""


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
    elif isinstance(msg, Amend):
        doc = {"type": "amend", "amendment": msg.amendment}
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
        field = next((f for f in ACCEPTED_FIELDS if f in doc), "contract")
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
    if t == "amend":
        _fields(doc, {"type", "amendment"}, t)
        return Amend(_blob(doc["amendment"], "amendment"))
    raise WireError(f"unknown message type {t[:40]!r}", code="unknown_message")


# -- the stored record ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One side's durable record of one proposal (the node stores it under ``P`` + loan id)."""

    loan: bytes
    role: str  # OUT or IN
    state: str
    contract: bytes  # the proposal envelope, or the agreement once agreed
    code: str = ""
    reason: str = ""
    updated: int = 0  # now_ms of the event that last moved it

    def encode(self) -> bytes:
        return codec.encode({"role": self.role, "state": self.state, "contract": self.contract,
                             "code": self.code, "reason": self.reason, "updated": self.updated})

    @classmethod
    def decode(cls, loan: bytes, data: bytes) -> "Record":
        """The record stored as ``data``; ``RecordError`` for bytes that are not one (the
        node wrote them, so only a damaged store gets here: the node skips that record)."""
        from ..schema import check_fields, text, uint

        try:
            d = codec.decode(data, max_size=2 * MAX_AGREE_FRAME)
            check_fields(d, {"role": lambda v: v in (OUT, IN), "state": lambda v: v in STATES,
                             "contract": lambda v: type(v) is bytes and len(v) <= MAX_AGREE_FRAME,
                             "code": text(40), "reason": text(MAX_AGREE_FRAME), "updated": uint()},
                         what="proposal record")
        except ProtocolError as e:
            raise RecordError(f"the record of proposal {loan.hex()[:16]} is damaged: {e.message}") from None
        return cls(loan, d["role"], d["state"], d["contract"], d["code"], d["reason"], d["updated"])


class RecordError(ProtocolError):
    """Stored bytes that are not a usable proposal record."""

    code = "bad_record"


def seen_changes_nothing(record: Record, recorded: bool) -> bool:
    """Whether ``AgreementSeen`` fed to ``record``'s machine changes nothing: a final
    machine only appends the agreement (the table's ``AgreementSeen`` row for final
    states, rule 7), and ``recorded``, that our chain holds it already, makes that append a
    no-op. A node need not resume such a machine from its record to feed it."""
    return record.state in FINAL and recorded


def answer_of(record: Record) -> AgreeMessage:
    """Rule 2: the answer an acceptor's decided (or held) proposal gets whenever it is asked
    about again; it depends on the record alone."""
    if record.state == AGREED:
        return Accepted(record.contract)
    if record.state == PENDING:
        return Held(record.loan)
    if record.state == EXPIRED:
        return Refused(record.loan, "expired", "the proposal expired before it was accepted")
    if record.state == REFUSED:
        return Refused(record.loan, record.code or "rejected", record.reason or "refused")
    raise ValueError(f"an acceptor's record is never {record.state!r}")


@dataclass(frozen=True, slots=True)
class Facts:
    """What rule 3 asks about a new proposal, gathered by the acceptor's node (see ``refusal``)."""

    proposer_forked: bool
    offer: Any  # the offer the contract names, if this node's book holds one of its own; else None
    offer_live: bool
    policy: str | None  # why the acceptor's policy refuses the contract, or None
    own_head_held: bool
    proposer_head_held: bool
    fill: tuple[str, str] | None = None  # why the part does not fit what remains of the offer, or None

    def refusal(self, doc: dict, now_ms: int) -> tuple[str, str] | None:
        """``refusal(doc, now_ms=now_ms, **these facts)``."""
        return refusal(doc, now_ms=now_ms, proposer_forked=self.proposer_forked, offer=self.offer,
                       offer_live=self.offer_live, policy=self.policy, own_head_held=self.own_head_held,
                       proposer_head_held=self.proposer_head_held, fill=self.fill)


# -- events: what happened, fed to a machine -----------------------------------------------


@dataclass(frozen=True, slots=True)
class OwnerProposed:
    """The owner proposed (``loan propose``); the proposal is signed, not yet stored."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    """The acceptor's answer to our ``propose`` (an ``accepted`` already verified as this
    proposal's agreement)."""

    now_ms: int
    answer: Union[Accepted, Held, Refused]


@dataclass(frozen=True, slots=True)
class SendFailed:
    """Our ``propose`` got no answer: the peer is not connected (``connected=False``), the
    stream broke, the answer timed out or broke the rules."""

    now_ms: int
    connected: bool = True


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed: fed every ``RETRY_INTERVAL_MS``, and at a ``ScheduleResend``'s time."""

    now_ms: int


@dataclass(frozen=True, slots=True)
class ProposalReceived:
    """A ``propose`` from the proposer. ``facts`` may be None if the machine has a record
    (it is then not asked); ``review`` is the node's setting; ``recorded`` is the agreement
    our chain already records for this proposal, if any."""

    now_ms: int
    facts: Facts | None = None
    review: bool = False
    recorded: bytes | None = None


@dataclass(frozen=True, slots=True)
class OwnerAccepted:
    """The owner accepts a pending proposal (``loan accept``); ``offer_live`` says whether
    the offer it takes is still live (in the book, unexpired, not used up), and ``fill``
    why the part no longer fits what remains of it (parts agreed since), or None."""

    now_ms: int
    offer_live: bool
    fill: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class OwnerRejected:
    """The owner rejects a pending proposal (``loan reject``)."""

    now_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class AgreementSeen:
    """The agreement (verified) found in a chain: the other party's, by gossip or sync, or
    our own on restart."""

    now_ms: int
    agreement: bytes


@dataclass(frozen=True, slots=True)
class CountersignedPushed:
    """A ``countersigned`` request carrying the agreement (verified; this node is a party)."""

    now_ms: int
    agreement: bytes


@dataclass(frozen=True, slots=True)
class RefusalPushed:
    """A ``refused`` request from ``sender`` (a public key)."""

    now_ms: int
    sender: bytes
    code: str
    reason: str


Event = Union[OwnerProposed, AnswerReceived, SendFailed, Tick, ProposalReceived, OwnerAccepted, OwnerRejected,
              AgreementSeen, CountersignedPushed, RefusalPushed]

# -- actions: what the node must do, in order ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Persist:
    """Store ``record`` durably (``sync=True``) before the next action."""

    record: Record


@dataclass(frozen=True, slots=True)
class SendProposal:
    """Ask ``to`` (a public key): open an agree stream, send ``Propose(contract, our last
    entries up to our committed head)``, and feed back ``AnswerReceived`` or ``SendFailed``."""

    to: bytes
    contract: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    """Write ``message`` on the agree stream whose request is being handled."""

    message: AgreeMessage


@dataclass(frozen=True, slots=True)
class Push:
    """Tell ``to`` (a public key) of the owner's decision in a request of its own; its ``ok``
    (or its silence) changes nothing: it also learns by asking again (rule 2)."""

    to: bytes
    message: Union[Countersigned, Refused]


@dataclass(frozen=True, slots=True)
class AppendAgreement:
    """Append our ``loan.agreement`` entry for ``agreement``, unless our chain records it."""

    agreement: bytes


@dataclass(frozen=True, slots=True)
class ConsumeOffer:
    """A part of the offer ``offer`` (id) is taken: the node cancels the offer once
    nothing of it remains (fill.py), and leaves it in the book until then."""

    offer: bytes


@dataclass(frozen=True, slots=True)
class ScheduleResend:
    """Feed ``Tick`` at ``at_ms`` (or soon after)."""

    at_ms: int


@dataclass(frozen=True, slots=True)
class ReportRefusal:
    """This node refused (``code``, ``reason``): count and log it; if an owner's command
    caused it (``loan accept``), that command fails with ``code``: nothing was signed."""

    code: str
    reason: str


Action = Union[Persist, SendProposal, Answer, Push, AppendAgreement, ConsumeOffer, ScheduleResend, ReportRefusal]
_SENDS = (SendProposal, Answer, Push)

# -- the machines ---------------------------------------------------------------------------


def _contract_parts(envelope: bytes) -> tuple[bytes, dict]:
    """``(loan id, contract document)`` of a proposal or agreement envelope the node has
    verified; signatures are not looked at here."""
    outer = codec.decode(envelope, max_size=MAX_AGREE_FRAME)
    if type(outer) is not list or len(outer) != 2 or type(outer[0]) is not bytes:
        raise AgreeError("not an envelope", code="bad_message")
    doc = codec.decode(outer[0], max_size=MAX_AGREE_FRAME)
    if type(doc) is not dict or doc.get("type") != "contract":
        raise AgreeError("not a contract", code="bad_message")
    return document_id(outer[0]), doc


def _require(ok: bool, message: str) -> None:
    """An invariant of this file; breaking it is a bug here, never the peer's doing."""
    if not ok:
        raise AssertionError(message)


class _Conversation:
    """What both sides share: the record's fields, ``handle``, and the table lookup."""

    role: str
    table: dict[tuple[str | None, str], str]
    _slots = ("state", "contract", "code", "reason", "updated")  # what handle restores when it raises

    def __init__(self, contract: bytes, state: str | None, code: str = "", reason: str = "", updated: int = 0):
        self.loan, self.document = _contract_parts(contract)
        if state is not None and not any(state in (s, n) for (s, _), n in self.table.items()):
            raise ValueError(f"the {self.role} side has no state {state!r}")
        self.state = state
        self.contract = contract
        self.code, self.reason, self.updated = code, reason, updated

    @property
    def expires(self) -> int:
        return self.document["expires"]

    @property
    def is_open(self) -> bool:
        """Whether the proposal has a record that can still move (it can expire)."""
        return (self.state, "expire") in self.table

    def record(self) -> Record | None:
        """What ``Persist`` last wrote (or will write) for this machine; None before any."""
        if self.state is None:
            return None
        return Record(self.loan, self.role, self.state, self.contract, self.code, self.reason, self.updated)

    def handle(self, event: Event) -> list[Action]:
        """The actions ``event`` calls for, in the order the node must execute them. Raises
        ``AgreeError`` if the event is not allowed now, ``ValueError`` if it lacks what the
        node must give it (``ProposalReceived.facts`` for a new proposal); either way the
        machine is left as it was."""
        handler = getattr(self, "_on_" + type(event).__name__, None)
        if handler is None:
            raise AgreeError(f"{type(event).__name__} is not an event of the {self.role} side")
        saved = tuple(getattr(self, name) for name in self._slots)
        try:
            actions = handler(event)
        except BaseException:
            for name, value in zip(self._slots, saved):
                setattr(self, name, value)
            raise
        self._check_order(actions)
        return actions

    def _check_order(self, actions: list[Action]) -> None:
        """Rule 6 a and b, on every action list."""
        _require(len(actions) <= MAX_ACTIONS, f"{len(actions)} actions")
        kinds = [type(a) for a in actions]
        _require(kinds.count(Persist) <= 1 and kinds.count(AppendAgreement) <= 1, "one persist, one append")
        if Persist in kinds:
            at = kinds.index(Persist)
            _require(not any(k in _SENDS for k in kinds[:at]), "a message before the record is stored")
            if actions[at].record.state == AGREED and AppendAgreement in kinds:
                _require(kinds.index(AppendAgreement) < at, "agreed stored before the agreement is appended")
        for i, a in enumerate(actions):
            carried = a.message.document if isinstance(a, Answer) and isinstance(a.message, Accepted) else (
                a.message.contract if isinstance(a, Push) and isinstance(a.message, Countersigned) else None)
            if carried is not None:
                _require(self.state == AGREED and self.contract == carried, "an agreement sent before it is ours")
                _require(AppendAgreement not in kinds[i:], "an agreement sent before it is appended")

    def _move(self, event: str, now_ms: int, *, contract: bytes | None = None,
              refusal: tuple[str, str] | None = None) -> Persist:
        """Move by ``event`` along the table (``AgreeError`` if it has no such move) and
        return the ``Persist`` of the new record, with ``contract`` and the refusal's
        ``(code, reason)`` if given."""
        nxt = self.table.get((self.state, event))
        if nxt is None:
            raise AgreeError(f"the {self.role} side has no move from {self.state or 'nothing'} on {event}")
        self.state, self.updated = nxt, now_ms
        if contract is not None:
            self.contract = contract
        if refusal is not None:
            self.code, self.reason = refusal
        return Persist(self.record())

    def _agreement(self, agreement: bytes) -> bytes:
        """``agreement``, once it is known to be this proposal's."""
        loan, _ = _contract_parts(agreement)
        if loan != self.loan:
            raise AgreeError("an agreement to another contract", code="bad_message")
        return agreement

    def _seen(self, event: Union[AgreementSeen, CountersignedPushed]) -> list[Action]:
        agreement = self._agreement(event.agreement)
        actions: list[Action] = [AppendAgreement(agreement)]  # in every state: the chains are the loan (rule 7)
        if (self.state, "seen_agreement") in self.table:
            actions.append(self._move("seen_agreement", event.now_ms, contract=agreement))
            if self.role == IN:
                actions.append(ConsumeOffer(self.document["offer"]))
        return actions

    def _on_AgreementSeen(self, event: AgreementSeen) -> list[Action]:
        return self._seen(event)

    def _on_CountersignedPushed(self, event: CountersignedPushed) -> list[Action]:
        return self._seen(event) + [Answer(Ok(self.loan))]

    def _expire(self, event: Tick) -> list[Action] | None:
        if self.is_open and event.now_ms > self.expires:
            return [self._move("expire", event.now_ms)]
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.loan.hex()[:16]}, {self.state})"


class Proposer(_Conversation):
    """The side that proposed: stores, sends, asks again, and learns the answer."""

    role = OUT
    table = PROPOSER_TABLE
    _slots = _Conversation._slots + ("in_flight", "last_ask", "quick")

    def __init__(self, contract: bytes, state: str | None, code: str = "", reason: str = "", updated: int = 0):
        from .contract import acceptor

        super().__init__(contract, state, code, reason, updated)
        self.counterparty: bytes = acceptor(self.document)
        self.in_flight = False  # a SendProposal has no outcome fed back yet
        self.last_ask: int | None = None  # when a Tick last asked again
        self.quick: tuple[int, ...] = ()  # quick resends left, after the owner's propose

    @classmethod
    def new(cls, proposal: bytes) -> "Proposer":
        """The proposer of ``proposal`` (our signed proposal envelope), before it is stored."""
        return cls(proposal, None)

    @classmethod
    def from_record(cls, record: Record) -> "Proposer":
        if record.role != OUT:
            raise ValueError("not a proposer's record")
        return cls(record.contract, record.state, record.code, record.reason, record.updated)

    def _send(self) -> SendProposal:
        self.in_flight = True
        return SendProposal(self.counterparty, self.contract)

    def _on_OwnerProposed(self, event: OwnerProposed) -> list[Action]:
        persist = self._move("propose", event.now_ms)
        self.quick = QUICK_RESENDS_MS
        return [persist, self._send()]

    def _on_AnswerReceived(self, event: AnswerReceived) -> list[Action]:
        answer = event.answer
        if isinstance(answer, Accepted):
            if answer.field != "contract":
                raise AgreeError("an accepted transfer is no answer to a proposal", code="bad_message")
            self._agreement(answer.document)
        elif not isinstance(answer, (Held, Refused)):
            raise AgreeError(f"{type(answer).__name__} is no answer to a proposal", code="unexpected_message")
        if self.state is None:
            raise AgreeError("an answer to a proposal never sent")
        self.in_flight = False
        if self.state in FINAL:
            return []  # decided already (an earlier answer, a push, or the chain)
        if isinstance(answer, Accepted):
            return [AppendAgreement(answer.document), self._move("accepted", event.now_ms, contract=answer.document)]
        if isinstance(answer, Held):
            return [self._move("held", event.now_ms)]
        return [self._move("refused", event.now_ms, refusal=(answer.code, answer.reason))]

    def _on_SendFailed(self, event: SendFailed) -> list[Action]:
        if self.state is None:
            raise AgreeError("a send of a proposal never sent")
        self.in_flight = False
        if not event.connected:
            self.quick = ()  # not connected: wait for the tick (and the peer)
        if self.state == PROPOSED and self.quick:
            pause, self.quick = self.quick[0], self.quick[1:]
            return [ScheduleResend(event.now_ms + pause)]
        return []

    def _on_Tick(self, event: Tick) -> list[Action]:
        expired = self._expire(event)
        if expired is not None:
            return expired
        due = self.state == PROPOSED or (
            self.state == HELD and (self.last_ask is None or event.now_ms - self.last_ask >= HELD_RETRY_MS))
        if not due:
            return []
        self.last_ask = event.now_ms
        return [] if self.in_flight else [self._send()]

    def _on_RefusalPushed(self, event: RefusalPushed) -> list[Action]:
        if event.sender == self.counterparty and (self.state, "refused") in self.table:
            return [self._move("refused", event.now_ms, refusal=(event.code, event.reason[:MAX_REASON])),
                    Answer(Ok(self.loan))]
        return [Answer(Ok(self.loan))]


class Acceptor(_Conversation):
    """The side that must countersign: decides (rule 3), holds for review, answers again.

    ``sign`` turns the proposal envelope into the agreement (``countersign`` with the
    node's key); it is called on a ``countersign`` move only."""

    role = IN
    table = ACCEPTOR_TABLE

    def __init__(self, contract: bytes, state: str | None, code: str = "", reason: str = "", updated: int = 0,
                 *, sign: Callable[[bytes], bytes]):
        super().__init__(contract, state, code, reason, updated)
        self.counterparty: bytes = self.document["proposer"]
        self._sign = sign

    @classmethod
    def new(cls, proposal: bytes, *, sign: Callable[[bytes], bytes]) -> "Acceptor":
        """The acceptor of ``proposal`` (verified, addressed to us), before it has a record.
        (The agreement does as well as the proposal: they share the payload, hence the id.)"""
        return cls(proposal, None, sign=sign)

    @classmethod
    def from_record(cls, record: Record, *, sign: Callable[[bytes], bytes]) -> "Acceptor":
        if record.role != IN:
            raise ValueError("not an acceptor's record")
        return cls(record.contract, record.state, record.code, record.reason, record.updated, sign=sign)

    def _countersign(self, now_ms: int) -> tuple[list[Action], bytes]:
        _require(now_ms <= self.expires and (self.state, "countersign") in self.table, "countersign now?")
        agreement = self._agreement(self._sign(self.contract))
        actions: list[Action] = [AppendAgreement(agreement), self._move("countersign", now_ms, contract=agreement),
                                 ConsumeOffer(self.document["offer"])]
        return actions, agreement

    def _on_ProposalReceived(self, event: ProposalReceived) -> list[Action]:
        if self.state is not None:
            return [Answer(answer_of(self.record()))]  # rule 2: from the record alone
        if event.recorded is not None:
            agreement = self._agreement(event.recorded)
            return [self._move("seen_agreement", event.now_ms, contract=agreement),
                    ConsumeOffer(self.document["offer"]), Answer(Accepted(agreement))]
        if event.facts is None:
            raise ValueError("a new proposal is decided on facts: ProposalReceived.facts is None")
        why = event.facts.refusal(self.document, event.now_ms)
        if why is not None:
            code, reason = why
            return [self._move("refuse", event.now_ms, refusal=why), ReportRefusal(code, reason),
                    Answer(Refused(self.loan, code, reason))]
        if event.review:
            return [self._move("receive", event.now_ms), Answer(Held(self.loan))]
        actions, agreement = self._countersign(event.now_ms)
        return actions + [Answer(Accepted(agreement))]

    def _pending(self) -> None:
        if self.state != PENDING:
            raise AgreeError(f"the proposal is {self.state or 'unknown'}, not pending")

    def _on_OwnerAccepted(self, event: OwnerAccepted) -> list[Action]:
        self._pending()
        if event.now_ms > self.expires:
            why = "the proposal has expired; nothing was signed"
            return [self._move("expire", event.now_ms), ReportRefusal("expired", why)]
        if not event.offer_live:
            why = "the offer was cancelled, taken or expired before review"
            return [self._move("refuse", event.now_ms, refusal=("offer_expired", why)),
                    ReportRefusal("offer_expired", why)]
        if event.fill is not None:
            return [self._move("refuse", event.now_ms, refusal=event.fill), ReportRefusal(*event.fill)]
        actions, agreement = self._countersign(event.now_ms)
        return actions + [Push(self.counterparty, Countersigned(agreement))]

    def _on_OwnerRejected(self, event: OwnerRejected) -> list[Action]:
        self._pending()
        reason = event.reason[:MAX_REASON]
        return [self._move("refuse", event.now_ms, refusal=("rejected", reason)),
                Push(self.counterparty, Refused(self.loan, "rejected", reason))]

    def _on_Tick(self, event: Tick) -> list[Action]:
        return self._expire(event) or []

    def _on_RefusalPushed(self, event: RefusalPushed) -> list[Action]:
        return [Answer(Ok(self.loan))]  # a refusal is the acceptor's to give, not to take


def conversation(record: Record, *, sign: Callable[[bytes], bytes]) -> Union[Proposer, Acceptor]:
    """The machine a stored record resumes as, by its role; ``RecordError`` if the record
    cannot be one (a contract that is not a contract, a state its side does not have)."""
    from .contract import check_contract

    try:
        _, doc = _contract_parts(record.contract)
        check_contract(doc)
        if record.role == OUT:
            return Proposer.from_record(record)
        return Acceptor.from_record(record, sign=sign)
    except (ProtocolError, ValueError) as e:
        raise RecordError(f"the record of proposal {record.loan.hex()[:16]} is damaged: "
                          f"{getattr(e, 'message', None) or e}") from None
