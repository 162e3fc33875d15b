"""Signed chains made in memory, for tests that feed entries to a store, a node or a rule:
``signed_chain(key, n)`` is a genesis and ``n - 1`` notes by ``key``, linked and signed."""

from __future__ import annotations

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
