"""``ApiError``: a refusal of the control API, with the machine-readable code scripts see.

A module of its own (no trio, no plyvel) so that both the control server and the ledger
operations that the CLI runs without a node can raise it. ``p2pnode.control`` re-exports it.
"""

from __future__ import annotations

from typing import Any

from protocol.errors import CodedError

BAD_PARAMS = "bad_params"
"""The code of an ``ApiError`` about the request's params: sent as JSON-RPC -32602."""


class ApiError(CodedError):
    """A refusal of the control API: ``message`` for people, ``code`` for scripts,
    ``details`` (any JSON value) for both. Sent as a JSON-RPC error -32000 (-32602 for
    ``bad_params``), as is any other ``CodedError`` a method raises."""

    def __init__(self, message: str, *, code: str, details: Any = None) -> None:
        super().__init__(message, code=code, details=details)


def bad_params(message: str) -> ApiError:
    return ApiError(message, code=BAD_PARAMS)


def unique(matches: list, ref: str, what: str, unknown_code: str) -> object:
    """The one item that an id prefix ``ref`` names, or ``ApiError``: ``unknown_code`` if
    none, ``ambiguous_id`` if several.

    ``what`` is the kind of object in the singular ("entry", "thing or other"): every kind
    gets the same two sentences, "no entry matches 1234abcd on this node" and "1234abcd
    matches 3 entries: give more of the id"."""
    if not matches:
        raise ApiError(f"no {what} matches {ref} on this node", code=unknown_code)
    if len(matches) > 1:
        plural = " or ".join(_plural(part) for part in what.split(" or "))
        raise ApiError(f"{ref} matches {len(matches)} {plural}: give more of the id", code="ambiguous_id")
    return matches[0]


def _plural(noun: str) -> str:
    return noun[:-1] + "ies" if noun.endswith("y") else noun + "s"


def id_prefix(ref: object, what: str) -> str:
    """``ref`` in lower case if it is an id or a prefix of at least 8 hex digits;
    ``bad_params`` naming ``what``, the kind of object as for ``unique``, otherwise."""
    if not isinstance(ref, str) or not 8 <= len(ref) <= 64 or any(c not in "0123456789abcdef" for c in ref.lower()):
        raise bad_params(f"{ref!r} is not {'an' if what[:1] in 'aeiou' else 'a'} {what} id: "
                         "give its 64 hex digits, or a prefix of at least 8")
    return ref.lower()


OK, FAILED, USAGE, HOME, LOCKED, KEY, NOT_RUNNING = 0, 1, 2, 3, 4, 5, 6
"""Exit statuses of every p2pnode process (the CLI and the node program; docs/cli.md)."""

EXIT_OF_CODE = {
    "usage_error": USAGE,
    "bad_params": USAGE,
    "bad_address": USAGE,
    "home_error": HOME,
    "not_initialised": HOME,
    "already_initialised": HOME,
    "bad_config": HOME,
    "bad_names_file": HOME,
    "node_running": LOCKED,
    "bad_key_file": KEY,
    "passphrase_needed": KEY,
    "wrong_passphrase": KEY,
    "bad_passphrase_file": KEY,
    "not_running": NOT_RUNNING,
}
"""The exit status of a failure by its string code; any other code exits ``FAILED``."""


def exit_status(code: str) -> int:
    return EXIT_OF_CODE.get(code, FAILED)
