"""The harness itself (tests/framework/): its waits stop at their bounds and name what they
awaited, a node process is started, asked and ended by its pid (and a pid that is no
longer its node's is left alone), and ``Network.sync_all`` waits for agreement and no
longer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import framework.wait as wait
from framework.console import run_cli
from framework.console import kill_by_pid
from framework.limits import cpu_s, percentile
from framework.network import Network
from framework.process import NodeExited, NodeProcess
from framework.wait import WaitTimeout, wait_for, wait_until
from p2pnode.testnet import free_port, pid_alive


class FakeTime:
    """A clock for ``wait_until``: sleeping and slow predicates advance it, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(wait, "time", fake)
    return fake


def test_wait_until_returns_the_first_truthy_value(clock):
    answers = iter([0, None, [], {"seq": 3}, {"seq": 4}])
    assert wait_until(lambda: next(answers), 10, "an answer", step=1) == {"seq": 3}
    assert clock.now == 3


def test_wait_until_stops_at_its_poll_count_and_names_what_it_waited_for(clock):
    calls = []
    with pytest.raises(WaitTimeout, match=r"^timed out after 1 s \(11 polls\) waiting for node 5 to hold seq 7$"):
        wait_until(lambda: calls.append(1), 1, "node 5 to hold seq 7", step=0.1)
    assert len(calls) == 11 and clock.now == pytest.approx(1.0)
    with pytest.raises(AssertionError):  # a timeout is a failed test
        wait_until(lambda: False, 0, "nothing")


def test_wait_until_stops_at_its_deadline_when_the_predicate_is_slow(clock):
    calls = []

    def slow() -> bool:
        calls.append(1)
        clock.now += 0.4
        return False

    with pytest.raises(WaitTimeout, match=r"\(3 polls\) waiting for a slow thing"):
        wait_until(slow, 1, "a slow thing", step=0.1)
    assert len(calls) == 3  # at 0.4, 0.9 and 1.4 s: never a call begun after the deadline


@pytest.mark.trio
async def test_wait_for_is_the_same_wait_in_trio_time(autojump_clock):
    t0 = trio.current_time()
    calls = []
    with pytest.raises(WaitTimeout, match=r"^timed out after 2 s \(21 polls\) waiting for the offer$"):
        await wait_for(lambda: calls.append(1), 2, "the offer", step=0.1)
    assert len(calls) == 21 and trio.current_time() - t0 == pytest.approx(2.0)
    answers = iter([False, False, "held"])
    assert await wait_for(lambda: next(answers), 2, "the offer") == "held"


def test_percentile_is_nearest_rank():
    values = list(range(100, 0, -1))  # any order
    assert [percentile(values, p) for p in (0, 1, 50, 95, 99, 100)] == [1, 1, 50, 95, 99, 100]
    assert percentile([7.0], 99) == 7.0 and percentile([1, 2, 3], 50) == 2
    assert percentile([], 50) != percentile([], 50)  # nan


# A parent that starts a child, writes the child's pid, and then only sleeps; the child
# spins until it has used SPIN_S of CPU, says so in a file, and sleeps. Both are ended by
# their pids (bounded: each also ends by itself after a minute).
SPIN_S = 0.3
_PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[3], sys.argv[2]])
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(child.pid))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""
_CHILD = """
import sys, time
t = time.process_time()
while time.process_time() - t < %r:
    pass
open(sys.argv[1], "w").close()
time.sleep(60)
""" % SPIN_S


