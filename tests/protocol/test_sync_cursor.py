"""Pulls with a cursor (protocol/sync.py, rules 1, 7 and 8; wire.py rule 2).

First each transition fed by hand: what a Puller given a cursor asks, what pages it takes
and refuses, what it reads of its own heads, and when its result gives a cursor; and what
the Server reads for a query with a cursor. Then Hypothesis runs pull after pull against a
listener whose chains grow, appear, vanish or whose store is replaced between pulls and
in the middle of them (between heads pages of 2 authors, so that every pull has several),
and checks the promise: after a pull that ends without a change under way, the puller
holds every chain as far as the listener does, however the cursors went; and a pull in
which nothing changed lists no chain and reads none of the puller's heads.

``Feed`` is a model of the store's change feed (``Store.changes``, ``marked_heads_page``),
not a mock of LevelDB: the store's own tests run the real one.
"""

from __future__ import annotations

import hashlib
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import sync, wire
from protocol.chain import Head
from protocol.entry import ZERO_ID, Entry, make_entry
from protocol.errors import ChainError
from protocol.keys import SigningKey
from protocol.kinds import genesis_body
from protocol.sync import (
    ChangesRead,
    Finished,
    HeadsRead,
    Ingested,
    Misbehaved,
    PullState,
    Puller,
    ReadChanges,
    ReadHeads,
    Received,
    Send,
    ServeState,
    Server,
    SyncMisuse,
)

P, S = PullState, ServeState
E1, E2 = b"\x01" * 16, b"\x02" * 16
KEYS = sorted((SigningKey.from_seed(hashlib.sha256(b"cursor-%d" % i).digest()) for i in range(6)),
              key=lambda k: k.public_key)
AUTHORS = [k.public_key for k in KEYS]
A, B, C = AUTHORS[:3]
N = 6  # entries a chain may reach


def _chain(key: SigningKey) -> list[Entry]:
    out: list[Entry] = []
    for seq in range(1, N + 1):
        kind, body = ("genesis", genesis_body("c")) if seq == 1 else ("note", {"text": str(seq)})
        out.append(make_entry(key, seq=seq, prev=out[-1].id if out else ZERO_ID, ts=1_700_000_000_000 + seq,
                              kind=kind, body=body))
    return out


CHAINS = {k.public_key: _chain(k) for k in KEYS}


def head(author: bytes, n: int) -> Head:
    return Head.of(CHAINS[author][n - 1])


def row(author: bytes, n: int) -> tuple[bytes, int, bytes]:
    h = head(author, n)
    return (author, h.seq, h.id)


# -- the Puller, by hand -----------------------------------------------------------------------


def test_a_pull_with_a_cursor_asks_since_it_and_reads_only_the_heads_the_changes_name():
    p = Puller(since=wire.Cursor(E1, 4))
    assert p.begin() == [Send(wire.HeadsQuery(since=wire.Cursor(E1, 4)))]
    page = wire.Heads((row(B, 3), row(A, 2)), None, E1, 6, 4)
    assert p.feed(Received(page)) == [ReadHeads(authors=(B, A))]
    actions = p.feed(HeadsRead({A: head(A, 2), B: head(B, 1)}))
    assert [a.message for a in actions if isinstance(a, Send)] == [wire.Get(B, 2, 2)]
    p.feed(Received(wire.Entries(B, 2, tuple(e.envelope for e in CHAINS[B][1:3]))))
    actions = p.feed(Ingested(2))
    assert isinstance(actions[-1], Finished)
    r = p.result
    assert (r.complete, r.changes, r.heads_received, r.cursor) == (True, True, 2, wire.Cursor(E1, 6))


def test_an_idle_pull_lists_nothing_reads_nothing_and_keeps_the_feed_where_it_is():
    p = Puller(since=wire.Cursor(E1, 9))
    p.begin()
    assert p.feed(Received(wire.Heads((), None, E1, 9, 9))) == [ReadHeads(authors=())]
    actions = p.feed(HeadsRead({}))
    assert isinstance(actions[-1], Finished)
    assert (p.result.heads_received, p.result.cursor, p.result.complete) == (0, wire.Cursor(E1, 9), True)


