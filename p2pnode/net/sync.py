"""Sync and peer exchange over libp2p streams: the I/O half of ``protocol/wire.py`` and
``protocol/sync.py``.

Gossip makes new entries arrive fast; sync makes them arrive always. A pull asks the peer
for its heads, skips every author whose head we already hold, and fetches the missing
ranges in batches of up to ``wire.MAX_BATCH`` entries, asking for the next batch before
verifying the last so that the peer's reading and our verifying overlap. Each batch is
verified and stored in one write (``Store.ingest``).

A pull may be given a cursor (a place in the peer's change feed, from the last pull that
completed): then the peer lists only the chains changed since, and the node reads only
those chains' heads of its own, so that a round in which nothing changed costs a few
reads on both sides however many chains they hold (protocol/wire.py, rule 2).

The order of that conversation (what may be sent or received when, what ends it) is the
pure ``Puller``/``Server`` of ``protocol/sync.py``; ``pull`` and ``serve_sync`` only read
frames, feed them in, and perform the actions that come out.

Every read is bounded in size (``wire.MAX_FRAME``) and time (``STREAM_TIMEOUT``); a peer
that sends garbage gets ``PeerMisbehaved`` and is scored down by the node. So does one
that stalls inside a frame (``stalled``: a slowloris announces big frames and sends them
by halves), and one whose half-read frames would hold more than ``FRAME_BUDGET_PER_PEER``
bytes at once (``over_budget``); all peers together hold at most ``FRAME_BUDGET_TOTAL``.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Awaitable, Callable, Protocol

import outcome
import trio

from protocol import sync as rules
from protocol import wire
from protocol.chain import Head
from protocol.errors import ProtocolError
from protocol.schema import U63_MAX
from protocol.sync import MAX_REQUESTS_PER_STREAM, Progress, PullResult

log = logging.getLogger("p2pnode.sync")

STREAM_TIMEOUT = 30.0  # seconds any single read may wait before the peer is given up on
FRAME_BUDGET_PER_PEER = 16 << 20  # bytes of frames being read that one peer may hold at once
FRAME_BUDGET_TOTAL = 128 << 20  # and all peers together


class FrameBudget:
    """Bytes of frames being read, per peer and in all: reserved from a frame's header
    until its payload is read (or given up), so that memory follows what peers send."""

    def __init__(self, per_peer: int = FRAME_BUDGET_PER_PEER, total: int = FRAME_BUDGET_TOTAL) -> None:
        self.per_peer, self.total = per_peer, total
        self.held: dict[Any, int] = {}
        self.in_use = 0

    def take(self, peer: Any, n: int) -> None:
        """Reserve ``n`` bytes for ``peer``: ``PeerMisbehaved`` (``over_budget``) over its
        share, ``PeerGone`` if all peers' together would pass the total."""
        mine = self.held.get(peer, 0)
        if mine + n > self.per_peer:
            raise PeerMisbehaved(f"frames of {mine + n} bytes at once, over the {self.per_peer} a peer may hold",
                                 "over_budget")
        if self.in_use + n > self.total:
            raise PeerGone(f"the node holds {self.in_use} bytes of frames already; try later")
        self.held[peer] = mine + n
        self.in_use += n

    def give_back(self, peer: Any, n: int) -> None:
        left = self.held.get(peer, 0) - n
        assert left >= 0 and self.in_use >= n, "more given back than taken"
        if left:
            self.held[peer] = left
        else:
            self.held.pop(peer, None)
        self.in_use -= n


BUDGET = FrameBudget()


def _peer_of(stream: Any) -> Any:
    """Whom a stream's bytes are charged to: its libp2p connection's peer ID."""
    conn = getattr(stream, "muxed_conn", None)
    return getattr(conn, "peer_id", None)


class Stream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...
    async def write(self, data: bytes) -> None: ...
    async def close(self) -> None: ...


