"""The running node's one way to write chains: own appends and foreign ingests, serialised
by one lock, each followed by the same hooks whatever path the entries came by.

``Ledger`` promises:

- Own entries are signed and durable (``sync=True``) before ``append`` returns; foreign
  entries are verified by the core's chain rules alone (kinds never decide replication)
  and stored in one batch per call.
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
from typing import Any, Awaitable, Callable, Iterable, NamedTuple

import trio

from protocol.entry import Entry
from protocol.fork import ForkProof
from protocol.keys import SigningKey, peer_id
from protocol.kinds import KNOWN, KindRegistry

from p2pnode.clock import Clock
from p2pnode.ledger.sigpool import NOTHING, Checking, SignaturePool
from p2pnode.ledger.store import IngestReport, Store

log = logging.getLogger(__name__)

INLINE_INGEST = 64  # batches up to this size are verified on the event loop; larger in a thread
ARRIVALS_KEPT = 10_000  # recent foreign entries remembered with when and how they came


class Arrival(NamedTuple):  # (a tuple: a sync makes one per entry, thousands a second)
    author: bytes
    seq: int
    ts: int
    received_ms: int
    via: str


EntriesHook = Callable[[list[Entry]], Awaitable[None]]


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
        self.arrivals: deque[Arrival] = deque(maxlen=ARRIVALS_KEPT)
        self._count = count
        self._announce: Callable[[list[Entry]], None] = lambda entries: None
        self._on_fork: Callable[[ForkProof], Awaitable[None]] | None = None
        self._hooks: list[tuple[frozenset[str], EntriesHook]] = []
        self._grew = trio.Event()
        self._may_sign = trio.Event()
        self._may_sign.set()
        self.interest: Any = None  # p2pnode.net.interest.Interest: whose new chains are taken (set by the node)

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
                     records: Callable[[list[Entry]], None] | None = None) -> list[Entry]:
        """Sign and durably append ``items`` (``(kind, body)``) to our chain in one batch;
        the new entries. Under the lock, first: with ``unless``, if it is true, nothing is
        written and the answer is ``[]`` (record a document once, however many paths learn
        of it at once); ``check()`` may refuse by raising. ``records(entries)``, also under
        the lock and after the write, lets the caller write its own records knowing the
        entries. Raises ``ProtocolError`` for a body this node's registry refuses,
        ``StoreError``, or what ``check`` raises. While appends are held, waits first."""
        if not self._may_sign.is_set():
            self._count("appends.held", 1)
            await self._may_sign.wait()
        async with self.lock:
            if unless is not None and unless():
                return []
            if check is not None:
                check()
            entries = self.store.append(self.key, items, now_ms=self.clock.now_ms(), registry=self.registry)
            if records is not None:
                records(entries)
        await self._after(entries, [], announce=True)
        return entries

    async def append_one(self, kind: str, body: Any, **kw: Any) -> Entry | None:
        got = await self.append([(kind, body)], **kw)
        return got[0] if got else None

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
        self.arrivals.extend(Arrival(e.author, e.seq, e.ts, received, via) for e in report.added[-ARRIVALS_KEPT:])
        await self._after(report.added, report.forks, announce=announce)
        return report

    async def stored(self, report: IngestReport, *, via: str) -> None:
        """Run the hooks for a write made under ``lock`` by a caller of its own (import)."""
        received = self.clock.now_ms()
        self.arrivals.extend(Arrival(e.author, e.seq, e.ts, received, via) for e in report.added)
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
            self._grew.set()
            self._grew = trio.Event()
        for kinds, hook in self._hooks:
            mine = [e for e in added if e.kind in kinds and self.registry.classify(e).status == KNOWN]
            if mine:
                try:
                    await hook(mine)
                except Exception:
                    log.exception("entries hook %s failed", getattr(hook, "__qualname__", hook))

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
