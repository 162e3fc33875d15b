"""A third-party extension installed from outside p2pnode (examples/endorse), run by real
node processes on 127.0.0.1 and driven through the CLI only.

The example is installed with pip into a directory of this test's own, offline, never
into the shared environment; only the processes given ``PYTHONPATH=DIR`` find its entry
point. Node A and node C run it, node B does not; A also has two broken extensions
installed, which are reported and left out. The story: the feature works on A
(commands and methods, refusals included); `p2pnode extensions` lists it on A only; B
signs an endorsement whose body the extension refuses (for B the kind is unknown), and A
stores it, shows it invalid, leaves it out of the index, and forwards it to C, which only
A can have given it; gossip (an ask) and the stream protocol (a fetch) work between A and
C; `ledger verify` passes everywhere. Every process is ended by its pid at teardown.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.rpc import call, node_running
from framework.console import COMMAND, ROOT, child_env, kill_by_pid, run_cli
from p2pnode.testnet import free_port
from protocol.keys import public_key_from_peer_id

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "endorse"
WAIT = 20.0  # seconds any one thing may take to happen on the network


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/endorse installed with pip into a directory of its own, with no index (no
    network) and no build isolation; from a copy, so that the source tree stays clean."""
    tmp = tmp_path_factory.mktemp("endorse")
    src, target = tmp / "src", tmp / "site"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--no-cache-dir", "--quiet", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=120, env=child_env({"PIP_DISABLE_PIP_VERSION_CHECK": "1"}),
    )
    assert done.returncode == 0, done.stderr
    assert (target / "p2pnode_endorse" / "__init__.py").exists()
    return target


class Node:
    """One node home, and its process once started; ``env`` is what each of its commands
    and its node process get (``PYTHONPATH`` for a node that runs the extension)."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home = home
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.peer_id = ""
        self.addr = ""

    def cli(self, *args, ok: bool = True) -> tuple[int, str, str]:
        rc, out, err = run_cli(*args, home=self.home, env=self.env)
        if ok:
            assert rc == 0, f"`p2pnode {' '.join(map(str, args))}` on {self.home.name} exited {rc}: {err}"
        return rc, out, err

    def json(self, *args) -> dict:
        return json.loads(self.cli(*args, "--json")[1])

    def refused(self, *args) -> dict:
        """The error a command fails with (``--json``): ``{"code", "message"}``."""
        rc, out, err = self.cli(*args, "--json", ok=False)
        assert rc != 0, f"`p2pnode {' '.join(map(str, args))}` succeeded: {out}"
        return error_of(err)

    def init(self) -> None:
        self.peer_id = self.json("init", "--name", self.home.name)["peer_id"]
        self.addr = f"/ip4/127.0.0.1/tcp/{free_port()}"

    def start(self, *flags: str) -> None:
        """Start `p2pnode start` (see ``answering`` for when it is up)."""
        with open(self.home / "node.log", "ab") as log:
            self.proc = subprocess.Popen([*COMMAND, "--home", str(self.home), "start", "--listen", self.addr, *flags],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=child_env(self.env),
                                         cwd=ROOT)

    def answering(self) -> None:
        wait(lambda: self.proc.poll() is not None or node_running(self.home), f"{self.home.name} to answer")
        assert self.proc.poll() is None, (self.home / "node.log").read_text()

    def stop(self) -> None:
        self.cli("stop")
        kill_by_pid(self.proc)  # reaps it; it has exited already

    @property
    def full_addr(self) -> str:
        return f"{self.addr}/p2p/{self.peer_id}"

    def head(self, author: "Node") -> int:
        """The seq of ``author``'s chain held here (asked in-process: a wait's poll, not a check)."""
        heads = call(self.home, "ledger.heads")["heads"]
        return next((h["seq"] for h in heads if h["author"] == author.peer_id), 0)


def error_of(stderr: str) -> dict:
    """The JSON error on the last line of stderr: the CLI also warns there, once or twice
    per command, about every broken extension installed (A has one)."""
    return json.loads(stderr.strip().splitlines()[-1])["error"]


def wait(predicate, what: str, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


BROKEN_MODULE = """
from p2pnode.extension import Extension

