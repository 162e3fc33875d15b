"""The control API server: JSON-RPC 2.0 over a Unix socket in the node's home.

The rules of this module (docs/api.md says the same for clients):

- Transport: an ``AF_UNIX`` stream socket at ``HOME/control.sock``, mode 0600 from the
  moment it exists (the umask is narrowed around ``bind``, then the mode is set again),
  so only the node's owner can talk to it. A socket file left by a killed node is
  replaced, but only after connecting to it has failed; a live one is never touched, and
  a file that is not a socket is refused. The file is removed when the server stops, if
  it is still the one this server bound.
- Framing: one JSON object per line (UTF-8, ending in ``\\n``), one response line per
  request, in order; a connection may carry any number of requests, one at a time.
  A request without ``"id"`` is a notification: it runs and gets no response. Batches
  (arrays) are refused.
- Limits: a request line over ``MAX_LINE`` bytes gets an error and the connection is
  closed; at most ``MAX_CONNECTIONS`` connections are served at once. When all are taken,
  a new one takes the slot of the connection that has waited longest for its next
  request (it is told ``evicted`` and closed), so idle connections can never keep a
  command from being answered; only when every connection is running a call is the new
  one told ``busy`` and closed. A connection that sends no complete request for
  ``IDLE_TIMEOUT`` seconds is closed, as is one that does not read its response within
  ``SEND_TIMEOUT``.
- Errors: JSON-RPC error objects whose ``data`` carries our string code:
  ``{"code": -32000, "message": "...", "data": {"code": "fork", "details": ...}}``.
  A method refuses by raising a ``CodedError`` (``ApiError``, ``ProtocolError``,
  ``StoreError``, ...); any other exception is a bug, logged with its traceback and
  answered -32603 ``internal error``. Nothing a client sends ends the server: only
  cancellation does.

Methods are those of a ``MethodTable`` (p2pnode/control/methods.py): the table checks
each request's params against the method's declaration before its handler runs.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
from pathlib import Path
from typing import Any

import trio

from protocol.errors import CodedError

from p2pnode.control.methods import MethodTable
from p2pnode.errors import BAD_PARAMS

log = logging.getLogger("p2pnode.control")

CONTROL_SOCKET = "control.sock"
MAX_LINE = 1 << 20  # bytes in one request line, without its newline
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 60.0  # seconds a connection may take to send its next complete request
SEND_TIMEOUT = 60.0  # seconds a client may take to read a response
MAX_UNIX_PATH = 107  # bytes in an AF_UNIX path on Linux (sun_path is 108, with its NUL)
_RECEIVE = 64 * 1024

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
APPLICATION_ERROR = -32000

class ControlSocketError(OSError):
    """The control socket cannot be set up; ``strerror`` says why and what to do."""


def socket_path(home_path: str | os.PathLike) -> Path:
    """Where the control socket of the node at ``home_path`` lives."""
    return Path(home_path) / CONTROL_SOCKET


async def serve_control(
    path: Path,
    methods: MethodTable,
    *,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``methods`` on a Unix socket at ``path`` until cancelled.

    Reports ``started(path)`` once the socket accepts connections. Raises
    ``ControlSocketError`` (an ``OSError``) if ``path`` is too long for a Unix socket, is
    served by a live process, or is not a socket. When it returns or raises, the socket
    file it bound is gone.
    """
    path = Path(path)
    n = len(os.fsencode(path))
    if n > MAX_UNIX_PATH:
        raise ControlSocketError(
            errno.ENAMETOOLONG,
            f"the control socket path {path} is {n} bytes; Unix sockets allow at most {MAX_UNIX_PATH}: "
            "use a home directory with a shorter path",
        )
    _clear_stale(path)
    raw = _bind(path)
    bound = os.stat(path)
    try:
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(raw))
        server = _Server(methods)
        async with listener, trio.open_nursery() as nursery:
            task_status.started(path)
            await server.accept_loop(listener, nursery)
    finally:
        raw.close()
        _remove_if_ours(path, bound)


