"""The ``net`` fixture: a test network in a scratch directory, every node process it
started stopped by its pid at teardown (SIGTERM, then SIGKILL), whatever the test did."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.network import Network


@pytest.fixture
def net(tmp_path: Path):
    with Network(tmp_path / "tn") as t:
        yield t
