"""The extension's check of its own records, run by ``p2pnode ledger verify`` (with or
without a running node): every record in its store space is what records.py says it is.

- each ``a`` record is a valid signed ask, kept under the key of the peer who signed it;
- the ``o`` record, if any, is a valid signed ask;
- each ``r`` record names a stored ``endorse.v1`` entry whose body is valid, and holds a
  time of 8 bytes.

(The index is the core's to check: invariant I6 of the store.) No trio, no libp2p.
"""

from __future__ import annotations

from typing import Callable

from protocol.errors import ProtocolError

from p2pnode.ledger.store import Store

from p2pnode_endorse import rules
from p2pnode_endorse.records import NAME, P_ASK, P_OWN_ASK, P_RECEIVED, ms_of, split_received

CODE = "bad_endorse_record"


def check_records(store: Store, problem: Callable[[str, str], None]) -> None:
    records = store.records(NAME)
    for key, value in records.items(P_ASK):
        _check_ask(key[1:], value, problem)
    own = records.get(P_OWN_ASK)
    if own is not None:
        _check_ask(None, own, problem)
    for key, value in records.items(P_RECEIVED):
        _check_received(store, key, value, problem)


def _check_ask(author: bytes | None, value: bytes, problem: Callable[[str, str], None]) -> None:
    what = "own ask" if author is None else f"ask {author[:8].hex()}"
    try:
        ask = rules.parse_ask(value)
    except ProtocolError as e:
        problem(CODE, f"the {what} is invalid: {e.message}")
        return
    if author is not None and ask.author != author:
        problem(CODE, f"the {what} is signed by another peer ({ask.author[:8].hex()})")


def _check_received(store: Store, key: bytes, value: bytes, problem: Callable[[str, str], None]) -> None:
    try:
        author, seq = split_received(key)
        ms_of(value)
    except ValueError as e:
        problem(CODE, f"received record {key.hex()[:24]}: {e}")
        return
    entry = store.entry(author, seq)
    if entry is None or entry.kind != rules.KIND:
        problem(CODE, f"received record names no stored endorsement ({author[:8].hex()} seq {seq})")
        return
    try:
        rules.validate(entry)
    except ProtocolError as e:
        problem(CODE, f"received record names an invalid endorsement ({author[:8].hex()} seq {seq}): {e.message}")
