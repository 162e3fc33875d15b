"""Commands import only what they use (issue 12, "A CLI that starts fast"): `p2pnode
status` loads no other command's module, no extension, nothing that reads the home's key,
config or store, and no table renderer when it prints JSON. A check of the modules
imported, never of a time: a timing is bench/node.py's business."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from framework.console import ROOT, child_env

HEAVY = ("rich", "matplotlib", "uniplot", "numpy", "trio", "libp2p", "multiaddr", "cryptography", "plyvel",
         "msgpack", "importlib.metadata", "cli.lending", "protocol.lending", "p2pnode.lending", "p2pnode.home",
         "p2pnode.extensions", "p2pnode.extension", "cli.ledger", "cli.api", "cli.start", "cli.testnet",
         "cli.name", "cli.extensions")
"""What `status` must not import: the node's and the renderers' libraries, lending, and
the other commands' modules (and the extension machinery that finds theirs)."""

# A node's answer to node.status, as little of it as the text view reads.
STATUS = {"peer_id": "12D3KooWxxxx", "public_key": "00" * 32, "pid": 1, "version": "0", "uptime_s": 1.0,
          "listen": [], "sync": {"state": "idle", "last_round_ms": None, "entries_received": 0},
          "forked": [], "peers": [], "heads": [], "counters": {}}

PROBE = """
import json, sys
from click.testing import CliRunner
import cli.rpc
home, args, answer = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if answer is not None:  # the running node, as far as the command can tell
    cli.rpc.call = lambda home, method, params=None, *, timeout=30.0: answer
from cli.main import cli
result = CliRunner().invoke(cli, ["--home", home, *args])
heavy = tuple(sys.argv[4].split(","))
print(json.dumps({"exit": result.exit_code, "output": result.output,
                  "imported": sorted(m for m in sys.modules if m in heavy or m.startswith(tuple(h + "." for h in heavy)))}))
"""


def imports_of(home: Path, args: list[str], answer: dict | None = None) -> dict:
    """What running ``p2pnode --home HOME ARGS`` in a fresh interpreter imported of
    ``HEAVY``, with its exit status and output; ``answer`` stands for the node's."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(home), json.dumps(args), json.dumps(answer),
                          ",".join(HEAVY)], capture_output=True, text=True, timeout=60, cwd=ROOT, env=child_env())
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_status_as_json_imports_nothing_it_does_not_use(tmp_path: Path):
    got = imports_of(tmp_path / "home", ["status", "--json"], STATUS)
    assert got["exit"] == 0, got["output"]
    assert json.loads(got["output"]) == STATUS  # the probe did run the command through
    assert got["imported"] == []


def test_status_with_no_node_running_imports_nothing_it_does_not_use(tmp_path: Path):
    got = imports_of(tmp_path / "home", ["status", "--json"])
    assert got["exit"] == 6, got["output"]
    assert got["imported"] == []


def test_status_as_text_imports_the_table_renderer_and_nothing_else_heavy(tmp_path: Path):
    got = imports_of(tmp_path / "home", ["status"], STATUS)
    assert got["exit"] == 0, got["output"]
    assert "12D3KooWxxxx" in got["output"]
    assert {m.split(".")[0] for m in got["imported"]} == {"rich"}  # the tables, and only them


def test_status_help_imports_nothing_it_does_not_use(tmp_path: Path):
    got = imports_of(tmp_path / "home", ["status", "--help"])
    assert got["exit"] == 0 and "Show the running node" in got["output"]
    assert got["imported"] == []


def test_listing_every_command_imports_no_renderer_nor_the_node(tmp_path: Path):
    """`p2pnode --help` needs every command's short help, so every command module and
    every extension's declaration; still no table renderer, plot library or node code."""
    got = imports_of(tmp_path / "home", ["--help"])
    assert got["exit"] == 0
    for name in ("status", "ledger", "testnet", "loan", "portfolio"):  # core's and lending's, all listed
        assert f"\n  {name} " in got["output"]
    assert [m for m in got["imported"] if m.split(".")[0] in ("rich", "matplotlib", "uniplot", "numpy", "trio",
                                                               "libp2p", "multiaddr")] == []
