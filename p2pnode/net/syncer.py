"""When the node syncs, and with whom: one pull at a time per peer, on connect, every
``SYNC_INTERVAL``, and whenever gossip shows a gap; once over each other connection that
a connected peer ID opens (``pull_over``: a forker's second process with the same key is
only seen that way); and the listener side of sync.

Gossip makes new entries arrive fast; sync makes them arrive always (DESIGN.md). A peer
whose answers break the wire rules, or whose entries do not verify, is scored down; one
that relays a fork is not at fault. ``progress()`` is what ``status`` shows of a pull
under way: entries planned and fetched, the rate and the time left.

Gaps: gossipsub forwards a message once it validates, before the forwarder has stored
it, and a forwarder that lacks the entries before it cannot store it until its own pull
brings them. So a pull that a gap triggered may ask a peer that does not hold the missing
entries yet, and nothing else would trigger another before the routine round. A gap
seen in gossip (``note_gap``) is therefore remembered: after each pull that leaves it
open, the node asks that peer again after ``GAP_RETRY`` seconds, for at most
``GAP_PATIENCE`` seconds, and at most ``MAX_GAPS`` gaps are remembered at once.

Cursors: the first pull on each connection asks every head; a pull that completes gives
a cursor in the peer's change feed (protocol/sync.py, rule 7), and the next routine pull
asks only what changed since it, so that an idle round costs the same whether the two
nodes hold ten chains or a hundred thousand. One cursor is kept per connection, in
memory: it goes with the connection (a reconnect starts with a full pull), and a pull
that fails or is cut short leaves the one before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import trio

from protocol import wire
from protocol.keys import peer_id
from protocol.sync import PullResult

from p2pnode.clock import Clock
from p2pnode.ledger.sigpool import Checking
from p2pnode.ledger.store import IngestReport
from p2pnode.ledger.writer import Ledger
from p2pnode.net.connections import Connections
from p2pnode.net.streams import StreamRouter, close
from p2pnode.net.sync import PeerGone, PeerMisbehaved, pull, serve_sync

log = logging.getLogger(__name__)

SYNC_INTERVAL = 5.0  # seconds between routine head exchanges with each peer
MAX_SYNC_ROUNDS = 1_000  # consecutive pulls from one peer before yielding the slot
MAX_INBOUND = 4  # concurrent inbound sync streams one peer may hold
GAP_RETRY = 0.5  # seconds before asking a peer again about a gap it did not fill
GAP_PATIENCE = 15.0  # seconds a gap seen in gossip is chased
MAX_GAPS = 1024  # gaps remembered at once (the oldest goes first)
MAX_OTHER_PULLS = 16  # pulls over peers' other connections at once (``pull_over``)
MAX_OTHER_PULLS_PER_PEER = 4  # and over one peer ID's


def _lazy(make: Callable[[], Callable[[bytes], bool]]) -> Callable[[bytes], bool]:
    """``make()``'s function, made when first called: a plan that meets no new chain (an
    idle round) never pays for making it (the interest planner reads every stranger held)."""
    made: list[Callable[[bytes], bool]] = []

    def call(author: bytes) -> bool:
        if not made:
            made.append(make())
        return made[0](author)

    return call


class _Batches:
    """The batches of one pull: the signature checks of each start as it is read
    (``ahead``, called by the pull's reader while the batch before is being ingested),
    and ``ingest`` hands them to the ledger with the batch (writer.py)."""

    KEPT = 2  # batches read and not yet ingested, at most (the one in hand, the one read ahead)

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._started: list[tuple[tuple[bytes, ...], Checking]] = []  # batches read, their checks

    def ahead(self, batch: wire.Entries) -> None:
        self._started = self._started[-(self.KEPT - 1):] + [(batch.entries, self.ledger.check(batch.entries))]

    async def ingest(self, envelopes: list[bytes], author: bytes) -> IngestReport:
        batch = tuple(envelopes)
        # (verdicts are found by envelope bytes: checks of another batch would only go unused)
        checking = next((c for b, c in self._started if b == batch), None)
        self._started = [(b, c) for b, c in self._started if b != batch]
        return await self.ledger.ingest(envelopes, author, via="sync", checking=checking)


@dataclass(frozen=True)
class _Cursor:
    """Where the next pull from a peer starts, and the connection it was got on."""

    conn: Any  # the peer's entry in Connections.connected when it was got
    at: wire.Cursor


@dataclass
class _Pull:
    """Progress of one pull under way."""

    started: float
    target: int = 0
    fetched: int = 0


class Syncer:
    def __init__(self, ledger: Ledger, conns: Connections, streams: StreamRouter, clock: Clock, *,
                 interval: float, count: Callable[[str, int], None]) -> None:
        self.ledger = ledger
        self.conns = conns
        self.streams = streams
        self.clock = clock
        self.interval = interval
        self._count = count
        self._syncing: dict[bytes, bool] = {}  # peer -> "sync again when done"
        self._pulls: dict[bytes, _Pull] = {}
        self.last_round_ms: int | None = None
        self._nursery: trio.Nursery | None = None
        self._gaps: dict[bytes, tuple[int, float]] = {}  # author -> (seq known to exist, chase until)
        self._other_pulls: dict[bytes, int] = {}  # peer -> pulls over its other connections now
        self._cursors: dict[bytes, _Cursor] = {}  # peer -> its cursor (one per connected peer)
        for protocol_id in wire.SYNC_PROTOCOLS:  # (one limit for both: they share the name)
            streams.add(protocol_id, "sync", self._serve, MAX_INBOUND)

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    @property
    def busy(self) -> bool:
        return bool(self._syncing)

    def request(self, pk: bytes) -> None:
        """Pull from ``pk`` now, or once more after the pull under way."""
        if pk in self._syncing:
            self._syncing[pk] = True
            return
        self._syncing[pk] = False
        self._nursery.start_soon(self._sync_with, pk)

    def request_all(self) -> None:
        for pk in [pk for pk in self._cursors if self._cursor(pk) is None]:
            self._cursors.pop(pk, None)  # (its connection ended: bounded by the peers connected)
        for pk in list(self.conns.connected):
            self.request(pk)

    def _cursor(self, pk: bytes) -> wire.Cursor | None:
        """The cursor got from ``pk`` on its present connection, if any."""
        c = self._cursors.get(pk)
        conn = self.conns.connected.get(pk)
        return c.at if c is not None and conn is not None and c.conn is conn else None

    async def routine(self) -> None:
        while True:
            await trio.sleep(self.interval)
            self.request_all()

    async def _sync_with(self, pk: bytes) -> None:
        try:
            for _ in range(MAX_SYNC_ROUNDS):
                self._syncing[pk] = False
                self._pulls[pk] = _Pull(self.clock.monotonic())
                await self._pull_once(pk, lambda: self.streams.open(pk, wire.SYNC_PROTOCOLS),
                                      progress=lambda p, pk=pk: self._progressed(pk, p), cursor=True)
                if not self._syncing.get(pk):
                    break
        finally:
            self._syncing.pop(pk, None)
            self._pulls.pop(pk, None)
        if self._open_gaps() and pk in self.conns.connected:
            self._nursery.start_soon(self._ask_again, pk)

    def pull_over(self, pk: bytes, conn: Any) -> None:
        """Pull from ``pk`` once over its libp2p connection ``conn`` (not the one libp2p
        would choose): a second connection of one peer ID may be a second process with
        the same key, whose chain differs, and only a pull over it shows the fork
        (issue 9). At most ``MAX_OTHER_PULLS`` such pulls run at once, and
        ``MAX_OTHER_PULLS_PER_PEER`` for one peer ID; more are counted and skipped (the
        routine pulls go on)."""
        mine = self._other_pulls.get(pk, 0)
        if sum(self._other_pulls.values()) >= MAX_OTHER_PULLS or mine >= MAX_OTHER_PULLS_PER_PEER:
            self._count("sync.other_connection_skipped", 1)
            return
        self._other_pulls[pk] = mine + 1

        async def once() -> None:
            try:
                await self._pull_once(pk, lambda: self.streams.open_on(conn, wire.SYNC_PROTOCOLS))
                self._count("sync.other_connection_pulls", 1)
            finally:
                left = self._other_pulls.pop(pk) - 1
                if left:
                    self._other_pulls[pk] = left

        self._nursery.start_soon(once)

    async def _pull_once(self, pk: bytes, open_stream: Callable[[], Awaitable[Any]],
                         progress: Callable[[Any], None] | None = None, *, cursor: bool = False) -> None:
        """One pull from ``pk`` over the stream ``open_stream`` opens; what the peer did
        wrong is scored, nothing is raised. With ``cursor`` (the routine pulls over the
        connection libp2p picks) it asks what changed since the peer's cursor, or
        everything with ``NO_CURSOR`` on a connection's first pull, and keeps the cursor a
        complete pull gives; without (a pull over a peer ID's other connection) it is a
        full pull and keeps none."""
        stream = None
        try:
            stream = await open_stream()
            interest = self.ledger.interest
            conn = self.conns.connected.get(pk)
            # (a peer of sync 1.0.0 refuses `since`: with it, every pull is a full one)
            cursor = cursor and _protocol_of(stream) != wire.SYNC_PROTOCOL_1_0
            since = (self._cursor(pk) or wire.NO_CURSOR) if cursor else None
            batches = _Batches(self.ledger)
            result = await pull(stream, self.ledger.store.heads, batches.ingest, progress=progress,
                                new_chain=None if interest is None else _lazy(interest.planner),
                                since=since, our_head=self.ledger.store.head, ahead=batches.ahead)
            self.last_round_ms = self.clock.now_ms()
            self._count("sync.heads.received", result.heads_received)
            self._count("sync.pulls.changes" if result.changes else "sync.pulls.full", 1)
            if cursor and result.cursor is not None and conn is not None and self.conns.connected.get(pk) is conn:
                self._cursors[pk] = _Cursor(conn, result.cursor)
            if result.added:
                log.info("synced %d entries from %s", result.added, peer_id(pk))
            if result.errors and not result.forks and result.errors[0].code != "not_admitted":
                # (a peer relaying a fork is not at fault, nor one whose chains we had no room for)
                first = result.errors[0]
                await self.conns.penalise(pk, "bad_entries", f"seq {first.seq}: {first.message}")
        except PeerMisbehaved as e:
            await self.conns.penalise(pk, "bad_frame", f"sync answer: {e}")
        except (PeerGone, trio.TooSlowError) as e:
            log.debug("sync with %s ended: %s", peer_id(pk), e)
        except Exception as e:
            if pk in self.conns.connected:
                log.info("sync with %s failed: %s", peer_id(pk), e)
        finally:
            if stream is not None:
                await close(stream)

    async def pull_chain(self, pk: bytes, author: bytes) -> PullResult:
        """Pull ``author``'s chain alone from ``pk`` now, beside the routine pulls; what it
        brought. Raises ``PeerMisbehaved``, ``PeerGone``, ``trio.TooSlowError`` or what
        opening a stream raises (the caller decides whom to ask next)."""
        stream = await self.streams.open(pk, wire.SYNC_PROTOCOLS)
        batches = _Batches(self.ledger)
        try:
            return await pull(stream, self.ledger.store.heads, batches.ingest, only=frozenset([author]),
                              ahead=batches.ahead)
        finally:
            await close(stream)

    def note_gap(self, author: bytes, seq: int) -> None:
        """Gossip showed that ``author``'s chain reaches ``seq`` while ours does not."""
        until = self.clock.monotonic() + GAP_PATIENCE
        old = self._gaps.get(author)
        self._gaps[author] = (max(seq, old[0] if old else 0), until)
        if len(self._gaps) > MAX_GAPS:
            del self._gaps[min(self._gaps, key=lambda a: self._gaps[a][1])]

    def _open_gaps(self) -> bool:
        """Whether a remembered gap is still open (closed and expired ones are dropped)."""
        now = self.clock.monotonic()
        for author, (seq, until) in list(self._gaps.items()):
            head = self.ledger.store.head(author)
            if until < now or (head is not None and head.seq >= seq):
                del self._gaps[author]
        return bool(self._gaps)

    async def _ask_again(self, pk: bytes) -> None:
        await trio.sleep(GAP_RETRY)
        if pk in self.conns.connected and pk not in self._syncing and self._open_gaps():
            self.request(pk)

    def _progressed(self, pk: bytes, progress: Any) -> None:
        self.ledger.expect(progress.target - progress.fetched)
        p = self._pulls.get(pk)
        if p is not None:
            p.fetched, p.target = progress.fetched, progress.target

    def progress(self) -> dict | None:
        """``{"fetched", "target", "rate_per_s", "eta_s"}`` over the pulls under way that
        fetch anything, or None."""
        pulls = [p for p in self._pulls.values() if p.fetched or p.target]
        if not pulls:
            return None
        fetched = sum(p.fetched for p in pulls)
        target = max(sum(p.target for p in pulls), fetched)
        elapsed = max(self.clock.monotonic() - min(p.started for p in pulls), 1e-3)
        rate = fetched / elapsed
        eta = (target - fetched) / rate if rate > 0 else None
        return {"fetched": fetched, "target": target, "rate_per_s": round(rate, 1),
                "eta_s": None if eta is None else round(eta, 1)}

    async def _serve(self, stream: Any, pk: bytes | None) -> None:
        store = self.ledger.store

        def chain(author: bytes, start: int, limit: int) -> list[bytes]:
            return list(store.chain(author, start=start, limit=limit))

        # (on sync 1.0.0, a heads? with a cursor is refused, as the nodes that spoke only it did)
        feed = None if _protocol_of(stream) == wire.SYNC_PROTOCOL_1_0 else store
        self._count("sync.entries_sent", await serve_sync(stream, store.heads_page, chain, feed))


def _protocol_of(stream: Any) -> str | None:
    """The protocol id a stream was opened on (libp2p's ``get_protocol``), if it says."""
    get = getattr(stream, "get_protocol", None)
    return None if get is None else get()