class PeerMisbehaved(Exception):
    """The peer broke the wire rules; ``code`` says how (a ``ProtocolError`` code)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class PeerGone(Exception):
    """The stream ended, was reset, or timed out before the exchange was complete."""


async def read_exactly(stream: Stream, n: int) -> bytes:
    """Exactly ``n`` bytes from ``stream``; ``PeerGone`` if it ends first."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = await stream.read(left)
        if not chunk:
            raise PeerGone(f"stream ended {n - left} bytes into a {n}-byte read")
        chunks.append(chunk)
        left -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def recv(stream: Stream, *, timeout: float | None = None,
               decode: Callable[[bytes], Any] = wire.decode_message, max_frame: int = wire.MAX_FRAME) -> Any:
    """The next message on ``stream`` (by default a wire.py message; ``decode`` and
    ``max_frame`` serve other protocols framed alike). Raises ``PeerMisbehaved`` for a bad
    frame, one it stalls in (``stalled``) or one over its memory budget (``over_budget``,
    ``BUDGET``), and ``PeerGone`` if the stream ends or stays silent for ``timeout``
    seconds (default ``STREAM_TIMEOUT``) before a frame begins."""
    timeout = STREAM_TIMEOUT if timeout is None else timeout
    n = None
    with trio.move_on_after(timeout) as scope:
        try:
            n = wire.frame_length(await read_exactly(stream, wire.FRAME_HEADER), max_frame)
            peer = _peer_of(stream)
            BUDGET.take(peer, n)
            try:
                payload = await read_exactly(stream, n)
            finally:
                BUDGET.give_back(peer, n)
        except ProtocolError as e:
            raise PeerMisbehaved(e.message, e.code) from None
        except PeerGone:
            raise
        except Exception as e:  # libp2p's StreamEOF/StreamReset/StreamError and kin
            if _is_stream_error(e):
                raise PeerGone(f"{type(e).__name__}: {e}") from None
            raise
    if scope.cancelled_caught:
        if n is not None:  # a frame begun and not finished in time: a stall, not silence
            raise PeerMisbehaved(f"sent part of a {n}-byte frame, not all of it within {timeout:.0f} s", "stalled")
        raise PeerGone(f"no message within {timeout:.0f} s")
    try:
        return decode(payload)
    except ProtocolError as e:
        raise PeerMisbehaved(e.message, e.code) from None


async def send(stream: Stream, msg: wire.Message) -> None:
    """Write ``msg`` as one frame; ``PeerGone`` if the stream is gone."""
    data = wire.frame(msg)
    try:
        await stream.write(data)
    except Exception as e:
        if _is_stream_error(e):
            raise PeerGone(f"{type(e).__name__}: {e}") from None
        raise


def _is_stream_error(e: Exception) -> bool:
    from libp2p.exceptions import BaseLibp2pError

    return isinstance(e, (BaseLibp2pError, EOFError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError))


def expect(msg: wire.Message, kind: type) -> Any:
    try:
        return wire.expect(msg, kind)
    except ProtocolError as e:
        raise PeerMisbehaved(e.message, e.code) from None


# -- running the conversation (protocol/sync.py) ---------------------------------------

Perform = Callable[[Any], Awaitable["rules.Event | None"]]


async def _receive(stream: Stream) -> rules.Event:
    """The next peer event: a message, a garbled frame, or the peer gone."""
    try:
        return rules.Received(await recv(stream))
    except PeerMisbehaved as e:
        return rules.BadFrame(wire.WireError(str(e), code=e.code))
    except PeerGone as e:
        return rules.Gone(str(e))


async def _run(machine: rules.Puller | rules.Server, actions: list, stream: Stream, perform: Perform, *,
               receive: Callable[[], Awaitable[rules.Event]] | None = None,
               sent: Callable[[], None] | None = None) -> Any:
    """Perform ``machine``'s actions and feed it what comes of them until it ends; the
    result of ``Finished``. Raises ``PeerMisbehaved`` or ``PeerGone`` for those endings.
    ``receive`` gives the next peer event (default: read it from ``stream``); ``sent()``
    is called after each message written.

    A failed write does not end the conversation at once: node work already asked for
    (the batch in hand) is still done, and the machine learns that the peer is gone when
    it next waits for it."""
    gone: str | None = None
    for _ in range(machine.max_events + 1):
        event = None
        for action in actions:
            if isinstance(action, rules.Send):
                if gone is None:
                    try:
                        await send(stream, action.message)
                    except PeerGone as e:
                        gone = str(e)
                    else:
                        if sent is not None:
                            sent()
            elif isinstance(action, rules.Finished):
                return action.result
            elif isinstance(action, rules.Misbehaved):
                raise PeerMisbehaved(action.message, action.code)
            elif isinstance(action, rules.Lost):
                raise PeerGone(action.reason)
            else:
                answer = await perform(action)
                if answer is not None:
                    event = answer
        if event is None:
            assert machine.awaits_peer, f"nothing to feed {type(machine).__name__} in {machine.state.name}"
            event = rules.Gone(gone) if gone is not None else await (receive or partial(_receive, stream))()
        actions = machine.feed(event)
    raise AssertionError(f"{type(machine).__name__} did not end within its {machine.max_events} events")