def test_changes_pages_are_followed_by_next_and_the_later_head_of_a_chain_wins():
    p = Puller(since=wire.Cursor(E1, 0))
    p.begin()
    first = wire.Heads((row(A, 1), row(B, 1)), 2, E1, 5, 0)
    assert p.feed(Received(first)) == [Send(wire.HeadsQuery(since=wire.Cursor(E1, 2)))]
    second = wire.Heads((row(A, 3),), None, E1, 6, 2)  # A changed again while the pages were read
    assert p.feed(Received(second)) == [ReadHeads(authors=(A, B))]
    actions = p.feed(HeadsRead({}))
    assert [a.message for a in actions if isinstance(a, Send)] == [wire.Get(A, 1, 3)]
    assert p.result.target == 3 + 1 and p.result.heads_received == 3


def test_a_full_page_answers_a_cursor_that_does_not_hold_and_the_pull_pages_on_by_author():
    p = Puller(since=wire.NO_CURSOR)
    assert p.begin() == [Send(wire.HeadsQuery(since=wire.NO_CURSOR))]
    first = wire.Heads((row(A, 1),), A, E2, 7)
    assert p.feed(Received(first)) == [Send(wire.HeadsQuery(A, wire.NO_CURSOR))]
    assert p.feed(Received(wire.Heads((row(B, 2),), None, E2, 8))) == [ReadHeads()]
    actions = p.feed(HeadsRead({A: head(A, 1), B: head(B, 2)}))
    assert isinstance(actions[-1], Finished)
    assert (p.result.changes, p.result.cursor) == (False, wire.Cursor(E2, 7))  # the first page's mark


def test_full_pages_without_a_mark_are_a_listener_without_a_feed_and_give_no_cursor():
    p = Puller(since=wire.NO_CURSOR)
    p.begin()
    assert p.feed(Received(wire.Heads((row(A, 1),), A))) == [Send(wire.HeadsQuery(A, wire.NO_CURSOR))]
    assert p.feed(Received(wire.Heads((row(B, 1),)))) == [ReadHeads()]
    actions = p.feed(HeadsRead({A: head(A, 1), B: head(B, 1)}))
    assert isinstance(actions[-1], Finished) and p.result.complete and p.result.cursor is None


def test_a_pull_without_a_cursor_is_the_pull_before_cursors_and_gives_none():
    p = Puller()
    assert p.begin() == [Send(wire.HeadsQuery())]
    p.feed(Received(wire.Heads(())))
    actions = p.feed(HeadsRead({}))
    assert isinstance(actions[-1], Finished) and p.result.complete and p.result.cursor is None


@pytest.mark.parametrize("since, pages, why", [
    (None, [wire.Heads((), None, E1, 3)], "a mark nobody asked for"),
    (None, [wire.Heads((), None, E1, 3, 1)], "changes nobody asked for"),
    (wire.Cursor(E1, 2), [wire.Heads((), None, E1, 3, 1)], "changes since another counter"),
    (wire.Cursor(E1, 2), [wire.Heads((), None, E2, 3, 2)], "changes of another feed"),
    (wire.NO_CURSOR, [wire.Heads((row(A, 1),), A), wire.Heads((row(B, 1),), None, E1, 3)],
     "a mark after pages without one"),
    (wire.NO_CURSOR, [wire.Heads((row(A, 1),), A, E1, 3), wire.Heads((row(B, 1),))],
     "a page without the mark the pages before carried"),
    (wire.Cursor(E1, 0), [wire.Heads((row(A, 1),), 1, E1, 3, 0), wire.Heads((), None, E1, 3)],
     "a full page in the middle of the changes"),
    (wire.NO_CURSOR, [wire.Heads((row(A, 1),), A, E1, 3), wire.Heads((row(B, 1),), None, E2, 3)],
     "the pages of two stores"),
    (wire.NO_CURSOR, [wire.Heads((row(B, 1),), B, E1, 3), wire.Heads((row(A, 1),), None, E1, 3)],
     "a page before the author asked from"),
])
def test_a_page_that_does_not_answer_what_was_asked_is_bad_message(since, pages, why):
    p = Puller(since=since)
    p.begin()
    for page in pages[:-1]:
        assert isinstance(p.feed(Received(page))[0], Send), why
    [action] = p.feed(Received(pages[-1]))
    assert isinstance(action, Misbehaved) and action.code == "bad_message", why
    assert p.state is P.FAILED


