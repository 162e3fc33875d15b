"""The node's LevelDB store: chains, their index and heads, fork proofs, metadata.

Key layout (docs/architecture.md, "Store"), all integers big-endian:

    b"M" + name                  -> metadata value (b"M" b"schema" -> b"1")
    b"E" + author(32) + seq(8)   -> entry envelope bytes, exactly as signed
    b"I" + id(32)                -> author(32) + seq(8)
    b"H" + author(32)            -> seq(8) + id(32) + ts(8) of the author's last entry
    b"F" + author(32) + seq(8)   -> fork proof bytes (fork.py)
    b"L" + loan(32) + author(32) + seq(8) -> b"" for each entry about a loan (contract.loan_of)
    b"P" + loan(32)              -> a proposal's record on this node (p2pnode/lending/loans.py)
    b"O" + id(32)                -> an offer or request of the book (p2pnode/lending/offers.py)
    b"X" + until(8) + id(32)     -> b"": when the book's O and C records of id may go
    b"C" + offer id(32)          -> an offer's cancellation (kept even before the offer)

Invariants (checked by ``p2pnode.verify``, assumed nowhere else):

- I1 every ``E`` value is a valid entry whose author and seq are its key's;
- I2 each author's ``E`` keys run 1..n with no gap, each linking to the one before;
- I3 ``H[author]`` is (n, id, ts) of that author's entry n, and exists iff ``E`` has some;
- I4 ``I`` maps each entry's id to its key, and holds nothing else;
- I5 every ``F`` value is a valid fork proof of its key's author and seq.
- I6 ``L`` holds a key for exactly the stored entries that name a loan, in the same batch;
- I7 every ``O``/``C`` record is a valid offer/cancellation under its offer's id, and
  ``X`` holds exactly one key for each id with an ``O`` or ``C`` record, and no other.

Every logical change is one write batch, so each invariant holds after any crash. Own
entries are written with ``sync=True``. Opening reads nothing but the schema version, so
start-up time does not grow with the ledger.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import plyvel

from protocol.chain import Head, check_entry, check_link
from protocol.lending.contract import loan_of
from protocol.entry import Entry, next_entry, parse_entry
from protocol.errors import ChainError, ProtocolError
from protocol.fork import ForkProof
from protocol.keys import SigningKey
from protocol.kinds import KindRegistry

SCHEMA_VERSION = 1

P_META = b"M"
P_ENTRY = b"E"
P_INDEX = b"I"
P_HEAD = b"H"
P_FORK = b"F"
P_LOAN = b"L"
P_PROPOSAL = b"P"
P_OFFER, P_EXPIRY, P_CANCEL = b"O", b"X", b"C"  # the offer book (p2pnode/lending/offers.py)

_U64 = struct.Struct(">Q")
_HEAD = struct.Struct(">Q32sQ")


class StoreError(Exception):
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


def entry_key(author: bytes, seq: int) -> bytes:
    return P_ENTRY + author + _U64.pack(seq)


def fork_key(author: bytes, seq: int) -> bytes:
    return P_FORK + author + _U64.pack(seq)


def split_seq_key(key: bytes) -> tuple[bytes, int]:
    """(author, seq) of an ``E`` or ``F`` key; raises ValueError if its length is wrong."""
    if len(key) != 41:
        raise ValueError(f"key of {len(key)} bytes, expected 41")
    return key[1:33], _U64.unpack_from(key, 33)[0]


def entry_puts(e: Entry) -> list[tuple[bytes, bytes]]:
    """The puts that store entry ``e``: its envelope, its id index and, if it names a
    loan, the loan index (I1, I4, I6)."""
    puts = [(entry_key(e.author, e.seq), e.envelope), (P_INDEX + e.id, e.author + _U64.pack(e.seq))]
    if e.kind.startswith("loan."):
        loan = loan_of(e.kind, e.body)
        if loan is not None:
            puts.append((P_LOAN + loan + e.author + _U64.pack(e.seq), b""))
    return puts


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
    """One node's LevelDB database, held open by this process alone."""

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        self.path = Path(path)
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
        try:
            return self._db.get(key)
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def meta(self, name: str) -> bytes | None:
        return self._get(P_META + name.encode())

    def head(self, author: bytes) -> Head | None:
        v = self._get(P_HEAD + author)
        return None if v is None else unpack_head(author, v)

    def heads(self) -> dict[bytes, Head]:
        try:
            return {k[1:]: unpack_head(k[1:], v) for k, v in self._db.iterator(prefix=P_HEAD)}
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
        it = self._db.iterator(
            start=entry_key(author, start), stop=P_ENTRY + author + b"\xff" * 8 + b"\xff", include_key=False
        )
        try:
            for n, value in enumerate(it):
                if limit is not None and n >= limit:
                    break
                yield value
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None
        finally:
            it.close()

    def fork_proofs(self, author: bytes | None = None) -> list[bytes]:
        prefix = P_FORK + (author or b"")
        try:
            return [v for _, v in self._db.iterator(prefix=prefix)]
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def loan_entries(self, loan: bytes) -> list[Entry]:
        """Every stored entry (of any author) that names ``loan``, by author then seq."""
        try:
            keys = [k for k in self._db.iterator(prefix=P_LOAN + loan, include_value=False)]
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None
        out = []
        for k in keys:
            author, seq = k[33:65], _U64.unpack_from(k, 65)[0]
            e = self.entry(author, seq)
            if e is not None:
                out.append(e)
        return out

    def loans(self) -> list[bytes]:
        """The ids of every loan some stored entry names."""
        out: list[bytes] = []
        try:
            it = self._db.iterator(prefix=P_LOAN, include_value=False)
            key = next(it, None)
            while key is not None:  # skip from one loan to the next, not entry by entry
                out.append(key[1:33])
                it.seek(P_LOAN + key[1:33] + b"\xff" * 41)
                key = next(it, None)
            it.close()
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None
        return out

    def get_raw(self, key: bytes) -> bytes | None:
        """A value under a prefix the store does not interpret (proposal records)."""
        return self._get(key)

    def write_raw(self, puts: Iterable[tuple[bytes, bytes]], deletes: Iterable[bytes] = (), *,
                  sync: bool = True) -> None:
        """Put and delete records under prefixes the store does not interpret, in one batch."""
        try:
            with self._db.write_batch(sync=sync, transaction=True) as wb:
                for k, v in puts:
                    wb.put(k, v)
                for k in deletes:
                    wb.delete(k)
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def keys_raw(self, prefix: bytes) -> Iterator[bytes]:
        """The keys under ``prefix`` in order, read lazily (stop early to bound the work)."""
        try:
            with self._db.iterator(prefix=prefix, include_value=False) as it:
                yield from it
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def scan_raw(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        try:
            return list(self._db.iterator(prefix=prefix))
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    def forked_authors(self) -> set[bytes]:
        try:
            return {k[1:33] for k in self._db.iterator(prefix=P_FORK, include_value=False)}
        except plyvel.Error as e:
            raise _wrap_io(e, self.path) from None

    # -- writes -----------------------------------------------------------------------

    def _write(self, batch_items: Iterable[tuple[bytes, bytes]], *, sync: bool) -> None:
        self.write_raw(batch_items, sync=sync)

    def append(
        self, key: SigningKey, items: Iterable[tuple[str, Any]], *, now_ms: int, registry: KindRegistry
    ) -> list[Entry]:
        """Sign and append entries ``(kind, body)`` to ``key``'s own chain, durably, in one
        batch: when this returns, all are on disk; if it raises, none is.

        Raises ``ProtocolError`` for a body its kind refuses or that cannot be encoded.
        """
        head = self.head(key.public_key)
        out: list[Entry] = []
        puts: list[tuple[bytes, bytes]] = []
        for kind, body in items:
            entry = next_entry(key, head, now_ms=now_ms, kind=kind, body=body)
            check_entry(head, entry, registry)
            puts.extend(entry_puts(entry))
            out.append(entry)
            head = Head.of(entry)
        if out:
            puts.append((P_HEAD + key.public_key, pack_head(head)))
            self._write(puts, sync=True)
        return out

    def append_one(self, key: SigningKey, kind: str, body: Any, *, now_ms: int, registry: KindRegistry) -> Entry:
        return self.append(key, [(kind, body)], now_ms=now_ms, registry=registry)[0]

    def record_fork(self, proof: ForkProof) -> bool:
        """Store a verified fork proof; False if one for that author and seq is stored."""
        k = fork_key(proof.author, proof.seq)
        if self._get(k) is not None:
            return False
        self._write([(k, proof.encode())], sync=False)
        return True

    def ingest(
        self, envelopes: Iterable[bytes], *, registry: KindRegistry, strict: bool = False, author: bytes | None = None
    ) -> IngestReport:
        """Verify foreign entries and store those that extend stored chains, in one batch.

        Entries may come in any order and for many authors. An entry already stored is a
        duplicate; a different valid entry at a stored (author, seq) is a fork, whose proof
        is recorded. With ``strict``, any invalid entry (or gap) makes it store no entry
        and raise ``IngestRefused``; fork proofs are recorded either way, since a proof is
        valid on its own. A strict ingest that finds a fork stores no entry either. With
        ``author``, entries of any other author are refused (``wrong_author``): what a
        peer sends in answer to a request for one chain must be of that chain.
        """
        report = IngestReport()
        by_author: dict[bytes, dict[int, Entry]] = {}
        for data in envelopes:
            try:
                e = parse_entry(data)
            except ProtocolError as err:
                report.errors.append(ChainError(err.message, author=b"", seq=0, code=err.code))
                continue
            if author is not None and e.author != author:
                report.errors.append(ChainError("entry of another author", author=author, seq=e.seq, code="wrong_author"))
                continue
            same_seq = by_author.setdefault(e.author, {})
            other = same_seq.get(e.seq)
            if other is None:
                same_seq[e.seq] = e
            elif other.id != e.id:
                report.forks.append(ForkProof.of(other, e))
        puts: list[tuple[bytes, bytes]] = []
        for author, entries in by_author.items():
            puts.extend(self._extend(author, entries, registry, report))
        for proof in report.forks:
            self.record_fork(proof)
        if strict and (report.errors or report.forks):
            raise IngestRefused(report)
        if puts:
            self._write(puts, sync=False)
        return report

    def _extend(
        self, author: bytes, entries: dict[int, Entry], registry: KindRegistry, report: IngestReport
    ) -> list[tuple[bytes, bytes]]:
        """Puts that append ``entries`` (by seq) after ``author``'s stored head; problems go
        to ``report``."""
        head = self.head(author)
        top = head.seq if head else 0
        puts: list[tuple[bytes, bytes]] = []
        for seq in sorted(entries):
            e = entries[seq]
            if seq <= top:
                if self.locate(e.id) is not None:
                    report.duplicates += 1
                else:
                    stored = self.entry(author, seq)
                    if stored is not None:
                        report.forks.append(ForkProof.of(stored, e))
                continue
            try:
                check_entry(head, e, registry)
            except ChainError as err:
                report.errors.append(err)
                break  # nothing after a break in the chain can link
            puts.extend(entry_puts(e))
            report.added.append(e)
            head = Head.of(e)
        if head is not None and head.seq > top:
            puts.append((P_HEAD + author, pack_head(head)))
        return puts
