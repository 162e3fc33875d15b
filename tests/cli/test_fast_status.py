"""`p2pnode status [--json]` answered without click (cli/entry.py) says what the click
command says: the same stdout, stderr and exit status, byte for byte, for every shape of
the command line the fast path takes, on a node that answers, one that refuses and none
at all; it imports neither click nor (for --json) rich, trio or libp2p; every other shape
goes to click. The click path is run as cli.main.main, the fast one as the console script
runs it (cli.entry.main); a node is a real one (node_process) or a stand-in socket that
gives a fixed answer, so that texts can be compared whole."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest

from cli import entry
from cli.output import echo
from protocol.keys import SigningKey

from framework.console import ROOT, TIMEOUT, child_env, kill_by_pid

CLICK_PATH = "import sys\nfrom cli.main import main\nmain()"
FAST_PATH = """
import atexit, json, os, sys
atexit.register(lambda: open(os.environ["ENTRY_TEST_MODULES"], "w").write(json.dumps(sorted(sys.modules))))
from cli.entry import main
main()
"""
"""The console script (cli.entry.main), writing the modules it imported to a file at exit."""

FAST_SHAPES = [
    (["--home", "{home}", "status"], {}),
    (["--home", "{home}", "status", "--json"], {}),
    (["--home={home}", "status"], {}),
    (["--home={home}", "status", "--json"], {}),
    (["status"], {"P2PNODE_HOME": "{home}"}),
    (["status", "--json"], {"P2PNODE_HOME": "{home}"}),
    (["--home", "{home}", "status", "--json"], {"P2PNODE_HOME": "{home}/elsewhere"}),  # --home wins
]
"""The command lines the fast path answers, with the environment beside them."""

FALLBACK_SHAPES = [
    ["status", "--help"], ["status", "-h"], ["--help"], ["--version"], ["status", "--watch"],
    ["status", "--watch", "--json"], ["status", "--timeout", "5"], ["status", "--bogus"], ["status", "extra"],
    ["status", "--json", "--json"], ["--json", "status"], ["status", "--home", "{home}"], ["--home"],
    ["--home", "status"], ["--home=", "status"], ["--home", "{home}", "--home", "{home}", "status"],
    ["--home", "-x", "status"], ["peers"], ["stat"], [],
]
"""Command lines click answers: help, other flags and arguments, a --home with no value or
twice, other commands. Given with --home first unless the shape is about --home."""

HEAVY = ("click", "rich", "trio", "libp2p")


def _shape_id(args: list[str]) -> str:
    return " ".join(args) or "(nothing)"


def _ids(n: int) -> list[str]:
    return [SigningKey.from_seed(bytes([i + 1]) * 32).peer_id for i in range(n)]


OWN, ALICE, BOB = _ids(3)

STATUS = {
    "peer_id": OWN, "public_key": "ab" * 32, "pid": 4242, "version": "0.1.0", "uptime_s": 3725.5,
    "listen": [f"/ip4/127.0.0.1/tcp/7420/p2p/{OWN}", f"/ip6/::1/tcp/7420/p2p/{OWN}"],
    "peers": [{"peer_id": ALICE, "addr": "/ip4/127.0.0.1/tcp/7421", "direction": "outbound"},
              {"peer_id": BOB, "addr": "/ip4/127.0.0.1/tcp/7422", "direction": "inbound"}],
    "heads": [{"author": OWN, "seq": 7, "id": "cd" * 32, "ts": 1_700_000_000_123, "forked": False},
              {"author": BOB, "seq": 3, "id": "ef" * 32, "ts": 1_700_000_100_456, "forked": True}],
    "forked": [BOB],
    "store": {"state": "failed", "error": "No space left on device", "failed_at_ms": 1_700_000_200_000,
              "path": "/x/store", "free_bytes": None, "reserve_own_bytes": 1 << 25, "reserve_others_bytes": 1 << 27},
    "own_chain": {"state": "checked", "held": True, "head_at_start": 5, "head": 7, "fetched": 2, "peers_asked": 2,
                  "wait_s": 10.0},
    "strangers": {"held": 1234, "budget": 5000},
    "sync": {"state": "syncing", "last_round_ms": 1_700_000_300_000, "entries_received": 99,
             "progress": {"fetched": 6000, "target": 10000, "rate_per_s": 1200.0, "eta_s": 3.3}},
    "extensions": [{"name": "lending", "version": "1", "source": "p2pnode"}], "extension_failures": [],
    "tasks": {"failures": 2, "by_task": {"sync": 2}, "restarts": 1,
              "last_failure": {"task": "sync", "error": "\x1b[31mboom\x1b[0m …", "at_ms": 1_700_000_000_000}},
    "counters": {"gossip.received": 12, "sync.rounds": 3},
}
"""A node's answer to node.status that every line of the text view shows something of
(a failed store, a fork, a pull under way, a failed task whose error holds style codes and
a character outside ASCII), names included (``NAMES``)."""

NAMES = f'[names]\nalice = "{ALICE}"\n'


class StandInNode:
    """A control socket at ``HOME/control.sock`` that answers each request (one a
    connection, as cli/rpc.py asks) with ``reply`` and the request's id: ``{"result": ...}``
    or ``{"error": ...}``; with ``reply`` None it never answers. Served by a thread, at
    most ``MAX_CONNECTIONS`` connections, until the block ends."""

    MAX_CONNECTIONS = 200

    def __init__(self, home: Path, reply: dict | None) -> None:
        self.home, self.reply = home, reply
        self.connected = threading.Event()
        self.connections = 0
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "StandInNode":
        self.home.mkdir(parents=True, exist_ok=True)
        self._sock.bind(str(self.home / "control.sock"))
        self._sock.listen(8)
        self._sock.settimeout(0.1)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sock.close()
        (self.home / "control.sock").unlink(missing_ok=True)

    def _serve(self) -> None:
        for _ in range(self.MAX_CONNECTIONS):
            conn = self._accept()
            if conn is None:
                return
            with conn:
                self.connections += 1
                self.connected.set()
                if self.reply is None:
                    self._stop.wait(TIMEOUT)
                    continue
                request = json.loads(self._read_line(conn))
                answer = {"jsonrpc": "2.0", "id": request["id"], **self.reply}
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def _accept(self) -> socket.socket | None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            conn.settimeout(TIMEOUT)
            return conn
        return None

    @staticmethod
    def _read_line(conn: socket.socket) -> bytes:
        data = b""
        while b"\n" not in data and len(data) < 1 << 20:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        return data.split(b"\n")[0]


def _fill(items: list[str], home: Path) -> list[str]:
    return [item.replace("{home}", str(home)) for item in items]


def run_path(code: str, args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[tuple[int, str, str], list]:
    """((exit status, stdout, stderr), the modules it imported or []) of ``python -c code
    ARGS`` run as the tests run the CLI (framework/console.py)."""
    modules = tmp_path / "modules.json"
    modules.unlink(missing_ok=True)
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=TIMEOUT,
                         cwd=ROOT, env=child_env({**env, "ENTRY_TEST_MODULES": str(modules)}))
    imported = json.loads(modules.read_text()) if modules.exists() else []
    return (out.returncode, out.stdout, out.stderr), imported


def both_paths(args: list[str], env: dict[str, str], tmp_path: Path) -> tuple[tuple, tuple, list]:
    """(what the fast path gave, what the click path gave, what the fast path imported)."""
    fast, imported = run_path(FAST_PATH, args, env, tmp_path)
    slow, _ = run_path(CLICK_PATH, args, env, tmp_path)
    return fast, slow, imported


def heavy(imported: list[str]) -> set[str]:
    return {m.split(".")[0] for m in imported} & set(HEAVY)


# -- the shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    (["status"], ("status", None, False)),
    (["status", "--json"], ("status", None, True)),
    (["--home", "/h", "status"], ("status", "/h", False)),
    (["--home", "/h", "status", "--json"], ("status", "/h", True)),
    (["--home=/h", "status", "--json"], ("status", "/h", True)),
    (["--home", "status", "status"], ("status", "status", False)),
], ids=lambda a: " ".join(a[0]))
def test_the_fast_shapes_are_taken(args):
    argv, shape = args
    assert entry.fast_command(argv) == shape


@pytest.mark.parametrize("args", FALLBACK_SHAPES, ids=_shape_id)
def test_every_other_shape_is_left_to_click(args):
    assert entry.fast_command(_fill(args, Path("/h"))) is None


def test_the_console_script_starts_at_the_entry():
    """pyproject's script is cli.entry:main, and so is the installed one (if this fails
    after a change of pyproject.toml, `make .venv/.installed` has not installed it again)."""
    from importlib.metadata import entry_points

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["p2pnode"]
    [installed] = entry_points(group="console_scripts", name="p2pnode")
    assert declared == installed.value == "cli.entry:main"
    assert "from cli.entry import main" in (ROOT / "cli" / "__main__.py").read_text()


# -- echo: click.echo's bytes without click ----------------------------------------------------


@pytest.mark.parametrize("text", ["", "plain", "styled \x1b[1;31mred\x1b[0m and … beyond ASCII", "\x1b]0;title\x07"])
@pytest.mark.parametrize("encoding", ["utf-8", "ascii", "latin-1"])
def test_echo_writes_what_click_echo_writes(monkeypatch, text, encoding):
    written = []
    for write in (echo, click.echo):
        raw = io.BytesIO()
        stream = io.TextIOWrapper(raw, encoding=encoding, errors="replace")
        monkeypatch.setattr(sys, "stdout", stream)
        write(text)
        monkeypatch.undo()
        written.append(raw.getvalue())
    assert written[0] == written[1]
    assert written[0].endswith(b"\n") and (encoding == "latin-1" or "…" not in text or b"\xe2\x80\xa6" in written[0])


def test_echo_to_a_stream_without_bytes_beneath(monkeypatch):
    for write in (echo, click.echo):
        monkeypatch.setattr(sys, "stdout", io.StringIO())
        write("a \x1b[1mbold\x1b[0m line")
        assert sys.stdout.getvalue() == "a bold line\n"
        monkeypatch.undo()


# -- the same answer both ways -----------------------------------------------------------------


@pytest.mark.parametrize("shape", FAST_SHAPES, ids=lambda s: " ".join(s[0]) + "".join(f" ({k})" for k in s[1]))
def test_the_fast_path_answers_as_click_does(tmp_path, shape):
    home = tmp_path / "home"
    args, env = shape
    with StandInNode(home, {"result": STATUS}):
        (home / "names.toml").write_text(NAMES)
        fast, slow, imported = both_paths(_fill(args, home), {k: v.replace("{home}", str(home))
                                                               for k, v in env.items()}, tmp_path)
    assert fast == slow
    assert fast[0] == 0 and fast[2] == ""
    if "--json" in args:
        assert json.loads(fast[1]) == STATUS
        assert heavy(imported) == set(), "status --json imported " + ", ".join(sorted(heavy(imported)))
    else:
        assert "FORKED      1 author(s) signed two histories: …" in fast[1] and "alice" in fast[1]
        assert "boom …" in fast[1] and "\x1b" not in fast[1]  # style codes stripped off a pipe
        assert heavy(imported) == {"rich"}  # the tables, and not click


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_refusal_of_the_node_is_reported_by_click(tmp_path, as_json):
    home = tmp_path / "home"
    refusal = {"error": {"code": -32000, "message": "the node is busy", "data": {"code": "busy", "details": [1]}}}
    with StandInNode(home, refusal):
        fast, slow, imported = both_paths(["--home", str(home), "status", *(["--json"] if as_json else [])], {},
                                          tmp_path)
    assert fast == slow
    assert fast[0] == 1 and fast[1] == "" and "the node is busy" in fast[2]
    assert "click" in heavy(imported)  # the fast path stood back


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_with_no_node_running_click_reports_it(tmp_path, as_json):
    home = tmp_path / "home"
    home.mkdir()
    fast, slow, imported = both_paths(["--home", str(home), "status", *(["--json"] if as_json else [])], {}, tmp_path)
    assert fast == slow
    rc, out, err = fast
    assert (rc, out) == (6, "")
    if as_json:
        assert json.loads(err)["error"]["code"] == "not_running"
    else:
        assert err.startswith(f"p2pnode: error: no node is running at {home} ")
    assert "click" in heavy(imported)


def test_a_bad_names_file_is_reported_by_click(tmp_path):
    home = tmp_path / "home"
    with StandInNode(home, {"result": STATUS}):
        (home / "names.toml").write_text("[names]\nalice = 3\n")
        fast, slow, imported = both_paths(["--home", str(home), "status"], {}, tmp_path)
    assert fast == slow
    assert fast[0] == 3 and "names.toml" in fast[2]
    assert "click" in heavy(imported)


@pytest.mark.parametrize("args", FALLBACK_SHAPES, ids=_shape_id)
def test_other_shapes_run_through_click(tmp_path, args):
    """Each with P2PNODE_HOME naming a node that answers, so that a command that runs does
    not fail for want of one (it is idle: --watch ends at once)."""
    home = tmp_path / "home"
    idle = dict(STATUS, sync={"state": "idle", "last_round_ms": None, "entries_received": 0, "progress": None},
                peers=[dict(p, connected_s=12.5, score=0, ping_ms=None) for p in STATUS["peers"]])
    with StandInNode(home, {"result": idle}):
        fast, slow, imported = both_paths(_fill(args, home), {"P2PNODE_HOME": str(home)}, tmp_path)
    assert fast == slow
    assert "Traceback" not in fast[2], fast[2]
    assert "click" in heavy(imported)


def _as_in_a_terminal() -> None:
    """SIGINT as a command in a terminal's foreground has it (its default action), whatever
    this test run inherited: a suite started in the background by a shell without job
    control has SIGINT ignored, every process under it too, and Python then leaves it
    ignored (seen once: both commands waited out their 30 s)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_waiting_for_the_node_ends_as_click_ends(tmp_path):
    """Ctrl-C before the node answers: click's standalone mode says "Aborted!", exit 1."""
    got = []
    for code in (FAST_PATH, CLICK_PATH):
        home = tmp_path / f"home{len(got)}"
        with StandInNode(home, None) as node:
            proc = subprocess.Popen([sys.executable, "-c", code, "--home", str(home), "status", "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                    env=child_env({"ENTRY_TEST_MODULES": str(tmp_path / "m.json")}),
                                    preexec_fn=_as_in_a_terminal)
            try:
                assert node.connected.wait(TIMEOUT), "the command never asked the node"
                time.sleep(0.2)  # (connected is set a moment before the client waits in recv)
                os.kill(proc.pid, signal.SIGINT)
                out, err = proc.communicate(timeout=TIMEOUT)
            finally:
                kill_by_pid(proc)
        got.append((proc.returncode, out, err))
    assert got[0] == got[1] == (1, "", "\nAborted!\n")


def test_a_call_that_timed_out_is_not_waited_for_again(tmp_path, monkeypatch):
    """The fast path gives up on a node that does not answer after the call's timeout;
    click, asking again to report it, gets the same failure at once, and only once."""
    from cli import rpc
    from cli.nodeview import quick_status

    home = tmp_path / "home"
    monkeypatch.setattr(rpc.call, "__kwdefaults__", {"timeout": 0.3})
    with StandInNode(home, None) as node:
        with pytest.raises(rpc.RpcError) as timed_out:
            quick_status(str(home), True)
        assert timed_out.value.code == "timeout"
        started = time.monotonic()
        with pytest.raises(rpc.RpcError) as again:
            rpc.call(home, "node.status", timeout=5.0)  # (a test that fails waits 5 s, not more)
        assert again.value is timed_out.value and time.monotonic() - started < 0.2
        assert node.connections == 1
        with pytest.raises(rpc.RpcError) as third:
            rpc.call(home, "node.status")  # asks the node (and waits) again
        assert third.value is not timed_out.value and third.value.code == "timeout"


def test_status_as_json_imports_no_click_rich_trio_nor_libp2p(tmp_path):
    """The fast path as `python -m cli` runs it, seen by -X importtime."""
    home = tmp_path / "home"
    with StandInNode(home, {"result": STATUS}):
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "cli", "--home", str(home), "status",
                              "--json"], capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT, env=child_env())
    assert out.returncode == 0 and json.loads(out.stdout) == STATUS
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", out.stderr, re.M)
    assert "cli.entry" in imported and "cli.nodeview" in imported  # importtime did list the imports
    assert heavy(imported) == set(), sorted(heavy(imported))


# -- a real node -------------------------------------------------------------------------------

VOLATILE = [re.compile(r"up [0-9hmd. ]+s\b"), re.compile(r"ok, [0-9,]+ MiB free"), re.compile(r'"uptime_s": [0-9.e+-]+'),
            re.compile(r'"free_bytes": [0-9]+')]
"""What changes between two calls a moment apart: the uptime and the disk's free space."""


def steady(text: str) -> str:
    for pattern in VOLATILE:
        text = pattern.sub("~", text)
    return text


def test_a_running_node_is_shown_the_same_both_ways(node_process, tmp_path):
    home, info = node_process
    for args in (["status", "--json"], ["status"], ["--home=" + str(home), "status"]):
        argv = args if args[0].startswith("--home=") else ["--home", str(home), *args]
        fast, slow, imported = both_paths(argv, {}, tmp_path)
        assert fast[0] == slow[0] == 0, (fast, slow)
        assert steady(fast[1]) == steady(slow[1]) and fast[2] == slow[2] == ""
        assert info["peer_id"] in fast[1]
        assert "click" not in heavy(imported)
