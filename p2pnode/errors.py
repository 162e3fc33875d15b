"""``ApiError``: a refusal of the control API, with the machine-readable code scripts see.

A module of its own (no trio, no plyvel) so that both the control server and the ledger
operations that the CLI runs without a node can raise it. ``p2pnode.control`` re-exports it.
"""

from __future__ import annotations

from typing import Any

BAD_PARAMS = "bad_params"
"""The code of an ``ApiError`` about the request's params: sent as JSON-RPC -32602."""


class ApiError(Exception):
    """An expected refusal: ``message`` for people, ``code`` for scripts, ``details`` (any
    JSON value) for both. Sent as a JSON-RPC error -32000 (-32602 for ``bad_params``)."""

    def __init__(self, message: str, *, code: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return self.message


def bad_params(message: str) -> ApiError:
    return ApiError(message, code=BAD_PARAMS)


def unique(matches: list, ref: str, what: str, unknown_code: str) -> object:
    """The one item that an id prefix ``ref`` names, or ``ApiError``: ``unknown_code`` if
    none, ``ambiguous_id`` if several."""
    if not matches:
        raise ApiError(f"no {what} {ref} is known here", code=unknown_code)
    if len(matches) > 1:
        raise ApiError(f"{ref} names {len(matches)} of them: give more of the id", code="ambiguous_id")
    return matches[0]


def id_prefix(ref: object, what: str) -> str:
    """``ref`` in lower case if it is an id or a prefix of at least 8 hex digits;
    ``bad_params`` naming ``what`` otherwise."""
    if not isinstance(ref, str) or not 8 <= len(ref) <= 64 or any(c not in "0123456789abcdef" for c in ref.lower()):
        raise bad_params(f"{what} is 64 hex digits, or a unique prefix of at least 8")
    return ref.lower()
