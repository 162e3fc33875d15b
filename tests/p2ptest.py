"""Helpers for tests of the node and the CLI: run the real console script as a subprocess.

Every subprocess started here has a timeout and is ended by its pid if it outlives it.
The environment of a child is this process's minus every ``P2PNODE_*`` variable, so that
a developer's own node (``P2PNODE_HOME``, ``P2PNODE_PASSPHRASE``) never leaks into a test.
(A module of its own, not conftest.py, so that tests can import it by a unique name.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
_SCRIPT = Path(sys.executable).with_name("p2pnode")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "cli"]
"""How to start the CLI: the console script next to this interpreter, else ``-m cli``."""

TIMEOUT = 60.0
"""Seconds any one CLI call may take before it is killed and the test fails."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("P2PNODE_")}
    env.update(extra or {})
    return env


def kill_by_pid(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` (by its pid) if it is still running, and reap it."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed child always dies
        pass


def run_cli(
    *args: Any,
    home: Path | str | None = None,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = TIMEOUT,
) -> tuple[int, str, str]:
    """Run ``p2pnode [--home HOME] ARGS...``; returns (returncode, stdout, stderr)."""
    cmd = list(COMMAND)
    if home is not None:
        cmd += ["--home", str(home)]
    cmd += [str(a) for a in args]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(env),
        cwd=ROOT,
    )
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_by_pid(proc)
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {timeout} s")
    finally:
        kill_by_pid(proc)
    return proc.returncode, out, err


class Testnet:
    """A test network in ``dir``, used only through the CLI."""

    __test__ = False  # a helper, not a test class

    def __init__(self, dir: Path) -> None:
        self.dir = dir

    def home(self, k: int) -> Path:
        return self.dir / f"node{k}"

    def cli(self, k: int | None, *args, ok: bool = True, timeout: float = 60) -> tuple[int, str, str]:
        rc, out, err = run_cli(*args, home=self.home(k) if k else None, timeout=timeout)
        if ok:
            assert rc == 0, f"`p2pnode {' '.join(map(str, args))}` on node{k} exited {rc}: {err}"
        return rc, out, err

    def json(self, k: int | None, *args) -> dict | list:
        return json.loads(self.cli(k, *args, "--json")[1])

    def up(self, n: int) -> dict:
        return self.json(None, "testnet", "up", "--nodes", n, "--dir", self.dir, "--timeout", 60)

    def pids(self) -> dict[str, int]:
        try:
            state = json.loads((self.dir / "testnet.json").read_text())
        except FileNotFoundError:
            return {}
        return {m["name"]: m["pid"] for m in state["nodes"] if m["pid"]}

    def head(self, k: int, author: str) -> int:
        st = self.json(k, "status")
        return next((h["seq"] for h in st["heads"] if h["author"] == author), 0)

    def wait(self, predicate, timeout: float, what: str, step: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(step)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")

    def kill_all(self) -> None:
        for pid in self.pids().values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
