"""Ed25519 keys, verification and libp2p peer IDs (protocol/keys.py)."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import keys
from protocol.errors import ProtocolError
from protocol.keys import (
    KeyFormatError,
    SigningKey,
    b58decode,
    b58encode,
    peer_id,
    public_key_from_peer_id,
    verify,
)

import refimpl

SETTINGS = settings(max_examples=150, deadline=None)
seeds = st.binary(min_size=32, max_size=32)


def openssl_accepts(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Plain RFC 8032 verification by the library, without this protocol's extra checks."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# ------------------------------------------------------------------ peer IDs


@SETTINGS
@given(st.binary(min_size=32, max_size=32))
def test_peer_id_round_trip(pk):
    pid = peer_id(pk)
    assert pid.startswith("12D3KooW")
    assert len(pid) == 52
    assert public_key_from_peer_id(pid) == pk


@SETTINGS
@given(st.binary(max_size=40))
def test_base58_round_trip(data):
    assert b58decode(b58encode(data)) == data


def test_base58_leading_zeros():
    assert b58encode(b"\0\0\x01") == "112"
    assert b58decode("112") == b"\0\0\x01"
    assert b58encode(b"") == ""


@settings(max_examples=25, deadline=None)
@given(seeds)
def test_peer_id_matches_libp2p(seed):
    from libp2p.crypto.ed25519 import Ed25519PrivateKey as LK
    from libp2p.peer.id import ID

    lk = LK.from_bytes(seed)
    pub = lk.get_public_key()
    ours = SigningKey.from_seed(seed)
    assert str(ID.from_pubkey(pub)) == ours.peer_id
    assert pub.to_bytes() == ours.public_key
    assert ID.from_base58(ours.peer_id).to_bytes() == bytes.fromhex("00240801" + "1220") + ours.public_key


def test_peer_id_of_fixed_seeds_matches_libp2p():
    from libp2p.crypto.ed25519 import Ed25519PrivateKey as LK
    from libp2p.peer.id import ID

    for seed in (bytes(32), bytes(range(32)), b"\xff" * 32, hashlib.sha256(b"alice").digest()):
        assert str(ID.from_pubkey(LK.from_bytes(seed).get_public_key())) == SigningKey.from_seed(seed).peer_id


def test_known_peer_id():
    key = SigningKey.from_seed(bytes(range(32)))
    assert key.public_key.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    assert key.peer_id == "12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"


GOOD = SigningKey.from_seed(bytes(range(32))).peer_id


def _b58(prefix_hex: str, body: bytes) -> str:
    return b58encode(bytes.fromhex(prefix_hex) + body)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12D3KooW",
        GOOD[:-1],
        GOOD + "1",
        "1" + GOOD,  # an extra leading '1' is an extra zero byte
        GOOD[:10] + "0" + GOOD[11:],  # '0', 'O', 'I', 'l' are not base58
        GOOD[:10] + "O" + GOOD[11:],
        GOOD[:10] + "I" + GOOD[11:],
        GOOD[:10] + "l" + GOOD[11:],
        GOOD[:10] + " " + GOOD[11:],
        GOOD[:10] + "é" + GOOD[11:],
        GOOD.lower(),
        # an RSA-style peer ID: sha256 multihash (Qm...)
        _b58("1220", hashlib.sha256(b"some rsa key").digest()),
        # the sha256 multihash of an Ed25519 protobuf key (legal in libp2p, not here)
        _b58("1220", hashlib.sha256(bytes.fromhex("08011220") + bytes(range(32))).digest()),
        # a secp256k1 key (protobuf type 2, 33 bytes): 16Uiu2...
        _b58("002508021221", b"\x02" + bytes(range(32))),
        # an ECDSA key type (3) with the Ed25519 layout
        _b58("002408031220", bytes(range(32))),
        # identity multihash of a 31- and a 33-byte key
        _b58("002308011220"[:-2] + "1f", bytes(31)),
        _b58("002508011221", bytes(33)),
        # the right prefix, one key byte short or long
        _b58("002408011220", bytes(range(31))),
        _b58("002408011220", bytes(range(33))),
        # a CIDv1-looking string
        "bafzaajaiaejcb6ji4hm7btvthukx4fpxyzq3hn7idjtr6s2u2pxcobqprgf7oc3m",
    ],
)
def test_bad_peer_ids(text):
    with pytest.raises(KeyFormatError) as info:
        public_key_from_peer_id(text)
    assert info.value.code == "bad_key"
    assert isinstance(info.value, ProtocolError)


@pytest.mark.parametrize("bad", [None, 5, b"12D3KooW", ["x"]])
def test_peer_id_of_non_text(bad):
    with pytest.raises(KeyFormatError):
        public_key_from_peer_id(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), bytearray(32), "a" * 32, None])
def test_peer_id_needs_32_bytes(bad):
    with pytest.raises(KeyFormatError):
        peer_id(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------ signing keys


@settings(max_examples=50, deadline=None)
@given(seeds)
def test_seed_round_trip_and_matches_reference(seed):
    key = SigningKey.from_seed(seed)
    assert key.seed == seed
    assert SigningKey.from_seed(seed).public_key == key.public_key
    assert key.public_key == refimpl.point_encode(refimpl.point_mul(refimpl.secret_scalar(seed), refimpl.BASE))
    assert key.sign(b"m") == refimpl.sign(seed, b"m")  # RFC 8032 is deterministic


@pytest.mark.parametrize("bad", [b"", bytes(31), bytes(33), bytearray(32), "0" * 32])
def test_from_seed_needs_32_bytes(bad):
    with pytest.raises(KeyFormatError):
        SigningKey.from_seed(bad)  # type: ignore[arg-type]


def test_generate_gives_distinct_working_keys():
    a, b = SigningKey.generate(), SigningKey.generate()
    assert a.public_key != b.public_key
    assert verify(a.public_key, a.sign(b"x"), b"x")
    assert repr(a) == f"SigningKey({a.peer_id})"


def test_rfc8032_test_vector_1():
    seed = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    key = SigningKey.from_seed(seed)
    assert key.public_key.hex() == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    sig = key.sign(b"")
    assert sig.hex() == (
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    assert verify(key.public_key, sig, b"")


# ------------------------------------------------------------------ verify


@SETTINGS
@given(seeds, st.binary(max_size=100))
def test_verify_accepts_own_signature(seed, msg):
    key = SigningKey.from_seed(seed)
    assert verify(key.public_key, key.sign(msg), msg)


@SETTINGS
@given(seeds, seeds, st.binary(max_size=50))
def test_verify_refuses_wrong_key(s1, s2, msg):
    k1, k2 = SigningKey.from_seed(s1), SigningKey.from_seed(s2)
    if k1.public_key != k2.public_key:
        assert not verify(k2.public_key, k1.sign(msg), msg)


@SETTINGS
@given(seeds, st.binary(max_size=50), st.binary(max_size=50))
def test_verify_refuses_wrong_message(seed, m1, m2):
    key = SigningKey.from_seed(seed)
    if m1 != m2:
        assert not verify(key.public_key, key.sign(m1), m2)


@SETTINGS
@given(seeds, st.integers(0, 64 * 8 - 1))
def test_verify_refuses_any_flipped_signature_bit(seed, bit):
    key = SigningKey.from_seed(seed)
    sig = bytearray(key.sign(b"message"))
    sig[bit // 8] ^= 1 << (bit % 8)
    assert not verify(key.public_key, bytes(sig), b"message")


@SETTINGS
@given(seeds, st.integers(0, 32 * 8 - 1))
def test_verify_refuses_any_flipped_key_bit(seed, bit):
    key = SigningKey.from_seed(seed)
    pk = bytearray(key.public_key)
    pk[bit // 8] ^= 1 << (bit % 8)
    assert not verify(bytes(pk), key.sign(b"message"), b"message")


def test_verify_refuses_wrong_lengths():
    key = SigningKey.from_seed(bytes(32))
    sig = key.sign(b"m")
    pk = key.public_key
    assert verify(pk, sig, b"m")
    for bad_sig in (b"", sig[:63], sig + b"\0", sig * 2):
        assert not verify(pk, bad_sig, b"m")
    for bad_pk in (b"", pk[:31], pk + b"\0"):
        assert not verify(bad_pk, sig, b"m")


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=70), st.binary(max_size=10))
def test_verify_never_raises(pk, sig, msg):
    assert verify(pk, sig, msg) in (True, False)


def test_verify_refuses_a_key_that_is_not_a_point():
    not_points = [y.to_bytes(32, "little") for y in range(2, 40) if refimpl.point_decode(y.to_bytes(32, "little")) is None]
    assert not_points
    sig = SigningKey.from_seed(bytes(32)).sign(b"m")
    for pk in not_points:
        assert not verify(pk, sig, b"m")


def test_verify_refuses_non_canonical_s():
    key = SigningKey.from_seed(bytes(range(32)))
    sig = key.sign(b"m")
    s = int.from_bytes(sig[32:], "little") + refimpl.L  # same value mod L, longer form
    assert s < 2**256
    malleated = sig[:32] + s.to_bytes(32, "little")
    assert not verify(key.public_key, malleated, b"m")


def test_the_small_order_list_is_exactly_the_small_order_points():
    computed = {refimpl.point_encode(p) for p in refimpl.small_order_points()}
    assert len(computed) == 8
    for enc in computed:
        assert keys.has_small_order(enc)
        assert keys.has_small_order(enc[:31] + bytes([enc[31] | 0x80]))
    listed = set(keys._SMALL_ORDER)
    canonical_listed = {e for e in listed if keys.is_canonical_point(e)}
    assert canonical_listed == {e[:31] + bytes([e[31] & 0x7F]) for e in computed}
    for e in listed - canonical_listed:  # y = p and y = p + 1 name the points y = 0 and y = 1
        assert refimpl.point_encode(refimpl.point_decode(e)) in computed
    for seed in (bytes(32), bytes(range(32))):
        assert not keys.has_small_order(SigningKey.from_seed(seed).public_key)


def _forgeries():
    """For each small-order key encoding (both sign bits), a forged signature if one exists."""
    out = []
    for base in sorted(keys._SMALL_ORDER):
        for sign_bit in (0, 0x80):
            pk = base[:31] + bytes([base[31] | sign_bit])
            for i in range(64):
                msg = b"forged %d" % i
                sig = refimpl.forge_for_small_order_key(pk, msg)
                if sig is not None:
                    out.append((pk, sig, msg))
                    break
    return out


def test_verify_refuses_forgeries_for_small_order_keys():
    forgeries = _forgeries()
    assert len(forgeries) >= 10
    for pk, sig, msg in forgeries:
        # plain RFC 8032 verification (OpenSSL) accepts these "signatures" by nobody...
        assert openssl_accepts(pk, sig, msg), pk.hex()
        # ...this protocol does not
        assert not verify(pk, sig, msg), pk.hex()
        assert not keys.verify_once(pk, sig, msg), pk.hex()


def test_verify_refuses_identity_key_with_identity_r():
    identity = bytes([1]) + bytes(31)
    sig = identity + bytes(32)  # R = identity, S = 0: valid for every message under RFC 8032
    assert openssl_accepts(identity, sig, b"anything")
    assert not verify(identity, sig, b"anything")
    assert not keys.verify_once(identity, sig, b"anything")


@settings(max_examples=20, deadline=None)
@given(seeds, st.binary(max_size=30))
def test_verify_refuses_small_order_r_from_the_real_key(seed, msg):
    key = SigningKey.from_seed(seed)
    sig = refimpl.sign_with_small_r(seed, msg)
    assert openssl_accepts(key.public_key, sig, msg)
    assert not verify(key.public_key, sig, msg)
    assert not keys.verify_once(key.public_key, sig, msg)


def test_verify_refuses_non_canonical_key_encoding():
    # y = p + 2 .. 2**255 - 1 are non-canonical names of y = 2 .. 18; some are curve points
    p = refimpl.P
    found = 0
    for y in range(p + 2, 2**255):
        enc = y.to_bytes(32, "little")
        if refimpl.point_decode(enc) is not None:
            found += 1
            assert not keys.is_canonical_point(enc)
    assert found
    assert keys.is_canonical_point((p - 1).to_bytes(32, "little"))


# ------------------------------------------------------------------ agreement with libsodium


def _libsodium_accepts(public_key: bytes, signature: bytes, message: bytes) -> bool:
    nacl_signing = pytest.importorskip("nacl.signing")
    nacl_exceptions = pytest.importorskip("nacl.exceptions")
    try:
        nacl_signing.VerifyKey(public_key).verify(message, signature)
    except (nacl_exceptions.BadSignatureError, nacl_exceptions.CryptoError, ValueError):
        return False
    return True


@settings(max_examples=60, deadline=None)
@given(seeds, st.binary(max_size=40), st.sampled_from(["genuine", "small_r", "flip", "s_plus_l", "other_msg"]), st.data())
def test_verify_agrees_with_libsodium(seed, msg, how, data):
    """The rule of docs/protocol.md is libsodium's: both accept and refuse the same things."""
    key = SigningKey.from_seed(seed)
    sig = key.sign(msg)
    m = msg
    if how == "small_r":
        sig = refimpl.sign_with_small_r(seed, msg)
    elif how == "flip":
        bit = data.draw(st.integers(0, 511))
        sig = bytearray(sig)
        sig[bit // 8] ^= 1 << (bit % 8)
        sig = bytes(sig)
    elif how == "s_plus_l":
        s = int.from_bytes(sig[32:], "little") + refimpl.L
        sig = sig[:32] + s.to_bytes(32, "little")
    elif how == "other_msg":
        m = msg + b"!"
    assert verify(key.public_key, sig, m) == _libsodium_accepts(key.public_key, sig, m)
    assert verify(key.public_key, sig, m) == (how == "genuine")


def test_small_order_forgeries_are_refused_by_libsodium_too():
    for pk, sig, msg in _forgeries():
        assert not _libsodium_accepts(pk, sig, msg)


# ------------------------------------------------------------------ verify's memory of verdicts


@SETTINGS
@given(seeds, st.binary(max_size=60), st.sampled_from(["key", "signature", "message"]), st.integers(0, 10_000))
def test_a_remembered_verdict_answers_only_the_triple_that_verified(seed, msg, part, bit):
    """After a triple verified (and was remembered), any change to key, signature or
    message is checked anew and refused; the triple itself still verifies."""
    key = SigningKey.from_seed(seed)
    sig = key.sign(msg)
    assert verify(key.public_key, sig, msg)
    assert keys._Verified.digest(key.public_key, sig, msg) in keys._verified

    def flip(data: bytes) -> bytes:
        out = bytearray(data)
        out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
        return bytes(out)

    changed = {"key": (flip(key.public_key), sig, msg), "signature": (key.public_key, flip(sig), msg),
               "message": (key.public_key, sig, flip(msg) if msg else b"\0")}[part]
    assert not verify(*changed)
    assert verify(key.public_key, sig, msg)


@SETTINGS
@given(st.lists(st.tuples(seeds, st.binary(max_size=20), st.booleans()), min_size=1, max_size=8))
def test_verdicts_are_the_same_with_and_without_the_memory(cases):
    """The memory changes speed only: every answer equals a cold verify's."""
    triples = []
    for seed, msg, tamper in cases:
        key = SigningKey.from_seed(seed)
        sig = key.sign(msg)
        triples.append((key.public_key, sig[:-1] + bytes([sig[-1] ^ 1]) if tamper else sig, msg))
    warm = [verify(*t) for t in triples] and [verify(*t) for t in triples]
    keys._verified.clear()
    cold = [verify(*t) for t in triples]
    assert warm == cold == [not tamper for _, _, tamper in cases]


def test_failures_are_never_remembered():
    key = SigningKey.from_seed(bytes(range(32)))
    sig = key.sign(b"m")
    bad = sig[:-1] + bytes([sig[-1] ^ 1])
    keys._verified.clear()
    for _ in range(3):
        assert not verify(key.public_key, bad, b"m")
    assert keys._Verified.digest(key.public_key, bad, b"m") not in keys._verified
    assert len(keys._verified._seen) == 0


def test_the_memory_is_bounded_and_forgets_the_oldest_first():
    memo = keys._Verified(3)
    digests = [bytes([i]) * 32 for i in range(5)]
    for d in digests:
        memo.add(d)
    assert [d in memo for d in digests] == [False, False, True, True, True]
    assert len(memo._seen) == 3
    assert keys.VERIFIED_MEMO * 100 < 4 << 20  # about 100 bytes each: a few MiB at most


@SETTINGS
@given(st.integers(1, 40), st.lists(st.integers(0, 60), max_size=300))
def test_the_memory_keeps_exactly_the_last_distinct_digests_added(size, adds):
    """Whatever the order of adds (repeats included), the memory holds the ``size``
    digests added last, as a list of the adds says, and nothing else."""
    memo = keys._Verified(size)
    model: list[bytes] = []
    for i in adds:
        d = bytes([i]) * 32
        memo.add(d)
        if d not in model:  # (adding a digest held keeps its place: a dict's insertion order)
            model.append(d)
        del model[:-size]
    assert list(memo._seen) == model
    assert all(d in memo for d in model)


@SETTINGS
@given(st.lists(st.tuples(seeds, st.binary(max_size=20), st.sampled_from(["ok", "sig", "key", "msg", "short"])),
                min_size=1, max_size=6))
def test_verify_once_answers_as_verify_and_remembers_nothing(cases):
    """The signature workers' check (no memory) gives verify's answer for valid and
    tampered triples, cold or after verify remembered them, and adds nothing to the memory."""
    triples = []
    for seed, msg, how in cases:
        key = SigningKey.from_seed(seed)
        pk, sig = key.public_key, key.sign(msg)
        triples.append({"ok": (pk, sig, msg), "sig": (pk, sig[:-1] + bytes([sig[-1] ^ 1]), msg),
                        "key": (bytes([pk[0] ^ 1]) + pk[1:], sig, msg), "msg": (pk, sig, msg + b"x"),
                        "short": (pk[:31], sig, msg)}[how])
    keys._verified.clear()
    once = [keys.verify_once(*t) for t in triples]
    assert len(keys._verified._seen) == 0
    assert once == [verify(*t) for t in triples] == [keys.verify_once(*t) for t in triples]


@given(st.one_of(st.binary(min_size=32, max_size=32),
                 st.sampled_from(sorted(keys._SMALL_ORDER)).flatmap(
                     lambda p: st.sampled_from([p, p[:31] + bytes([p[31] | 0x80])]))))
def test_the_signed_small_order_set_is_has_small_order(point):
    assert (point in keys._SMALL_ORDER_SIGNED) == keys.has_small_order(point)
