"""The registry of entry kinds: what each kind's body must look like.

Rules (docs/protocol.md, "Entry kinds"):

1. A kind is registered once, by name, with a validator of its body. Registering a name
   twice is an error, so an extension cannot silently replace a core rule.
2. An entry of a registered kind is valid only if its validator accepts the body.
3. An entry of a kind the registry does not know is *unknown*, not invalid: a node stores
   and forwards it, checking only what it can (signature, chain links), and reports it as
   unknown when asked.
4. Core kinds: ``genesis`` (first entry of every chain, at seq 1 only) and ``note`` (free
   text, for annotations and tests). The loan kinds (``loan.*``) are in contract.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .entry import Entry
from .errors import SchemaError
from .schema import check_fields, const, text

Validator = Callable[[Entry], None]
"""Raises ``SchemaError`` if the entry's body (or placement) is not valid for its kind."""

KNOWN = "known"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    validate: Validator


class KindRegistry:
    """Kinds by name. ``check`` says whether an entry is of a known kind, or raises."""

    def __init__(self, kinds: tuple[Kind, ...] = ()) -> None:
        self._kinds: dict[str, Kind] = {}
        for k in kinds:
            self.register(k)

    def register(self, kind: Kind) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"entry kind {kind.name!r} is already registered")
        self._kinds[kind.name] = kind

    def copy(self) -> "KindRegistry":
        return KindRegistry(tuple(self._kinds.values()))

    def get(self, name: str) -> Kind | None:
        return self._kinds.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._kinds

    def __iter__(self) -> Iterator[Kind]:
        return iter(sorted(self._kinds.values(), key=lambda k: k.name))

    def check(self, entry: Entry) -> str:
        """``KNOWN`` if the entry's kind is registered and its body valid, ``UNKNOWN`` if the
        kind is not registered; raises ``SchemaError`` if the body is invalid, and also if
        a chain does not open with ``genesis``."""
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
    """A new registry holding the core and loan kinds, ready for extensions to add theirs."""
    from .lending.contract import LOAN_KINDS  # contract.py builds on this module

    return KindRegistry(CORE_KINDS + LOAN_KINDS)