EXTENSION = Extension("broken_service", "0", "its service fails to start", service="broken_ext:Service")


class Service:
    def __init__(self, ctx):
        raise RuntimeError("broken on purpose")
"""


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding a distribution with two broken extensions: one whose module
    cannot be imported, one whose service fails to start."""
    d = tmp_path_factory.mktemp("broken")
    (d / "broken_ext.py").write_text(BROKEN_MODULE)
    (d / "import_fails.py").write_text('raise RuntimeError("broken on purpose")\n')
    info = d / "p2pnode_broken-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: p2pnode-broken\nVersion: 0\n")
    (info / "entry_points.txt").write_text("[p2pnode.extensions]\nbroken_import = import_fails:EXTENSION\n"
                                           "broken_service = broken_ext:EXTENSION\n")
    return d


@pytest.fixture
def nodes(tmp_path: Path, site: Path, broken: Path):
    """Nodes A and C with the extension (A also with two broken ones), B without; every
    started process killed by its pid."""
    with_ext = {"PYTHONPATH": str(site)}
    with_broken = {"PYTHONPATH": f"{site}{os.pathsep}{broken}"}
    made = {"a": Node(tmp_path / "a", with_broken), "b": Node(tmp_path / "b", {}), "c": Node(tmp_path / "c", with_ext)}
    try:
        yield made
    finally:
        for n in made.values():
            if n.proc is not None:
                kill_by_pid(n.proc)


def hexkey(node: Node) -> str:
    return public_key_from_peer_id(node.peer_id).hex()


def by_seq(shown: dict) -> dict[int, dict]:
    return {e["seq"]: e for e in shown["entries"]}


