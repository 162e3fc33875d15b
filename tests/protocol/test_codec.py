"""Canonical MessagePack (protocol/codec.py): one byte string per value, nothing else accepted."""

from __future__ import annotations

import enum
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.codec import INT_MAX, INT_MIN, MAX_DEPTH, decode, encode, encode_value
from protocol.errors import DecodeError, EncodeError

from refimpl import loose_encode, ref_encode

SETTINGS = settings(max_examples=200, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(INT_MIN, INT_MAX)
    | st.sampled_from([0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, -1, -32, -33, -128, -129,
                       -32768, -32769, -(2**31), -(2**31) - 1, INT_MIN, INT_MAX, 2**63 - 1, 2**63])
    | st.text()
    | st.binary()
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=25,
).filter(lambda v: depth(v) <= MAX_DEPTH)


def depth(v) -> int:
    if type(v) is list:
        return 1 + max((depth(x) for x in v), default=0)
    if type(v) is dict:
        return 1 + max((depth(x) for x in v.values()), default=0)
    return 0


def shuffled(v, rnd: random.Random):
    """The same value, every map rebuilt in a random insertion order."""
    if type(v) is list:
        return [shuffled(x, rnd) for x in v]
    if type(v) is dict:
        items = list(v.items())
        rnd.shuffle(items)
        return {k: shuffled(x, rnd) for k, x in items}
    return v


def code_of(data: bytes, **kw) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data, **kw)
    return info.value.code


def nested_list(levels: int):
    v: object = 0
    for _ in range(levels):
        v = [v]
    return v


def nested_map(levels: int):
    v: object = 0
    for _ in range(levels):
        v = {"k": v}
    return v


# ------------------------------------------------------------------ round trip


@SETTINGS
@given(values)
def test_round_trip(v):
    data = encode(v)
    assert decode(data) == v
    assert type(decode(data)) is type(v)


@SETTINGS
@given(values)
def test_encoding_matches_reference_encoder_written_from_the_spec(v):
    assert encode(v) == ref_encode(v)


@SETTINGS
@given(values, st.randoms(use_true_random=False))
def test_encode_is_independent_of_dict_insertion_order(v, rnd):
    assert encode(shuffled(v, rnd)) == encode(v)


@SETTINGS
@given(values)
def test_encode_value_returns_what_decode_returns(v):
    data, canonical = encode_value(v)
    assert canonical == decode(data)


def test_tuples_become_arrays_and_bytearrays_bin():
    assert encode((1, 2)) == encode([1, 2]) == b"\x92\x01\x02"
    assert encode(bytearray(b"ab")) == encode(b"ab") == b"\xc4\x02ab"
    assert encode(memoryview(b"ab")) == b"\xc4\x02ab"


def test_int_enum_is_its_integer_even_at_the_deepest_level():
    class Color(enum.IntEnum):
        RED = 3

    assert encode(Color.RED) == b"\x03"
    deep: object = Color.RED
    plain: object = 3
    for _ in range(MAX_DEPTH):  # MAX_DEPTH containers, the enum inside the innermost
        deep, plain = [deep], [plain]
    assert encode(deep) == encode(plain)
    assert depth(decode(encode(deep))) == MAX_DEPTH


def test_bool_is_not_an_int():
    assert encode(True) == b"\xc3" and encode(False) == b"\xc2" and encode(1) == b"\x01"
    assert decode(b"\xc3") is True