# -- the listener side ---------------------------------------------------------------


class ChangeFeed(Protocol):
    """What a listener reads of its store's change feed (``p2pnode.ledger.store.Store``)."""

    epoch: bytes

    def changes(self, after: int, limit: int) -> tuple[int, list[tuple[int, Head]]]: ...
    def marked_heads_page(self, after: bytes | None, limit: int) -> tuple[int, dict[bytes, Head]]: ...


def read_changes(feed: ChangeFeed, since: wire.Cursor, limit: int) -> rules.ChangesRead:
    """The answer to ``ReadChanges``: the feed's mark and, if ``since`` holds there, the
    first ``limit`` changes after it, read at one instant. For a cursor of another store
    nothing but the mark is read."""
    if since.epoch != feed.epoch:
        upto, changes = feed.changes(U63_MAX, 0)  # (the counter alone: nothing is after U63_MAX)
        return rules.ChangesRead(wire.Cursor(feed.epoch, upto), None)
    upto, changes = feed.changes(since.counter, limit)
    mark = wire.Cursor(feed.epoch, upto)
    return rules.ChangesRead(mark, tuple(changes) if wire.cursor_holds(since, mark) else None)


async def serve_sync(stream: Stream, heads: Callable[[bytes | None, int], dict],
                     chain: Callable[[bytes, int, int], list[bytes]], feed: ChangeFeed | None = None) -> int:
    """Answer one peer's pulls until it closes the stream (or has made
    ``MAX_REQUESTS_PER_STREAM`` requests); returns the entries sent. Raises
    ``PeerMisbehaved`` if the peer sends anything but requests.

    ``heads(after, limit)`` gives the first ``limit`` chains held after author ``after``
    (None: from the first), in order; ``chain(author, start, limit)`` their envelopes;
    ``feed`` answers the queries that carry a cursor (without it, such a query is
    answered as a node without a feed would be: as an unexpected message).
    """

    async def perform(action: Any) -> rules.Event:
        if isinstance(action, (rules.ReadChanges, rules.ReadHeads)) and feed is None and (
                isinstance(action, rules.ReadChanges) or action.marked):
            raise PeerMisbehaved("a heads? with a cursor, which this listener does not answer", "bad_message")
        if isinstance(action, rules.ReadChanges):
            assert feed is not None
            return read_changes(feed, action.since, action.limit)
        if isinstance(action, rules.ReadHeads):
            assert action.limit is not None, "a listener reads heads a page at a time"
            if action.marked:
                assert feed is not None
                upto, page = feed.marked_heads_page(action.after, action.limit)
                return rules.HeadsRead(page, wire.Cursor(feed.epoch, upto))
            return rules.HeadsRead(heads(action.after, action.limit))
        assert isinstance(action, rules.ReadChain), action
        return rules.ChainRead(tuple(chain(action.author, action.start, action.limit)))

    server = rules.Server(max_requests=MAX_REQUESTS_PER_STREAM)
    served = await _run(server, [], stream, perform)
    return served.sent


# -- the dialer side -----------------------------------------------------------------


Ingest = Callable[[list[bytes], bytes], Awaitable[Any]]  # (envelopes, author) -> store.IngestReport
MAX_OWED = 2  # answers a dialer may be owed at once (the puller: one, protocol/sync.py rule 2)


class _ReadAhead:
    """The dialer's reader: it reads the answer to each request as soon as the request is
    sent, not when the puller next waits for it. The puller sends the next ``get`` before
    it ingests the batch in hand (protocol/sync.py, rule 2), so the next batch comes in,
    and its signature checks start (``on_entries``), while the node ingests the one
    before: its workers never wait for the network, and the peer never waits for a
    window update. At most one answer is read ahead, as at most one request is
    unanswered; the time limit of a read runs from its request (``STREAM_TIMEOUT``)."""

    def __init__(self, stream: Stream, on_entries: Callable[[wire.Entries], None]) -> None:
        self._stream = stream
        self._on_entries = on_entries
        self._owed = 0  # requests sent whose answers the machine has not taken
        self._asks_in, self._asks = trio.open_memory_channel[None](MAX_OWED)
        self._answers_in, self._answers = trio.open_memory_channel[Any](0)  # (the reader holds one at most)

    def sent(self) -> None:
        """A request went out: its answer is owed, and read at once."""
        self._owed += 1
        assert self._owed <= MAX_OWED, "more requests unanswered than a dialer sends"
        self._asks_in.send_nowait(None)

    async def receive(self) -> rules.Event:
        """The next peer event, read ahead if it was owed."""
        if not self._owed:  # (nothing asked: read it now, as without a reader)
            return await _receive(self._stream)
        self._owed -= 1
        got = await self._answers.receive()
        return got.unwrap()  # (what reading raised is raised here, in the puller's task)

    async def run(self) -> None:
        async for _ in self._asks:
            await self._answers_in.send(await outcome.acapture(self._read))

    async def _read(self) -> rules.Event:
        event = await _receive(self._stream)
        if isinstance(event, rules.Received) and isinstance(event.message, wire.Entries):
            self._on_entries(event.message)
        return event