def test_cpu_s_counts_the_processes_under_a_pid_only_with_tree(tmp_path: Path):
    pid_file, spun = tmp_path / "child.pid", tmp_path / "spun"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(pid_file), str(spun), _CHILD])
    child_pid = None
    try:
        wait_until(pid_file.exists, 30, "the parent to start its child")
        child_pid = int(pid_file.read_text())
        wait_until(spun.exists, 30, "the child to spin")
        own, tree, child = cpu_s(parent.pid, tree=False), cpu_s(parent.pid), cpu_s(child_pid, tree=False)
        assert child >= SPIN_S * 0.9  # (clock ticks round down: 100 a second)
        assert tree >= own + child - 0.02 and own < SPIN_S / 2
    finally:
        if child_pid is not None:
            try:
                os.kill(child_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        kill_by_pid(parent)
    assert cpu_s(parent.pid) != cpu_s(parent.pid)  # nan: that pid is gone


@pytest.mark.slow
def test_a_node_process_is_started_asked_and_stopped_by_its_pid(node):
    home, info = node
    n = NodeProcess(home)
    n.start("--listen", f"/ip4/127.0.0.1/tcp/{free_port()}")
    try:
        status = n.status()
        assert status["pid"] == n.pid and status["peer_id"] == info["peer_id"] == n.peer_id
        assert n.heads() == {info["peer_id"]: (1, status["heads"][0]["id"])} and n.head(info["peer_id"]) == 1
        view = n.call("ledger.append", {"kind": "note", "body": {"text": "hello"}})
        assert n.json("ledger", "heads")[0]["seq"] == view["seq"] == 2
        with pytest.raises(RuntimeError, match="running already"):
            n.start()
        pid = n.pid
        assert n.stop() == "terminated"
        assert not pid_alive(pid) and n.pid is None and not n.running() and n.status() is None
        assert n.stop() == "not running"
        assert "stopped" in n.log.read_text()  # a clean shutdown, logged where the harness sends it

        n.start("--listen", f"/ip4/127.0.0.1/tcp/{free_port()}")  # kill -9 this time: its store is free at once
        pid = n.pid
        n.kill()
        assert not pid_alive(pid) and n.pid is None
        assert n.cli("ledger", "verify")[0] == 0
    finally:
        n.stop()


@pytest.mark.slow
def test_a_node_that_cannot_start_fails_naming_its_log(node, new_home):
    home, _ = node
    other = new_home("other")
    assert run_cli("init", home=other)[0] == 0
    listen = f"/ip4/127.0.0.1/tcp/{free_port()}"
    first = NodeProcess(home).start("--listen", listen)
    second = NodeProcess(other)
    try:
        with pytest.raises(NodeExited) as e:
            second.start("--listen", listen)
        assert str(second.log) in str(e.value) and "in use" in str(e.value)
        assert not second.running()
    finally:
        first.stop()
        second.stop()


def test_a_pid_that_is_not_the_homes_node_is_never_signalled(node):
    home, _ = node
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        adopted = NodeProcess(home, pid=stranger.pid)  # as if recorded once, then reused
        assert not adopted.running()
        assert adopted.stop() == "not running"
        adopted.kill()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait(timeout=10)


@pytest.mark.slow
def test_sync_all_waits_until_the_nodes_hold_the_same_heads(tmp_path: Path):
    with Network(tmp_path / "net") as net:
        a = net.add("a")
        b = net.add("b", bootstrap=[a.addr])
        lone = net.add("lone")
        for n in (a, b, lone):
            n.start()
        for i in range(3):
            a.call("ledger.append", {"kind": "note", "body": {"text": f"note {i}"}})
        net.sync_all([a, b])
        assert a.heads() == b.heads() and set(a.heads()) == {a.peer_id, b.peer_id} and a.head(a.peer_id) == 4
        with pytest.raises(WaitTimeout, match="waiting for a, lone to hold the same heads"):
            net.sync_all([a, lone], timeout=2)  # nobody told lone of anyone
        pids = list(net.pids().values())
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
    assert not any(pid_alive(p) for p in pids)


@pytest.mark.slow
def test_close_ends_the_nodes_a_cli_call_started_behind_the_harness(tmp_path: Path):
    with Network(tmp_path / "tn") as net:
        rc, out, err = run_cli("testnet", "up", "--nodes", 1, "--dir", net.dir, "--json")
        assert rc == 0, err
        [row] = json.loads(out)["nodes"]
        assert net.pids() == {} and pid_alive(row["pid"])
    assert not pid_alive(row["pid"])
