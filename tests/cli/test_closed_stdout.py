"""A closed stdout (a pager quit, `head` had enough) ends a command quietly, as it ends cat
or git: killed by SIGPIPE, nothing on stderr. Real pipes, the real console script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from p2pnode.ledger.export import entry_json
from protocol.entry import ZERO_ID, make_entry
from protocol.keys import SigningKey
from protocol.kinds import genesis_body

from framework.console import COMMAND, ROOT, TIMEOUT, child_env, kill_by_pid, run_cli

SCHEDULE = ["schedule", "--principal", "1000.00", "--currency", "EUR", "--rate", "5%", "--term", "12m"]
KILLED_BY_SIGPIPE = -signal.SIGPIPE


def run_into_closed_pipe(*args, home: Path | None = None) -> tuple[int, str]:
    """Run the CLI with stdout a pipe whose reading end is closed before it starts, so its
    first write breaks the pipe; (returncode, stderr)."""
    cmd = [*COMMAND, *(["--home", str(home)] if home else []), *map(str, args)]
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=w, stderr=subprocess.PIPE, text=True,
                                env=child_env(), cwd=ROOT)
    finally:
        os.close(w)
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_by_pid(proc)
        pytest.fail(f"`{' '.join(cmd)}` did not finish within {TIMEOUT} s")
    return proc.returncode, err


def assert_quiet_end(*args, home: Path | None = None) -> None:
    rc, out, err = run_cli(*args, home=home)  # the command does print something when read
    assert rc == 0 and out, (args, rc, err)
    rc, err = run_into_closed_pipe(*args, home=home)
    assert (rc, err) == (KILLED_BY_SIGPIPE, ""), (args, rc, err)


@pytest.mark.parametrize("args", [
    ["--help"], ["ledger", "--help"], ["id"], ["id", "--json"], ["ledger", "show"], ["ledger", "heads"],
    ["ledger", "export"], ["ledger", "kinds"], SCHEDULE, [*SCHEDULE, "--json"], ["name", "list"],
], ids=" ".join)
def test_commands_without_a_node_end_quietly(node, args):
    home, info = node
    assert run_cli("name", "set", info["peer_id"], "me", home=home)[0] == 0
    assert_quiet_end(*args, home=home)


def test_commands_of_a_running_node_end_quietly(node_process):
    home, _ = node_process
    for args in (["status"], ["status", "--json"], ["peers"], ["offer", "list"], ["loan", "list"], ["loan", "list", "--json"],
                 ["status", "--watch"], ["ledger", "heads"]):
        assert_quiet_end(*args, home=home)


def test_a_failure_is_still_reported_when_stdout_is_closed(node):
    home, _ = node
    rc, err = run_into_closed_pipe("loan", "list", home=home)
    assert rc == 6 and "no node is running" in err


def write_chain(path: Path, n: int) -> None:
    key = SigningKey.from_seed(b"\x07" * 32)
    prev, lines = None, []
    for seq in range(1, n + 1):
        kind, body = ("genesis", genesis_body("far")) if seq == 1 else ("note", {"text": f"entry {seq}"})
        e = make_entry(key, seq=seq, prev=prev.id if prev else ZERO_ID, ts=1_700_000_000_000 + seq, kind=kind,
                       body=body)
        lines.append(json.dumps(entry_json(e)))
        prev = e
    path.write_text("\n".join(lines) + "\n")


def test_head_stops_reading_a_long_export_midway(node, tmp_path):
    """`p2pnode ledger export | head -n 1`: the export is far larger than a pipe holds, so
    it is still writing when head exits."""
    home, _ = node
    write_chain(tmp_path / "chain.jsonl", 1500)
    assert run_cli("ledger", "import", tmp_path / "chain.jsonl", home=home)[0] == 0
    assert (tmp_path / "chain.jsonl").stat().st_size > 16 * 65536
    export = subprocess.Popen([*COMMAND, "--home", str(home), "ledger", "export"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=ROOT)
    head = subprocess.Popen(["head", "-n", "1"], stdin=export.stdout, stdout=subprocess.PIPE)
    export.stdout.close()  # head holds the only reading end now
    try:
        first, _ = head.communicate(timeout=TIMEOUT)
        err = export.stderr.read()
        export.wait(timeout=TIMEOUT)
    finally:
        kill_by_pid(export)
        kill_by_pid(head)
        export.stderr.close()
    assert json.loads(first)["seq"] == 1
    assert export.returncode == KILLED_BY_SIGPIPE and err == b"", (export.returncode, err)
