"""The real console script, run as a subprocess, as a person or a script runs it.

Every subprocess started here has a timeout and is ended by its pid if it outlives it.
The environment of a child is this process's minus every ``P2PNODE_*`` variable, so that
a developer's own node (``P2PNODE_HOME``, ``P2PNODE_PASSPHRASE``) never leaks into a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
"""The repository: the working directory of every child, so that ``-m cli`` finds it."""

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
    """Run ``p2pnode [--home HOME] ARGS...``; returns (returncode, stdout, stderr). A call
    that outlives ``timeout`` is killed and fails the test (an ``AssertionError``)."""
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
        raise AssertionError(f"`{' '.join(cmd)}` did not finish within {timeout:g} s") from None
    finally:
        kill_by_pid(proc)
    return proc.returncode, out, err