def _clear_stale(path: Path) -> None:
    """Remove a socket file at ``path`` that nobody answers on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlSocketError(errno.EEXIST, f"{path} exists and is not a socket: move it away, then start again")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        # Nobody listens: a node was killed before it could remove its socket.
        path.unlink(missing_ok=True)
        log.info("removed the stale control socket %s", path)
        return
    except OSError as e:
        raise ControlSocketError(errno.EADDRINUSE, f"{path} exists and cannot be probed ({e}): is a node running?") from None
    finally:
        probe.close()
    raise ControlSocketError(
        errno.EADDRINUSE, f"another process is serving on {path}: is a node already running on this home?"
    )


def _bind(path: Path) -> socket.socket:
    """A listening socket bound at ``path``, whose file is never wider than 0600."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bind() creates the file with mode 0777 & ~umask: narrow the umask first so the
        # file is born 0600 (no window in which others could connect), then set the mode
        # explicitly for systems that ignore the umask for sockets. Plain socket, not
        # trio's: trio's bind may checkpoint, letting other tasks run under this umask.
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                path.unlink()
        except OSError:
            pass
        raise
    return sock


def _remove_if_ours(path: Path, bound: os.stat_result) -> None:
    try:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) == (bound.st_dev, bound.st_ino):
            path.unlink()
    except OSError:
        pass  # already gone, or replaced by someone else's: not ours to remove


def _error(rid: Any, code: int, message: str, our_code: str, details: Any = None) -> dict:
    data: dict[str, Any] = {"code": our_code}
    if details is not None:
        data["details"] = details
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message, "data": data}}


