"""The node's LevelDB store: chains, their index and heads, fork proofs, metadata, and
one key space and one index space for each extension.

Key layout (docs/architecture.md, "Store"), all integers big-endian:

    b"M" + name                  -> metadata value (b"M" b"schema" -> b"1")
    b"E" + author(32) + seq(8)   -> entry envelope bytes, exactly as signed
    b"I" + id(32)                -> author(32) + seq(8)
    b"H" + author(32)            -> seq(8) + id(32) + ts(8) of the author's last entry
    b"F" + author(32) + seq(8)   -> fork proof bytes (fork.py)
    b"x" + name + b"/" + key     -> a record of extension ``name`` (its ``Records``)
    b"y" + name + b"/" + key     -> b"": an index key of extension ``name``'s kinds
                                    (``Kind.index``), written in the entry's own batch
    b"M" b"index/" + name        -> version: extension ``name``'s index is complete for that
                                    index version (its ``Extension.index_version``, text)
    b"M" b"epoch"                -> 16 random bytes, made with the change feed: which feed
                                    a counter belongs to (a replaced store has another)
    b"M" b"changes"              -> counter(8): the last change counter given; present iff
                                    the change feed below is complete
    b"U" + counter(8)            -> author(32): the change feed, one record per chain held,
                                    at the counter of the last write that changed its head
    b"u" + author(32)            -> counter(8): where that author's ``U`` record is

Invariants (checked by ``p2pnode.ledger.verify``, assumed nowhere else):

- I1 every ``E`` value is a valid entry whose author and seq are its key's;
- I2 each author's ``E`` keys run 1..n with no gap, each linking to the one before;
- I3 ``H[author]`` is (n, id, ts) of that author's entry n, and exists iff ``E`` has some;
- I4 ``I`` maps each entry's id to its key, and holds nothing else;
- I5 every ``F`` value is a valid fork proof of its key's author and seq;
- I6 for every extension whose index is marked complete, its ``y`` space holds exactly
  the keys its kinds' index functions give for the stored entries with valid bodies.
- I8 the change feed: ``u`` holds one record per author with an ``H`` record and nothing
  else, each naming a ``U`` record (counter at most ``M changes``) that names it back, and
  ``U`` holds no other record. So "the chains changed after counter n" is read in
  O(changed), and the feed never holds more records than chains held. (I7 is an
  extension's, docs/architecture.md.)

Every logical change is one write batch, so each invariant holds after any crash. Own
entries are written with ``sync=True``. Several logical changes may share one batch (a
group write, ``GroupWrite``: LevelDB's own write batching, done here so that each change
is checked against the ones before it): the batch holds each change whole or not at all,
so the invariants hold after any crash all the same, and one sync makes all durable.
Opening reads the schema version and the index marks only, so start-up time does not
grow with the ledger; an index is rebuilt from
the entries once, when its extension is first seen (``use``), and the change feed once, when a
store made before it is first opened.

The change feed (docs/architecture.md, "Store"): every write that changes a chain's head
(an append, an ingest that adds, a fork proof stored for a chain held) gives each author
it changes the next counter, in the write's own batch (I8); dropping a chain removes its
record. Sync reads it (``changes``) so that a peer that asks "what changed since counter
n of your feed" is answered in O(changed), not O(chains held): the cost of an idle round
does not grow with the chains held (protocol/wire.py, rule 2).

Group writes (``group``, ``GroupWrite``):

- Changes are gathered in order: own appends (signed on top of the group's own head, so
  seq, prev and ts run on across the changes as if each had been written alone) and
  record writes. A change that is refused (its body, the reserve) adds nothing to the
  group and the others stand.
- While the group is gathered, reads on the thread gathering it (``reading``) see the
  changes gathered so far, exactly as if they were written: ``get``, ``head``,
  ``heads``, ``chain``, ``locate``, the records and index spaces. No other reader, and
  no other thread, sees any of them before ``commit`` has made them durable (LevelDB
  makes a batch visible only after its log write, and its sync, succeed).
- ``commit`` makes the group one batch, written once with ``sync=True``: when it
  returns, every change in it is on disk; if it raises, the store has failed (below)
  and none of them was acknowledged. ``synced_writes`` counts the synced batches written.

The disk (docs/operations.md, "The disk"):

- Fail-stop. After any write that fails (a LevelDB error or an ``OSError``) the store
  takes no more writes until it is closed and opened again: every later write raises
  ``StoreFailed`` (``store_failed``) and ``failure`` says what failed; reads go on. A
  group write that fails fails every change in it: its caller must fail every waiter.
  Why: LevelDB does not stop by itself after a failed log write. The record it tore
  stays in its log, the records written after it no longer line up with the log's
  blocks, and the next open fails ("Corruption: checksum mismatch") or drops
  acknowledged entries. A torn record at the very end of the log is read as a crash
  and skipped, so a store that stopped at its first failed write opens again with every
  write that was acknowledged.
- A free-space reserve. A write that carries a reserve (``Reserve.own`` for the
  node's own entries, ``Reserve.others`` for everyone else's) is refused with
  ``StoreFull`` (``disk_full``), before LevelDB sees it, while the disk holding the
  store has less free space than that; nothing is written and the store does not fail.
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import plyvel

from protocol.chain import Head, check_entry, extend, group_by_author
from protocol.entry import Entry, next_entry, parse_entry
from protocol.envelope import Verdict, peek_document
from protocol.errors import ChainError, CodedError, ProtocolError
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.kinds import KindRegistry

SCHEMA_VERSION = 1

P_META = b"M"
P_ENTRY = b"E"
P_INDEX = b"I"
P_HEAD = b"H"
P_FORK = b"F"
P_RECORDS = b"x"
P_EXT_INDEX = b"y"
P_CHANGE = b"U"  # (b"C", the first choice, was lending's before it had a space: adopted by it)
P_CHANGED = b"u"
CORE_PREFIXES = (P_META, P_ENTRY, P_INDEX, P_HEAD, P_FORK, P_CHANGE, P_CHANGED)
META_EPOCH = P_META + b"epoch"
META_CHANGES = P_META + b"changes"
EPOCH_SIZE = 16
INDEX_MARK = b"index/"
MIGRATE_BATCH = 10_000  # keys moved per write when adopting an extension's old keys
MAX_GROUP_CHANGES = 1024  # changes gathered into one group write at most (its gatherer stops there)
MIB = 1 << 20
DEFAULT_RESERVE_OWN = 32 * MIB  # free bytes below which the node's own appends are refused
DEFAULT_RESERVE_OTHERS = 128 * MIB  # ... below which other authors' entries are refused

_U64 = struct.Struct(">Q")
_pack_u64 = _U64.pack
_HEAD = struct.Struct(">Q32sQ")


def change_key(counter: int) -> bytes:
    return P_CHANGE + _U64.pack(counter)


def space_prefix(kind: bytes, name: str) -> bytes:
    """The prefix of extension ``name``'s records (``P_RECORDS``) or index (``P_EXT_INDEX``)."""
    return kind + name.encode() + b"/"


