"""Shared fixtures: fresh node homes, and the real console script run as a subprocess
(the harness, tests/framework/, is importable from every test as ``framework``)."""

from __future__ import annotations

import json
import shutil
import sys
from itertools import count
from pathlib import Path
from typing import Callable

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:  # pytest's default import mode adds it; --import-mode=importlib does not
    sys.path.insert(0, _HERE)

from framework.console import run_cli  # noqa: E402
from framework.process import reap_all  # noqa: E402
from protocol import envelope as _envelope  # noqa: E402

# Opened documents are shared and read-only (protocol/envelope.py): in tests, every reuse
# of one checks that nobody wrote into it.
_envelope.CHECK_KEPT = True


# -- the order xdist hands files out in (make test: -n 2 --dist loadfile) ----------------
#
# xdist hands each worker a whole file, by default the files with most tests first: the
# files of tests/net/, a few tests each but tens of seconds a test, came last, and the one
# handed out last decided when the run ended (test_partition.py, one test of 40 s, mostly
# a partition waited out: the other worker idle for 20-30 s of a 9-minute run). Here
# tests/net/ comes first, then the rest as xdist orders them (most tests first), so that
# what is left at the end is many short files that even the workers out. Only the order
# of whole files changes; inside a file, and without xdist, the order is as written.

HEAVY_FIRST = ("tests/net/",)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("dist", "no") == "loadfile":
        config.option.loadscopereorder = False  # (xdist's own order by test count: see below)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # (an xdist worker's collection is what it hands out)
        return
    per_file: dict[str, int] = {}
    for item in items:
        per_file[item.nodeid.split("::")[0]] = per_file.get(item.nodeid.split("::")[0], 0) + 1

    def rank(item: pytest.Item) -> tuple[bool, int]:
        path = item.nodeid.split("::")[0]
        return not path.startswith(HEAVY_FIRST), -per_file[path]

    items.sort(key=rank)  # (stable: a file's tests stay together and in order)


@pytest.fixture(scope="session", autouse=True)
def _reaped():
    """At the end of the session, every node process a teardown left to exit in the
    background (``framework.process.reap_later``) has exited or been SIGKILLed."""
    yield
    reap_all()


@pytest.fixture
def run() -> Callable[..., tuple[int, str, str]]:
    """``run(*args, home=..., input=None, env=None)`` -> (returncode, stdout, stderr)."""
    return run_cli


@pytest.fixture
def new_home(tmp_path: Path) -> Callable[[str], Path]:
    """``new_home(name)``: a path under tmp_path where no node exists yet (not created)."""
    n = count()

    def make(name: str = "home") -> Path:
        return tmp_path / f"{name}{next(n)}"

    return make


@pytest.fixture
def home(new_home: Callable[[str], Path]) -> Path:
    """A fresh, not yet initialised home directory path."""
    return new_home("home")


@pytest.fixture(scope="session")
def node_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One home made by `p2pnode init --json` (no passphrase), to be copied, never used."""
    home = tmp_path_factory.mktemp("template") / "home"
    rc, out, err = run_cli("init", "--json", home=home)
    assert rc == 0, err
    return home, json.loads(out)


@pytest.fixture
def node(home: Path, node_template: tuple[Path, dict]) -> tuple[Path, dict]:
    """An initialised home (no passphrase, genesis only): (path, what `init --json` printed).

    A copy of one made by the CLI, so that tests need not pay for an init each; every copy
    has the same identity, so a test that needs two nodes makes the second with init."""
    template, info = node_template
    shutil.copytree(template, home)
    return home, dict(info, home=str(home))
