"""Errors raised by the protocol rules.

Every error carries a stable ``code`` (a short snake_case word that scripts and peers can
match on) and a human message. Codes are part of the documented interface: see
``docs/protocol.md``; never reuse one for a different meaning.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Some bytes or values break a rule of the protocol."""

    code = "protocol_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


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
