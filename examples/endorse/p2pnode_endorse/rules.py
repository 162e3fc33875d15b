"""The rules of endorsements, sans-IO: what an endorsement, an ask and a stream message
look like, and what each limit is. Pure functions of their arguments (time is passed in):
no trio, no libp2p, no store, so they are tested without a network and read by the CLI.

Rules:

1. An endorsement is a chain entry of kind ``endorse.v1`` with body
   ``{"peer": bin 32, "text": text}``: its author vouches for ``peer``. ``text`` holds
   1 to ``MAX_TEXT`` code points, not all blank; no other field. Nobody endorses
   themselves (``peer`` differs from the entry's author).
2. Its index key is ``peer + author + seq`` (8 bytes, big-endian): the endorsements of a
   peer are the keys under that peer's 32 bytes, one prefix scan.
3. An ask ("please endorse me") is a document ``{"type": "endorse.ask", "author": bin 32,
   "ts": ms, "note": text}`` signed by ``author`` alone, gossiped on ``TOPIC`` in an
   envelope of at most ``MAX_ASK_SIZE`` bytes; ``note`` holds at most ``MAX_NOTE`` code
   points. Whether it is fresh depends on a clock, so the receiver judges that
   (``is_fresh``), not the topic's validator.
4. On ``PROTOCOL`` the asker sends one ``{"t": "want", "of": bin 32, "limit": n}`` (1 to
   ``MAX_ANSWER``) and the server answers one ``{"t": "have", "entries": [bin, ...]}``:
   at most ``limit`` envelopes of ``endorse.v1`` entries with valid bodies endorsing
   ``of``, each at most ``MAX_ENTRY`` bytes. Anything else breaks the protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import codec
from protocol.entry import Entry, parse_entry
from protocol.envelope import Envelope, open_envelope, require_signers, seal
from protocol.errors import ProtocolError, SchemaError
from protocol.keys import SigningKey
from protocol.schema import binary, check_fields, const, text, uint

KIND = "endorse.v1"
TOPIC = "p2plend/x/endorse/1/asks"
PROTOCOL = "/p2plend/x/endorse/1.0.0"
ASK_TYPE = "endorse.ask"

MAX_TEXT = 280  # code points of an endorsement's text
MAX_NOTE = 140  # code points of an ask's note
MAX_ASK_SIZE = 1024  # bytes of an ask envelope: the topic's size limit
MAX_ANSWER = 64  # endorsements in one stream answer
MAX_ENTRY = 2048  # bytes of one endorsement's envelope (a valid one is under 1.6 KiB)
MAX_FRAME = 16 + MAX_ANSWER * (MAX_ENTRY + 8)  # the largest answer, with msgpack headers
ASK_FUTURE_MS = 5 * 60 * 1000  # an ask dated further ahead than this is refused (clock skew)

_SEQ = 8


# -- endorsements (rules 1 and 2) --------------------------------------------------------------


BODY_FIELDS = {"peer": binary(32), "text": text(MAX_TEXT)}


def validate(entry: Entry) -> None:
    """The kind's validator (``protocol.kinds.Kind.validate``): rule 1."""
    check_body(entry.body, entry.author)


def check_body(body_: Any, author: bytes) -> None:
    """Rule 1 for a body ``author`` signs or signed; ``SchemaError`` with a code saying why."""
    check_fields(body_, BODY_FIELDS, what=f"{KIND} body")
    if not body_["text"].strip():
        raise SchemaError("an endorsement says something: its text is blank", code="bad_text")
    if body_["peer"] == author:
        raise SchemaError("nobody endorses themselves", code="self_endorsement")


def index(entry: Entry) -> list[bytes]:
    """The kind's index function: rule 2 (called only for a valid body)."""
    return [index_key(entry.body["peer"], entry.author, entry.seq)]


def index_key(peer: bytes, author: bytes, seq: int) -> bytes:
    return peer + author + seq.to_bytes(_SEQ, "big")