def test_a_pull_that_is_cut_short_or_for_some_authors_gives_no_cursor():
    p = Puller(since=wire.Cursor(E1, 1))
    p.begin()
    p.feed(Received(wire.Heads((row(A, 2),), None, E1, 4, 1)))
    p.feed(HeadsRead({}))
    actions = p.feed(Received(wire.Entries(A, 1, ())))  # the peer no longer holds what it listed
    assert isinstance(actions[-1], Finished) and not p.result.complete and p.result.cursor is None
    p = Puller(since=wire.Cursor(E1, 1), only=frozenset([A]))
    p.begin()
    p.feed(Received(wire.Heads((), None, E1, 4, 1)))
    p.feed(HeadsRead({}))
    assert p.result.complete and p.result.cursor is None
    p = Puller(since=wire.Cursor(E1, 1))
    p.begin()
    p.feed(Received(wire.Heads((row(A, 2),), None, E1, 4, 1)))
    p.feed(HeadsRead({}))
    p.feed(Received(wire.Entries(A, 1, tuple(e.envelope for e in CHAINS[A][:2]))))
    from protocol.errors import ChainError
    actions = p.feed(Ingested(0, errors=(ChainError("bad", author=A, seq=1, code="bad_signature"),)))
    assert isinstance(actions[-1], Finished) and p.result.cursor is None


def test_chains_left_out_for_the_stranger_budget_do_not_hold_the_cursor_back():
    p = Puller(since=wire.Cursor(E1, 1), new_chain=lambda author: False)
    p.begin()
    p.feed(Received(wire.Heads((row(A, 2),), None, E1, 4, 1)))
    actions = p.feed(HeadsRead({}))
    assert isinstance(actions[-1], Finished) and p.result.authors_behind == 0
    assert p.result.cursor == wire.Cursor(E1, 4)


def test_the_pages_after_max_head_pages_are_not_read_and_the_pull_gives_no_cursor():
    p = Puller(since=wire.Cursor(E1, 0))
    p.begin()
    for i in range(sync.MAX_HEAD_PAGES - 1):
        p.feed(Received(wire.Heads((row(A, 1),), i + 1, E1, 10**6, i)))
    assert p.feed(Received(wire.Heads((row(A, 1),), sync.MAX_HEAD_PAGES, E1, 10**6, sync.MAX_HEAD_PAGES - 1))) \
        == [ReadHeads(authors=(A,))]
    p.feed(HeadsRead({A: head(A, 1)}))
    assert p.result.complete and p.result.cursor is None


# -- the Server, by hand -----------------------------------------------------------------------


def test_the_server_reads_changes_for_a_cursor_and_answers_with_its_mark():
    s = Server()
    since = wire.Cursor(E1, 3)
    assert s.feed(Received(wire.HeadsQuery(since=since))) == [ReadChanges(since, wire.HEADS_PAGE + 1)]
    assert s.state is S.READING_CHANGES
    changes = ((5, head(B, 2)), (7, head(A, 4)))
    [send] = s.feed(ChangesRead(wire.Cursor(E1, 8), changes))
    assert send == Send(wire.Heads((row(B, 2), row(A, 4)), None, E1, 8, 3))
    assert s.state is S.SERVING and s.requests == 1


def test_the_server_answers_a_cursor_that_does_not_hold_with_the_full_page_and_its_mark():
    s = Server()
    s.feed(Received(wire.HeadsQuery(since=wire.Cursor(E2, 3))))
    assert s.feed(ChangesRead(wire.Cursor(E1, 8), None)) == [ReadHeads(None, wire.HEADS_PAGE + 1, marked=True)]
    assert s.feed(HeadsRead({A: head(A, 1)}, wire.Cursor(E1, 8))) == [Send(wire.Heads((row(A, 1),), None, E1, 8))]
    s.feed(Received(wire.HeadsQuery(A, wire.Cursor(E2, 3))))  # the next full page, by author
    assert s.state is S.READING_HEADS
    assert s.feed(HeadsRead({}, wire.Cursor(E1, 8))) == [Send(wire.Heads((), None, E1, 8))]
    assert s.requests == 2 and s.events <= s.max_events


