"""The running node's one way to write chains: own appends and foreign ingests, serialised
by one lock, each followed by the same hooks whatever path the entries came by.

``Ledger`` promises:

- Own entries are signed and durable (``sync=True``) before ``append`` returns; foreign
  entries are verified by the core's chain rules alone (kinds never decide replication)
  and stored in one batch per call.
- Group commit. Appends and synced record writes (``write_records``) that arrive while
  a write is in flight wait in a queue; the next write takes every one waiting (up to
  ``MAX_GROUP``), in the order they came, into one LevelDB batch made durable by one
  sync (store.py, "Group writes"), then answers each. Each change is decided exactly as
  if the writes were serialised: its ``unless`` and ``check`` run in order, under the
  lock, reading the store with the changes before it in the group as if they were
  written, and its entries take the next seqs after theirs. A change that is refused
  (``unless``, ``check``, its body, the reserve) gets its own answer and the rest of the
  group stands. No caller is answered before its change is durable, and no other reader
  sees a change before then; a write that fails fails every caller of its group (the
  store then fails stop: store.py, "The disk"), so nothing acknowledged is lost.
- After every write that stored entries, in this order and outside the lock: the new
  entries are announced for gossip (own ones, and imported ones), fork proofs found are
  passed on, waiters on a head are woken, and every ``on_entries`` hook gets the entries
  of the kinds it reacts to whose bodies are valid. A hook that fails is logged; the
  write stands.
- ``wait_head(author, seq)`` returns as soon as a chain reaches ``seq``, woken by the write
  itself (no polling), or when its time runs out.
- While appends are held (``hold``, until ``release``), ``append`` waits: the node holds
  them at start until it has asked its peers whether they hold more of its own chain
  than its store does (p2pnode/net/ownchain.py), because signing on top of an old head
  would fork its own chain. Whoever holds must release, whatever happens (a ``finally``),
  so no append waits longer than that check's own time limit.
- Own chain entries that come back from peers are written with the own reserve, every
  other author's with the others' reserve (store.py, "The disk").
- The Ed25519 checks of a big foreign batch are made by the node's signature workers
  (``pool``, sigpool.py), before the lock is taken, so that other writes go on
  meanwhile; everything else is checked here, and an envelope the workers gave no
  verdict for is verified here. A caller may start a batch's checks early (``check``)
  and hand them to ``ingest`` (``checking``): sync does, for the batch it read ahead.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable, NamedTuple

import trio

from protocol.entry import Entry
from protocol.fork import ForkProof
from protocol.keys import SigningKey, peer_id
from protocol.kinds import KNOWN, KindRegistry

from p2pnode.clock import Clock
from p2pnode.ledger.sigpool import NOTHING, Checking, SignaturePool
from p2pnode.ledger.store import MAX_GROUP_CHANGES, GroupWrite, IngestReport, Records, Store, StoreError

log = logging.getLogger(__name__)

INLINE_INGEST = 64  # batches up to this size are verified on the event loop; larger in a thread
MAX_GROUP = 256  # changes (appends, record writes) in one group write at most; the rest wait for the next
assert MAX_GROUP <= MAX_GROUP_CHANGES
ARRIVALS_KEPT = 10_000  # recent foreign entries remembered with when and how they came


class Arrival(NamedTuple):  # (what ``arrivals`` gives; kept as plain tuples, ``_arrived``)
    author: bytes
    seq: int
    ts: int
    received_ms: int
    via: str


EntriesHook = Callable[[list[Entry]], Awaitable[None]]


@dataclass(eq=False)
class _Change:
    """One caller's change waiting for a group write, and, once written, its answer."""

    items: list[tuple[str, Any]]  # entries to append (none: a records write)
    puts: list[tuple[bytes, bytes]]  # full keys, written in the same change
    deletes: list[bytes]
    unless: Callable[[], bool] | None = None
    check: Callable[[], None] | None = None
    taken: bool = False  # in a group (being) written: it is answered by that group's writer
    written: trio.Event = field(default_factory=trio.Event)  # set once answered
    entries: list[Entry] = field(default_factory=list)
    error: BaseException | None = None


