"""Chain entries: one signed step of one author's ledger.

Rules (docs/protocol.md, "Entries"):

1. An entry is a document ``{type: "entry", author, seq, prev, ts, kind, body}`` in an
   envelope signed by exactly one key, ``author`` (bin 32).
2. ``seq`` is an integer in [1, 2**63-1]; ``prev`` (bin 32) is the id of the entry at
   ``seq - 1``, or 32 zero bytes at seq 1.
3. ``ts`` is milliseconds since the Unix epoch, in [0, 2**63-1]; it never decreases along a
   chain (chain.py checks that, since it needs the previous entry).
4. ``kind`` is text naming the body's schema (kinds.py); ``body`` is any canonical value.
   Whether the body suits its kind is checked by the kind registry, not here, so that an
   entry of a kind this code does not know is still readable and verifiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .envelope import MAX_ENVELOPE_SIZE, Envelope, Verdict, open_envelope, seal
from .errors import SchemaError, SignatureError
from .keys import SigningKey
from .schema import U63_MAX, anything, binary, check_fields, const, text, uint

ZERO_ID = bytes(32)
"""The ``prev`` of every chain's first entry."""

KIND_PATTERN = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_-]*)*"
MAX_KIND_LEN = 64

ENTRY_FIELDS = {
    "type": const("entry"),
    "author": binary(32),
    "seq": uint(1, U63_MAX),
    "prev": binary(32),
    "ts": uint(0, U63_MAX),
    "kind": text(MAX_KIND_LEN, KIND_PATTERN),
    "body": anything,
}


@dataclass(frozen=True, slots=True)
class Entry:
    """A verified entry: its fields, its id and its exact envelope bytes."""

    author: bytes
    seq: int
    prev: bytes
    ts: int
    kind: str
    body: Any
    id: bytes
    envelope: bytes

    @classmethod
    def from_envelope(cls, env: Envelope) -> "Entry":
        """The entry in an opened envelope; raises unless it obeys rules 1 and 2."""
        doc = env.document
        check_fields(doc, ENTRY_FIELDS, what="entry")
        sigs = env.signatures
        if len(sigs) != 1 or sigs[0][0] != doc["author"]:  # (env.signers != (author,), without making the tuple)
            raise SignatureError("an entry must be signed by its author alone")
        if doc["seq"] == 1 and doc["prev"] != ZERO_ID:
            raise SchemaError("the entry at seq 1 must have prev = 32 zero bytes")
        return cls(doc["author"], doc["seq"], doc["prev"], doc["ts"], doc["kind"], doc["body"], env.id, env.raw)

    def document(self) -> dict:
        return {
            "type": "entry",
            "author": self.author,
            "seq": self.seq,
            "prev": self.prev,
            "ts": self.ts,
            "kind": self.kind,
            "body": self.body,
        }


def parse_entry(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE, verdict: Verdict | None = None) -> Entry:
    """The entry whose envelope bytes are ``data``, signature and fields verified;
    ``verdict``: ``envelope.verdict(data)``, made beforehand, in place of the Ed25519
    checks (the same entry or the same error either way)."""
    return Entry.from_envelope(open_envelope(data, max_size=max_size, verdict=verdict))


def make_entry(key: SigningKey, *, seq: int, prev: bytes, ts: int, kind: str, body: Any) -> Entry:
    """A new entry signed by ``key``; raises if any field breaks the rules above."""
    doc = {"type": "entry", "author": key.public_key, "seq": seq, "prev": prev, "ts": ts, "kind": kind, "body": body}
    env = seal(doc, key)
    return Entry.from_envelope(env)


def next_entry(key: SigningKey, head: Any, *, now_ms: int, kind: str, body: Any) -> Entry:
    """The entry that extends ``key``'s chain after ``head`` (an Entry or chain.Head with
    author, seq, id and ts; ``None`` for an empty chain).

    Its ``ts`` is ``now_ms``, or the head's ts if the clock went backwards, so that the
    chain's timestamps never decrease.
    """
    if head is None:
        return make_entry(key, seq=1, prev=ZERO_ID, ts=now_ms, kind=kind, body=body)
    if head.author != key.public_key:
        raise SchemaError("the head belongs to another author")
    return make_entry(key, seq=head.seq + 1, prev=head.id, ts=max(now_ms, head.ts), kind=kind, body=body)
