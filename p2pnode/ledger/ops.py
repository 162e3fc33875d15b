"""The ledger operations of the control API, as functions over an open ``Store``.

Each returns the JSON value that the control method ``ledger.<name>`` answers, and the CLI
calls the very same function when no node runs, so a command prints the same either way.
Refusals are ``CodedError``s (``ApiError``, ``StoreError``, ``ProtocolError``) with a
string code (docs/api.md lists them). This module imports neither trio nor libp2p: the
CLI loads it; the node's handlers (p2pnode/ledger/handlers.py) call it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterable

from protocol import codec, jsonform
from protocol.entry import Entry, parse_entry
from protocol.errors import ProtocolError
from protocol.keys import SigningKey, peer_id, public_key_from_peer_id
from protocol.kinds import KindRegistry
from protocol.schema import U63_MAX

from p2pnode.control.core import DEFAULT_SHOW_LIMIT, EXPORT_PAGE, MAX_EXPORT_PAGE  # noqa: F401  (the API's limits)
from p2pnode.errors import ApiError, bad_params
from p2pnode.ledger.export import ExportFileError, entry_json, read_export
from p2pnode.ledger.store import IngestRefused, IngestReport, Store

log = logging.getLogger(__name__)


# -- the operations ------------------------------------------------------------------------


def ledger_append(store: Store, key: SigningKey, registry: KindRegistry, kind: str, body: Any, now_ms: int) -> dict:
    """Sign and append one entry of ``kind`` with ``body`` (its JSON form, see
    protocol/jsonform.py) to ``key``'s chain, durably. Returns the entry's JSON view.

    Refuses a body that has no canonical form (code of the encoding error, e.g.
    ``unencodable``) or that its kind's rules refuse (``bad_schema``, ...)."""
    try:
        value = jsonform.from_json(body)
        codec.encode(value)  # out-of-range integers, depth
    except ProtocolError as e:
        raise ApiError(f"body refused: {e.message}", code=e.code) from None
    return append_value(store, key, registry, kind, value, now_ms)[1]


def append_value(store: Store, key: SigningKey, registry: KindRegistry, kind: str, value: Any, now_ms: int) -> tuple[Entry, dict]:
    """Like ``ledger_append`` for a body already in canonical form: (entry, JSON view)."""
    try:
        entry = store.append_one(key, kind, value, now_ms=now_ms, registry=registry)
    except ProtocolError as e:
        raise ApiError(f"entry refused: {e.message}", code=e.code) from None
    return entry, entry_json(entry)


def ledger_show(store: Store, registry: KindRegistry, author: bytes, from_seq: int = 1, limit: int = DEFAULT_SHOW_LIMIT) -> dict:
    """Entries ``from_seq`` .. ``from_seq + limit - 1`` of ``author``'s chain:
    ``{"author", "head_seq" (0 if none is held), "forked", "entries": [view + "known_kind"
    + "kind_status" (+ "invalid_reason")]}``."""
    head = store.head(author)
    forked = author in store.forked_authors()
    entries = [parse_entry(d) for d in store.chain(author, start=from_seq, limit=limit)]
    return {
        "author": peer_id(author),
        "head_seq": head.seq if head else 0,
        "forked": forked,
        "entries": [_shown(e, registry) for e in entries],
    }


def _shown(e: Entry, registry: KindRegistry) -> dict:
    verdict = registry.classify(e)
    view = dict(entry_json(e), known_kind=e.kind in registry, kind_status=verdict.status)
    if verdict.reason:
        view["invalid_reason"] = verdict.reason
    return view


def ledger_heads(store: Store, own: bytes | None = None) -> dict:
    """Every chain held, by peer ID: ``{"heads": [{"author", "seq", "id", "ts", "own",
    "forked"}]}``; ``own`` marks the chain of that public key."""
    hs = sorted(store.heads().values(), key=lambda h: peer_id(h.author))
    forked = store.forked_authors()
    return {
        "heads": [
            {"author": peer_id(h.author), "seq": h.seq, "id": h.id.hex(), "ts": h.ts, "own": h.author == own, "forked": h.author in forked}
            for h in hs
        ]
    }


