"""What nodes say to each other: gossip topics, stream protocols and their messages.

Rules of this file (docs/protocol.md, "Network"):

1. Every stream message is a frame: a 4-byte big-endian length ``n`` (1 <= n <=
   ``MAX_FRAME``), then ``n`` bytes of one canonical MessagePack map with a text field
   ``type``. A frame that breaks any rule ends the stream: the peer sent garbage.
2. Sync (``/p2plend/sync/1.0.0``) is pulled by the dialer. It sends ``heads?``; the
   listener answers ``heads``: the authors it holds, with seq and id of the last entry,
   in pages. A page holds the authors after the query's ``after`` (all, without it), in
   order, at most ``HEADS_PAGE`` of them; if more remain, ``next`` is its last author and
   the dialer asks again with ``after`` = ``next``. No author is ever left out.
   For each author whose seq is higher than its own, the dialer sends ``get`` for the
   next range and the listener answers ``entries``: at most ``limit`` consecutive entries
   of that author from ``start`` (fewer if it holds fewer or the frame would exceed
   ``MAX_FRAME``; none if it holds none). The dialer may send the next ``get`` before it
   has verified the last ``entries`` (pipelining). Either side may close at any time.
3. Peer exchange (``/p2plend/pex/1.0.0``): the dialer sends ``pex`` with the addresses it
   listens on; the listener answers ``peers``: itself and up to ``MAX_PEERS`` peers it
   knows, each as a public key and multiaddrs (without ``/p2p/``).
4. Gossip messages carry bare bytes: on ``TOPIC_ENTRIES`` a canonical array of 1 to
   ``MAX_GOSSIP_ENTRIES`` entry envelopes (bin) of at most ``MAX_GOSSIP_SIZE`` bytes in
   all; on ``TOPIC_FRAUD`` a fork proof. ``check_gossip`` is the validator of these core
   topics: a message it refuses (any part of it) is neither delivered nor forwarded.
   Extensions add topics of their own, each with its validator.
5. A list in a message longer than its limit, an integer out of range, a missing or extra
   field: the message is refused with a ``WireError`` naming the field.

Nothing here reads a socket or a clock: the node (``p2pnode/net/sync.py``) does the I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Mapping, Union

from . import codec
from .chain import Head
from .entry import parse_entry
from .envelope import MAX_ENVELOPE_SIZE
from .errors import ProtocolError
from .fork import MAX_FORK_PROOF_SIZE, ForkProof
from .schema import U63_MAX

SYNC_PROTOCOL = "/p2plend/sync/1.0.0"
PEX_PROTOCOL = "/p2plend/pex/1.0.0"

TOPIC_ENTRIES = "p2plend/1/entries"
TOPIC_FRAUD = "p2plend/1/fraud"
TOPICS = (TOPIC_ENTRIES, TOPIC_FRAUD)
"""The core's gossip topics."""

MAX_FRAME = 8 << 20  # bytes of one frame's payload
MAX_HEADS = 65_536  # authors one `heads` answer may hold (what a receiver accepts)
HEADS_PAGE = 4_096  # authors in one `heads` answer this node sends (rule 2)
MAX_BATCH = 4_096  # entries in one `entries` answer
MAX_PEERS = 32  # peers in one `peers` answer
MAX_ADDRS = 8  # multiaddrs per peer
MAX_ADDR_LEN = 256  # bytes of one multiaddr string
MAX_GOSSIP_ENTRIES = 64  # entries in one gossip message
MAX_GOSSIP_SIZE = 512 * 1024  # bytes of one entries gossip message (libp2p's RPC limit is 1 MiB)

_LEN = struct.Struct(">I")
FRAME_HEADER = _LEN.size


class WireError(ProtocolError):
    """A peer's message breaks the rules of this file."""

    code = "bad_message"


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeadsQuery:
    """``{type: "heads?", [after]}``: what chains do you hold (after author ``after``)?"""

    after: bytes | None = None


@dataclass(frozen=True, slots=True)
class Heads:
    """``{type: "heads", heads: [[author, seq, id], ...], [next]}``, sorted by author;
    ``next`` (the last author) when more remain (rule 2)."""

    heads: tuple[tuple[bytes, int, bytes], ...]
    next: bytes | None = None