class StoreError(CodedError):
    """The store cannot do what was asked; the message says why and what to do."""

    code = "store_error"


class StoreLocked(StoreError):
    code = "node_running"


class StoreMissing(StoreError):
    code = "not_initialised"


class StoreCorrupt(StoreError):
    code = "store_corrupt"


class StoreFull(StoreError):
    code = "disk_full"


class StoreFailed(StoreError):
    """A write failed earlier; the store takes no more writes until the node restarts."""

    code = "store_failed"


@dataclass(frozen=True)
class Reserve:
    """Free bytes kept on the disk holding the store: the node's own entries are refused
    below ``own``, everyone else's below ``others``. ``others`` is the larger, so that
    peers and strangers cannot use up the space the owner's own chain needs."""

    own: int = DEFAULT_RESERVE_OWN
    others: int = DEFAULT_RESERVE_OTHERS

    def __post_init__(self) -> None:
        if not (0 <= self.own and 0 <= self.others):
            raise ValueError("a reserve is a number of bytes, 0 or more")


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the filesystem holding ``path``
    (``statvfs``: ~2 us, so it is read before every write that carries a reserve)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def entry_key(author: bytes, seq: int) -> bytes:
    return P_ENTRY + author + _U64.pack(seq)


def fork_key(author: bytes, seq: int) -> bytes:
    return P_FORK + author + _U64.pack(seq)


def split_seq_key(key: bytes) -> tuple[bytes, int]:
    """(author, seq) of an ``E`` or ``F`` key; raises ValueError if its length is wrong."""
    if len(key) != 41:
        raise ValueError(f"key of {len(key)} bytes, expected 41")
    return key[1:33], _U64.unpack_from(key, 33)[0]


def entry_puts(e: Entry, registry: KindRegistry) -> list[tuple[bytes, bytes]]:
    """The puts that store entry ``e``: its envelope, its id index and the index keys its
    kind gives, in its owner's index space (I1, I4, I6)."""
    puts: list[tuple[bytes, bytes]] = []
    _add_entry_puts(puts, e, registry)
    return puts


def _add_entry_puts(puts: list[tuple[bytes, bytes]], e: Entry, registry: KindRegistry) -> None:
    """``entry_puts(e, registry)`` appended to ``puts`` (one list for a whole batch, and
    the entry's key made with one pack of its seq)."""
    at = e.author + _pack_u64(e.seq)  # (the entry key after its prefix, and the id index's value)
    puts.append((P_ENTRY + at, e.envelope))
    puts.append((P_INDEX + e.id, at))
    indexed = registry.index_keys(e)
    if indexed is not None:
        prefix = space_prefix(P_EXT_INDEX, indexed[0])
        puts.extend((prefix + k, b"") for k in indexed[1])


def _already_parsed(e: Entry) -> Entry:
    """``parse`` for ``Store.ingest(parsed=True)``: the entry as given, verified when
    ``parse_entry`` made it."""
    assert type(e) is Entry, f"parsed=True takes Entry values, not {type(e).__name__}"
    return e


def pack_head(head: Head) -> bytes:
    return _HEAD.pack(head.seq, head.id, head.ts)


def unpack_head(author: bytes, value: bytes) -> Head:
    try:
        seq, id_, ts = _HEAD.unpack(value)
    except struct.error:
        raise StoreCorrupt(
            f"the head record of author {author.hex()[:16]}... is malformed ({len(value)} bytes, expected "
            f"{_HEAD.size}): run `p2pnode ledger verify`"
        ) from None
    return Head(author, seq, id_, ts)


@dataclass
class IngestReport:
    """What ``Store.ingest`` did with a set of foreign entries."""

    added: list[Entry] = field(default_factory=list)
    duplicates: int = 0
    forks: list[ForkProof] = field(default_factory=list)
    errors: list[ChainError] = field(default_factory=list)


class IngestRefused(StoreError):
    """A strict ingest found invalid entries and stored none of them."""

    code = "import_refused"

    def __init__(self, report: IngestReport) -> None:
        if report.errors:
            first = report.errors[0]
            text = f"{len(report.errors)} invalid entries; first: seq {first.seq}: {first.message}"
        else:
            text = f"{len(report.forks)} fork(s); first at seq {report.forks[0].seq}"
        super().__init__(text)
        self.report = report