def ledger_verify(store: Store, registry: KindRegistry, progress: Callable[[int], None] | None = None,
                  checks: Iterable[tuple[str, Any]] = ()) -> dict:
    """A full re-check of the store (p2pnode/ledger/verify.py), with the extensions'
    ``checks``, as ``{"ok", "authors", "entries", "unknown_kinds", "invalid_bodies",
    "fork_proofs", "problems": [{"code", "message", "author", "seq"}],
    "problems_truncated"}``. Damage is reported, not raised."""
    from p2pnode.ledger.verify import verify_store

    report = verify_store(store, registry, progress, checks)
    return {
        "ok": report.ok,
        "authors": report.authors,
        "entries": report.entries,
        "unknown_kinds": report.unknown_kinds,
        "invalid_bodies": report.invalid_bodies,
        "fork_proofs": report.fork_proofs,
        "problems": [
            {"code": p.code, "message": p.message, "author": peer_id(p.author) if p.author and len(p.author) == 32 else None, "seq": p.seq}
            for p in report.problems
        ],
        "problems_truncated": report.truncated,
    }


MAX_IMPORT_FILE = 256 << 20
"""Bytes of an export file that an import reads at most (256 MiB, about a million
entries): the file is read whole before anything is stored (all or nothing)."""


def read_import_file(path: str | Path) -> list[str]:
    """The lines of an export file; ``ApiError`` naming the path and what is wrong if it
    cannot be read (``os_error``), is not a regular file (``not_a_file``: a device such as
    /dev/zero, a FIFO, a directory), is larger than ``MAX_IMPORT_FILE`` (``file_too_large``)
    or is not UTF-8 (``bad_export_file``).

    The file is opened with ``O_NONBLOCK``, so that opening a FIFO with no writer returns
    at once instead of blocking (a regular file ignores the flag), and its type is checked
    on the open descriptor, so it cannot be swapped between the check and the read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as e:
        raise ApiError(f"{e.strerror or e}: {path}", code="os_error") from None
    too_large = ApiError(f"{path} is larger than an import reads ({MAX_IMPORT_FILE >> 20} MiB): "
                         "split it by author (`p2pnode ledger export --author`)", code="file_too_large")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ApiError(f"{path} is not a regular file but {_file_type(st.st_mode)}: an import reads an "
                           "export file (`p2pnode ledger export`); pipe other sources into "
                           "`p2pnode ledger import -`", code="not_a_file")
        if st.st_size > MAX_IMPORT_FILE:
            raise too_large
        with os.fdopen(fd, "rb") as f:
            fd = -1  # the file object closes it now
            data = f.read(MAX_IMPORT_FILE + 1)  # bounded even if the file grows meanwhile
    except OSError as e:
        raise ApiError(f"{e.strerror or e}: {path}", code="os_error") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_IMPORT_FILE:
        raise too_large
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ApiError(f"{path} is not UTF-8 text", code="bad_export_file") from None


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a file"


def ledger_import(store: Store, registry: KindRegistry, lines: Iterable[str]) -> dict:
    """Verify JSON-lines export ``lines`` and store their chains, all or nothing:
    ``{"added", "duplicates", "lines"}``. Refuses a bad line (``bad_export_file``), an
    entry that does not verify or link (``import_refused``, details per entry) or a fork
    (``fork``; its proof is recorded all the same)."""
    return import_report(store, registry, lines)[0]


class ImportRefused(ApiError):
    """An import stored nothing; ``report`` holds the fork proofs it recorded anyway."""

    def __init__(self, message: str, *, code: str, details: Any, report: IngestReport) -> None:
        super().__init__(message, code=code, details=details)
        self.report = report


def import_report(store: Store, registry: KindRegistry, lines: Iterable[str]) -> tuple[dict, IngestReport]:
    """``ledger_import``'s answer and the store's report of it (for the node's hooks)."""
    try:
        envelopes = read_export(lines)
    except ExportFileError as e:
        raise ApiError(str(e), code=e.code) from None
    try:
        report = store.ingest(envelopes, registry=registry, strict=True, own=True)  # its owner asked for it
    except IngestRefused as e:
        raise _refusal(e.report) from None
    return {"added": len(report.added), "duplicates": report.duplicates, "lines": len(envelopes)}, report


def _refusal(report: IngestReport) -> ImportRefused:
    # Nothing was stored: report only the fork proofs, which were recorded.
    stored = IngestReport(forks=list(report.forks))
    if report.errors:
        errs = [
            {"author": peer_id(x.author) if len(x.author) == 32 else None, "seq": x.seq, "code": x.code, "message": x.message}
            for x in report.errors
        ]
        first = errs[0]
        return ImportRefused(
            f"import refused, nothing stored: {first['author'] or 'an entry'} seq {first['seq']}: {first['message']}",
            code="import_refused",
            details=errs,
            report=stored,
        )
    f0 = report.forks[0]
    return ImportRefused(
        f"import refused, nothing stored: {peer_id(f0.author)} forked at seq {f0.seq} "
        "(the file's entry differs from the one held); the fork proof was recorded",
        code="fork",
        details=[{"author": peer_id(p.author), "seq": p.seq} for p in report.forks],
        report=stored,
    )


def ledger_export(store: Store, author: bytes | None = None, cursor: dict | None = None, limit: int = EXPORT_PAGE) -> dict:
    """One page of an export: ``{"lines": [export line, ...], "next": cursor or None,
    "authors": n}``. Chains come in the order of their public keys (as in an export file),
    each in seq order; ``next`` (``{"author": peer ID, "seq": n}``) is passed back as
    ``cursor`` for the following page; ``authors`` counts the chains being exported."""
    authors = [author] if author is not None else sorted(store.heads())
    start_author, seq = (authors[0] if authors else b"", 1) if cursor is None else _cursor(cursor)
    lines: list[str] = []
    for a in authors:
        if a < start_author:
            continue
        first = seq if a == start_author else 1
        for data in store.chain(a, start=first, limit=limit - len(lines) + 1):
            if len(lines) == limit:  # one more exists: the next page starts at it
                return {"lines": lines, "next": {"author": peer_id(a), "seq": parse_entry(data).seq}, "authors": len(authors)}
            lines.append(json.dumps(entry_json(parse_entry(data)), separators=(",", ":")))
    return {"lines": lines, "next": None, "authors": len(authors)}


def _cursor(cursor: Any) -> tuple[bytes, int]:
    seq = cursor.get("seq") if isinstance(cursor, dict) else None
    if type(seq) is not int or not 1 <= seq <= U63_MAX:
        raise bad_params('"cursor" must be {"author": peer ID, "seq": 1..2^63-1} as a previous page returned')
    return peer_key(cursor.get("author"), "cursor.author"), cursor["seq"]


def ledger_kinds(registry: KindRegistry) -> dict:
    """The entry kinds known: ``{"kinds": [{"kind", "description", "owner"}]}``."""
    return {"kinds": [{"kind": k.name, "description": k.description, "owner": registry.owner(k.name)}
                      for k in registry]}


# -- params --------------------------------------------------------------------------------


def peer_key(value: Any, name: str) -> bytes:
    """The public key of the peer ID ``value``; ``bad_params`` naming ``name`` otherwise."""
    if not isinstance(value, str):
        raise bad_params(f'"{name}" must be a peer ID string')
    try:
        return public_key_from_peer_id(value)
    except ProtocolError as e:
        raise bad_params(f'"{name}": {e.message}') from None
