"""The sync conversation (``/p2plend/sync/1.0.0``) as two pure state machines.

``wire.py`` says what the messages are and how a pull is planned; this file says in what
order they are exchanged. The dialer's side is a ``Puller``, the listener's a ``Server``.
Each is fed events (a message received, the peer gone, the result of work the node did
for it) and returns actions (send this message, read these chains, ingest this batch,
finished). Neither touches a stream, a store or a clock: ``p2pnode/net/sync.py`` performs
the actions, as h11's ``Connection`` leaves the socket to its caller.

Rules of this file (docs/protocol.md, "Sync"; wire.py rule 2):

1. The dialer sends ``heads?`` and, while a page names a ``next``, ``heads?`` with
   ``after`` = ``next`` (wire.py rule 2), at most ``MAX_HEAD_PAGES`` pages; a page whose
   first author is not after the one asked from is ``bad_message``. With the last page it
   reads its own heads and plans with ``wire.plan_pull`` over every page: the wanted
   ranges, in the order of the peer's heads. A pull made for some authors only (``only``)
   plans their ranges alone; with ``new_chain``, the chains it holds none of are planned
   only where ``new_chain(author)`` says so (asked once each, in order: the node's
   budget for strangers, p2pnode/net/interest.py).
   A pull given a cursor (``since``) asks ``heads?`` with it (wire.py rule 2). A changes
   page must echo the cursor asked (its epoch and counter), and while it names a ``next``
   the dialer asks ``since`` that counter of the same epoch; a full page (the cursor did
   not hold there) carries the store's mark, every page the same epoch, and paging goes
   on by ``after`` as above; anything else is ``bad_message``. Full pages without a mark
   (a listener without a change feed) are taken as before cursors: the pull gives no
   cursor. Planning with changes
   reads the node's heads of the authors the pages name only (``ReadHeads(authors=...)``),
   never all of them, so that a round where nothing changed reads nothing. A pull without
   a cursor sends none and takes no page that carries a mark or lists changes.
2. For each range it sends ``get`` for at most ``batch`` entries from the range's next
   seq. At most one ``get`` is unanswered at any time, and the next one goes out as soon
   as a batch arrives, before the node has verified it (pipelining: the peer reads while
   we verify).
3. An ``entries`` answer must name the author and start of the unanswered ``get`` and
   hold at most its ``limit`` entries, or the peer misbehaved (``bad_message``). An empty
   answer ends the range: the peer no longer holds what it announced.
4. Each batch is ingested (verified and stored in one write) for the ``get``'s author. A
   batch that does not verify ends the pull: nothing after a break can link, and a peer
   that sends such entries is asked nothing more this round. The answer to a ``get``
   already pipelined is read and dropped.
5. Divergence: if the first error of that batch is ``bad_prev`` at the range's first seq
   (2 or more), the two histories differ below it: the dialer fetches the peer's entry
   one seq lower, whose ingest yields the fork proof. Anything wrong in this ending phase
   (an answer that is unexpected, garbled or for another request, the peer leaving) ends
   the pull quietly: the errors already found say what went wrong.
6. Everywhere else, a message other than the one awaited is a ``WireError`` with code
   ``unexpected_message``, a garbled frame is misbehaviour with its own code, and the peer
   leaving loses the pull (batches already ingested stay stored).
7. A pull sends at most ``max_gets`` range ``get``s (plus one for divergence), so it ends
   within ``max_events`` events. Its progress (entries fetched and added, and the target:
   the sum of the planned ranges) obeys 0 <= added <= fetched <= target.
   The cursor: a pull given one ends with ``result.cursor`` = the mark of its first page
   if it is ``complete``, read every page (not cut at ``MAX_HEAD_PAGES``) and was made for
   every author (no ``only``); else None, and the node keeps the cursor it had. Why the
   first page's mark: every change after it has a higher counter, so the next pull's
   changes bring whatever changed while this one read its later pages. Chains the plan
   left out for the stranger budget (``new_chain``) do not hold the cursor back: they are
   listed again when they change.
8. The listener answers each ``heads?`` with ``wire.heads_message`` (the page after its
   ``after``, read with ``ReadHeads(after, HEADS_PAGE + 1)`` so that it knows whether
   more remain) and each ``get`` with
   ``wire.answer_get`` over the chain the node reads for it, one request at a time and in
   order, until the peer leaves or ``max_requests`` requests are answered. Any other
   message is ``unexpected_message``. A ``heads?`` with ``since`` and no ``after`` is read
   with ``ReadChanges(since, HEADS_PAGE + 1)``: the node reads its mark and, only if the
   cursor holds there (``wire.cursor_holds``), the changes after it, at one instant; the
   answer is ``wire.changes_message``. If the cursor does not hold, or the query names
   ``after`` too, the full page is read with its mark (``ReadHeads(..., marked=True)``)
   and sent with it.
9. A machine waits on one side at a time: the peer (``Received``, ``BadFrame``, ``Gone``)
   or the node (``Begin``, ``HeadsRead``, ``ChangesRead``, ``ChainRead``, ``Ingested``).
   Feeding the other
   side's event, or anything after the end, is a bug of the node (``SyncMisuse``), never
   the peer's fault.

The transition tables below (``PULL_TABLE``, ``SERVE_TABLE``) are what ``feed`` executes:
a row names, for one state and one kind of event, the handler and the states it may lead
to; a handler that leads elsewhere fails an assertion.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

from . import wire
from .chain import Head
from .errors import ChainError, ProtocolError
from .fork import ForkProof
from .wire import WireError

MAX_REQUESTS_PER_STREAM = 1_000_000  # requests one listener stream answers; far above any real sync
MAX_GETS_PER_PULL = 1_000_000  # range gets one pull sends (x MAX_BATCH entries: beyond any real chain)
MAX_HEAD_PAGES = 1_024  # heads pages one pull reads (x HEADS_PAGE: 4 million authors)


class SyncMisuse(Exception):
    """The node fed a machine an event it cannot take in its state (rule 9): a bug here,
    not something a peer can cause."""


# -- events: what happened -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Begin:
    """Node -> Puller: start the pull."""


@dataclass(frozen=True, slots=True)
class Received:
    """Peer: a valid wire message arrived."""

    message: wire.Message


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Peer: what arrived breaks wire.py rule 1 or 5 (``error`` says how)."""

    error: ProtocolError