def _encode(response: dict) -> bytes:
    # ASCII escapes: a lone surrogate echoed from a request cannot break the encoding.
    return json.dumps(response, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


_TOO_LONG = object()


class _Conn:
    """One connection's standing for eviction: since when it waits for a request (None
    while a call runs) and the scope of that wait."""

    def __init__(self) -> None:
        self.idle_since: float | None = None
        self.wait: trio.CancelScope | None = None
        self.evicted = False


class _Server:
    def __init__(self, methods: MethodTable) -> None:
        self.methods = methods
        self.active = 0
        self.conns: set[_Conn] = set()

    def _evict_idlest(self) -> bool:
        """Close the connection that has waited longest for a request; False if every
        connection is running a call."""
        idle = [c for c in self.conns if c.idle_since is not None and c.wait is not None and not c.evicted]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.idle_since)
        victim.evicted = True
        victim.wait.cancel()
        return True

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                    log.warning("control socket cannot accept (%s); retrying", e)
                    await trio.sleep(0.1)
                    continue
                raise
            if self.active >= MAX_CONNECTIONS and not self._evict_idlest():
                await self._refuse_busy(stream)
                continue
            self.active += 1
            nursery.start_soon(self._connection, stream)

    async def _refuse_busy(self, stream: trio.SocketStream) -> None:
        # A small message on a fresh Unix socket fits its buffer: this cannot block for long.
        with trio.move_on_after(1):
            try:
                await stream.send_all(
                    _encode(_error(None, APPLICATION_ERROR, f"the node serves at most {MAX_CONNECTIONS} control connections at once; try again", "busy"))
                )
            except trio.BrokenResourceError:
                pass
        await trio.aclose_forcefully(stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = _Conn()
        self.conns.add(conn)
        try:
            async with stream:
                buf = bytearray()
                while True:
                    line: Any = None
                    with trio.move_on_after(IDLE_TIMEOUT) as idle:
                        conn.idle_since, conn.wait = trio.current_time(), idle
                        line = await _read_line(stream, buf)
                    conn.idle_since = conn.wait = None
                    if conn.evicted:
                        await self._send(stream, _error(None, APPLICATION_ERROR, "closed: this connection was the "
                                                        "longest idle and another needed its slot", "evicted"))
                        return
                    if idle.cancelled_caught or line is None:
                        return
                    if line is _TOO_LONG:
                        await self._send(
                            stream,
                            _error(None, INVALID_REQUEST, f"request line longer than {MAX_LINE} bytes; closing", "request_too_large"),
                        )
                        await _drain(stream)
                        return
                    response = await self._answer(line)
                    if response is not None and not await self._send(stream, response):
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        except Exception:  # a bug here must not end the server
            log.exception("control connection failed")
        finally:
            self.active -= 1
            self.conns.discard(conn)

    async def _send(self, stream: trio.SocketStream, response: dict) -> bool:
        try:
            data = _encode(response)
        except (TypeError, ValueError):
            log.exception("control method result is not JSON")
            data = _encode(_error(response.get("id"), INTERNAL_ERROR, "internal error", "internal"))
        with trio.move_on_after(SEND_TIMEOUT):
            await stream.send_all(data)
            return True
        return False

    async def _answer(self, line: bytes) -> dict | None:
        """The response to one request line, or None for a notification."""
        try:
            req = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            return _error(None, PARSE_ERROR, "parse error: the request is not UTF-8", "parse_error")
        except RecursionError:
            return _error(None, PARSE_ERROR, "parse error: JSON nests too deep", "parse_error")
        except ValueError as e:  # JSONDecodeError, and integers with too many digits
            return _error(None, PARSE_ERROR, f"parse error: {e}", "parse_error")
        try:  # JSON's \ud800 escapes make strings no UTF-8 text can hold: refuse them here, once
            json.dumps(req, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return _error(None, PARSE_ERROR, "parse error: a string holds a lone surrogate (\\ud800-\\udfff), "
                          "which is not text", "parse_error")
        if not isinstance(req, dict):
            what = "a batch (array)" if isinstance(req, list) else type(req).__name__
            return _error(None, INVALID_REQUEST, f"invalid request: expected one JSON object a line, got {what}", "invalid_request")
        rid = req.get("id")
        if not (rid is None or isinstance(rid, str) or (type(rid) is int)):
            return _error(None, INVALID_REQUEST, "invalid request: id must be a string, an integer or null", "invalid_request")
        if req.get("jsonrpc") != "2.0":
            return _error(rid, INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"', "invalid_request")
        method = req.get("method")
        if not isinstance(method, str):
            return _error(rid, INVALID_REQUEST, 'invalid request: "method" must be a string', "invalid_request")
        params = req.get("params", {})
        if isinstance(params, list):
            return _error(rid, INVALID_PARAMS, "invalid params: pass params by name (an object)", BAD_PARAMS)
        if not isinstance(params, dict):
            return _error(rid, INVALID_REQUEST, 'invalid request: "params" must be an object', "invalid_request")
        response = await self._call(rid, method, params)
        return response if "id" in req else None

    async def _call(self, rid: Any, method: str, params: dict) -> dict:
        if method not in self.methods.handlers:
            return _error(rid, METHOD_NOT_FOUND, f"unknown method {method!r}", "unknown_method", {"method": method})
        try:
            result = await self.methods.call(method, params)
        except CodedError as e:
            code = INVALID_PARAMS if e.code == BAD_PARAMS else APPLICATION_ERROR
            return _error(rid, code, e.message, e.code, e.details)
        except Exception:
            log.exception("control method %s failed", method)
            return _error(rid, INTERNAL_ERROR, "internal error", "internal")
        return {"jsonrpc": "2.0", "id": rid, "result": result}


async def _read_line(stream: trio.SocketStream, buf: bytearray) -> Any:
    """The next line of ``stream`` (without its newline), None at end of stream, or
    ``_TOO_LONG``. Bytes after the line stay in ``buf``."""
    scanned = 0
    while True:
        i = buf.find(b"\n", scanned)
        if i >= 0:
            if i > MAX_LINE:
                return _TOO_LONG
            line = bytes(buf[:i])
            del buf[: i + 1]
            return line
        if len(buf) > MAX_LINE:
            return _TOO_LONG
        scanned = len(buf)
        data = await stream.receive_some(_RECEIVE)
        if not data:
            if buf.strip():  # a last request without its newline: answer it all the same
                line = bytes(buf)
                buf.clear()
                return line
            return None
        buf += data


async def _drain(stream: trio.SocketStream) -> None:
    """Read and drop what the client is still sending (bounded in time), so that closing
    does not reset the connection before it has read our error."""
    with trio.move_on_after(1):
        try:
            while await stream.receive_some(_RECEIVE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
