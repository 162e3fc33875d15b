"""A local test network: N nodes as separate processes on 127.0.0.1, each with its own
home ``DIR/nodeK`` and log ``DIR/nodeK/node.log``, recorded in ``DIR/testnet.json``.

Node 1 is the bootstrap peer of the others; peer exchange connects the rest. Ports are
chosen free when a home is created and kept in its config, so a node restarted later
listens where its peers expect it. A port can be taken by another process between that
choice and the node's start; ``up`` then moves the node to a new port (``move_port``) and
starts it again. Processes are stopped by the ids recorded at start.
Imports neither libp2p nor trio: the CLI uses this module.
"""

from __future__ import annotations

from protocol.errors import CodedError

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from p2pnode.home import Config, Home, init_home

STATE_FILE = "testnet.json"
LOG_FILE = "node.log"
MAX_NODES = 64


class TestnetError(CodedError):
    code = "testnet_error"


@dataclass
class Member:
    name: str
    home: str
    peer_id: str
    addr: str  # full multiaddr with /p2p/
    pid: int | None = None


FREE_PORT_TRIES = 200


def _ephemeral_range() -> tuple[int, int]:
    """The ports the kernel hands out by itself (outgoing connections, ``bind`` to port 0)."""
    try:
        lo, hi = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, chosen at random outside
    the kernel's ephemeral range: a port the kernel chose for us would be free again once
    we release it, and the kernel may hand it to any outgoing connection (a node dialing
    a peer) before the node that is to listen on it binds it ("Address already in use")."""
    import random

    lo, hi = _ephemeral_range()
    first, last = (10_000, lo - 1) if lo > 11_000 else (hi + 1, 65_535)
    pick = random.SystemRandom()
    for _ in range(FREE_PORT_TRIES):
        port = pick.randint(first, last)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # (a crowded range: let the kernel choose)
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited child not yet reaped
    by its parent has released everything a node holds)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not reaped by its parent) is not running.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


MAX_STATE_BYTES = 1 << 20  # the state file of MAX_NODES members is a few KiB


def load(dir: Path) -> list[Member]:
    """The members the state file in ``dir`` lists ([] if there is none); ``TestnetError``
    naming the file for one that is not what ``save`` writes, whatever its bytes."""
    path = dir / STATE_FILE
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
        if len(data) > MAX_STATE_BYTES:
            raise ValueError(f"over {MAX_STATE_BYTES} bytes")
        raw = json.loads(data.decode("utf-8"))
        members = [Member(**m) for m in raw["nodes"]]
        if len(members) > MAX_NODES:
            raise ValueError(f"more than {MAX_NODES} nodes")
        for m in members:
            if not all(type(v) is str for v in (m.name, m.home, m.peer_id, m.addr)) or \
                    not (m.pid is None or (type(m.pid) is int and 0 < m.pid < 1 << 22)):
                raise ValueError("a node's name, home, peer_id and addr are text and its pid a process id")
        return members
    except FileNotFoundError:
        return []
    except RecursionError:  # (json nests without a bound)
        raise TestnetError(f"{path} is damaged (nested too deep); stop the nodes by hand and remove it") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TestnetError(f"{path} is damaged ({e}); stop the nodes by hand and remove it") from None


def save(dir: Path, members: list[Member]) -> None:
    path = dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nodes": [asdict(m) for m in members]}, indent=2))
    os.replace(tmp, path)


def prepare(dir: Path, n: int, loaded: Any) -> list[Member]:
    """Homes ``dir/node1..nodeN``: existing ones are kept, missing ones created with a
    free port on 127.0.0.1 and node 1 as their bootstrap peer, and a config section for
    each of the ``loaded`` extensions (``p2pnode.extensions.Loaded``)."""
    from protocol.keys import peer_id

    if not 1 <= n <= MAX_NODES:
        raise TestnetError(f"--nodes must be 1..{MAX_NODES}")
    dir.mkdir(parents=True, exist_ok=True)
    members: list[Member] = []
    for k in range(1, n + 1):
        home = Home(dir / f"node{k}")
        if not home.exists():
            init_home(home.path, registry=loaded.registry, name=f"node{k}")
            cfg = Config(name=f"node{k}", listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"])
            if members:
                cfg.bootstrap = [members[0].addr]
            home.config_file.write_text(cfg.to_toml(loaded.extensions))
        cfg = home.config()
        listen = next((a for a in cfg.listen if a.startswith("/ip4/127.0.0.1/tcp/")), None)
        if listen is None:
            raise TestnetError(f"{home.config_file} does not listen on 127.0.0.1; not a testnet home")
        pid = peer_id(home.public_key())
        members.append(Member(f"node{k}", str(home.path), pid, f"{listen}/p2p/{pid}"))
    return members


PORT_MOVES = 3  # times ``up`` gives one node a new port because another process took its own


def log_size(member: Member) -> int:
    """Bytes in the node's log now: where what a process started next will write begins."""
    try:
        return (Path(member.home) / LOG_FILE).stat().st_size
    except OSError:
        return 0


def lost_its_port(member: Member, since: int) -> bool:
    """Whether the node's log, past byte ``since``, says that it could not listen because
    its port was taken (``PortInUse``, the node's own check before libp2p listens)."""
    from p2pnode.net.addresses import PORT_IN_USE

    try:
        with open(Path(member.home) / LOG_FILE, "rb") as f:
            f.seek(since)
            tail = f.read(64 * 1024)  # the exit message comes within the first lines of a start
    except OSError:
        return False
    return f"error: {PORT_IN_USE} ".encode() in tail


