"""Wire messages and sync planning (protocol/wire.py): round trips, refusals, and the
rule that a pull plan brings exactly what the peer holds and we lack."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec, wire
from protocol.chain import Head
from protocol.entry import ZERO_ID, make_entry
from protocol.errors import ProtocolError
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

SETTINGS = settings(max_examples=150, deadline=None)
KEY = SigningKey.from_seed(hashlib.sha256(b"wire-alice").digest())

b32 = st.binary(min_size=32, max_size=32)
seqs = st.integers(1, 2**63 - 1)
addrs = st.lists(
    st.builds(lambda p: f"/ip4/127.0.0.1/tcp/{p}", st.integers(0, 65535)), max_size=wire.MAX_ADDRS
).map(tuple)

epochs = st.binary(min_size=wire.EPOCH_SIZE, max_size=wire.EPOCH_SIZE)
cursors = st.builds(wire.Cursor, epochs, st.integers(0, 2**63 - 1))


@st.composite
def changes_pages(draw) -> wire.Heads:
    """A changes page as a listener sends it: distinct authors in change order, ``next``
    (if more remain) the counter of the last, below ``upto``."""
    heads = draw(st.lists(st.tuples(b32, seqs, b32), max_size=12, unique_by=lambda h: h[0]))
    since = draw(st.integers(0, 2**40))
    more = bool(heads) and draw(st.booleans())
    last = since + len(heads) + draw(st.integers(0, 50))
    upto = last + (draw(st.integers(1, 50)) if more else 0)
    return wire.Heads(tuple(heads), last if more else None, draw(epochs), upto, since)


messages = st.one_of(
    st.just(wire.HeadsQuery()),
    st.builds(wire.HeadsQuery, st.none() | b32, cursors),
    changes_pages(),
    st.lists(st.tuples(b32, seqs, b32), max_size=20, unique_by=lambda h: h[0]).map(
        lambda hs: wire.Heads(tuple(sorted(hs)))
    ).flatmap(lambda h: st.builds(lambda epoch, upto: wire.Heads(h.heads, None, epoch, upto), epochs, seqs)),
    st.lists(st.tuples(b32, seqs, b32), max_size=20, unique_by=lambda h: h[0]).map(
        lambda hs: wire.Heads(tuple(sorted(hs)))
    ),
    st.builds(wire.Get, b32, seqs, st.integers(1, wire.MAX_BATCH)),
    st.builds(wire.Entries, b32, seqs, st.lists(st.binary(max_size=64), max_size=5).map(tuple)),
    st.builds(wire.Pex, addrs),
    st.lists(st.tuples(b32, addrs), max_size=wire.MAX_PEERS).map(lambda ps: wire.Peers(tuple(ps))),
)


@SETTINGS
@given(messages)
def test_every_message_round_trips_through_a_frame(msg):
    data = wire.frame(msg)
    n = wire.frame_length(data[: wire.FRAME_HEADER])
    assert n == len(data) - wire.FRAME_HEADER
    assert wire.decode_message(data[wire.FRAME_HEADER :]) == msg


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_but_a_protocol_error(data):
    try:
        wire.decode_message(data)
    except ProtocolError:
        pass


@SETTINGS
@given(messages, st.data())
def test_a_changed_byte_is_refused_or_decodes_to_a_valid_message(msg, data):
    raw = bytearray(wire.encode_message(msg))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    try:
        again = wire.decode_message(bytes(raw))
    except ProtocolError:
        return
    assert wire.encode_message(again) == bytes(raw)  # only canonical bytes are ever accepted


@pytest.mark.parametrize("n", [0, wire.MAX_FRAME + 1, 2**32 - 1])
def test_frame_length_out_of_range_is_refused(n):
    with pytest.raises(wire.WireError):
        wire.frame_length(struct.pack(">I", n))


def test_truncated_header_is_refused():
    with pytest.raises(wire.WireError, match="truncated"):
        wire.frame_length(b"\x00\x01")


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"type": "heads?", "x": 1}, "unexpected"),
        ({"type": "get", "author": b"a" * 32, "start": 0, "limit": 1}, "start"),
        ({"type": "get", "author": b"a" * 32, "start": 1, "limit": wire.MAX_BATCH + 1}, "limit"),
        ({"type": "get", "author": b"a" * 31, "start": 1, "limit": 1}, "author"),
        ({"type": "heads", "heads": [[b"b" * 32, 1, b"i" * 32], [b"a" * 32, 1, b"i" * 32]]}, "sorted"),
        ({"type": "heads", "heads": [[b"a" * 32, 0, b"i" * 32]]}, "seq"),
        ({"type": "entries", "author": b"a" * 32, "start": 1, "entries": ["text"]}, "envelopes"),
        ({"type": "pex", "addrs": ["not-an-addr"]}, "multiaddr"),
        ({"type": "pex", "addrs": ["/ip4/1.1.1.1/tcp/1"] * (wire.MAX_ADDRS + 1)}, "limit"),
        ({"type": "what"}, "unknown message"),
        ({"kind": "heads?"}, "type"),
        ([1, 2], "type"),
    ],
)
def test_bad_messages_name_what_is_wrong(doc, words):
    with pytest.raises(ProtocolError, match=words):
        wire.decode_message(codec.encode(doc))


E16 = b"\x07" * wire.EPOCH_SIZE
H1 = [b"a" * 32, 1, b"i" * 32]


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"type": "heads?", "since": [E16, 1]}, "map"),
        ({"type": "heads?", "since": {"epoch": E16}}, "missing"),
        ({"type": "heads?", "since": {"counter": 1, "epoch": b"short"}}, "epoch"),
        ({"type": "heads?", "since": {"counter": -1, "epoch": E16}}, "counter"),
        ({"type": "heads", "heads": [], "epoch": E16}, "together"),
        ({"type": "heads", "heads": [], "upto": 3}, "together"),
        ({"type": "heads", "heads": [], "since": 1}, "together"),
        ({"type": "heads", "heads": [], "epoch": E16, "upto": 3, "since": 4}, "since"),
        ({"type": "heads", "heads": [H1, H1], "epoch": E16, "upto": 9, "since": 1}, "repeats"),
        ({"type": "heads", "heads": [H1], "epoch": E16, "upto": 9, "since": 1, "next": 9}, "next"),
        ({"type": "heads", "heads": [H1], "epoch": E16, "upto": 9, "since": 1, "next": 1}, "next"),
        ({"type": "heads", "heads": [], "epoch": E16, "upto": 9, "since": 1, "next": 5}, "next"),
        ({"type": "heads", "heads": [H1], "epoch": E16, "upto": 9, "since": 1, "next": b"a" * 32}, "next"),
        ({"type": "heads", "heads": [H1, [b"b" * 32, 1, b"i" * 32]], "epoch": E16, "upto": 2, "since": 1},
         "2 chains changed in 1"),
        ({"type": "heads", "heads": [H1], "epoch": E16, "upto": 9, "next": 3}, "32 bytes"),
    ],
)
def test_bad_cursor_fields_name_what_is_wrong(doc, words):
    with pytest.raises(ProtocolError, match=words):
        wire.decode_message(codec.encode(doc))


@SETTINGS
@given(cursors, cursors)
def test_a_cursor_holds_only_in_its_own_feed_and_never_beyond_its_counter(since, mark):
    assert wire.cursor_holds(since, mark) == (since.epoch == mark.epoch and since.counter <= mark.counter)
    assert wire.cursor_holds(mark, mark)
    if mark.counter < 2**63 - 1:
        assert not wire.cursor_holds(wire.Cursor(mark.epoch, mark.counter + 1), mark)


@SETTINGS
@given(st.lists(seqs, max_size=30, unique=True), st.integers(1, 8), epochs)
def test_a_changes_page_is_the_first_changes_in_order_and_names_the_last_when_more_remain(counters, page, epoch):
    counters = sorted(counters)
    since = counters[0] - 1 if counters else 0
    upto = counters[-1] if counters else 0
    changes = [(c, Head(bytes([i]) * 32, 1 + i, bytes(32), 0)) for i, c in enumerate(counters)]
    msg = wire.changes_message(changes, since, wire.Cursor(epoch, upto), page)
    assert [h[0] for h in msg.heads] == [h.author for _, h in changes[:page]]
    assert msg.next == (counters[page - 1] if len(counters) > page else None)
    assert (msg.epoch, msg.upto, msg.since) == (epoch, upto, since)
    assert wire.decode_message(wire.encode_message(msg)) == msg


def test_a_query_without_a_cursor_is_answered_as_before_cursors():
    hs = {bytes([i]) * 32: Head(bytes([i]) * 32, 1, ZERO_ID, 0) for i in (3, 1, 2)}
    plain = wire.heads_message(hs)
    assert wire.encode_message(plain) == codec.encode({"type": "heads", "heads": [[a, 1, ZERO_ID] for a in sorted(hs)]})
    marked = wire.heads_message(hs, mark=wire.Cursor(b"\x01" * 16, 7))
    assert (marked.heads, marked.next, marked.mark, marked.since) == (plain.heads, None, wire.Cursor(b"\x01" * 16, 7), None)


def test_an_oversize_answer_is_trimmed_to_one_frame():
    big = [b"x" * 100_000] * 200  # 20 MB asked for: more than a frame holds
    answer = wire.answer_get(wire.Get(b"a" * 32, 1, 200), big)
    assert 0 < len(answer.entries) < 200
    assert len(wire.frame(answer)) <= wire.MAX_FRAME + wire.FRAME_HEADER


# -- planning ------------------------------------------------------------------------

heads_maps = st.dictionaries(b32, st.tuples(seqs, b32), max_size=8)


def _heads(m) -> dict:
    return {a: Head(a, s, i, 0) for a, (s, i) in m.items()}


@SETTINGS
@given(heads_maps, heads_maps)
def test_plan_pulls_exactly_what_the_peer_has_beyond_ours(ours_m, theirs_m):
    ours = _heads(ours_m)
    theirs = wire.heads_message(_heads(theirs_m))
    wants = {w.author: w for w in wire.plan_pull(ours, theirs)}
    for author, (seq, id_) in theirs_m.items():
        mine = ours.get(author)
        if mine is None:
            assert wants[author] == wire.Want(author, 1, seq)
        elif seq > mine.seq:
            assert wants[author] == wire.Want(author, mine.seq + 1, seq)
        elif seq == mine.seq and id_ != mine.id:
            assert wants[author].fork_check and wants[author].start == seq
        else:
            assert author not in wants  # unchanged or behind: skipped
    assert set(wants) <= set(theirs_m)


def test_heads_message_is_sorted_and_bounded():
    hs = {bytes([i]) * 32: Head(bytes([i]) * 32, 1, ZERO_ID, 0) for i in (3, 1, 2)}
    msg = wire.heads_message(hs)
    assert [h[0] for h in msg.heads] == sorted(hs)


# -- gossip validation ---------------------------------------------------------------


def _chain(n: int):
    out = []
    for i in range(n):
        kind, body = ("genesis", genesis_body("a")) if i == 0 else ("note", {"text": str(i)})
        out.append(
            make_entry(KEY, seq=i + 1, prev=out[-1].id if out else ZERO_ID, ts=1000 + i, kind=kind, body=body)
        )
    return out


def test_gossip_entries_topic_takes_arrays_of_valid_entries_only():
    es = _chain(3)
    msg = wire.entries_message([e.envelope for e in es])
    assert [e.id for e in wire.check_gossip(wire.TOPIC_ENTRIES, msg)] == [e.id for e in es]
    bad = bytearray(es[1].envelope)
    bad[-1] ^= 1  # a signature bit
    with pytest.raises(ProtocolError, match="signature"):  # one bad entry spoils the message
        wire.check_gossip(wire.TOPIC_ENTRIES, codec.encode([es[0].envelope, bytes(bad)]))
    for data in (es[0].envelope, codec.encode([]), codec.encode(["text"]), msg[:-1],
                 codec.encode([es[0].envelope] * (wire.MAX_GOSSIP_ENTRIES + 1))):
        with pytest.raises(ProtocolError):
            wire.check_gossip(wire.TOPIC_ENTRIES, data)


@SETTINGS
@given(st.lists(st.integers(1, 140_000), max_size=300))
def test_split_entries_keeps_order_and_every_group_fits_one_message(sizes):
    envs = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    groups = wire.split_entries(envs)
    assert [e for g in groups for e in g] == envs
    for g in groups:
        assert 1 <= len(g) <= wire.MAX_GOSSIP_ENTRIES
        assert len(codec.encode(g)) <= wire.MAX_GOSSIP_SIZE or len(g) == 1


def test_gossip_fraud_topic_takes_valid_fork_proofs_only():
    a = _chain(2)[1]
    b = make_entry(KEY, seq=2, prev=a.prev, ts=a.ts, kind="note", body={"text": "other"})
    proof = ForkProof.of(a, b).encode()
    assert wire.check_gossip(wire.TOPIC_FRAUD, proof).seq == 2
    with pytest.raises(ProtocolError):
        wire.check_gossip(wire.TOPIC_FRAUD, codec.encode([a.envelope, a.envelope]))
    with pytest.raises(ProtocolError):
        wire.check_gossip(wire.TOPIC_FRAUD, b"\x00" * (300 * 1024))


def test_unknown_topics_are_refused():
    e = _chain(1)[0]
    with pytest.raises(ProtocolError, match="unknown topic"):
        wire.check_gossip("p2plend/1/other", e.envelope)


# -- the vectors published in docs/protocol.md ---------------------------------------

A = bytes(range(32))
VECTORS = {
    "heads?": wire.HeadsQuery(),
    "get(author=A, start=2, limit=4096)": wire.Get(A, 2, 4096),
    "heads([A, 7, ab×32])": wire.Heads(((A, 7, b"\xab" * 32),)),
    "heads?(after=A)": wire.HeadsQuery(A),
    "heads([A, 7, ab×32], next=A)": wire.Heads(((A, 7, b"\xab" * 32),), next=A),
    'pex(["/ip4/127.0.0.1/tcp/7420"])': wire.Pex(("/ip4/127.0.0.1/tcp/7420",)),
    "heads?(since={E, 5})": wire.HeadsQuery(since=wire.Cursor(bytes(range(16)), 5)),
    "heads?(after=A, since={E, 5})": wire.HeadsQuery(A, wire.Cursor(bytes(range(16)), 5)),
    "heads([A, 7, ab×32], epoch=E, upto=9, since=5)": wire.Heads(((A, 7, b"\xab" * 32),), None, bytes(range(16)), 9, 5),
    "heads([A, 7, ab×32], next=6, epoch=E, upto=9, since=5)": wire.Heads(((A, 7, b"\xab" * 32),), 6, bytes(range(16)),
                                                                          9, 5),
    "heads([A, 7, ab×32], next=A, epoch=E, upto=9)": wire.Heads(((A, 7, b"\xab" * 32),), A, bytes(range(16)), 9),
}


def test_frame_vectors_in_the_protocol_doc_are_what_the_code_produces():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc.split("### Frame vectors", 1)[1].split("```", 2)[1]
    published = {}
    for line in section.strip().splitlines():
        name, _, hexbytes = line.rpartition(" ")
        published[name.strip()] = hexbytes
    assert published.keys() == VECTORS.keys()
    for name, msg in VECTORS.items():
        assert wire.frame(msg).hex() == published[name], name
        assert wire.decode_message(bytes.fromhex(published[name])[4:]) == msg


def test_wildcard_announcements_take_the_observed_ip():
    announced = ("/ip4/0.0.0.0/tcp/7420", "/ip4/10.0.0.5/tcp/7420")
    assert wire.usable_addrs(announced, "192.0.2.7") == ["/ip4/192.0.2.7/tcp/7420", "/ip4/10.0.0.5/tcp/7420"]
    assert wire.usable_addrs(announced, None) == ["/ip4/10.0.0.5/tcp/7420"]
