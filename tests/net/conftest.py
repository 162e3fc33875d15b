"""The ``net`` fixture: a test network in a scratch directory, every node process it
started killed by its pid at teardown, whatever the test did."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2ptest import Testnet


@pytest.fixture
def net(tmp_path: Path):
    t = Testnet(tmp_path / "tn")
    try:
        yield t
    finally:
        t.kill_all()
