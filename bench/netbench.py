"""Shared parts of the network benchmarks: node processes on 127.0.0.1 in a scratch
directory, their control API, and the machine's raw Ed25519 verify rate.

Every process started here is stopped by its pid when the ``Cluster`` closes, whatever
happened; every wait is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cli.rpc import NodeNotRunning, RpcError, call  # noqa: E402
from p2pnode import testnet as tn  # noqa: E402
from p2pnode.home import Config, Home, init_home  # noqa: E402
from protocol.keys import peer_id  # noqa: E402
from protocol.kinds import core_registry  # noqa: E402

REGISTRY = core_registry()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def raw_verify_per_s(message_size: int = 200, n: int = 20_000, rounds: int = 3) -> float:
    """Ed25519 verifications per second with ``cryptography``, the library the node uses."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    pairs = [(key.sign(m), m) for m in (os.urandom(message_size) for _ in range(256))]
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        for i in range(n):
            sig, m = pairs[i & 255]
            pub.verify(sig, m)
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Cluster:
    """Node homes and processes under one scratch directory."""

    def __init__(self, keep: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="p2pnode-bench-"))
        self.keep = keep
        self.members: list[tn.Member] = []

    def add(self, name: str, bootstrap: list[str] | None = None) -> tn.Member:
        home = Home(self.dir / name)
        init_home(home.path, registry=REGISTRY, name=name)
        listen = f"/ip4/127.0.0.1/tcp/{tn.free_port()}"
        home.config_file.write_text(Config(name=name, listen=[listen], bootstrap=bootstrap or []).to_toml())
        pid = peer_id(home.public_key())
        m = tn.Member(name, str(home.path), pid, f"{listen}/p2p/{pid}")
        self.members.append(m)
        return m

    def start(self, m: tn.Member, timeout: float = 30.0) -> None:
        m.pid = tn.spawn(m, ["--log-level", "warning"])
        wait_until(lambda: self.status(m) is not None, timeout, f"{m.name} to answer")

    def call(self, m: tn.Member, method: str, params: dict | None = None, timeout: float = 30.0) -> Any:
        return call(Path(m.home), method, params, timeout=timeout)

    def status(self, m: tn.Member) -> dict | None:
        try:
            return self.call(m, "node.status", timeout=5.0)
        except (NodeNotRunning, RpcError, OSError, TimeoutError):
            if m.pid and not tn.pid_alive(m.pid):
                raise RuntimeError(f"{m.name} exited; see {Path(m.home) / tn.LOG_FILE}") from None
            return None

    def head_seq(self, m: tn.Member, author: str) -> int:
        st = self.call(m, "node.status", timeout=10.0)
        for h in st["heads"]:
            if h["author"] == author:
                return h["seq"]
        return 0

    def close(self) -> None:
        for m in self.members:
            if m.pid and tn.pid_alive(m.pid):
                try:
                    os.kill(m.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for m in self.members:
            if m.pid and not tn._wait_gone(m.pid, 10):
                try:
                    os.kill(m.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