async def pull(
    stream: Stream,
    our_heads: Callable[[], dict],
    ingest: Ingest,
    *,
    batch: int = wire.MAX_BATCH,
    progress: Callable[[Progress], None] | None = None,
    only: frozenset[bytes] | None = None,
    new_chain: Callable[[bytes], bool] | None = None,
    since: wire.Cursor | None = None,
    our_head: Callable[[bytes], Head | None] | None = None,
    ahead: Callable[[wire.Entries], None] | None = None,
) -> PullResult:
    """Fetch from the peer on ``stream`` every entry it holds that we lack, storing each
    batch with ``ingest`` as it arrives, and return what it brought. Stops at the first
    batch that does not verify (the rest could not link; ``result.errors`` says why, and
    ``result.forks`` holds the proof if the histories differ).

    ``progress``, if given, is called with the figures after the plan and after each
    batch. ``only``: pull these authors' chains alone; ``new_chain``: whether to pull a
    chain we hold none of (the Puller's). ``since``: the cursor to ask changes since
    (``wire.NO_CURSOR`` for every head and a cursor back; None for every head, as a node
    without cursors asks); ``result.cursor`` is the one to give the next pull, or None
    (keep the old one). With changes, only the heads of the authors they name are read,
    each with ``our_head(author)`` (default: from ``our_heads()``). ``ahead``: read each
    answer as soon as its request is sent (``_ReadAhead``) and call ``ahead(entries)``
    with each batch as it comes in, before the batch ahead of it is ingested (to start
    its signature checks). Raises ``PeerMisbehaved`` if the peer breaks
    the wire rules, ``PeerGone`` if it leaves mid-pull (batches already ingested stay
    stored)."""

    async def perform(action: Any) -> rules.Event | None:
        if isinstance(action, rules.ReadHeads) and action.authors is not None:
            if our_head is None:
                ours = our_heads()
                return rules.HeadsRead({a: ours[a] for a in action.authors if a in ours})
            found = ((a, our_head(a)) for a in action.authors)
            return rules.HeadsRead({a: h for a, h in found if h is not None})
        if isinstance(action, rules.ReadHeads):
            return rules.HeadsRead(our_heads())
        if isinstance(action, rules.Ingest):
            report = await ingest(list(action.envelopes), action.author)
            return rules.Ingested(len(report.added), tuple(report.forks), tuple(report.errors))
        assert isinstance(action, rules.Progressed), action
        if progress is not None:
            progress(action.progress)
        return None

    puller = rules.Puller(batch=batch, only=only, new_chain=new_chain, since=since)
    if ahead is None:
        return await _run(puller, puller.begin(), stream, perform)
    reader = _ReadAhead(stream, ahead)
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader.run)
        try:
            result = await _run(puller, puller.begin(), stream, perform, receive=reader.receive, sent=reader.sent)
        except Exception as e:  # (raised below as it is, not wrapped in the nursery's ExceptionGroup)
            failure = e
        nursery.cancel_scope.cancel()  # (the reader waits for a request that will not come)
    if failure is not None:
        raise failure
    return result


# -- peer exchange -------------------------------------------------------------------


async def serve_pex(stream: Stream, on_hello: Callable[[tuple[str, ...]], None], known: Callable[[], wire.Peers]) -> None:
    """Answer one ``pex`` with the peers we know, after noting where the dialer listens."""
    hello = expect(await recv(stream), wire.Pex)
    on_hello(hello.addrs)
    await send(stream, known())


async def ask_pex(stream: Stream, our_addrs: tuple[str, ...]) -> wire.Peers:
    """Tell the peer where we listen; the peers it knows."""
    await send(stream, wire.Pex(our_addrs[: wire.MAX_ADDRS]))
    return expect(await recv(stream), wire.Peers)
