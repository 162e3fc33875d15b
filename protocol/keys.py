"""Ed25519 keys and the libp2p peer ID form of a public key.

One key is a node's whole identity: it signs ledger entries and is the libp2p host key, so
its peer ID (``12D3KooW...``) names the user everywhere. Documents store the raw 32-byte
public key; people and the CLI see the peer ID. Conversion needs no libp2p:

    peer ID = base58btc( multihash(identity, protobuf PublicKey{Type: Ed25519, Data: key}) )
            = base58btc( 00 24 08 01 12 20 || key32 )
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from .errors import ProtocolError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
SEED_SIZE = 32

# identity multihash (code 0x00, length 36) of the protobuf PublicKey {1: KeyType.Ed25519=1, 2: key}
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


class KeyFormatError(ProtocolError):
    """A key or peer ID is not of the expected form."""

    code = "bad_key"


def b58encode(data: bytes) -> str:
    """Base58 (Bitcoin alphabet) of ``data``; leading zero bytes become leading ``1``s."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of ``b58encode``; raises ``KeyFormatError`` on a character outside the alphabet."""
    n = 0
    for c in text:
        i = _B58_INDEX.get(c)
        if i is None:
            raise KeyFormatError(f"{c!r} is not a base58 character")
        n = n * 58 + i
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def peer_id(public_key: bytes) -> str:
    """The libp2p peer ID string (``12D3KooW...``) of a raw Ed25519 public key."""
    if type(public_key) is not bytes or len(public_key) != PUBLIC_KEY_SIZE:
        raise KeyFormatError("an Ed25519 public key is 32 bytes")
    return b58encode(_PEER_ID_PREFIX + public_key)


def public_key_from_peer_id(text: str) -> bytes:
    """The raw Ed25519 public key named by a peer ID; raises ``KeyFormatError`` for anything else."""
    if not isinstance(text, str) or not 40 <= len(text) <= 60:
        raise KeyFormatError(f"{text!r} is not an Ed25519 peer ID (12D3KooW...)")
    raw = b58decode(text)
    if len(raw) != len(_PEER_ID_PREFIX) + PUBLIC_KEY_SIZE or not raw.startswith(_PEER_ID_PREFIX):
        raise KeyFormatError(f"{text!r} is not an Ed25519 peer ID (12D3KooW...)")
    key = raw[len(_PEER_ID_PREFIX):]
    if peer_id(key) != text:  # e.g. extra leading '1's
        raise KeyFormatError(f"{text!r} is not in canonical peer ID form")
    return key


class SigningKey:
    """A private Ed25519 key: signs, and knows its public key and peer ID."""

    __slots__ = ("_key", "public_key")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key: bytes = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> "SigningKey":
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> "SigningKey":
        """The key whose 32-byte RFC 8032 private seed is ``seed`` (same seed, same peer ID)."""
        if type(seed) is not bytes or len(seed) != SEED_SIZE:
            raise KeyFormatError("an Ed25519 seed is 32 bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def seed(self) -> bytes:
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def peer_id(self) -> str:
        return peer_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"SigningKey({self.peer_id})"


_P = 2**255 - 19  # the field prime of edwards25519

# The points of small order (1, 2, 4, 8) of edwards25519, as encodings with the sign bit
# of x cleared: the 5 canonical ones and the non-canonical y = p and y = p + 1 (libsodium's
# list). A key of small order is nobody's key: anyone can make a "signature" that RFC 8032
# verification accepts for it, and a small-order R lets a signer make signatures that some
# libraries accept and others refuse. ``verify`` refuses both, so that every conforming
# implementation accepts exactly the same signatures (docs/protocol.md, "Identities").
_SMALL_ORDER = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # y = 1, order 1
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (= 0)
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (= 1)
    )
)


def is_canonical_point(point: bytes) -> bool:
    """Whether the y coordinate of a 32-byte point encoding is below p (RFC 8032 5.1.3)."""
    return int.from_bytes(point, "little") & ((1 << 255) - 1) < _P


def has_small_order(point: bytes) -> bool:
    """Whether a 32-byte point encoding is one of the small-order points (any sign bit)."""
    return point[:31] + bytes([point[31] & 0x7F]) in _SMALL_ORDER


@lru_cache(maxsize=4096)
def _public(public_key: bytes) -> Ed25519PublicKey | None:
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        return None


VERIFIED_MEMO = 16_384  # verified (key, signature, message) triples remembered: about 2 MiB


class _Verified:
    """The digests of the last ``VERIFIED_MEMO`` triples that verified, oldest first.

    One document is opened many times on its way (checked when it arrives, again inside
    the document that embeds it, again when the entry carrying that one is gossiped,
    stored and read by the extensions), and each opening checked every signature anew:
    about 20 Ed25519 verifies per countersigned contract on each node. A triple that verified
    once verifies again, so its verdict is remembered. The key is SHA-256 of key,
    signature and message together: a different triple hits only through a SHA-256
    collision, and a hash of the message costs about 1% of a verify. Only successes are
    kept, in bounded memory, so what a stranger sends can evict entries but never make a
    bad signature pass. Thread-safe: the ledger verifies in worker threads too.

    An ``OrderedDict``, not a dict: forgetting the oldest of a full dict
    (``next(iter(d))``) walks past every slot deleted since the dict last resized, about
    13 us an add at this size, a tenth of a verify; ``popitem(last=False)`` is O(1)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def digest(public_key: bytes, signature: bytes, message: bytes) -> bytes:
        h = hashlib.sha256(public_key)
        h.update(signature)
        h.update(message)
        return h.digest()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._seen

    def add(self, digest: bytes) -> None:
        with self._lock:
            self._seen[digest] = None
            while len(self._seen) > self.size:  # (bounded: one add passes the size by one at most)
                self._seen.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


_verified = _Verified(VERIFIED_MEMO)


def verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``.

    RFC 8032 verification (S < L, R compared as bytes, no cofactor); the key must be a
    canonical encoding, and neither the key nor R may be a point of small order. A triple
    that verified among the last ``VERIFIED_MEMO`` is answered from memory (``_Verified``).
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    digest = _Verified.digest(public_key, signature, message)
    if digest in _verified:
        return True
    if not _verifies(public_key, signature, message):
        return False
    _verified.add(digest)
    return True


def verify_once(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """``verify`` without its memory, the same answer for every triple: for a process
    that checks each triple once (a signature worker, p2pnode/ledger/sigpool.py), where
    remembering would cost a hash of the message and an insert per check (~3% of it)
    and never answer one."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    return _verifies(public_key, signature, message)


_SMALL_ORDER_SIGNED = _SMALL_ORDER | frozenset(p[:31] + bytes([p[31] | 0x80]) for p in _SMALL_ORDER)
"""``_SMALL_ORDER`` with either sign bit: ``has_small_order(p)`` is ``p in`` this, for 32 bytes."""


def _verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """``verify``'s checks, without its memory; the key and signature are of their sizes."""
    if not is_canonical_point(public_key) or public_key in _SMALL_ORDER_SIGNED or signature[:32] in _SMALL_ORDER_SIGNED:
        return False
    key = _public(public_key)
    if key is None:
        return False
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
