"""Where a node's home is: ``--home``, else ``P2PNODE_HOME``, else ``~/.p2pnode``.

Apart from p2pnode/home.py (which re-exports both names) so that the command line knows
the home's path without importing what reads it (key, config, store: cryptography,
LevelDB), which a command that only talks to the running node never needs.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/.p2pnode"


def resolve_home(home: str | os.PathLike | None) -> Path:
    """The home directory named by ``--home``, else ``P2PNODE_HOME``, else the default."""
    raw = home or os.environ.get("P2PNODE_HOME") or DEFAULT_HOME
    return Path(raw).expanduser().absolute()
