"""Extensions: packages that add entry kinds (and later topics, streams, commands).

An extension declares an entry point in the group ``p2pnode.extensions``; the object it
names is called with the node's ``KindRegistry`` and registers its kinds there:

    [project.entry-points."p2pnode.extensions"]
    myext = "myext.p2p:register"

A broken extension is reported and left out; it never stops the node from starting.
"""

from __future__ import annotations

import logging
from importlib.metadata import entry_points

from protocol.kinds import KindRegistry, core_registry

GROUP = "p2pnode.extensions"
log = logging.getLogger(__name__)


def load_registry() -> KindRegistry:
    """The core kinds plus those of every installed extension that loads cleanly."""
    registry = core_registry()
    for ep in entry_points(group=GROUP):
        trial = registry.copy()
        try:
            ep.load()(trial)
        except Exception as e:  # an extension's bug must not take the node down
            log.warning("extension %s left out: %s", ep.name, e)
            continue
        registry = trial
    return registry
