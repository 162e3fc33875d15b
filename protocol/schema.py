"""Small checks for the fields of decoded documents.

A schema here is a mapping of field name to a check; ``check_fields`` applies it to a map
and raises ``SchemaError`` naming the first field that is missing, extra or ill-typed.
Every document type and entry body declares its fields this way, so that the rules can be
read as a table.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from .errors import SchemaError

Check = Callable[[Any], bool]

U63_MAX = (1 << 63) - 1


def binary(size: int) -> Check:
    """A bin value of exactly ``size`` bytes."""
    return lambda v: type(v) is bytes and len(v) == size


def uint(lo: int = 0, hi: int = U63_MAX) -> Check:
    """An integer in ``[lo, hi]`` (never a bool)."""
    return lambda v: type(v) is int and lo <= v <= hi


def text(max_len: int, pattern: str | None = None) -> Check:
    """Text of at most ``max_len`` code points, matching ``pattern`` in full if given."""
    rx = re.compile(pattern) if pattern else None
    return lambda v: type(v) is str and len(v) <= max_len and (rx is None or rx.fullmatch(v) is not None)


def const(value: Any) -> Check:
    return lambda v: type(v) is type(value) and v == value


def anything(_: Any) -> bool:
    return True


def check_fields(
    obj: Any,
    required: Mapping[str, Check],
    optional: Mapping[str, Check] | None = None,
    *,
    what: str,
) -> None:
    """Raise ``SchemaError`` unless ``obj`` is a map with exactly these fields, each valid."""
    if type(obj) is not dict:
        raise SchemaError(f"{what} is not a map")
    optional = optional or {}
    for name, ok in required.items():
        if name not in obj:
            raise SchemaError(f"{what} lacks field {name!r}")
        if not ok(obj[name]):
            raise SchemaError(f"{what} field {name!r} is invalid")
    for name in obj:
        if name in required:
            continue
        ok = optional.get(name)
        if ok is None:
            raise SchemaError(f"{what} has unknown field {name!r}")
        if not ok(obj[name]):
            raise SchemaError(f"{what} field {name!r} is invalid")