def test_the_server_is_not_fed_reads_that_do_not_fit_the_cursor():
    s = Server()
    s.feed(Received(wire.HeadsQuery(since=wire.Cursor(E1, 3))))
    with pytest.raises(SyncMisuse):
        s.feed(ChangesRead(wire.Cursor(E1, 8), None))  # it holds: the changes must be read
    s = Server()
    s.feed(Received(wire.HeadsQuery(since=wire.Cursor(E1, 9))))
    with pytest.raises(SyncMisuse):
        s.feed(ChangesRead(wire.Cursor(E1, 8), ()))  # from the feed's future: it does not hold
    s = Server()
    s.feed(Received(wire.HeadsQuery()))
    with pytest.raises(SyncMisuse):
        s.feed(HeadsRead({}, wire.Cursor(E1, 8)))  # no cursor asked: no mark sent


# -- pull after pull against a listener that changes ---------------------------------------------


class Feed:
    """A listener's chains and change feed, by the store's rules: each write that changes a
    chain's head gives it the next counter; a dropped chain leaves the feed; a replaced
    store has a new epoch and a feed made afresh."""

    def __init__(self) -> None:
        self.epoch = E1
        self.counter = 0
        self.held: dict[bytes, int] = {}  # author -> entries held
        self.at: dict[bytes, int] = {}  # author -> counter of its last change

    def grow(self, author: bytes, n: int) -> None:
        if self.held.get(author, 0) >= n:
            return
        self.held[author] = n
        self.counter += 1
        self.at[author] = self.counter

    def drop(self, author: bytes) -> None:
        self.held.pop(author, None)
        self.at.pop(author, None)

    def replace(self) -> None:
        self.epoch = bytes([self.epoch[0] + 1]) * 16
        self.counter = 0
        for author in sorted(self.held):
            self.counter += 1
            self.at[author] = self.counter

    def mark(self) -> wire.Cursor:
        return wire.Cursor(self.epoch, self.counter)

    def heads(self) -> dict[bytes, Head]:
        return {a: head(a, n) for a, n in self.held.items()}

    def answer(self, action) -> sync.Event:
        if isinstance(action, ReadChanges):
            if not wire.cursor_holds(action.since, self.mark()):
                return ChangesRead(self.mark(), None)
            changed = sorted((c, a) for a, c in self.at.items() if c > action.since.counter)
            return ChangesRead(self.mark(), tuple((c, head(a, self.held[a])) for c, a in changed[:action.limit]))
        if isinstance(action, ReadHeads):
            after = action.after or b""
            page = {a: h for a, h in sorted(self.heads().items()) if a > after}
            page = dict(list(page.items())[:action.limit])
            return HeadsRead(page, self.mark() if action.marked else None)
        assert isinstance(action, sync.ReadChain)
        n = self.held.get(action.author, 0)
        return sync.ChainRead(tuple(e.envelope for e in CHAINS[action.author][action.start - 1:n][:action.limit]))


class Node:
    """The puller's side: chains from seq 1, and the reads it is asked for."""

    def __init__(self) -> None:
        self.held: dict[bytes, int] = {}
        self.full_reads = 0
        self.heads_read = 0
        self.refusing: set[bytes] = set()  # authors whose batches fail to verify in this pull

    def answer(self, action) -> sync.Event:
        if isinstance(action, ReadHeads):
            if action.authors is None:
                self.full_reads += 1
                return HeadsRead({a: head(a, n) for a, n in self.held.items()})
            self.heads_read += len(action.authors)
            return HeadsRead({a: head(a, self.held[a]) for a in action.authors if a in self.held})
        assert isinstance(action, sync.Ingest)
        if action.author in self.refusing:
            return Ingested(0, errors=(ChainError("refused", author=action.author, seq=1, code="bad_signature"),))
        got = [e for e in CHAINS[action.author] if e.envelope in set(action.envelopes)]
        have = self.held.get(action.author, 0)
        added = 0
        for e in sorted(got, key=lambda e: e.seq):
            if e.seq == have + 1:
                have, added = e.seq, added + 1
        self.held[action.author] = have
        return Ingested(added)