def _error_text(e: Exception) -> str:
    """The message of a plyvel error as text (plyvel gives LevelDB's status as bytes)."""
    if e.args and isinstance(e.args[0], bytes):
        return e.args[0].decode("utf-8", "replace")
    return str(e)


def _mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def _wrap_io(e: Exception, path: Path) -> StoreError:
    text = _error_text(e)
    # LevelDB's lock failure is "IO error: lock <dir>/LOCK: <reason>"; match that form, not
    # the word anywhere (a path such as /srv/blocks/ would otherwise read as "in use").
    if text.startswith("IO error: lock "):
        return StoreLocked(
            f"the store at {path} is in use by another process: is a node running? "
            "Stop it first, then run the command again."
        )
    if "No space" in text or "ENOSPC" in text:
        return StoreFull(f"the disk holding {path} is full: {text}")
    if isinstance(e, plyvel.CorruptionError) or text.startswith("Corruption:"):
        return StoreCorrupt(f"the store at {path} is corrupt: {text}")
    return StoreError(f"the store at {path} cannot be used: {text}")


class Store:
    """One node's LevelDB database, held open by this process alone.

    ``reserve`` is the free space its writes of entries keep (``Reserve``); ``failure``
    is None until a write fails, then the text of that failure (fail-stop, above)."""

    def __init__(self, path: str | Path, *, create: bool = False, reserve: Reserve = Reserve()) -> None:
        self.path = Path(path)
        self.reserve = reserve
        self.failure: str | None = None
        self.failed_at_ms: int | None = None
        self.synced_writes = 0  # synced batches written since open (a group write is one)
        self._pending: _Pending | None = None  # a group being gathered, read back on its thread
        if not create and not (self.path / "CURRENT").exists():
            raise StoreMissing(f"no store at {self.path}: run `p2pnode init` first")
        try:
            self._db = plyvel.DB(str(self.path), create_if_missing=create, paranoid_checks=True)
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None
        try:
            schema = self._db.get(P_META + b"schema")
            if schema is None:
                if not create:
                    raise StoreCorrupt(f"the store at {self.path} has no schema version")
                self._db.put(P_META + b"schema", str(SCHEMA_VERSION).encode(), sync=True)
            elif schema != str(SCHEMA_VERSION).encode():
                raise StoreError(
                    f"the store at {self.path} has schema {schema!r}; this p2pnode reads {SCHEMA_VERSION}"
                )
            self._feed_lock = threading.Lock()  # (counters are given out in order, writes may come from a worker)
            if self._db.get(META_CHANGES) is None:
                self._rebuild_changes()
            epoch, counter = self._db.get(META_EPOCH), self._db.get(META_CHANGES)
            if epoch is None or len(epoch) != EPOCH_SIZE or len(counter) != _U64.size:
                raise StoreCorrupt(f"the store at {self.path} has a malformed change feed mark: run "
                                   "`p2pnode ledger verify`")
            self.epoch: bytes = epoch  # (the feed's: made when the feed was, kept for the store's life)
            self._counter: int = _U64.unpack(counter)[0]  # the last counter given (written with it)
        except plyvel.Error as e:
            self._db.close()
            raise _wrap_io(e, self.path) from None
        except StoreError:
            self._db.close()
            raise

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------

    @property
    def db(self) -> plyvel.DB:
        """The raw database, for verification and tests; writes must go through Store."""
        return self._db

    def _get(self, key: bytes) -> bytes | None:
        if self._pending is not None:  # (a group is gathered: is it read back here?)
            pending = self._pending_here()
            if pending is not None and key in pending.writes:
                return pending.writes[key]
        try:
            return self._db.get(key)
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def _pending_here(self) -> "_Pending | None":
        """The group being gathered, if this thread is reading it back (``GroupWrite.reading``)."""
        pending = self._pending
        return pending if pending is not None and pending.thread == threading.get_ident() else None

    def _scan(self, start: bytes, stop: bytes | None, *, values: bool = True) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for the keys in [start, stop) in order, with the group being gathered
        read back (``_pending_here``); values are b"" when not ``values``. Lazy: the caller
        may stop early, and closes the iterator by dropping it."""
        pending = self._pending_here()
        try:
            with self._db.iterator(start=start, stop=stop, include_value=values) as it:
                stored = it if values else ((k, b"") for k in it)
                yield from stored if pending is None else _merge(stored, pending.range(start, stop))
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def meta(self, name: str) -> bytes | None:
        return self._get(P_META + name.encode())

    def head(self, author: bytes) -> Head | None:
        v = self._get(P_HEAD + author)
        return None if v is None else unpack_head(author, v)

    def heads(self) -> dict[bytes, Head]:
        return {k[1:]: unpack_head(k[1:], v) for k, v in self._scan(P_HEAD, _after_prefix(P_HEAD))}

    def drop_chain(self, author: bytes, registry: KindRegistry) -> int:
        """Delete ``author``'s chain (its entries, their ids and index keys, its head) in one
        write, keeping any fork proof of it; how many entries went. For a chain the node
        holds for no one (a stranger's, over the budget): never its own."""
        deletes: list[bytes] = [P_HEAD + author]
        for key, value in self._db.iterator(prefix=P_ENTRY + author):
            deletes.append(key)
            try:
                e = parse_entry(value)
            except ProtocolError:
                continue
            deletes.append(P_INDEX + e.id)
            indexed = registry.index_keys(e)
            if indexed is not None:
                deletes.extend(space_prefix(P_EXT_INDEX, indexed[0]) + k for k in indexed[1])
        self.write_chains([], deletes, dropped=[author])
        return sum(1 for k in deletes if k[:1] == P_ENTRY)

    def heads_page(self, after: bytes | None, limit: int) -> dict[bytes, Head]:
        """The heads of the first ``limit`` authors after ``after`` (None: from the first),
        in author order: one page of a sync ``heads`` answer, read without reading the rest."""
        try:
            return self._heads_page(self._db, after, limit)
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    @staticmethod
    def _heads_page(db: Any, after: bytes | None, limit: int) -> dict[bytes, Head]:
        out: dict[bytes, Head] = {}
        start = P_HEAD + after + b"\x00" if after is not None else P_HEAD  # (the least key after it)
        with db.iterator(start=start, stop=bytes([P_HEAD[0] + 1])) as it:  # (the H keys from start)
            for k, v in it:
                if len(out) >= limit:
                    break
                out[k[1:]] = unpack_head(k[1:], v)
        return out

    @property
    def counter(self) -> int:
        """The last change counter given (0: no chain has changed since the feed was made)."""
        return self._counter

    def changes(self, after: int, limit: int) -> tuple[int, list[tuple[int, Head]]]:
        """At one instant: the counter, and the heads of the first ``limit`` chains whose
        last change came after counter ``after``, in the order of their changes, each with
        its counter. Reads O(limit) keys, however many chains are held (I8)."""
        out: list[tuple[int, Head]] = []
        try:
            with self._db.snapshot() as snap:
                upto = _U64.unpack(snap.get(META_CHANGES))[0]
                if after >= upto:
                    return upto, out  # (nothing changed: no iterator opened)
                with snap.iterator(start=change_key(after + 1), stop=bytes([P_CHANGE[0] + 1])) as it:
                    for k, author in it:
                        if len(out) >= limit:
                            break
                        v = snap.get(P_HEAD + author)
                        if v is None:
                            raise StoreCorrupt(f"the change feed names author {author.hex()[:16]}..., whose "
                                               "chain is not held: run `p2pnode ledger verify`")
                        out.append((_U64.unpack_from(k, 1)[0], unpack_head(author, v)))
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None
        return upto, out

    def marked_heads_page(self, after: bytes | None, limit: int) -> tuple[int, dict[bytes, Head]]:
        """``heads_page(after, limit)`` and the counter, read at one instant: every change
        not in the page has a counter above the one returned."""
        try:
            with self._db.snapshot() as snap:
                upto = _U64.unpack(snap.get(META_CHANGES))[0]
                return upto, self._heads_page(snap, after, limit)
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def get(self, author: bytes, seq: int) -> bytes | None:
        """The envelope bytes stored at (author, seq), or None."""
        return self._get(entry_key(author, seq))

    def entry(self, author: bytes, seq: int) -> Entry | None:
        data = self.get(author, seq)
        return None if data is None else parse_entry(data)

    def locate(self, entry_id: bytes) -> tuple[bytes, int] | None:
        """(author, seq) of the entry with this id, or None."""
        v = self._get(P_INDEX + entry_id)
        return None if v is None or len(v) != 40 else (v[:32], _U64.unpack_from(v, 32)[0])

    def chain(self, author: bytes, *, start: int = 1, limit: int | None = None) -> Iterator[bytes]:
        """Envelope bytes of ``author``'s entries from seq ``start`` on, in seq order."""
        it = self._scan(entry_key(author, start), P_ENTRY + author + b"\xff" * 8 + b"\xff")
        try:
            for n, (_, value) in enumerate(it):
                if limit is not None and n >= limit:
                    break
                yield value
        finally:
            it.close()

    def fork_proofs(self, author: bytes | None = None) -> list[bytes]:
        prefix = P_FORK + (author or b"")
        return [v for _, v in self._scan(prefix, _after_prefix(prefix))]

    def _keys(self, prefix: bytes) -> Iterator[bytes]:
        if self._pending is not None and self._pending_here() is not None:
            return (k for k, _ in self._scan(prefix, _after_prefix(prefix), values=False))
        return self._stored_keys(prefix)  # (the hot path: LevelDB's iterator, no merging layers)

    def _stored_keys(self, prefix: bytes) -> Iterator[bytes]:
        try:
            with self._db.iterator(prefix=prefix, include_value=False) as it:
                yield from it
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def _items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        if self._pending is not None and self._pending_here() is not None:
            return list(self._scan(prefix, _after_prefix(prefix)))
        try:
            return list(self._db.iterator(prefix=prefix))
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def write_batch(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = (), *,
                    sync: bool = True, reserve: int = 0) -> None:
        """Put and delete keys in one batch: the store's one writer.

        Raises ``StoreFailed`` if an earlier write failed, and ``StoreFull`` if fewer than
        ``reserve`` bytes are free; either way nothing is written. A write that fails
        raises its wrapped error (``disk_full``, ``store_error``, ...) and fails the store."""
        self.check_writable(reserve)
        try:
            with self._db.write_batch(sync=sync, transaction=True) as wb:
                put, delete = wb.put, wb.delete  # (a sync's batch puts thousands of keys)
                for k, v in puts:
                    put(k, v)
                for k in deletes:
                    delete(k)
        except (plyvel.Error, OSError) as e:
            raise self._fail(e) from None
        if sync:
            self.synced_writes += 1

    def write_chains(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = (), *,
                     changed: Iterable[bytes] = (), dropped: Iterable[bytes] = (), sync: bool = True,
                     reserve: int = 0) -> None:
        """``write_batch`` for a write that changes chains: each author in ``changed`` (whose
        head the write changes) gets the next change counter, and each in ``dropped`` (whose
        chain the write deletes) loses its feed record, in the same batch (I8)."""
        with self._feed_lock:
            puts, deletes = list(puts), list(deletes)
            counter = self._counter
            for author in dict.fromkeys(changed):
                old = self._get(P_CHANGED + author)
                if old is not None:
                    deletes.append(P_CHANGE + old)  # (its older record: one per chain)
                counter += 1
                puts += [(change_key(counter), author), (P_CHANGED + author, _U64.pack(counter))]
            for author in dict.fromkeys(dropped):
                old = self._get(P_CHANGED + author)
                if old is not None:
                    deletes += [P_CHANGE + old, P_CHANGED + author]
            if counter != self._counter:
                puts.append((META_CHANGES, _U64.pack(counter)))
            self.write_batch(puts, deletes, sync=sync, reserve=reserve)
            self._counter = counter

    def _rebuild_changes(self) -> None:
        """Make the change feed of a store made before it (or whose rebuild a crash cut
        short): one record per chain held, counters 1..n in author order, and a new epoch
        (counters given before are void). Runs once, at open; the mark is written last."""
        for prefix in (P_CHANGE, P_CHANGED):
            while True:
                stale = []
                with self._db.iterator(prefix=prefix, include_value=False) as it:
                    for k in it:
                        stale.append(k)
                        if len(stale) >= MIGRATE_BATCH:
                            break
                if not stale:
                    break
                self.write_batch([], stale, sync=False)
        counter = 0
        puts: list[tuple[bytes, bytes]] = []
        with self._db.iterator(prefix=P_HEAD, include_value=False) as it:
            for k in it:
                counter += 1
                puts += [(change_key(counter), k[1:]), (P_CHANGED + k[1:], _U64.pack(counter))]
                if len(puts) >= MIGRATE_BATCH:
                    self.write_batch(puts, sync=False)
                    puts = []
        self.write_batch(puts + [(META_EPOCH, os.urandom(EPOCH_SIZE)), (META_CHANGES, _U64.pack(counter))])

    def check_writable(self, reserve: int = 0) -> None:
        """Raise what ``write_batch`` would raise before writing: ``StoreFailed`` after a
        failed write, ``StoreFull`` with fewer than ``reserve`` bytes free."""
        if self.failure is not None:
            raise StoreFailed(
                f"the store at {self.path} takes no writes since a write failed ({self.failure}); "
                "nothing was written. Free disk space or fix the cause, then restart the node "
                "(`p2pnode stop`, `p2pnode start`): every acknowledged entry is kept"
            )
        if reserve > 0:
            try:
                free = free_bytes(self.path)
            except OSError as e:
                raise StoreError(f"cannot read the free space of {self.path}: {e.strerror or e}") from None
            if free < reserve:
                raise StoreFull(
                    f"the disk holding {self.path} has {_mib(free)} free, below the reserve of {_mib(reserve)}; "
                    "nothing was written. Free disk space (the node goes on at once), or lower the reserve "
                    "in config.toml [ledger]"
                )

    def _fail(self, e: Exception) -> StoreError:
        """Stop taking writes after ``e``; the error to raise for it (its own code, e.g.
        ``disk_full``, with what happens now said)."""
        if isinstance(e, plyvel.Error):
            first = _wrap_io(e, self.path)
        else:
            kind = StoreFull if e.errno == errno.ENOSPC else StoreError
            first = kind(f"writing the store at {self.path} failed: {e.strerror or e}")
        self.failure = first.message
        self.failed_at_ms = int(time.time() * 1000)
        return type(first)(f"{first.message}. Nothing more is written until the node restarts: free disk "
                           "space or fix the cause, then restart it; every acknowledged entry is kept",
                           code=first.code)

    def records(self, name: str) -> "Records":
        """Extension ``name``'s own key space."""
        return Records(self, space_prefix(P_RECORDS, name))

    def index(self, name: str) -> "IndexView":
        """Extension ``name``'s index space, read-only (written with the entries, I6)."""
        return IndexView(self, space_prefix(P_EXT_INDEX, name))

    # -- extension indexes and old layouts --------------------------------------------

    def indexed(self) -> set[str]:
        """Extensions whose index is marked complete (I6)."""
        n = len(P_META + INDEX_MARK)
        return {k[n:].decode() for k in self._keys(P_META + INDEX_MARK)}

    def index_marks(self) -> dict[str, bytes]:
        """Extensions whose index is marked complete, and the index version each mark names."""
        n = len(P_META + INDEX_MARK)
        return {k[n:].decode(): v for k, v in self._items(P_META + INDEX_MARK)}

    def use(self, registry: KindRegistry, legacy: dict[str, dict[bytes, str]] | None = None,
            versions: dict[str, int] | None = None) -> list[str]:
        """Make the store fit ``registry`` before anything is written with it: move the keys
        each extension kept under its old single-byte prefixes into its spaces
        (``legacy[name][prefix]`` is ``"records"`` or ``"index"``), drop the complete-mark
        of every index whose owner is absent (its index stops being kept up to date, so
        it must be rebuilt if the owner comes back), and rebuild, from the entries, every
        index of a present owner that is not marked complete for its index version
        (``versions[name]``, 1 if not given: an extension that changes its index functions
        bumps it). Returns the names whose index was rebuilt. Reads one key per extension
        when nothing needs doing."""
        for name, prefixes in (legacy or {}).items():
            for old, space in prefixes.items():
                self._adopt(old, space_prefix(P_EXT_INDEX if space == "index" else P_RECORDS, name) + old)
        present, marks = registry.indexed_owners(), self.index_marks()
        gone = set(marks) - present
        if gone:
            self.write_batch([], [P_META + INDEX_MARK + n.encode() for n in sorted(gone)])
        mark = {name: str((versions or {}).get(name, 1)).encode() for name in present}
        rebuilt = sorted(n for n in present if marks.get(n) != mark[n])
        for name in rebuilt:
            self._rebuild_index(name, registry, mark[name])
        return rebuilt

    def _adopt(self, old: bytes, new: bytes) -> None:
        """Move every key under the one-byte prefix ``old`` to ``new`` + the rest, a batch
        at a time (each batch moves its keys whole, so a crash leaves each key in one place)."""
        if len(old) != 1 or old in CORE_PREFIXES or old in (P_RECORDS, P_EXT_INDEX):
            raise ValueError(f"{old!r} is not an extension's old prefix")
        while True:
            batch = []
            for k, v in self._db.iterator(prefix=old):
                batch.append((k, v))
                if len(batch) >= MIGRATE_BATCH:
                    break
            if not batch:
                return
            self.write_batch([(new + k[1:], v) for k, v in batch], [k for k, _ in batch])

    def _rebuild_index(self, name: str, registry: KindRegistry, mark: bytes = b"1") -> None:
        """Write extension ``name``'s index from every stored entry, then mark it complete
        (``mark``: the index version it was built for)."""
        prefix = space_prefix(P_EXT_INDEX, name)
        self.write_batch([], list(self._keys(prefix)), sync=False)
        kinds = {k.name for k in registry if registry.owner(k.name) == name and k.index is not None}
        puts: list[tuple[bytes, bytes]] = []
        for value in self._db.iterator(prefix=P_ENTRY, include_key=False):
            try:
                if peek_document(value).get("kind") not in kinds:
                    continue  # only the owner's kinds are read whole (and their signatures checked)
                e = parse_entry(value)
            except (ProtocolError, AttributeError):
                continue  # damage is `ledger verify`'s to report
            indexed = registry.index_keys(e)
            if indexed is not None and indexed[0] == name:
                puts.extend((prefix + k, b"") for k in indexed[1])
            if len(puts) >= MIGRATE_BATCH:
                self.write_batch(puts, sync=False)
                puts = []
        self.write_batch(puts + [(P_META + INDEX_MARK + name.encode(), mark)])

    def forked_authors(self) -> set[bytes]:
        return {k[1:33] for k in self._keys(P_FORK)}

    # -- writes -----------------------------------------------------------------------

    def append(
        self, key: SigningKey, items: Iterable[tuple[str, Any]], *, now_ms: int, registry: KindRegistry
    ) -> list[Entry]:
        """Sign and append entries ``(kind, body)`` to ``key``'s own chain, durably, in one
        batch: when this returns, all are on disk; if it raises, none is.

        Raises ``ProtocolError`` for a body its kind refuses or that cannot be encoded,
        ``StoreFull`` below the own reserve, ``StoreFailed`` after a failed write.
        """
        group = self.group()
        out = group.append(key, items, now_ms=now_ms, registry=registry)
        group.commit()
        return out

    def _signed(self, key: SigningKey, items: Iterable[tuple[str, Any]], *, now_ms: int,
                registry: KindRegistry) -> tuple[list[Entry], list[tuple[bytes, bytes]]]:
        """The entries ``items`` make on top of ``key``'s head as the store reads it, and
        the puts that store them; writes nothing. Raises as ``append`` does."""
        self.check_writable(self.reserve.own)  # before signing: nothing is signed that cannot be kept
        head = self.head(key.public_key)
        out: list[Entry] = []
        puts: list[tuple[bytes, bytes]] = []
        for kind, body in items:
            entry = next_entry(key, head, now_ms=now_ms, kind=kind, body=body)
            check_entry(head, entry)
            try:
                registry.check(entry)  # this node signs no body its registry refuses (kinds.py, rule 3)
            except ProtocolError as err:
                raise ChainError(err.message, author=entry.author, seq=entry.seq, code="bad_body") from None
            puts.extend(entry_puts(entry, registry))
            out.append(entry)
            head = Head.of(entry)
        if out:
            puts.append((P_HEAD + key.public_key, pack_head(head)))
        return out, puts

    def group(self) -> "GroupWrite":
        """A new group write (``GroupWrite``): changes gathered, then made durable by one sync."""
        return GroupWrite(self)

    def append_one(self, key: SigningKey, kind: str, body: Any, *, now_ms: int, registry: KindRegistry) -> Entry:
        return self.append(key, [(kind, body)], now_ms=now_ms, registry=registry)[0]

    def record_fork(self, proof: ForkProof) -> bool:
        """Store a verified fork proof; False if one for that author and seq is stored.
        Below the others' reserve it is refused (``StoreFull``) like their entries."""
        k = fork_key(proof.author, proof.seq)
        if self._get(k) is not None:
            return False
        # A chain held gets a change: a peer that pulls "what changed" since sees its head
        # again, and (its id differing from the other half's) fetches the proof's half.
        changed = [proof.author] if self.head(proof.author) is not None else []
        self.write_chains([(k, proof.encode())], changed=changed, sync=False, reserve=self.reserve.others)
        return True

    def ingest(
        self, envelopes: Iterable[bytes] | Iterable[Entry], *, registry: KindRegistry, strict: bool = False,
        author: bytes | None = None, own: bool = False, admit: Callable[[bytes], bool] | None = None,
        parsed: bool = False, verdicts: Mapping[bytes, Verdict | None] | None = None,
    ) -> IngestReport:
        """Verify foreign entries and store those that extend stored chains, in one batch.

        Entries may come in any order and for many authors. An entry already stored is a
        duplicate; a different valid entry at a stored (author, seq) is a fork, whose proof
        is recorded. With ``strict``, any invalid entry (or gap) makes it store no entry
        and raise ``IngestRefused``; fork proofs are recorded either way, since a proof is
        valid on its own. A strict ingest that finds a fork stores no entry either. With
        ``author``, entries of any other author are refused (``wrong_author``): what a
        peer sends in answer to a request for one chain must be of that chain.

        The write keeps ``reserve.others`` free, or ``reserve.own`` with ``own`` (the
        node's own chain fetched back, or an import its owner asked for); below it,
        ``StoreFull`` and nothing is stored. An ingest that adds nothing writes nothing
        and is never refused for space. With ``admit``, the entries of an author whose
        chain is not stored yet are stored only if ``admit(author)`` (which may make room
        first, ``drop_chain``); else they are refused (``not_admitted``). With ``parsed``,
        ``envelopes`` are ``Entry`` values that ``parse_entry`` made, whose signatures and
        fields were verified then (a gossip validator's): each is verified once, not twice.

        ``verdicts``: signature verdicts made beforehand (``protocol.envelope.verdict``, by
        the node's worker processes), by envelope bytes. Each envelope is opened with its
        own bytes' verdict (the same entry or error as without it); one without a verdict
        is verified here.
        """
        report = IngestReport()
        if parsed:
            batch = group_by_author(envelopes, author=author, parse=_already_parsed)
        elif verdicts:
            batch = group_by_author(envelopes, author=author, parse=lambda d: parse_entry(d, verdict=verdicts.get(d)))
        else:
            batch = group_by_author(envelopes, author=author)
        report.errors.extend(batch.errors)
        report.forks.extend(batch.forks)
        puts: list[tuple[bytes, bytes]] = []
        changed: list[bytes] = []
        for author, entries in batch.by_author.items():
            if admit is not None and self.head(author) is None and not admit(author):
                report.errors.append(ChainError("no room for another stranger's chain", author=author,
                                                seq=min(entries), code="not_admitted"))
                continue
            extended = self._extend(author, entries, registry, report)
            if extended:
                puts.extend(extended)
                changed.append(author)
        for proof in report.forks:
            self.record_fork(proof)
        if strict and (report.errors or report.forks):
            raise IngestRefused(report)
        if puts:
            self.write_chains(puts, changed=changed, sync=False,
                              reserve=self.reserve.own if own else self.reserve.others)
        return report

    def _extend(
        self, author: bytes, entries: dict[int, Entry], registry: KindRegistry, report: IngestReport
    ) -> list[tuple[bytes, bytes]]:
        """Puts that append ``entries`` (by seq) after ``author``'s stored head; problems go
        to ``report``."""
        head = self.head(author)
        x = extend(head, entries, holds=lambda i: self.locate(i) is not None,
                   held_at=lambda seq: self.entry(author, seq))
        report.duplicates += x.duplicates
        report.forks.extend(x.forks)
        if x.error is not None:
            report.errors.append(x.error)
        report.added.extend(x.added)
        puts: list[tuple[bytes, bytes]] = []
        for e in x.added:
            _add_entry_puts(puts, e, registry)
        if x.added:
            puts.append((P_HEAD + author, pack_head(x.head)))
        return puts


def _after_prefix(prefix: bytes) -> bytes | None:
    """The least key above every key that starts with ``prefix`` (None: there is none)."""
    trimmed = prefix.rstrip(b"\xff")
    return None if not trimmed else trimmed[:-1] + bytes([trimmed[-1] + 1])


def _merge(stored: Iterable[tuple[bytes, bytes]],
           pending: list[tuple[bytes, bytes | None]]) -> Iterator[tuple[bytes, bytes]]:
    """The stored (key, value) pairs with the ``pending`` writes laid over them, in key
    order (both come in key order): a pending value replaces the stored one, a pending
    None deletes it."""
    i, n = 0, len(pending)
    for k, v in stored:
        while i < n and pending[i][0] < k:
            if pending[i][1] is not None:
                yield pending[i]  # type: ignore[misc]
            i += 1
        if i < n and pending[i][0] == k:
            if pending[i][1] is not None:
                yield pending[i]  # type: ignore[misc]
            i += 1
        else:
            yield k, v
    for key, value in pending[i:]:
        if value is not None:
            yield key, value


@dataclass
class _Pending:
    """The writes of a group being gathered (a value, or None for a delete), by key, and
    the one thread that reads them back."""

    thread: int
    writes: dict[bytes, bytes | None] = field(default_factory=dict)

    def range(self, start: bytes, stop: bytes | None) -> list[tuple[bytes, bytes | None]]:
        return sorted((k, v) for k, v in self.writes.items() if start <= k and (stop is None or k < stop))


class GroupWrite:
    """Changes gathered in order into one batch that one synced write makes durable (the
    store's "Group writes", above). Gather on one thread (``append``, ``write``, reads in
    ``reading``), then ``commit`` once, on any thread. One group at a time per store:
    its gatherer holds the node's write lock (p2pnode/ledger/writer.py).

    ``changes`` counts the changes gathered (at most ``MAX_GROUP_CHANGES``); ``empty``
    says whether there is anything to write."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._writes: dict[bytes, bytes | None] = {}
        self._changed: list[bytes] = []  # authors whose head the group moves (its own key)
        self.changes = 0
        self._committed = False

    @property
    def empty(self) -> bool:
        return not self._writes

    @contextmanager
    def reading(self) -> Iterator[None]:
        """While entered, this thread's reads of the store see the changes gathered so far
        as if written; no other thread's do."""
        store = self._store
        assert store._pending is None, "one group is gathered at a time"
        store._pending = _Pending(threading.get_ident(), self._writes)
        try:
            yield
        finally:
            store._pending = None

    def append(self, key: SigningKey, items: Iterable[tuple[str, Any]], *, now_ms: int, registry: KindRegistry,
               puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = ()) -> list[Entry]:
        """Gather ``Store.append``'s change, on top of the group's own head: the new entries,
        and with them ``puts`` and ``deletes`` (full keys, e.g. an extension's records) in
        the same change. Raises as ``Store.append`` does (``StoreFull`` below the own
        reserve), and then the group holds nothing of this change."""
        assert not self._committed and self.changes < MAX_GROUP_CHANGES, "a full or committed group"
        with self._reading_here():
            entries, entry_puts_ = self._store._signed(key, items, now_ms=now_ms, registry=registry)
        if entries and key.public_key not in self._changed:
            self._changed.append(key.public_key)
        self._gather(entry_puts_ + list(puts), deletes)
        return entries

    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = ()) -> None:
        """Gather a change of puts and deletes (full keys). Raises ``StoreFailed`` after a
        failed write, and then the group holds nothing of it."""
        assert not self._committed and self.changes < MAX_GROUP_CHANGES, "a full or committed group"
        self._store.check_writable()
        self._gather(puts, deletes)

    def _gather(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes]) -> None:
        for k in deletes:
            self._writes[k] = None
        for k, v in puts:
            self._writes[k] = v
        self.changes += 1

    @contextmanager
    def _reading_here(self) -> Iterator[None]:
        """``reading``, unless this thread reads the group back already."""
        if self._store._pending is not None:
            assert self._store._pending.writes is self._writes, "one group is gathered at a time"
            yield
        else:
            with self.reading():
                yield

    def commit(self) -> None:
        """Write everything gathered as one batch with ``sync=True`` (nothing if ``empty``):
        durable when this returns. A write that fails raises as ``Store.write_batch`` does
        and fails the store; then no change of the group may be acknowledged."""
        assert not self._committed, "a group is committed once"
        self._committed = True
        if not self._writes:
            return
        puts = [(k, v) for k, v in self._writes.items() if v is not None]
        deletes = [k for k, v in self._writes.items() if v is None]
        self._store.write_chains(puts, deletes, changed=self._changed, sync=True)


