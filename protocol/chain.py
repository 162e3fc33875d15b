"""Chain validation: whether a run of entries extends one author's chain correctly.

Rules (docs/protocol.md, "Chains"):

1. A chain is the entries of one author at seq 1, 2, 3, ... with no gap.
2. Each entry's ``prev`` is the id of the entry before it (32 zero bytes at seq 1).
3. ``ts`` never decreases from one entry to the next.
4. Seq 1 is a ``genesis`` entry with a valid genesis body, and no other seq is
   (``kinds.check_opening``). No other kind rule decides a chain: whether a body suits
   its kind is for the kind's owner to judge (kinds.py, rule 2), so every node holds the
   same chains whatever extensions it runs.
5. Two different valid entries of one author at one seq are a fork (fork.py).

Every failure raises ``ChainError`` naming the author, the seq where the chain breaks, and
a code: ``bad_seq``, ``bad_prev``, ``ts_decreased``, ``wrong_author``, ``bad_body``, or the
code of the decoding or signature error of an entry that does not even parse.
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Union

from .entry import ZERO_ID, Entry, parse_entry
from .errors import ChainError, ProtocolError
from .kinds import check_opening


class Head(NamedTuple):
    """What extending a chain needs to know of its last entry."""

    author: bytes
    seq: int
    id: bytes
    ts: int

    @classmethod
    def of(cls, entry: Entry) -> "Head":
        return cls(entry.author, entry.seq, entry.id, entry.ts)


Link = Union[Entry, Head]


def check_link(prev: Link | None, entry: Entry) -> None:
    """Raise ``ChainError`` unless ``entry`` directly follows ``prev`` (None: chain start)."""
    if prev is None:
        if entry.seq != 1:
            raise ChainError(f"chain starts at seq {entry.seq}, not 1", author=entry.author, seq=1, code="bad_seq")
        if entry.prev != ZERO_ID:
            raise ChainError("prev of seq 1 is not zero", author=entry.author, seq=1, code="bad_prev")
        return
    if entry.author != prev.author:
        raise ChainError("entry belongs to another author", author=prev.author, seq=prev.seq + 1, code="wrong_author")
    if entry.seq != prev.seq + 1:
        raise ChainError(
            f"expected seq {prev.seq + 1}, found {entry.seq}", author=entry.author, seq=prev.seq + 1, code="bad_seq"
        )
    if entry.prev != prev.id:
        raise ChainError(
            f"prev does not match the id of seq {prev.seq}", author=entry.author, seq=entry.seq, code="bad_prev"
        )
    if entry.ts < prev.ts:
        raise ChainError(
            f"ts {entry.ts} is before the previous entry's {prev.ts}", author=entry.author, seq=entry.seq, code="ts_decreased"
        )


def check_entry(prev: Link | None, entry: Entry) -> None:
    """Check one entry after ``prev`` by rules 1 to 4; raises ``ChainError``."""
    check_link(prev, entry)
    try:
        check_opening(entry)
    except ProtocolError as e:
        raise ChainError(e.message, author=entry.author, seq=entry.seq, code="bad_body") from None


def parse_next(prev: Link | None, data: bytes, *, author: bytes) -> Entry:
    """Parse the envelope ``data`` expected to follow ``prev`` in ``author``'s chain, and check it.

    A parse failure is reported as a ``ChainError`` at the seq that was expected.
    """
    expected = 1 if prev is None else prev.seq + 1
    try:
        entry = parse_entry(data)
    except ProtocolError as e:
        raise ChainError(e.message, author=author, seq=expected, code=e.code) from None
    if entry.author != author:
        raise ChainError("entry belongs to another author", author=author, seq=expected, code="wrong_author")
    check_entry(prev, entry)
    return entry


def validate_chain(envelopes: Iterable[bytes], *, author: bytes, after: Link | None = None) -> Iterator[Entry]:
    """Yield each entry of ``envelopes`` once verified to extend ``author``'s chain after
    ``after`` (None: from seq 1). Raises ``ChainError`` at the first break."""
    prev = after
    for data in envelopes:
        prev = parse_next(prev, data, author=author)
        yield prev
