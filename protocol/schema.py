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
MATCHED_KEPT = 256  # texts remembered per pattern as matching it (``text``): kinds, names


def binary(size: int) -> Check:
    """A bin value of exactly ``size`` bytes."""
    return lambda v: type(v) is bytes and len(v) == size


def uint(lo: int = 0, hi: int = U63_MAX) -> Check:
    """An integer in ``[lo, hi]`` (never a bool)."""
    return lambda v: type(v) is int and lo <= v <= hi


def text(max_len: int, pattern: str | None = None) -> Check:
    """Text of at most ``max_len`` code points, matching ``pattern`` in full if given."""
    if not pattern:
        return lambda v: type(v) is str and len(v) <= max_len
    rx = re.compile(pattern)
    matched: set[str] = set()  # texts that matched: a set lookup instead of the regex (bounded below)

    def check(v: Any) -> bool:
        if type(v) is not str or len(v) > max_len:
            return False
        if v in matched:
            return True
        if rx.fullmatch(v) is None:
            return False
        if len(matched) >= MATCHED_KEPT:
            matched.clear()
        matched.add(v)
        return True

    return check


def const(value: Any) -> Check:
    return lambda v: type(v) is type(value) and v == value


def anything(_: Any) -> bool:
    return True


_ABSENT = object()


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
    if not optional and len(obj) == len(required):
        # The usual case, answered in one pass: as many fields as required ones, so if
        # each required one is there and valid, there is no other. Any doubt goes on to
        # the checks below, which find the same first fault whatever this pass saw.
        for name, ok in required.items():
            v = obj.get(name, _ABSENT)
            if v is _ABSENT or not ok(v):
                break
        else:
            return
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
