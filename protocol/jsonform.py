"""The JSON form of canonical values, for people and for JSON-lines exports.

JSON has no binary type and MessagePack has no floats, so the mapping is:

- nil, bool, int, text, array, map: the same JSON value (ints stay exact integers);
- bin: the one-key object ``{"$bin": "<lowercase hex>"}``;
- JSON numbers with a fraction or exponent, NaN and Infinity are refused: money is integer
  minor units and rates are integer basis points.

A map whose only key is ``"$bin"`` is always read as binary, so such a map cannot be
written in this form; the exact bytes of anything signed travel as hex envelopes anyway.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from . import codec
from .errors import EncodeError

BIN_KEY = "$bin"


def to_json(value: Any) -> Any:
    """The JSON-ready form of a decoded canonical value."""
    t = type(value)
    if t is bytes:
        return {BIN_KEY: value.hex()}
    if t is list:
        return [to_json(v) for v in value]
    if t is dict:
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(value: Any) -> Any:
    """The canonical value of a parsed JSON form; raises ``EncodeError`` if there is none."""
    t = type(value)
    if t is dict:
        if len(value) == 1 and BIN_KEY in value:
            h = value[BIN_KEY]
            try:
                return bytes.fromhex(h)
            except (TypeError, ValueError):
                raise EncodeError(f'{{"{BIN_KEY}": ...}} must hold hex digits') from None
        return {k: from_json(v) for k, v in value.items()}
    if t is list:
        return [from_json(v) for v in value]
    if t is float:
        raise EncodeError(f"number {value!r} is not an integer: amounts are minor units, rates basis points")
    return value


def _no_float(text: str) -> Any:
    raise EncodeError(f"number {text} is not an integer: amounts are minor units, rates basis points")


def parse(text: str) -> Any:
    """The canonical value written as JSON ``text``, checked to be encodable.

    Raises ``EncodeError`` with the reason (not JSON, a float, a too large integer, too deep).
    """
    try:
        obj = json.loads(text, parse_float=_no_float, parse_constant=_no_float)
    except json.JSONDecodeError as e:
        raise EncodeError(f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise EncodeError("JSON nests too deep") from None
    except ValueError:  # not a JSONDecodeError: Python's limit on the digits of one integer
        raise EncodeError(f"an integer has more than {sys.get_int_max_str_digits()} digits") from None
    value = from_json(obj)
    codec.encode(value)  # raises EncodeError for out-of-range ints, depth...
    return value
