"""mDNS finds peers on a LAN. It binds UDP *:5353 on every interface, so the test runs
inside a private network namespace of its own (``unshare -n``, with a dummy interface
for multicast), never on the machine's network."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from framework.console import COMMAND, ROOT, child_env, run_cli

pytestmark = pytest.mark.slow

SCRIPT = r"""
set -u
ip link set lo up
ip link add d0 type dummy && ip addr add 10.9.0.1/24 dev d0 && ip link set d0 up multicast on
A=$1; B=$2; shift 2
"$@" --home "$A" start --listen /ip4/0.0.0.0/tcp/7501 --mdns > "$A/node.log" 2>&1 & PA=$!
"$@" --home "$B" start --listen /ip4/0.0.0.0/tcp/7502 --mdns > "$B/node.log" 2>&1 & PB=$!
found=0
for i in $(seq 1 60); do
  sleep 0.5
  if "$@" --home "$B" peers --json 2>/dev/null | grep -q peer_id; then found=1; break; fi
done
kill -TERM $PA $PB; sleep 2; kill -KILL $PA $PB 2>/dev/null
echo "found=$found"
"""


def _can_unshare() -> bool:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -n` and `ip` (root or user namespaces)")
def test_two_nodes_with_mdns_and_no_bootstrap_find_each_other(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    for h in (a, b):
        assert run_cli("init", home=h)[0] == 0
    script = tmp_path / "mdns.sh"
    script.write_text(SCRIPT)
    out = subprocess.run(["unshare", "-n", "bash", str(script), str(a), str(b), *COMMAND], capture_output=True,
                         text=True, timeout=90, cwd=ROOT, env=child_env())
    log = (b / "node.log").read_text() if (b / "node.log").exists() else ""
    assert "found=1" in out.stdout, out.stdout + out.stderr + log
    assert "on the local network" in log
