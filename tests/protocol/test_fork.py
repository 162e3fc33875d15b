"""Fork proofs (protocol/fork.py): two signed entries of one author at one seq."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.entry import ZERO_ID, make_entry
from protocol.envelope import MAX_ENVELOPE_SIZE
from protocol.errors import ProtocolError
from protocol.fork import MAX_FORK_PROOF_SIZE, ForkProof, ForkProofError
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

SETTINGS = settings(max_examples=100, deadline=None)
ALICE = SigningKey.from_seed(hashlib.sha256(b"alice").digest())
BOB = SigningKey.from_seed(hashlib.sha256(b"bob").digest())
PREV = hashlib.sha256(b"prev").digest()


def note(key=ALICE, seq=2, text="a", ts=100, prev=PREV):
    return make_entry(key, seq=seq, prev=prev, ts=ts, kind="note", body={"text": text})


def decode_code(data: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        ForkProof.decode(data)
    return info.value.code


@SETTINGS
@given(st.integers(1, 2**40), st.text(max_size=10), st.text(max_size=10), st.integers(0, 2**40), st.integers(0, 2**40))
def test_round_trip(seq, t1, t2, ts1, ts2):
    prev = ZERO_ID if seq == 1 else PREV
    x, y = note(seq=seq, text=t1, ts=ts1, prev=prev), note(seq=seq, text=t2, ts=ts2, prev=prev)
    if x.id == y.id:
        with pytest.raises(ForkProofError):
            ForkProof.of(x, y)
        return
    proof = ForkProof.of(x, y)
    assert proof == ForkProof.of(y, x)
    assert proof.a.id < proof.b.id
    assert {proof.a.id, proof.b.id} == {x.id, y.id}
    assert (proof.author, proof.seq) == (ALICE.public_key, seq)
    data = proof.encode()
    assert data == codec.encode([proof.a.envelope, proof.b.envelope])
    assert ForkProof.decode(data) == proof


def test_different_prev_is_a_fork_too():
    x = note(prev=PREV)
    y = note(prev=hashlib.sha256(b"other").digest())
    assert ForkProof.decode(ForkProof.of(x, y).encode()).seq == 2


def test_genesis_fork():
    x = make_entry(ALICE, seq=1, prev=ZERO_ID, ts=1, kind="genesis", body=genesis_body("a"))
    y = make_entry(ALICE, seq=1, prev=ZERO_ID, ts=1, kind="genesis", body=genesis_body("b"))
    assert ForkProof.decode(ForkProof.of(x, y).encode()).seq == 1


def test_same_entry_twice():
    x = note()
    with pytest.raises(ForkProofError) as info:
        ForkProof.of(x, x)
    assert info.value.code == "bad_fork_proof"
    assert decode_code(codec.encode([x.envelope, x.envelope])) == "bad_fork_proof"


def test_different_seqs():
    x, y = note(seq=2), note(seq=3)
    with pytest.raises(ForkProofError):
        ForkProof.of(x, y)
    pair = sorted([x, y], key=lambda e: e.id)
    assert decode_code(codec.encode([pair[0].envelope, pair[1].envelope])) == "bad_fork_proof"


def test_different_authors():
    x, y = note(ALICE), note(BOB)
    with pytest.raises(ForkProofError):
        ForkProof.of(x, y)
    pair = sorted([x, y], key=lambda e: e.id)
    assert decode_code(codec.encode([pair[0].envelope, pair[1].envelope])) == "bad_fork_proof"


def test_wrong_order():
    proof = ForkProof.of(note(text="a"), note(text="b"))
    assert decode_code(codec.encode([proof.b.envelope, proof.a.envelope])) == "non_canonical"


@pytest.mark.parametrize(
    "value",
    [[], [b"x"], "proof", {"a": b"", "b": b""}, [b"x", b"y", b"z"], ["a", "b"], [[1], [2]]],
)
def test_shape(value):
    assert decode_code(codec.encode(value)) == "bad_fork_proof"


def test_not_an_entry_inside():
    proof = ForkProof.of(note(text="a"), note(text="b"))
    assert decode_code(codec.encode([proof.a.envelope, b"\x01"])) == "bad_envelope"


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_tampered_proof(data):
    proof = ForkProof.of(note(text="a"), note(text="b"))
    raw = bytearray(proof.encode())
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    with pytest.raises(ProtocolError):
        ForkProof.decode(bytes(raw))


def test_tampered_envelope_inside_canonical_outer():
    proof = ForkProof.of(note(text="a"), note(text="b"))
    bad = bytearray(proof.b.envelope)
    bad[-1] ^= 1  # last byte of the signature
    assert decode_code(codec.encode([proof.a.envelope, bytes(bad)])) == "bad_signature"


def test_size_limit():
    assert MAX_FORK_PROOF_SIZE >= 2 * MAX_ENVELOPE_SIZE + 11  # array + two bin32 headers
    assert decode_code(b"\x92" + b"\x00" * MAX_FORK_PROOF_SIZE) == "oversize"
    big = [make_entry(ALICE, seq=2, prev=PREV, ts=1, kind="x", body=[t, b"y" * (MAX_ENVELOPE_SIZE - 300)])
           for t in ("a", "b")]
    assert all(len(e.envelope) > MAX_ENVELOPE_SIZE - 200 for e in big)
    proof = ForkProof.of(*big)
    assert ForkProof.decode(proof.encode()) == proof
