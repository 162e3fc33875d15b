"""Signature checks on every core: a pool of worker processes that make the Ed25519
checks of big batches, which one process would otherwise make one after another.

Verifying a pulled batch is mostly Ed25519 (three quarters of a sync's CPU), and each
check depends on one envelope's bytes alone. So a big batch is cut into chunks and each worker
computes ``protocol.envelope.verdicts(chunk)``: for each envelope, whether each of its
signatures verifies. The node's own process does everything else as it always did:
decoding, the schema, chain links, forks and the write (``Store.ingest``), opening each
envelope with its own bytes' verdict in place of calling ``verify``. Workers do not
decode entries for the node: their result would cross back as pickled objects, which
costs more CPU than decoding once here, and the cores are what is scarce.

Why processes and not threads: ``cryptography`` releases the GIL while it verifies (two
threads verifying nothing else reach 1.8 x one), but everything around a check is Python
under the one GIL: the node's decoding, store and network work (a quarter of a sync's
CPU) and each check's own glue. A verifying thread that wants the GIL back while the
node runs a long Python stretch (a batch's decoding and write take ~0.1 s) may wait a
switch interval (5 ms) for each 0.17 ms check; a process never waits for the node.

``SignaturePool`` promises:

- Nothing is taken on a worker's word but a verdict, and a verdict is found by the
  envelope's bytes (``Checking.verdicts`` maps bytes to verdict), so it can only be
  applied to the bytes it was made from; ``open_envelope`` takes it at the step where it
  would verify, so an envelope yields the same entry or the same error (code, message)
  either way, and the node penalises a peer exactly as before.
- Small batches (at most ``SMALL_BATCH`` envelopes: gossip, a few entries) are never
  sent. Why 64: a round trip to a worker costs about a millisecond (pickling, a thread
  hop, two process wake-ups), the time of five or six checks; for a few entries that is
  latency added for nothing, and a node that only ever gets gossip never starts a worker.
  (It is also the size up to which the ledger ingests on the event loop, writer.py.)
- Workers: ``workers`` processes (default: one per core this process may run on, at most
  ``MAX_WORKERS``; 0: none, every check in-process), started with ``spawn`` (a fresh
  interpreter: the node's threads and LevelDB handle are not forked; ~0.2 s of CPU each)
  on the first big batch, or a little before it (``warm``: when a pull has planned more
  than a small batch), reused, ended by ``close``: when it returns no worker process is
  left. The node owns one pool and closes it when it stops; a worker whose node died
  without closing it (SIGKILL) exits by itself within a second (sigworker.py).
- A batch is cut in chunks of at most ``CHUNK`` envelopes, and at least one per worker,
  so that every worker has a share of it and a batch queued behind another starts on
  whichever worker is free.
- Memory: at most ``MAX_PENDING`` envelopes are in the pool at once (submitted and not
  done); a batch that would pass it is checked in-process. What the pool holds are
  references to batches the pulls hold anyway (a pull holds two at most: the one being
  stored and the one read ahead, p2pnode/net/sync.py), plus the chunks being pickled.
- Failure: if a worker dies or the pool breaks in any way, every batch it had is
  verified in-process instead (its verdicts are empty), and it is logged and counted
  (``verify.pool_failed``). The next big batch starts a new pool, at most
  ``MAX_RESTARTS`` times in the pool's life; after that every check is made in-process.
  Unverified entries are never accepted: an envelope without a verdict is verified by
  ``open_envelope`` itself.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
from typing import Callable, Sequence

import trio

from protocol import envelope
from protocol.envelope import Verdict

from p2pnode.ledger import sigworker

log = logging.getLogger(__name__)

SMALL_BATCH = 64  # batches of at most this many envelopes are checked in-process
CHUNK = 1024  # envelopes in one worker task at most (~0.2 s of checks)
MAX_WORKERS = 8  # worker processes at most, whatever the core count
MAX_PENDING = 8 * 4096  # envelopes in the pool at once (8 sync batches of wire.MAX_BATCH)
MAX_RESTARTS = 3  # new pools started after failures, in a pool's life


def default_workers() -> int:
    """One worker per core this process may run on, at most ``MAX_WORKERS``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not Linux)
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


class Checking:
    """The signature checks of one batch: under way in the pool, or none (then every
    envelope is verified in-process, as the ledger always can)."""

    def __init__(self, pool: "SignaturePool | None" = None, executor: cf.Executor | None = None,
                 chunks: Sequence[Sequence[bytes]] = (), futures: Sequence[cf.Future] = ()) -> None:
        assert len(chunks) == len(futures)
        self._pool = pool
        self._executor = executor
        self._chunks = chunks
        self._futures = futures

    @property
    def pooled(self) -> int:
        """Envelopes sent to the workers (0: the batch is checked in-process)."""
        return sum(len(c) for c in self._chunks)

    async def verdicts(self) -> dict[bytes, Verdict | None]:
        """Each envelope's verdict, by its bytes, once the workers have made them all;
        ``{}`` if none were sent, or if the pool failed meanwhile (then it is logged,
        and the caller verifies every envelope itself). Cancellable: the workers finish
        their chunks and the result is dropped."""
        if not self._futures:
            return {}
        await trio.to_thread.run_sync(cf.wait, self._futures, abandon_on_cancel=True)
        out: dict[bytes, Verdict | None] = {}
        try:
            for chunk, future in zip(self._chunks, self._futures):
                got = future.result()
                if len(got) != len(chunk):  # (cannot happen: verdicts() maps one to one)
                    raise RuntimeError(f"a worker gave {len(got)} verdicts for {len(chunk)} envelopes")
                out.update(zip(chunk, got))
        except Exception as e:  # BrokenProcessPool (a worker died), CancelledError (pool closed), ...
            assert self._pool is not None
            self._pool._failed(self._executor, e)
            return {}
        return out