@pytest.mark.parametrize(
    "value, hexed",
    [
        (0, "00"), (127, "7f"), (128, "cc80"), (255, "ccff"), (256, "cd0100"), (65535, "cdffff"),
        (65536, "ce00010000"), (2**32 - 1, "ceffffffff"), (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"), (-1, "ff"), (-32, "e0"), (-33, "d0df"), (-128, "d080"),
        (-129, "d1ff7f"), (-32768, "d18000"), (-32769, "d2ffff7fff"), (-(2**31), "d280000000"),
        (-(2**31) - 1, "d3ffffffff7fffffff"), (-(2**63), "d38000000000000000"),
        ("", "a0"), ("a" * 31, "bf" + "61" * 31), ("a" * 32, "d920" + "61" * 32),
        ("a" * 256, "da0100" + "61" * 256), (b"", "c400"), (b"\x00" * 256, "c50100" + "00" * 256),
        ([], "90"), ([0] * 15, "9f" + "00" * 15), ([0] * 16, "dc0010" + "00" * 16), ({}, "80"),
        (None, "c0"), ({"b": 1, "aa": 2, "a": 3}, "83a16103a2616102a16201"),
        ({"\U0001f600": 1, "\uffff": 2}, "82a3efbfbf02a4f09f988001"),  # code point order, not UTF-16
    ],
)
def test_exact_bytes(value, hexed):
    assert encode(value).hex() == hexed
    assert decode(bytes.fromhex(hexed)) == value


# ------------------------------------------------------------------ depth


@pytest.mark.parametrize("build", [nested_list, nested_map])
def test_depth_limit(build):
    ok = build(MAX_DEPTH)
    assert decode(encode(ok)) == ok
    too_deep = build(MAX_DEPTH + 1)
    with pytest.raises(EncodeError):
        encode(too_deep)
    raw = ref_encode(too_deep)
    assert msgpack.unpackb(raw) == too_deep  # valid MessagePack, only too deep
    assert code_of(raw) == "too_deep"


def test_very_deep_input_is_too_deep_not_a_crash():
    assert code_of(b"\x91" * 5000 + b"\x00") == "too_deep"
    assert code_of(b"\x81\xa1k" * 3000 + b"\x00") == "too_deep"


# ------------------------------------------------------------------ rejection of non-canonical forms


@pytest.mark.parametrize(
    "hexed, code",
    [
        ("cd0001", "non_canonical"),  # 1 as uint16
        ("cc01", "non_canonical"),  # 1 as uint8
        ("d001", "non_canonical"),  # 1 as int8
        ("d30000000000000001", "non_canonical"),  # 1 as int64
        ("cc7f", "non_canonical"),  # 127 as uint8
        ("d100ff", "non_canonical"),  # 255 as int16 (the unsigned form is required)
        ("cd00ff", "non_canonical"),  # 255 as uint16
        ("d0e0", "non_canonical"),  # -32 as int8
        ("d1ff80", "non_canonical"),  # -128 as int16
        ("d3ffffffffffffffff", "non_canonical"),  # -1 as int64
        ("cf00000000ffffffff", "non_canonical"),  # 2**32-1 as uint64
        ("d90161", "non_canonical"),  # str8 where fixstr fits
        ("da000161", "non_canonical"),  # str16
        ("db0000000161", "non_canonical"),  # str32
        ("c5000100", "non_canonical"),  # bin16 where bin8 fits
        ("c60000000100", "non_canonical"),  # bin32
        ("dc000101", "non_canonical"),  # array16 where fixarray fits
        ("de0001a16101", "non_canonical"),  # map16 where fixmap fits
        ("82a16201a16102", "non_canonical"),  # keys unsorted
        ("82a16201a2616102", "non_canonical"),  # keys by length first (not by bytes)
        ("82a16101a16101", "non_canonical"),  # duplicate key, same value
        ("82a16101a16102", "non_canonical"),  # duplicate key, different value
        ("ca3f800000", "bad_type"),  # float32 1.0
        ("cb3ff0000000000000", "bad_type"),  # float64 1.0
        ("d6ff00000000", "bad_type"),  # timestamp 32 (ext -1)
        ("d7ff0000000000000000", "bad_type"),  # timestamp 64 (ext -1)
        ("c70cff000000000000000000000000", "bad_type"),  # timestamp 96 (ext -1)
        ("d40100", "bad_type"),  # fixext1
        ("c7000a", "bad_type"),  # ext8, empty
        ("c8000105ff", "bad_type"),  # ext16
        ("810101", "bad_type"),  # int key
        ("81c4016101", "bad_type"),  # bin key
        ("81c001", "bad_type"),  # nil key
        ("81c301", "bad_type"),  # bool key
        ("81910101", "bad_type"),  # array key
        ("818001", "bad_type"),  # map key
        ("0101", "trailing_bytes"),
        ("a16100", "trailing_bytes"),
        ("92", "malformed"),  # truncated array
        ("9201", "malformed"),
        ("a2", "malformed"),  # truncated str
        ("cd00", "malformed"),  # truncated uint16
        ("", "malformed"),
        ("c1", "malformed"),  # the never-used byte
        ("a2c328", "malformed"),  # invalid UTF-8
        ("a2c080", "malformed"),  # overlong UTF-8
        ("a3eda080", "malformed"),  # a UTF-16 surrogate in UTF-8
        ("a4f4908080", "malformed"),  # beyond U+10FFFF
    ],
)
def test_rejects(hexed, code):
    assert code_of(bytes.fromhex(hexed)) == code


def test_oversize_is_refused_before_parsing():
    data = encode(b"x" * 100)
    assert decode(data, max_size=len(data)) == b"x" * 100
    assert code_of(data, max_size=len(data) - 1) == "oversize"
    assert code_of(b"\xc1" * 11, max_size=10) == "oversize"  # garbage, but too big first
    assert code_of(b"\x00" * (codec.DEFAULT_MAX_SIZE + 1)) == "oversize"


def test_non_bytes_input():
    assert decode(bytearray(b"\x01")) == 1
    assert decode(memoryview(b"\x01")) == 1
    for bad in ("01", 1, None, [1]):
        with pytest.raises(DecodeError) as info:
            decode(bad)  # type: ignore[arg-type]
        assert info.value.code == "bad_type"


@SETTINGS
@given(values, st.randoms(use_true_random=False))
def test_any_longer_form_is_refused(v, rnd):
    """Re-encode ``v`` choosing random (valid, possibly longer) forms: if the bytes differ
    from the canonical ones, the decoder must refuse them as non_canonical."""
    loose = loose_encode(v, lambda n: rnd.randrange(n) if rnd.random() < 0.3 else 0)
    assert msgpack.unpackb(loose, strict_map_key=False) == v  # a valid encoding of v
    if loose == encode(v):
        assert decode(loose) == v
    else:
        assert code_of(loose) == "non_canonical"


@SETTINGS
@given(st.dictionaries(st.text(max_size=4), st.integers(0, 3), min_size=2, max_size=6), st.randoms(use_true_random=False))
def test_any_other_key_order_is_refused(d, rnd):
    keys = list(d)
    rnd.shuffle(keys)
    raw = loose_encode({k: d[k] for k in keys}, lambda n: 0, sort_keys=False)
    if keys == sorted(keys, key=lambda k: k.encode()):
        assert decode(raw) == d
    else:
        assert code_of(raw) == "non_canonical"


@SETTINGS
@given(st.text(min_size=1, max_size=5), values, values)
def test_duplicate_keys_are_refused(k, v1, v2):
    raw = b"\x82" + ref_encode(k) + ref_encode(v1) + ref_encode(k) + ref_encode(v2)
    assert code_of(raw) == "non_canonical"


def test_floats_and_ext_built_by_msgpack_itself():
    for v in (0.0, 1.5, float("nan"), float("inf")):
        assert code_of(msgpack.packb(v)) == "bad_type"
        assert code_of(msgpack.packb(v, use_single_float=True)) == "bad_type"
        assert code_of(msgpack.packb({"a": v})) == "bad_type"
    assert code_of(msgpack.packb(msgpack.ExtType(5, b"abc"))) == "bad_type"
    assert code_of(msgpack.packb(msgpack.Timestamp(1, 0))) == "bad_type"
    assert code_of(msgpack.packb([1, msgpack.Timestamp(1, 0)])) == "bad_type"


# ------------------------------------------------------------------ arbitrary input


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_decode_error(data):
    try:
        v = decode(data)
    except DecodeError as e:
        assert e.code in {"malformed", "trailing_bytes", "bad_type", "too_deep", "non_canonical"}
    else:
        assert encode(v) == data


@SETTINGS
@given(values, st.data())
def test_mutated_encodings_decode_or_raise_decode_error(v, data):
    raw = bytearray(encode(v))
    op = data.draw(st.sampled_from(["flip", "truncate", "append", "insert"]))
    if op == "flip":
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif op == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif op == "append":
        raw += data.draw(st.binary(min_size=1, max_size=4))
    else:
        i = data.draw(st.integers(0, len(raw)))
        raw[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        w = decode(bytes(raw))
    except DecodeError:
        return
    assert encode(w) == bytes(raw)


# ------------------------------------------------------------------ encoding refusals


class Thing:
    pass


class Text(str):
    pass


@pytest.mark.parametrize(
    "value",
    [
        1.0, float("nan"), [1, 2.5], {"a": 0.0},
        {1: "a"}, {b"k": 1}, {None: 1}, {(1,): 1}, {"a": {2: 3}}, {Text("k"): 1},
        2**64, -(2**63) - 1, [2**70],
        {1, 2}, frozenset(), Thing(), object(), Text("x"), 1j, range(3),
        "\ud800",  # a lone surrogate has no UTF-8 form
        {"\udfff": 1},
    ],
)
def test_encode_refuses(value):
    with pytest.raises(EncodeError) as info:
        encode(value)
    assert info.value.code == "unencodable"


def test_int_range_boundaries():
    assert decode(encode(INT_MAX)) == INT_MAX
    assert decode(encode(INT_MIN)) == INT_MIN
    for bad in (INT_MAX + 1, INT_MIN - 1):
        with pytest.raises(EncodeError):
            encode(bad)


# -- the type walk (``_check``) against the plain rules --------------------------------


def reference_check(value, depth: int) -> None:
    """``_check`` as the module's rules say it, one call per value: the oracle of the
    walk's own loop over scalar items."""
    t = type(value)
    if t is str or t is bytes or t is int or t is bool or value is None:
        return
    if t is dict or t is list:
        if depth >= MAX_DEPTH:
            raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels", code="too_deep")
        if t is list:
            for v in value:
                reference_check(v, depth + 1)
            return
        prev = None
        for k, v in value.items():
            if type(k) is not str:
                raise DecodeError("map key is not text", code="bad_type")
            if prev is not None and k <= prev:
                raise DecodeError(f"map keys not sorted: {k!r} after {prev!r}", code="non_canonical")
            prev = k
            reference_check(v, depth + 1)
        return
    if t is float:
        raise DecodeError("floats are not allowed", code="bad_type")
    raise DecodeError(f"type {t.__name__} is not allowed", code="bad_type")


def walked(check, value, depth: int):
    try:
        check(value, depth)
    except DecodeError as e:
        return (e.code, e.message)
    return None


loose_scalars = scalars | st.floats(allow_nan=False) | st.sampled_from([1.5, msgpack.ExtType(1, b"x")])
loose_values = st.recursive(
    loose_scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3), st.binary(max_size=2)), inner, max_size=5),
    max_leaves=25,
)


@SETTINGS
@given(loose_values, st.integers(MAX_DEPTH - 4, MAX_DEPTH))
def test_the_type_walk_finds_the_same_first_error_as_the_plain_rules(v, start):
    """Any value (floats, ext, keys of any type in any order, near the depth limit): the
    same error, or none, as the one-call-per-value walk."""
    assert walked(codec._check, v, start) == walked(reference_check, v, start)
