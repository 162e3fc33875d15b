"""The ``net`` fixture: a test network in a scratch directory, every node process it
started stopped by its pid at teardown (SIGTERM, then SIGKILL), whatever the test did.
The teardown sends the SIGTERMs and leaves the waits for the exits (and any SIGKILL) to a
thread (``framework.process.reap_later``), so that the next test starts while these nodes
close; the session waits for them all at its end (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.network import Network


@pytest.fixture
def net(tmp_path: Path):
    t = Network(tmp_path / "tn")
    try:
        yield t
    finally:
        t.close(wait=False)
