"""Fixtures of the CLI tests: a real node process on a fresh home, ended by its pid."""

from __future__ import annotations

import shutil

import pytest

from framework.process import NodeProcess, reap_later


@pytest.fixture
def node_process(node):
    """``node`` (an initialised home) with `p2pnode start` running on it, answering; the
    process is sent SIGTERM by its pid after the test, its exit (or SIGKILL) awaited in the
    background (``reap_later``). Yields (home, what `init --json` said)."""
    from p2pnode.testnet import free_port

    home, info = node
    proc = NodeProcess(home).start("--listen", f"/ip4/127.0.0.1/tcp/{free_port()}")
    try:
        yield home, info
    finally:
        proc.terminate()
        reap_later([proc])


@pytest.fixture(scope="module")
def idle_node_process(tmp_path_factory, node_template):
    """``node_process`` once for every test of a module that only reads an idle node (its
    status, `status --watch`): none of them changes what another sees, so they share one
    start. Yields (home, what `init --json` said)."""
    from p2pnode.testnet import free_port

    template, info = node_template
    home = tmp_path_factory.mktemp("idle") / "home"
    shutil.copytree(template, home)
    proc = NodeProcess(home).start("--listen", f"/ip4/127.0.0.1/tcp/{free_port()}")
    try:
        yield home, dict(info, home=str(home))
    finally:
        proc.terminate()
        reap_later([proc])
