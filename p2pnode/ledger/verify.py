"""Full re-check of a store against its invariants (store.py, I1-I6), and against the
checks each extension declares for its own records.

``verify_store`` reads every key once, in order, and never trusts what it reads: each
entry is re-decoded and its signature re-verified, each chain re-linked, each head and
index record compared with the entries. It reports every problem it finds (up to a cap)
with the author, seq and reason, and turns storage-level damage (a corrupt or truncated
file) into a problem report instead of an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import plyvel

from protocol import codec
from protocol.chain import Head, parse_next
from protocol.entry import parse_entry
from protocol.envelope import document_id
from protocol.errors import ChainError, ProtocolError
from protocol.fork import ForkProof
from protocol.kinds import INVALID, UNKNOWN, KindRegistry

from p2pnode.ledger.store import (
    META_CHANGES, P_CHANGE, P_CHANGED, P_ENTRY, P_EXT_INDEX, P_FORK, P_HEAD, P_INDEX, P_META, Store, space_prefix,
    split_seq_key, unpack_head,
)

MAX_PROBLEMS = 1000


@dataclass(frozen=True)
class Problem:
    """One broken invariant: where (author, seq; either may be None) and why."""

    code: str
    message: str
    author: bytes | None = None
    seq: int | None = None


@dataclass
class VerifyReport:
    authors: int = 0
    entries: int = 0
    unknown_kinds: int = 0
    invalid_bodies: int = 0
    fork_proofs: int = 0
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, p: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(p)
        else:
            self.truncated = True


Check = Callable[[Store, Callable[[str, str], None]], None]
"""An extension's check of its own records: ``check(store, problem)`` calls
``problem(code, message)`` for each thing wrong, and raises nothing for damage."""


def verify_store(store: Store, registry: KindRegistry, progress: Callable[[int], None] | None = None,
                 checks: Iterable[tuple[str, Check]] = ()) -> VerifyReport:
    """Check every invariant of ``store``, then each extension's ``checks`` (by name);
    never raises for damage, only reports it."""
    report = VerifyReport()
    try:
        _check_meta(store, report)
        index_keys: dict[str, set[bytes]] = {name: set() for name in store.indexed() & registry.indexed_owners()}
        last = _check_entries(store, registry, report, progress, index_keys)
        _check_heads(store, last, report)
        _check_index(store, report)
        _check_forks(store, report)
        _check_changes(store, report)
        for name, wanted in sorted(index_keys.items()):
            _check_extension_index(store, name, wanted, report)
        for name, check in checks:
            _run_check(store, name, check, report)
    except plyvel.Error as e:
        report.add(Problem("store_corrupt", f"the database cannot be read: {e}"))
    return report


def _run_check(store: Store, name: str, check: Check, report: VerifyReport) -> None:
    def problem(code: str, message: str) -> None:
        report.add(Problem(code, f"{name}: {message}"))

    try:
        check(store, problem)
    except plyvel.Error:
        raise
    except Exception as e:  # an extension's bug is reported, and the other checks still run
        report.add(Problem("check_failed", f"{name}: its verify check failed: {type(e).__name__}: {e}"))


def _iter(store: Store, prefix: bytes):
    return store.db.iterator(prefix=prefix, verify_checksums=True, fill_cache=False)


def _check_meta(store: Store, report: VerifyReport) -> None:
    if store.db.get(P_META + b"schema", verify_checksums=True) is None:
        report.add(Problem("no_schema", "the store has no schema version"))


def _check_entries(
    store: Store, registry: KindRegistry, report: VerifyReport, progress: Callable[[int], None] | None,
    index_keys: dict[str, set[bytes]],
) -> dict[bytes, Head]:
    """I1, I2, and the entry halves of I4 and I6 (the index keys the entries call for are
    added to ``index_keys`` of their owner); returns, for each author, the last entry of
    the valid run from seq 1 (before any break)."""
    last: dict[bytes, Head] = {}
    author: bytes | None = None
    prev: Head | None = None
    good: Head | None = None  # the author's last entry before any break: where its valid chain ends
    broken = False
    for key, value in _iter(store, P_ENTRY):
        try:
            k_author, k_seq = split_seq_key(key)
        except ValueError as e:
            report.add(Problem("bad_key", f"entry key {key.hex()}: {e}"))
            continue
        if k_author != author:
            if author is not None and good is not None:
                last[author] = good
            author, prev, good, broken = k_author, None, None, False
            report.authors += 1
        report.entries += 1
        if progress and report.entries % 1000 == 0:
            progress(report.entries)
        if broken:
            # After a break, keep checking each entry on its own so that all damage shows.
            prev = _recheck_after_break(k_author, k_seq, value, registry, report)
            continue
        expected = 1 if prev is None else prev.seq + 1
        if k_seq != expected:
            report.add(Problem("missing_entry", f"seq {expected} is missing (next stored is {k_seq})", author, expected))
            broken = True
            prev = _recheck_after_break(k_author, k_seq, value, registry, report)
            continue
        try:
            entry = parse_next(prev, value, author=k_author)
        except ChainError as e:
            report.add(Problem(e.code, e.message, k_author, k_seq))
            broken = True
            prev = None
            continue
        if entry.seq != k_seq:
            report.add(Problem("misplaced", f"entry claims seq {entry.seq} but is stored at {k_seq}", k_author, k_seq))
        status = registry.classify(entry).status
        report.unknown_kinds += status == UNKNOWN
        report.invalid_bodies += status == INVALID
        _check_index_of(store, entry.id, k_author, k_seq, report)
        indexed = registry.index_keys(entry) if index_keys else None
        if indexed is not None and indexed[0] in index_keys:
            index_keys[indexed[0]].update(indexed[1])
        prev = good = Head.of(entry)
    if author is not None and good is not None:
        last[author] = good
    return last


def _recheck_after_break(author: bytes, seq: int, value: bytes, registry: KindRegistry, report: VerifyReport) -> Head | None:
    """Check one entry whose predecessor is broken: signature, fields and placement."""
    try:
        entry = parse_entry(value)
    except ProtocolError as e:
        report.add(Problem(e.code, e.message, author, seq))
        return None
    if entry.author != author or entry.seq != seq:
        report.add(Problem("misplaced", f"entry claims seq {entry.seq} but is stored at {seq}", author, seq))
    return None  # a broken chain has no trustworthy head


def _check_index_of(store: Store, entry_id: bytes, author: bytes, seq: int, report: VerifyReport) -> None:
    loc = store.db.get(P_INDEX + entry_id, verify_checksums=True)
    if loc != author + seq.to_bytes(8, "big"):
        what = "missing" if loc is None else "points elsewhere"
        report.add(Problem("bad_index", f"index record of the entry's id {entry_id.hex()[:16]} is {what}", author, seq))


def _check_heads(store: Store, last: dict[bytes, Head], report: VerifyReport) -> None:
    """I3."""
    seen = set()
    for key, value in _iter(store, P_HEAD):
        author = key[1:]
        seen.add(author)
        try:
            head = unpack_head(author, value)
        except Exception:
            report.add(Problem("bad_head", "head record is malformed", author))
            continue
        want = last.get(author)
        if want is None:
            report.add(Problem("bad_head", f"head says seq {head.seq} but no valid chain is stored", author, head.seq))
        elif head != want:
            report.add(
                Problem("bad_head", f"head says seq {head.seq}, the valid chain ends at seq {want.seq}", author, head.seq)
            )
    for author, want in last.items():
        if author not in seen:
            report.add(Problem("bad_head", "no head record for a stored chain", author, want.seq))


def _check_index(store: Store, report: VerifyReport) -> None:
    """The other half of I4: every index record points at an entry with that id."""
    count = 0
    for _ in _iter(store, P_INDEX):
        count += 1
        if count > report.entries:
            break
    if count <= report.entries:
        return  # every entry's own index record was checked; none can be extra
    for key, value in _iter(store, P_INDEX):
        entry_id = key[1:]
        data = store.db.get(P_ENTRY + value, verify_checksums=True) if len(value) == 40 else None
        author = value[:32] if len(value) == 40 else None
        seq = int.from_bytes(value[32:], "big") if len(value) == 40 else None
        if data is None:
            report.add(Problem("bad_index", f"index record {entry_id.hex()[:16]} points at no entry", author, seq))
            continue
        try:
            payload = codec.decode(data)[0]
        except Exception:
            continue  # the entry itself is reported by the entry pass
        if document_id(payload) != entry_id:
            report.add(Problem("bad_index", f"index record {entry_id.hex()[:16]} points at another entry", author, seq))


def _check_forks(store: Store, report: VerifyReport) -> None:
    """I5."""
    for key, value in _iter(store, P_FORK):
        report.fork_proofs += 1
        try:
            author, seq = split_seq_key(key)
            proof = ForkProof.decode(value)
        except (ValueError, ProtocolError) as e:
            report.add(Problem("bad_fork_proof", f"stored fork proof is invalid: {e}"))
            continue
        if proof.author != author or proof.seq != seq:
            report.add(Problem("bad_fork_proof", "fork proof stored under another author or seq", author, seq))


def _check_changes(store: Store, report: VerifyReport) -> None:
    """I8: one ``u`` record per head, each naming a ``U`` record that names it back; no
    other ``U`` record; no counter above the feed's."""
    mark = store.db.get(META_CHANGES, verify_checksums=True)
    top = int.from_bytes(mark, "big") if mark is not None and len(mark) == 8 else None
    if top is None:
        report.add(Problem("bad_change_feed", "the change feed has no counter"))
        return
    held = {k[1:] for k, _ in _iter(store, P_HEAD)}
    named = 0
    for key, value in _iter(store, P_CHANGED):
        author = key[1:]
        counter = int.from_bytes(value, "big") if len(value) == 8 else None
        if author not in held:
            report.add(Problem("bad_change_feed", "a change record names a chain not held", author))
        elif counter is None or counter > top or store.db.get(P_CHANGE + value) != author:
            report.add(Problem("bad_change_feed", "the chain's change record is broken", author))
        else:
            named += 1
        held.discard(author)
    for author in held:
        report.add(Problem("bad_change_feed", "a chain held has no change record", author))
    count = sum(1 for _ in _iter(store, P_CHANGE))
    if count != named:
        report.add(Problem("bad_change_feed", f"the change feed holds {count} records for {named} chains"))


def _check_extension_index(store: Store, name: str, wanted: set[bytes], report: VerifyReport) -> None:
    """I6: extension ``name``'s index space holds exactly the keys the entries call for."""
    prefix = space_prefix(P_EXT_INDEX, name)
    found = set()
    for key, _ in _iter(store, prefix):
        k = key[len(prefix):]
        found.add(k)
        if k not in wanted:
            report.add(Problem("bad_ext_index", f"{name}: index key {k[:12].hex()}... names no stored entry of its kinds"))
    missing = wanted - found
    for k in sorted(missing)[:MAX_PROBLEMS]:
        report.add(Problem("bad_ext_index", f"{name}: the index lacks key {k[:12].hex()}... that a stored entry calls for"))
