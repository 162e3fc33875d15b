"""The control API on a real Unix socket over a real LevelDB store, with the real ledger
handlers: socket mode and life cycle, framing, limits and errors, the blocking client of
the CLI, and the CLI itself (as a subprocess) giving the same output with and without a
node. Every wait is bounded by ``trio.fail_after``."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import pytest
import trio

from cli import rpc
from p2pnode.clock import SYSTEM
from p2pnode.control import server as control
from p2pnode.control.core import CORE_METHODS
from p2pnode.control.methods import Method, MethodTable
from p2pnode.control.server import ControlSocketError, serve_control, socket_path
from p2pnode.errors import ApiError
from p2pnode.extensions import load
from p2pnode.home import Home, init_home
from p2pnode.keyfile import read_key
from p2pnode.ledger import writer
from p2pnode.ledger.handlers import ledger_handlers
from p2pnode.ledger.export import entry_json, export_lines
from protocol.keys import SigningKey, peer_id

from framework.console import run_cli

pytestmark = pytest.mark.trio

REGISTRY = load().registry
PASSPHRASE = b"correct horse"
WAIT = 5.0  # seconds any one wait of these tests may take


# -- fixtures and helpers -----------------------------------------------------------------


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket path has at most 107 bytes, and
    pytest's tmp_path grows with the test's name."""
    d = Path(tempfile.mkdtemp(prefix="p2pc-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def home_template(tmp_path_factory):
    """A home with a passphrase-sealed key (made once: the KDF is slow on purpose)."""
    path = tmp_path_factory.mktemp("control") / "home"
    init_home(path, registry=REGISTRY, name="ctl", passphrase=PASSPHRASE)
    return path


@pytest.fixture
def home(home_template, short_dir) -> Home:
    path = short_dir / "h"
    shutil.copytree(home_template, path)
    return Home(path)


def table(handlers: dict) -> MethodTable:
    """The core's declared methods with ``handlers`` bound; a name not declared (a test's
    own method) is declared here, without params."""
    t = MethodTable()
    t.declare_all(CORE_METHODS, "core")
    for name, fn in handlers.items():
        if t.get(name) is None:
            t.declare(Method(name, "a method of this test"), "test")
        t.bind(name, fn)
    return t


class _Writer(writer.Ledger):
    """The node's real writer, noting the reports its import hook is run with."""

    def __init__(self, *args: Any, ingested: list, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.ingested = ingested

    async def stored(self, report: Any, *, via: str) -> None:
        self.ingested.append(report)
        await super().stored(report, via=via)


class Ledger:
    """An open store of ``home`` with its key, the real ledger handlers, and what their
    hooks were called with."""

    def __init__(self, home: Home) -> None:
        self.home = home
        self.key = read_key(home.key_file, PASSPHRASE)
        self.store = home.open_store()
        self.appended: list[list] = []
        self.ingested: list[Any] = []
        self.writer = _Writer(self.store, self.key, REGISTRY, SYSTEM, count=lambda *a: None, ingested=self.ingested)
        self.writer.on_announce(self.appended.append)
        self.handlers = ledger_handlers(self.writer)
        self.methods = table(self.handlers)


@pytest.fixture
def ledger(home: Home):
    led = Ledger(home)
    yield led
    led.store.close()


@asynccontextmanager
async def serving(path: Path, methods: MethodTable) -> AsyncIterator[trio.Nursery]:
    """The control server on ``path`` for the duration of the block."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await nursery.start(serve_control, path, methods)
        yield nursery
        nursery.cancel_scope.cancel()


class Client:
    """A raw connection: send bytes, read response lines."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def open(cls, path: Path) -> "Client":
        return cls(await trio.open_unix_socket(str(path)))

    async def line(self) -> bytes | None:
        with trio.fail_after(WAIT):
            while b"\n" not in self.buf:
                data = await self.stream.receive_some(1 << 16)
                if not data:
                    return None
                self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    async def send(self, raw: bytes) -> None:
        with trio.fail_after(WAIT):
            await self.stream.send_all(raw)

    async def ask(self, raw: bytes) -> dict:
        await self.send(raw)
        line = await self.line()
        assert line is not None, "the server closed the connection"
        return json.loads(line)

    async def call(self, method: str, params: Any = None, rid: Any = 1) -> dict:
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        return await self.ask(json.dumps(req).encode() + b"\n")

    async def aclose(self) -> None:
        await self.stream.aclose()


def error_of(response: dict) -> tuple[int, str]:
    assert set(response) == {"jsonrpc", "id", "error"}, response
    err = response["error"]
    assert isinstance(err["message"], str) and err["message"]
    return err["code"], err["data"]["code"]


async def in_thread(fn, *args, **kw):
    return await trio.to_thread.run_sync(lambda: fn(*args, **kw))


# -- the socket ---------------------------------------------------------------------------


async def test_socket_is_0600_from_birth_and_removed_on_stop(ledger):
    path = socket_path(ledger.home.path)
    umask = os.umask(0o022)
    try:
        async with serving(path, ledger.methods):
            assert stat.S_ISSOCK(path.lstat().st_mode)
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
            assert os.umask(0o022) == 0o022  # the process umask was restored after bind
            c = await Client.open(path)
            assert (await c.call("ledger.kinds"))["result"]["kinds"]
            await c.aclose()
    finally:
        os.umask(umask)
    assert not path.exists()


async def test_a_stale_socket_is_replaced_and_a_live_one_is_not(ledger):
    path = socket_path(ledger.home.path)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # as a killed node leaves it: the file, and nobody listening
    stale.close()
    assert stat.S_ISSOCK(path.lstat().st_mode)
    async with serving(path, ledger.methods):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(ControlSocketError) as e:
            await serve_control(path, {})
        assert e.value.errno == errno.EADDRINUSE and "already running" in e.value.strerror
        assert await in_thread(rpc.node_running, ledger.home.path)  # the live one still answers
    assert not path.exists()


async def test_a_file_that_is_not_a_socket_is_left_alone(ledger):
    path = socket_path(ledger.home.path)
    path.write_text("mine")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await serve_control(path, {})
    assert path.read_text() == "mine"


async def test_a_path_too_long_for_a_unix_socket_is_refused_clearly(short_dir):
    path = short_dir / ("d" * 100) / "control.sock"
    with pytest.raises(ControlSocketError) as e:
        await serve_control(path, {})
    assert e.value.errno == errno.ENAMETOOLONG and "107" in e.value.strerror
    assert not rpc.node_running(path.parent)  # the client sees no node there either


# -- framing and errors -------------------------------------------------------------------


async def test_malformed_requests_get_the_right_error_and_the_server_keeps_answering(ledger, caplog):
    path = socket_path(ledger.home.path)

    async def boom() -> None:
        raise RuntimeError("a bug")

    async def refuse() -> None:
        raise ApiError("no way", code="nope", details={"why": [1, 2]})

    methods = table({**ledger.handlers, "test.boom": boom, "test.refuse": refuse})
    async with serving(path, methods):
        c = await Client.open(path)
        cases = [
            (b"{not json\n", -32700, "parse_error"),
            (b"\xff\xfe\n", -32700, "parse_error"),
            (b"[" * 100_000 + b"\n", -32700, "parse_error"),
            (b"[1, 2]\n", -32600, "invalid_request"),
            (b'"a string"\n', -32600, "invalid_request"),
            (b'{"jsonrpc": "2.0", "id": 1}\n', -32600, "invalid_request"),
            (b'{"jsonrpc": "1.0", "id": 1, "method": "ledger.kinds"}\n', -32600, "invalid_request"),
            (b'{"jsonrpc": "2.0", "id": 1.5, "method": "ledger.kinds"}\n', -32600, "invalid_request"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.kinds", "params": 3}\n', -32600, "invalid_request"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "no.such"}\n', -32601, "unknown_method"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.show", "params": [1]}\n', -32602, "bad_params"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.show", "params": {"limit": "x"}}\n', -32602, "bad_params"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.show", "params": {"author": "nope"}}\n', -32602, "bad_params"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.append", "params": {"kind": "note"}}\n', -32602, "bad_params"),
            (b'{"jsonrpc": "2.0", "id": 1, "method": "test.boom"}\n', -32603, "internal"),
            # a lone surrogate (issue 9: `loan dispute` with one was an internal error)
            (b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.append", "params": {"kind": "note", '
             b'"body": {"text": "\\ud800"}}}\n', -32700, "parse_error"),
        ]
        for raw, code, ours in cases:
            assert error_of(await c.ask(raw)) == (code, ours), raw[:60]
        refused = await c.call("test.refuse", rid="r")
        assert refused["id"] == "r" and refused["error"]["data"] == {"code": "nope", "details": {"why": [1, 2]}}
        assert refused["error"]["code"] == -32000 and refused["error"]["message"] == "no way"
        assert "a bug" in caplog.text and "Traceback" in caplog.text  # a bug is logged in full
        # A float in a body is refused as an application error, as the CLI refuses it.
        assert error_of(await c.call("ledger.append", {"kind": "note", "body": {"text": "x", "n": 1.5}})) == (-32000, "unencodable")
        # A notification (no id) gets no response: the next line answered is the next request.
        await c.send(b'{"jsonrpc": "2.0", "method": "ledger.kinds"}\n')
        answer = await c.call("ledger.heads", rid=7)
        assert answer["id"] == 7 and len(answer["result"]["heads"]) == 1
        # Several requests in one write are answered in order.
        await c.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "ledger.kinds"}).encode() + b"\n" for i in range(5)))
        assert [json.loads(await c.line())["id"] for _ in range(5)] == list(range(5))
        await c.aclose()