@dataclass(frozen=True, slots=True)
class Gone:
    """Peer: the stream ended, was reset, or stayed silent too long."""

    reason: str = "the peer is gone"


@dataclass(frozen=True, slots=True)
class HeadsRead:
    """Node: the chains it holds (answers ``ReadHeads``); with ``marked``, ``mark`` is the
    store's epoch and change counter, read with or before the heads."""

    heads: Mapping[bytes, Head]
    mark: wire.Cursor | None = None


@dataclass(frozen=True, slots=True)
class ChangesRead:
    """Node -> Server: the store's mark and, if the cursor asked holds there, the changes
    after it, ``(counter, head)`` in counter order, read at the same instant (answers
    ``ReadChanges``); ``changes`` is None if the cursor does not hold."""

    mark: wire.Cursor
    changes: tuple[tuple[int, Head], ...] | None


@dataclass(frozen=True, slots=True)
class ChainRead:
    """Node -> Server: stored envelopes of the author from the start asked (answers
    ``ReadChain``); more than ``limit`` of them are cut off."""

    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Ingested:
    """Node -> Puller: what ingesting a batch did (answers ``Ingest``): how many entries it
    added, the fork proofs it found, and the chain errors of the entries it refused."""

    added: int = 0
    forks: tuple[ForkProof, ...] = ()
    errors: tuple[ChainError, ...] = ()


Event = Union[Begin, Received, BadFrame, Gone, HeadsRead, ChangesRead, ChainRead, Ingested]
PEER_EVENTS = (Received, BadFrame, Gone)
NODE_EVENTS = (Begin, HeadsRead, ChangesRead, ChainRead, Ingested)


# -- actions: what to do -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Write ``message`` to the peer."""

    message: wire.Message


@dataclass(frozen=True, slots=True)
class ReadHeads:
    """Read the heads of the chains held (with ``limit``: the first ``limit`` authors after
    ``after``, in order; with ``authors``: those of these authors only, each that is
    held); feed ``HeadsRead``, with the store's mark if ``marked``."""

    after: bytes | None = None
    limit: int | None = None
    authors: tuple[bytes, ...] | None = None
    marked: bool = False


