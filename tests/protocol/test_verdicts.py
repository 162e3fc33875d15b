"""Signature verdicts made beforehand (protocol/envelope.py, "Verdicts"): opening an
envelope with ``verdict(data)`` gives exactly what opening it alone gives, the same entry
or the same error (type, code, message), for valid envelopes and any tampering of them;
a verdict that cannot be the bytes' is ignored, and ``None`` means "verify here"."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.chains import signed_chain
from protocol import codec
from protocol.entry import Entry, parse_entry
from protocol.envelope import SIGNING_PREFIX, open_envelope, seal, verdict, verdicts
from protocol.errors import ProtocolError, SignatureError
from protocol.keys import SigningKey

SETTINGS = settings(max_examples=300, deadline=None)
A, B = (SigningKey.from_seed(hashlib.sha256(b"verdict %d" % i).digest()) for i in range(2))


def chain(key: SigningKey, n: int) -> list[Entry]:
    return signed_chain(key, n)


ENTRIES = chain(A, 4)


def outcome(data: bytes, **kw) -> tuple:
    """What parsing ``data`` gives: the entry, or the error's type, code and message."""
    try:
        return ("entry", parse_entry(data, **kw))
    except ProtocolError as e:
        return ("error", type(e), e.code, e.message)


def wrong_author(entry: Entry, signer: SigningKey) -> bytes:
    """``entry``'s document signed by another key than its author's."""
    return seal(entry.document(), signer).raw


def flip(data: bytes, at: int, bit: int) -> bytes:
    if not data:
        return data
    at %= len(data)
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]


def test_a_valid_envelope_gets_a_true_verdict_per_signature():
    e = ENTRIES[1]
    assert verdict(e.envelope) == (True,)
    both = seal({"type": "note", "text": "x"}, A, B)
    assert verdict(both.raw) == (True, True)
    assert parse_entry(e.envelope, verdict=(True,)) == e


def test_a_flipped_signature_byte_gets_a_false_verdict_and_the_same_error():
    bad = flip(ENTRIES[2].envelope, -1, 0)  # (the last byte is the signature's)
    assert verdict(bad) == (False,)
    assert outcome(bad, verdict=verdict(bad)) == outcome(bad)
    assert outcome(bad)[1] is SignatureError


def test_an_entry_signed_by_another_key_fails_alike():
    data = wrong_author(ENTRIES[1], B)
    assert verdict(data) == (True,)  # (the signature is good: B signed it)
    assert outcome(data, verdict=verdict(data)) == outcome(data)
    assert outcome(data)[2] == "bad_signature"


def test_a_verdict_of_another_signature_count_is_ignored_and_the_envelope_verified_here():
    bad = flip(ENTRIES[2].envelope, -1, 0)
    assert outcome(bad, verdict=(True, True)) == outcome(bad)  # (two verdicts, one signature)
    assert outcome(bad, verdict=()) == outcome(bad)


def test_no_verdict_means_verify_here():
    bad = flip(ENTRIES[2].envelope, -1, 0)
    assert outcome(bad, verdict=None) == outcome(bad)


def test_a_verdict_is_taken_in_place_of_verify():
    """What the verdict says is what counts (so it must be the bytes' own: the node finds
    it by the bytes, p2pnode/ledger/store.py): a false one refuses a good signature."""
    e = ENTRIES[1]
    with pytest.raises(SignatureError):
        parse_entry(e.envelope, verdict=(False,))


def test_what_is_not_an_envelope_gets_no_verdict():
    assert verdict(b"") is None
    assert verdict(b"\xc1") is None
    assert verdict(codec.encode([b"payload"])) is None
    assert verdict(codec.encode([b"payload", []])) is None
    assert verdict(codec.encode([b"payload", [[b"k" * 31, b"s" * 64]]])) is None
    assert verdict(codec.encode(["text", [[b"k" * 32, b"s" * 64]]])) is None
    assert verdicts([b"", ENTRIES[0].envelope]) == [None, (True,)]


def test_verdict_checks_the_prefixed_payload():
    env = open_envelope(ENTRIES[3].envelope)
    [(pk, sig)] = env.signatures
    unprefixed = codec.encode([env.payload, [[pk, A.sign(env.payload)]]])
    assert verdict(unprefixed) == (False,)
    assert A.sign(SIGNING_PREFIX + env.payload) == sig


tamperings = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("flip_signature"), st.integers(0, 63), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("wrong_author"), st.just(0), st.just(0)),
    st.tuples(st.just("none"), st.just(0), st.just(0)),
)


def tamper(entry: Entry, data: bytes, how: tuple) -> bytes:
    """``data`` (bytes of ``entry``, perhaps tampered already) tampered once more."""
    kind, at, bit = how
    if kind == "flip":
        return flip(data, at, bit)
    if kind == "flip_signature":
        return flip(data, len(data) - 64 + at, bit) if len(data) >= 64 else data
    if kind == "truncate":
        return data[: at % len(data)] if data else data
    if kind == "wrong_author":
        return wrong_author(entry, B)
    return data


@SETTINGS
@given(st.sampled_from(ENTRIES), st.lists(tamperings, min_size=1, max_size=3))
def test_any_tampering_parses_the_same_with_its_verdict_as_without(entry, hows):
    data = entry.envelope
    for how in hows:
        data = tamper(entry, data, how)
    assert outcome(data, verdict=verdict(data)) == outcome(data)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_parse_the_same_with_their_verdict_as_without(data):
    assert outcome(data, verdict=verdict(data)) == outcome(data)
