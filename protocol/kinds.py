"""The registry of entry kinds: what each kind's body must look like, and who owns it.

Rules (docs/protocol.md, "Entry kinds"):

1. A kind is registered once, by name, with a validator of its body and the name of its
   owner (``core``, or the extension that declared it). Registering a name twice is an
   error, so an extension cannot silently replace a core rule or another's kind.
2. Whether a chain is valid never depends on kinds, except the core's ``genesis``
   (chain.py, rule 4): an entry is stored and forwarded on the core's rules alone. The
   registry *classifies* each entry for whoever reads it: ``known`` (a registered kind,
   and its validator accepts the body), ``invalid`` (a registered kind whose validator
   refuses the body: its owner treats the entry as invalid for its own purposes) or
   ``unknown`` (no registered kind). So a node with an extension and one without hold
   the same chains.
3. A node signs only what its registry accepts: its own appends are checked strictly
   (``check``), so it never writes an invalid body of a kind it knows.
4. A kind may have an *index*: a pure function from an entry with a valid body to keys
   (bytes; at most ``MAX_INDEX_KEYS`` of at most ``MAX_INDEX_KEY`` bytes each) that the
   store keeps in its owner's index space, in the entry's own write. A validator or
   index function that fails in any other way than refusing the body is its owner's bug:
   the entry is invalid (and not indexed) for it, and is stored all the same.
5. Core kinds: ``genesis`` (first entry of every chain, at seq 1 only) and ``note`` (free
   text, for annotations and tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from .entry import Entry
from .errors import ProtocolError, SchemaError
from .schema import check_fields, const, text

Validator = Callable[[Entry], None]
"""Raises ``SchemaError`` if the entry's body (or placement) is not valid for its kind."""

Indexer = Callable[[Entry], Iterable[bytes]]
"""Index keys of an entry whose body is valid (rule 4); pure, and at most a few per entry."""

MAX_INDEX_KEYS = 8  # index keys one entry may have (rule 4)
MAX_INDEX_KEY = 512  # bytes of one index key

KNOWN = "known"
UNKNOWN = "unknown"
INVALID = "invalid"
CORE = "core"
"""The owner name of the core's kinds."""


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    validate: Validator
    index: Indexer | None = None


class Verdict(NamedTuple):
    """How the registry classifies one entry (rule 2): ``status`` is ``KNOWN``,
    ``UNKNOWN`` or ``INVALID``; ``reason`` says why an entry is invalid."""

    status: str
    owner: str | None = None
    reason: str | None = None


class KindRegistry:
    """Kinds by name, each with its owner. ``classify`` says what an entry is for its
    readers; ``check`` refuses what this node must not sign."""

    def __init__(self, kinds: tuple[Kind, ...] = (), owner: str = CORE) -> None:
        self._kinds: dict[str, Kind] = {}
        self._owners: dict[str, str] = {}
        for k in kinds:
            self.register(k, owner)

    def register(self, kind: Kind, owner: str = CORE) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"entry kind {kind.name!r} is already registered (by {self._owners[kind.name]})")
        self._kinds[kind.name] = kind
        self._owners[kind.name] = owner

    def copy(self) -> "KindRegistry":
        new = KindRegistry()
        for name, kind in self._kinds.items():
            new.register(kind, self._owners[name])
        return new

    def get(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def owner(self, name: str) -> str | None:
        """Who registered the kind ``name`` (``CORE`` or an extension), or None."""
        return self._owners.get(name)

    def owners(self) -> set[str]:
        return set(self._owners.values())

    def indexed_owners(self) -> set[str]:
        """The owners of at least one kind with an index (rule 4)."""
        return {self._owners[n] for n, k in self._kinds.items() if k.index is not None}

    def __contains__(self, name: str) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[Kind]:
        return iter(sorted(self._kinds.values(), key=lambda k: k.name))

    def classify(self, entry: Entry) -> Verdict:
        """Rule 2: what ``entry`` is for its readers. Never raises for a body, nor for a
        validator that fails: a bug in a kind's owner must not stop a chain."""
        kind = self._kinds.get(entry.kind)
        if kind is None:
            return Verdict(UNKNOWN)
        try:
            kind.validate(entry)
        except ProtocolError as e:
            return Verdict(INVALID, self._owners[entry.kind], e.message)
        except Exception as e:  # the owner's bug: its entry is invalid for it, and nothing else changes
            return Verdict(INVALID, self._owners[entry.kind], f"its validator failed: {type(e).__name__}: {e}")
        return Verdict(KNOWN, self._owners[entry.kind])

    def index_keys(self, entry: Entry) -> tuple[str, list[bytes]] | None:
        """``(owner, keys)`` that rule 4 indexes ``entry`` under, or None (no index, or an
        invalid body)."""
        kind = self._kinds.get(entry.kind)
        if kind is None or kind.index is None:
            return None
        try:
            kind.validate(entry)
            keys = list(kind.index(entry))
            if len(keys) > MAX_INDEX_KEYS or not all(type(k) is bytes and 0 < len(k) <= MAX_INDEX_KEY for k in keys):
                return None  # the owner's bug: nothing is indexed for this entry
        except Exception:  # a body its kind refuses, or the owner's bug: not indexed
            return None
        return (self._owners[entry.kind], keys) if keys else None

    def check(self, entry: Entry) -> str:
        """Rule 3, for an entry this node is about to sign: ``KNOWN`` if the entry's kind
        is registered and its body valid, ``UNKNOWN`` if the kind is not registered;
        raises ``SchemaError`` if the body is invalid, and also if a chain does not open
        with ``genesis``."""
        if entry.seq == 1 and entry.kind != "genesis":
            raise SchemaError("a chain must open with a genesis entry at seq 1")
        kind = self._kinds.get(entry.kind)
        if kind is None:
            return UNKNOWN
        kind.validate(entry)
        return KNOWN


GENESIS_PROTOCOL = "p2plend/1"
MAX_NAME_LEN = 64
MAX_NOTE_LEN = 4096


def _genesis(entry: Entry) -> None:
    if entry.seq != 1:
        raise SchemaError("a genesis entry may stand only at seq 1")
    check_fields(
        entry.body,
        {"protocol": const(GENESIS_PROTOCOL)},
        {"name": text(MAX_NAME_LEN)},
        what="genesis body",
    )


def _note(entry: Entry) -> None:
    check_fields(entry.body, {"text": text(MAX_NOTE_LEN)}, what="note body")


def genesis_body(name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"protocol": GENESIS_PROTOCOL}
    if name:
        body["name"] = name
    return body


CORE_KINDS = (
    Kind("genesis", "opens a chain: protocol version and an optional display name", _genesis),
    Kind("note", "free text (at most 4096 characters) for annotations and tests", _note),
)


def core_registry() -> KindRegistry:
    """A new registry holding the core's kinds, ready for extensions to add theirs."""
    return KindRegistry(CORE_KINDS)


def check_opening(entry: Entry) -> None:
    """The one kind rule of chains (chain.py, rule 4): seq 1 is a ``genesis`` entry with a
    valid genesis body, and no other seq is. Raises ``SchemaError``."""
    if (entry.seq == 1) != (entry.kind == "genesis"):
        raise SchemaError("a chain must open with a genesis entry at seq 1" if entry.seq == 1
                          else "a genesis entry may stand only at seq 1")
    if entry.seq == 1:
        _genesis(entry)
