"""One node's store over its simulated disk: chains, fork proofs, proposal records and
the offer book, with the rules p2pnode/ledger/store.py applies (``ingest``: verify, keep
only what extends a held chain, stop at the first break, turn a different entry at a held
seq into a fork proof) and its durability: a node's own entries are written with
``sync=True`` before anyone hears of them; what it ingests, its fork proofs and its book
are written with ``sync=False`` (sync brings them again after a crash).

A restarted node reads back what its disk kept (``Store.open``), without verifying it
again, as the node trusts its own LevelDB.

The change feed (what the node's store keeps under ``U``/``u``): each write that changes
a chain's head gives its author the next counter; a fork proof stored for a chain held
does too. It is kept in memory and made afresh, with a new ``epoch``, at each start: a
peer's cursor of the life before never holds (the node's own feed survives a restart,
but its cursors do not: every connection starts with a full pull).

Invariants (asserted): every chain held runs from seq 1 without a gap, each entry
checked by ``protocol.chain.check_entry`` after the one before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from protocol.chain import Head, check_entry, extend, group_by_author
from protocol.entry import Entry, parse_entry
from protocol.errors import ChainError
from protocol.fork import ForkProof
from protocol.lending.offer import Offer, offer_of
from protocol.envelope import open_envelope

from .disk import Disk

E, F, P, O, X = b"E", b"F", b"P", b"O", b"X"  # entries, fork proofs, proposal records, offers, cancellations

_TRUSTED: dict[bytes, Entry] = {}  # envelope -> entry, for reading back one's own disk
MAX_TRUSTED = 200_000


def trusted_entry(data: bytes) -> Entry:
    """The entry an envelope read back from our own disk holds (verified when it was
    written, so not again: the node trusts its LevelDB)."""
    e = _TRUSTED.get(data)
    if e is None:
        e = parse_entry(data)
        if len(_TRUSTED) < MAX_TRUSTED:
            _TRUSTED[data] = e
    return e


@dataclass
class Report:
    """What one ingest did (p2pnode.ledger.store.IngestReport)."""

    added: list[Entry] = field(default_factory=list)
    forks: list[ForkProof] = field(default_factory=list)
    errors: list[ChainError] = field(default_factory=list)
    duplicates: int = 0


def _seq8(seq: int) -> bytes:
    return seq.to_bytes(8, "big")


class Store:
    def __init__(self, disk: Disk, epoch: bytes = bytes(16)) -> None:
        self.disk = disk
        self.epoch = epoch
        self.counter = 0
        self.changed: dict[bytes, int] = {}  # author -> the counter of its chain's last change
        self.chains: dict[bytes, list[Entry]] = {}
        self.ids: dict[bytes, tuple[bytes, int]] = {}  # entry id -> (author, seq)
        self.forks: dict[bytes, ForkProof] = {}  # author -> the first proof recorded against it
        self.offers: dict[bytes, Offer] = {}
        self.cancels: dict[tuple[bytes, bytes], bytes] = {}  # (offer, author) -> cancellation envelope

    @classmethod
    def open(cls, disk: Disk, epoch: bytes = bytes(16)) -> "Store":
        """The store as the node finds it at start-up: what its disk holds, and a change
        feed of ``epoch`` with one change per chain."""
        s = cls(disk, epoch)
        for k in disk.keys(E):
            e = trusted_entry(disk.view[k])
            chain = s.chains.setdefault(e.author, [])
            assert e.seq == len(chain) + 1, "a gap in a chain on disk"
            chain.append(e)
            s.ids[e.id] = (e.author, e.seq)
        for k in disk.keys(F):
            proof = ForkProof.decode(disk.view[k])
            s.forks.setdefault(proof.author, proof)
        for k in disk.keys(O):
            o = offer_of(open_envelope(disk.view[k]))
            s.offers[o.id] = o
        for k in disk.keys(X):
            s.cancels[(k[1:33], k[33:65])] = disk.view[k]
        for author in sorted(s.chains):
            s._changed(author)
        return s

    # -- reads ---------------------------------------------------------------------------

    def head(self, author: bytes) -> Head | None:
        chain = self.chains.get(author)
        return Head.of(chain[-1]) if chain else None

    def heads(self) -> dict[bytes, Head]:
        return {a: Head.of(c[-1]) for a, c in self.chains.items() if c}

    def chain(self, author: bytes, start: int, limit: int) -> list[bytes]:
        return [e.envelope for e in self.chains.get(author, [])[start - 1:start - 1 + limit]]

    def entry(self, author: bytes, seq: int) -> Entry | None:
        chain = self.chains.get(author, [])
        return chain[seq - 1] if 1 <= seq <= len(chain) else None

    def has(self, entry_id: bytes) -> bool:
        return entry_id in self.ids

    def changes(self, after: int, limit: int) -> tuple[int, list[tuple[int, Head]]]:
        """The counter and the first ``limit`` chains changed after ``after`` (``Store.changes``)."""
        later = sorted((c, a) for a, c in self.changed.items() if c > after)[:limit]
        return self.counter, [(c, Head.of(self.chains[a][-1])) for c, a in later]

    def _changed(self, author: bytes) -> None:
        self.counter += 1
        self.changed[author] = self.counter

    # -- writes --------------------------------------------------------------------------

    def append_own(self, entry: Entry, *, sync: bool = True) -> None:
        """Our own new entry, durable before the caller tells anyone (``DiskFull`` if not)."""
        check_entry(self.head(entry.author), entry)
        self.disk.write([(E + entry.author + _seq8(entry.seq), entry.envelope)], sync=sync)
        self._hold(entry)

    def _hold(self, e: Entry) -> None:
        self.chains.setdefault(e.author, []).append(e)
        self.ids[e.id] = (e.author, e.seq)
        self._changed(e.author)

    def record_fork(self, proof: ForkProof) -> bool:
        """Keep ``proof`` (the first one per author); True if it was new to this node."""
        if proof.author in self.forks:
            return False
        self.disk.write([(F + proof.author + _seq8(proof.seq), proof.encode())], sync=False)
        self.forks[proof.author] = proof
        if self.chains.get(proof.author):
            self._changed(proof.author)  # (peers pulling changes see the chain again)
        return True

    def ingest(self, envelopes: Iterable[bytes], author: bytes | None = None,
               parse=parse_entry) -> Report:
        """Verify foreign entries, store those that extend held chains in one write."""
        report = Report()
        batch = group_by_author(envelopes, author=author, parse=parse)  # (the node's store's own rule)
        report.errors.extend(batch.errors)
        report.forks.extend(batch.forks)
        puts = []
        for a, entries in batch.by_author.items():
            puts.extend(self._extend(a, entries, report))
        if puts:
            self.disk.write(puts, sync=False)  # DiskFull: nothing was held yet (see _extend)
            for e in report.added:
                self._hold(e)
        for proof in report.forks:
            self.record_fork(proof)
        return report

    def _extend(self, author: bytes, entries: dict[int, Entry], report: Report) -> list:
        x = extend(self.head(author), entries, holds=lambda i: i in self.ids,
                   held_at=lambda seq: self.entry(author, seq))  # (the node's store's own rule)
        report.duplicates += x.duplicates
        report.forks.extend(x.forks)
        if x.error is not None:
            report.errors.append(x.error)
        report.added.extend(x.added)
        return [(E + author + _seq8(e.seq), e.envelope) for e in x.added]

    # -- proposal records and the offer book ---------------------------------------------

    def put_record(self, loan: bytes, data: bytes) -> None:
        self.disk.write([(P + loan, data)], sync=True)  # agree rule 6a: durable before it is told

    def records(self) -> list[tuple[bytes, bytes]]:
        return [(k[1:], self.disk.view[k]) for k in self.disk.keys(P)]

    def put_offer(self, o: Offer) -> None:
        self.disk.write([(O + o.id, o.envelope)], sync=False)
        self.offers[o.id] = o

    def put_cancel(self, offer_id: bytes, author: bytes, envelope: bytes, removes: bool) -> None:
        batch = [(X + offer_id + author, envelope)]
        if removes:
            batch.append((O + offer_id, None))
        self.disk.write(batch, sync=False)
        self.cancels[(offer_id, author)] = envelope
        if removes:
            self.offers.pop(offer_id, None)
