"""The CLI must answer fast: no command that talks to a node (or its store) imports
libp2p or trio (DESIGN.md, "Layers")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from framework.console import ROOT, child_env

PROBE = """
import sys
from click.testing import CliRunner
from cli.main import cli
home = sys.argv[1]
for args in (["init"], ["id"], ["status"], ["peers"], ["ledger", "show"], ["ledger", "heads"],
             ["ledger", "verify"], ["ledger", "append", "--kind", "note", "--body", '{"text": "x"}'],
             ["testnet", "status", "--dir", home + "/tn"], ["stop"]):
    CliRunner().invoke(cli, ["--home", home, *args])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("libp2p", "trio", "multiaddr"))
print(",".join(heavy))
"""


def test_commands_against_a_home_import_neither_libp2p_nor_trio(tmp_path: Path):
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "home")], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