@dataclass(frozen=True, slots=True)
class Get:
    """``{type: "get", author, start, limit}``: entries of ``author`` from seq ``start``."""

    author: bytes
    start: int
    limit: int


@dataclass(frozen=True, slots=True)
class Entries:
    """``{type: "entries", author, start, entries: [envelope, ...]}``: consecutive entries
    of ``author`` from seq ``start``, unverified until the receiver checks them."""

    author: bytes
    start: int
    entries: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Pex:
    """``{type: "pex", addrs: [multiaddr, ...]}``: here is where I listen; whom do you know?"""

    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Peers:
    """``{type: "peers", peers: [[public_key, [multiaddr, ...]], ...]}``."""

    peers: tuple[tuple[bytes, tuple[str, ...]], ...]


Message = Union[HeadsQuery, Heads, Get, Entries, Pex, Peers]


def _doc(msg: Message) -> dict[str, Any]:
    if isinstance(msg, HeadsQuery):
        return {"type": "heads?"} if msg.after is None else {"type": "heads?", "after": msg.after}
    if isinstance(msg, Heads):
        doc: dict[str, Any] = {"type": "heads", "heads": [list(h) for h in msg.heads]}
        if msg.next is not None:
            doc["next"] = msg.next
        return doc
    if isinstance(msg, Get):
        return {"type": "get", "author": msg.author, "start": msg.start, "limit": msg.limit}
    if isinstance(msg, Entries):
        return {"type": "entries", "author": msg.author, "start": msg.start, "entries": list(msg.entries)}
    if isinstance(msg, Pex):
        return {"type": "pex", "addrs": list(msg.addrs)}
    if isinstance(msg, Peers):
        return {"type": "peers", "peers": [[pk, list(addrs)] for pk, addrs in msg.peers]}
    raise TypeError(f"not a wire message: {msg!r}")


def encode_message(msg: Message) -> bytes:
    """The canonical bytes of ``msg`` (without the frame header)."""
    return codec.encode(_doc(msg))


def frame(msg: Message) -> bytes:
    """``msg`` as one frame: length header and canonical bytes. Raises ``WireError`` if
    it would exceed ``MAX_FRAME``."""
    payload = encode_message(msg)
    if len(payload) > MAX_FRAME:
        raise WireError(f"a frame of {len(payload)} bytes exceeds {MAX_FRAME}", code="oversize")
    return _LEN.pack(len(payload)) + payload


def frame_length(header: bytes, max_frame: int = MAX_FRAME) -> int:
    """The payload length announced by a 4-byte frame header; ``WireError`` if out of
    range (1..``max_frame``: a protocol may allow less than ``MAX_FRAME``)."""
    if len(header) != FRAME_HEADER:
        raise WireError("truncated frame header", code="truncated")
    (n,) = _LEN.unpack(header)
    if not 1 <= n <= max_frame:
        raise WireError(f"frame length {n} is outside 1..{max_frame}", code="oversize" if n else "malformed")
    return n


# -- decoding ------------------------------------------------------------------------


def _fields(doc: dict, names: set[str], kind: str) -> None:
    if set(doc) != names:
        missing, extra = sorted(names - set(doc)), sorted(set(doc) - names)
        raise WireError(f"{kind}: missing {missing}, unexpected {extra}", code="bad_message")


