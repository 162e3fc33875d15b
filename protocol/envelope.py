"""Signed envelopes: how every document travels and is stored.

Rules (docs/protocol.md, "Envelopes"):

1. An envelope is the canonical MessagePack array ``[payload, signatures]``.
2. ``payload`` (bin) is the canonical encoding of a document: a map with a text ``type``.
3. ``signatures`` is a non-empty array of ``[public_key (bin 32), signature (bin 64)]``,
   sorted by public key bytes, one per key.
4. Each signature is Ed25519 over ``SIGNING_PREFIX + payload``; all must verify.
5. The id of a document is SHA-256(payload): signatures never change it, so a document
   countersigned later keeps its id.

Verdicts: the Ed25519 checks of rule 4 are most of what opening an envelope costs, and
each depends on the envelope's own bytes alone, so a node may make them elsewhere (its
worker processes, p2pnode/ledger/sigpool.py) and hand the result in. ``verdict(data)``
is, for the bytes ``data``, whether each signature verifies, in the envelope's order;
``open_envelope(data, verdict=verdict(data))`` then does exactly what
``open_envelope(data)`` does (same value, same error at the same step), only without
calling ``verify`` itself. A verdict that cannot be these bytes' (another count of
signatures) is ignored and the signatures are checked here.

Opened envelopes are kept (``_Opened``): ``open_envelope`` of bytes it opened lately
returns the same ``Envelope`` again. Its document is shared, so it is read-only: a
caller that needs a changed document builds a new one (``dict(doc)``), never writes
into an opened one. ``CHECK_KEPT`` (tests set it) asserts that on every reuse.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any, Iterable, Sequence

from . import codec
from .errors import DecodeError, SchemaError, SignatureError
from .keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, SigningKey, verify, verify_once

SIGNING_PREFIX = b"p2plend/1\x00"
MAX_ENVELOPE_SIZE = 128 * 1024
"""No envelope, of any document type, may be larger than this many bytes."""

MAX_SIGNATURES = 8

Verdict = tuple[bool, ...]
"""Whether each signature of one envelope verifies over its payload, in the envelope's order."""


def document_id(payload: bytes) -> bytes:
    """The 32-byte id of the document whose canonical bytes are ``payload``."""
    return hashlib.sha256(payload).digest()


class Envelope:
    """A document with its verified signatures. Build with ``seal``; read with ``open_envelope``."""

    __slots__ = ("payload", "signatures", "document", "id", "raw")

    def __init__(self, payload: bytes, signatures: tuple[tuple[bytes, bytes], ...], document: dict, raw: bytes):
        self.payload = payload
        self.signatures = signatures
        self.document = document
        self.id = document_id(payload)
        self.raw = raw

    @property
    def type(self) -> str:
        return self.document["type"]

    @property
    def signers(self) -> tuple[bytes, ...]:
        return tuple(pk for pk, _ in self.signatures)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Envelope) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"Envelope({self.type}, id={self.id.hex()[:16]}, signers={len(self.signatures)})"


def _raw(payload: bytes, signatures: Iterable[tuple[bytes, bytes]]) -> bytes:
    return codec.encode([payload, [[pk, sig] for pk, sig in signatures]])


def seal(document: dict, *keys: SigningKey) -> Envelope:
    """Encode ``document`` canonically and sign it with each key. The envelope is kept as
    opened (``_Opened``; every signature on it was made here): its document is read-only."""
    if type(document) is not dict or type(document.get("type")) is not str:
        raise SchemaError("a document is a map with a text 'type'")
    payload, canonical_document = codec.encode_value(document)
    message = SIGNING_PREFIX + payload
    sigs = {k.public_key: k.sign(message) for k in keys}
    env = _assemble(payload, sigs, canonical_document)
    _opened.add(env, True)
    return env


def countersign(envelope: Envelope, key: SigningKey) -> Envelope:
    """``envelope`` with ``key``'s signature added (or unchanged if it already signed)."""
    sigs = dict(envelope.signatures)
    if key.public_key not in sigs:
        sigs[key.public_key] = key.sign(SIGNING_PREFIX + envelope.payload)
    return _assemble(envelope.payload, sigs, envelope.document)