class Records:
    """One extension's own key space: what it keeps beside the chains (its records are
    never part of a chain). Keys are given and returned without the space's prefix."""

    def __init__(self, store: Store, prefix: bytes) -> None:
        self._store = store
        self.prefix = prefix

    def get(self, key: bytes) -> bytes | None:
        return self._store._get(self.prefix + key)

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Every (key, value) under ``prefix``, in key order (read at once: bound what you keep)."""
        n = len(self.prefix)
        return [(k[n:], v) for k, v in self._store._items(self.prefix + prefix)]

    def keys(self, prefix: bytes = b"") -> Iterator[bytes]:
        """The keys under ``prefix`` in order, read lazily (stop early to bound the work)."""
        n = len(self.prefix)
        return (k[n:] for k in self._store._keys(self.prefix + prefix))

    def write(self, puts: Iterable[tuple[bytes, bytes]] = (), deletes: Iterable[bytes] = (), *,
              sync: bool = False) -> None:
        """Put and delete records in one batch (``sync``: durable when this returns)."""
        self._store.write_batch([(self.prefix + k, v) for k, v in puts], [self.prefix + k for k in deletes],
                                sync=sync)


class IndexView:
    """One extension's index space, read-only: the keys its kinds' index functions gave
    for the stored entries (store invariant I6)."""

    def __init__(self, store: Store, prefix: bytes) -> None:
        self._store = store
        self.prefix = prefix

    def keys(self, prefix: bytes = b"") -> Iterator[bytes]:
        n = len(self.prefix)
        return (k[n:] for k in self._store._keys(self.prefix + prefix))

    def distinct(self, width: int, prefix: bytes = b"") -> list[bytes]:
        """The distinct first ``width`` bytes (after ``prefix``) of the keys, skipping from
        one to the next instead of reading every key."""
        out: list[bytes] = []
        start = self.prefix + prefix
        if self._store._pending_here() is not None:  # (a group read back: the same skips over the merged keys)
            after = b""
            for key in self._store._keys(start):
                if key >= after:
                    head = key[len(start):len(start) + width]
                    out.append(head)
                    after = start + head + b"\xff" * 64
            return out
        try:
            it = self._store.db.iterator(prefix=start, include_value=False)
            key = next(it, None)
            while key is not None:
                head = key[len(start):len(start) + width]
                out.append(head)
                it.seek(start + head + b"\xff" * 64)
                key = next(it, None)
            it.close()
        except plyvel.Error as e:
            raise _wrap_io(e, self._store.path) from None
        return out


class Chains:
    """Every chain held, read-only: what an extension reads of the ledger (it writes
    through the node's ``Ledger``)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def head(self, author: bytes) -> Head | None:
        return self._store.head(author)

    def heads(self) -> dict[bytes, Head]:
        return self._store.heads()

    def get(self, author: bytes, seq: int) -> bytes | None:
        """The envelope bytes stored at (author, seq), or None."""
        return self._store.get(author, seq)

    def entry(self, author: bytes, seq: int) -> Entry | None:
        return self._store.entry(author, seq)

    def locate(self, entry_id: bytes) -> tuple[bytes, int] | None:
        return self._store.locate(entry_id)

    def chain(self, author: bytes, *, start: int = 1, limit: int | None = None) -> Iterator[bytes]:
        return self._store.chain(author, start=start, limit=limit)

    def forked_authors(self) -> set[bytes]:
        return self._store.forked_authors()

    def fork_proofs(self, author: bytes | None = None) -> list[bytes]:
        return self._store.fork_proofs(author)
