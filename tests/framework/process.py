"""One node as its own process (`p2pnode start`, which becomes ``python -m p2pnode`` in the
same process), known by its pid: started here or adopted from `p2pnode testnet up`.

Act on it through its control API (``call``) or through the CLI against its home
(``cli``, ``json``); read its ``status`` and ``heads``; end it with ``stop`` (SIGTERM,
then SIGKILL) or ``kill`` (SIGKILL, as ``kill -9``), always by its pid, and only while
that pid is still this home's node: a pid recorded earlier may have been reused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable

from cli.rpc import NodeNotRunning, RpcError, call
from framework.console import COMMAND, ROOT, TIMEOUT, child_env, run_cli
from framework.wait import WaitTimeout, wait_until
from p2pnode.home import Home
from p2pnode.testnet import LOG_FILE, pid_alive
from protocol.keys import peer_id

START_TIMEOUT = 30.0  # seconds a node may take to answer after it was started
STOP_TIMEOUT = 10.0  # seconds a node may take to exit after SIGTERM before it is SIGKILLed
LOG_TAIL = 20  # lines of its log a failure quotes


class NodeExited(RuntimeError):
    """The node's process ended when it should be running."""


class NodeProcess:
    """The node of ``home`` run as a process; ``pid`` is its process id while it runs
    (None once ``stop`` or ``kill`` has ended it)."""

    def __init__(self, home: Path | str, name: str | None = None, pid: int | None = None,
                 wrap: list[str] | None = None) -> None:
        self.home = Path(home).absolute()
        self.name = name or self.home.name
        self.pid = pid
        self.wrap = list(wrap or [])
        """A command prefix that ``start`` runs the node under and that execs it (its pid
        stays the node's): e.g. `nsenter` into a network namespace (netns.py)."""
        self._proc: subprocess.Popen | None = None  # set when this process is its parent

    def __repr__(self) -> str:
        return f"NodeProcess({self.name}, pid={self.pid})"

    @property
    def log(self) -> Path:
        """Where the node's stdout and stderr go (the same file `p2pnode testnet` uses)."""
        return self.home / LOG_FILE

    @cached_property
    def peer_id(self) -> str:
        return peer_id(Home(self.home).public_key())

    @cached_property
    def addr(self) -> str:
        """Its first IPv4 address as its config gives it (on 127.0.0.1, or its own in a
        network namespace), with ``/p2p/<peer ID>``."""
        listen = next(a for a in Home(self.home).config().listen if a.startswith("/ip4/"))
        return f"{listen}/p2p/{self.peer_id}"

    # -- life cycle ------------------------------------------------------------------------

    def start(self, *args: Any, timeout: float = START_TIMEOUT) -> "NodeProcess":
        """Run `p2pnode --home HOME start ARGS...` with its output appended to ``log``;
        return once it answers its control API. Fails naming the log if it exits first."""
        if self.running():
            raise RuntimeError(f"{self.name} is running already (pid {self.pid})")
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen([*self.wrap, *COMMAND, "--home", str(self.home), "start", *map(str, args)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env(), cwd=ROOT)
        self.pid = self._proc.pid
        try:
            wait_until(lambda: self.status() is not None, timeout, f"{self.name} to answer")
        except BaseException:
            self.stop()
            raise
        return self

    def running(self) -> bool:
        """Whether ``pid`` is alive and is this home's node (and not a reused pid)."""
        if self._proc is not None and self._proc.pid == self.pid:
            return self._proc.poll() is None  # (poll reaps it once it has exited)
        return pid_alive(self.pid) and _runs_home(self.pid, self.home)

    def stop(self, timeout: float = STOP_TIMEOUT) -> str:
        """SIGTERM by pid; SIGKILL if it has not exited within ``timeout`` s. How it ended:
        "terminated", "killed" or "not running"."""
        if not self.running():
            self.pid = None
            return "not running"
        self.terminate()
        return self.wait_exit(timeout)

    def wait_exit(self, timeout: float = STOP_TIMEOUT) -> str:
        """After ``terminate``: wait up to ``timeout`` s for it to exit, else SIGKILL it.
        "terminated" or "killed"."""
        try:
            wait_until(lambda: not self.running(), timeout, f"{self.name} to exit after SIGTERM")
        except WaitTimeout:
            self.kill()
            return "killed"
        self.pid = None
        return "terminated"

    def terminate(self) -> None:
        """Send SIGTERM by pid and return at once (``stop`` waits)."""
        if self.running():
            _signal(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL by pid (``kill -9``: no clean shutdown) and wait until it is gone, so that
        its LevelDB lock and port are free for a restart."""
        if self.running():
            _signal(self.pid, signal.SIGKILL)
            wait_until(lambda: not self.running(), STOP_TIMEOUT, f"{self.name} to die of SIGKILL")
        self.pid = None

    def exited(self) -> NodeExited:
        """The error for a node found gone, quoting the end of its log."""
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-LOG_TAIL:]
        except OSError:
            tail = []
        code = f" with status {self._proc.returncode}" if self._proc is not None and self._proc.poll() is not None else ""
        return NodeExited(f"{self.name} (pid {self.pid}) exited{code}; see {self.log}"
                          + "".join(f"\n  | {line}" for line in tail))

    # -- interfaces ------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, timeout: float = 30.0) -> Any:
        """What its control API answers to ``method`` (cli/rpc.py: raises ``RpcError``)."""
        return call(self.home, method, params, timeout=timeout)

    def status(self) -> dict | None:
        """``node.status``, or None while it does not answer; ``NodeExited`` if the process
        it was started as is gone."""
        try:
            return self.call("node.status", timeout=5.0)
        except (NodeNotRunning, RpcError, OSError):
            if self.pid and not self.running():
                raise self.exited() from None
            return None

    def heads(self) -> dict[str, tuple[int, str]]:
        """``{author peer ID: (seq, id hex)}`` of every chain it holds (``ledger.heads``)."""
        return {h["author"]: (h["seq"], h["id"]) for h in self.call("ledger.heads", timeout=10.0)["heads"]}

    def head(self, author: str) -> int:
        """The seq it holds of ``author``'s chain; 0 if none."""
        return self.heads().get(author, (0, ""))[0]

    def cli(self, *args: Any, ok: bool = True, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """`p2pnode --home HOME ARGS...` as a subprocess; with ``ok``, fail unless it exits 0."""
        rc, out, err = run_cli(*args, home=self.home, timeout=timeout)
        if ok:
            assert rc == 0, f"`p2pnode {' '.join(map(str, args))}` on {self.name} exited {rc}: {err}"
        return rc, out, err

    def json(self, *args: Any, timeout: float = TIMEOUT) -> Any:
        """What `p2pnode --home HOME ARGS... --json` prints, parsed; it must exit 0."""
        return json.loads(self.cli(*args, "--json", timeout=timeout)[1])


_REAPING: list[threading.Thread] = []
REAP_STEP = 0.05  # seconds between a reaper's looks at its nodes


def reap_later(nodes: Iterable[NodeProcess], timeout: float = STOP_TIMEOUT) -> None:
    """Wait in a thread of its own for ``nodes``, sent SIGTERM already (``terminate``), to
    exit, and SIGKILL any still running after ``timeout`` s, by pid, as ``stop`` does: for
    a teardown whose test is over, so that the next test's set-up runs while they close
    their hosts and stores. ``reap_all`` waits for every such thread."""
    reaper = threading.Thread(target=_reap, args=(list(nodes), timeout), name="reap", daemon=True)
    reaper.start()
    _REAPING.append(reaper)


def _reap(nodes: list[NodeProcess], timeout: float) -> None:
    """``wait_exit`` for all of ``nodes`` at once. On this module's own clock: the tests
    that run meanwhile may give ``framework.wait`` a fake one (tests/test_framework.py)."""
    if _gone(nodes, timeout):
        return
    for n in nodes:
        if n.running():  # still running after SIGTERM: kill -9, by pid, still checked to be the home's node
            _signal(n.pid, signal.SIGKILL)
    _gone(nodes, STOP_TIMEOUT)


def _gone(nodes: list[NodeProcess], timeout: float) -> bool:
    """Whether every one of ``nodes`` has exited within ``timeout`` s (bounded in polls too)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / REAP_STEP) + 1):
        if not any(n.running() for n in nodes):
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(REAP_STEP)
    return not any(n.running() for n in nodes)


def reap_all() -> None:
    """Return once every node handed to ``reap_later`` has exited or been SIGKILLed (each
    thread is bounded: ``timeout`` for the exit, then ``STOP_TIMEOUT`` for the kill)."""
    while _REAPING:
        _REAPING.pop().join()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _runs_home(pid: int, home: Path) -> bool:
    """Whether process ``pid`` is a node of ``home``: its command line says ``--home HOME``
    (both `p2pnode start` and the ``python -m p2pnode`` it becomes do)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    want = os.path.realpath(home)
    return any(a == b"--home" and os.path.realpath(os.fsdecode(b)) == want for a, b in zip(argv, argv[1:]))