@dataclass(frozen=True, slots=True)
class ReadChanges:
    """Read, at one instant, the store's mark and, if ``since`` holds there
    (``wire.cursor_holds``), its first ``limit`` changes after ``since.counter``; feed
    ``ChangesRead``."""

    since: wire.Cursor
    limit: int


@dataclass(frozen=True, slots=True)
class ReadChain:
    """Read up to ``limit`` stored envelopes of ``author`` from seq ``start``; feed ``ChainRead``."""

    author: bytes
    start: int
    limit: int


@dataclass(frozen=True, slots=True)
class Ingest:
    """Verify and store ``envelopes`` as entries of ``author`` only, in one write; feed ``Ingested``."""

    author: bytes
    envelopes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a pull has come: entries fetched (received in answer to the planned
    ``get``s), added (stored as new), and the target (the sum of the planned ranges).
    The node derives rate and time left from successive values."""

    fetched: int = 0
    added: int = 0
    target: int = 0


@dataclass(frozen=True, slots=True)
class Progressed:
    """Progress changed (after the plan, and after each batch): tell whoever watches."""

    progress: Progress


@dataclass
class PullResult:
    """What one pull from one peer brought. ``received`` is the entries fetched,
    ``target`` the entries planned; ``complete`` says every planned range was fetched to
    its end without an error."""

    authors_checked: int = 0
    authors_behind: int = 0
    received: int = 0
    added: int = 0
    forks: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    target: int = 0
    complete: bool = False
    heads_received: int = 0  # heads in the pages received (a chain listed twice counts twice)
    changes: bool = False  # the pages listed changes since the cursor given, not every chain
    cursor: wire.Cursor | None = None  # where the next pull from this peer may start (rule 7)

    @property
    def progress(self) -> Progress:
        return Progress(self.received, self.added, self.target)


@dataclass(frozen=True, slots=True)
class Served:
    """What a listener's conversation did: requests answered, entries sent."""

    requests: int = 0
    sent: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    """The end: ``result`` is a ``PullResult`` (Puller) or ``Served`` (Server)."""

    result: Any


@dataclass(frozen=True, slots=True)
class Misbehaved:
    """The end: the peer broke a rule; ``error`` (a ``ProtocolError``) says which."""

    error: ProtocolError

    @property
    def code(self) -> str:
        return self.error.code

    @property
    def message(self) -> str:
        return self.error.message


@dataclass(frozen=True, slots=True)
class Lost:
    """The end: the peer left mid-pull (rule 6)."""

    reason: str


Action = Union[Send, ReadHeads, ReadChanges, ReadChain, Ingest, Progressed, Finished, Misbehaved, Lost]
NODE_WORK = (ReadHeads, ReadChanges, ReadChain, Ingest)  # actions the node answers with an event
ENDINGS = (Finished, Misbehaved, Lost)


# -- states and transitions --------------------------------------------------------------


class PullState(enum.Enum):
    IDLE = "idle"  # made, not begun
    AWAIT_HEADS = "await_heads"  # heads? sent
    PLANNING = "planning"  # the node reads our heads
    AWAIT_ENTRIES = "await_entries"  # one get unanswered
    INGESTING = "ingesting"  # the node ingests a batch (a pipelined get may be unanswered)
    DRAINING = "draining"  # a batch failed; the pipelined get's answer is awaited, to drop
    DIVERGING = "diverging"  # the entry below a bad link is asked for (rule 5)
    PROVING = "proving"  # the node ingests that entry: a fork proof
    DONE = "done"
    FAILED = "failed"  # the peer misbehaved
    LOST = "lost"  # the peer left


class ServeState(enum.Enum):
    SERVING = "serving"  # waiting for the next request
    READING_HEADS = "reading_heads"
    READING_CHANGES = "reading_changes"  # the mark, and the changes if the cursor holds
    READING_CHAIN = "reading_chain"
    DONE = "done"
    FAILED = "failed"


class AnyMessage:
    """Row key: a received message of any type the row does not name."""


P, S = PullState, ServeState
Row = dict[type, tuple[str, frozenset]]


def _to(*states: enum.Enum) -> frozenset:
    return frozenset(states)


