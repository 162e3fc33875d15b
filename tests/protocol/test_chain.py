"""Chain validation (protocol/chain.py): hypothesis-built chains, then one break at a time."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from protocol.chain import Head, check_entry, check_link, parse_next, validate_chain
from protocol.entry import ZERO_ID, Entry, make_entry
from protocol.envelope import seal
from protocol.errors import ChainError, ProtocolError
from protocol.keys import SigningKey
from protocol.kinds import INVALID, KNOWN, UNKNOWN, core_registry, genesis_body

SETTINGS = settings(max_examples=100, deadline=None)
REG = core_registry()
OTHER = SigningKey.from_seed(hashlib.sha256(b"mallory").digest())

# codes of an entry that does not even parse (decode, envelope, signature, fields)
PARSE_CODES = {"malformed", "oversize", "trailing_bytes", "bad_type", "too_deep", "non_canonical",
               "bad_envelope", "bad_signature", "bad_schema"}

bodies = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
OTHER_KINDS = ["note", "x.custom", "ext.thing-1", "loan.not_yet_known"]


@st.composite
def chains(draw, min_size: int = 1, max_size: int = 30) -> tuple[SigningKey, list[Entry]]:
    """A valid chain: genesis first, then notes and entries of unknown kinds, ts non-decreasing."""
    key = SigningKey.from_seed(draw(st.binary(min_size=32, max_size=32)))
    n = draw(st.integers(min_size, max_size))
    ts = draw(st.integers(1, 2**42))
    entries: list[Entry] = []
    for i in range(n):
        if i == 0:
            kind, body = "genesis", genesis_body(draw(st.none() | st.text(max_size=64)))
        else:
            kind = draw(st.sampled_from(OTHER_KINDS))
            body = {"text": draw(st.text(max_size=20))} if kind == "note" else draw(bodies)
            ts += draw(st.sampled_from([0, 0, 1]) | st.integers(0, 10**7))
        prev = entries[-1].id if entries else ZERO_ID
        entries.append(make_entry(key, seq=i + 1, prev=prev, ts=ts, kind=kind, body=body))
    return key, entries


def envs(entries) -> list[bytes]:
    return [e if isinstance(e, bytes) else e.envelope for e in entries]


def validate(key: SigningKey, entries, **kw) -> list[Entry]:
    return list(validate_chain(envs(entries), author=key.public_key, **kw))


def broken(key: SigningKey, entries, **kw) -> ChainError:
    with pytest.raises(ChainError) as info:
        validate(key, entries, **kw)
    return info.value


def resign(key: SigningKey, e: Entry, **over) -> Entry:
    fields = dict(seq=e.seq, prev=e.prev, ts=e.ts, kind=e.kind, body=e.body)
    fields.update(over)
    return make_entry(key, **fields)


# ------------------------------------------------------------------ valid chains


@SETTINGS
@given(chains())
def test_generated_chains_validate(chain):
    key, entries = chain
    assert validate(key, entries) == entries
    for e in entries:
        status = REG.check(e)
        assert status == (UNKNOWN if e.kind not in ("genesis", "note") else KNOWN)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_a_chain_validates_from_any_head(chain, data):
    key, entries = chain
    k = data.draw(st.integers(0, len(entries) - 1))
    tail = entries[k + 1:]
    assert validate(key, tail, after=Head.of(entries[k])) == tail
    assert validate(key, tail, after=entries[k]) == tail


def test_equal_timestamps_are_fine():
    key = SigningKey.from_seed(bytes(32))
    g = make_entry(key, seq=1, prev=ZERO_ID, ts=7, kind="genesis", body=genesis_body())
    n = make_entry(key, seq=2, prev=g.id, ts=7, kind="note", body={"text": ""})
    assert validate(key, [g, n]) == [g, n]


# ------------------------------------------------------------------ one break at a time


@SETTINGS
@given(chains(min_size=2), st.data())
def test_dropped_entry(chain, data):
    key, entries = chain
    i = data.draw(st.integers(0, len(entries) - 2))  # dropping the last leaves a valid chain
    err = broken(key, entries[:i] + entries[i + 1:])
    assert (err.code, err.author, err.seq) == ("bad_seq", key.public_key, i + 1)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_swapped_neighbours(chain, data):
    key, entries = chain
    i = data.draw(st.integers(0, len(entries) - 2))
    swapped = list(entries)
    swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    err = broken(key, swapped)
    assert (err.code, err.author, err.seq) == ("bad_seq", key.public_key, i + 1)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_duplicated_entry(chain, data):
    key, entries = chain
    i = data.draw(st.integers(0, len(entries) - 1))
    err = broken(key, entries[: i + 1] + [entries[i]] + entries[i + 1:])
    assert (err.code, err.author, err.seq) == ("bad_seq", key.public_key, i + 2)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_changed_prev(chain, data):
    key, entries = chain
    i = data.draw(st.integers(1, len(entries) - 1))
    new_prev = data.draw(st.binary(min_size=32, max_size=32) | st.just(ZERO_ID) | st.sampled_from([e.id for e in entries]))
    assume(new_prev != entries[i].prev)
    mutated = list(entries)
    mutated[i] = resign(key, entries[i], prev=new_prev)
    err = broken(key, mutated)
    assert (err.code, err.author, err.seq) == ("bad_prev", key.public_key, i + 1)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_decreasing_ts(chain, data):
    key, entries = chain
    i = data.draw(st.integers(1, len(entries) - 1))
    before = entries[i - 1].ts
    mutated = list(entries)
    mutated[i] = resign(key, entries[i], ts=before - data.draw(st.integers(1, before)))
    err = broken(key, mutated)
    assert (err.code, err.author, err.seq) == ("ts_decreased", key.public_key, i + 1)


@SETTINGS
@given(chains(), st.data())
def test_entry_by_another_author(chain, data):
    key, entries = chain
    assume(key.public_key != OTHER.public_key)
    i = data.draw(st.integers(0, len(entries) - 1))
    mutated = list(entries)
    mutated[i] = resign(OTHER, entries[i])  # same fields, other signer and author
    err = broken(key, mutated)
    assert (err.code, err.author, err.seq) == ("wrong_author", key.public_key, i + 1)


@SETTINGS
@given(chains(), st.sampled_from(["note", "x.custom", "entry"]))
def test_chain_must_start_with_genesis(chain, kind):
    key, entries = chain
    body = {"text": "not genesis"} if kind == "note" else None
    mutated = [resign(key, entries[0], kind=kind, body=body)] + entries[1:]
    # seq 2 now links to the wrong id, but the break is at seq 1
    err = broken(key, mutated)
    assert (err.code, err.author, err.seq) == ("bad_body", key.public_key, 1)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_genesis_after_seq_1(chain, data):
    key, entries = chain
    i = data.draw(st.integers(1, len(entries) - 1))
    mutated = list(entries)
    mutated[i] = resign(key, entries[i], kind="genesis", body=genesis_body())
    err = broken(key, mutated)
    assert (err.code, err.author, err.seq) == ("bad_body", key.public_key, i + 1)


BAD_NOTES = [None, "text", {}, {"text": 5}, {"text": b"x"}, {"txt": "x"}, {"text": "x", "more": 1}, {"text": "x" * 4097}]


@SETTINGS
@given(chains(min_size=2), st.data())
def test_invalid_note_body_does_not_break_the_chain(chain, data):
    """Rule 4 (and kinds.py, rule 2): a body its kind refuses is its kind's owner's to
    judge; the chain stays valid, and the registry classifies the entry as invalid."""
    key, entries = chain
    i = data.draw(st.integers(1, len(entries) - 1))
    mutated = list(entries)
    mutated[i] = resign(key, entries[i], kind="note", body=data.draw(st.sampled_from(BAD_NOTES)))
    for j in range(i + 1, len(mutated)):  # re-link what follows the changed entry
        mutated[j] = resign(key, entries[j], prev=mutated[j - 1].id)
    got = validate(key, mutated)
    assert [e.id for e in got] == [e.id for e in mutated]
    assert REG.classify(got[i]).status == INVALID and REG.classify(got[0]).status == KNOWN


@SETTINGS
@given(chains(min_size=1, max_size=8), st.data())
def test_invalid_genesis_body(chain, data):
    key, entries = chain
    body = data.draw(st.sampled_from([
        {}, None, {"protocol": "p2plend/2"}, {"protocol": "p2plend/1", "name": "x" * 65},
        {"protocol": "p2plend/1", "name": 5}, {"protocol": "p2plend/1", "extra": 1},
    ]))
    mutated = [resign(key, entries[0], body=body)] + entries[1:]
    err = broken(key, mutated)
    assert (err.code, err.author, err.seq) == ("bad_body", key.public_key, 1)


@SETTINGS
@given(chains(), st.data())
def test_corrupted_byte(chain, data):
    key, entries = chain
    i = data.draw(st.integers(0, len(entries) - 1))
    raw = bytearray(entries[i].envelope)
    raw[data.draw(st.integers(0, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    mutated = envs(entries)
    mutated[i] = bytes(raw)
    err = broken(key, mutated)
    assert err.code in PARSE_CODES
    assert (err.author, err.seq) == (key.public_key, i + 1)


@SETTINGS
@given(chains(min_size=2), st.data())
def test_entries_after_the_break_are_not_yielded(chain, data):
    key, entries = chain
    i = data.draw(st.integers(0, len(entries) - 2))
    mutated = entries[:i] + entries[i + 1:]
    got = []
    with pytest.raises(ChainError):
        for e in validate_chain(envs(mutated), author=key.public_key):
            got.append(e)
    assert got == entries[:i]


# ------------------------------------------------------------------ the parts


def _two():
    key = SigningKey.from_seed(bytes(range(32)))
    g = make_entry(key, seq=1, prev=ZERO_ID, ts=10, kind="genesis", body=genesis_body())
    n = make_entry(key, seq=2, prev=g.id, ts=10, kind="note", body={"text": "x"})
    return key, g, n


def test_check_link_start():
    key, g, n = _two()
    check_link(None, g)
    with pytest.raises(ChainError) as info:
        check_link(None, n)
    assert (info.value.code, info.value.seq) == ("bad_seq", 1)
    # an Entry built by hand (not parsed) at seq 1 with a non-zero prev
    fake = Entry(g.author, 1, b"\x01" * 32, g.ts, g.kind, g.body, g.id, g.envelope)
    with pytest.raises(ChainError) as info:
        check_link(None, fake)
    assert (info.value.code, info.value.seq) == ("bad_prev", 1)


def test_check_link_with_head():
    key, g, n = _two()
    check_link(Head.of(g), n)
    for head, code in [
        (Head(g.author, 2, g.id, g.ts), "bad_seq"),
        (Head(g.author, 1, bytes(32), g.ts), "bad_prev"),
        (Head(g.author, 1, g.id, g.ts + 1), "ts_decreased"),
        (Head(OTHER.public_key, 1, g.id, g.ts), "wrong_author"),
    ]:
        with pytest.raises(ChainError) as info:
            check_link(head, n)
        assert info.value.code == code
        assert info.value.seq == head.seq + 1
        assert isinstance(info.value, ProtocolError)


def test_check_entry_checks_links_and_the_registry_reports_kind_status():
    key, g, n = _two()
    check_entry(None, g)
    check_entry(g, n)
    assert REG.classify(g).status == REG.classify(n).status == KNOWN
    u = make_entry(key, seq=2, prev=g.id, ts=11, kind="x.custom", body=[1, 2])
    check_entry(g, u)
    assert REG.classify(u).status == UNKNOWN


def test_parse_next_wrong_author_and_garbage():
    key, g, n = _two()
    with pytest.raises(ChainError) as info:
        parse_next(None, g.envelope, author=OTHER.public_key)
    assert (info.value.code, info.value.author, info.value.seq) == ("wrong_author", OTHER.public_key, 1)
    with pytest.raises(ChainError) as info:
        parse_next(Head.of(g), b"\xc1", author=key.public_key)
    assert (info.value.code, info.value.seq) == ("malformed", 2)
    doc = {"type": "entry", "author": key.public_key, "seq": 1, "prev": b"\x01" * 32, "ts": 0, "kind": "genesis",
           "body": genesis_body()}
    with pytest.raises(ChainError) as info:
        parse_next(None, seal(doc, key).raw, author=key.public_key)
    assert (info.value.code, info.value.seq) == ("bad_schema", 1)


def test_empty_input_is_an_empty_chain():
    assert validate(OTHER, []) == []


# -- extend: the store's rule for a peer's entries, against entry-by-entry checks ------------

from protocol.chain import extend  # noqa: E402


def reference_extend(head, entries, holds, held_at):
    """``extend`` as rules 1 to 5 say it, a Head made after every entry added."""
    top = head.seq if head else 0
    added, duplicates, forks, error = [], 0, [], None
    for seq in sorted(entries):
        e = entries[seq]
        if seq <= top:
            if holds(e.id):
                duplicates += 1
            elif held_at(seq) is not None:
                forks.append((seq, e.id))
            continue
        try:
            check_entry(head, e)
        except ChainError as err:
            error = (err.code, err.seq, err.message)
            break
        added.append(e.id)
        head = Head.of(e)
    return added, duplicates, forks, error, head


_EXT_KEY = SigningKey.from_seed(hashlib.sha256(b"extend").digest())
_EXT_CHAIN: list[Entry] = []
for _seq in range(1, 9):
    _EXT_CHAIN.append(make_entry(_EXT_KEY, seq=_seq, prev=_EXT_CHAIN[-1].id if _EXT_CHAIN else ZERO_ID, ts=10 * _seq,
                                 kind="genesis" if _seq == 1 else "note",
                                 body=genesis_body() if _seq == 1 else {"text": str(_seq)}))
_EXT_OTHER = {seq: make_entry(_EXT_KEY, seq=seq, prev=_EXT_CHAIN[seq - 2].id, ts=seq if seq % 2 else 10 * seq + 1,
                              kind="note", body={"text": "other"}) for seq in range(2, 9)}


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 8), st.dictionaries(st.integers(1, 8), st.booleans(), max_size=8))
def test_extend_adds_checks_and_ends_as_entry_by_entry_checks_do(held, given_seqs):
    """Any held head and any given entries (the chain's own, or another entry at the seq:
    a fork below the head, a bad link or an earlier ts above it): the same added entries,
    duplicates, forks, first error and final head as checking each after a Head of the last."""
    head = Head.of(_EXT_CHAIN[held - 1]) if held else None
    entries = {seq: (_EXT_OTHER[seq] if other and seq in _EXT_OTHER else _EXT_CHAIN[seq - 1])
               for seq, other in given_seqs.items()}
    ids = {e.id for e in _EXT_CHAIN[:held]}
    holds = ids.__contains__
    held_at = lambda seq: _EXT_CHAIN[seq - 1] if seq <= held else None  # noqa: E731
    x = extend(head, entries, holds=holds, held_at=held_at)
    added, duplicates, forks, error, last = reference_extend(head, entries, holds, held_at)
    assert [e.id for e in x.added] == added
    assert x.duplicates == duplicates
    assert [p.seq for p in x.forks] == [seq for seq, _ in forks]
    assert (None if x.error is None else (x.error.code, x.error.seq, x.error.message)) == error
    assert x.head == last and (x.head is None or type(x.head) is Head)
