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

from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple, Union

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


class Extension(NamedTuple):
    """What ``extend`` makes of entries given for one author's chain."""

    added: list[Entry]  # the entries that extend the chain, in seq order
    duplicates: int  # entries the chain holds already
    forks: list[Any]  # ForkProofs: a given entry at a held seq with another id than the held one's
    error: ChainError | None  # the first break; nothing after it is added
    head: Head | None  # the chain's head once ``added`` is appended


def extend(head: Head | None, entries: Mapping[int, Entry], *, holds: Callable[[bytes], bool],
           held_at: Callable[[int], Entry | None]) -> Extension:
    """Rules 1 to 5 applied to ``entries`` (of one author, by seq) given after ``head``:
    those at or below the head are duplicates (``holds(id)``) or, if the entry held at
    that seq (``held_at(seq)``) differs, forks; those above extend the chain one by one
    until the first that does not link. The one rule of how a store takes in a peer's
    entries, shared by the node's store and the simulator's."""
    from .fork import ForkProof

    top = head.seq if head else 0
    added: list[Entry] = []
    duplicates, forks, error = 0, [], None
    last: Link | None = head  # (the entry just added links the next: an Entry is a Link, no Head made per entry)
    for seq in sorted(entries):
        e = entries[seq]
        if seq <= top:
            if holds(e.id):
                duplicates += 1
            else:
                held = held_at(seq)
                if held is not None:
                    forks.append(ForkProof.of(held, e))
            continue
        try:
            check_entry(last, e)
        except ChainError as err:
            error = err
            break  # nothing after a break in the chain can link
        added.append(e)
        last = e
    return Extension(added, duplicates, forks, error, Head.of(added[-1]) if added else head)


class Grouped(NamedTuple):
    """What ``group_by_author`` makes of a batch of envelopes."""

    by_author: dict[bytes, dict[int, Entry]]  # author -> seq -> entry
    errors: list[ChainError]  # envelopes that do not parse, or (with ``author``) of another author
    forks: list[Any]  # ForkProofs: two different entries of one author at one seq in the batch


def group_by_author(envelopes: Iterable[bytes], *, author: bytes | None = None,
                    parse: Callable[[bytes], Entry] = parse_entry) -> Grouped:
    """A batch of envelopes (of any authors, in any order) parsed and grouped for
    ``extend``: one entry per (author, seq); a second, different one at the same seq is a
    fork (rule 5). With ``author``, entries of any other author are refused
    (``wrong_author``): what a peer sends in answer to a request for one chain."""
    from .fork import ForkProof

    by_author: dict[bytes, dict[int, Entry]] = {}
    errors: list[ChainError] = []
    forks: list[Any] = []
    for data in envelopes:
        try:
            e = parse(data)
        except ProtocolError as err:
            errors.append(ChainError(err.message, author=b"", seq=0, code=err.code))
            continue
        if author is not None and e.author != author:
            errors.append(ChainError("entry of another author", author=author, seq=e.seq, code="wrong_author"))
            continue
        same_seq = by_author.setdefault(e.author, {})
        other = same_seq.get(e.seq)
        if other is None:
            same_seq[e.seq] = e
        elif other.id != e.id:
            forks.append(ForkProof.of(other, e))
    return Grouped(by_author, errors, forks)
