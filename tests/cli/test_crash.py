"""kill -9 while appending: a separate Python process appends notes one at a time and
reports each seq once ``append_one`` has returned; it is SIGKILLed at some point. Afterwards
the store opens, verifies, and holds every entry that was reported appended."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

from framework.console import ROOT, child_env, kill_by_pid, run_cli as run

MAX_ENTRIES = 20_000
READ_TIMEOUT = 60.0  # a hang guard only: the kill point is decided by counts, never by time

WRITER = r"""
import sys
from pathlib import Path
from p2pnode.extensions import load
from p2pnode.home import Home, now_ms

home = Home(Path(sys.argv[1]))
limit = int(sys.argv[2])
registry = load().registry
key = home.signing_key(None)
store = home.open_store()
for i in range(limit):
    entry = store.append_one(key, "note", {"text": f"crash test {i}"}, now_ms=now_ms(), registry=registry)
    sys.stdout.write(f"{entry.seq}\n")
    sys.stdout.flush()
store.close()
"""


def read_reported(proc: subprocess.Popen, at_least: int) -> list[int]:
    """Seqs the writer reported, read until ``at_least`` of them (bounded by a timeout)."""
    seqs: list[int] = []
    buf = b""
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + READ_TIMEOUT
    try:
        while len(seqs) < at_least and time.monotonic() < deadline:  # bounded by count and time
            if not sel.select(timeout=1.0):
                if proc.poll() is not None:
                    break
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            seqs.extend(int(x) for x in lines)
    finally:
        sel.close()
    return seqs


@pytest.mark.parametrize("kill_after", [300, 1500, 4000])
def test_kill_9_while_appending(node, kill_after):
    home, info = node
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(home), str(MAX_ENTRIES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        cwd=ROOT,
    )
    try:
        reported = read_reported(proc, kill_after)
        assert proc.poll() is None, f"the writer ended early: {proc.stderr.read().decode()[-2000:]}"
        assert len(reported) >= kill_after
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # Lines the writer printed before it died were reported too: read them all.
        rest = proc.stdout.read().split(b"\n")
        reported += [int(x) for x in rest[:-1]]  # a last line without "\n" is not complete
    finally:
        kill_by_pid(proc)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert reported == list(range(2, 2 + len(reported)))  # the writer's own order: 2, 3, ...
    top = reported[-1]
    assert top < MAX_ENTRIES  # it really was killed mid-run

    rc, out, err = run("ledger", "verify", "--json", home=home)
    assert rc == 0, out + err
    report = json.loads(out)
    assert report["ok"] is True and report["problems"] == []
    rc, out, err = run("ledger", "heads", "--json", home=home)
    assert rc == 0, err
    [head] = json.loads(out)
    assert head["author"] == info["peer_id"]
    assert head["seq"] >= top  # every reported seq is stored (verify: 1..head with no gap)
    assert report["entries"] == head["seq"]
    rc, out, err = run("ledger", "show", "--from", top, "--limit", 1, "--json", home=home)
    assert rc == 0, err
    [last] = json.loads(out)["entries"]
    assert last["seq"] == top and last["body"] == {"text": f"crash test {top - 2}"}

    # The node goes on where it stopped.
    rc, out, err = run("ledger", "append", "--kind", "note", "--body", '{"text": "after"}', "--json", home=home)
    assert rc == 0, err
    assert json.loads(out)["seq"] == head["seq"] + 1