async def test_a_line_over_1_mib_is_refused_and_its_connection_closed(ledger):
    path = socket_path(ledger.home.path)
    async with serving(path, ledger.methods):
        head = b'{"jsonrpc": "2.0", "id": 1, "method": "ledger.kinds"'
        exact = head + b" " * (control.MAX_LINE - len(head) - 1) + b"}"
        assert len(exact) == control.MAX_LINE
        c = await Client.open(path)
        assert "result" in await c.ask(exact + b"\n")  # at the limit: served

        big = b'{"jsonrpc": "2.0", "id": 2, "method": "ledger.kinds", "pad": "' + b"x" * control.MAX_LINE + b'"}\n'
        assert error_of(await c.ask(big)) == (-32600, "request_too_large")
        assert await c.line() is None  # closed
        await c.aclose()
        c = await Client.open(path)  # and the server still serves
        assert "result" in await c.call("ledger.kinds")
        await c.aclose()


async def test_connections_are_bounded_and_idle_ones_never_keep_a_command_waiting(ledger):
    """Issue 9: 64 idle connections made every CLI call answer ``busy`` for a minute.
    When all slots are taken, a new connection takes the slot of the longest idle one;
    only connections that are running a call make a newcomer ``busy``."""
    path = socket_path(ledger.home.path)
    release = trio.Event()

    async def slow() -> dict:
        await release.wait()
        return {}

    methods = table({**ledger.handlers, "test.slow": slow})
    async with serving(path, methods):
        clients = []
        for i in range(control.MAX_CONNECTIONS):
            c = await Client.open(path)
            assert "result" in await c.call("ledger.kinds", rid=i)  # accepted and served, then idle
            clients.append(c)
        for _ in range(3):  # an attacker that keeps opening idle connections gains nothing
            owner = await Client.open(path)
            assert "result" in await owner.call("ledger.heads")
            clients.append(owner)
        evicted = clients[:3]  # the three that waited longest, told why and closed
        for c in evicted:
            assert error_of(json.loads(await c.line())) == (-32000, "evicted")
            assert await c.line() is None
            await c.aclose()
        clients = clients[3:]
        # every slot running a call: then, and only then, a newcomer is told busy
        for c in clients:
            await c.send(b'{"jsonrpc": "2.0", "id": 1, "method": "test.slow"}\n')
        await trio.sleep(0.2)
        extra = await Client.open(path)
        assert error_of(json.loads(await extra.line())) == (-32000, "busy")
        assert await extra.line() is None
        await extra.aclose()
        release.set()
        for c in clients:
            assert "result" in json.loads(await c.line())

        await clients.pop().aclose()
        with trio.fail_after(WAIT):
            for _ in range(100):  # the server notices the close on its next read
                c = await Client.open(path)
                try:
                    first = await c.call("ledger.kinds")
                except (trio.BrokenResourceError, AssertionError):
                    first = {}  # told busy and closed before our request went out
                if "result" in first:
                    clients.append(c)
                    break
                await c.aclose()
                await trio.sleep(0.02)
            else:
                pytest.fail("no slot was freed")
        for c in clients:
            await c.aclose()


