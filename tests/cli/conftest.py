"""Fixtures of the CLI tests: a real node process on a fresh home, ended by its pid."""

from __future__ import annotations

import subprocess

import pytest

from p2ptest import COMMAND, Testnet, child_env, kill_by_pid, run_cli


@pytest.fixture
def node_process(node):
    """``node`` (an initialised home) with `p2pnode start` running on it, answering; the
    process is killed by its pid after the test. Yields (home, what `init --json` said)."""
    from p2pnode.testnet import free_port

    home, info = node
    proc = subprocess.Popen([*COMMAND, "--home", str(home), "start", "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        Testnet(home.parent).wait(lambda: proc.poll() is not None or run_cli("status", home=home)[0] == 0, 30,
                                  "the node to answer")
        assert proc.poll() is None, proc.stderr.read()
        yield home, info
    finally:
        kill_by_pid(proc)
        proc.stderr.close()
