"""Errors raised by the protocol rules.

Every error carries a stable ``code`` (a short snake_case word that scripts and peers can
match on) and a human message. Codes are part of the documented interface: see
``docs/protocol.md``; never reuse one for a different meaning.
"""

from __future__ import annotations

from typing import Any


class CodedError(Exception):
    """The one base of every expected failure in p2pnode, in every layer: a ``message``
    for people, a stable ``code`` for scripts and peers, and optional ``details`` (any
    JSON value). A subclass sets its default ``code``; a raise may give another. The CLI
    turns any ``CodedError`` into one line (or JSON object) and an exit status chosen by
    its code alone (cli/output.py), so no caller needs to know the family it came from.
    """

    code = "error"

    def __init__(self, message: str = "", *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.details = details

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args and self.args[0] else self.code

    def __str__(self) -> str:
        return self.message


class ProtocolError(CodedError):
    """Some bytes or values break a rule of the protocol."""

    code = "protocol_error"


class DecodeError(ProtocolError):
    """Bytes are not canonical MessagePack of the allowed types and sizes."""

    code = "malformed"


class EncodeError(ProtocolError):
    """A value cannot be expressed in canonical MessagePack (a float, a non-text key...)."""

    code = "unencodable"


class SignatureError(ProtocolError):
    """A signature does not verify, or the signers are not the ones required."""

    code = "bad_signature"


class SchemaError(ProtocolError):
    """A document or entry body has a missing, extra or ill-typed field."""

    code = "bad_schema"


class ChainError(ProtocolError):
    """An entry does not extend its author's chain correctly.

    ``author`` is the raw 32-byte public key and ``seq`` the sequence number at which the
    chain is broken, so that a report can name the exact place.
    """

    code = "bad_chain"

    def __init__(self, message: str, *, author: bytes, seq: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.author = author
        self.seq = seq
