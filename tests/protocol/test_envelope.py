"""Signed envelopes (protocol/envelope.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol import envelope as envelope_module
from protocol.envelope import (
    MAX_ENVELOPE_SIZE,
    MAX_SIGNATURES,
    SIGNING_PREFIX,
    Envelope,
    countersign,
    document_id,
    open_envelope,
    peek_document,
    require_signers,
    seal,
)
from protocol.errors import DecodeError, ProtocolError, SchemaError, SignatureError
from protocol.keys import SigningKey

import refimpl

SETTINGS = settings(max_examples=150, deadline=None)

KEYS = [SigningKey.from_seed(hashlib.sha256(b"key %d" % i).digest()) for i in range(10)]
A, B, C = KEYS[:3]

field_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
documents = st.builds(
    lambda t, extra: {**extra, "type": t},
    st.text(max_size=20),
    st.dictionaries(st.text(max_size=8), field_values, max_size=5),
)


def code_of(data: bytes, **kw) -> str:
    with pytest.raises(ProtocolError) as info:
        open_envelope(data, **kw)
    return info.value.code


def raw_envelope(payload: bytes, sigs) -> bytes:
    return codec.encode([payload, [list(p) for p in sigs]])


# ------------------------------------------------------------------ round trips


@SETTINGS
@given(documents, st.lists(st.sampled_from(KEYS), min_size=1, max_size=MAX_SIGNATURES, unique_by=lambda k: k.public_key))
def test_seal_open_round_trip(doc, keys):
    env = seal(doc, *keys)
    opened = open_envelope(env.raw)
    assert opened == env
    assert opened.document == doc == env.document
    assert opened.payload == env.payload == codec.encode(doc)
    assert opened.id == env.id == hashlib.sha256(env.payload).digest() == document_id(env.payload)
    assert opened.signers == tuple(sorted(k.public_key for k in keys))
    assert opened.type == doc["type"]
    assert codec.decode(env.raw) == [env.payload, [[pk, sig] for pk, sig in env.signatures]]


def test_signatures_are_over_the_prefixed_payload():
    env = seal({"type": "t", "n": 1}, A)
    ((pk, sig),) = env.signatures
    assert pk == A.public_key
    assert sig == A.sign(b"p2plend/1\x00" + env.payload)
    assert SIGNING_PREFIX == b"p2plend/1\x00"


@SETTINGS
@given(documents, st.permutations(KEYS[:5]))
def test_countersign_keeps_id_and_sorts(doc, order):
    env = seal(doc, order[0])
    for k in order[1:]:
        before = env
        env = countersign(env, k)
        assert env.id == before.id and env.payload == before.payload
        assert list(env.signers) == sorted(env.signers)
    assert env.signers == tuple(sorted(k.public_key for k in KEYS[:5]))
    assert env == seal(doc, *KEYS[:5])  # same bytes whatever the order of signing
    assert open_envelope(env.raw).signers == env.signers


def test_countersign_twice_changes_nothing():
    env = seal({"type": "t"}, A, B)
    assert countersign(env, A) == env
    assert countersign(countersign(env, C), C) == countersign(env, C)


def test_seal_with_the_same_key_twice_signs_once():
    assert seal({"type": "t"}, A, A) == seal({"type": "t"}, A)


def test_seal_refuses_too_many_or_no_signers():
    seal({"type": "t"}, *KEYS[:MAX_SIGNATURES])
    with pytest.raises(SignatureError):
        seal({"type": "t"}, *KEYS[: MAX_SIGNATURES + 1])
    env = seal({"type": "t"}, *KEYS[:MAX_SIGNATURES])
    with pytest.raises(SignatureError):
        countersign(env, KEYS[MAX_SIGNATURES])
    with pytest.raises(SignatureError):
        seal({"type": "t"})


@pytest.mark.parametrize("doc", [{"typ": "x"}, {"type": 1}, {"type": b"t"}, {"type": None}, [], "type", None])
def test_seal_refuses_non_documents(doc):
    with pytest.raises(SchemaError):
        seal(doc, A)  # type: ignore[arg-type]


def test_require_signers():
    env = seal({"type": "t"}, A, B)
    require_signers(env, A.public_key, B.public_key)
    require_signers(env, B.public_key, A.public_key)
    for req in [(A.public_key,), (A.public_key, B.public_key, C.public_key), (A.public_key, A.public_key)]:
        with pytest.raises(SignatureError):
            require_signers(env, *req)


def test_peek_document_does_not_check_signatures():
    env = seal({"type": "t", "x": 1}, A)
    bad = raw_envelope(env.payload, [(A.public_key, bytes(64))])
    assert peek_document(bad) == {"type": "t", "x": 1}
    with pytest.raises(SignatureError):
        open_envelope(bad)


def test_envelope_equality_and_hash_follow_bytes():
    e1, e2 = seal({"type": "t"}, A), seal({"type": "t"}, A)
    assert e1 == e2 and hash(e1) == hash(e2) and len({e1, e2}) == 1
    assert e1 != seal({"type": "t"}, B)
    assert e1 != e1.raw
    assert "Envelope(t" in repr(e1)


# ------------------------------------------------------------------ tampering


ENVS = [
    seal({"type": "entry", "n": 1, "text": "hello"}, A),
    seal({"type": "loan.contract", "amount": 100_000, "parties": [A.public_key, B.public_key]}, A, B),
    seal({"type": "x"}, *KEYS[:3]),
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(ENVS), st.data())
def test_any_single_byte_change_is_refused(env, data):
    pos = data.draw(st.integers(0, len(env.raw) - 1))
    xor = data.draw(st.integers(1, 255))
    raw = bytearray(env.raw)
    raw[pos] ^= xor
    with pytest.raises(ProtocolError):
        open_envelope(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ENVS), st.data())
def test_truncation_and_extension_are_refused(env, data):
    cut = data.draw(st.integers(0, len(env.raw) - 1))
    with pytest.raises(ProtocolError):
        open_envelope(env.raw[:cut])
    with pytest.raises(ProtocolError):
        open_envelope(env.raw + data.draw(st.binary(min_size=1, max_size=8)))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_else(data):
    with pytest.raises(ProtocolError):
        open_envelope(data)


def test_every_position_of_one_envelope():
    """Exhaustively: every byte position, a few xor values."""
    env = ENVS[1]
    for pos in range(len(env.raw)):
        for xor in (0x01, 0x80, 0xFF):
            raw = bytearray(env.raw)
            raw[pos] ^= xor
            with pytest.raises(ProtocolError):
                open_envelope(bytes(raw))


# ------------------------------------------------------------------ structural refusals


def _payload(doc=None) -> bytes:
    return codec.encode(doc or {"type": "t", "v": 7})


def _sig(key: SigningKey, payload: bytes) -> tuple[bytes, bytes]:
    return key.public_key, key.sign(SIGNING_PREFIX + payload)


def test_unsorted_signers_refused():
    p = _payload()
    s1, s2 = sorted([_sig(A, p), _sig(B, p)])
    assert open_envelope(raw_envelope(p, [s1, s2])).signers == (s1[0], s2[0])
    assert code_of(raw_envelope(p, [s2, s1])) == "non_canonical"


def test_duplicate_signer_refused():
    p = _payload()
    s = _sig(A, p)
    assert code_of(raw_envelope(p, [s, s])) == "non_canonical"
    other = (s[0], A.sign(SIGNING_PREFIX + p + b"x"))
    assert code_of(raw_envelope(p, sorted([s, other]))) == "non_canonical"


def test_zero_and_too_many_signatures_refused():
    p = _payload()
    assert code_of(raw_envelope(p, [])) == "bad_signature"
    sigs = sorted(_sig(k, p) for k in KEYS[: MAX_SIGNATURES + 1])
    assert code_of(raw_envelope(p, sigs)) == "bad_signature"
    assert open_envelope(raw_envelope(p, sigs[:MAX_SIGNATURES])).signers == tuple(s[0] for s in sigs[:MAX_SIGNATURES])


def test_signature_without_prefix_refused():
    p = _payload()
    assert code_of(raw_envelope(p, [(A.public_key, A.sign(p))])) == "bad_signature"
    assert code_of(raw_envelope(p, [(A.public_key, A.sign(b"p2plend/1" + p))])) == "bad_signature"
    assert code_of(raw_envelope(p, [(A.public_key, A.sign(b"p2plend/2\x00" + p))])) == "bad_signature"


def test_one_bad_signature_among_good_ones_refused():
    p = _payload()
    sigs = sorted([_sig(A, p), _sig(B, p), (C.public_key, C.sign(SIGNING_PREFIX + _payload({"type": "u"})))])
    assert code_of(raw_envelope(p, sigs)) == "bad_signature"


def test_small_order_forgeries_refused():
    identity = bytes([1]) + bytes(31)
    assert code_of(raw_envelope(_payload(), [(identity, identity + bytes(32))])) == "bad_signature"
    p = _payload()
    seed = hashlib.sha256(b"key 0").digest()
    sig = refimpl.sign_with_small_r(seed, SIGNING_PREFIX + p)
    assert code_of(raw_envelope(p, [(A.public_key, sig)])) == "bad_signature"


@pytest.mark.parametrize(
    "doc",
    [[1, 2], "text", 5, None, {}, {"typ": "t"}, {"type": 1}, {"type": b"t"}, {"type": ["t"]}, {"type": None}],
)
def test_payload_must_be_a_map_with_text_type(doc):
    p = codec.encode(doc)
    assert code_of(raw_envelope(p, [_sig(A, p)])) == "bad_schema"


def test_payload_must_be_canonical():
    p = bytes.fromhex("82a17601a474797065a174")  # {"v": 1, "type": "t"}: keys unsorted
    assert codec.decode(codec.encode({"type": "t", "v": 1})) == {"type": "t", "v": 1}
    assert code_of(raw_envelope(p, [_sig(A, p)])) == "non_canonical"
    p = bytes.fromhex("82a474797065a174")  # truncated
    assert code_of(raw_envelope(p, [_sig(A, p)])) == "malformed"
    p = codec.encode({"type": "t"}) + b"\x00"  # trailing byte
    assert code_of(raw_envelope(p, [_sig(A, p)])) == "trailing_bytes"


@pytest.mark.parametrize(
    "outer",
    [
        "not a list",
        [],
        [b"x"],
        [b"x", [], []],
        ["payload as text", []],
        [b"x", "sigs"],
        [b"x", {}],
        {"payload": b"x", "signatures": []},
    ],
)
def test_envelope_shape(outer):
    assert code_of(codec.encode(outer)) == "bad_envelope"


@pytest.mark.parametrize(
    "pair",
    [
        [bytes(31), bytes(64)],
        [bytes(33), bytes(64)],
        [bytes(32), bytes(63)],
        [bytes(32), bytes(65)],
        [bytes(32)],
        [bytes(32), bytes(64), bytes(0)],
        ["k" * 32, bytes(64)],
        [bytes(32), "s" * 64],
        b"x" * 96,
        {"k": bytes(32)},
    ],
)
def test_signature_pair_shape(pair):
    assert code_of(codec.encode([_payload(), [pair]])) == "bad_envelope"


def test_non_canonical_outer_encoding_refused():
    env = ENVS[0]
    # the same envelope with the payload's bin8 header widened to bin16
    payload = env.payload
    assert len(payload) < 256
    ((pk, sig),) = env.signatures
    loose = b"\x92" + b"\xc5" + len(payload).to_bytes(2, "big") + payload + b"\x91\x92\xc4\x20" + pk + b"\xc4\x40" + sig
    assert code_of(loose) == "non_canonical"
    assert loose.replace(b"\xc5" + len(payload).to_bytes(2, "big"), b"\xc4" + bytes([len(payload)]), 1) == env.raw


# ------------------------------------------------------------------ size


def _padded(n: int) -> dict:
    return {"type": "t", "pad": b"x" * n}


def test_size_limit_exactly():
    """Find the padding that makes the envelope exactly MAX_ENVELOPE_SIZE bytes."""
    base = len(seal(_padded(70_000), A).raw)
    pad = 70_000 + (MAX_ENVELOPE_SIZE - base)
    # the header widths do not change between 70000 and ~131000 (bin32 for both)
    env = seal(_padded(pad), A)
    assert len(env.raw) == MAX_ENVELOPE_SIZE
    assert open_envelope(env.raw) == env
    with pytest.raises(SchemaError) as info:
        seal(_padded(pad + 1), A)
    assert info.value.code == "oversize"
    # build the one-byte-too-long envelope by hand: open_envelope refuses it before parsing
    p = codec.encode(_padded(pad + 1))
    raw = raw_envelope(p, [_sig(A, p)])
    assert len(raw) == MAX_ENVELOPE_SIZE + 1
    assert code_of(raw) == "oversize"
    assert open_envelope(raw, max_size=MAX_ENVELOPE_SIZE + 1).id == document_id(p)


def test_caller_limit():
    env = seal({"type": "t"}, A)
    assert code_of(env.raw, max_size=len(env.raw) - 1) == "oversize"
    assert isinstance(open_envelope(env.raw, max_size=len(env.raw)), Envelope)


def test_errors_are_protocol_errors_with_codes():
    for exc in (DecodeError, SchemaError, SignatureError):
        assert issubclass(exc, ProtocolError)
    e = DecodeError("x", code="bad_envelope")
    assert e.code == "bad_envelope" and e.message == "x"
    assert DecodeError("x").code == "malformed"


def test_bytes_read_back_from_the_store_skip_the_ed25519_checks_alone():
    """``verify_signatures=False`` (stored bytes, verified when stored) skips the verify
    loop and nothing else: the same envelope, a bad signature let through, every check
    of the bytes kept."""
    env = seal({"type": "note", "text": "hi"}, KEYS[0])
    assert open_envelope(env.raw, verify_signatures=False) == open_envelope(env.raw)
    bad = raw_envelope(env.payload, [(KEYS[0].public_key, bytes(64))])
    with pytest.raises(SignatureError):  # refused when verified...
        open_envelope(bad)
    assert open_envelope(bad, verify_signatures=False).signers == (KEYS[0].public_key,)  # ...read back when not
    unsorted = raw_envelope(env.payload, sorted([(k.public_key, bytes(64)) for k in KEYS[:2]], reverse=True))
    assert code_of(unsorted, verify_signatures=False) == "non_canonical"
    assert code_of(b"\x93\x01\x02\x03", verify_signatures=False) == "bad_envelope"


# -- opened envelopes kept (envelope._Opened) --------------------------------------------


def _fresh(raw: bytes, **kw) -> Envelope:
    """``open_envelope`` of ``raw`` made afresh, past the envelopes kept."""
    return envelope_module._open(raw, kw.get("max_size", MAX_ENVELOPE_SIZE), kw.get("verify_signatures", True), None)


@SETTINGS
@given(documents, st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique_by=lambda k: k.public_key))
def test_an_envelope_opened_again_is_the_one_opened_first(doc, keys):
    """The same bytes give the same envelope, equal in every part to one made afresh."""
    raw = seal(doc, *keys).raw
    first = open_envelope(bytes(raw))
    again = open_envelope(bytes(raw))  # (another bytes object of the same value)
    fresh = _fresh(raw)
    assert again is first
    assert (again.payload, again.signatures, again.document, again.id, again.raw) == \
        (fresh.payload, fresh.signatures, fresh.document, fresh.id, fresh.raw)


def test_an_envelope_kept_unverified_is_verified_before_it_is_given_as_verified():
    """Bytes read back unverified (the store's) never pass as verified: a bad signature
    kept from a ``verify_signatures=False`` open is still refused by a verified one."""
    env = seal({"type": "note", "text": "kept unverified"}, KEYS[1])
    bad = raw_envelope(env.payload, [(KEYS[1].public_key, bytes(64))])
    assert open_envelope(bad, verify_signatures=False).signers == (KEYS[1].public_key,)
    for _ in range(2):
        with pytest.raises(SignatureError):
            open_envelope(bad)
    good = open_envelope(env.raw)  # verified: it serves the unverified opens too
    assert open_envelope(env.raw, verify_signatures=False) is good


def test_bytes_refused_are_refused_every_time_and_never_kept():
    env = seal({"type": "note", "text": "bad"}, KEYS[2])
    bad = raw_envelope(env.payload, [(KEYS[2].public_key, bytes(64))])
    before = len(envelope_module._opened._kept)
    for _ in range(3):
        with pytest.raises(SignatureError):
            open_envelope(bad)
        assert code_of(env.raw[:-1]) == "malformed"
    assert bad not in envelope_module._opened._kept
    assert len(envelope_module._opened._kept) <= before + 1  # (at most what another test opened meanwhile)


def test_a_kept_envelope_keeps_the_callers_size_limit():
    env = seal({"type": "t", "pad": "x" * 100}, A)
    open_envelope(env.raw)
    assert code_of(env.raw, max_size=len(env.raw) - 1) == "oversize"


def test_the_envelopes_kept_are_bounded_in_count_and_bytes():
    kept = envelope_module._Opened(size=3, max_bytes=1000)
    envs = [seal({"type": "t", "n": i, "pad": "x" * 200}, A) for i in range(6)]
    for env in envs[:3]:
        kept.add(env, True)
    assert list(kept._kept) == [e.raw for e in envs[:3]]  # three fit both bounds
    kept.add(envs[3], True)
    assert list(kept._kept) == [e.raw for e in envs[1:4]]  # the oldest went for the count
    big = seal({"type": "t", "pad": "y" * 600}, A)
    kept.add(big, True)
    assert kept._bytes <= 1000 and list(kept._kept)[-1] == big.raw and len(kept._kept) < 3  # ... for the bytes
    assert kept._bytes == sum(len(k) for k in kept._kept)
    kept.add(seal({"type": "t", "pad": "z" * 2000}, A), True)  # larger than the whole memory: not kept
    assert kept._bytes == sum(len(k) for k in kept._kept) <= 1000
    assert kept.get(envs[0].raw, False) is None and kept.get(big.raw, True) is not None


def test_a_view_of_bytes_opens_but_is_not_kept():
    env = seal({"type": "t", "view": True}, B)
    view = memoryview(bytearray(env.raw))
    assert open_envelope(view).document == {"type": "t", "view": True}


def test_a_document_written_into_is_caught_on_its_next_open(monkeypatch):
    """Opened documents are read-only (the module's docstring); tests run with
    ``CHECK_KEPT``, so a caller that writes into one fails on the next open."""
    monkeypatch.setattr(envelope_module, "CHECK_KEPT", True)
    env = open_envelope(seal({"type": "t", "n": 1, "list": [1]}, C).raw)
    env.document["list"].append(2)
    with pytest.raises(AssertionError, match="written into"):
        open_envelope(env.raw)
    envelope_module._opened.clear()


def test_a_sealed_envelope_is_kept_as_opened_and_verified():
    env = seal({"type": "t", "sealed": "here"}, A, B)
    assert open_envelope(env.raw) is env
    assert (env.document, env.signatures) == (_fresh(env.raw).document, _fresh(env.raw).signatures)


def test_a_verdict_that_all_verify_may_take_a_kept_envelope_and_any_other_decides_afresh():
    from protocol.envelope import verdict as verdict_of

    env = seal({"type": "t", "verdicts": 1}, A)
    kept = open_envelope(env.raw)
    assert open_envelope(env.raw, verdict=verdict_of(env.raw)) is kept
    with pytest.raises(SignatureError):
        open_envelope(env.raw, verdict=(False,))  # (what the verdict says counts)
    payload = codec.encode({"type": "t", "verdicts": 2})
    raw = raw_envelope(payload, [(A.public_key, A.sign(SIGNING_PREFIX + payload))])  # (not sealed: not kept)
    first = open_envelope(raw, verdict=(True,))
    assert open_envelope(raw) is not first  # a verdict's open added nothing
    assert open_envelope(raw) is open_envelope(raw)