# state -> {event kind (event type, or message type for Received) -> (handler, next states)}
PULL_TABLE: dict[PullState, Row] = {
    P.IDLE: {
        Begin: ("_ask_heads", _to(P.AWAIT_HEADS)),
    },
    P.AWAIT_HEADS: {
        wire.Heads: ("_read_ours", _to(P.AWAIT_HEADS, P.PLANNING, P.FAILED)),
        AnyMessage: ("_unexpected", _to(P.FAILED)),
        BadFrame: ("_garbled", _to(P.FAILED)),
        Gone: ("_lose", _to(P.LOST)),
    },
    P.PLANNING: {
        HeadsRead: ("_plan", _to(P.AWAIT_ENTRIES, P.DONE)),
    },
    P.AWAIT_ENTRIES: {
        wire.Entries: ("_take_batch", _to(P.INGESTING, P.AWAIT_ENTRIES, P.DONE, P.FAILED)),
        AnyMessage: ("_unexpected", _to(P.FAILED)),
        BadFrame: ("_garbled", _to(P.FAILED)),
        Gone: ("_lose", _to(P.LOST)),
    },
    P.INGESTING: {
        Ingested: ("_after_batch", _to(P.AWAIT_ENTRIES, P.DRAINING, P.DIVERGING, P.DONE)),
    },
    P.DRAINING: {
        wire.Entries: ("_drop_batch", _to(P.DIVERGING, P.DONE)),
        AnyMessage: ("_give_up", _to(P.DONE)),
        BadFrame: ("_give_up", _to(P.DONE)),
        Gone: ("_give_up", _to(P.DONE)),
    },
    P.DIVERGING: {
        wire.Entries: ("_take_fork_half", _to(P.PROVING, P.DONE)),
        AnyMessage: ("_give_up", _to(P.DONE)),
        BadFrame: ("_give_up", _to(P.DONE)),
        Gone: ("_give_up", _to(P.DONE)),
    },
    P.PROVING: {
        Ingested: ("_after_proof", _to(P.DONE)),
    },
    P.DONE: {},
    P.FAILED: {},
    P.LOST: {},
}

SERVE_TABLE: dict[ServeState, Row] = {
    S.SERVING: {
        wire.HeadsQuery: ("_read_heads", _to(S.READING_HEADS, S.READING_CHANGES)),
        wire.Get: ("_read_chain", _to(S.READING_CHAIN)),
        AnyMessage: ("_unexpected", _to(S.FAILED)),
        BadFrame: ("_garbled", _to(S.FAILED)),
        Gone: ("_end", _to(S.DONE)),
    },
    S.READING_HEADS: {
        HeadsRead: ("_answer_heads", _to(S.SERVING, S.DONE)),
    },
    S.READING_CHANGES: {
        ChangesRead: ("_answer_changes", _to(S.SERVING, S.DONE, S.READING_HEADS)),
    },
    S.READING_CHAIN: {
        ChainRead: ("_answer_get", _to(S.SERVING, S.DONE)),
    },
    S.DONE: {},
    S.FAILED: {},
}


def _waits_on_peer(row: Row) -> bool:
    return Gone in row


# -- the machinery both sides share ---------------------------------------------------