def _assemble(payload: bytes, sigs: dict[bytes, bytes], document: dict) -> Envelope:
    if not 1 <= len(sigs) <= MAX_SIGNATURES:
        raise SignatureError(f"an envelope carries 1 to {MAX_SIGNATURES} signatures, not {len(sigs)}")
    ordered = tuple(sorted(sigs.items()))
    raw = _raw(payload, ordered)
    if len(raw) > MAX_ENVELOPE_SIZE:
        raise SchemaError(f"envelope of {len(raw)} bytes exceeds {MAX_ENVELOPE_SIZE}", code="oversize")
    return Envelope(payload, ordered, document, raw)


OPENED_KEPT = 4096
"""Envelopes ``open_envelope`` keeps, the latest opened (``_Opened``) ..."""
OPENED_KEPT_BYTES = 8 << 20
"""... holding at most this many bytes of envelopes together."""
CHECK_KEPT = False
"""Whether every reuse of a kept envelope first checks that its document is still what its
payload decodes to (nobody wrote into it): tests set it; a node does not pay for it."""


class _Opened:
    """The last envelopes opened, by their bytes, oldest first; each with whether its
    signatures were checked (``verify_signatures=False`` opens keep theirs apart).

    One document is opened many times on its way: it arrives in a request, is
    countersigned, embedded in both parties' entries, gossiped, stored, and read back by
    every extension that derives something from it. A node opened each envelope about
    seven times while countersigning (measured: 4,360 opens of 599 distinct envelopes),
    decoding it twice and checking its fields each time. An envelope is a function of its
    bytes, so the one made first serves every later open of the same bytes. Only
    successes are kept, bounded in count (``OPENED_KEPT``) and bytes
    (``OPENED_KEPT_BYTES``): what a stranger sends can evict entries, never make bad bytes
    open. Thread-safe: the ledger opens envelopes in worker threads too (a read is one
    dict lookup; a change holds the lock)."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self._kept: OrderedDict[bytes, tuple[Envelope, bool]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, data: bytes, verified: bool) -> Envelope | None:
        """The envelope kept for ``data``, if one is and (for ``verified``) its signatures were checked."""
        hit = self._kept.get(data)
        if hit is None or (verified and not hit[1]):
            return None
        if CHECK_KEPT:
            assert codec.decode(hit[0].payload) == hit[0].document, "an opened document was written into"
        return hit[0]

    def add(self, envelope: Envelope, verified: bool) -> None:
        data = envelope.raw
        if type(data) is not bytes or len(data) > self.max_bytes:  # (a view is no key)
            return
        with self._lock:
            old = self._kept.pop(data, None)
            if old is not None:
                self._bytes -= len(data)
            self._kept[data] = (envelope, verified)
            self._bytes += len(data)
            while len(self._kept) > self.size or self._bytes > self.max_bytes:  # (bounded: oldest first)
                gone, _ = self._kept.popitem(last=False)
                self._bytes -= len(gone)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
            self._bytes = 0


_opened = _Opened(OPENED_KEPT, OPENED_KEPT_BYTES)


def open_envelope(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE, verify_signatures: bool = True,
                  verdict: Verdict | None = None) -> Envelope:
    """The envelope whose canonical bytes are ``data``, with every signature verified.

    Raises ``DecodeError`` for bytes that are not a canonical envelope, ``SchemaError`` for a
    payload that is not a document, ``SignatureError`` if any signature fails.
    ``verify_signatures=False`` keeps every check but the Ed25519 ones: only for bytes a
    node verified when it stored them and reads back from its own store. ``verdict``:
    ``verdict(data)`` made beforehand (elsewhere), taken instead of calling ``verify``.
    Bytes opened lately give the envelope they gave then (``_Opened``): the same value,
    and its document is read-only. With a ``verdict`` (a batch on its way into the store,
    checked by the signature workers), one that says every signature verifies may take an
    envelope kept verified (the same answer), any other decides afresh; and nothing is
    added: most such bytes are opened once (keeping each would cost a sync about 4 us an
    entry, measured, a tenth of its main process's work).
    """
    kept = None
    if type(data) is bytes and len(data) <= max_size and (verdict is None or all(verdict)):
        kept = _opened.get(data, verify_signatures or verdict is not None)
    if kept is not None:
        return kept
    env = _open(data, max_size, verify_signatures, verdict)
    if verdict is None:
        _opened.add(env, verify_signatures)
    return env


def _open(data: bytes, max_size: int, verify_signatures: bool, verdict: Verdict | None) -> Envelope:
    """``open_envelope`` done afresh."""
    outer = codec.decode(data, max_size=max_size)
    if type(outer) is not list or len(outer) != 2:
        raise DecodeError("an envelope is an array [payload, signatures]", code="bad_envelope")
    payload, sigs = outer
    if type(payload) is not bytes or type(sigs) is not list:
        raise DecodeError("an envelope is an array [bin payload, array signatures]", code="bad_envelope")
    n = len(sigs)
    if not 1 <= n <= MAX_SIGNATURES:
        raise SignatureError(f"an envelope carries 1 to {MAX_SIGNATURES} signatures, not {n}")
    prev = b""
    for pair in sigs:
        if not _is_pair(pair):
            raise DecodeError("a signature is [bin 32 public key, bin 64 signature]", code="bad_envelope")
        if pair[0] <= prev:
            raise DecodeError("signatures are not sorted by public key, or repeat one", code="non_canonical")
        prev = pair[0]
    document = codec.decode(payload, max_size=max_size)
    if type(document) is not dict or type(document.get("type")) is not str:
        raise SchemaError("the payload is not a map with a text 'type'")
    if verify_signatures:
        if verdict is not None and len(verdict) != n:
            verdict = None  # (not these bytes' verdict: check here)
        if verdict is None:
            message = SIGNING_PREFIX + payload  # (made only when it is verified here: a copy of the payload)
            for pk, sig in sigs:
                if not verify(pk, sig, message):
                    raise SignatureError(f"signature by {pk.hex()[:16]}... does not verify")
        elif not all(verdict):
            pk = next(pair[0] for pair, ok in zip(sigs, verdict) if not ok)  # (the first that fails, as above)
            raise SignatureError(f"signature by {pk.hex()[:16]}... does not verify")
    return Envelope(payload, tuple(map(tuple, sigs)), document, data)  # (each pair a list of two: a tuple of two)


def _is_pair(pair: Any) -> bool:
    """Whether ``pair`` has the shape of a signature: [bin 32 public key, bin 64 signature]."""
    return (
        type(pair) is list
        and len(pair) == 2
        and type(pair[0]) is bytes
        and type(pair[1]) is bytes
        and len(pair[0]) == PUBLIC_KEY_SIZE
        and len(pair[1]) == SIGNATURE_SIZE
    )


def verdict(data: bytes, *, max_size: int = MAX_ENVELOPE_SIZE) -> Verdict | None:
    """Whether each signature of the envelope ``data`` verifies over its payload (rule 4),
    in its order; None if ``data`` is not read as an envelope far enough to say (then
    ``open_envelope`` refuses it before it would check a signature). Depends on ``data``
    alone: what a worker process computes for ``open_envelope(data, verdict=...)``."""
    try:
        outer = codec.decode(data, max_size=max_size)  # (the very decoding open_envelope starts with)
    except DecodeError:
        return None
    if type(outer) is not list or len(outer) != 2:
        return None
    payload, sigs = outer
    if type(payload) is not bytes or type(sigs) is not list or not 1 <= len(sigs) <= MAX_SIGNATURES:
        return None
    if not all(_is_pair(pair) for pair in sigs):
        return None
    message = SIGNING_PREFIX + payload
    return tuple(verify_once(pk, sig, message) for pk, sig in sigs)  # (verify's answer; see verify_once)


def verdicts(batch: Sequence[bytes]) -> list[Verdict | None]:
    """``verdict`` of each envelope of ``batch``, in order (what one worker task computes)."""
    return [verdict(data) for data in batch]


def require_signers(envelope: Envelope, *required: bytes) -> None:
    """Raise ``SignatureError`` unless exactly the keys ``required`` signed ``envelope``."""
    if set(envelope.signers) != set(required) or len(envelope.signers) != len(set(required)):
        raise SignatureError("the envelope is not signed by exactly the required keys")


def peek_document(data: bytes) -> Any:
    """The document inside an envelope without checking signatures (for error reports only)."""
    outer = codec.decode(data, max_size=MAX_ENVELOPE_SIZE)
    if type(outer) is not list or len(outer) != 2 or type(outer[0]) is not bytes:
        raise DecodeError("not an envelope", code="bad_envelope")
    return codec.decode(outer[0], max_size=MAX_ENVELOPE_SIZE)
