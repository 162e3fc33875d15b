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
