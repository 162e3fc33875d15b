"""Chain entries (protocol/entry.py)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.chain import Head, validate_chain
from protocol.entry import MAX_KIND_LEN, ZERO_ID, Entry, make_entry, next_entry, parse_entry
from protocol.envelope import SIGNING_PREFIX, countersign, open_envelope, seal
from protocol.errors import ProtocolError, SchemaError, SignatureError
from protocol.keys import SigningKey
from protocol.kinds import core_registry, genesis_body
from protocol.schema import U63_MAX

SETTINGS = settings(max_examples=150, deadline=None)

ALICE = SigningKey.from_seed(hashlib.sha256(b"alice").digest())
BOB = SigningKey.from_seed(hashlib.sha256(b"bob").digest())
PREV = hashlib.sha256(b"some previous entry").digest()

bodies = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
kinds = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z][a-z0-9_-]{0,6}){0,3}", fullmatch=True)


def doc(**over):
    d = {"type": "entry", "author": ALICE.public_key, "seq": 2, "prev": PREV, "ts": 1000, "kind": "note", "body": {"text": "hi"}}
    d.update(over)
    return d


def parse_code(d: dict, *keys: SigningKey) -> str:
    env = seal(d, *(keys or (ALICE,)))
    with pytest.raises(ProtocolError) as info:
        parse_entry(env.raw)
    return info.value.code


# ------------------------------------------------------------------ round trip


@SETTINGS
@given(st.integers(2, U63_MAX), st.binary(min_size=32, max_size=32), st.integers(0, U63_MAX), kinds, bodies)
def test_make_parse_round_trip(seq, prev, ts, kind, body):
    e = make_entry(ALICE, seq=seq, prev=prev, ts=ts, kind=kind, body=body)
    assert (e.author, e.seq, e.prev, e.ts, e.kind, e.body) == (ALICE.public_key, seq, prev, ts, kind, body)
    again = parse_entry(e.envelope)
    assert again == e
    env = open_envelope(e.envelope)
    assert env.id == e.id and env.signers == (ALICE.public_key,)
    assert env.document == e.document() == {
        "type": "entry", "author": ALICE.public_key, "seq": seq, "prev": prev, "ts": ts, "kind": kind, "body": body,
    }
    assert e.id == hashlib.sha256(codec.encode(e.document())).digest()


def test_first_entry():
    e = make_entry(ALICE, seq=1, prev=ZERO_ID, ts=0, kind="genesis", body=genesis_body("alice"))
    assert e.prev == bytes(32)
    assert parse_entry(e.envelope) == e


def test_the_signature_is_the_authors_over_the_prefixed_payload():
    e = make_entry(ALICE, seq=2, prev=PREV, ts=5, kind="note", body={"text": "x"})
    payload, ((pk, sig),) = codec.decode(e.envelope)
    assert pk == ALICE.public_key
    assert sig == ALICE.sign(SIGNING_PREFIX + payload)


# ------------------------------------------------------------------ field rules


@pytest.mark.parametrize(
    "over",
    [
        {"type": "entri"},
        {"type": "Entry"},
        {"author": ALICE.public_key[:31]},
        {"author": ALICE.public_key + b"\0"},
        {"author": ALICE.public_key.hex()},
        {"seq": 0},
        {"seq": -1},
        {"seq": U63_MAX + 1},
        {"seq": True},
        {"seq": "2"},
        {"prev": PREV[:31]},
        {"prev": PREV + b"\0"},
        {"prev": None},
        {"ts": -1},
        {"ts": U63_MAX + 1},
        {"ts": False},
        {"kind": ""},
        {"kind": "Note"},
        {"kind": "1note"},
        {"kind": "_note"},
        {"kind": "note."},
        {"kind": ".note"},
        {"kind": "a..b"},
        {"kind": "loan-x.agreement"},  # '-' only after the first dot
        {"kind": "a.1b"},
        {"kind": "a.B"},
        {"kind": "a b"},
        {"kind": "é"},
        {"kind": "a" * (MAX_KIND_LEN + 1)},
        {"kind": "note\n"},
        {"kind": 5},
        {"extra": 1},
    ],
)
def test_field_rules(over):
    assert parse_code(doc(**over)) == "bad_schema"


@pytest.mark.parametrize("field", ["type", "author", "seq", "prev", "ts", "kind", "body"])
def test_every_field_is_required(field):
    d = doc()
    del d[field]
    if field == "type":
        with pytest.raises(SchemaError):  # not even a document
            seal(d, ALICE)
        return
    assert parse_code(d) == "bad_schema"


@pytest.mark.parametrize("kind", ["a", "note", "x.custom", "loan.agreement", "a_b.c-d", "z9.y-8_x.w", "a" * MAX_KIND_LEN])
def test_kind_names_allowed(kind):
    e = make_entry(ALICE, seq=2, prev=PREV, ts=0, kind=kind, body=None)
    assert parse_entry(e.envelope).kind == kind


def test_limits_of_seq_and_ts():
    for seq, ts in [(1, 0), (U63_MAX, U63_MAX)]:
        prev = ZERO_ID if seq == 1 else PREV
        e = make_entry(ALICE, seq=seq, prev=prev, ts=ts, kind="x", body=None)
        assert parse_entry(e.envelope).seq == seq


def test_seq_1_needs_zero_prev():
    assert parse_code(doc(seq=1, prev=PREV)) == "bad_schema"
    with pytest.raises(SchemaError):
        make_entry(ALICE, seq=1, prev=PREV, ts=0, kind="genesis", body=genesis_body())


def test_signed_by_someone_else():
    assert parse_code(doc(), BOB) == "bad_signature"


def test_signed_by_author_and_someone_else():
    assert parse_code(doc(), ALICE, BOB) == "bad_signature"
    env = countersign(seal(doc(), ALICE), BOB)
    with pytest.raises(SignatureError):
        Entry.from_envelope(env)


def test_not_an_entry_document():
    env = seal({"type": "offer", "amount": 5}, ALICE)
    with pytest.raises(SchemaError):
        parse_entry(env.raw)


@SETTINGS
@given(bodies)
def test_any_body_of_an_unknown_kind_is_readable(body):
    e = make_entry(ALICE, seq=3, prev=PREV, ts=7, kind="x.custom", body=body)
    assert parse_entry(e.envelope).body == body
    assert core_registry().check(e) == "unknown"


def test_make_entry_refuses_what_parse_refuses():
    for kw in [dict(seq=0), dict(ts=-1), dict(kind="Bad"), dict(prev=b"short")]:
        args = dict(seq=2, prev=PREV, ts=1, kind="note", body={"text": "x"})
        args.update(kw)
        with pytest.raises(SchemaError):
            make_entry(ALICE, **args)


def test_size_limit_applies():
    with pytest.raises(SchemaError) as info:
        make_entry(ALICE, seq=2, prev=PREV, ts=1, kind="x", body=b"x" * 200_000)
    assert info.value.code == "oversize"
    e = make_entry(ALICE, seq=2, prev=PREV, ts=1, kind="x", body=b"x" * 1000)
    with pytest.raises(ProtocolError) as info:
        parse_entry(e.envelope, max_size=len(e.envelope) - 1)
    assert info.value.code == "oversize"


# ------------------------------------------------------------------ next_entry


@SETTINGS
@given(st.lists(st.integers(0, 2**45), min_size=1, max_size=25))
def test_next_entry_ts_never_decreases(clock):
    head = None
    entries = []
    for i, now in enumerate(clock):
        e = next_entry(ALICE, head, now_ms=now, kind="genesis" if i == 0 else "note",
                       body=genesis_body() if i == 0 else {"text": str(i)})
        assert e.seq == i + 1
        assert e.prev == (head.id if head else ZERO_ID)
        assert e.ts == (now if head is None else max(now, head.ts))
        assert e.ts >= now or e.ts == head.ts
        entries.append(e)
        head = e if i % 2 else Head.of(e)  # an Entry or a Head both work
    assert all(a.ts <= b.ts for a, b in zip(entries, entries[1:]))
    ok = list(validate_chain([e.envelope for e in entries], author=ALICE.public_key))
    assert ok == entries


def test_next_entry_when_clock_goes_back():
    g = next_entry(ALICE, None, now_ms=5000, kind="genesis", body=genesis_body())
    n = next_entry(ALICE, g, now_ms=10, kind="note", body={"text": "x"})
    assert n.ts == 5000
    n2 = next_entry(ALICE, Head.of(n), now_ms=6000, kind="note", body={"text": "y"})
    assert n2.ts == 6000


def test_next_entry_refuses_another_authors_head():
    g = next_entry(ALICE, None, now_ms=1, kind="genesis", body=genesis_body())
    with pytest.raises(SchemaError):
        next_entry(BOB, g, now_ms=2, kind="note", body={"text": "x"})


def test_body_nests_at_most_31_levels():
    from protocol.errors import EncodeError

    body: object = 0
    for _ in range(31):
        body = [body]
    assert parse_entry(make_entry(ALICE, seq=2, prev=PREV, ts=0, kind="x", body=body).envelope).body == body
    with pytest.raises(EncodeError):
        make_entry(ALICE, seq=2, prev=PREV, ts=0, kind="x", body=[body])
