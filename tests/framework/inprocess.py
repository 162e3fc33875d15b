"""Nodes in this process: real libp2p hosts on 127.0.0.1 and real LevelDB homes, each run
in the test's trio nursery. Start them, act through their API (``await node.call(...)``)
or their services, and ``sync_all`` until they agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from framework.wait import wait_for
from p2pnode.clock import SYSTEM, Clock
from p2pnode.extensions import load, settings_of
from p2pnode.home import init_home
from p2pnode.node import Node, NodeSettings

LOADED = load()  # the core and every installed extension: lending, found by its entry point
REGISTRY = LOADED.registry
LOCAL = "/ip4/127.0.0.1/tcp/0"
LENDING = ("review",)
POLICY = ("lpr", "apr_cap", "min_grade", "max_term")
CREDIT = ("grade_scores", "min_rates", "amount_factors", "trust_floor")
AUTOINVEST = ("enabled", "budget", "per_loan", "max_share", "lowest_grade", "grade_mix", "longest_term")
START_TIMEOUT = 20.0  # seconds a node may take to listen and answer


def make_node(path: Path, name: str, *, clock: Clock = SYSTEM, loans: dict | None = None,
              policy: str = "permissive", **settings: Any) -> Node:
    """A node (not started) on a new home at ``path``; ``review`` is lending's setting,
    ``policy`` the preset in force (``permissive`` unless the test is about policy) and
    ``lpr``, ``apr_cap`` (e.g. "10%"), ``min_grade``, ``max_term`` its overrides,
    ``grade_scores``, ``min_rates``, ``amount_factors`` its ``[credit]`` mapping; the rest
    ``NodeSettings``; ``loans``: a ``[loans]`` config section as a user may have written
    it, read before those."""
    home, _ = init_home(path, registry=REGISTRY, name=name)
    section = {**(loans or {}), **{k: settings.pop(k) for k in LENDING if k in settings}}
    others = {"policy": {"preset": policy, **{k: settings.pop(k) for k in POLICY if k in settings}},
              "credit": {k: settings.pop(k) for k in CREDIT if k in settings},
              "autoinvest": {k: settings.pop(k) for k in AUTOINVEST if k in settings}}
    lending = settings_of(LOADED.get("lending"), section, where=name, others=others)
    return Node(home, home.signing_key(None), NodeSettings(listen=[LOCAL], extensions={"lending": lending}, **settings),
                LOADED, clock)


def lending(node: Node) -> Any:
    """The lending service of a running node (p2pnode/lending/service.py)."""
    return node.services["lending"]


async def start(nursery: trio.Nursery, node: Node) -> Node:
    """Run ``node`` in ``nursery``; returns once it listens and answers its API."""
    with trio.fail_after(START_TIMEOUT):
        await nursery.start(node.run)
    return node


async def start_line(nursery: trio.Nursery, tmp: Path, n: int, **settings: Any) -> list[Node]:
    """``n`` nodes, node i connected to node i-1 only (with pex off, it stays a line)."""
    nodes = []
    for i in range(n):
        node = await start(nursery, make_node(tmp / f"n{i}", f"n{i}", **settings))
        if nodes:
            await node.connect(nodes[-1].listen_addrs()[0])
        nodes.append(node)
    await wait_for(lambda: all(len(x.connected) == (1 if i in (0, n - 1) else 2) for i, x in enumerate(nodes)), 10, "line")
    return nodes


async def start_mesh(nursery: trio.Nursery, tmp: Path, n: int, **settings: Any) -> list[Node]:
    """``n`` nodes with pex off, each connected to every other, holding the same chains."""
    nodes = [await start(nursery, make_node(tmp / f"n{i}", f"n{i}", pex=False, **settings)) for i in range(n)]
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            await b.connect(a.listen_addrs()[0])
    await wait_for(lambda: all(len(x.connected) == n - 1 for x in nodes), 10, "a full mesh")
    await sync_all(nodes)
    return nodes


def heads_of(node: Node) -> dict:
    """``{author: (seq, id)}`` of every chain ``node`` holds, read from its store."""
    return {a: (h.seq, h.id) for a, h in node.store.heads().items()}


async def sync_all(nodes: list[Node], timeout: float = 20.0) -> None:
    """Wait until every node holds the same heads (and hence, by the chain rules, the same
    entries)."""
    await wait_for(lambda: all(heads_of(x) == heads_of(nodes[0]) for x in nodes), timeout, "nodes to agree")


async def stop_all(nodes: list[Node]) -> None:
    """Ask every node to stop; each leaves the nursery once it has closed its host and store."""
    for node in nodes:
        node.stop()


async def start_watched(nursery: trio.Nursery, node: Node) -> tuple[Node, trio.Event]:
    """``start`` ``node``; also an event set once its ``run`` has returned (its store closed),
    for a test that stops a node and runs it ``again``."""
    ended = trio.Event()

    async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            await node.run(task_status=task_status)
        finally:
            ended.set()

    with trio.fail_after(START_TIMEOUT):
        await nursery.start(serve)
    return node, ended


async def stop_watched(node: Node, ended: trio.Event) -> None:
    """Stop ``node`` and wait until its ``run`` has returned."""
    node.stop()
    with trio.fail_after(START_TIMEOUT):
        await ended.wait()


def again(node: Node) -> Node:
    """The same node (home, key, settings, extensions, clock), to run again once it has stopped."""
    return Node(node.home, node.key, node.settings, node.loaded, node.clock)
