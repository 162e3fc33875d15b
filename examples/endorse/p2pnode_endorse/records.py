"""What the extension keeps in its own store space (``Context.records``), beside the
chains and never part of one. Keys, without the space's prefix:

    b"a" + author(32)            -> the newest ask of a peer ``author`` (its envelope)
    b"o"                         -> this node's own newest ask (its envelope)
    b"r" + author(32) + seq(8)   -> received_ms(8): entry (author, seq) endorses this
                                    node, stored at received_ms (written by the reaction)

Checked by verify.py; written by service.py only. Imports no trio.
"""

from __future__ import annotations

NAME = "endorse"  # the extension's name: the store spaces are named after it

P_ASK = b"a"
P_OWN_ASK = b"o"
P_RECEIVED = b"r"

_U64 = 8


def ask_key(author: bytes) -> bytes:
    return P_ASK + author


def received_key(author: bytes, seq: int) -> bytes:
    return P_RECEIVED + author + seq.to_bytes(_U64, "big")


def split_received(key: bytes) -> tuple[bytes, int]:
    """``(author, seq)`` of a ``b"r"`` key; ``ValueError`` if it is not 41 bytes."""
    if len(key) != 1 + 32 + _U64:
        raise ValueError(f"a received key is 41 bytes, not {len(key)}")
    return key[1:33], int.from_bytes(key[33:], "big")


def ms(value: int) -> bytes:
    return value.to_bytes(_U64, "big")


def ms_of(value: bytes) -> int:
    if len(value) != _U64:
        raise ValueError(f"a time is 8 bytes, not {len(value)}")
    return int.from_bytes(value, "big")