def _bin(value: Any, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise WireError(f"{what} must be {size} bytes")
    return value


def _uint(value: Any, what: str, lo: int = 0, hi: int = U63_MAX) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise WireError(f"{what} must be an integer in {lo}..{hi}")
    return value


def _list(value: Any, limit: int, what: str) -> list:
    if type(value) is not list:
        raise WireError(f"{what} must be an array")
    if len(value) > limit:
        raise WireError(f"{what} has {len(value)} items; the limit is {limit}", code="oversize")
    return value


def _addrs(value: Any, what: str) -> tuple[str, ...]:
    out = []
    for a in _list(value, MAX_ADDRS, what):
        if type(a) is not str or not a.startswith("/") or len(a.encode()) > MAX_ADDR_LEN:
            raise WireError(f"{what} holds something that is not a multiaddr string")
        out.append(a)
    return tuple(out)


def decode_message(payload: bytes) -> Message:
    """The message whose canonical bytes are ``payload``; ``WireError`` (or another
    ``ProtocolError``) naming what is wrong otherwise. Entries inside are not verified."""
    doc = codec.decode(payload, max_size=MAX_FRAME)
    if type(doc) is not dict or type(doc.get("type")) is not str:
        raise WireError("a message is a map with a text 'type'")
    t = doc["type"]
    if t == "heads?":
        _fields(doc, {"type", "after"} if "after" in doc else {"type"}, t)
        return HeadsQuery(_bin(doc["after"], 32, "after") if "after" in doc else None)
    if t == "heads":
        _fields(doc, {"type", "heads", "next"} if "next" in doc else {"type", "heads"}, t)
        heads = []
        prev = b""
        for h in _list(doc["heads"], MAX_HEADS, "heads"):
            if type(h) is not list or len(h) != 3:
                raise WireError("a head is [author, seq, id]")
            author = _bin(h[0], 32, "head author")
            if author <= prev:
                raise WireError("heads are not sorted by author, or repeat one")
            prev = author
            heads.append((author, _uint(h[1], "head seq", 1), _bin(h[2], 32, "head id")))
        nxt = None
        if "next" in doc:
            nxt = _bin(doc["next"], 32, "next")
            if not heads or nxt != heads[-1][0]:
                raise WireError("heads: next must be the page's last author", code="bad_message")
        return Heads(tuple(heads), nxt)
    if t == "get":
        _fields(doc, {"type", "author", "start", "limit"}, t)
        return Get(
            _bin(doc["author"], 32, "author"), _uint(doc["start"], "start", 1), _uint(doc["limit"], "limit", 1, MAX_BATCH)
        )
    if t == "entries":
        _fields(doc, {"type", "author", "start", "entries"}, t)
        entries = _list(doc["entries"], MAX_BATCH, "entries")
        if not all(type(e) is bytes and len(e) <= MAX_ENVELOPE_SIZE for e in entries):
            raise WireError(f"entries must be envelopes of at most {MAX_ENVELOPE_SIZE} bytes")
        return Entries(_bin(doc["author"], 32, "author"), _uint(doc["start"], "start", 1), tuple(entries))
    if t == "pex":
        _fields(doc, {"type", "addrs"}, t)
        return Pex(_addrs(doc["addrs"], "addrs"))
    if t == "peers":
        _fields(doc, {"type", "peers"}, t)
        peers = []
        for p in _list(doc["peers"], MAX_PEERS + 1, "peers"):
            if type(p) is not list or len(p) != 2:
                raise WireError("a peer is [public_key, [multiaddr, ...]]")
            peers.append((_bin(p[0], 32, "peer public key"), _addrs(p[1], "peer addrs")))
        return Peers(tuple(peers))
    raise WireError(f"unknown message type {t[:40]!r}", code="unknown_message")


def expect(msg: Message, kind: type) -> Any:
    """``msg`` if it is a ``kind``; a ``WireError`` (``unexpected_message``) otherwise: a
    valid message where the protocol's step calls for another."""
    if not isinstance(msg, kind):
        raise WireError(f"expected {kind.__name__}, got {type(msg).__name__}", code="unexpected_message")
    return msg


def usable_addrs(announced: tuple[str, ...], observed_ip: str | None) -> list[str]:
    """The addresses a ``pex`` dialer announced, as others can dial them: a wildcard IP
    (``0.0.0.0``, ``::``) becomes the IP its connection came from, or is dropped if that
    is unknown."""
    out = []
    for a in announced:
        parts = a.split("/")
        if len(parts) > 2 and parts[2] in ("0.0.0.0", "::"):
            if observed_ip is None:
                continue
            parts[2] = observed_ip
        out.append("/".join(parts))
    return out


# -- sync planning -------------------------------------------------------------------


def heads_message(heads: Mapping[bytes, Head], after: bytes | None = None, page: int | None = None) -> Heads:
    """The ``heads`` page for the chains held (``heads`` may be just those after ``after``):
    the first ``page`` (default ``HEADS_PAGE``) authors after ``after`` in order, and
    ``next`` if more remain."""
    page = HEADS_PAGE if page is None else page
    ordered = sorted((a, h) for a, h in heads.items() if after is None or a > after)
    chosen = ordered[:page]
    nxt = chosen[-1][0] if len(ordered) > page else None
    return Heads(tuple((a, h.seq, h.id) for a, h in chosen), nxt)


@dataclass(frozen=True, slots=True)
class Want:
    """Entries ``start..stop`` (inclusive) of ``author`` that the peer holds and we lack.

    ``fork_check`` is set when both hold the same seq with different ids: fetching the
    peer's entry at ``start`` yields a fork proof."""

    author: bytes
    start: int
    stop: int
    fork_check: bool = False


def plan_pull(ours: Mapping[bytes, Head], theirs: Heads) -> list[Want]:
    """What to pull from a peer whose heads are ``theirs``. Authors whose head is the
    same as ours, or behind ours, are skipped (behind: the peer will pull from us)."""
    wants = []
    for author, seq, id_ in theirs.heads:
        mine = ours.get(author)
        if mine is None:
            wants.append(Want(author, 1, seq))
        elif seq > mine.seq:
            wants.append(Want(author, mine.seq + 1, seq))
        elif seq == mine.seq and id_ != mine.id:
            wants.append(Want(author, seq, seq, fork_check=True))
    return wants


def answer_get(get: Get, chain: list[bytes]) -> Entries:
    """The ``entries`` answer given ``chain``, the stored envelopes of ``get.author`` from
    ``get.start`` on (at most ``get.limit`` of them): trimmed to fit one frame."""
    out: list[bytes] = []
    size = 256
    for env in chain[: get.limit]:
        size += len(env) + 5
        if size > MAX_FRAME:
            break
        out.append(env)
    return Entries(get.author, get.start, tuple(out))


# -- gossip --------------------------------------------------------------------------


def entries_message(envelopes: list[bytes]) -> bytes:
    """The gossip message carrying ``envelopes`` (1 to ``MAX_GOSSIP_ENTRIES`` of them)."""
    if not 1 <= len(envelopes) <= MAX_GOSSIP_ENTRIES:
        raise WireError(f"an entries message carries 1 to {MAX_GOSSIP_ENTRIES} entries", code="oversize")
    data = codec.encode(list(envelopes))
    if len(data) > MAX_GOSSIP_SIZE:
        raise WireError(f"an entries message of {len(data)} bytes exceeds {MAX_GOSSIP_SIZE}", code="oversize")
    return data


def split_entries(envelopes: list[bytes]) -> list[list[bytes]]:
    """``envelopes`` cut into consecutive groups that each fit one entries message."""
    groups: list[list[bytes]] = []
    size = 0
    for env in envelopes:
        if not groups or len(groups[-1]) >= MAX_GOSSIP_ENTRIES or size + len(env) + 8 > MAX_GOSSIP_SIZE:
            groups.append([])
            size = 8
        groups[-1].append(env)
        size += len(env) + 5
    return groups


def check_gossip(topic: str, data: bytes) -> Any:
    """The verified value a gossip message on ``topic`` carries; ``ProtocolError`` if it
    must be dropped (malformed, oversize, badly signed, wrong topic)."""
    if topic == TOPIC_ENTRIES:
        value = codec.decode(data, max_size=MAX_GOSSIP_SIZE)
        if type(value) is not list or not 1 <= len(value) <= MAX_GOSSIP_ENTRIES:
            raise WireError(f"an entries message is an array of 1 to {MAX_GOSSIP_ENTRIES} envelopes")
        if not all(type(v) is bytes for v in value):
            raise WireError("an entries message holds envelopes (bin) only")
        return [parse_entry(v) for v in value]
    if topic == TOPIC_FRAUD:
        if len(data) > MAX_FORK_PROOF_SIZE:
            raise WireError(f"fork proof of {len(data)} bytes exceeds {MAX_FORK_PROOF_SIZE}", code="oversize")
        return ForkProof.decode(data)
    raise WireError(f"unknown topic {topic[:60]!r}", code="wrong_topic")
