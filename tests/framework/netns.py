"""A private network of Linux namespaces, for node processes that must be cut off from
each other for real: packets silently dropped, no FIN and no RST, as a cable pulled or a
router gone dark (issue 9: "after a 60 s partition heals ...").

Layout, made without privilege where unprivileged user namespaces are allowed:

    lab holder      `unshare --user --map-root-user --net cat`: a user and network
                    namespace of its own, with a bridge ``br0`` (the "switch")
    host NAME       `unshare -n cat`, run inside the lab's namespaces: a network namespace
                    per node, its ``eth0`` one end of a veth pair whose other end
                    (``v<k>``) is a port of the bridge; address ``10.77.0.<k>/24``

A node process runs in its host's namespace (``wrap(name)`` is the command prefix,
`nsenter` into it), and listens on its host's address. Its control socket is a Unix
socket on the shared filesystem, so the CLI and ``NodeProcess.call`` reach it from here.

``cut(name)`` puts a qdisc that drops every packet on both ends of the host's veth
(netem ``loss 100%`` where the kernel has netem, else ``blackhole``): the host's
connections go dead without either side being told. ``heal(name)`` removes both.

Every holder is a ``cat`` reading a pipe from this process: ``close`` ends each by its
pid, and if this process dies the pipe closes and they exit by themselves, taking the
namespaces with them. Every command run here has a timeout.

``Lab.open()`` raises ``LabUnavailable`` saying why (no `unshare`, `nsenter`, `ip` or `tc`,
user namespaces not allowed, no drop qdisc): a test calls ``lab_or_skip()`` instead.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

from framework.console import kill_by_pid

SUBNET = "10.77.0"
BRIDGE = "br0"
MAX_HOSTS = 200  # addresses 10.77.0.1 .. 10.77.0.200
COMMAND_TIMEOUT = 10.0  # seconds any one ip/tc/nsenter command may take
HOLDER_TIMEOUT = 5.0  # seconds a holder may take to have made its namespace
TOOLS = ("unshare", "nsenter", "ip", "tc")


class LabUnavailable(RuntimeError):
    """This machine cannot make the lab; the message says why."""


@dataclass
class LabHost:
    name: str
    index: int
    holder: subprocess.Popen

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.index}"

    @property
    def port(self) -> str:
        """The host's end of its veth pair, a port of the lab's bridge."""
        return f"v{self.index}"


def _ns_of(pid: int, kind: str) -> str:
    import os

    return os.readlink(f"/proc/{pid}/ns/{kind}")


def _holder(cmd: list[str]) -> subprocess.Popen:
    """Start ``cmd`` (ending in ``cat``) with a pipe as its stdin: it lives until the pipe closes."""
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Lab:
    """The lab's namespaces and hosts (module docstring)."""

    def __init__(self, holder: subprocess.Popen) -> None:
        self.holder = holder
        self.hosts: dict[str, LabHost] = {}
        self.drop: list[str] = []  # the qdisc that drops every packet, as tc arguments

    @classmethod
    def open(cls) -> "Lab":
        missing = [t for t in TOOLS if shutil.which(t) is None]
        if missing:
            raise LabUnavailable(f"no {', '.join(missing)} here to make network namespaces")
        holder = _holder(["unshare", "--user", "--map-root-user", "--net", "cat"])
        lab = cls(holder)
        try:
            lab._wait_own_ns(holder, "the lab's namespace")
            lab.run("ip", "link", "add", BRIDGE, "type", "bridge")
            lab.run("ip", "link", "set", BRIDGE, "up")
            lab.drop = lab._drop_qdisc()
        except BaseException:
            lab.close()
            raise
        return lab

    def _wait_own_ns(self, proc: subprocess.Popen, what: str, *others: int) -> None:
        """Wait (bounded) until ``proc`` has become its ``cat`` (so `unshare` has written its
        user ID map: entered earlier, the namespace grants nothing) in a network namespace
        other than this process's and those of ``others`` (pids)."""
        import os

        taken = {_ns_of(pid, "net") for pid in (os.getpid(), *others)}
        deadline = time.monotonic() + HOLDER_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise LabUnavailable(f"cannot make {what}: {err or f'exit status {proc.returncode}'}")
            try:
                with open(f"/proc/{proc.pid}/comm") as f:
                    became = f.read().strip() == "cat"
                if became and _ns_of(proc.pid, "net") not in taken:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise LabUnavailable(f"{what} was not made within {HOLDER_TIMEOUT:g} s")

    def _drop_qdisc(self) -> list[str]:
        """netem with 100% loss if the kernel has it, else the blackhole qdisc (both drop
        silently); tried on the bridge, then removed."""
        for qdisc in (["netem", "loss", "100%"], ["blackhole"]):
            if self.run("tc", "qdisc", "add", "dev", BRIDGE, "root", *qdisc, check=False).returncode == 0:
                self.run("tc", "qdisc", "del", "dev", BRIDGE, "root")
                return qdisc
        raise LabUnavailable("tc has neither netem nor blackhole here: no way to drop packets silently")

    # -- commands --------------------------------------------------------------------------

    def enter(self, pid: int) -> list[str]:
        """The command prefix that runs a program in ``pid``'s user and network namespaces."""
        return ["nsenter", "-t", str(pid), "-U", "-n", "--preserve-credentials"]

    def run(self, *cmd: str, host: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``cmd`` in the lab's namespace (or ``host``'s), bounded by ``COMMAND_TIMEOUT``."""
        pid = self.hosts[host].holder.pid if host else self.holder.pid
        r = subprocess.run([*self.enter(pid), *cmd], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if check and r.returncode != 0:
            raise LabUnavailable(f"`{' '.join(cmd)}`{f' on {host}' if host else ''} failed: {r.stderr.strip()}")
        return r

    # -- hosts -----------------------------------------------------------------------------

    def add_host(self, name: str) -> LabHost:
        """A new network namespace on the lab's bridge, with its own address."""
        if name in self.hosts or len(self.hosts) >= MAX_HOSTS:
            raise ValueError(f"host {name} exists, or the lab is full ({MAX_HOSTS})")
        index = len(self.hosts) + 1
        holder = _holder([*self.enter(self.holder.pid), "unshare", "--net", "cat"])
        host = self.hosts[name] = LabHost(name, index, holder)
        self._wait_own_ns(holder, f"host {name}'s namespace", self.holder.pid)  # (nsenter, then unshare)
        self.run("ip", "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", str(holder.pid))
        self.run("ip", "link", "set", host.port, "master", BRIDGE, "up")
        self.run("ip", "addr", "add", f"{host.ip}/24", "dev", "eth0", host=name)
        self.run("ip", "link", "set", "eth0", "up", host=name)
        self.run("ip", "link", "set", "lo", "up", host=name)
        return host

    def wrap(self, name: str) -> list[str]:
        """The command prefix that runs a program on host ``name`` (its pid is the program's:
        nsenter execs it without forking)."""
        return self.enter(self.hosts[name].holder.pid)

    def cut(self, name: str) -> None:
        """Drop every packet to and from host ``name``, silently."""
        host = self.hosts[name]
        self.run("tc", "qdisc", "add", "dev", host.port, "root", *self.drop)
        self.run("tc", "qdisc", "add", "dev", "eth0", "root", *self.drop, host=name)

    def heal(self, name: str) -> None:
        """Let host ``name``'s packets through again."""
        host = self.hosts[name]
        self.run("tc", "qdisc", "del", "dev", host.port, "root")
        self.run("tc", "qdisc", "del", "dev", "eth0", "root", host=name)

    def close(self) -> None:
        """End every holder by its pid (their namespaces go with them)."""
        for proc in [h.holder for h in self.hosts.values()] + [self.holder]:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
            kill_by_pid(proc)
            if proc.stderr:
                proc.stderr.close()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lab_or_skip() -> Lab:
    """``Lab.open()``, or ``pytest.skip`` with the reason this machine cannot make one."""
    import pytest

    try:
        return Lab.open()
    except LabUnavailable as e:
        pytest.skip(f"no network namespaces for a real partition: {e}")
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"no network namespaces for a real partition: {e}")
