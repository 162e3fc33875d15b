"""Fork proofs: two signed entries of one author at one seq.

Rules (docs/protocol.md, "Fork proofs"):

1. A fork proof is the canonical array ``[envelope_a, envelope_b]`` of two entry envelopes
   (bin) with the same author and seq and different ids, ordered by id (a's id < b's id).
2. It is valid when both envelopes are valid entries signed by that author. Checking it
   needs nothing else: no chain, no store, O(1) work.
3. A valid proof shows that the author signed two histories; every node that sees one
   marks the author as forked.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec
from .entry import Entry, parse_entry
from .envelope import MAX_ENVELOPE_SIZE
from .errors import DecodeError, ProtocolError

MAX_FORK_PROOF_SIZE = 2 * MAX_ENVELOPE_SIZE + 16


class ForkProofError(ProtocolError):
    code = "bad_fork_proof"


@dataclass(frozen=True, slots=True)
class ForkProof:
    a: Entry
    b: Entry

    @property
    def author(self) -> bytes:
        return self.a.author

    @property
    def seq(self) -> int:
        return self.a.seq

    @classmethod
    def of(cls, x: Entry, y: Entry) -> "ForkProof":
        """The proof made of two verified entries; raises unless they really fork."""
        if x.author != y.author or x.seq != y.seq:
            raise ForkProofError("a fork needs two entries of one author at one seq")
        if x.id == y.id:
            raise ForkProofError("the two entries are the same entry")
        return cls(x, y) if x.id < y.id else cls(y, x)

    def encode(self) -> bytes:
        return codec.encode([self.a.envelope, self.b.envelope])

    @classmethod
    def decode(cls, data: bytes) -> "ForkProof":
        """The proof whose bytes are ``data``, fully verified; raises ``ProtocolError``."""
        value = codec.decode(data, max_size=MAX_FORK_PROOF_SIZE)
        if type(value) is not list or len(value) != 2 or not all(type(v) is bytes for v in value):
            raise DecodeError("a fork proof is an array of two envelopes", code="bad_fork_proof")
        a, b = parse_entry(value[0]), parse_entry(value[1])
        proof = cls.of(a, b)
        if proof.a is not a:
            raise DecodeError("fork proof entries are not ordered by id", code="non_canonical")
        return proof
