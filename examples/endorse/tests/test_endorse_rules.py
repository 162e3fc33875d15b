"""The rules (p2pnode_endorse/rules.py): pure, so tested without a node, a store or a
network; Hypothesis for the shapes, examples for each refusal."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from protocol import codec
from protocol.entry import ZERO_ID, make_entry
from protocol.errors import ProtocolError
from protocol.keys import SigningKey
from protocol.kinds import INVALID, KNOWN, UNKNOWN, core_registry

from p2pnode_endorse import EXTENSION, rules

ALICE = SigningKey.from_seed(hashlib.sha256(b"alice").digest())
BOB = SigningKey.from_seed(hashlib.sha256(b"bob").digest())
texts = st.text(min_size=1, max_size=rules.MAX_TEXT).filter(str.strip)


def endorsement(key: SigningKey, body, seq: int = 2):
    return make_entry(key, seq=seq, prev=hashlib.sha256(b"prev").digest(), ts=seq, kind=rules.KIND, body=body)


@given(texts, st.integers(2, 2**40))
def test_a_valid_endorsement_is_known_and_indexed_under_the_peer(text, seq):
    e = endorsement(ALICE, rules.body(BOB.public_key, text), seq)
    rules.validate(e)
    [key] = rules.index(e)
    assert key.startswith(BOB.public_key)  # one prefix scan of the peer finds it
    assert rules.split_index_key(key) == (BOB.public_key, ALICE.public_key, seq)
    assert len(e.envelope) <= rules.MAX_ENTRY  # the stream protocol carries any valid one


@pytest.mark.parametrize("body, code", [
    ({"peer": ALICE.public_key, "text": "me"}, "self_endorsement"),
    ({"peer": BOB.public_key, "text": " \n"}, "bad_text"),
    ({"peer": BOB.public_key, "text": "x" * (rules.MAX_TEXT + 1)}, "bad_schema"),
    ({"peer": BOB.public_key[:31], "text": "short key"}, "bad_schema"),
    ({"peer": BOB.public_key, "text": "hi", "stars": 5}, "bad_schema"),
    ({"peer": BOB.public_key}, "bad_schema"),
    ("not a map", "bad_schema"),
])
def test_a_body_the_rules_refuse_is_invalid_for_the_owner_and_unknown_without_it(body, code):
    e = endorsement(ALICE, body)  # any body can be signed: the core does not judge it
    with pytest.raises(ProtocolError) as refused:
        rules.validate(e)
    assert refused.value.code == code
    with_it = core_registry()
    with_it.register(EXTENSION.kinds[0], EXTENSION.name)
    assert with_it.classify(e).status == INVALID and with_it.index_keys(e) is None
    assert core_registry().classify(e).status == UNKNOWN


def test_the_largest_valid_endorsement_fits_a_frame_entry():
    e = endorsement(ALICE, rules.body(BOB.public_key, "\U0001F600" * rules.MAX_TEXT), seq=2**62)
    rules.validate(e)
    assert len(e.envelope) <= rules.MAX_ENTRY


@given(st.text(max_size=rules.MAX_NOTE), st.integers(0, 2**62))
def test_an_ask_round_trips_and_a_changed_byte_is_refused(note, ts):
    ask = rules.make_ask(ALICE, note, ts)
    assert rules.parse_ask(ask.raw) == ask and len(ask.raw) <= rules.MAX_ASK_SIZE
    broken = bytearray(ask.raw)
    broken[-1] ^= 1  # the signature's last byte
    with pytest.raises(ProtocolError):
        rules.check_ask(bytes(broken))


def test_an_ask_signed_by_another_than_its_author_is_refused():
    from protocol.envelope import seal

    env = seal({"type": rules.ASK_TYPE, "author": ALICE.public_key, "ts": 1, "note": ""}, BOB)
    with pytest.raises(ProtocolError):
        rules.check_ask(env.raw)


def test_freshness_is_the_receivers_judgement_with_its_clock():
    ask = rules.make_ask(ALICE, "", 1_000_000)
    assert rules.is_fresh(ask, 1_000_000 + 60_000, ttl_ms=60_000)
    assert not rules.is_fresh(ask, 1_000_000 + 60_001, ttl_ms=60_000)
    assert not rules.is_fresh(ask, 1_000_000 - rules.ASK_FUTURE_MS - 1, ttl_ms=60_000)  # from the future


@given(st.integers(1, rules.MAX_ANSWER))
def test_stream_messages_round_trip(limit):
    w = rules.want(BOB.public_key, limit)
    assert rules.decode(rules.encode(w)) == w
    e = endorsement(ALICE, rules.body(BOB.public_key, "good"))
    h = rules.have([e.envelope])
    assert rules.endorsements_in(rules.decode(rules.encode(h)), BOB.public_key, limit) == [e]


@pytest.mark.parametrize("msg", [
    {"t": "want", "of": b"x" * 32, "limit": 0},
    {"t": "want", "of": b"x" * 32, "limit": rules.MAX_ANSWER + 1},
    {"t": "want", "of": b"x" * 31, "limit": 1},
    {"t": "have", "entries": [b"x" * (rules.MAX_ENTRY + 1)]},
    {"t": "have", "entries": [b"x"] * (rules.MAX_ANSWER + 1)},
    {"t": "gimme"},
    [1, 2],
])
def test_a_message_breaking_the_protocol_is_refused(msg):
    with pytest.raises(ProtocolError):
        rules.decode(codec.encode(msg))


def test_an_answer_is_refused_whole_if_one_entry_is_not_an_endorsement_of_whom_was_asked():
    good = endorsement(ALICE, rules.body(BOB.public_key, "good"))
    of_another = endorsement(BOB, rules.body(ALICE.public_key, "also good"))
    invalid = endorsement(ALICE, {"peer": ALICE.public_key, "text": "me"})
    note = make_entry(ALICE, seq=1, prev=ZERO_ID, ts=1, kind="note", body={"text": "hi"})
    for bad in (of_another, invalid, note):
        with pytest.raises(ProtocolError):
            rules.endorsements_in(rules.have([good.envelope, bad.envelope]), BOB.public_key, 2)
    with pytest.raises(ProtocolError):  # more than asked for
        rules.endorsements_in(rules.have([good.envelope] * 2), BOB.public_key, 1)


def test_the_kind_is_known_with_the_extension():
    reg = core_registry()
    reg.register(EXTENSION.kinds[0], EXTENSION.name)
    assert reg.classify(endorsement(ALICE, rules.body(BOB.public_key, "ok"))).status == KNOWN


def test_what_the_cli_imports_imports_no_trio_and_no_libp2p():
    """Contract rule 1: the CLI imports the declaration (and the commands) on every command."""
    code = ("import sys, p2pnode_endorse, p2pnode_endorse.cli, p2pnode_endorse.verify; "
            "sys.exit(sorted({'trio', 'libp2p'} & set(sys.modules)) or None)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