def move_port(member: Member, members: list[Member], loaded: Any) -> list[Member]:
    """Give ``member`` a new free port on 127.0.0.1: in its config and its ``addr``. The
    other members whose config named its old address as bootstrap peer get the new one;
    they are returned, as they must be started again to dial it."""
    home = Home(Path(member.home))
    cfg = home.config()
    old_addr = member.addr
    new_listen = f"/ip4/127.0.0.1/tcp/{free_port()}"
    cfg.listen = [new_listen if a.startswith("/ip4/127.0.0.1/tcp/") else a for a in cfg.listen]
    home.config_file.write_text(cfg.to_toml(loaded.extensions))
    member.addr = f"{new_listen}/p2p/{member.peer_id}"
    changed = []
    for m in members:
        if m is member:
            continue
        other = Home(Path(m.home))
        ocfg = other.config()
        if old_addr in ocfg.bootstrap:
            ocfg.bootstrap = [member.addr if a == old_addr else a for a in ocfg.bootstrap]
            other.config_file.write_text(ocfg.to_toml(loaded.extensions))
            changed.append(m)
    return changed


def spawn(member: Member, extra_args: list[str] | None = None) -> int:
    """Start ``p2pnode start`` for ``member`` in its own session; its pid."""
    home = Path(member.home)
    log = open(home / LOG_FILE, "ab")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli", "--home", str(home), "start", *(extra_args or [])],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,  # outlives the command that started it; not in its process group
            env={k: v for k, v in os.environ.items() if k != "P2PNODE_HOME"},
            cwd=str(Path(__file__).resolve().parents[1]),
        )
    finally:
        log.close()
    return proc.pid


def wait_connected(members: list[Member], status: Callable[[Member], dict | None], timeout: float,
                   revive: Callable[[Member], bool] | None = None) -> dict[str, dict]:
    """Wait until the network has formed: every node answers, sees at least one other
    node among its own peers, and the links join all of them into one graph. Returns the
    statuses of one round in which that held, so the peer counts they give are the ones
    that formed it. A node whose process has exited is handed to ``revive``, which says
    whether it started it again. Raises ``TestnetError`` naming a node that exited and
    was not revived, or saying what was missing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        statuses: dict[str, dict] = {}
        for m in members:  # one fresh round: counts from different moments would not agree
            st = status(m)
            if st is not None:
                statuses[m.name] = st
            elif not pid_alive(m.pid) and not (revive is not None and revive(m)):
                raise TestnetError(f"{m.name} exited; see {Path(m.home) / LOG_FILE}")
        missing = formation_gaps(members, statuses)
        if not missing:
            return statuses
        if time.monotonic() > deadline:
            logs = ", ".join(str(Path(m.home) / LOG_FILE) for m in members if m.name in missing.get("nodes", ()))
            raise TestnetError(f"the network did not form within {timeout:g} s: {missing['why']}"
                               + (f"; see {logs}" if logs else ""))
        time.sleep(0.2)


def formation_gaps(members: list[Member], statuses: dict[str, dict]) -> dict | None:
    """None if ``statuses`` (name -> node.status) show a formed network; else ``{"why":
    text, "nodes": names at fault}``: nodes not answering, nodes that see no other
    node, or the groups the network is split into."""
    silent = [m.name for m in members if m.name not in statuses]
    if silent:
        return {"why": f"not answering: {', '.join(silent)}", "nodes": silent}
    by_id = {m.peer_id: m.name for m in members}
    links: dict[str, set[str]] = {m.name: set() for m in members}
    for m in members:
        for p in statuses[m.name]["peers"]:
            other = by_id.get(p["peer_id"])
            if other and other != m.name:
                links[m.name].add(other)
    lonely = [m.name for m in members if not links[m.name]] if len(members) > 1 else []
    if lonely:
        return {"why": f"connected to no other node: {', '.join(lonely)}", "nodes": lonely}
    for a, bs in list(links.items()):  # a link either end reports joins both
        for b in bs:
            links[b].add(a)
    groups = _groups(links)
    if len(groups) > 1:
        return {"why": "split into " + " | ".join(", ".join(g) for g in groups), "nodes": []}
    return None


def _groups(links: dict[str, set[str]]) -> list[list[str]]:
    """The connected parts of an undirected graph, each in the order of ``links``."""
    order = list(links)
    seen: set[str] = set()
    groups = []
    for start in order:
        if start in seen:
            continue
        part, todo = set(), [start]
        while todo:
            x = todo.pop()
            if x not in part:
                part.add(x)
                todo.extend(links[x] - part)
        seen |= part
        groups.append([x for x in order if x in part])
    return groups


def stop(member: Member, ask: Callable[[Member], bool], timeout: float = 10.0) -> str:
    """Stop one node: ask it over its control socket, then SIGTERM, then SIGKILL, always by
    its recorded pid. How it ended: "stopped", "terminated", "killed" or "not running"."""
    if not pid_alive(member.pid):
        return "not running"
    how = "stopped" if ask(member) else None
    if how is None:
        os.kill(member.pid, signal.SIGTERM)
        how = "terminated"
    if _wait_gone(member.pid, timeout):
        return how
    try:
        os.kill(member.pid, signal.SIGKILL)
    except ProcessLookupError:
        return how
    _wait_gone(member.pid, 5.0)
    return "killed"


def _wait_gone(pid: int | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)