def _own_error(e: BaseException) -> BaseException:
    """An error of its own for each caller of a failed group (one exception object is not
    raised in several tasks); a ``CodedError`` keeps its class, message and code."""
    if isinstance(e, StoreError):
        return type(e)(e.message, code=e.code)
    return StoreError(f"the group write failed: {type(e).__name__}: {e}")


class Ledger:
    """The store of a running node, and everything that happens when it grows."""

    def __init__(self, store: Store, key: SigningKey, registry: KindRegistry, clock: Clock, *,
                 count: Callable[[str, int], None], pool: SignaturePool | None = None) -> None:
        self.store = store
        self.pool = pool  # the node's signature workers (None: every check in-process)
        self.key = key
        self.registry = registry
        self.clock = clock
        self.lock = trio.Lock()
        # Plain tuples (author, seq, ts, received_ms, via), made Arrivals when read: a sync
        # makes one per entry, and a tuple display costs a tenth of a NamedTuple's
        # ``__new__`` (a Python call); an exact tuple of bytes, ints and text also leaves
        # the garbage collector's lists at its first pass, where a NamedTuple instance
        # stays tracked, and is walked by every full collection while it is kept.
        self._arrived: deque[tuple[bytes, int, int, int, str]] = deque(maxlen=ARRIVALS_KEPT)
        self._count = count
        self._announce: Callable[[list[Entry]], None] = lambda entries: None
        self._on_fork: Callable[[ForkProof], Awaitable[None]] | None = None
        self._hooks: list[tuple[frozenset[str], EntriesHook]] = []
        self._grew = trio.Event()
        self._queue: deque[_Change] = deque()  # changes waiting for a group write, in arrival order
        self._may_sign = trio.Event()
        self._may_sign.set()
        self.interest: Any = None  # p2pnode.net.interest.Interest: whose new chains are taken (set by the node)

    @property
    def arrivals(self) -> list[Arrival]:
        """The last ``ARRIVALS_KEPT`` foreign entries stored, oldest first, with when
        (``received_ms``) and how (``via``) each came."""
        return [Arrival._make(a) for a in self._arrived]

    # -- wiring (by the node, before it serves) ------------------------------------------

    def on_announce(self, fn: Callable[[list[Entry]], None]) -> None:
        """``fn(entries)`` queues entries of one author for gossip."""
        self._announce = fn

    def on_fork(self, fn: Callable[[ForkProof], Awaitable[None]]) -> None:
        self._on_fork = fn

    def add_hook(self, kinds: Iterable[str], fn: EntriesHook) -> None:
        """Call ``fn(entries)`` with the new stored entries of ``kinds`` whose bodies are valid."""
        self._hooks.append((frozenset(kinds), fn))

    # -- holding appends ---------------------------------------------------------------

    def hold(self) -> None:
        """Make ``append`` wait until ``release``."""
        if self._may_sign.is_set():
            self._may_sign = trio.Event()

    def release(self) -> None:
        self._may_sign.set()

    @property
    def held(self) -> bool:
        return not self._may_sign.is_set()

    # -- writes ----------------------------------------------------------------------------

    async def append(self, items: list[tuple[str, Any]], *, unless: Callable[[], bool] | None = None,
                     check: Callable[[], None] | None = None,
                     records: tuple[Records, Iterable[tuple[bytes, bytes]], Iterable[bytes]] | None = None,
                     ) -> list[Entry]:
        """Sign and durably append ``items`` (``(kind, body)``) to our chain in one change;
        the new entries. Under the lock, in the group's order (above): with ``unless``, if
        it is true, nothing is written and the answer is ``[]`` (record a document once,
        however many paths learn of it at once); ``check()`` may refuse by raising.
        ``records = (space, puts, deletes)`` writes records of an extension's space in the
        same change as the entries (both durable, or neither), and on their own when
        ``unless`` holds; a ``check`` or body that refuses writes neither. Raises
        ``ProtocolError`` for a body this node's registry refuses, ``StoreError``
        (``StoreFull``, or the group's write failed), or what ``check`` raises. While
        appends are held, waits first."""
        if not self._may_sign.is_set():
            self._count("appends.held", 1)
            await self._may_sign.wait()
        puts, deletes = self._keyed(records)
        change = _Change(list(items), puts, deletes, unless, check)
        await self._commit(change)
        await self._after(change.entries, [], announce=True)
        return change.entries

    async def append_one(self, kind: str, body: Any, **kw: Any) -> Entry | None:
        got = await self.append([(kind, body)], **kw)
        return got[0] if got else None

    async def write_records(self, space: Records, puts: Iterable[tuple[bytes, bytes]] = (),
                            deletes: Iterable[bytes] = ()) -> None:
        """Put and delete records of ``space`` (keys without its prefix) durably, sharing
        the next group write with the appends and record writes waiting for it (``Records.
        write(sync=True)`` has an fsync of its own). Raises ``StoreError``."""
        puts_, deletes_ = self._keyed((space, puts, deletes))
        await self._commit(_Change([], puts_, deletes_))

    @staticmethod
    def _keyed(records: tuple[Records, Iterable[tuple[bytes, bytes]], Iterable[bytes]] | None
               ) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
        if records is None:
            return [], []
        space, puts, deletes = records
        return [(space.prefix + k, v) for k, v in puts], [space.prefix + k for k in deletes]

    async def _commit(self, change: _Change) -> None:
        """Queue ``change`` and return once it is answered: written in a group by whoever
        holds the lock when its turn comes (this task, if no write in flight took it).
        Raises its error. Cancelled before a group took it, it is dropped from the queue;
        after, the write goes on and this waits for it (shielded: it is short) before the
        cancellation goes on, so that no caller leaves while its change may be unwritten;
        its entries are then announced and head waiters woken, as after any write (its
        ``on_entries`` hooks go with the cancellation, as they would during ``_after``)."""
        self._queue.append(change)
        try:
            async with self.lock:
                while not change.taken:  # (it is at the queue's front, or a write before took it)
                    await self._write_group()
        except trio.Cancelled:
            if not change.taken:
                self._queue.remove(change)
            else:
                with trio.CancelScope(shield=True):
                    await change.written.wait()
                if change.entries:
                    self._announce(change.entries)
                    self._wake()
            raise
        assert change.written.is_set()
        if change.error is not None:
            raise change.error

    async def _write_group(self) -> None:
        """Under the lock: take the waiting changes (up to ``MAX_GROUP``) in order, decide
        and gather each (store.py, ``GroupWrite``), write them with one sync in a worker
        thread (the event loop goes on meanwhile, and the next changes queue), and answer
        each. Nothing is answered before the write returns."""
        group: list[_Change] = []
        while self._queue and len(group) < MAX_GROUP:
            change = self._queue.popleft()
            change.taken = True
            group.append(change)
        write = self.store.group()
        try:
            with write.reading():
                for change in group:
                    self._gather(write, change)
            if not write.empty:
                with trio.CancelScope(shield=True):  # (a thread cannot be stopped half way; its callers wait)
                    await trio.to_thread.run_sync(write.commit)
        except BaseException as e:
            for change in group:
                if change.error is None:
                    change.entries, change.error = [], _own_error(e)
            if not isinstance(e, StoreError):
                raise
        finally:
            for change in group:
                change.written.set()
        if not write.empty:
            self._count("writes.groups", 1)
            self._count("writes.grouped", len(group))

    def _gather(self, write: GroupWrite, change: _Change) -> None:
        """Decide one change and add it to ``write``, or give it its refusal."""
        try:
            if change.unless is not None and change.unless():
                if change.puts or change.deletes:
                    write.write(change.puts, change.deletes)  # (the records go in whatever ``unless`` says)
                return
            if change.check is not None:
                change.check()
            if change.items:
                change.entries = write.append(self.key, change.items, now_ms=self.clock.now_ms(),
                                              registry=self.registry, puts=change.puts, deletes=change.deletes)
            else:
                write.write(change.puts, change.deletes)
        except Exception as e:
            change.entries, change.error = [], e

    def expect(self, entries: int) -> None:
        """About ``entries`` foreign entries are coming (a pull's plan): the signature
        workers start now if they will be used."""
        if self.pool is not None:
            self.pool.warm(entries)

    def check(self, envelopes: list[bytes] | tuple[bytes, ...]) -> Checking:
        """Start the signature checks of ``envelopes`` in the workers now, if the batch is
        big enough (sigpool.py); hand the result to ``ingest``."""
        return NOTHING if self.pool is None else self.pool.check(envelopes)

    async def ingest(self, envelopes: list[bytes] | list[Entry], author: bytes | None = None, *, via: str = "sync",
                     announce: bool = False, parsed: bool = False, checking: Checking | None = None) -> IngestReport:
        """Verify and store foreign entries in one write (only ``author``'s, if given); their
        report. ``announce``: gossip what was added (imports do; sync and gossip do not).
        With ``parsed``, ``envelopes`` are ``Entry`` values that ``parse_entry`` made
        (signature and fields verified): they are not verified again (Store.ingest).
        ``checking``: the signature checks of these envelopes started earlier (``check``);
        without it they start now (bytes only: parsed entries need none)."""

        own = author == self.key.public_key

        interest = self.interest
        verdicts = None if parsed else await (self.check(envelopes) if checking is None else checking).verdicts()

        def work() -> IngestReport:
            return self.store.ingest(envelopes, registry=self.registry, author=author, own=own, parsed=parsed,
                                     admit=None if interest is None else
                                     (lambda a: interest.admits(a, evict=via != "sync")),
                                     verdicts=verdicts)

        async with self.lock:
            report = work() if len(envelopes) <= INLINE_INGEST else await trio.to_thread.run_sync(work)
            if interest is not None and report.added:
                interest.stored({e.author for e in report.added})
        self._count("entries.received", len(envelopes))
        self._count("entries.added", len(report.added))
        received = self.clock.now_ms()
        self._arrived.extend([(e.author, e.seq, e.ts, received, via) for e in report.added[-ARRIVALS_KEPT:]])
        await self._after(report.added, report.forks, announce=announce)
        return report

    async def stored(self, report: IngestReport, *, via: str) -> None:
        """Run the hooks for a write made under ``lock`` by a caller of its own (import)."""
        received = self.clock.now_ms()
        self._arrived.extend([(e.author, e.seq, e.ts, received, via) for e in report.added[-ARRIVALS_KEPT:]])
        await self._after(report.added, report.forks, announce=True)

    async def record_fork(self, proof: ForkProof) -> bool:
        async with self.lock:
            return self.store.record_fork(proof)

    async def _after(self, added: list[Entry], forks: list[ForkProof], *, announce: bool) -> None:
        if announce and added:
            by_author: dict[bytes, list[Entry]] = {}
            for e in added:
                by_author.setdefault(e.author, []).append(e)
            for entries in by_author.values():
                self._announce(entries)
        for proof in forks:
            log.warning("FORK: %s signed two entries at seq %d", peer_id(proof.author), proof.seq)
            self._count("forks.found", 1)
            if self._on_fork is not None:
                await self._on_fork(proof)
        if added:
            self._wake()
        for kinds, hook in self._hooks:
            mine = [e for e in added if e.kind in kinds and self.registry.classify(e).status == KNOWN]
            if mine:
                try:
                    await hook(mine)
                except Exception:
                    log.exception("entries hook %s failed", getattr(hook, "__qualname__", hook))

    def _wake(self) -> None:
        """Wake every ``wait_head``: a chain grew."""
        self._grew.set()
        self._grew = trio.Event()

    # -- waiting ---------------------------------------------------------------------------

    async def wait_head(self, author: bytes, seq: int, timeout: float) -> bool:
        """Whether ``author``'s chain reaches ``seq`` within ``timeout`` seconds."""
        with trio.move_on_after(timeout):
            while True:
                head = self.store.head(author)
                if head is not None and head.seq >= seq:
                    return True
                await self._grew.wait()
        head = self.store.head(author)
        return head is not None and head.seq >= seq