async def test_an_idle_connection_is_closed(ledger, monkeypatch):
    monkeypatch.setattr(control, "IDLE_TIMEOUT", 0.2)
    path = socket_path(ledger.home.path)
    async with serving(path, ledger.methods):
        c = await Client.open(path)
        assert "result" in await c.call("ledger.kinds")
        await c.send(b'{"jsonrpc": "2.0", "id": 2, "met')  # a request never finished
        t0 = trio.current_time()
        assert await c.line() is None
        assert 0.15 < trio.current_time() - t0 < WAIT
        await c.aclose()


# -- the ledger methods, through the CLI's client -------------------------------------------


async def test_the_cli_client_against_the_ledger_methods(ledger):
    home = ledger.home.path
    path = socket_path(home)
    assert not await in_thread(rpc.node_running, home)
    with pytest.raises(rpc.NodeNotRunning):
        await in_thread(rpc.call, home, "ledger.heads")
    async with serving(path, ledger.methods):
        assert await in_thread(rpc.node_running, home)
        body = {"raw": {"$bin": "00ff"}, "n": 2**64 - 1}
        view = await in_thread(rpc.call, home, "ledger.append", {"kind": "x.custom", "body": body})
        assert (view["seq"], view["body"]) == (2, body)
        assert [[e.id.hex() for e in batch] for batch in ledger.appended] == [[view["id"]]]
        shown = await in_thread(rpc.call, home, "ledger.show", {"from": 2})
        assert shown["entries"] == [dict(view, known_kind=False, kind_status="unknown")] and shown["head_seq"] == 2

        with pytest.raises(rpc.RpcError) as e:
            await in_thread(rpc.call, home, "ledger.append", {"kind": "note", "body": {"txt": "no text"}})
        assert e.value.code == "bad_body" and "entry refused" in e.value.message and e.value.rpc_code == -32000
        with pytest.raises(rpc.RpcError) as e:
            await in_thread(rpc.call, home, "ledger.frobnicate")
        assert e.value.code == "unknown_method" and e.value.rpc_code == -32601

        # An import of another author's chain: stored, and the node hook sees what was added.
        other = SigningKey.from_seed(b"\x07" * 32)
        from protocol.entry import ZERO_ID, make_entry
        from protocol.kinds import genesis_body

        g = make_entry(other, seq=1, prev=ZERO_ID, ts=1_700_000_000_000, kind="genesis", body=genesis_body("o"))
        n2 = make_entry(other, seq=2, prev=g.id, ts=1_700_000_000_001, kind="note", body={"text": "a"})
        lines = [json.dumps(entry_json(g)), json.dumps(entry_json(n2))]
        assert await in_thread(rpc.call, home, "ledger.import", {"lines": lines}) == {"added": 2, "duplicates": 0, "lines": 2}
        [report] = ledger.ingested
        assert [e.id for e in report.added] == [g.id, n2.id] and not report.forks
        # A fork: refused with its details, nothing stored, the proof recorded and handed on.
        fork2 = make_entry(other, seq=2, prev=g.id, ts=1_700_000_000_002, kind="note", body={"text": "b"})
        with pytest.raises(rpc.RpcError) as e:
            await in_thread(rpc.call, home, "ledger.import", {"lines": [json.dumps(entry_json(fork2))]})
        assert e.value.code == "fork" and e.value.details[0]["seq"] == 2
        assert not ledger.ingested[-1].added and len(ledger.ingested[-1].forks) == 1
        with pytest.raises(rpc.RpcError) as e:
            await in_thread(rpc.call, home, "ledger.import", {"path": "relative.jsonl"})
        assert e.value.code == "bad_params"

        # Export pages, cursor by cursor, give exactly what an export file holds.
        got, params = [], {"limit": 2}
        with trio.fail_after(WAIT):
            for _ in range(10):
                page = await in_thread(rpc.call, home, "ledger.export", params)
                got += page["lines"]
                if page["next"] is None:
                    break
                params = {"limit": 2, "cursor": page["next"]}
        assert page["authors"] == 2
        assert got == list(export_lines(ledger.store, sorted(ledger.store.heads())))
        # A cursor past any sequence number, or not a number: refused by name, not a traceback.
        for seq in (2**63, 10**400, 0, True, "1"):
            with pytest.raises(rpc.RpcError) as e:
                await in_thread(rpc.call, home, "ledger.export", {"cursor": {"author": peer_id(other.public_key), "seq": seq}})
            assert e.value.code == "bad_params" and "cursor" in e.value.message
        verified = await in_thread(rpc.call, home, "ledger.verify")
        assert verified["ok"] and verified["entries"] == 4 and verified["fork_proofs"] == 1
    with pytest.raises(rpc.NodeNotRunning):
        await in_thread(rpc.call, home, "ledger.heads")


