"""What nodes say to each other: gossip topics, stream protocols and their messages.

Rules of this file (docs/protocol.md, "Network"):

1. Every stream message is a frame: a 4-byte big-endian length ``n`` (1 <= n <=
   ``MAX_FRAME``), then ``n`` bytes of one canonical MessagePack map with a text field
   ``type``. A frame that breaks any rule ends the stream: the peer sent garbage.
2. Sync (``/p2plend/sync/1.1.0``; ``/p2plend/sync/1.0.0`` is the same conversation
   without ``since``, what nodes spoke before the change feed) is pulled by the dialer. It sends ``heads?``; the
   listener answers ``heads``: the authors it holds, with seq and id of the last entry,
   in pages. A page holds the authors after the query's ``after`` (all, without it), in
   order, at most ``HEADS_PAGE`` of them; if more remain, ``next`` is its last author and
   the dialer asks again with ``after`` = ``next``. No author is ever left out.
   Changes: a ``heads?`` may carry ``since``, a ``Cursor`` (a store's ``epoch`` and a
   counter of its change feed). Its answers carry the answering store's ``epoch`` and
   ``upto`` (its counter at the read). If ``since`` is of that store (same epoch, counter
   not beyond ``upto``; ``cursor_holds``) and the query has no ``after``, the page lists
   only the chains changed after ``since``'s counter, in the order of their changes
   (``since`` echoed: a changes page), at most ``HEADS_PAGE`` of them; if more remain,
   ``next`` is the counter of its last change and the dialer asks again with ``since``
   at ``next``. Otherwise the page is a full one (as above). Without ``since``, no
   ``epoch``, ``upto`` or changes page is ever sent: the 1.0.0 conversation, byte for
   byte. A dialer proposes 1.1.0 first and 1.0.0 second (``SYNC_PROTOCOLS``); on a 1.0.0
   stream it never sends ``since`` (a node of 1.0.0 refuses it as ``bad_message``).
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

SYNC_PROTOCOL = "/p2plend/sync/1.1.0"
SYNC_PROTOCOL_1_0 = "/p2plend/sync/1.0.0"
SYNC_PROTOCOLS = (SYNC_PROTOCOL, SYNC_PROTOCOL_1_0)
"""The sync protocol ids a dialer proposes, preferred first (rule 2)."""
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
EPOCH_SIZE = 16  # bytes of a store's change feed epoch

_LEN = struct.Struct(">I")
FRAME_HEADER = _LEN.size


class WireError(ProtocolError):
    """A peer's message breaks the rules of this file."""

    code = "bad_message"


# -- messages ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cursor:
    """A place in one store's change feed: its ``epoch`` and a ``counter`` of it (rule 2).
    As a field: ``{counter, epoch}``."""

    epoch: bytes
    counter: int

    def __post_init__(self) -> None:
        if type(self.epoch) is not bytes or len(self.epoch) != EPOCH_SIZE:
            raise WireError(f"a cursor's epoch must be {EPOCH_SIZE} bytes")
        if type(self.counter) is not int or not 0 <= self.counter <= U63_MAX:
            raise WireError(f"a cursor's counter must be an integer in 0..{U63_MAX}")


NO_CURSOR = Cursor(bytes(EPOCH_SIZE), 0)
"""A cursor of no store: asks for every head, with the answering store's mark (a full pull
whose end gives a cursor)."""


def cursor_holds(since: Cursor, mark: Cursor) -> bool:
    """Whether ``since`` is a place in the feed whose present mark is ``mark`` (same epoch,
    counter not beyond it): only then are "changes since" answered (rule 2). A cursor of
    another store, or from its future, is never trusted: the answer is a full page."""
    return since.epoch == mark.epoch and since.counter <= mark.counter


@dataclass(frozen=True, slots=True)
class HeadsQuery:
    """``{type: "heads?", [after], [since]}``: what chains do you hold (after author
    ``after``), or which changed since ``since`` (rule 2)?"""

    after: bytes | None = None
    since: Cursor | None = None