def test_an_installed_extension_works_where_it_runs_and_its_entries_replicate_everywhere(nodes, tmp_path):
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    for n in (a, b, c):
        n.init()
    a.start()
    b.start("--bootstrap", a.full_addr)

    # -- what each runs (while the nodes start) ----------------------------------------------
    assert "[endorse]" in (a.home / "config.toml").read_text()  # init wrote its section
    assert "[endorse]" not in (b.home / "config.toml").read_text()
    listed = a.json("extensions")
    endorse = next(e for e in listed["extensions"] if e["name"] == "endorse")
    assert endorse["source"] == "p2pnode-endorse" and endorse["kinds"] == ["endorse.v1"]
    assert endorse["topics"] == ["p2plend/x/endorse/1/asks"] and endorse["streams"] == ["/p2plend/x/endorse/1.0.0"]
    assert endorse["tasks"] == ["upkeep"] and "endorse.add" in endorse["methods"]
    # a broken extension is reported and left out; the rest load (a failing service: below)
    [failed] = listed["failures"]
    assert failed["name"] == "broken_import" and "broken on purpose" in failed["error"]
    assert "endorse" not in [e["name"] for e in b.json("extensions")["extensions"]]
    off = tmp_path / "off"  # a home that leaves it out by config
    off.mkdir()
    (off / "config.toml").write_text('[extensions]\ndisabled = ["endorse"]\n')
    shown = json.loads(run_cli("extensions", "--json", home=off, env=a.env)[1])
    assert shown["disabled"] == ["endorse"] and "endorse" not in [e["name"] for e in shown["extensions"]]
    rc, _, err = run_cli("endorse", "list", "--json", home=off, env=a.env)
    assert rc == 2 and "No such command 'endorse'" in err  # a disabled extension adds no command
    rc, out, _ = run_cli("start", "--help", home=off, env=a.env)
    assert rc == 0 and "--review" in out and "--accept-asks" not in out  # nor start flags
    a.answering()
    b.answering()

    # -- the feature on A, and its refusals --------------------------------------------------
    mine = a.json("endorse", "add", b.peer_id, "--text", "repaid me on time, twice")
    assert (mine["author"], mine["peer"], mine["seq"]) == (a.peer_id, b.peer_id, 2)
    assert a.refused("endorse", "add", a.peer_id, "--text", "great")["code"] == "self_endorsement"
    assert a.refused("endorse", "add", b.peer_id, "--text", "repaid me on time, twice")["code"] == \
        "duplicate_endorsement"
    assert a.refused("endorse", "add", b.peer_id, "--text", "x" * 281)["code"] == "bad_params"

    # -- B, which does not know the kind, signs a valid endorsement and one the rules refuse ----
    bad = b.json("ledger", "append", "--kind", "endorse.v1", "--body",
                 json.dumps({"peer": {"$bin": hexkey(b)}, "text": "I vouch for myself"}))
    good = b.json("ledger", "append", "--kind", "endorse.v1", "--body",
                  json.dumps({"peer": {"$bin": hexkey(a)}, "text": "lent to me fairly"}))
    assert (bad["seq"], good["seq"]) == (2, 3)
    wait(lambda: a.head(b) == 3 and b.head(a) == 2, "the chains on both nodes")
    on_b = by_seq(b.json("ledger", "show", "--author", a.peer_id))
    assert on_b[2]["kind_status"] == "unknown" and on_b[2]["id"] == mine["id"]
    assert "endorse" not in [e["name"] for e in b.json("status")["extensions"]]

    # B goes; C, which never meets B, starts while A is looked at: B's chain can reach C by A only
    b.stop()
    c.start("--bootstrap", a.full_addr, "--no-accept-asks")

    # -- A stores the refused one, shows it invalid, does not index it -------------------------
    on_a = by_seq(a.json("ledger", "show", "--author", b.peer_id))
    assert on_a[2]["kind_status"] == "invalid" and "themselves" in on_a[2]["invalid_reason"]
    assert on_a[3]["kind_status"] == "known"
    assert a.json("endorse", "list", b.peer_id)["endorsements"] == [{**mine, "received_ms": None}]
    [of_a] = a.json("endorse", "list")["endorsements"]  # the reaction recorded that A was endorsed
    assert (of_a["author"], of_a["seq"], of_a["text"], of_a["received_ms"] > 0) == \
        (b.peer_id, 3, "lent to me fairly", True)
    assert "lent to me fairly" in a.cli("endorse", "list")[1]  # and as people read it
    status = a.json("status")
    assert "endorse" in [e["name"] for e in status["extensions"]]
    assert status["counters"]["endorse.received"] == 1
    # the node left out the extension whose service failed, and says why, and runs
    assert "broken_service" not in [e["name"] for e in status["extensions"]]
    assert [(f["name"], "its service did not start" in f["error"]) for f in status["extension_failures"]] == \
        [("broken_import", False), ("broken_service", True)]

    # -- ... and still forwards it --------------------------------------------------------------
    c.answering()
    wait(lambda: c.head(b) == 3, "B's chain on C, by way of A")
    on_c = by_seq(c.json("ledger", "show", "--author", b.peer_id))
    assert [on_c[s]["kind_status"] for s in (2, 3)] == ["invalid", "known"]

    # -- gossip: C asks to be endorsed, A keeps the ask; C (--no-accept-asks) keeps none --------
    c.json("endorse", "ask", "--note", "new here, vouch for me?")
    asks = wait(lambda: a.json("endorse", "asks")["asks"], "C's ask on A")
    assert [(x["author"], x["note"]) for x in asks] == [(c.peer_id, "new here, vouch for me?")]
    assert c.json("endorse", "asks") == {"accepting": False, "asks": []}

    # -- the stream protocol: A asks C for the endorsements C holds of A --------------------------
    fetched = a.json("endorse", "fetch", c.peer_id, "--of", a.peer_id)
    assert [(e["author"], e["seq"], e["held"]) for e in fetched["endorsements"]] == [(b.peer_id, 3, True)]

    # -- every store verifies, the extension's records included (B's with no node running) -----
    reports = {n.home.name: n.json("ledger", "verify") for n in (a, b, c)}
    assert all(r["ok"] for r in reports.values()), reports
    assert (reports["a"]["invalid_bodies"], reports["c"]["invalid_bodies"]) == (1, 1)
    assert reports["b"]["unknown_kinds"] == 3  # its own two endorsements and A's