class _Machine:
    """Runs a transition table: ``feed`` looks up the row for the state and the event,
    calls its handler, and checks that the handler went where the row allows."""

    TABLE: dict
    EXPECTS: dict  # state -> what a peer is expected to send in it (for error messages)
    FAILED_STATE: enum.Enum
    max_events: int  # no conversation takes more events than this (rule 7)

    def __init__(self, state: enum.Enum) -> None:
        self.state = state
        self.events = 0  # events fed so far

    @property
    def awaits_peer(self) -> bool:
        """True while the machine waits for the peer (rule 9): the node should read."""
        return _waits_on_peer(self.TABLE[self.state])

    @property
    def ended(self) -> bool:
        return not self.TABLE[self.state]

    def feed(self, event: Event) -> list[Action]:
        """The actions ``event`` calls for, in order: any ``Send``s first, then at most one
        piece of node work (whose result is the next event) or one ending. Raises
        ``SyncMisuse`` if the machine cannot take ``event`` in its state."""
        row = self.TABLE[self.state]
        key = type(event)
        if isinstance(event, Received):
            key = type(event.message) if type(event.message) in row else AnyMessage
        if key not in row:
            raise SyncMisuse(f"{type(self).__name__} in state {self.state.name} cannot take {type(event).__name__}")
        self.events += 1
        assert self.events <= self.max_events, "a conversation outran its own bound"
        handler, allowed = row[key]
        before = self.state
        new_state, actions = getattr(self, handler)(event)
        assert new_state in allowed, f"{handler} went from {before.name} to {new_state.name}"
        self.state = new_state
        _check_actions(actions, self.TABLE[new_state])
        return actions

    def _unexpected(self, event: Received) -> tuple[enum.Enum, list[Action]]:
        expected = self.EXPECTS[self.state]
        error = WireError(f"expected {expected}, got {type(event.message).__name__}", code="unexpected_message")
        return self.FAILED_STATE, [Misbehaved(error)]

    def _garbled(self, event: BadFrame) -> tuple[enum.Enum, list[Action]]:
        return self.FAILED_STATE, [Misbehaved(event.error)]


def _check_actions(actions: list[Action], row: Row) -> None:
    """Sends come first; then at most one node work or ending, which must agree with what
    the new state waits for (node work: the node; an ending: nothing; else the peer)."""
    sends = 0
    while sends < len(actions) and isinstance(actions[sends], (Send, Progressed)):
        sends += 1
    rest = actions[sends:]
    assert len(rest) <= 1, f"more than one node work or ending: {rest}"
    if not rest:
        assert _waits_on_peer(row), "no node work, yet the machine does not wait for the peer"
    elif isinstance(rest[0], ENDINGS):
        assert not row, "an ending, yet the machine goes on"
    else:
        assert isinstance(rest[0], NODE_WORK) and row and not _waits_on_peer(row)


# -- the dialer -----------------------------------------------------------------------