@dataclass(frozen=True, slots=True)
class Heads:
    """``{type: "heads", heads: [[author, seq, id], ...], [next], [epoch, upto], [since]}``.

    A full page (``since`` None) is sorted by author, ``next`` its last author when more
    remain. A changes page (``since``: the counter it lists changes after) is in the order
    of the changes, ``next`` the counter of its last one when more remain. ``epoch`` and
    ``upto``, both or neither, are the answering store's mark at the read (rule 2)."""

    heads: tuple[tuple[bytes, int, bytes], ...]
    next: bytes | int | None = None
    epoch: bytes | None = None
    upto: int | None = None
    since: int | None = None

    @property
    def mark(self) -> Cursor | None:
        """The answering store's mark at the read, if the page carries one."""
        return None if self.epoch is None or self.upto is None else Cursor(self.epoch, self.upto)


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
        doc: dict[str, Any] = {"type": "heads?"}
        if msg.after is not None:
            doc["after"] = msg.after
        if msg.since is not None:
            doc["since"] = {"counter": msg.since.counter, "epoch": msg.since.epoch}
        return doc
    if isinstance(msg, Heads):
        doc = {"type": "heads", "heads": [list(h) for h in msg.heads]}
        for name in ("next", "epoch", "upto", "since"):
            if getattr(msg, name) is not None:
                doc[name] = getattr(msg, name)
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
        _fields(doc, {"type"} | ({"after", "since"} & set(doc)), t)
        since = None
        if "since" in doc:
            c = doc["since"]
            if type(c) is not dict:
                raise WireError("since must be a map {counter, epoch}")
            _fields(c, {"counter", "epoch"}, "since")
            since = Cursor(_bin(c["epoch"], EPOCH_SIZE, "since epoch"), _uint(c["counter"], "since counter"))
        return HeadsQuery(_bin(doc["after"], 32, "after") if "after" in doc else None, since)
    if t == "heads":
        return _decode_heads(doc)
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


def _decode_heads(doc: dict) -> Heads:
    optional = {"next", "epoch", "upto", "since"} & set(doc)
    _fields(doc, {"type", "heads"} | optional, "heads")
    if ("epoch" in doc) != ("upto" in doc) or ("since" in doc and "epoch" not in doc):
        raise WireError("heads: epoch and upto come together, and a changes page (since) carries them")
    epoch = _bin(doc["epoch"], EPOCH_SIZE, "epoch") if "epoch" in doc else None
    upto = _uint(doc["upto"], "upto") if "upto" in doc else None
    since = _uint(doc["since"], "since", 0, upto) if "since" in doc else None  # (upto is set with since)
    heads = []
    prev = b""
    seen: set[bytes] = set()
    for h in _list(doc["heads"], MAX_HEADS, "heads"):
        if type(h) is not list or len(h) != 3:
            raise WireError("a head is [author, seq, id]")
        author = _bin(h[0], 32, "head author")
        if since is None and author <= prev:
            raise WireError("heads are not sorted by author, or repeat one")
        if since is not None and author in seen:
            raise WireError("a changes page repeats an author")
        prev = author
        seen.add(author)
        heads.append((author, _uint(h[1], "head seq", 1), _bin(h[2], 32, "head id")))
    nxt: bytes | int | None = None
    if since is None and "next" in doc:
        nxt = _bin(doc["next"], 32, "next")
        if not heads or nxt != heads[-1][0]:
            raise WireError("heads: next must be the page's last author", code="bad_message")
    elif since is not None:
        assert upto is not None
        last = upto
        if "next" in doc:  # each head is one change in since+1..next, and more remain up to upto
            nxt = last = _uint(doc["next"], "next")
            if not heads or not since < nxt < upto:
                raise WireError("heads: a changes page's next is the counter of its last change, in since+1..upto-1")
        if len(heads) > last - since:
            raise WireError(f"a changes page lists {len(heads)} chains changed in {last - since} counters")
    return Heads(tuple(heads), nxt, epoch, upto, since)


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


def heads_message(heads: Mapping[bytes, Head], after: bytes | None = None, page: int | None = None,
                  mark: Cursor | None = None) -> Heads:
    """The ``heads`` page for the chains held (``heads`` may be just those after ``after``):
    the first ``page`` (default ``HEADS_PAGE``) authors after ``after`` in order, and
    ``next`` if more remain; with ``mark`` (the store's, read with or before the heads),
    a full page that carries it (rule 2)."""
    page = HEADS_PAGE if page is None else page
    ordered = sorted((a, h) for a, h in heads.items() if after is None or a > after)
    chosen = ordered[:page]
    nxt = chosen[-1][0] if len(ordered) > page else None
    return Heads(tuple((a, h.seq, h.id) for a, h in chosen), nxt,
                 None if mark is None else mark.epoch, None if mark is None else mark.counter)


def changes_message(changes: list[tuple[int, Head]], since: int, mark: Cursor, page: int | None = None) -> Heads:
    """The changes page after counter ``since`` of the feed whose mark is ``mark``, from
    ``changes`` (the store's, after ``since``, in counter order, read at the same instant
    as ``mark``): the first ``page`` (default ``HEADS_PAGE``), and ``next`` (the counter
    of the last) if more remain (rule 2)."""
    page = HEADS_PAGE if page is None else page
    assert since <= mark.counter and all(since < c <= mark.counter for c, _ in changes)
    chosen = changes[:page]
    nxt = chosen[-1][0] if len(changes) > page else None
    return Heads(tuple((h.author, h.seq, h.id) for _, h in chosen), nxt, mark.epoch, mark.counter, since)


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
