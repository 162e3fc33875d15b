"""The example's tests import ``p2pnode_endorse`` from this source tree (installed, it is
found anyway), whichever directory pytest runs from."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
