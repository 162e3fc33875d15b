"""Sync progress: the renderers on the `sync` field of node.status (with progress, with none
under way, from a node that does not report it), and `status --watch` on a real node."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import time

import pytest

from cli import syncprogress as sp
from framework.console import COMMAND, ROOT, child_env, kill_by_pid, run_cli

PULLING = {"state": "syncing", "last_round_ms": None, "entries_received": 6000,
           "progress": {"fetched": 6000, "target": 10000, "rate_per_s": 1200.4, "eta_s": 3.3}}
IDLE = {"state": "idle", "last_round_ms": 1, "entries_received": 10000, "progress": None}
OLD_SYNCING = {"state": "syncing", "last_round_ms": None, "entries_received": 5}  # no "progress" key
OLD_IDLE = {"state": "idle", "last_round_ms": 1, "entries_received": 5}


@pytest.mark.parametrize("eta,text", [(None, "time left unknown"), (0, "about 0 s left"), (3.3, "about 3 s left"),
                                      (59.4, "about 59 s left"), (61, "about 1 min left"),
                                      (3600, "about 1 h left"), (3900, "about 1 h 5 min left")])
def test_eta_text(eta, text):
    assert sp.eta_text(eta) == text


def test_a_pull_under_way_is_told_in_figures():
    assert sp.progress_text(PULLING["progress"]) == "fetching 6000/10000 entries, 1200/s, about 3 s left"
    assert sp.sync_progress(PULLING) == "fetching 6000/10000 entries, 1200/s, about 3 s left"
    assert sp.plain_line(PULLING) == "syncing: fetching 6000/10000 entries, 1200/s, about 3 s left"
    assert not sp.done(PULLING)
    assert sp.bar_fields(PULLING) == {"description": "syncing", "total": 10000, "completed": 6000,
                                      "detail": "fetching 6000/10000 entries, 1200/s, about 3 s left"}
    no_rate = dict(PULLING["progress"], rate_per_s=None, eta_s=None)
    assert sp.progress_text(no_rate) == "fetching 6000/10000 entries, time left unknown"


def test_an_idle_node_and_a_node_that_does_not_report_progress():
    assert sp.sync_progress(IDLE) is None and sp.done(IDLE)
    assert sp.plain_line(IDLE) == "idle: 10000 entries received"
    assert sp.bar_fields(IDLE)["completed"] == sp.bar_fields(IDLE)["total"]
    assert sp.sync_progress(OLD_SYNCING) == sp.UNKNOWN == "sync progress unknown (this node does not report it)"
    assert sp.plain_line(OLD_SYNCING) == f"syncing: {sp.UNKNOWN}"
    assert sp.bar_fields(OLD_SYNCING)["total"] is None  # a pulsing bar: no figures to fill it
    assert sp.done(OLD_IDLE) and sp.plain_line(OLD_IDLE) == "idle: 5 entries received"
    between = dict(IDLE, state="syncing")  # a round under way, nothing to pull yet
    assert sp.plain_line(between) == "syncing: exchanging heads"


def test_watch_follows_a_sync_to_its_end_and_gives_up_at_its_timeout(monkeypatch, capsys):
    monkeypatch.setattr(sp, "PLAIN_INTERVAL", 0.01)
    monkeypatch.setattr(sp, "TTY_INTERVAL", 0.01)
    answers = iter([PULLING, dict(PULLING, progress=dict(PULLING["progress"], fetched=9000)), IDLE])
    assert sp.watch(lambda: {"sync": next(answers)}, 10, tty=False) is True
    assert capsys.readouterr().out.splitlines() == [
        "syncing: fetching 6000/10000 entries, 1200/s, about 3 s left",
        "syncing: fetching 9000/10000 entries, 1200/s, about 3 s left",
        "idle: 10000 entries received"]
    assert sp.watch(lambda: {"sync": OLD_SYNCING}, 0.05, tty=False) is False

    from rich.console import Console

    out = io.StringIO()
    answers = iter([PULLING, IDLE])
    term = Console(file=out, force_terminal=True, width=100, color_system=None)
    assert sp.watch(lambda: {"sync": next(answers)}, 10, tty=True, console=term) is True
    drawn = out.getvalue()
    assert "fetching 6000/10000 entries, 1200/s, about 3 s left" in drawn and "10000 entries received" in drawn


def test_status_says_nothing_of_progress_when_idle(idle_node_process):
    home, _ = idle_node_process
    rc, out, err = run_cli("status", home=home)
    assert rc == 0 and "sync        idle" in out and "unknown" not in out and "fetching" not in out


def test_watch_on_an_idle_node_prints_one_line_and_exits_0(idle_node_process):
    home, _ = idle_node_process
    t0 = time.monotonic()
    rc, out, err = run_cli("status", "--watch", "--timeout", "20", home=home)
    assert rc == 0, err
    assert out.startswith("idle: ") and out.endswith(" entries received\n") and len(out.splitlines()) == 1
    assert time.monotonic() - t0 < 20
    rc, out, err = run_cli("status", "--watch", "--json", home=home)
    assert rc == 2 and json.loads(err)["error"]["code"] == "usage_error"


def test_watch_at_a_terminal_draws_the_bar_of_an_idle_node(idle_node_process):
    home, _ = idle_node_process
    master, slave = pty.openpty()
    proc = subprocess.Popen([*COMMAND, "--home", str(home), "status", "--watch", "--timeout", "20"],
                            stdin=subprocess.DEVNULL, stdout=slave, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT)
    os.close(slave)
    drawn = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:  # read until the process ends and the terminal is drained
            if select.select([master], [], [], 0.5)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the other side is closed
                    break
                if not chunk:
                    break
                drawn += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=10)
    finally:
        kill_by_pid(proc)
        os.close(master)
        proc.stderr.close()
    assert proc.returncode == 0
    assert b"idle" in drawn and b"entries received" in drawn and "━".encode() in drawn


def test_watch_needs_a_running_node(node):
    home, _ = node
    rc, _, err = run_cli("status", "--watch", "--timeout", "5", home=home)
    assert rc == 6 and "no node is running" in err
