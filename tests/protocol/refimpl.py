"""Independent oracles for the protocol tests, written from docs/protocol.md alone.

- ``ref_encode``: canonical MessagePack written byte by byte from the format table, with no
  msgpack library, so that ``protocol.codec`` is checked against the document and not
  against itself.
- ``loose_encode``: the same values in any *valid but non-canonical* MessagePack form (a
  longer integer or length header), to build inputs that a canonical decoder must refuse.
- A little edwards25519 arithmetic (RFC 8032 section 5.1), enough to build the small-order
  forgeries that ``protocol.keys.verify`` must refuse. Slow and not constant time: tests only.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Callable

# ---------------------------------------------------------------- MessagePack


def _int_forms(n: int) -> list[bytes]:
    """Every MessagePack encoding of the integer ``n``, shortest (canonical) first."""
    forms: list[bytes] = []
    if 0 <= n <= 0x7F:
        forms.append(bytes([n]))
    if -32 <= n < 0:
        forms.append(struct.pack(">b", n))
    if 0 <= n <= 0xFF:
        forms.append(b"\xcc" + struct.pack(">B", n))
    if 0 <= n <= 0xFFFF:
        forms.append(b"\xcd" + struct.pack(">H", n))
    if 0 <= n <= 0xFFFFFFFF:
        forms.append(b"\xce" + struct.pack(">I", n))
    if 0 <= n <= 0xFFFFFFFFFFFFFFFF:
        forms.append(b"\xcf" + struct.pack(">Q", n))
    if -0x80 <= n <= 0x7F:
        forms.append(b"\xd0" + struct.pack(">b", n))
    if -0x8000 <= n <= 0x7FFF:
        forms.append(b"\xd1" + struct.pack(">h", n))
    if -0x80000000 <= n <= 0x7FFFFFFF:
        forms.append(b"\xd2" + struct.pack(">i", n))
    if -0x8000000000000000 <= n <= 0x7FFFFFFFFFFFFFFF:
        forms.append(b"\xd3" + struct.pack(">q", n))
    if not forms:
        raise ValueError(f"{n} has no MessagePack form")
    # canonical: the shortest; among equal lengths the unsigned family (the spec's rule)
    if n >= 0:
        canonical = [f for f in forms if f[0] <= 0x7F or f[0] in (0xCC, 0xCD, 0xCE, 0xCF)][0]
    else:
        canonical = min(forms, key=len)
    return [canonical] + [f for f in forms if f != canonical]


def _len_forms(n: int, fix: int | None, fix_max: int, codes: tuple[int, int, int]) -> list[bytes]:
    forms = []
    if fix is not None and n <= fix_max:
        forms.append(bytes([fix | n]))
    c8, c16, c32 = codes
    if c8 and n <= 0xFF:
        forms.append(bytes([c8, n]))
    if n <= 0xFFFF:
        forms.append(bytes([c16]) + struct.pack(">H", n))
    forms.append(bytes([c32]) + struct.pack(">I", n))
    return forms


def _headers(kind: str, n: int) -> list[bytes]:
    if kind == "str":
        return _len_forms(n, 0xA0, 31, (0xD9, 0xDA, 0xDB))
    if kind == "bin":
        return _len_forms(n, None, -1, (0xC4, 0xC5, 0xC6))
    if kind == "array":
        return _len_forms(n, 0x90, 15, (0, 0xDC, 0xDD))
    if kind == "map":
        return _len_forms(n, 0x80, 15, (0, 0xDE, 0xDF))
    raise AssertionError(kind)


Choose = Callable[[int], int]
"""Given how many forms there are, the index of the one to use (0 = canonical)."""


def loose_encode(value: Any, choose: Choose, *, sort_keys: bool = True) -> bytes:
    """``value`` as MessagePack, taking for each integer and header the form ``choose`` picks."""
    if value is None:
        return b"\xc0"
    if value is False:
        return b"\xc2"
    if value is True:
        return b"\xc3"
    if type(value) is int:
        forms = _int_forms(value)
        return forms[choose(len(forms))]
    if type(value) is str:
        raw = value.encode("utf-8")
        forms = _headers("str", len(raw))
        return forms[choose(len(forms))] + raw
    if type(value) is bytes:
        forms = _headers("bin", len(value))
        return forms[choose(len(forms))] + value
    if type(value) is list:
        forms = _headers("array", len(value))
        return forms[choose(len(forms))] + b"".join(loose_encode(v, choose, sort_keys=sort_keys) for v in value)
    if type(value) is dict:
        forms = _headers("map", len(value))
        keys = sorted(value, key=lambda k: k.encode("utf-8")) if sort_keys else list(value)
        body = b"".join(
            loose_encode(k, choose, sort_keys=sort_keys) + loose_encode(value[k], choose, sort_keys=sort_keys)
            for k in keys
        )
        return forms[choose(len(forms))] + body
    raise TypeError(type(value).__name__)


def ref_encode(value: Any) -> bytes:
    """The canonical encoding, per the document: shortest forms, keys sorted by UTF-8 bytes."""
    return loose_encode(value, lambda n: 0)


# ---------------------------------------------------------------- edwards25519

P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P
L = 2**252 + 27742317777372353535851937790883648493
_SQRT_M1 = pow(2, (P - 1) // 4, P)

Point = tuple[int, int]  # affine (x, y)
IDENTITY: Point = (0, 1)


def _recover_x(y: int, sign: int) -> int | None:
    xx = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * _SQRT_M1 % P
    if (x * x - xx) % P:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return x


def point_decode(data: bytes) -> Point | None:
    """The point a 32-byte encoding names (y reduced mod p), or None if there is none."""
    n = int.from_bytes(data, "little")
    y, sign = (n & ((1 << 255) - 1)) % P, n >> 255
    x = _recover_x(y, sign)
    return None if x is None else (x, y)


def point_encode(pt: Point) -> bytes:
    x, y = pt
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def point_add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def point_neg(a: Point) -> Point:
    return ((-a[0]) % P, a[1])


def point_mul(k: int, a: Point) -> Point:
    r = IDENTITY
    while k:
        if k & 1:
            r = point_add(r, a)
        a = point_add(a, a)
        k >>= 1
    return r


BASE: Point = (_recover_x(4 * pow(5, -1, P) % P, 0), 4 * pow(5, -1, P) % P)  # type: ignore[assignment]


def small_order_points() -> list[Point]:
    """The 8 points of order dividing 8, computed (not copied from a list)."""
    pts = {IDENTITY}
    for y in range(2, 1000):
        x = _recover_x(y, 0)
        if x is None:
            continue
        t = point_mul(L, (x, y))  # kills the prime-order part, keeps the torsion part
        q = t
        for _ in range(8):
            pts.add(q)
            q = point_add(q, t)
        if len(pts) == 8:
            break
    assert len(pts) == 8
    return sorted(pts)


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def secret_scalar(seed: bytes) -> int:
    """RFC 8032: the clamped scalar ``a`` of a 32-byte seed."""
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def sign(seed: bytes, message: bytes) -> bytes:
    """Plain RFC 8032 Ed25519 signing (to check this arithmetic against the real library)."""
    a = secret_scalar(seed)
    prefix = hashlib.sha512(seed).digest()[32:]
    pub = point_encode(point_mul(a, BASE))
    r = _h(prefix, message) % L
    R = point_encode(point_mul(r, BASE))
    k = _h(R, pub, message) % L
    return R + ((r + k * a) % L).to_bytes(32, "little")


def sign_with_small_r(seed: bytes, message: bytes) -> bytes:
    """A signature by the real key whose R is the identity point (r = 0): RFC 8032's
    cofactorless equation accepts it, libsodium refuses it."""
    a = secret_scalar(seed)
    pub = point_encode(point_mul(a, BASE))
    R = point_encode(IDENTITY)
    k = _h(R, pub, message) % L
    return R + (k * a % L).to_bytes(32, "little")


def forge_for_small_order_key(public_key: bytes, message: bytes) -> bytes | None:
    """A signature with S = 0 that RFC 8032's equation [S]B = R + [k]A accepts for a
    small-order key A, found by trying each small-order R; None if no R works for this
    message (try another message)."""
    a = point_decode(public_key)
    if a is None:
        return None
    for r in small_order_points():
        R = point_encode(r)
        k = _h(R, public_key, message) % L
        if point_add(r, point_mul(k, a)) == IDENTITY:
            return R + bytes(32)
    return None
