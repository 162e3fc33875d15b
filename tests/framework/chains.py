"""Signed chains made in memory, for tests that feed entries to a store, a node or a rule:
``signed_chain(key, n)`` is a genesis and ``n - 1`` notes by ``key``, linked and signed;
``store_chain(home, entries)`` puts such entries into a stopped node's store."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from protocol.entry import ZERO_ID, Entry, make_entry
from protocol.keys import SigningKey
from protocol.kinds import genesis_body


def signed_chain(key: SigningKey, n: int, *, text: Callable[[int], str] = lambda seq: f"entry {seq}") -> list[Entry]:
    """Entries seq 1..``n`` of ``key``'s chain: a genesis, then notes whose text is ``text(seq)``."""
    out: list[Entry] = []
    for seq in range(1, n + 1):
        kind, body = ("genesis", genesis_body()) if seq == 1 else ("note", {"text": text(seq)})
        out.append(make_entry(key, seq=seq, prev=out[-1].id if out else ZERO_ID, ts=seq, kind=kind, body=body))
    return out


def store_chain(home: Path | str, entries: list[Entry]) -> int:
    """Store ``entries`` (made by ``make_entry`` in this process, hence valid and signed) in
    the store of the node home ``home`` while no node runs on it, as one strict ingest
    through the store's own checks of every link; returns how many it added.

    The set-up of a node that already holds a long chain: an import (`ledger import`) would
    verify every signature twice (the CLI reading the file, then the store), which for tens
    of thousands of entries is most of a test's time, and is not what such a test is about.
    """
    from p2pnode.extensions import load
    from p2pnode.home import Home

    loaded = load()
    with Home(Path(home)).open_store() as store:
        loaded.prepare(store)  # (as `ledger import` does before it writes without a node)
        report = store.ingest(entries, registry=loaded.registry, strict=True, own=True, parsed=True)
    assert not report.errors and not report.forks, report
    return len(report.added)