def split_index_key(key: bytes) -> tuple[bytes, bytes, int]:
    """``(peer, author, seq)`` of an index key; ``ValueError`` if it is not 72 bytes."""
    if len(key) != 32 + 32 + _SEQ:
        raise ValueError(f"an index key is 72 bytes, not {len(key)}")
    return key[:32], key[32:64], int.from_bytes(key[64:], "big")


def body(peer: bytes, text_: str) -> dict:
    return {"peer": peer, "text": text_}


# -- asks (rule 3) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    author: bytes
    ts: int
    note: str
    raw: bytes  # the envelope, exactly as signed


ASK_FIELDS = {"type": const(ASK_TYPE), "author": binary(32), "ts": uint(), "note": text(MAX_NOTE)}


def make_ask(key: SigningKey, note: str, now_ms: int) -> Ask:
    env = seal({"type": ASK_TYPE, "author": key.public_key, "ts": now_ms, "note": note}, key)
    return _ask_of(env)


def parse_ask(data: bytes) -> Ask:
    """The ask in ``data``, size, fields and signature checked; ``ProtocolError`` if not."""
    if len(data) > MAX_ASK_SIZE:
        raise ProtocolError(f"an ask of {len(data)} bytes exceeds {MAX_ASK_SIZE}", code="oversize")
    return _ask_of(open_envelope(data, max_size=MAX_ASK_SIZE))


def _ask_of(env: Envelope) -> Ask:
    check_fields(env.document, ASK_FIELDS, what="ask")
    require_signers(env, env.document["author"])
    d = env.document
    return Ask(d["author"], d["ts"], d["note"], env.raw)


def check_ask(data: bytes) -> None:
    """The topic's validator: rule 3 without the clock (pure and fast: one signature)."""
    parse_ask(data)


def is_fresh(ask: Ask, now_ms: int, ttl_ms: int) -> bool:
    """Whether ``ask`` is still to be kept at ``now_ms`` by a node keeping asks ``ttl_ms``."""
    return now_ms - ttl_ms <= ask.ts <= now_ms + ASK_FUTURE_MS


# -- the stream protocol (rule 4) --------------------------------------------------------------


def want(of: bytes, limit: int) -> dict:
    return {"t": "want", "of": of, "limit": limit}


def have(envelopes: list[bytes]) -> dict:
    return {"t": "have", "entries": envelopes}


def encode(msg: dict) -> bytes:
    """The codec's ``encode``: a message's frame payload."""
    return codec.encode(msg)


def decode(payload: bytes) -> dict:
    """The codec's ``decode``: rule 4's shapes, or ``ProtocolError``."""
    msg = codec.decode(payload, max_size=MAX_FRAME)
    if type(msg) is not dict or msg.get("t") not in ("want", "have"):
        raise ProtocolError("not an endorse message", code="bad_message")
    if msg["t"] == "want":
        check_fields(msg, {"t": const("want"), "of": binary(32), "limit": uint(1, MAX_ANSWER)}, what="want")
    else:
        check_fields(msg, {"t": const("have"), "entries": _envelopes}, what="have")
    return msg


def _envelopes(v: Any) -> bool:
    return (type(v) is list and len(v) <= MAX_ANSWER
            and all(type(e) is bytes and len(e) <= MAX_ENTRY for e in v))


def endorsements_in(answer: dict, of: bytes, limit: int) -> list[Entry]:
    """The entries of a ``have`` answer to ``want(of, limit)``, each checked (rule 4);
    ``ProtocolError`` if any is not a valid endorsement of ``of`` or there are too many."""
    if answer.get("t") != "have":
        raise ProtocolError("the answer to a want is a have", code="bad_message")
    if len(answer["entries"]) > limit:
        raise ProtocolError(f"{len(answer['entries'])} endorsements answer a want of {limit}", code="bad_message")
    out = []
    for data in answer["entries"]:
        e = parse_entry(data)
        if e.kind != KIND:
            raise ProtocolError(f"an entry of kind {e.kind} is not an endorsement", code="bad_message")
        validate(e)
        if e.body["peer"] != of:
            raise ProtocolError("an endorsement of another peer", code="bad_message")
        out.append(e)
    return out
