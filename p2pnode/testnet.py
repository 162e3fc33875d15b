"""A local test network: N nodes as separate processes on 127.0.0.1, each with its own
home ``DIR/nodeK`` and log ``DIR/nodeK/node.log``, recorded in ``DIR/testnet.json``.

Node 1 is the bootstrap peer of the others; peer exchange connects the rest. Ports are
chosen free when a home is created and kept in its config, so a node restarted later
listens where its peers expect it. Processes are stopped by the ids recorded at start.
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
from typing import Callable

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
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


def load(dir: Path) -> list[Member]:
    path = dir / STATE_FILE
    try:
        raw = json.loads(path.read_text())
        return [Member(**m) for m in raw["nodes"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TestnetError(f"{path} is damaged ({e}); stop the nodes by hand and remove it") from None


def save(dir: Path, members: list[Member]) -> None:
    path = dir / STATE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"nodes": [asdict(m) for m in members]}, indent=2))
    os.replace(tmp, path)


def prepare(dir: Path, n: int, registry) -> list[Member]:
    """Homes ``dir/node1..nodeN``: existing ones are kept, missing ones created with a
    free port on 127.0.0.1 and node 1 as their bootstrap peer."""
    from protocol.keys import peer_id

    if not 1 <= n <= MAX_NODES:
        raise TestnetError(f"--nodes must be 1..{MAX_NODES}")
    dir.mkdir(parents=True, exist_ok=True)
    members: list[Member] = []
    for k in range(1, n + 1):
        home = Home(dir / f"node{k}")
        if not home.exists():
            init_home(home.path, registry=registry, name=f"node{k}")
            cfg = Config(name=f"node{k}", listen=[f"/ip4/127.0.0.1/tcp/{free_port()}"])
            if members:
                cfg.bootstrap = [members[0].addr]
            home.config_file.write_text(cfg.to_toml())
        cfg = home.config()
        listen = next((a for a in cfg.listen if a.startswith("/ip4/127.0.0.1/tcp/")), None)
        if listen is None:
            raise TestnetError(f"{home.config_file} does not listen on 127.0.0.1; not a testnet home")
        pid = peer_id(home.public_key())
        members.append(Member(f"node{k}", str(home.path), pid, f"{listen}/p2p/{pid}"))
    return members


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


def wait_connected(members: list[Member], status: Callable[[Member], dict | None], timeout: float) -> dict[str, dict]:
    """Wait until every node answers and the nodes form one connected network; their
    statuses. Raises ``TestnetError`` naming the laggards after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: dict[str, dict] = {}
    while True:
        for m in members:
            st = status(m)
            if st is not None:
                last[m.name] = st
            elif not pid_alive(m.pid):
                raise TestnetError(f"{m.name} exited; see {Path(m.home) / LOG_FILE}")
        if len(last) == len(members) and _connected(members, last):
            return last
        if time.monotonic() > deadline:
            missing = [m.name for m in members if m.name not in last]
            lonely = [m.name for m in members if m.name in last and not last[m.name]["peers"]]
            raise TestnetError(
                f"the network did not form within {timeout:.0f} s"
                + (f"; not answering: {', '.join(missing)}" if missing else "")
                + (f"; without peers: {', '.join(lonely)}" if lonely else "")
            )
        time.sleep(0.2)


def _connected(members: list[Member], statuses: dict[str, dict]) -> bool:
    if len(members) == 1:
        return True
    by_id = {m.peer_id: m.name for m in members}
    edges: dict[str, set[str]] = {m.name: set() for m in members}
    for m in members:
        for p in statuses[m.name]["peers"]:
            other = by_id.get(p["peer_id"])
            if other:
                edges[m.name].add(other)
                edges[other].add(m.name)
    seen, todo = set(), [members[0].name]
    while todo:
        x = todo.pop()
        if x not in seen:
            seen.add(x)
            todo.extend(edges[x] - seen)
    return len(seen) == len(members)


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
