"""The registry of entry kinds (protocol/kinds.py)."""

from __future__ import annotations

import hashlib

import pytest

from protocol.chain import validate_chain
from protocol.entry import ZERO_ID, Entry, make_entry
from protocol.errors import SchemaError
from protocol.keys import SigningKey
from protocol.kinds import (
    INVALID,
    CORE_KINDS,
    KNOWN,
    MAX_NAME_LEN,
    MAX_NOTE_LEN,
    UNKNOWN,
    Kind,
    KindRegistry,
    core_registry,
    genesis_body,
)
from protocol.schema import check_fields, uint

KEY = SigningKey.from_seed(hashlib.sha256(b"kinds").digest())
GENESIS = make_entry(KEY, seq=1, prev=ZERO_ID, ts=1, kind="genesis", body=genesis_body("k"))


def entry(kind: str, body, seq: int = 2) -> Entry:
    return make_entry(KEY, seq=seq, prev=GENESIS.id if seq == 2 else hashlib.sha256(b"p").digest(), ts=2, kind=kind, body=body)


def _amount(e: Entry) -> None:
    check_fields(e.body, {"amount": uint(1, 10**12)}, what="x.loan body")


X_LOAN = Kind("x.loan", "a test extension", _amount)


def test_core_kinds_present():
    reg = core_registry()
    assert "genesis" in reg and "note" in reg
    assert [k.name for k in reg] == ["genesis", "note"]  # lending's kinds are its own (test_contract.py)
    assert {k.name for k in CORE_KINDS} == {"genesis", "note"} and reg.owners() == {"core"}
    assert reg.get("genesis").description
    assert reg.get("nope") is None


def test_duplicate_name_refused():
    reg = core_registry()
    with pytest.raises(ValueError):
        reg.register(Kind("note", "a replacement", lambda e: None))
    reg.register(X_LOAN)
    with pytest.raises(ValueError):
        reg.register(Kind("x.loan", "again", lambda e: None))
    with pytest.raises(ValueError):
        KindRegistry(CORE_KINDS + CORE_KINDS[:1])
    # the core rule is still in force
    with pytest.raises(SchemaError):
        reg.check(entry("note", {"text": 1}))


def test_copy_is_independent():
    reg = core_registry()
    ext = reg.copy()
    ext.register(X_LOAN)
    assert "x.loan" in ext and "x.loan" not in reg
    assert core_registry() is not reg and "x.loan" not in core_registry()


def test_extension_kind_is_enforced_for_signing_and_classified_for_reading():
    reg = core_registry()
    good, bad = entry("x.loan", {"amount": 5}), entry("x.loan", {"amount": 0})
    assert reg.check(good) == UNKNOWN
    assert reg.check(bad) == UNKNOWN  # unknown here: stored and forwarded, not judged
    reg.register(X_LOAN, "ext")
    assert reg.check(good) == KNOWN
    with pytest.raises(SchemaError):
        reg.check(bad)
    with pytest.raises(SchemaError):
        reg.check(entry("x.loan", {"amount": 5, "extra": 1}))
    assert reg.classify(good) == (KNOWN, "ext", None)
    assert reg.classify(bad).status == INVALID and reg.classify(bad).owner == "ext"
    assert core_registry().classify(bad).status == UNKNOWN
    # a chain is valid by the core's rules alone, with the extension or without it (rule 2)
    assert len(list(validate_chain([GENESIS.envelope, good.envelope], author=KEY.public_key))) == 2
    assert len(list(validate_chain([GENESIS.envelope, bad.envelope], author=KEY.public_key))) == 2


def test_unknown_kind_reports_unknown():
    reg = core_registry()
    for kind in ("x.custom", "loan.unheard_of", "zzz"):
        assert reg.check(entry(kind, {"anything": [1, b"2", None]})) == UNKNOWN


def test_seq_1_must_be_genesis_whatever_the_kind():
    reg = core_registry()
    reg.register(X_LOAN)
    for kind, body in [("note", {"text": "x"}), ("x.custom", None), ("x.loan", {"amount": 1})]:
        with pytest.raises(SchemaError):
            reg.check(make_entry(KEY, seq=1, prev=ZERO_ID, ts=0, kind=kind, body=body))
    assert reg.check(GENESIS) == KNOWN


def test_genesis_body():
    reg = core_registry()
    assert genesis_body() == {"protocol": "p2plend/1"}
    assert genesis_body("") == {"protocol": "p2plend/1"}
    assert genesis_body("alice") == {"protocol": "p2plend/1", "name": "alice"}
    ok = [{"protocol": "p2plend/1"}, {"protocol": "p2plend/1", "name": ""}, {"protocol": "p2plend/1", "name": "é" * MAX_NAME_LEN}]
    bad = [
        {}, None, [], {"protocol": "p2plend/2"}, {"protocol": b"p2plend/1"},
        {"protocol": "p2plend/1", "name": "x" * (MAX_NAME_LEN + 1)}, {"protocol": "p2plend/1", "name": None},
        {"protocol": "p2plend/1", "other": 1}, {"name": "x"},
    ]
    for body in ok:
        assert reg.check(make_entry(KEY, seq=1, prev=ZERO_ID, ts=0, kind="genesis", body=body)) == KNOWN
    for body in bad:
        with pytest.raises(SchemaError):
            reg.check(make_entry(KEY, seq=1, prev=ZERO_ID, ts=0, kind="genesis", body=body))


def test_genesis_only_at_seq_1():
    with pytest.raises(SchemaError):
        core_registry().check(entry("genesis", genesis_body()))


def test_note_body():
    reg = core_registry()
    for text in ("", "x", "x" * MAX_NOTE_LEN, "€" * MAX_NOTE_LEN):  # the limit counts code points
        assert reg.check(entry("note", {"text": text})) == KNOWN
    for body in ({"text": "x" * (MAX_NOTE_LEN + 1)}, {"text": None}, {"text": "x", "lang": "en"}, {}, "x", None):
        with pytest.raises(SchemaError):
            reg.check(entry("note", body))
