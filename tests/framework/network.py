"""Node processes on 127.0.0.1 under one directory: ``DIR/NAME`` is each node's home and
``DIR/NAME/node.log`` its log, the layout of `p2pnode testnet`.

A ``Network`` is made either as users make one, by `p2pnode testnet up` (``up``: homes
``node1..nodeN``, node 1 the bootstrap peer of the others, started by the CLI, which
hands back their pids), or node by node (``add`` a home with the bootstrap peers a
benchmark wants, then ``NodeProcess.start``). Either way every node is a ``NodeProcess``,
and ``close`` ends every one by its pid, including any that a CLI call recorded in
``DIR/testnet.json`` behind the harness's back.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from cli.rpc import NodeNotRunning, RpcError
from framework.console import TIMEOUT, run_cli
from framework.process import STOP_TIMEOUT, NodeProcess, reap_later
from framework.wait import wait_until
from p2pnode import testnet as tn
from p2pnode.extensions import load
from p2pnode.home import Config, Home, init_home

SYNC_TIMEOUT = 30.0


class Network:
    """The nodes of ``dir``, by name (``node(k)`` is ``nodeK``, as `p2pnode testnet` names them)."""

    def __init__(self, dir: Path | str, *, remove: bool = False) -> None:
        self.dir = Path(dir).absolute()
        self.remove = remove  # delete ``dir`` on close (a scratch directory)
        self.nodes: dict[str, NodeProcess] = {}

    @classmethod
    def scratch(cls, prefix: str = "p2pnode-bench-") -> "Network":
        """A network in a new temporary directory, removed on close."""
        return cls(Path(tempfile.mkdtemp(prefix=prefix)), remove=True)

    def node(self, k: int | str) -> NodeProcess:
        """Node ``k``: ``nodeK`` for a number, else the node of that name."""
        name = f"node{k}" if isinstance(k, int) else k
        if name not in self.nodes:
            self.nodes[name] = NodeProcess(self.dir / name, name)
        return self.nodes[name]

    def home(self, k: int | str) -> Path:
        return self.node(k).home

    # -- making it -------------------------------------------------------------------------

    def up(self, n: int, timeout: float = 60.0) -> dict:
        """`p2pnode testnet up --nodes N --dir DIR --json`: start what is not running of
        ``node1..nodeN`` (creating missing homes) and wait until they form one network.
        Adopts the pids it reports; returns what it printed."""
        started = self.json(None, "testnet", "up", "--nodes", n, "--dir", self.dir, "--timeout", timeout,
                            timeout=timeout + TIMEOUT)
        for row in started["nodes"]:
            self.node(row["name"]).pid = row["pid"]
        return started

    def add(self, name: str, bootstrap: Iterable[str] = (), *, listen: str | None = None,
            wrap: list[str] | None = None) -> NodeProcess:
        """A new home ``DIR/NAME`` (not started) listening on ``listen`` (default: a free
        port of 127.0.0.1) and dialing ``bootstrap`` at start; its config has every
        installed extension's section, as a `p2pnode testnet` home does. ``wrap``: the
        command prefix its process starts under (``NodeProcess.wrap``)."""
        loaded = load()
        home = Home(self.dir / name)
        self.dir.mkdir(parents=True, exist_ok=True)
        init_home(home.path, registry=loaded.registry, name=name)
        cfg = Config(name=name, listen=[listen or f"/ip4/127.0.0.1/tcp/{tn.free_port()}"], bootstrap=list(bootstrap))
        home.config_file.write_text(cfg.to_toml(loaded.extensions))
        node = self.node(name)
        node.wrap = list(wrap or [])
        return node

    # -- acting on it ----------------------------------------------------------------------

    def cli(self, k: int | str | None, *args: Any, ok: bool = True, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """The CLI against node ``k``'s home, or with no ``--home`` if ``k`` is None; with
        ``ok``, fail unless it exits 0."""
        if k is not None:
            return self.node(k).cli(*args, ok=ok, timeout=timeout)
        rc, out, err = run_cli(*args, timeout=timeout)
        if ok:
            assert rc == 0, f"`p2pnode {' '.join(map(str, args))}` exited {rc}: {err}"
        return rc, out, err

    def json(self, k: int | str | None, *args: Any, timeout: float = TIMEOUT) -> Any:
        """What `p2pnode ARGS... --json` prints on node ``k`` (or none), parsed; it must exit 0."""
        return json.loads(self.cli(k, *args, "--json", timeout=timeout)[1])

    def ask(self, k: int | str, method: str, params: dict | None = None) -> Any:
        """What node ``k``'s control API answers to ``method``, or None if it refuses or does
        not answer. For a wait's poll: asked in this process, where a CLI call costs a Python
        process of its own (a third of a second of CPU) per poll. What a test claims of the
        CLI it checks through the CLI, once the wait is over."""
        try:
            return self.node(k).call(method, params, timeout=10.0)
        except (RpcError, NodeNotRunning, OSError):
            return None

    def peer_id(self, k: int | str) -> str:
        """Node ``k``'s peer ID, read from its home's key: who is who is known to the test
        (`p2pnode id` is checked in tests/cli), not asked of a CLI process each time."""
        return self.node(k).peer_id

    def head(self, k: int | str, author: str) -> int:
        """The seq node ``k`` holds of ``author``'s chain; 0 if none."""
        return self.node(k).head(author)

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
        """``framework.wait.wait_until``; polls every 0.1 s by default, since a predicate
        here often runs the CLI."""
        return wait_until(predicate, timeout, what, step)

    def pids(self) -> dict[str, int]:
        """The pid of every node the harness knows one of, by name."""
        return {name: n.pid for name, n in self.nodes.items() if n.pid}

    def running(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.running()]

    def sync_all(self, nodes: Iterable[NodeProcess] | None = None, timeout: float = SYNC_TIMEOUT) -> None:
        """Wait until ``nodes`` (default: every running node) hold the same heads, and so,
        by the chain rules, the same entries."""
        nodes = list(self.running() if nodes is None else nodes)

        def agree() -> bool:
            first, *rest = [n.heads() for n in nodes]
            return all(h == first for h in rest)

        wait_until(agree, timeout, f"{', '.join(n.name for n in nodes)} to hold the same heads", step=0.1)

    # -- ending it -------------------------------------------------------------------------

    def stop_all(self, timeout: float = STOP_TIMEOUT, *, wait: bool = True) -> None:
        """SIGTERM every node at once, then wait for each; SIGKILL any still running after
        ``timeout`` s. By pid, each checked to still be its home's node. With ``wait``
        False the waits (and any SIGKILL) happen in the background (``reap_later``)."""
        nodes = list(self.nodes.values()) + self._recorded_elsewhere()
        for n in nodes:
            n.terminate()
        if not wait:
            reap_later(nodes, timeout)
            return
        for n in nodes:
            n.wait_exit(timeout)

    def _recorded_elsewhere(self) -> list[NodeProcess]:
        """Nodes ``DIR/testnet.json`` records with pids the harness did not adopt (a test
        may run `p2pnode testnet up` itself)."""
        try:
            members = tn.load(self.dir)
        except tn.TestnetError:
            return []
        known = {n.pid for n in self.nodes.values()}
        return [NodeProcess(m.home, m.name, m.pid) for m in members if m.pid and m.pid not in known]

    def close(self, *, wait: bool = True) -> None:
        """``stop_all``, then remove a scratch directory. With ``wait`` False (a test's
        teardown) the nodes are sent SIGTERM and their exits awaited in the background,
        unless the directory is to be removed under them."""
        try:
            self.stop_all(wait=wait or self.remove)
        finally:
            if self.remove:
                shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Network":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