class Puller(_Machine):
    """One pull from one peer (rules 1-7). ``begin()`` gives the first actions; then feed
    each event the actions call for, until an ending (``Finished``, ``Misbehaved``,
    ``Lost``). ``result`` and ``progress`` are readable at any time."""

    TABLE = PULL_TABLE
    EXPECTS = {P.AWAIT_HEADS: "Heads", P.AWAIT_ENTRIES: "Entries"}
    FAILED_STATE = P.FAILED

    def __init__(self, *, batch: int = wire.MAX_BATCH, max_gets: int = MAX_GETS_PER_PULL,
                 only: frozenset[bytes] | None = None, new_chain: Callable[[bytes], bool] | None = None,
                 since: wire.Cursor | None = None) -> None:
        if not 1 <= batch <= wire.MAX_BATCH:
            raise ValueError(f"batch must be in 1..{wire.MAX_BATCH}")
        if max_gets < 1:
            raise ValueError("max_gets must be at least 1")
        super().__init__(P.IDLE)
        self.batch = batch
        self.max_gets = max_gets
        self.only = only  # pull these authors' chains alone (None: every chain)
        self.new_chain = new_chain  # whether to pull a chain the node holds none of (None: yes), asked once each
        self.since = since  # the cursor to ask changes since (None: ask every head, as before cursors)
        # Begin, the heads pages, heads read, then per get (max_gets + 1 for divergence) an
        # answer (or Gone/BadFrame) and an Ingested.
        self.max_events = 2 + MAX_HEAD_PAGES + 2 * (max_gets + 1)
        self.result = PullResult()
        self.gets_sent = 0
        self._theirs: wire.Heads | None = None
        self._pages: list[tuple[bytes, int, bytes]] = []  # the heads of the full pages read so far
        self._changed: dict[bytes, tuple[int, bytes]] = {}  # the heads of the changes pages (the later wins)
        self._query = wire.HeadsQuery(since=since)  # the heads? awaiting its answer
        self._mark: wire.Cursor | None = None  # the first page's
        self._pages_cut = False  # pages remained after MAX_HEAD_PAGES
        self._page_count = 0
        self._wants: list[wire.Want] = []
        self._next_want = 0  # index in _wants of the range to start next
        self._want: wire.Want | None = None  # the range being pulled
        self._cursor = 0  # the seq the range's next get starts at
        self._asked: wire.Get | None = None  # the unanswered get, if any
        self._batch_size = 0  # entries in the batch being ingested
        self._cut = False  # a range ended before its stop
        self._first_error: ChainError | None = None

    @property
    def progress(self) -> Progress:
        return self.result.progress

    def begin(self) -> list[Action]:
        """The first actions: ``feed(Begin())``."""
        return self.feed(Begin())

    # -- handlers (named in PULL_TABLE) --

    def _ask_heads(self, event: Begin) -> tuple[PullState, list[Action]]:
        return P.AWAIT_HEADS, [Send(self._query)]

    def _read_ours(self, event: Received) -> tuple[PullState, list[Action]]:
        page, asked = event.message, self._query
        wrong = self._page_fault(page, asked)
        if wrong is not None:
            return P.FAILED, [Misbehaved(WireError(wrong, code="bad_message"))]
        if self._page_count == 0:
            self._mark = page.mark
            self.result.changes = page.since is not None
        self._page_count += 1
        self.result.heads_received += len(page.heads)
        if page.since is not None:
            self._changed.update((a, (seq, id_)) for a, seq, id_ in page.heads)
        else:
            self._pages.extend(page.heads)
        if page.next is not None and self._page_count < MAX_HEAD_PAGES:
            if page.since is not None:
                assert self._mark is not None and isinstance(page.next, int)
                self._query = wire.HeadsQuery(since=wire.Cursor(self._mark.epoch, page.next))
            else:
                assert isinstance(page.next, bytes)
                self._query = wire.HeadsQuery(page.next, self.since)
            return P.AWAIT_HEADS, [Send(self._query)]
        self._pages_cut = page.next is not None
        if self.result.changes:
            self._theirs = wire.Heads(tuple((a, seq, id_) for a, (seq, id_) in self._changed.items()))
            read = ReadHeads(authors=tuple(self._changed))  # (the authors named only: rule 1)
        else:
            self._theirs = wire.Heads(tuple(self._pages))
            read = ReadHeads()
        self.result.authors_checked = len(self._theirs.heads)
        return P.PLANNING, [read]

    def _page_fault(self, page: wire.Heads, asked: wire.HeadsQuery) -> str | None:
        """What is wrong with ``page`` as the answer to ``asked`` (rule 1), or None."""
        if asked.since is None:
            if page.since is not None or page.epoch is not None:
                return "a heads page carries a mark or lists changes, though no cursor was given"
        elif page.since is not None:
            if asked.after is not None or page.since != asked.since.counter or page.epoch != asked.since.epoch:
                return "a changes page answers another cursor than the one asked"
        elif self._page_count and self.result.changes:
            return "a full heads page answers a cursor of the feed being read"
        if self._page_count and page.mark is not None and (self._mark is None or page.epoch != self._mark.epoch):
            return "a heads page is of another store than the pages before it"
        if self._page_count and page.mark is None and self._mark is not None:
            return "a heads page lacks the mark the pages before it carried"
        if page.since is None and page.heads and asked.after is not None and page.heads[0][0] <= asked.after:
            return "a heads page starts before the author asked from"
        return None

    def _plan(self, event: HeadsRead) -> tuple[PullState, list[Action]]:
        assert self._theirs is not None
        self._wants = wire.plan_pull(event.heads, self._theirs)
        if self.only is not None:
            self._wants = [w for w in self._wants if w.author in self.only]
        if self.new_chain is not None:
            self._wants = [w for w in self._wants if w.author in event.heads or self.new_chain(w.author)]
        self.result.authors_behind = len(self._wants)
        self.result.target = sum(w.stop - w.start + 1 for w in self._wants)
        return self._next_range([Progressed(self.progress)])

    def _take_batch(self, event: Received) -> tuple[PullState, list[Action]]:
        got, asked, want = event.message, self._asked, self._want
        assert asked is not None and want is not None
        if got.author != asked.author or got.start != asked.start:
            return P.FAILED, [Misbehaved(WireError("entries answer a different request", code="bad_message"))]
        if len(got.entries) > asked.limit:
            error = WireError(f"{len(got.entries)} entries answer a get for at most {asked.limit}", code="bad_message")
            return P.FAILED, [Misbehaved(error)]
        self._asked = None
        if not got.entries:  # the peer no longer holds what it announced: nothing to do
            self._cut = True
            return self._next_range([])
        n = len(got.entries)
        self.result.received += n
        self._cursor += n
        actions: list[Action] = []
        if self._cursor <= want.stop and self.gets_sent < self.max_gets:
            actions.append(self._get())  # pipelining: the peer reads this while we verify the last
        self._batch_size = n
        actions.append(Ingest(want.author, got.entries))
        return P.INGESTING, actions

    def _after_batch(self, event: Ingested) -> tuple[PullState, list[Action]]:
        if not 0 <= event.added <= self._batch_size:
            raise SyncMisuse(f"ingest reports {event.added} added out of a batch of {self._batch_size}")
        self.result.added += event.added
        self.result.forks.extend(event.forks)
        actions: list[Action] = [Progressed(self.progress)]
        if event.errors:
            self.result.errors.extend(event.errors)
            self._first_error = event.errors[0]
            self._cut = True
            if self._asked is not None:
                return P.DRAINING, actions  # drop the answer already asked for first
            return self._diverge_or_finish(actions)
        if self._asked is not None:
            return P.AWAIT_ENTRIES, actions
        assert self._want is not None
        if self._cursor <= self._want.stop:  # out of gets: the next pull goes on
            self._cut = True
            return self._finish(actions)
        return self._next_range(actions)

    def _drop_batch(self, event: Received) -> tuple[PullState, list[Action]]:
        self._asked = None
        return self._diverge_or_finish([])

    def _take_fork_half(self, event: Received) -> tuple[PullState, list[Action]]:
        got, asked = event.message, self._asked
        assert asked is not None
        self._asked = None
        if got.author != asked.author or got.start != asked.start or not 1 <= len(got.entries) <= asked.limit:
            return self._finish([])
        self._batch_size = len(got.entries)
        return P.PROVING, [Ingest(asked.author, got.entries)]

    def _after_proof(self, event: Ingested) -> tuple[PullState, list[Action]]:
        if not 0 <= event.added <= self._batch_size:
            raise SyncMisuse(f"ingest reports {event.added} added out of a batch of {self._batch_size}")
        self.result.forks.extend(event.forks)  # errors here add nothing: the batch's say it all
        return self._finish([])

    def _give_up(self, event: Event) -> tuple[PullState, list[Action]]:
        self._asked = None
        return self._finish([])

    def _lose(self, event: Gone) -> tuple[PullState, list[Action]]:
        return P.LOST, [Lost(event.reason)]

    # -- steps the handlers share --

    def _get(self) -> Send:
        """The next get of the current range (rule 2), counted."""
        want = self._want
        assert want is not None and self._asked is None and self._cursor <= want.stop
        assert self.gets_sent < self.max_gets
        self._asked = wire.Get(want.author, self._cursor, min(self.batch, want.stop - self._cursor + 1))
        self.gets_sent += 1
        return Send(self._asked)

    def _next_range(self, actions: list[Action]) -> tuple[PullState, list[Action]]:
        """Start the next wanted range, or finish if none is left (or no get is)."""
        if self._next_want >= len(self._wants):
            return self._finish(actions)
        if self.gets_sent >= self.max_gets:
            self._cut = True
            return self._finish(actions)
        self._want = self._wants[self._next_want]
        self._next_want += 1
        self._cursor = self._want.start
        return P.AWAIT_ENTRIES, actions + [self._get()]

    def _diverge_or_finish(self, actions: list[Action]) -> tuple[PullState, list[Action]]:
        """Rule 5: ask for the entry below a bad first link, or end the pull."""
        first, want = self._first_error, self._want
        assert first is not None and want is not None and self._asked is None
        if first.code != "bad_prev" or first.seq != want.start or want.start < 2:
            return self._finish(actions)
        self._asked = wire.Get(want.author, want.start - 1, 1)
        self.gets_sent += 1  # the one get beyond max_gets (rule 7)
        return P.DIVERGING, actions + [Send(self._asked)]

    def _finish(self, actions: list[Action]) -> tuple[PullState, list[Action]]:
        r = self.result
        r.complete = not self._cut and not r.errors and self._next_want == len(self._wants)
        if r.complete and not self._pages_cut and self.only is None and self.since is not None:
            r.cursor = self._mark  # (rule 7)
        assert 0 <= r.added <= r.received <= r.target, "progress out of bounds"
        return P.DONE, actions + [Finished(r)]


