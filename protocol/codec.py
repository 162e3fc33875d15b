"""Canonical MessagePack: the only byte form of anything that is signed.

Rules (docs/protocol.md, "Canonical encoding", states them byte by byte):

1. Allowed types: nil, bool, integer, text (str), binary (bin), array, map. No floats, no
   ext types (timestamps included).
2. Integers use their shortest MessagePack form and lie in [-2**63, 2**64 - 1].
3. Text is valid UTF-8 in a str family header; bytes are in a bin family header; every
   length header is the shortest that fits.
4. Map keys are text, unique, and sorted by their UTF-8 bytes (which is code point order).
5. Containers nest at most ``MAX_DEPTH`` deep; input larger than the caller's limit is
   rejected before it is parsed; nothing may follow the value.

``encode`` produces the canonical form of a value or raises ``EncodeError``. ``decode``
accepts exactly the canonical forms: it parses, checks types and key order, re-encodes and
compares, so that any other encoding of the same value (a longer integer, an unsorted map, a
duplicate key, str8 where fixstr fits) is rejected. There is one byte string per value,
hence one document id per document.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .errors import DecodeError, EncodeError

MAX_DEPTH = 32
"""Containers (arrays and maps) nest at most this deep, the outermost counting as 1."""

DEFAULT_MAX_SIZE = 1 << 20
"""Default input limit of ``decode`` in bytes; callers pass tighter ones."""

INT_MIN = -(1 << 63)
INT_MAX = (1 << 64) - 1

_packb = msgpack.Packer(use_bin_type=True, strict_types=True, autoreset=True).pack


def _reject_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"extension type {code} is not allowed", code="bad_type")


def _canonical(value: Any, depth: int) -> Any:
    """A copy of ``value`` in the shape ``_packb`` turns into canonical bytes."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if not INT_MIN <= value <= INT_MAX:
            raise EncodeError(f"integer {value} is outside [-2**63, 2**64-1]")
        return value
    if t is bytes:
        return value
    if t is bytearray or t is memoryview:
        return bytes(value)
    if t is float:
        raise EncodeError(
            f"float {value!r} is not allowed: use integers (minor units, basis points, ms)"
        )
    if isinstance(value, int) and not isinstance(value, bool):  # IntEnum and friends
        return _canonical(int(value), depth)
    if t is not dict and t is not list and t is not tuple:
        raise EncodeError(f"type {t.__name__} is not allowed")
    if depth >= MAX_DEPTH:
        raise EncodeError(f"nesting deeper than {MAX_DEPTH} levels")
    if t is dict:
        for k in value:
            if type(k) is not str:
                raise EncodeError(f"map key {k!r} is not text")
        return {k: _canonical(value[k], depth + 1) for k in sorted(value)}
    return [_canonical(v, depth + 1) for v in value]


def encode(value: Any) -> bytes:
    """The canonical MessagePack bytes of ``value``.

    Accepts None, bool, int, str, bytes (and bytearray), list or tuple, and dict with str
    keys, nested at most ``MAX_DEPTH`` deep. Raises ``EncodeError`` naming what is not
    allowed.
    """
    return encode_value(value)[0]


def encode_value(value: Any) -> tuple[bytes, Any]:
    """``(encode(value), v)`` where ``v`` is what ``decode`` would return for those bytes."""
    v = _canonical(value, 0)
    try:
        return _packb(v), v
    except UnicodeEncodeError as e:
        raise EncodeError(f"text is not valid unicode: {e.reason}") from None


def _check(value: Any, depth: int) -> None:
    """Raise ``DecodeError`` unless a decoded value has only allowed types, in order.

    A container's scalar items are tested in its own loop, not by a call each: a
    document is mostly scalars, and a call costs more than the test (same order of
    tests, so the same first error)."""
    t = type(value)
    if t is str or t is bytes or t is int or t is bool or value is None:
        return
    if t is dict or t is list:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels", code="too_deep")
        depth += 1
        if t is list:
            for v in value:
                tv = type(v)
                if not (tv is str or tv is bytes or tv is int or tv is bool or v is None):
                    _check(v, depth)
            return
        prev = None
        for k, v in value.items():
            if type(k) is not str:
                raise DecodeError("map key is not text", code="bad_type")
            if prev is not None and k <= prev:
                raise DecodeError(f"map keys not sorted: {k!r} after {prev!r}", code="non_canonical")
            prev = k
            tv = type(v)
            if not (tv is str or tv is bytes or tv is int or tv is bool or v is None):
                _check(v, depth)
        return
    if t is float:
        raise DecodeError("floats are not allowed", code="bad_type")
    raise DecodeError(f"type {t.__name__} is not allowed", code="bad_type")


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """The value whose canonical encoding is exactly ``data``.

    Raises ``DecodeError`` (code ``oversize``, ``malformed``, ``trailing_bytes``,
    ``bad_type``, ``too_deep`` or ``non_canonical``) for anything else. Never raises any
    other exception for any input bytes.
    """
    if type(data) is not bytes:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        else:
            raise DecodeError(f"expected bytes, got {type(data).__name__}", code="bad_type")
    if len(data) > max_size:
        raise DecodeError(f"{len(data)} bytes exceeds the limit of {max_size}", code="oversize")
    if not data:
        raise DecodeError("empty input", code="malformed")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_reject_ext)
    except DecodeError:
        raise
    except msgpack.ExtraData:
        raise DecodeError("bytes follow the value", code="trailing_bytes") from None
    except msgpack.StackError:
        raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels", code="too_deep") from None
    except UnicodeDecodeError:
        raise DecodeError("text is not valid UTF-8", code="malformed") from None
    except TypeError:  # an array or map used as a map key cannot even be hashed
        raise DecodeError("map key is not text", code="bad_type") from None
    except (ValueError, msgpack.UnpackException, RecursionError) as e:
        raise DecodeError(f"not MessagePack: {e or type(e).__name__}", code="malformed") from None
    _check(value, 0)
    # A map with a duplicate key collapsed in the dict and re-encodes shorter; a long form
    # (int, length header) re-encodes in its short form: either way the bytes differ.
    try:
        again = _packb(value)
    except (ValueError, OverflowError, TypeError) as e:  # pragma: no cover - _check guards
        raise DecodeError(f"cannot re-encode: {e}", code="malformed") from None
    if again != data:
        raise DecodeError("bytes are not the canonical encoding of their value", code="non_canonical")
    return value