NOTHING = Checking()
"""The checks of a batch that is not sent to the pool: verified in-process."""


class SignaturePool:
    """Worker processes that make the Ed25519 checks of big batches (module docstring).
    ``count(name, n)`` counts what it does: ``verify.pooled`` (envelopes sent),
    ``verify.pool_full`` (batches kept in-process for want of room), ``verify.pool_failed``."""

    def __init__(self, workers: int | None = None, *, small_batch: int = SMALL_BATCH, chunk: int = CHUNK,
                 max_pending: int = MAX_PENDING, max_restarts: int = MAX_RESTARTS,
                 count: Callable[[str, int], None] | None = None) -> None:
        workers = default_workers() if workers is None else workers
        if not 0 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 0..{MAX_WORKERS}, not {workers}")
        if small_batch < 0 or chunk < 1 or max_pending < 1 or max_restarts < 0:
            raise ValueError("small_batch >= 0, chunk >= 1, max_pending >= 1 and max_restarts >= 0")
        self.workers = workers
        self.small_batch = small_batch
        self.chunk = chunk
        self.max_pending = max_pending
        self.max_restarts = max_restarts
        self._count = count or (lambda name, n: None)
        self._executor: cf.ProcessPoolExecutor | None = None
        self._starts = 0  # pools started (the first, then restarts)
        self._closed = False
        self._lock = threading.Lock()  # (the pending count is lowered from the pool's own thread)
        self._pending = 0  # envelopes submitted and not done

    @property
    def running(self) -> bool:
        return self._executor is not None

    @property
    def pending(self) -> int:
        return self._pending

    def pids(self) -> list[int]:
        """The worker processes' ids (none before the first big batch, or after ``close``)."""
        ex = self._executor
        procs = getattr(ex, "_processes", None) or {}  # (ProcessPoolExecutor's own map: pid -> process)
        return sorted(procs)

    def warm(self, expected: int) -> None:
        """``expected`` envelopes are coming in batches: if they will be sent to the
        workers, start them now (their start overlaps the first batch's transfer)."""
        if expected <= self.small_batch or self.workers == 0 or self._closed or self._executor is not None:
            return
        executor = self._start()
        if executor is not None:
            try:
                for _ in range(self.workers):  # (the executor starts a process per task while none is idle)
                    executor.submit(envelope.verdicts, [])
            except RuntimeError as e:
                self._failed(executor, e)

    def check(self, envelopes: Sequence[bytes]) -> Checking:
        """Start the signature checks of ``envelopes`` in the workers and return at once
        (await ``verdicts()`` on the result). A small batch, or one that finds the pool
        off, closed, broken for good or without room, gets ``NOTHING``: it is verified
        in-process."""
        n = len(envelopes)
        if n <= self.small_batch or self.workers == 0 or self._closed:
            return NOTHING
        with self._lock:
            if self._pending + n > self.max_pending:
                self._count("verify.pool_full", 1)
                return NOTHING
        executor = self._executor or self._start()
        if executor is None:
            return NOTHING
        size = min(self.chunk, -(-n // self.workers))
        chunks = [list(envelopes[i:i + size]) for i in range(0, n, size)]
        futures: list[cf.Future] = []
        try:
            for c in chunks:
                with self._lock:
                    self._pending += len(c)
                try:
                    f = executor.submit(envelope.verdicts, c)
                except BaseException:
                    self._done(len(c))
                    raise
                f.add_done_callback(lambda _, k=len(c): self._done(k))
                futures.append(f)
        except RuntimeError as e:  # BrokenProcessPool, or submit after shutdown
            self._failed(executor, e)
            return NOTHING  # (the chunks submitted fail with the pool and are dropped)
        self._count("verify.pooled", n)
        return Checking(self, executor, chunks, futures)

    def _done(self, n: int) -> None:
        with self._lock:
            self._pending -= n
            assert self._pending >= 0, "more envelopes done than submitted"

    def _start(self) -> cf.ProcessPoolExecutor | None:
        if self._starts > self.max_restarts:
            return None
        self._starts += 1
        self._executor = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=sigworker.init, initargs=(os.getpid(),))
        log.info("started %d signature workers", self.workers)
        return self._executor

    def _failed(self, executor: cf.Executor | None, error: BaseException) -> None:
        """The pool ``executor`` failed: drop it (once, whoever sees it first)."""
        if self._closed or executor is None or executor is not self._executor:
            return  # (closing, or already dropped: the caller verifies in-process quietly)
        self._executor = None
        self._count("verify.pool_failed", 1)
        left = self.max_restarts - self._starts + 1
        log.warning("signature workers failed (%s: %s): their batches are verified in-process; %s",
                    type(error).__name__, error,
                    f"a new pool starts with the next big batch ({left} restarts left)" if left > 0 else
                    "no new pool will start: every check is made in-process from now on")
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """End the workers and wait for them: when this returns no worker process is left.
        Checks under way are dropped (their callers verify in-process, or are being
        cancelled with the node). Idempotent; a closed pool sends nothing more."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