def run_pull(feed: Feed, node: Node, since: wire.Cursor | None, changes: list) -> sync.PullResult:
    """One pull, the listener applying ``changes[i]`` (a function of the feed) before it
    answers its i-th request: changes under way while the pull reads its pages."""
    puller, server = Puller(since=since), Server()
    actions, outbox, answered = list(puller.begin()), [], 0
    for _ in range(10_000):
        while actions:  # the node's work is done at once; messages wait their turn (pipelining)
            a = actions.pop(0)
            if isinstance(a, Send):
                outbox.append(a.message)
            elif isinstance(a, sync.NODE_WORK):
                actions = puller.feed(node.answer(a)) + actions
            elif isinstance(a, sync.ENDINGS):
                assert isinstance(a, Finished), a
                return a.result
        msg = outbox.pop(0)
        if answered < len(changes):
            changes[answered](feed)
        answered += 1
        done = server.feed(Received(wire.decode_message(wire.encode_message(msg))))
        while not any(isinstance(x, Send) for x in done):
            done = server.feed(feed.answer(done[-1]))
        [reply] = [x.message for x in done if isinstance(x, Send)]
        actions = puller.feed(Received(wire.decode_message(wire.encode_message(reply))))
    raise AssertionError("the pull did not end")


def change_of(kind: str, author: bytes, n: int):
    if kind == "grow":
        return lambda f: f.grow(author, n)
    if kind == "drop":
        return lambda f: f.drop(author)
    if kind == "replace":
        return lambda f: f.replace()
    return lambda f: None


def changes_st(kinds: list[str]):
    return st.builds(change_of, st.sampled_from(kinds), st.sampled_from(AUTHORS), st.integers(1, N))


# (A store is replaced only while its node is stopped, which ends every stream: between pulls.)
rounds_st = st.lists(st.tuples(st.lists(changes_st(["grow", "grow", "grow", "drop", "replace", "none"]), max_size=4),
                               st.lists(changes_st(["grow", "grow", "grow", "drop", "none"]), max_size=8),
                               st.sets(st.sampled_from(AUTHORS), max_size=2)),
                     max_size=6)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(st.dictionaries(st.sampled_from(AUTHORS), st.integers(1, N), min_size=3), rounds_st)
def test_pull_after_pull_with_cursors_brings_every_chain_as_far_as_the_listener_holds_it(start, rounds):
    """Each round: changes between pulls, then a pull during which more changes come (one
    before each request it makes) and the batches of some chains fail to verify (so the
    pull ends incomplete and the old cursor is kept). After the quiet pull that ends the run, the puller
    holds each chain the listener holds, as far as it does; an idle pull after it lists
    nothing and reads none of the puller's heads."""
    feed, node = Feed(), Node()
    for a, n in start.items():
        feed.grow(a, n)
    cursor = wire.NO_CURSOR
    with mock.patch.object(wire, "HEADS_PAGE", 2):  # several pages per pull, of both kinds
        for between, during, refusing in rounds:
            for change in between:
                change(feed)
            node.refusing = refusing
            result = run_pull(feed, node, cursor, list(during))
            if result.cursor is not None:
                cursor = result.cursor
        node.refusing = set()
        result = run_pull(feed, node, cursor, [])
        assert result.complete and result.cursor is not None
        for a, n in feed.held.items():
            assert node.held.get(a, 0) >= n, "a chain the listener holds was left behind"
        reads, full = node.heads_read, node.full_reads
        idle = run_pull(feed, node, result.cursor, [])
    assert idle.changes and idle.heads_received == 0 and idle.cursor == result.cursor
    assert (node.heads_read, node.full_reads) == (reads, full)  # nothing of ours was read
