"""A blocking client of the node's control API (docs/api.md): one JSON-RPC request a call.

Plain ``socket`` and ``json``: no trio, no libp2p, nothing slow to import, so that a
command that talks to a running node answers at once.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from protocol.errors import CodedError

CONTROL_SOCKET = "control.sock"  # the same name as p2pnode.control.CONTROL_SOCKET
_ids = itertools.count(1)


class NodeNotRunning(CodedError):
    """No node answers at the home: no socket file, or one nobody listens on."""

    code = "not_running"


class RpcError(CodedError):
    """The node answered with an error, or the exchange broke after connecting.

    ``code`` is our string code (``fork``, ``bad_params``, ``timeout``, ...), ``message``
    is for people, ``details`` is any JSON value or None, ``rpc_code`` the JSON-RPC code
    (None if the failure was local)."""

    def __init__(self, code: str, message: str, details: Any = None, rpc_code: int | None = None) -> None:
        super().__init__(message, code=code, details=details)
        self.rpc_code = rpc_code


def socket_path(home_path: str | os.PathLike) -> Path:
    return Path(home_path) / CONTROL_SOCKET


def _connect(home_path: str | os.PathLike, timeout: float) -> socket.socket:
    path = socket_path(home_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError) as e:
        sock.close()
        raise NodeNotRunning(f"no node answers on {path}") from e
    except OSError as e:
        sock.close()
        if e.errno in (errno.ENAMETOOLONG, errno.EINVAL) or "too long" in str(e):
            # No node can have bound a path this long (p2pnode.control refuses to).
            raise NodeNotRunning(f"{path} is too long for a Unix socket") from e
        if isinstance(e, TimeoutError):
            raise RpcError("timeout", f"the node at {home_path} did not accept a connection within {timeout:g} s") from None
        raise
    return sock


def node_running(home_path: str | os.PathLike) -> bool:
    """Whether a node accepts connections on the home's control socket."""
    try:
        _connect(home_path, 2.0).close()
    except NodeNotRunning:
        return False
    except (RpcError, OSError):
        return True  # something holds the socket, busy or not ours to use
    return True


_FAIL_AGAIN: dict[tuple[str, str], CodedError] = {}
"""Failures ``call`` gives again at once, each once: (socket path, method) -> the failure."""


def fail_again(home_path: str | os.PathLike, method: str, failure: CodedError) -> None:
    """Make the next ``call`` of ``method`` at ``home_path`` in this process raise
    ``failure`` at once instead of asking the node. For the fast path of ``status``
    (cli/nodeview.py), which leaves reporting a failed call to click: click calls again,
    and must not wait as long again for a node that did not answer in time."""
    _FAIL_AGAIN[(str(socket_path(home_path)), method)] = failure


def call(home_path: str | os.PathLike, method: str, params: dict | None = None, *, timeout: float = 30.0) -> Any:
    """The result of ``method(params)`` on the node at ``home_path``.

    Raises ``NodeNotRunning`` if no node listens there (then nothing was sent, so the
    caller may do the work itself), ``RpcError`` for the node's refusal, a timeout
    (``timeout`` seconds for the whole exchange) or a connection lost mid-way; or the
    failure given to ``fail_again`` for this call.
    """
    again = _FAIL_AGAIN.pop((str(socket_path(home_path)), method), None) if _FAIL_AGAIN else None
    if again is not None:
        raise again
    deadline = time.monotonic() + timeout
    rid = next(_ids)
    request = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}}, separators=(",", ":"))
    sock = _connect(home_path, timeout)
    try:
        try:
            sock.sendall(request.encode("utf-8") + b"\n")
            line = _read_line(sock, deadline)
        except TimeoutError:
            raise RpcError("timeout", f"the node at {home_path} did not answer {method} within {timeout:g} s") from None
        except OSError as e:
            raise RpcError("connection_lost", f"the connection to the node at {home_path} broke: {e.strerror or e}") from None
    finally:
        sock.close()
    if line is None:
        raise RpcError("connection_lost", f"the node at {home_path} closed the connection without answering {method}")
    try:
        response = json.loads(line)
    except ValueError as e:
        raise RpcError("bad_response", f"the node's answer to {method} is not JSON: {e}") from None
    if not isinstance(response, dict) or ("result" not in response and "error" not in response):
        raise RpcError("bad_response", f"the node's answer to {method} is not a JSON-RPC response")
    error = response.get("error")
    if error is not None:
        if not isinstance(error, dict):
            raise RpcError("bad_response", f"the node's error answer to {method} is malformed")
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        return _raise(error, data)
    if response.get("id") != rid:
        raise RpcError("bad_response", f"the node answered request {response.get('id')!r}, not {rid}")
    return response["result"]


def _raise(error: dict, data: dict) -> Any:
    code = data.get("code") if isinstance(data.get("code"), str) else f"rpc_{error.get('code')}"
    raise RpcError(code, str(error.get("message") or code), data.get("details"), error.get("code"))


def _read_line(sock: socket.socket, deadline: float) -> bytes | None:
    """Bytes up to the first newline, or None if the stream ended before one."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        data = sock.recv(1 << 16)
        if not data:
            return None
        i = data.find(b"\n")
        if i >= 0:
            chunks.append(data[:i])
            return b"".join(chunks)
        chunks.append(data)