# -- the CLI, with and without a node ------------------------------------------------------


def cli(*args, home: Path) -> tuple[int, str, str]:
    return run_cli(*args, home=home, timeout=30)


async def test_ledger_commands_print_the_same_with_and_without_a_node(ledger):
    home = ledger.home.path
    shows = [("ledger", "show"), ("ledger", "show", "--json"), ("ledger", "heads", "--json"), ("ledger", "verify", "--json"),
             ("ledger", "kinds", "--json")]
    async with serving(socket_path(home), ledger.methods):
        # No passphrase given: the node signs with the key it holds.
        rc, out, err = await in_thread(cli, "ledger", "append", "--kind", "note", "--body", '{"text": "via the node"}', "--json", home=home)
        assert rc == 0, err
        view = json.loads(out)
        assert view["seq"] == 2 and ledger.appended
        rc, out, err = await in_thread(cli, "ledger", "append", "--kind", "note", "--body", '{"txt": "x"}', "--json", home=home)
        assert rc == 1 and json.loads(err)["error"]["code"] == "bad_body" and "lacks field 'text'" in err
        rc, out, err = await in_thread(cli, "ledger", "append", "--kind", "note", "--body", '{"text": 1.5}', home=home)
        assert rc == 1 and "--body refused" in err
        via_node = [await in_thread(cli, *args, home=home) for args in shows]
    ledger.store.close()
    offline = [cli(*args, home=home) for args in shows]
    assert all(rc == 0 for rc, _, _ in via_node), via_node
    assert via_node == offline
    assert "via the node" in via_node[0][1]