# -- the listener ---------------------------------------------------------------------


class Server(_Machine):
    """One listener stream (rule 8): feed what the peer sends and what the node reads,
    until an ending (``Finished(Served)`` or ``Misbehaved``)."""

    TABLE = SERVE_TABLE
    EXPECTS = {S.SERVING: "HeadsQuery or Get"}
    FAILED_STATE = S.FAILED

    def __init__(self, *, max_requests: int = MAX_REQUESTS_PER_STREAM) -> None:
        if max_requests < 1:
            raise ValueError("max_requests must be at least 1")
        super().__init__(S.SERVING)
        self.max_requests = max_requests
        self.max_events = 3 * max_requests + 1  # a request and its reads (two at most) each, then Gone
        self.requests = 0  # answered
        self.sent = 0  # entries sent
        self._asked: wire.Get | None = None
        self._query = wire.HeadsQuery()  # the heads? being answered

    @property
    def served(self) -> Served:
        return Served(self.requests, self.sent)

    # -- handlers (named in SERVE_TABLE) --

    def _read_heads(self, event: Received) -> tuple[ServeState, list[Action]]:
        q = self._query = event.message
        if q.since is not None and q.after is None:
            return S.READING_CHANGES, [ReadChanges(q.since, wire.HEADS_PAGE + 1)]
        return S.READING_HEADS, [ReadHeads(q.after, wire.HEADS_PAGE + 1, marked=q.since is not None)]

    def _read_chain(self, event: Received) -> tuple[ServeState, list[Action]]:
        get = self._asked = event.message
        return S.READING_CHAIN, [ReadChain(get.author, get.start, get.limit)]

    def _answer_heads(self, event: HeadsRead) -> tuple[ServeState, list[Action]]:
        if (event.mark is not None) != (self._query.since is not None):
            raise SyncMisuse("the heads read for a query with a cursor carry the store's mark, and only those")
        return self._answered(wire.heads_message(event.heads, self._query.after, mark=event.mark))

    def _answer_changes(self, event: ChangesRead) -> tuple[ServeState, list[Action]]:
        since = self._query.since
        assert since is not None
        if (event.changes is not None) != wire.cursor_holds(since, event.mark):
            raise SyncMisuse("changes are read if and only if the cursor holds in the store's feed")
        if event.changes is None:  # a cursor of another store, or from its future: the full page
            return S.READING_HEADS, [ReadHeads(None, wire.HEADS_PAGE + 1, marked=True)]
        return self._answered(wire.changes_message(list(event.changes), since.counter, event.mark))

    def _answer_get(self, event: ChainRead) -> tuple[ServeState, list[Action]]:
        assert self._asked is not None
        answer = wire.answer_get(self._asked, list(event.envelopes))
        self._asked = None
        self.sent += len(answer.entries)
        return self._answered(answer)

    def _end(self, event: Gone) -> tuple[ServeState, list[Action]]:
        return S.DONE, [Finished(self.served)]

    def _answered(self, answer: wire.Message) -> tuple[ServeState, list[Action]]:
        self.requests += 1
        if self.requests >= self.max_requests:
            return S.DONE, [Send(answer), Finished(self.served)]
        return S.SERVING, [Send(answer)]


# -- the tables are checked once, at import (rule 9 and the table's own consistency) --


def _check_table(table: dict, machine: type) -> None:
    for state, row in table.items():
        node = [k for k in row if k in NODE_EVENTS]
        peer = [k for k in row if k not in NODE_EVENTS]  # message types, AnyMessage, BadFrame, Gone
        assert not (peer and node), f"{state.name} waits on both sides"
        if peer:  # rule 6: every peer event has a row, so a peer cannot cause SyncMisuse
            assert {AnyMessage, BadFrame, Gone} <= set(row), f"{state.name} misses a peer event"
        for handler, targets in row.values():
            assert callable(getattr(machine, handler, None)), handler
            assert targets <= set(table), targets


_check_table(PULL_TABLE, Puller)
_check_table(SERVE_TABLE, Server)