async def test_a_locked_store_with_no_node_answering_exits_4(ledger):
    rc, out, err = cli("ledger", "heads", home=ledger.home.path)
    assert rc == 4 and out == ""
    assert "in use" in err and "no node answers" in err and "control.sock" in err


async def test_node_commands_without_a_node_exit_6(home):
    for args in [("status",), ("peers",), ("connect", "/ip4/127.0.0.1/tcp/1/p2p/x"), ("stop",)]:
        rc, out, err = cli(*args, home=home.path)
        assert rc == 6 and out == "", args
        assert f"no node is running at {home.path}" in err and "start" in err
        rc, out, err = cli(*args, "--json", home=home.path)
        assert rc == 6 and json.loads(err)["error"]["code"] == "not_running"


async def test_status_peers_connect_and_stop_against_a_served_api(ledger):
    """The node's own methods are the node's to test; here fixed answers of the documented
    shapes check that the CLI renders them, and that `stop` waits for the socket and pid."""
    home = ledger.home.path
    pid = "12D3KooWJvSiF1UptAPforjwh9Jb8mSxRZaxCAZoqdKBa7nyt4pY"
    child = await trio.lowlevel.open_process(["sleep", "30"])  # stands in for the node process
    peer = {"peer_id": pid, "addr": "/ip4/127.0.0.1/tcp/4001", "direction": "out"}
    status = {
        "peer_id": ledger.key.peer_id, "public_key": ledger.key.public_key.hex(), "pid": child.pid, "version": "0.1.0",
        "uptime_s": 3725.5, "listen": [f"/ip4/127.0.0.1/tcp/7420/p2p/{ledger.key.peer_id}"], "peers": [peer],
        "heads": [{"author": ledger.key.peer_id, "seq": 1, "id": "ab" * 32, "ts": 1_700_000_000_000, "forked": False}],
        "forked": [], "sync": {"state": "idle", "last_round_ms": 1_700_000_000_000, "entries_received": 12},
        "counters": {"entries.added": 12},
    }
    async with trio.open_nursery() as outer:
        server = trio.CancelScope()

        async def stop() -> dict:
            async def later() -> None:  # answer first, then go, as the node does
                await trio.sleep(0.05)
                server.cancel()
                await trio.sleep(0.2)
                child.kill()

            outer.start_soon(later)
            return {"stopping": True}

        async def connect(addr: str) -> dict:
            if not addr.endswith("/p2p/" + pid):
                raise ApiError("a peer address ends in /p2p/<peer id>", code="bad_address")
            return {"peer_id": pid, "connected": True}

        methods = table({
            **ledger.handlers,
            "node.status": lambda: _value(status),
            "node.peers": lambda: _value({"peers": [dict(peer, connected_s=12.5, score=3)]}),
            "node.connect": connect,
            "node.stop": stop,
        })

        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with server:
                await serve_control(socket_path(home), methods, task_status=task_status)

        with trio.fail_after(WAIT):
            await outer.start(serve)
        rc, out, err = await in_thread(cli, "status", home=home)
        assert rc == 0, err
        for text in (ledger.key.peer_id, "up 1h 02m 05s", "/tcp/7420/p2p/", "12 entries received", pid, "own", "entries.added"):
            assert text in out, text
        rc, out, err = await in_thread(cli, "status", "--json", home=home)
        assert json.loads(out) == status
        rc, out, err = await in_thread(cli, "peers", home=home)
        assert rc == 0 and pid in out and "12.5s" in out and "out" in out
        rc, out, err = await in_thread(cli, "connect", f"/ip4/127.0.0.1/tcp/4001/p2p/{pid}", "--json", home=home)
        assert rc == 0 and json.loads(out) == {"peer_id": pid, "connected": True}
        rc, out, err = await in_thread(cli, "connect", "/ip4/127.0.0.1/tcp/4001", home=home)
        assert rc == 2 and "ends in /p2p/" in err
        rc, out, err = await in_thread(cli, "stop", "--json", "--timeout", "5", home=home)
        assert rc == 0, err
        done = json.loads(out)
        assert done["stopped"] is True and done["pid"] == child.pid and 0.2 <= done["waited_s"] < 5
    with trio.fail_after(WAIT):
        await child.wait()
    assert not socket_path(home).exists()


async def _value(v: Any) -> Any:
    return v
